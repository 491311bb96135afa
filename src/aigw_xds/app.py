"""The serving process: file source -> controller -> snapshot cache -> gRPC (ADS + CSDS)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import grpc
import structlog

from .compile.ir import GatewayIR
from .controller import Controller
from .resources import ResourceSet
from .sources.files import FileSource
from .xds.build import BuildSettings
from .xds.cache import SnapshotCache
from .xds.server import GRPC_SERVER_OPTIONS, Registry, TLSFiles, add_services, bind

log = structlog.get_logger(__name__)


class ControlPlane:
    """Serves xDS for the resources under `config`; with `translator_listen`, also runs the
    translator in this process and keeps its per-fleet configuration current."""

    def __init__(
        self,
        config: str | Path,
        *,
        listen: str = "0.0.0.0:18000",
        settings: BuildSettings | None = None,
        tls: TLSFiles | None = None,
        watch: bool = True,
        translator_listen: str | None = None,
        translator_workers: int = 1,
        require_gateway: bool = False,
    ) -> None:
        self.source = FileSource(config)
        self.cache = SnapshotCache()
        self.registry = Registry()
        self.settings = settings or BuildSettings()
        self.controller = Controller(self.cache, self.settings, on_translator_config=self._push_translator_config)
        self.listen = listen
        self.tls = tls
        self.watch = watch
        self.translator_listen = translator_listen
        self.translator_workers = translator_workers
        # serve: a first load with errors that compiles no Gateway is fatal (start raises ValueError);
        # an error-free one without a Gateway serves and waits for one.
        self.require_gateway = require_gateway
        self.translator = None
        self._workers: list[subprocess.Popen] = []
        self.port = 0
        self.resources: ResourceSet | None = None  # as loaded at start
        self._server: grpc.aio.Server | None = None
        self._watcher: asyncio.Task | None = None
        self._stop = asyncio.Event()

    def _push_translator_config(self, gateways: dict[str, GatewayIR]) -> None:
        if self.translator is not None:
            self.translator.update_configs({fleet: ir.translator for fleet, ir in gateways.items()})

    async def start(self) -> None:
        worker_ports: list[int] = []
        if self.translator_listen and self.settings.translator_enabled:
            from aigw_translator.server import serve as serve_translator

            _check_listen("the translator", self.translator_listen)
            try:
                self.translator = await serve_translator({}, self.translator_listen)
            except RuntimeError as exc:
                raise OSError(f"the translator cannot listen on {_why_not(self.translator_listen)}") from exc
            host, _, port = self.settings.translator_address.rpartition(":")
            if port == "0":  # "pick a free port": point Envoy at the one the translator got
                self.settings = replace(self.settings, translator_address=f"{host}:{self.translator.port}")
            worker_ports = [_free_port() for _ in range(self.translator_workers - 1)]
            if worker_ports:
                extra = ",".join(f"127.0.0.1:{p}" for p in worker_ports)
                self.settings = replace(self.settings, translator_address=f"{self.settings.translator_address},{extra}")
            self.controller.settings = self.settings
        self.resources = self.source.load()
        report = self.controller.apply(self.resources)
        errors = [d for d in report.diagnostics if d.is_error]
        log.info("configuration loaded", fleets=self.cache.fleets(), kept=report.kept, errors=len(errors))
        if not self.controller.last_good:
            if errors and self.require_gateway:
                problems = "; ".join(str(d).removeprefix("error: ") for d in errors)
                raise ValueError(f"no Gateway compiled: {problems}")
            waiting = "waiting for Gateways" if self.watch else "serving none (--no-watch: edits are not read)"
            log.warning(f"no Gateway compiled yet; {waiting}", config=str(self.source.path))
        _check_listen("the xDS server", self.listen)
        self._server = grpc.aio.server(options=GRPC_SERVER_OPTIONS)
        add_services(self._server, self.cache, self.registry)
        try:
            self.port = bind(self._server, self.listen, self.tls)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise OSError(f"the xDS server cannot listen on {_why_not(self.listen)}")
        await self._server.start()
        log.info("xDS server listening", address=self.listen, port=self.port, tls=self.tls is not None)
        for port in worker_ports:
            self._workers.append(await _start_worker(self.port, port))
        if self.watch:
            self._watcher = asyncio.create_task(self.source.watch(self._on_change, stop=self._stop))

    async def _on_change(self, resources) -> None:  # type: ignore[no-untyped-def]
        report = self.controller.apply(resources)
        log.info("configuration applied", published=report.published, kept=report.kept, removed=report.removed)

    async def wait(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()

    async def stop(self, grace: float = 1.0) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.cancel()
        if self._server is not None:
            await self._server.stop(grace)
        if self.translator is not None:
            await self.translator.stop(grace)
        for worker in self._workers:
            worker.terminate()
        for worker in self._workers:
            await asyncio.get_running_loop().run_in_executor(None, worker.wait)


def _check_listen(what: str, address: str) -> None:
    """OSError naming the cause when a test bind shows that `address` cannot be listened on (before
    gRPC tries, which would log its own line and tell no cause)."""
    from aigw_translator.arguments import listen_problem

    problem = listen_problem(address)
    if problem:
        raise OSError(f"{what} cannot listen on {address}: {problem}")


def _why_not(address: str) -> str:
    """address and why a server could not listen on it, as far as a test bind tells."""
    from aigw_translator.arguments import listen_problem

    return f"{address}: {listen_problem(address) or 'gRPC could not bind it'}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child before exec (Linux)
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def _start_worker(xds_port: int, port: int) -> subprocess.Popen:
    """An extra translator process that follows this control plane over xDS; returns once it
    listens (it listens only after its first configuration arrived)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aigw_translator",
            "--xds",
            f"127.0.0.1:{xds_port}",
            "--listen",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ],
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    deadline = asyncio.get_running_loop().time() + 30
    while asyncio.get_running_loop().time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"translator worker exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                log.info("translator worker ready", port=port, pid=process.pid)
                return process
        await asyncio.sleep(0.05)
    process.kill()
    raise RuntimeError(f"translator worker on port {port} did not start")
