"""The product path for end-to-end tests: YAML resources -> control plane (compile, xDS build, ADS,
in-process translator fed its per-fleet TranslatorConfig) -> a real Envoy bootstrapped only with the
ADS address, exactly as `aigw-xds run` does it. Nothing of Envoy's data-plane configuration is
written here: listeners, routes, clusters, filters and the access log all come from the control
plane."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import structlog

from aigw.translator.v1 import config_pb2
from aigw_translator.server import TranslatorServer
from aigw_xds.control_plane import ControlPlane
from aigw_xds.envoy.process import EnvoyProcess
from aigw_xds.xds.build import BuildSettings

from . import resources
from .envoy import AccessLog, launch_envoy, listener_active
from .processes import PortTaken, free_port
from .resources import FLEET

GATEWAY_CONFIG = "gw-config"


@dataclass
class Gateway:
    plane: ControlPlane
    envoy: EnvoyProcess
    port: int
    access_log: AccessLog
    # Translator processes started besides the control plane's in-process one.
    extra_translators: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def translator(self) -> TranslatorServer:
        assert self.plane.translator is not None
        return self.plane.translator

    def envoy_log(self) -> str:
        return self.envoy.stderr_text()


def _start_translator_process(config: config_pb2.TranslatorConfig, port: int, workdir: Path) -> subprocess.Popen:
    """`python -m aigw_translator` on the fleet's TranslatorConfig (written as binary)."""
    path = workdir / f"translator-{port}.pb"
    path.write_bytes(config.SerializeToString())
    with (workdir / f"translator-{port}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "aigw_translator", "--config", str(path), "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


async def _translator_ready(process: subprocess.Popen, port: int, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        while True:
            if process.poll() is not None:
                raise PortTaken(f"translator process on port {port} exited with {process.returncode}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(channel.channel_ready(), timeout=0.2)
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"translator process on port {port} not ready")


@dataclass
class _Started:
    plane: ControlPlane
    envoy: EnvoyProcess | None = None
    others: list[subprocess.Popen] = field(default_factory=list)

    async def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        for process in self.others:
            process.terminate()
            process.wait(timeout=30)
        await self.plane.stop(0)


async def _start(
    workdir: Path,
    text: str,
    documents: tuple[str, ...],
    extra_translators: int,
    mcp_proxy: bool | None,
    route_scopes_from: int | None,
) -> Gateway:
    config_dir = workdir / "config"
    config_dir.mkdir()
    port = free_port()
    (config_dir / "gateway.yaml").write_text((text + "".join(documents)).replace(LISTENER_PORT, str(port)))
    if extra_translators:
        # The addresses of all translators must be known before the control plane builds the
        # translator cluster.
        ports = [free_port() for _ in range(1 + extra_translators)]
        translator_listen = f"127.0.0.1:{ports[0]}"
        addresses = ",".join(f"127.0.0.1:{p}" for p in ports)
    else:  # the control plane points Envoy at the port its translator got
        ports, translator_listen, addresses = [], "127.0.0.1:0", "127.0.0.1:0"
    settings = BuildSettings(translator_address=addresses, access_log_path=str(workdir / "access.log"))
    if route_scopes_from is not None:
        settings = replace(settings, route_scopes_from=route_scopes_from)
    if mcp_proxy is not None:  # the in-process MCP proxy on a port of its own, or a port nothing serves
        settings = replace(settings, mcp_address=f"127.0.0.1:{0 if mcp_proxy else free_port()}")
    plane = ControlPlane(
        config_dir,
        listen="127.0.0.1:0",
        settings=settings,
        translator_listen=translator_listen,
        mcp_listen="127.0.0.1:0" if mcp_proxy else None,
        watch=False,
    )
    started = _Started(plane)
    try:
        try:
            await plane.start()
        except RuntimeError as exc:  # grpc: "Failed to bind"
            raise PortTaken(str(exc)) from exc
        errors = [str(d) for d in plane.errors()]
        gateways = plane.compiled()
        assert FLEET in gateways and not errors, f"the resources do not compile: {errors}"
        config = gateways[FLEET].translator
        started.others.extend(_start_translator_process(config, p, workdir) for p in ports[1:])
        (workdir / "envoy").mkdir()
        started.envoy = envoy = launch_envoy(
            plane.port, FLEET, node_id="e2e", log_level="warning", workdir=workdir / "envoy"
        )
        loop = asyncio.get_running_loop()

        async def envoy_ready() -> None:
            try:
                await loop.run_in_executor(None, envoy.wait_ready)
            except RuntimeError as exc:  # exited: the admin port was taken
                raise PortTaken(str(exc)) from exc
            await loop.run_in_executor(None, listener_active, envoy)

        extras = zip(started.others, ports[1:], strict=True)
        await asyncio.gather(envoy_ready(), *(_translator_ready(process, p) for process, p in extras))
    except BaseException:
        await started.stop()
        raise
    return Gateway(plane, envoy, port, AccessLog(workdir / "access.log", envoy), started.others)


LISTENER_PORT = "LISTENER_PORT"


@contextlib.asynccontextmanager
async def run_gateway(
    *documents: str,
    global_costs: list[dict[str, str]] | None = None,
    buffer_limit: str | None = None,
    extra_translators: int = 0,
    mcp_proxy: bool | None = None,
    route_scopes_from: int | None = None,
    forward_proxy: str | None = None,
) -> AsyncIterator[Gateway]:
    """Writes the Gateway `default/gw` (listening on a free port) and `documents` to a config
    directory, starts the control plane on it (translator in-process) and an Envoy of the fleet.

    `global_costs`: GatewayConfig globalLLMRequestCosts. `buffer_limit`: a ClientTrafficPolicy
    connection.bufferLimit. `extra_translators`: that many more translator processes
    (`python -m aigw_translator` on the fleet's TranslatorConfig) behind the same Envoy cluster.
    `mcp_proxy`: the MCPRoutes' proxy runs in the control plane's translator (True), or Envoy looks
    for it where nothing listens (False). `route_scopes_from`: BuildSettings.route_scopes_from (0:
    the listener's routes in scopes). `forward_proxy`: GatewayConfig forwardProxy.address."""
    configured = bool(global_costs or forward_proxy)
    text = resources.gateway(LISTENER_PORT, config=GATEWAY_CONFIG if configured else None)
    if configured:
        text += resources.gateway_config(GATEWAY_CONFIG, global_costs or [], forward_proxy)
    if buffer_limit:
        text += resources.buffer_limit(buffer_limit)
    # The in-process translator logs every request at debug level; rendering that costs more CPU
    # than the translation itself. Info and above still show.
    logging_config = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    workdirs: list[Path] = []
    try:
        for attempt in range(3):
            workdirs.append(Path(tempfile.mkdtemp(prefix="aigw-translator-e2e-")))
            try:
                gw = await _start(workdirs[-1], text, documents, extra_translators, mcp_proxy, route_scopes_from)
                break
            except PortTaken:
                if attempt == 2:
                    raise
        try:
            yield gw
        finally:
            await _Started(gw.plane, gw.envoy, gw.extra_translators).stop()
    finally:
        for workdir in workdirs:
            shutil.rmtree(workdir, ignore_errors=True)
        structlog.configure(**logging_config)
