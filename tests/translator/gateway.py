"""An end-to-end gateway for tests: translator (in-process) + real Envoy + fake providers."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aigw.translator.v1 import config_pb2
from aigw_translator.server import TranslatorServer, serve

from .envoy_harness import AccessLog, Cluster, Envoy, Route, build_bootstrap, free_port, make_workdir


@dataclass
class Gateway:
    envoy: Envoy
    translator: TranslatorServer
    access_log: AccessLog

    @property
    def url(self) -> str:
        return self.envoy.url


@contextlib.asynccontextmanager
async def run_gateway(
    config: config_pb2.TranslatorConfig,
    routes: list[Route],
    clusters: list[Cluster],
    extra_translator_ports: tuple[int, ...] = (),
    buffer_limit_bytes: int = 52428800,
) -> AsyncIterator[Gateway]:
    """`extra_translator_ports`: more translator processes behind the same Envoy cluster."""
    translator = await serve(config, "127.0.0.1:0")
    workdir = make_workdir()
    listen_port, admin_port = free_port(), free_port()
    bootstrap = build_bootstrap(
        listen_port=listen_port,
        admin_port=admin_port,
        translator_ports=[translator.port, *extra_translator_ports],
        routes=routes,
        clusters=clusters,
        access_log_path=str(workdir / "access.log"),
        buffer_limit_bytes=buffer_limit_bytes,
    )
    envoy = Envoy(bootstrap, admin_port, listen_port, workdir)
    try:
        await envoy.start()
        yield Gateway(envoy, translator, AccessLog(workdir / "access.log"))
    finally:
        envoy.stop()
        await translator.stop(0)
        shutil.rmtree(workdir, ignore_errors=True)
