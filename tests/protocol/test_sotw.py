"""State-of-the-world ADS, one test per protocol rule and known pitfall (xds-control-planes.md §1, §5).

"Nothing else was sent" is proven without timing: after the action, the test provokes a response it
knows must come, and checks that it is the very next message on the stream.
"""

from __future__ import annotations

import structlog
from envoy.service.status.v3 import csds_pb2

from aigw_xds.xds import type_urls
from aigw_xds.xds.server import ClientStatusDiscoveryService

from .conftest import FLEET, config, names, snapshot_of

BASE = config({"m1": "a"}, {"a": 9001})


async def sync(envoy, cds_names=None):
    """Play Envoy's start: CDS and LDS wildcard, then EDS/RDS for what they name. Returns responses."""
    await envoy.send(type_url=type_urls.CLUSTER)
    cds = await envoy.recv()
    await envoy.ack(cds)
    await envoy.send(type_url=type_urls.ENDPOINT, resource_names=cds_names or ["default/r/rule/0"])
    eds = await envoy.recv()
    await envoy.ack(eds, names=cds_names or ["default/r/rule/0"])
    await envoy.send(type_url=type_urls.LISTENER)
    lds = await envoy.recv()
    await envoy.ack(lds)
    await envoy.send(type_url=type_urls.ROUTE, resource_names=["default/gw/8080"])
    rds = await envoy.recv()
    await envoy.ack(rds, names=["default/gw/8080"])
    return cds, eds, lds, rds


async def test_initial_sync_and_acks_are_not_answered(plane):
    plane.cache.set(snapshot_of(BASE))
    envoy = plane.envoy()
    cds, eds, lds, rds = await sync(envoy)
    assert names(cds) == ["default/r/rule/0"]
    assert names(eds) == ["default/r/rule/0"]
    assert names(lds) == ["default/gw/8080"] and names(rds) == ["default/gw/8080"]
    # If any ACK had been answered, that answer would come before this one.
    await envoy.send(
        type_url=type_urls.ENDPOINT,
        resource_names=["default/r/rule/0", "x"],
        response_nonce=eds.nonce,
        version_info=eds.version_info,
    )
    following = await envoy.recv()
    assert following.type_url == type_urls.ENDPOINT


async def test_update_order_is_cds_eds_lds_rds_and_routes_wait_for_clusters(plane):
    plane.cache.set(snapshot_of(BASE))
    envoy = plane.envoy()
    cds, eds, lds, rds = await sync(envoy)
    plane.cache.set(snapshot_of(config({"m1": "a", "m2": "b"}, {"a": 9001, "b": 9002})))
    new_cds = await envoy.recv()
    assert new_cds.type_url == type_urls.CLUSTER and names(new_cds) == ["default/r/rule/0", "default/r/rule/1"]
    # As Envoy does: ACK the clusters, then subscribe to the new cluster's endpoints.
    await envoy.ack(new_cds)
    both = ["default/r/rule/0", "default/r/rule/1"]
    await envoy.send(
        type_url=type_urls.ENDPOINT, resource_names=both, response_nonce=eds.nonce, version_info=eds.version_info
    )
    new_eds = await envoy.recv()
    assert new_eds.type_url == type_urls.ENDPOINT and names(new_eds) == both
    # The routes that use the new cluster are held until its endpoints are acknowledged.
    await envoy.ack(new_eds, names=both)
    new_rds = await envoy.recv()
    assert new_rds.type_url == type_urls.ROUTE
    assert int(new_cds.nonce) < int(new_eds.nonce) < int(new_rds.nonce)


async def test_nack_is_held_until_the_snapshot_changes_and_shows_as_error(plane):
    plane.cache.set(snapshot_of(BASE))
    envoy = plane.envoy()
    cds, eds, lds, rds = await sync(envoy)
    plane.cache.set(snapshot_of(config({"m1": "a"}, {"a": 9005})))
    bad = await envoy.recv()
    assert bad.type_url == type_urls.ENDPOINT
    await envoy.nack(bad, version=eds.version_info, names=["default/r/rule/0"], message="bad endpoint")
    # No resend of the rejected config: the next message is the answer to a new subscription.
    await envoy.send(
        type_url=type_urls.ROUTE,
        resource_names=["default/gw/8080", "other"],
        response_nonce=rds.nonce,
        version_info=rds.version_info,
    )
    assert (await envoy.recv()).type_url == type_urls.ROUTE
    status = ClientStatusDiscoveryService(plane.cache, plane.registry).client_status(csds_pb2.ClientStatusRequest())
    [client] = status.config
    eds_entries = [e for e in client.generic_xds_configs if e.type_url == type_urls.ENDPOINT]
    assert [e.config_status for e in eds_entries] == [csds_pb2.ERROR]
    assert eds_entries[0].error_state.details == "bad endpoint"
    # A new snapshot is sent again.
    plane.cache.set(snapshot_of(config({"m1": "a"}, {"a": 9006})))
    fixed = await envoy.recv()
    assert fixed.type_url == type_urls.ENDPOINT and fixed.nonce != bad.nonce


async def test_nack_is_detected_by_error_detail_not_by_version(plane):
    plane.cache.set(snapshot_of(BASE))
    envoy = plane.envoy()
    cds, eds, lds, rds = await sync(envoy)
    # Subscribe-add at the same version, then NACK carrying that same version: still a NACK.
    await envoy.send(
        type_url=type_urls.ENDPOINT,
        resource_names=["default/r/rule/0", "extra"],
        response_nonce=eds.nonce,
        version_info=eds.version_info,
    )
    more = await envoy.recv()
    await envoy.nack(more, version=more.version_info, names=["default/r/rule/0", "extra"])
    await envoy.send(
        type_url=type_urls.ROUTE,
        resource_names=["default/gw/8080", "y"],
        response_nonce=rds.nonce,
        version_info=rds.version_info,
    )
    assert (await envoy.recv()).type_url == type_urls.ROUTE
    status = ClientStatusDiscoveryService(plane.cache, plane.registry).client_status(csds_pb2.ClientStatusRequest())
    eds_status = {
        e.name: e.config_status for e in status.config[0].generic_xds_configs if e.type_url == type_urls.ENDPOINT
    }
    assert eds_status == {"default/r/rule/0": csds_pb2.ERROR, "extra": csds_pb2.ERROR}


async def test_unsubscribe_then_resubscribe_resends(plane):
    plane.cache.set(snapshot_of(BASE))
    envoy = plane.envoy()
    cds, eds, lds, rds = await sync(envoy)
    await envoy.send(
        type_url=type_urls.ENDPOINT, resource_names=[], response_nonce=eds.nonce, version_info=eds.version_info
    )
    await envoy.send(
        type_url=type_urls.ENDPOINT,
        resource_names=["default/r/rule/0"],
        response_nonce=eds.nonce,
        version_info=eds.version_info,
    )
    again = await envoy.recv()
    assert again.type_url == type_urls.ENDPOINT and names(again) == ["default/r/rule/0"]


async def test_eds_is_answered_for_unknown_names(plane):
    plane.cache.set(snapshot_of(BASE))
    envoy = plane.envoy()
    await envoy.send(type_url=type_urls.ENDPOINT, resource_names=["cluster-we-never-had"])
    response = await envoy.recv()
    assert names(response) == ["cluster-we-never-had"]


async def test_cds_change_with_same_endpoints_resends_eds(plane):
    plane.cache.set(snapshot_of(BASE))
    envoy = plane.envoy()
    cds, eds, lds, rds = await sync(envoy)
    tls = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: a-tls}
spec:
  targetRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: a}]
  validation: {wellKnownCACertificates: System, hostname: a.example.com}
"""
    before = snapshot_of(BASE).of_type(type_urls.ENDPOINT)["default/r/rule/0"]
    after_snapshot = snapshot_of(BASE + tls)
    assert after_snapshot.of_type(type_urls.CLUSTER)["default/r/rule/0"].version != cds.version_info
    plane.cache.set(after_snapshot)
    new_cds = await envoy.recv()
    assert new_cds.type_url == type_urls.CLUSTER
    new_eds = await envoy.recv()
    assert new_eds.type_url == type_urls.ENDPOINT and names(new_eds) == ["default/r/rule/0"]
    assert before.name == "default/r/rule/0"


async def test_stale_nonce_is_ignored(plane):
    plane.cache.set(snapshot_of(BASE))
    envoy = plane.envoy()
    cds, eds, lds, rds = await sync(envoy)
    await envoy.send(
        type_url=type_urls.ENDPOINT,
        resource_names=["default/r/rule/0", "new"],
        response_nonce="999999",
        version_info="old",
    )
    await envoy.send(
        type_url=type_urls.ROUTE,
        resource_names=["default/gw/8080", "z"],
        response_nonce=rds.nonce,
        version_info=rds.version_info,
    )
    assert (await envoy.recv()).type_url == type_urls.ROUTE


async def test_recompile_that_changes_nothing_publishes_nothing(plane):
    assert plane.cache.set(snapshot_of(BASE)) is True
    assert plane.cache.set(snapshot_of(BASE)) is False


async def test_unknown_node_gets_an_empty_valid_config_and_later_its_own(plane):
    envoy = plane.envoy(cluster="default/gw")
    await envoy.send(type_url=type_urls.CLUSTER)
    empty = await envoy.recv()
    assert list(empty.resources) == []
    await envoy.ack(empty)
    plane.cache.set(snapshot_of(BASE))
    arrived = await envoy.recv()
    assert names(arrived) == ["default/r/rule/0"]
    with structlog.testing.capture_logs() as logs:
        other = plane.envoy(node_id="stranger", cluster="other/gateway")
        await other.send(type_url=type_urls.LISTENER)
        assert list((await other.recv()).resources) == []
    # The warning says what is wrong: the Gateway it names (node.cluster is set, and well formed).
    [warned] = [e for e in logs if e["event"] == "node_fleet_unknown"]
    assert warned["hint"] == (
        "no Gateway other/gateway has compiled: check its name, or the errors logged for it (compiled: default/gw)"
    )


async def test_wildcard_rules(plane):
    plane.cache.set(snapshot_of(config({"m1": "a", "m2": "b"}, {"a": 1, "b": 2})))
    envoy = plane.envoy()
    await envoy.send(type_url=type_urls.CLUSTER)  # legacy wildcard: never named anything
    everything = await envoy.recv()
    assert names(everything) == ["default/r/rule/0", "default/r/rule/1"]
    await envoy.send(
        type_url=type_urls.CLUSTER,
        resource_names=["default/r/rule/0"],
        response_nonce=everything.nonce,
        version_info=everything.version_info,
    )
    only_a = await envoy.recv()
    assert names(only_a) == ["default/r/rule/0"]
    await envoy.send(
        type_url=type_urls.CLUSTER,
        resource_names=["*", "default/r/rule/0"],
        response_nonce=only_a.nonce,
        version_info=only_a.version_info,
    )
    assert names(await envoy.recv()) == ["default/r/rule/0", "default/r/rule/1"]


async def test_large_requests_within_32_mib_are_accepted(plane):
    plane.cache.set(snapshot_of(BASE))
    envoy = plane.envoy()
    many = [f"cluster-{i:07d}-" + "x" * 40 for i in range(100_000)]  # about 5.4 MB
    await envoy.send(type_url=type_urls.ENDPOINT, resource_names=many)
    response = await envoy.recv(timeout=60)
    assert len(response.resources) == len(many)
    assert FLEET == "default/gw"


async def test_a_node_that_waited_on_a_withheld_fleet_gets_every_type_once_it_is_fixed(plane):
    """From review: a node of an unknown fleet was answered an empty CDS; the fleet then became
    withheld (its Gateway appeared broken) and the node's ACK waited. Answering only what waited
    (an ACK asks nothing in SotW) never sent the clusters: every type the node holds gets the
    snapshot once the fleet has one."""
    import asyncio

    envoy = plane.envoy()
    await envoy.send(type_url=type_urls.CLUSTER)
    empty = await envoy.recv()
    assert list(empty.resources) == []
    plane.cache.withhold({"default/gw": "its Gateway or what it is built from has errors"})
    await envoy.ack(empty)
    await envoy.send(type_url=type_urls.LISTENER)
    waiting = asyncio.ensure_future(envoy.call.read())
    await asyncio.sleep(0.3)
    assert not waiting.done()
    plane.cache.set(snapshot_of(BASE))
    answers = [await asyncio.wait_for(waiting, 10), await envoy.recv()]
    assert sorted(a.type_url for a in answers) == sorted([type_urls.CLUSTER, type_urls.LISTENER])
    assert all(names(a) for a in answers)


async def test_two_envoys_with_one_node_id_are_said_once(plane):
    """A platform team's trial: two bootstraps without --node-id gave two identical proxy-status rows
    and nothing in the log. The second stream of a node id is a warning, said once."""
    plane.cache.set(snapshot_of(BASE))
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            envoy = plane.envoy(node_id="edge")
            await envoy.send(type_url=type_urls.CLUSTER)
            await envoy.ack(await envoy.recv())
    said = [e for e in logs if e["event"] == "node_id_shared"]
    assert [(e["node"], e["fleet"], e["streams"]) for e in said] == [("edge", FLEET, 2)]
