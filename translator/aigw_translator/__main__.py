"""python -m aigw_translator (--config FILE | --xds HOST:PORT [--fleet NS/NAME]) --listen ADDR"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import structlog
from google.protobuf import json_format
from google.protobuf.message import DecodeError

import aigw_contract as contract

from .arguments import (
    add_rate_limit_flags,
    exposed_mcp_proxy,
    exposed_translator,
    fleet,
    host_port,
    listen_problem,
    loopback,
    rate_limit_problem,
)
from .budgets import BudgetOptions
from .config import load_config, runtimes
from .health import HealthServer
from .logs import Stderr, resolved_format
from .server import bind, serve

if TYPE_CHECKING:
    import grpc

    from .mcp import McpProxy
    from .server import TranslatorServer
    from .xds_client import XdsConfigClient


def _configure_logging(level: str, fmt: str) -> None:
    fmt = resolved_format(fmt)
    # plain tracebacks: a rich traceback would print local variables, credentials among them
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(  # colours for a terminal only, not into a file or a pipe
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # To stderr, as the control plane logs (its `auto` format and the colours ask whether stderr is
        # a terminal); one write per entry (its newline included): `run` merges several processes' output.
        logger_factory=structlog.WriteLoggerFactory(file=Stderr()),  # type: ignore[arg-type]
    )


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    if not args.xds_ca:
        return None
    from pathlib import Path

    import grpc

    return grpc.ssl_channel_credentials(
        root_certificates=Path(args.xds_ca).read_bytes(),
        private_key=Path(args.xds_key).read_bytes() if args.xds_key else None,
        certificate_chain=Path(args.xds_cert).read_bytes() if args.xds_cert else None,
    )


# How long the streams open at SIGTERM/SIGINT get to end (a response still streaming then is cut:
# in Kubernetes, Envoy's preStop drain comes first).
STOP_GRACE_S = 2.0


async def _run(args: argparse.Namespace) -> None:
    """Serve until SIGINT/SIGTERM, which end it gracefully from the start on (also while it waits
    for its first configuration). Raises OSError/RuntimeError when the listen address is unusable."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    client = follower = None
    starting: asyncio.Task[TranslatorServer] | None = None
    mcp_proxy: McpProxy | None = None
    with contextlib.suppress(NotImplementedError):  # a closed terminal, or an operator's reload
        loop.add_signal_handler(signal.SIGHUP, lambda: _read_again(args, starting))
    if args.xds:
        from .xds_client import XdsConfigClient

        client = XdsConfigClient(
            args.xds,
            runtimes,  # until the server serves them: checked, so that what is taken can be served
            fleet=args.fleet,
            credentials=_credentials(args),
            token_file=args.xds_token_file,
        )
        follower = asyncio.create_task(client.run())
    starting = asyncio.create_task(_serve(args, client))
    stopping = asyncio.create_task(stop.wait())
    health = None
    if args.health_listen:  # ready once Envoy can be served: the configuration taken, its address listened on
        ready = f"waiting for the configuration{f' of {args.fleet}' if args.fleet else ''}" if args.xds else "starting"
        health = HealthServer(args.health_listen, lambda: _serving(starting, client), not_ready=ready)
    try:
        if health is not None:
            await health.start()
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # asked to stop before serving
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return
        server = starting.result()  # raises what starting raised
        if args.mcp_listen:
            from .mcp import McpProxy

            mcp_proxy = McpProxy(server.config_of)
            await mcp_proxy.start(args.mcp_listen)
        await stop.wait()
        structlog.get_logger("aigw_translator").info("shutting_down", grace_s=STOP_GRACE_S)
        if mcp_proxy is not None:
            await mcp_proxy.stop()
        await server.stop(STOP_GRACE_S)
    finally:
        stopping.cancel()
        if not starting.done():  # the health endpoint could not listen
            starting.cancel()
        if follower is not None:
            follower.cancel()
        if health is not None:
            await health.stop()


def _read_again(args: argparse.Namespace, starting: asyncio.Task[TranslatorServer] | None) -> None:
    """SIGHUP: --config is read again and served to new streams (one that does not read leaves the
    served one in use); with --xds the configuration follows the control plane. Never the end."""
    log = structlog.get_logger("aigw_translator")
    if not args.config:
        log.info("sighup_ignored", reason="the configuration follows the control plane (--xds)")
        return
    if starting is None or not _serving(starting, None):
        log.info("sighup_ignored", reason="not serving yet")
        return
    try:
        starting.result().update_config(load_config(args.config))
    except Exception as exc:  # a file that does not read, or a configuration that cannot be served
        log.error("config_not_read", path=args.config, reason=str(exc).splitlines()[0] if str(exc) else repr(exc))
        return
    log.info("config_read_again", path=args.config)


def _serving(starting: asyncio.Task[TranslatorServer], client: XdsConfigClient | None) -> bool:
    """Listening, and holding the configuration of the fleet it follows (--fleet): a sidecar whose
    --fleet names no Gateway the control plane compiled answers every request with a 503, and is
    not ready (its log says xds_fleet_unknown)."""
    if not (starting.done() and not starting.cancelled() and starting.exception() is None):
        return False
    return client is None or client.fleet is None or client.fleet in client.configs


async def _serve(args: argparse.Namespace, client: XdsConfigClient | None) -> TranslatorServer:
    """The server, listening: on the configuration file's, or on the control plane's once synced."""
    if client is None:
        return await serve(args.loaded_config, args.listen, args.budgets.budgets())
    if args.ready_fd is not None:  # a parent waits for the bound port, then for "serving"
        server = bind({}, args.listen, args.budgets.budgets())
        with open(args.ready_fd, "w", closefd=True) as ready:
            print(server.port, file=ready, flush=True)
            await client.synced.wait()
            served = client.configs
            server.update_configs(served)
            await server.start()
            print("serving", file=ready, flush=True)
    else:
        await client.synced.wait()  # listen only once there is a configuration to serve
        served = client.configs
        server = await serve(served, args.listen, args.budgets.budgets())
    client.on_update = server.update_configs
    if client.configs is not served:  # taken while the server started
        server.update_configs(client.configs)
    return server


def main(argv: list[str] | None = None, prog: str = "aigw_translator", log_format: str = "json") -> int:
    """The translator alone; every error the user can fix is one line on stderr and exit status 1."""
    parser = argparse.ArgumentParser(
        prog=prog, description="the translator alone: Envoy's external processor (ext_proc)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="TranslatorConfig as JSON or binary protobuf")
    source.add_argument("--xds", help="follow the control plane's xDS server (host:port) for the configuration")
    parser.add_argument("--fleet", help='with --xds: only this fleet ("<namespace>/<gateway>"); default: all')
    parser.add_argument("--xds-ca", help="with --xds: CA bundle to verify the control plane (TLS)")
    parser.add_argument("--xds-cert", help="with --xds-ca: client certificate (mTLS)")
    parser.add_argument("--xds-key", help="with --xds-cert: its private key")
    parser.add_argument(
        "--xds-token-file",
        help="with --xds: a Kubernetes ServiceAccount token (audience aigw-xds) sent to the control plane "
        "on every connect, re-read each time (a projected token rotates)",
    )
    parser.add_argument(
        "--listen",
        default=contract.TRANSLATOR_ADDRESS,
        help=f"host:port or unix:PATH (default {contract.TRANSLATOR_ADDRESS})",
    )
    parser.add_argument(
        "--insecure-listen",
        action="store_true",
        help="let --listen be an address other hosts reach: anyone who connects can read the backends' keys",
    )
    parser.add_argument(
        "--mcp-listen",
        help="host:port (loopback) where the MCP proxy listens, which answers the MCPRoutes' clients through Envoy "
        f"(Envoy looks for it at {contract.MCP_PROXY_ADDRESS} unless the control plane's --mcp-address says "
        "otherwise); off by default",
    )
    parser.add_argument(
        "--health-listen",
        help="host:port for the kubelet's probes, plain HTTP: GET /healthz (the process answers) and GET /readyz "
        "(it serves Envoy: with --xds, once the control plane's configuration is taken); off by default",
    )
    parser.add_argument(
        "--ready-fd",
        type=int,
        # with --xds: the bound port, then "serving", as lines to this descriptor (run's workers)
        help=argparse.SUPPRESS,
    )
    add_rate_limit_flags(parser)
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument(
        "--log-format",
        choices=("auto", "console", "json"),
        default=log_format,
        help=f"json, console, or auto: console when stderr is a terminal (where it logs); default {log_format}",
    )
    args = parser.parse_args(argv)
    _configure_logging(args.log_level, args.log_format)
    try:  # checked up front: a bad address would otherwise be retried (--xds) or fail inside gRPC
        host_port(args.listen, "--listen", unix=True, any_port=True)
        if not args.insecure_listen and (exposed := exposed_translator(args.listen, "--listen", "--insecure-listen")):
            raise ValueError(exposed)
        if args.xds:
            xds_host, _ = host_port(args.xds, "--xds")
            if args.xds_token_file and not args.xds_ca and not loopback(xds_host):
                print(
                    f"{prog}: warning: --xds-token-file over plaintext to {args.xds}: the token can be read "
                    "on the network (add --xds-ca to use TLS)",
                    file=sys.stderr,
                )
        else:  # what only following a control plane means: an error, not silently nothing
            options = ("fleet", "xds_ca", "xds_cert", "xds_key", "xds_token_file")
            given = [name for name in options if getattr(args, name)]
            if given:
                option = "--" + given[0].replace("_", "-")
                raise ValueError(f"{option} needs --xds (--config serves the file's configuration)")
        if args.health_listen:
            host_port(args.health_listen, "--health-listen", any_port=True)
        if args.mcp_listen and (exposed := exposed_mcp_proxy(args.mcp_listen, "--mcp-listen")):
            raise ValueError(exposed)
        if args.fleet:
            args.fleet = fleet(args.fleet, "--fleet")
        if rate_limit_problem(args.rate_limit_redis):
            raise ValueError(rate_limit_problem(args.rate_limit_redis))
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    try:
        args.loaded_config = load_config(args.config) if args.config else None
    except OSError as exc:
        print(f"{prog}: error: cannot read --config {args.config}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except (ValueError, DecodeError, json_format.Error) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"{prog}: error: --config {args.config} is not a TranslatorConfig: {reason}", file=sys.stderr)
        return 1
    args.budgets = BudgetOptions(args.rate_limit_redis, fail_closed=args.rate_limit_fail_mode == "closed")
    if args.budgets.ignored:
        print(f"{prog}: warning: {args.budgets.ignored}", file=sys.stderr)
    for what, address in (
        ("", args.listen),
        ("the MCP proxy ", args.mcp_listen),
        ("the health endpoint ", args.health_listen),
    ):
        if address and (problem := listen_problem(address)):
            print(f"{prog}: error: {what}cannot listen on {address}: {problem}", file=sys.stderr)
            return 1
    runner: Callable[[Coroutine[Any, Any, None]], None]
    try:
        import uvloop

        runner = uvloop.run  # a uvloop loop for this run only (no process-wide policy change)
    except ImportError:
        runner = asyncio.run
    try:
        runner(_run(args))
    except (OSError, RuntimeError) as exc:  # grpc: "Failed to bind to address ..."; unreadable TLS files
        if "Failed to bind" in str(exc):  # taken since the check above, or a cause the check cannot tell
            reason = f"cannot listen on {args.listen}: {listen_problem(args.listen) or 'gRPC could not bind it'}"
        else:
            reason = str(exc)
        print(f"{prog}: error: {reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
