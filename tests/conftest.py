"""Fixtures every test directory can use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aigw_fakes.kube_apiserver import KubeAPIServer
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
def kube_api() -> Iterator[KubeAPIServer]:
    """The emulated Kubernetes API server (a stand-in), running in its own thread; stop() and
    start() it for outages."""
    with running_api() as server:
        yield server
