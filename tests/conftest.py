"""Fixtures every test directory can use."""

from __future__ import annotations

import os

# Before anything imports gRPC, as `aigw-xds` itself does: tests start subprocesses (fork, then
# exec) while gRPC's threads serve in this process, and gRPC's fork handlers then sometimes left
# the child hung before its exec (a translator that never started, seen under CPU load).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from collections.abc import Iterator
from pathlib import Path

import pytest

from aigw_fakes.kube_apiserver import KubeAPIServer
from aigw_xds.kubernetes.api import KubeAPI, connect
from tests.kube_api import running_api
from tests.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, no persistence; kill() and start() it for outages."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def kube(kube_api: KubeAPIServer, tmp_path: Path) -> KubeAPI:
    """The controller's identity on the emulated API server, connected as serve --kubernetes does
    (the kubeconfig it writes)."""
    return KubeAPI(connect(str(kube_api.write_kubeconfig(tmp_path / "kubeconfig"))))


@pytest.fixture
def kube_api() -> Iterator[KubeAPIServer]:
    """The emulated Kubernetes API server (a stand-in), running in its own thread; stop() and
    start() it for outages."""
    with running_api() as server:
        yield server
