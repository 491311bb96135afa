"""GET /metrics on serve's health port: what a platform team's trial could only read from logs
(connected nodes, NACKs, pushes, withheld fleets), in Prometheus's text format, scraped from a
control plane with a node that applies one type and rejects another."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from google.rpc import status_pb2

from aigw_xds.control_plane import ControlPlane
from aigw_xds.metrics import FAMILIES, FleetSync, Sample, State, render, samples
from aigw_xds.xds import type_urls
from tests.resource_text import backend, gateway, route

from .conftest import FLEET, FakeEnvoy


def _scrape(port: int) -> tuple[str, dict[str, float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        content_type, text = answer.headers["content-type"], answer.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return content_type, values


async def test_metrics_count_nodes_applied_and_rejecting_nacks_and_publishes(tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}) + backend("a", 9001))
    plane = ControlPlane(tmp_path, listen="127.0.0.1:0", watch=False, health_listen="127.0.0.1:0")
    await plane.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{plane.port}")
    envoy = FakeEnvoy(
        ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel), True, base_pb2.Node(id="edge-1", cluster=FLEET)
    )
    try:
        assert plane.health is not None
        await envoy.send(type_url=type_urls.CLUSTER, resource_names_subscribe=["*"])
        await envoy.ack(await envoy.recv())
        await envoy.send(type_url=type_urls.LISTENER, resource_names_subscribe=["*"])
        await envoy.nack(await envoy.recv(), "", message="port taken")
        # A type the client makes up is not a label of ours (a client must not grow the counters).
        bogus = status_pb2.Status(code=3, message="x")
        await envoy.send(type_url="type.googleapis.com/made.Up", response_nonce="1", error_detail=bogus)
        await asyncio.sleep(0.3)  # the NACKs read by the server
        content_type, values = await asyncio.to_thread(_scrape, plane.health.port)
    finally:
        await envoy.close()
        await channel.close()
        await plane.stop(0)
    assert content_type == "text/plain; version=0.0.4"
    fleet = f'{{fleet="{FLEET}"}}'
    assert values[f"aigw_xds_fleet_nodes{fleet}"] == 1
    assert values[f"aigw_xds_fleet_nodes_applied{fleet}"] == 0  # its listeners were rejected
    assert values[f"aigw_xds_fleet_nodes_rejecting{fleet}"] == 1
    assert values[f"aigw_xds_fleet_withheld{fleet}"] == 0
    assert values['aigw_xds_streams{protocol="delta"}'] == 1
    assert values[f'aigw_xds_nacks_total{{fleet="{FLEET}",type="LDS"}}'] == 1
    assert [name for name in values if name.startswith("aigw_xds_nacks_total")] == [
        f'aigw_xds_nacks_total{{fleet="{FLEET}",type="LDS"}}'
    ]
    assert values[f"aigw_xds_snapshot_publishes_total{fleet}"] == 1
    assert values["aigw_xds_configuration_reads_total"] == 1 and values["aigw_xds_configuration_errors"] == 0
    assert values["aigw_xds_process_resident_memory_bytes"] > 10_000_000


def test_the_text_format_escapes_labels_and_declares_every_family_once() -> None:
    state = State({'a/"g"': FleetSync("v", 2, 1)}, ["w/x"], {}, {}, {}, 3, 2, 0.25, 0)
    text = render(samples(state))
    assert 'aigw_xds_fleet_nodes{fleet="a/\\"g\\""} 2' in text
    assert 'aigw_xds_fleet_withheld{fleet="w/x"} 1' in text
    assert "aigw_xds_configuration_apply_seconds 0.25" in text
    assert [line for line in text.splitlines() if line.startswith("# TYPE")] == [
        f"# TYPE {name} {kind}" for name, (kind, _) in FAMILIES.items()
    ]
    assert render([Sample("aigw_xds_streams", (("protocol", "a\nb"),), 1)]).count('protocol="a\\nb"') == 1
