"""CSDS over gRPC: per node and resource SYNCED / STALE / ERROR / NOT_SENT, and the proxy-status table."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from aigw_xds.cli import format_proxy_status
from aigw_xds.xds import type_urls

from .conftest import FLEET, config, snapshot_of


async def test_states_per_resource(plane):
    plane.cache.set(snapshot_of(config({"m": "a"}, {"a": 9001})))
    envoy = plane.envoy(node_id="node-a")
    await envoy.send(type_url=type_urls.CLUSTER)
    cds = await envoy.recv()
    await envoy.ack(cds)
    await envoy.send(type_url=type_urls.ENDPOINT, resource_names=["default/r/rule/0"])
    await envoy.recv()  # EDS sent, not acknowledged: STALE
    await envoy.send(type_url=type_urls.ROUTE, resource_names=["default/gw/8080", "missing-route"])
    rds = await envoy.recv()
    await envoy.nack(rds, version="", names=["default/gw/8080", "missing-route"], message="no")
    # Probe: a new subscription's answer proves the server processed everything above.
    await envoy.send(type_url=type_urls.LISTENER)
    await envoy.recv()

    stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(plane.channel)
    response = await stub.FetchClientStatus(csds_pb2.ClientStatusRequest())
    [client] = response.config
    assert client.node.id == "node-a"
    assert client.node.metadata.fields["aigw.fleet"].string_value == "default/gw"
    status = {(e.type_url, e.name): e.config_status for e in client.generic_xds_configs}
    assert status[(type_urls.CLUSTER, "default/r/rule/0")] == csds_pb2.SYNCED
    assert status[(type_urls.ENDPOINT, "default/r/rule/0")] == csds_pb2.STALE
    assert status[(type_urls.ROUTE, "default/gw/8080")] == csds_pb2.ERROR
    assert status[(type_urls.ROUTE, "missing-route")] == csds_pb2.NOT_SENT
    assert status[(type_urls.LISTENER, "default/gw/8080")] == csds_pb2.STALE
    with_contents = [e for e in client.generic_xds_configs if e.xds_config.type_url]
    assert with_contents, "resource contents are included unless excluded"

    table = format_proxy_status(response)
    header, row = table.splitlines()
    assert header.split()[:3] == ["NODE", "FLEET", "MODE"]
    assert row.split()[:3] == ["node-a", "default/gw", "sotw"]
    assert "ERROR" in row and "STALE" in row

    filtered = await stub.FetchClientStatus(
        csds_pb2.ClientStatusRequest(node_matchers=[{"node_id": {"exact": "other"}}])
    )
    assert list(filtered.config) == []


async def test_a_sotw_node_no_longer_holds_what_it_stopped_naming(plane):
    """A platform team's trial: a SotW Envoy whose cluster stopped injecting a key (its rule moved
    to the translator) unsubscribed its secret, and proxy-status went on showing SDS SYNCED (1)
    until serve restarted; likewise routes after a Gateway was removed. In SotW, Envoy drops what
    it stops naming and no answer says so: what it holds of such a type is what it still names."""
    plane.cache.set(snapshot_of(config({"m": "a"}, {"a": 9001})))
    envoy = plane.envoy(node_id="node-s")
    await envoy.send(type_url=type_urls.ROUTE, resource_names=["default/gw/8080"])
    await envoy.ack(await envoy.recv())
    await envoy.send(type_url=type_urls.ROUTE, resource_names=[])  # the listener went: none named
    await envoy.send(type_url=type_urls.LISTENER)  # probe: its answer proves the above was read
    await envoy.recv()
    stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(plane.channel)
    [client] = (await stub.FetchClientStatus(csds_pb2.ClientStatusRequest())).config
    assert [e.name for e in client.generic_xds_configs if e.type_url == type_urls.ROUTE] == []


async def test_a_node_is_kept_without_its_extensions(plane):
    """Envoy 1.40's node lists the 516 extensions it was built with (60 KB of its 61 KB): a stream
    keeps the node's identity, user agent and metadata for CSDS, not that list."""
    plane.cache.set(snapshot_of(config({"m": "a"}, {"a": 9001})))
    node = base_pb2.Node(id="node-x", cluster=FLEET, user_agent_name="envoy", client_features=["f"])
    node.user_agent_build_version.version.major_number = 1
    node.user_agent_build_version.version.minor_number = 40
    node.metadata.fields["team"].string_value = "a"
    for i in range(516):
        node.extensions.add(name=f"envoy.filters.http.x{i}", category="envoy.filters.http", type_urls=[f"x{i}.v3.X"])
    envoy = plane.envoy(node=node)
    await envoy.send(type_url=type_urls.CLUSTER)
    await envoy.recv()
    [kept] = [info.node for info in plane.registry.streams.values()]
    assert not kept.extensions and kept.ByteSize() < 200
    stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(plane.channel)
    [client] = (await stub.FetchClientStatus(csds_pb2.ClientStatusRequest())).config
    assert (client.node.id, client.node.cluster, client.node.user_agent_name) == ("node-x", FLEET, "envoy")
    assert client.node.user_agent_build_version.version.minor_number == 40
    assert list(client.node.client_features) == ["f"]
    assert client.node.metadata.fields["team"].string_value == "a"
    assert not client.node.extensions


async def test_a_node_of_a_withheld_fleet_shows_as_withheld(plane):
    """From review: a node waiting on a withheld fleet showed "-" in every column, as a node that asked
    for nothing would; CSDS says why it waits, and proxy-status shows WITHHELD."""
    import asyncio

    reason = "its Gateway or what it is built from has errors"
    plane.cache.withhold({FLEET: reason})
    envoy = plane.envoy(node_id="node-w")
    await envoy.send(type_url=type_urls.CLUSTER)
    stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(plane.channel)
    for _ in range(100):  # until the server has read the node's first request
        response = await stub.FetchClientStatus(csds_pb2.ClientStatusRequest())
        if response.config:
            break
        await asyncio.sleep(0.05)
    [client] = response.config
    assert client.node.metadata.fields["aigw.withheld"].string_value == reason
    [row] = [line for line in format_proxy_status(response).splitlines() if line.startswith("node-w")]
    assert row.split()[1:3] == [FLEET, "sotw"] and row.split()[3:] == ["WITHHELD"] * 7
