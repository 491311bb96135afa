"""A Gateway removed from the configuration while Envoys are connected to its fleet: said at
warning level, naming them (a platform team's trial moved a file away for two seconds and every
Envoy lost its listeners, with only info lines to show for it)."""

from __future__ import annotations

from pathlib import Path

import grpc
import structlog
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc

from aigw_xds.control_plane import ControlPlane
from aigw_xds.xds import type_urls
from tests.resource_text import backend, gateway, route

from .conftest import FLEET, FakeEnvoy


async def test_a_fleet_removed_under_connected_envoys_is_a_warning_naming_them(tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}) + backend("a", 9001))
    plane = ControlPlane(tmp_path, listen="127.0.0.1:0", watch=False)
    await plane.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{plane.port}")
    envoy = FakeEnvoy(
        ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel), False, base_pb2.Node(id="edge-1", cluster=FLEET)
    )
    try:
        await envoy.send(type_url=type_urls.LISTENER)
        listeners = await envoy.recv()
        assert listeners.resources
        await envoy.ack(listeners)
        (tmp_path / "gw.yaml").unlink()
        with structlog.testing.capture_logs() as logs:
            await plane.read_again()
        said = [e for e in logs if e["event"] == "fleet_removed_while_connected"]
        assert [(e["fleet"], e["nodes"], e["log_level"]) for e in said] == [(FLEET, "edge-1", "warning")]
    finally:
        await envoy.close()
        await channel.close()
        await plane.stop(0)
