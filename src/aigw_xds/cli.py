"""The aigw-xds command line."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import json
import os
import signal
import socket
import sys
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from google.protobuf import json_format

import aigw_contract as contract
from aigw_translator import arguments

from . import __version__
from .console import Console
from .envoy.process import ENVOY_DEFAULT_DRAIN_TIME_S
from .keys import DNS_LABEL, DNS_SUBDOMAIN
from .logging_setup import configure
from .sources.kube_kinds import DEFAULT_CONTROLLER_NAME

if TYPE_CHECKING:  # imported where used, to keep the command line quick to start
    from envoy.service.status.v3 import csds_pb2

    from aigw_translator.budgets import BudgetOptions

    from .compile import CompileResult
    from .compile.context import IssuerMetadata
    from .resources import ResourceSet
    from .xds.authz import Grant
    from .xds.build import BuildSettings
    from .xds.server import TLSFiles

T = TypeVar("T")


class CliError(Exception):
    """A command line the user can fix; printed as one line."""


def _settings(args: argparse.Namespace) -> BuildSettings:
    from .xds.build import BuildSettings

    return BuildSettings(
        translator_address=args.translator_address or _reachable(getattr(args, "translator_listen", "")),
        mcp_address=args.mcp_address or _mcp_address(args),
        translator_enabled=not args.no_translator,
        # Translators that count in Redis can all take the fleet's budgets (else only the first does).
        shared_counters=bool(getattr(args, "rate_limit_redis", None)),
        route_scopes_from=args.route_scopes_from,
        envoy_credentials=getattr(args, "trusted_envoys", False),  # translate's: serve decides it itself
    )


def _mcp_listen(args: argparse.Namespace) -> str | None:
    """Where serve's in-process MCP proxy listens: --mcp-listen; by default, beside a translator on
    its default address, the MCP proxy's (Envoy AI Gateway's port); beside one on an address of the
    user's choosing, a free port of its host (several serves on one host, each with its translator
    port, then each get theirs); none without an in-process translator (or with --mcp-listen "")."""
    translator = getattr(args, "translator_listen", "")
    if not translator:
        return None
    if args.mcp_listen is not None:
        return args.mcp_listen or None
    if translator == contract.TRANSLATOR_ADDRESS:
        return contract.MCP_PROXY_ADDRESS
    # The translator's host as an address (a name may stand for several, each its own port 0)
    reachable = _reachable(translator)
    return f"{reachable.rpartition(':')[0] if not reachable.startswith('unix:') else '127.0.0.1'}:0"


def _mcp_address(args: argparse.Namespace) -> str:
    """Where Envoy reaches the MCP proxy unless --mcp-address says: the in-process one's address,
    or, when the translators are elsewhere (--translator-address, a sidecar), theirs by default."""
    if getattr(args, "translator_address", None):
        return contract.MCP_PROXY_ADDRESS
    return _reachable(_mcp_listen(args) or "", contract.MCP_PROXY_ADDRESS)


def _reachable(listen: str, default: str = contract.TRANSLATOR_ADDRESS) -> str:
    """Where an Envoy on this host reaches a translator (or its MCP proxy) listening on `listen`
    (serve's in-process one): that address as an IP (Envoy's clusters here take no names:
    `localhost` resolved), a wildcard host (0.0.0.0, [::]) made loopback; without one (the
    translator runs elsewhere, or the command runs none), `default`, the translator's own."""
    if not listen:
        return default
    if listen.startswith("unix:"):
        return listen
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host or "0.0.0.0")
    except ValueError:
        ip = ipaddress.ip_address(_resolved(host))
    if ip.is_unspecified:
        ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def _resolved(host: str) -> str:
    """The IP of `host`, IPv4 first (as `localhost` means 127.0.0.1 to most); 127.0.0.1 if none."""
    for family in (socket.AF_INET, socket.AF_UNSPEC):
        try:
            return str(socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)[0][4][0])
        except (OSError, IndexError):
            continue
    return "127.0.0.1"


def _add_build_flags(p: argparse.ArgumentParser, address_default: str, mcp_address_default: str) -> None:
    p.add_argument(
        "--translator-address",
        help=f'where Envoy reaches the translator: "host:port" or "unix:/path" (default: {address_default})',
    )
    p.add_argument(
        "--mcp-address",
        help='where Envoy reaches the translator\'s MCP proxy (MCPRoutes): "host:port" '
        f"(default: {mcp_address_default})",
    )
    p.add_argument(
        "--route-scopes-from",
        type=int,
        default=contract.DEFAULT_ROUTE_SCOPES_FROM,
        metavar="RULES",
        help="with the translator, split a listener's routes into scopes (an edit of a rule on a named model then "
        "resends its scope's routes; a change into or out of scopes is a listener update) once its rules match "
        f"this many models by name and at most one per 128 of those matches any model (default "
        f"{contract.DEFAULT_ROUTE_SCOPES_FROM}; 0: always; README, route scopes)",
    )
    p.add_argument(
        "--no-translator",
        action="store_true",
        help=f"emit no ext_proc filters (clients must send {contract.MODEL_HEADER} themselves)",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from .control_plane import ControlPlane, KubernetesOptions
    from .stop_signals import StopSignals
    from .xds.authz import Authorizer

    if args.config is not None:
        _existing(args.config)
    _host_port(args.listen, "--listen")
    if args.translator_listen:
        _host_port(args.translator_listen, "--translator-listen", unix=True)
        flag = "--insecure-translator-listen"
        exposed = arguments.exposed_translator(args.translator_listen, "--translator-listen", flag)
        if exposed and not args.insecure_translator_listen:
            raise CliError(exposed)
        if args.mcp_listen:
            _host_port(args.mcp_listen, "--mcp-listen")
            if exposed := arguments.exposed_mcp_proxy(args.mcp_listen, "--mcp-listen"):
                raise CliError(exposed)
    if args.health_listen:
        _host_port(args.health_listen, "--health-listen")
    _kubernetes_flags_need_kubernetes(args)
    tls = _tls_files(args)
    own_namespace = os.environ.get("POD_NAMESPACE") or "aigw-system"
    tls_secret = _tls_secret(args, own_namespace)
    kubernetes = (
        KubernetesOptions(
            kubeconfig=args.kubeconfig,
            namespaces=args.watch_namespaces or (),
            controller_name=args.controller_name or DEFAULT_CONTROLLER_NAME,
            lease_namespace=args.leader_election_namespace or os.environ.get("POD_NAMESPACE") or "aigw-system",
            lease_timings=args.leader_election_timings or KubernetesOptions.lease_timings,
            tls_secret=tls_secret,
            tls_service=(own_namespace, args.tls_service_name or "aigw-xds"),
            tls_client_ca=args.tls_client_ca if tls_secret else None,
        )
        if args.kubernetes
        else None
    )

    async def main() -> int:
        plane = ControlPlane(
            args.config,
            kubernetes=kubernetes,
            health_listen=args.health_listen,
            listen=args.listen,
            settings=_settings(args),
            tls=tls,
            watch=not args.no_watch,
            translator_listen=args.translator_listen or None,
            mcp_listen=_mcp_listen(args),
            translator_workers=args.translator_workers,
            require_gateway=kubernetes is None,  # in a cluster, wait for Gateways rather than crash-loop
            withhold_incomplete=True,  # Envoys outlive a serve: a restart on a broken file leaves them be
            budgets=_budget_options(args),
            authorizer=Authorizer(tuple(args.authorize)),
            envoy_drain_s=args.envoy_drain_time,
        )
        signals = StopSignals(signal.SIGINT, signal.SIGTERM)
        rereads: set[asyncio.Task[None]] = set()

        def hung_up() -> None:  # a daemon's SIGHUP: read the configuration again, never stop
            if len(rereads) >= 2:  # one read under way and one to follow: a burst is one more read
                return
            task = asyncio.ensure_future(plane.read_again())
            rereads.add(task)
            task.add_done_callback(rereads.discard)

        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, hung_up)
        try:
            await plane.start()
        except asyncio.CancelledError:
            if not signals.cut_start_short():
                raise
            await plane.stop(0)
            return 0
        except (OSError, RuntimeError, ValueError) as exc:  # a port in use, unreadable TLS files...
            print(f"aigw-xds: error: {exc}{_listen_flag_hint(exc)}", file=sys.stderr)
            await plane.stop(0)
            return 1
        signals.started()
        await signals.requested.wait()
        structlog.get_logger(__name__).info("shutting_down")
        await plane.stop()
        return 0

    return _run(main())


def _existing(path: str) -> None:
    """PATH, said missing before anything starts (a typo: the servers started, then the error, twice)."""
    if not Path(path).exists():
        raise CliError(f"{path}: no such file or directory")


def _existing_configuration(path: str) -> None:
    """_existing, and a directory holding YAML files (a typo'd path is not "nothing wrong")."""
    from .sources.files import YAML_SUFFIXES, yaml_files

    _existing(path)
    if Path(path).is_dir() and not yaml_files(Path(path)):
        raise CliError(f"{path}: a directory without YAML files (*{', *'.join(YAML_SUFFIXES)})")


def _listen_flag_hint(exc: BaseException) -> str:
    """The flag that chooses another address, when `exc` says one of serve's servers cannot listen."""
    from .control_plane import HEALTH_ENDPOINT, MCP_PROXY, TRANSLATOR, XDS_SERVER, CannotListen

    flags = {
        XDS_SERVER: "--listen",
        TRANSLATOR: "--translator-listen",
        MCP_PROXY: "--mcp-listen",
        HEALTH_ENDPOINT: "--health-listen",
    }
    flag = flags.get(exc.what) if isinstance(exc, CannotListen) else None
    return f" (choose another with {flag})" if flag else ""


def cmd_run(args: argparse.Namespace) -> int:
    from .run import RunError, RunOptions, run

    if args.path is None or args.print_config:
        return _run_autoconfig(args)
    if args.port is not None and not args.autoconfigured:
        raise CliError(
            "--port is the listener port of the configuration generated without PATH: PATH's Gateway names its own"
        )
    _existing_configuration(args.path)
    try:
        ipaddress.ip_address(args.listen_address)
    except ValueError:
        message = f"--listen-address {args.listen_address!r} must be an IP address (e.g. 127.0.0.1 or 0.0.0.0)"
        raise CliError(message) from None
    if (problem := arguments.listen_problem(f"[{args.listen_address}]:0")) is not None:
        raise CliError(f"--listen-address {args.listen_address}: {problem}")
    if args.xds_port == args.admin_port:
        raise CliError(f"--admin-port and --xds-port are both {args.admin_port}: Envoy's admin and xDS need one each")
    if args.gateway:
        args.gateway = _fleet(args.gateway, "--gateway")
    options = RunOptions(
        Path(args.path),
        gateway=args.gateway,
        admin_port=args.admin_port,
        xds_port=args.xds_port,
        envoy_log_level=args.envoy_log_level,
        listen_address=args.listen_address,
        translator_workers=args.translator_workers,
        console=args.console,
        budgets=_budget_options(args),
    )
    try:
        return _run(run(options)) or 0
    except RunError as exc:
        args.console.error(str(exc))
        return 1


def _run_autoconfig(args: argparse.Namespace) -> int:
    """`run` without PATH: a configuration generated from the providers' environment variables
    (aigw_xds.autoconfig), written to a temporary directory; or printed with --print-config."""
    import os
    import tempfile

    from .autoconfig import PORT, AutoconfigError, generate, left_out, providers, summary

    if args.path is not None:
        args.console.error("--print-config shows the configuration generated without PATH")
        return 1
    try:
        text = generate(os.environ, PORT if args.port is None else args.port)
    except AutoconfigError as exc:
        args.console.error(str(exc))
        return 1
    if args.print_config:
        print(text, end="")
        return 0
    with tempfile.TemporaryDirectory(prefix="aigw-run-") as workdir:
        config = Path(workdir) / "aigw-run.yaml"
        config.write_text(text)
        notes = left_out(os.environ)
        args.console.say(
            "configuration_generated",
            f"aigw-xds: no PATH given; configuration generated from the environment for {summary(os.environ)}\n"
            + "".join(f"aigw-xds: {note}\n" for note in notes)
            + "aigw-xds: (print it with: aigw-xds run --print-config)",
            providers=[p.title for p in providers(os.environ)],
            left_out=notes,
        )
        args.path, args.autoconfigured = str(config), True
        return cmd_run(args)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _load_and_compile(config: str) -> CompileResult:
    """validate and translate: secrets' values are not needed (an unset variable is a warning). A
    configuration that holds no resource at all (empty files, which `run` refuses) gets a warning
    of its own."""
    from .compile import compile_resources
    from .diagnostics import warning
    from .sources.files import FileSource

    _existing_configuration(config)  # said as the other inputs that hold nothing, before any summary
    resources = FileSource(config).load()
    result = compile_resources(resources, placeholder_secrets=True, issuers=_issuers(resources))
    if not resources.items and not resources.diagnostics:
        empty = warning(f"{config} holds no resource (its YAML files are empty)")
        result = dataclasses.replace(result, diagnostics=(*result.diagnostics, empty))
    return result


def _issuers(resources: ResourceSet) -> dict[str, IssuerMetadata]:
    """The metadata of the OAuth issuers the MCPRoutes name without jwks, fetched once (as the
    serving control plane fetches it), so that the commands that compile say what it would serve."""
    from .issuer_metadata import fetch_all, issuers_to_discover

    wanted = issuers_to_discover(resources)
    return asyncio.run(fetch_all(wanted)) if wanted else {}


def cmd_translator(args: argparse.Namespace) -> int:
    from aigw_translator.__main__ import main as translator_main

    # aigw-xds's own --log-level and --log-format hold for it too; its own, after `translator`, win.
    inherited = ["--log-level", args.log_level]
    return translator_main([*inherited, *args.args], prog="aigw-xds translator", log_format=args.log_format)


def _split_translator(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """argv split after the `translator` command: everything behind it is the translator's own
    command line (argparse.REMAINDER would reject its leading options such as --config)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--log-level", "--log-format"):
            i += 2
        elif arg.startswith("-"):
            i += 1
        elif arg == "translator":
            return argv[: i + 1], argv[i + 1 :]
        else:
            break
    return argv, None


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds (0 or more)")
    return seconds


def _port(value: str, lowest: int = 0) -> int:
    """argparse type: a TCP port (0: any free port)."""
    if not value.isdigit() or not lowest <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port ({lowest}-65535)")
    return int(value)


def _fixed_port(value: str) -> int:
    """argparse type: a TCP port that is known, 1-65535 (`run` must reach Envoy's admin on it)."""
    return _port(value, lowest=1)


def _host_port(value: str, option: str, *, unix: bool = False) -> tuple[str, int]:
    """host:port (IPv6 as [::1]:port; with `unix`, unix:PATH too) -> (host, port); CliError naming
    the option otherwise (the check the translator's own command line makes)."""
    try:
        return arguments.host_port(value, option, unix=unix)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _grant(value: str) -> Grant:
    """argparse type of serve --authorize IDENTITY=NAMESPACE/GATEWAY."""
    from .xds.authz import parse_grant

    try:
        return parse_grant(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--authorize {value!r} ")) from None


# serve's flags that mean something only with --kubernetes (their defaults are applied there).
_KUBERNETES_ONLY = (
    "kubeconfig",
    "watch_namespaces",
    "controller_name",
    "leader_election_namespace",
    "leader_election_timings",
    "tls_service_name",
)


def _kubernetes_flags_need_kubernetes(args: argparse.Namespace) -> None:
    """A Kubernetes flag given to a serve of files was taken without a word, and did nothing."""
    if args.kubernetes:
        return
    given = [name for name in _KUBERNETES_ONLY if getattr(args, name) is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise CliError(f"{flag} needs --kubernetes (serving PATH, there is no API server for it to apply to)")


def _tls_files(args: argparse.Namespace) -> TLSFiles | None:
    """serve's --tls-cert/--tls-key[/--tls-client-ca], checked as the handshake will use them: a
    client CA alone would have left the port in plaintext without a word."""
    from .xds.server import TLSFiles

    if bool(args.tls_cert) != bool(args.tls_key):
        raise CliError("--tls-cert and --tls-key go together: the serving certificate and its key")
    if args.tls_client_ca and not args.tls_cert and not args.kubernetes:
        raise CliError("--tls-client-ca needs --tls-cert and --tls-key: mTLS is TLS whose clients present certificates")
    if not args.tls_cert:
        return None
    files = TLSFiles(args.tls_cert, args.tls_key, args.tls_client_ca)
    try:
        files.read()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return files


def _tls_secret(args: argparse.Namespace, own_namespace: str) -> tuple[str, str] | None:
    """serve's --tls-secret: (namespace, name), or None (files given, plaintext, or not --kubernetes).
    Default with --kubernetes and no --tls-cert: <own namespace>/aigw-xds-tls. "" turns TLS off."""
    if args.tls_secret is not None and not args.kubernetes:
        raise CliError("--tls-secret needs --kubernetes (with PATH, give --tls-cert and --tls-key)")
    if args.tls_secret and args.tls_cert:
        raise CliError("--tls-secret and --tls-cert exclude each other: one source of the serving certificate")
    if not args.kubernetes or args.tls_cert:
        return None
    if args.tls_secret == "":
        print(
            'aigw-xds: warning: --tls-secret "": xDS is served in plaintext; ServiceAccount tokens and the '
            "backends' credentials cross the pod network unencrypted",
            file=sys.stderr,
        )
        return None
    value = args.tls_secret or f"{own_namespace}/{DEFAULT_TLS_SECRET}"
    namespace, _, name = value.rpartition("/")
    if not DNS_LABEL.fullmatch(namespace) or not DNS_SUBDOMAIN.fullmatch(name):
        raise CliError(f"--tls-secret {value!r}: expected NAMESPACE/NAME of a Secret")
    return namespace, name


def _namespaces(value: str) -> tuple[str, ...]:
    """--watch-namespaces: comma-separated Kubernetes namespace names."""
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    for name in names:
        if not DNS_LABEL.fullmatch(name):
            raise argparse.ArgumentTypeError(f"{name!r} is not a namespace name (lower-case letters, digits, '-')")
    if not names:
        raise argparse.ArgumentTypeError("name at least one namespace")
    return names


def _lease_timings(value: str) -> tuple[float, float, float]:
    """--leader-election-timings LEASE,RENEW,RETRY: a leader must renew well before others may take over."""
    try:
        lease, renew, retry = (float(part) for part in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("three numbers of seconds: LEASE,RENEW,RETRY (e.g. 15,10,2)") from None
    if not 0 < retry < renew < lease:
        raise argparse.ArgumentTypeError("needs 0 < RETRY < RENEW < LEASE (e.g. 15,10,2)")
    return lease, renew, retry


DEFAULT_TLS_SECRET = "aigw-xds-tls"


def _fleet(value: str, option: str) -> str:
    """A Gateway's "<namespace>/<name>" (a bare name: namespace default), normalized; CliError otherwise."""
    try:
        return arguments.fleet(value, option)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def cmd_validate(args: argparse.Namespace) -> int:
    result = _load_and_compile(args.config)
    for diagnostic in result.diagnostics:  # the report, errors and warnings alike (`validate > report.txt`)
        print(diagnostic)
    if args.status:
        for key, conditions in result.statuses.items():
            # Programmed True is the Envoys' to say (their ACKs, when served); validate has none.
            shown = [c for c in conditions if not (c.type == "Programmed" and c.status)]
            states = ", ".join(
                f"{c.type}={c.status} ({c.reason}{': ' + c.message if c.message else ''})" for c in shown
            )
            print(f"status: {key}: {states}")
    errors = len(result.errors)
    fleets = sorted(result.gateways)
    # A Gateway compiles beside an error in one of its routes: what the error names is left out.
    left_out = ", without what the errors name" if errors and fleets else ""
    print(
        f"{_count(len(fleets), 'Gateway')} compiled: {', '.join(fleets) or 'none'}{left_out}; "
        f"{_count(errors, 'error')}, {_count(len(result.diagnostics) - errors, 'warning')}"
    )
    return 1 if errors else 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _no_such_gateway(fleet: str, compiled: Iterable[str]) -> str:
    """(A Gateway with errors never gets here: the command stopped at the errors.)"""
    return f"no Gateway {fleet} in the configuration (gateways: {', '.join(sorted(compiled)) or 'none'})"


def cmd_translate(args: argparse.Namespace) -> int:
    from .xds import type_urls
    from .xds.build import MCP_WITHOUT_TRANSLATOR, build_fleet, mcp_routes_left_out

    wanted = _fleet(args.gateway, "--gateway") if args.gateway else None
    if args.translator_config_out:
        return _write_translator_config(args.config, wanted, args.translator_config_out)
    result = _load_and_compile(args.config)
    for diagnostic in result.diagnostics:  # stderr: stdout is the resources
        print(diagnostic, file=sys.stderr)
    if result.errors:  # nothing on stdout: a script must not take a partial or empty result for one
        return 1
    if wanted:
        if wanted not in result.gateways:
            print(f"aigw-xds: error: {_no_such_gateway(wanted, result.gateways)}", file=sys.stderr)
            return 1
        fleets = [wanted]
    else:
        fleets = sorted(result.gateways)
    out = {}
    for fleet in fleets:
        for route in mcp_routes_left_out(result.gateways[fleet], _settings(args)):
            print(f"warning: MCPRoute {route} is not served: {MCP_WITHOUT_TRANSLATOR}", file=sys.stderr)
        resources = build_fleet(result.gateways[fleet], _settings(args))
        out[fleet] = {
            type_urls.SHORT[t]: [
                _redacted(json_format.MessageToDict(m)) if t == type_urls.SECRET else json_format.MessageToDict(m)
                for _, m in sorted(resources.messages(t).items())
            ]
            for t in type_urls.ENVOY_ORDER
        }
    # Keys sorted: the maps of a message (a Struct's fields, map<> fields) come in an order that
    # differs from process to process, and the same configuration must print the same text.
    print(_dump(out, args.output, sort_keys=True), end="")
    return 0


def _redacted(value: Any) -> Any:
    """An SDS secret as Envoy's config dump shows it: every inline value "[redacted]"."""
    if isinstance(value, dict):
        return {k: "[redacted]" if k in ("inlineString", "inlineBytes") else _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def _write_translator_config(config: str, wanted: str | None, out: str) -> int:
    """`translate --translator-config-out FILE`: the fleet's TranslatorConfig (binary protobuf, what
    `aigw-xds translator --config FILE` reads), with the secrets' real values, created mode 0600."""
    import os

    from .compile import compile_resources
    from .sources.files import FileSource

    # Real secret values (an unset variable is an error here), and a random seal secret for a fleet
    # without credentials of its own, as the serving control plane does.
    resources = FileSource(config).load()
    result = compile_resources(resources, seal_secret=os.urandom(32), issuers=_issuers(resources))
    for diagnostic in result.diagnostics:
        print(diagnostic, file=sys.stderr)
    if result.errors:
        print(f"aigw-xds: error: {len(result.errors)} error(s) in {config}; {out} not written", file=sys.stderr)
        return 1
    compiled = sorted(result.gateways)
    if wanted is None and len(compiled) != 1:
        raise CliError(f"--translator-config-out needs --gateway (compiled: {', '.join(compiled) or 'none'})")
    fleet = wanted or compiled[0]
    if fleet not in result.gateways:
        raise CliError(_no_such_gateway(fleet, result.gateways))
    data = result.gateways[fleet].translator.SerializeToString(deterministic=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
        f.write(data)
    print(
        f"aigw-xds: wrote the TranslatorConfig of {fleet} to {out} "
        "(mode 0600: it holds the backends' credentials and MCP clients' keys)",
        file=sys.stderr,
    )
    return 0


def _dump(data: object, output: str, sort_keys: bool = False) -> str:
    """JSON or YAML text of plain data (json_format's OrderedDicts included), keys in the order
    given or sorted."""
    text = json.dumps(data, indent=2, sort_keys=sort_keys)
    if output == "json":
        return text + "\n"
    import yaml

    return yaml.safe_dump(json.loads(text), sort_keys=sort_keys)


def cmd_proxy_status(args: argparse.Namespace) -> int:
    import grpc
    from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

    server = args.server or "127.0.0.1:18000"
    _host_port(server, "--server")
    _check_xds_client_flags(args)
    if args.xds_ca:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read_flag_file(args.xds_ca, "--xds-ca"),
            private_key=_read_flag_file(args.xds_key, "--xds-key") if args.xds_key else None,
            certificate_chain=_read_flag_file(args.xds_cert, "--xds-cert") if args.xds_cert else None,
        )
        name = args.xds_server_name
        channel = grpc.secure_channel(
            server, credentials, options=[("grpc.ssl_target_name_override", name)] if name else None
        )
    else:
        channel = grpc.insecure_channel(server)
    token = _read_flag_file(args.xds_token_file, "--xds-token-file").decode().strip() if args.xds_token_file else ""
    with channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        try:
            response = stub.FetchClientStatus(
                csds_pb2.ClientStatusRequest(exclude_resource_contents=True),
                timeout=5,
                metadata=(("authorization", f"Bearer {token}"),) if token else None,
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                what = f"cannot reach {server}: {exc.details()}{_unreachable_hint(args, exc.details() or '')}"
            elif exc.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
                # Something answered that is not an xDS server: a listener, Envoy's admin port...
                what = (
                    f"{server} answered, but is not aigw-xds's xDS server ({exc.details()}): give --server the "
                    "xDS address (run's ready line names it; serve's is --listen, 127.0.0.1:18000 by default)"
                )
            else:
                what = f"{server} refused the status request: {exc.details()}"
            print(f"aigw-xds: error: {what}", file=sys.stderr)
            return 1
    print(format_proxy_status(response))
    return 0


def _unreachable_hint(args: argparse.Namespace, details: str) -> str:
    """What proxy-status may lack when the server does not answer: its address (serve's port is the
    default; run's xDS port is on its ready line), or the TLS flags (against a TLS port a plaintext
    client sees only "Socket closed", as one without the client certificate mTLS asks for does).
    A certificate that did not verify is the CA's or the name's, not a client certificate's."""
    if not args.server:
        return " (for `aigw-xds run`, give --server the xDS address of its ready line)"
    if not args.xds_ca:
        return " (if it serves TLS, give --xds-ca, and for mTLS --xds-cert and --xds-key too)"
    if "CERTIFICATE_VERIFY_FAILED" in details or "certificate verify failed" in details.lower():
        return (
            " (the server's certificate is not signed by --xds-ca's CA, or does not name the address dialled: "
            "--xds-server-name gives the name it has)"
        )
    if not args.xds_cert:
        return " (if it asks for a client certificate (mTLS), give --xds-cert and --xds-key)"
    return ""


def format_proxy_status(response: csds_pb2.ClientStatusResponse) -> str:
    """One row per connected node (an Envoy, or a translator process fetching its configuration):
    its fleet, and per type the worst state of its resources, how many there are, and a version
    digest of what it was sent (equal digests: equal config); WITHHELD in every column for a node
    whose fleet is withheld (answered nothing until its Gateway's errors are fixed)."""
    from envoy.service.status.v3 import csds_pb2

    from .xds import type_urls
    from .xds.cache import versions_digest

    status_names = {number: name for name, number in csds_pb2.ConfigStatus.items()}
    columns = (
        type_urls.CLUSTER,
        type_urls.ENDPOINT,
        type_urls.LISTENER,
        type_urls.SCOPED_ROUTE,
        type_urls.ROUTE,
        type_urls.SECRET,
        type_urls.TRANSLATOR,
    )
    rows = [["NODE", "FLEET", "MODE", *(type_urls.SHORT[t] for t in columns)]]
    for config in response.config:
        fleet = config.node.metadata.fields[contract.NODE_FLEET_KEY].string_value or "(unknown)"
        if fleet == contract.TRANSLATORS_FLEET:  # a translator: the Gateways whose configuration it has
            served = {
                contract.translator_config_fleet(e.name)
                for e in config.generic_xds_configs
                if e.type_url == type_urls.TRANSLATOR
            }
            fleet = ",".join(sorted(served)) or fleet
        mode = config.node.metadata.fields[contract.NODE_MODE_KEY].string_value
        if contract.NODE_WITHHELD_KEY in config.node.metadata.fields:  # answered nothing: its Gateway has errors
            rows.append([config.node.id, fleet, mode, *(["WITHHELD"] * len(columns))])
            continue
        cells = []
        for type_url in columns:
            # Not counted: the empty assignment a SotW node gets for a cluster it still names and the
            # fleet no longer has (version "missing"): a platform team's trial read it as served.
            entries = [e for e in config.generic_xds_configs if e.type_url == type_url and e.version_info != "missing"]
            if not entries:
                cells.append("-")
                continue
            states = {status_names.get(e.config_status, "?") for e in entries}
            worst = next(
                s for s in ("ERROR", "STALE", "NOT_SENT", "SYNCED", "UNKNOWN") if s in states or s == "UNKNOWN"
            )
            version = versions_digest({e.name: e.version_info for e in entries})[:8]
            # A translator's configurations are counted by fleet, whole or in parts.
            count = (
                len({contract.translator_config_fleet(e.name) for e in entries})
                if type_url == type_urls.TRANSLATOR
                else len(entries)
            )
            cells.append(f"{worst} ({count}) {version}")
        rows.append([config.node.id, fleet, mode, *cells])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
    return table if len(rows) > 1 else table + "\n(no node is connected)"


def cmd_crds(args: argparse.Namespace) -> int:
    from .crds import crds, dump

    print(dump(crds(), args.output), end="")
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from .envoy.bootstrap import bootstrap

    host, port = _host_port(args.server, "--server")
    fleet = _fleet(args.gateway, "--gateway")  # a bare name is namespace default's, node id too
    _check_xds_client_flags(args)
    config = bootstrap(
        xds_host=host,
        xds_port=port,
        fleet=fleet,
        node_id=args.node_id or fleet,
        delta=args.delta,
        admin_port=args.admin_port,
        tls_ca=args.xds_ca,
        tls_client_cert=args.xds_cert,
        tls_client_key=args.xds_key,
        token_file=args.xds_token_file,
    )
    print(_dump(config, args.output), end="")
    return 0


def _check_xds_client_flags(args: argparse.Namespace) -> None:
    """How a command reaches the control plane (bootstrap's Envoy, proxy-status): a client
    certificate goes with its key, and both, like a token, over TLS only."""
    if bool(args.xds_cert) != bool(args.xds_key):
        given, missing = ("--xds-cert", "--xds-key") if args.xds_cert else ("--xds-key", "--xds-cert")
        raise CliError(f"{given} requires {missing}: a client certificate goes with its private key")
    for flag, value in (("--xds-cert", args.xds_cert), ("--xds-token-file", args.xds_token_file)):
        if value and not args.xds_ca:
            raise CliError(f"{flag} requires --xds-ca: it is sent over TLS only")


def _read_flag_file(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"{flag} {path}: {exc.strerror or exc}") from None


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1 (the control plane's own translator)")
    return value


def _add_workers_flag(command: argparse.ArgumentParser) -> None:
    from .processes import default_translator_workers

    default = default_translator_workers()
    command.add_argument(
        "--translator-workers",
        type=_workers,
        default=default,
        help=f"translator processes, this one included (default on this host: {default}, half its cores); "
        "more spread the ext_proc work of the requests that need Python over cores",
    )


def _budget_options(args: argparse.Namespace) -> BudgetOptions:
    from aigw_translator.arguments import rate_limit_problem
    from aigw_translator.budgets import BudgetOptions

    problem = rate_limit_problem(args.rate_limit_redis)
    if problem:
        raise CliError(problem)
    options = BudgetOptions(args.rate_limit_redis, fail_closed=args.rate_limit_fail_mode == "closed")
    if options.ignored:
        print(f"aigw-xds: warning: {options.ignored}", file=sys.stderr)
    return options


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "console", "json")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aigw-xds", description="AI gateway control plane for Envoy")
    p.add_argument("--version", action="version", version=f"aigw-xds {__version__}")
    format_help = "auto (default): console for run, and for the other commands when stderr is a terminal; else json"
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    p.add_argument("--log-format", default="auto", choices=LOG_FORMATS, help=format_help)
    # The same two after the command (`aigw-xds run --log-format json`), where they win.
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS, help="default info")
    after.add_argument("--log-format", default=argparse.SUPPRESS, choices=LOG_FORMATS, help=format_help)
    sub = p.add_subparsers(dest="command", required=True)

    def add_command(name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        """A subcommand whose --help opens with what it does (the line the command list shows)."""
        return sub.add_parser(name, help=help, description=help, parents=[after], **kwargs)

    r = add_command("run", help="run the control plane, the translator and a local Envoy; watch PATH")
    r.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help="a YAML file or a directory of them; without it, a configuration is generated from "
        "OPENAI_API_KEY, ANTHROPIC_API_KEY, AZURE_OPENAI_API_KEY (or AZURE_CLIENT_ID), AWS_ACCESS_KEY_ID (or "
        "AWS_PROFILE), GOOGLE_CLOUD_PROJECT and their companions",
    )
    r.add_argument(
        "--print-config", action="store_true", help="print the configuration generated without PATH, and exit"
    )
    r.add_argument(
        "--port",
        type=_port,
        default=None,
        help="without PATH: the listener port of the configuration generated (default 1975)",
    )
    r.set_defaults(autoconfigured=False)
    r.add_argument("--gateway", help='"<namespace>/<name>" when PATH holds several Gateways')
    r.add_argument(
        "--listen-address",
        default="127.0.0.1",
        help="IP address the Gateway's listeners bind (default 127.0.0.1: this machine only; "
        "0.0.0.0 opens them to the network, and whoever reaches them spends the providers' keys)",
    )
    r.add_argument("--admin-port", type=_fixed_port, default=9901, help="Envoy admin port (default 9901)")
    r.add_argument("--xds-port", type=_port, default=0, help="control plane port (default: any free port)")
    r.add_argument(
        "--envoy-log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="the local Envoy's log level (default warning)",
    )
    _add_workers_flag(r)
    arguments.add_rate_limit_flags(r)
    r.set_defaults(func=cmd_run)

    s = add_command("serve", help="serve xDS (ADS SotW + Delta, CSDS) for the resources under PATH or in Kubernetes")
    where = _add_config_path(s, "; or --kubernetes")
    where.add_argument(
        "--kubernetes",
        action="store_true",
        help="read the resources from the Kubernetes API (in-cluster, or --kubeconfig), write their status",
    )
    s.add_argument("--listen", default="0.0.0.0:18000", help="gRPC listen address (default 0.0.0.0:18000)")
    s.add_argument("--no-watch", action="store_true", help="do not watch PATH for changes")
    k = s.add_argument_group("Kubernetes (with --kubernetes)")
    k.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, else $KUBECONFIG or ~/.kube/config)")
    k.add_argument(
        "--watch-namespaces",
        type=_namespaces,
        metavar="NS[,NS...]",
        help="read namespaced resources in these namespaces only (default: all)",
    )
    k.add_argument(
        "--controller-name",
        help="serve the Gateways whose GatewayClass names this controllerName "
        f"(default {DEFAULT_CONTROLLER_NAME}; gateway.envoyproxy.io/gatewayclass-controller takes over "
        "Envoy Gateway's)",
    )
    k.add_argument(
        "--leader-election-namespace",
        default=None,
        help="namespace of the Lease that elects the replica writing status (default: $POD_NAMESPACE, else "
        "aigw-system)",
    )
    k.add_argument(
        "--leader-election-timings",
        type=_lease_timings,
        metavar="LEASE,RENEW,RETRY",
        help="seconds: lease duration, renew deadline, retry period (default 15,10,2, client-go's)",
    )
    s.add_argument(
        "--health-listen",
        help="serve GET /healthz and /readyz for probes, and /metrics for Prometheus (plain HTTP) on this host:port",
    )
    s.add_argument("--tls-cert", help="serve xDS over TLS with this certificate (PEM)")
    s.add_argument("--tls-key", help="private key of --tls-cert (PEM)")
    s.add_argument(
        "--tls-client-ca",
        help="require client certificates signed by this CA (mTLS), also with --tls-secret (gRPC Python cannot "
        "make them optional: every client, token or not, then needs one)",
    )
    k.add_argument(
        "--tls-secret",
        metavar="NAMESPACE/NAME",
        help="serve xDS over TLS with the certificate of this kubernetes.io/tls Secret, created with a CA of its "
        f"own when missing and renewed 30 days before it ends (default without --tls-cert: "
        f'$POD_NAMESPACE/{DEFAULT_TLS_SECRET}, else aigw-system/{DEFAULT_TLS_SECRET}; "" for plaintext); the CA is '
        "published as the ConfigMap aigw-xds-ca in the namespaces of the Gateways (docs/kubernetes.md, TLS)",
    )
    k.add_argument(
        "--tls-service-name",
        help="the Service of the control plane (in $POD_NAMESPACE) the certificate names (default aigw-xds)",
    )
    s.add_argument(
        "--authorize",
        action="append",
        default=[],
        type=_grant,
        metavar="IDENTITY=NAMESPACE/GATEWAY",
        help="also give this identity (spiffe://..., serviceaccount:NS/SA, dns:NAME or cn:NAME) the fleet of "
        "NAMESPACE/GATEWAY (* for every Gateway of the namespace); repeatable (docs/translator-sidecar.md)",
    )
    s.add_argument(
        "--translator-listen",
        default=contract.TRANSLATOR_ADDRESS,
        help=f"run the translator in this process on this address (default {contract.TRANSLATOR_ADDRESS}); "
        '"" to run it elsewhere (aigw-xds translator, e.g. as a sidecar)',
    )
    s.add_argument(
        "--insecure-translator-listen",
        action="store_true",
        help="let --translator-listen be an address other hosts reach: anyone who connects can read the backends' keys",
    )
    s.add_argument(
        "--mcp-listen",
        help="with --translator-listen: where its MCP proxy listens, which answers the MCPRoutes' clients through "
        f"Envoy; loopback only (default {contract.MCP_PROXY_ADDRESS} beside the default --translator-listen, "
        'a free port of its host beside another; "" for none)',
    )
    s.add_argument(
        "--envoy-drain-time",
        type=_seconds,
        default=float(ENVOY_DEFAULT_DRAIN_TIME_S),
        metavar="SECONDS",
        help="how long the Envoys drain a listener they replaced or removed (their --drain-time-s; default "
        f"{ENVOY_DEFAULT_DRAIN_TIME_S}, Envoy's): the route scopes such a listener had are served that long and "
        "5 s more, so that its draining connections keep their routes (0: removed at once)",
    )
    _add_workers_flag(s)
    arguments.add_rate_limit_flags(s)
    _add_build_flags(
        s,
        "--translator-listen's address, loopback for 0.0.0.0",
        f"--mcp-listen's; {contract.MCP_PROXY_ADDRESS}, a sidecar's, with --translator-address or no proxy in-process",
    )
    s.set_defaults(func=cmd_serve)

    tr = add_command(
        "translator",
        help="run the translator (ext_proc) alone, e.g. as a sidecar (options: aigw-xds translator --help)",
        add_help=False,
    )
    tr.set_defaults(args=[])
    tr.set_defaults(func=cmd_translator)

    t = add_command("translate", help="print the Envoy resources a node of a fleet would get")
    _add_config_path(t)
    t.add_argument("--gateway", help='"<namespace>/<name>" (default: every Gateway)')
    t.add_argument("-o", "--output", default="yaml", choices=["yaml", "json"])
    t.add_argument(
        "--translator-config-out",
        metavar="FILE",
        help="instead of the Envoy resources, write the Gateway's TranslatorConfig (binary protobuf) to FILE "
        "for `aigw-xds translator --config FILE`; it holds the backends' credentials (and MCP clients' keys): "
        "the file is created mode 0600, and unset secret variables are errors",
    )
    t.add_argument(
        "--trusted-envoys",
        action="store_true",
        help="what a node gets when every xDS client is trusted (`run`; `serve` on a loopback --listen or with "
        "mTLS): the rules Envoy serves alone inject their keys from SDS secrets (shown [redacted]) instead of "
        "going through the translator",
    )
    _add_build_flags(t, contract.TRANSLATOR_ADDRESS, contract.MCP_PROXY_ADDRESS)
    t.set_defaults(func=cmd_translate)

    v = add_command("validate", help="check the resources; exit 1 on errors (warnings alone: 0)")
    _add_config_path(v)
    v.add_argument(
        "--status",
        action="store_true",
        help="also print each resource's status conditions (but Programmed=True, which only the Envoys' ACKs give)",
    )
    v.set_defaults(func=cmd_validate)

    ps = add_command("proxy-status", help="connected Envoys and their sync state (from CSDS)")
    ps.add_argument("--server", help="control plane address host:port (default 127.0.0.1:18000, serve's)")
    _add_xds_client_flags(
        ps,
        ca="reach the control plane over TLS (serve --tls-cert; in Kubernetes mode, always), verifying its "
        "certificate against this CA bundle (in Kubernetes: the ConfigMap aigw-xds-ca)",
        token="with --xds-ca: send this ServiceAccount token (audience aigw-xds) as `authorization: Bearer`; in "
        "Kubernetes mode it shows the nodes of the fleets that account may have",
    )
    ps.add_argument(
        "--xds-server-name",
        metavar="NAME",
        help="with --xds-ca: the name the control plane's certificate must hold, when --server is another "
        "(through `kubectl port-forward`: aigw-xds.aigw-system.svc)",
    )
    ps.set_defaults(func=cmd_proxy_status)

    b = add_command("bootstrap", help="print an Envoy bootstrap that points a node at the control plane")
    b.add_argument(
        "--server", default="127.0.0.1:18000", help="control plane address host:port (default 127.0.0.1:18000)"
    )
    b.add_argument("--gateway", required=True, help='fleet of the node, "<namespace>/<gateway>"')
    b.add_argument("--node-id", help="node id (default: the gateway)")
    b.add_argument("--delta", action="store_true", help="use incremental xDS (DELTA_GRPC)")
    b.add_argument("--admin-port", type=_port, default=9901, help="the node's Envoy admin port (default 9901)")
    _add_xds_client_flags(
        b,
        ca="reach the control plane over TLS, verifying its certificate (which must name the --server host) "
        "against this CA bundle, a path on the Envoy's machine (in Kubernetes: the ConfigMap aigw-xds-ca mounted)",
        token="send this ServiceAccount token (audience aigw-xds; in Kubernetes: a projected token) as "
        "`authorization: Bearer` when opening the xDS stream, read again on every reconnection (requires --xds-ca)",
        on="a path on the Envoy's machine",
    )
    b.add_argument("-o", "--output", default="yaml", choices=["yaml", "json"])
    b.set_defaults(func=cmd_bootstrap)

    c = add_command(
        "crds", help="print the CustomResourceDefinitions of the aigateway.envoyproxy.io kinds (kubectl apply -f -)"
    )
    c.add_argument("-o", "--output", default="yaml", choices=["yaml", "json"])
    c.set_defaults(func=cmd_crds)
    return p


def _add_xds_client_flags(p: argparse.ArgumentParser, *, ca: str, token: str, on: str = "") -> None:
    """--xds-ca, --xds-cert, --xds-key and --xds-token-file: how a client reaches the control plane
    (the names the translator's --xds takes)."""
    where = f", {on}" if on else ""
    p.add_argument("--xds-ca", metavar="FILE", help=ca)
    p.add_argument(
        "--xds-cert",
        metavar="FILE",
        help=f"with --xds-ca and --xds-key: a client certificate (mTLS: serve --tls-client-ca){where}",
    )
    p.add_argument("--xds-key", metavar="FILE", help=f"the private key of --xds-cert{where}")
    p.add_argument("--xds-token-file", metavar="FILE", help=token)


def _add_config_path(p: argparse.ArgumentParser, alternative: str = "") -> argparse._MutuallyExclusiveGroup:
    """PATH, or --config PATH (the form of earlier releases): one of them is required (or what the
    returned group also holds)."""
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "config_path", nargs="?", metavar="PATH", help=f"a YAML file or a directory of them{alternative}"
    )
    where.add_argument("--config", metavar="PATH", help="the same as PATH")
    return where


def main(argv: list[str] | None = None) -> int:
    """Every error the user can fix is one line on stderr ("aigw-xds: error: ...") and exit status 1."""
    # gRPC is not imported yet. Its fork handlers are of no use to us (a child process of ours execs
    # at once: translator workers, Envoy) and print a warning when a worker starts while gRPC's
    # threads run.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    # gRPC's own info lines (a client's failed TLS handshake) are not in this log's format, and
    # would be mixed into it: only its errors are written (GRPC_VERBOSITY=INFO shows the rest).
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    sys.setrecursionlimit(max(sys.getrecursionlimit(), contract.RECURSION_LIMIT))
    own, translator_args = _split_translator(list(sys.argv[1:] if argv is None else argv))
    args = parser().parse_args(own)
    if translator_args is not None:
        args.args = translator_args
    if getattr(args, "config_path", None) is not None:
        args.config = args.config_path
    # run is the developer's command: console lines whatever its output is (a file, a pipe);
    # serve's auto is JSON unless stderr is a terminal.
    output_format = "console" if args.command == "run" and args.log_format == "auto" else args.log_format
    configure(args.log_level, output_format)
    # What run writes besides its log (its messages, Envoy's access log), in run's log format; the
    # other commands print their errors as text.
    args.console = console = Console(output_format if args.command == "run" else "console")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        console.error(str(exc))
        return 1
    except OSError as exc:  # a PATH that does not exist, an unreadable file
        where = f": {exc.filename}" if exc.filename else ""
        console.error(f"{exc.strerror or exc}{where}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
