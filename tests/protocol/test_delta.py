"""Incremental (delta) ADS: subscriptions, reconnects, removals, stale nonces, warming."""

from __future__ import annotations

from aigw_xds.xds import type_urls

from .conftest import config, names, snapshot_of

BASE = config({"m1": "a", "m2": "b"}, {"a": 9001, "b": 9002})
EDS = ["default/r/rule/0", "default/r/rule/1"]


async def sync(envoy):
    await envoy.send(type_url=type_urls.CLUSTER)
    cds = await envoy.recv()
    await envoy.ack(cds)
    await envoy.send(type_url=type_urls.ENDPOINT, resource_names_subscribe=EDS)
    eds = await envoy.recv()
    await envoy.ack(eds)
    await envoy.send(type_url=type_urls.LISTENER)
    lds = await envoy.recv()
    await envoy.ack(lds)
    await envoy.send(type_url=type_urls.ROUTE, resource_names_subscribe=["default/gw/8080"])
    rds = await envoy.recv()
    await envoy.ack(rds)
    return cds, eds, lds, rds


async def test_initial_sync_sends_each_resource_with_its_version(plane):
    plane.cache.set(snapshot_of(BASE))
    envoy = plane.envoy(delta=True)
    cds, eds, lds, rds = await sync(envoy)
    assert names(cds) == EDS and names(eds) == EDS
    snap = plane.cache.get("default/gw")
    assert {r.name: r.version for r in cds.resources} == {
        n: r.version for n, r in snap.of_type(type_urls.CLUSTER).items()
    }


async def test_first_wildcard_request_is_answered_even_when_empty(plane):
    envoy = plane.envoy(delta=True)
    await envoy.send(type_url=type_urls.LISTENER)
    response = await envoy.recv()
    assert response.type_url == type_urls.LISTENER and list(response.resources) == []


async def test_update_sends_only_what_changed(plane):
    plane.cache.set(snapshot_of(BASE))
    envoy = plane.envoy(delta=True)
    await sync(envoy)
    plane.cache.set(snapshot_of(BASE.replace("port: 9002", "port: 9003")))
    response = await envoy.recv()
    assert response.type_url == type_urls.ENDPOINT and names(response) == ["default/r/rule/1"]


async def test_reconnect_with_initial_versions_sends_only_differences_and_removals(plane):
    plane.cache.set(snapshot_of(BASE))
    first = plane.envoy(delta=True)
    cds, eds, lds, rds = await sync(first)
    known_clusters = {r.name: r.version for r in cds.resources}
    await first.close()
    # While the Envoy is away, the second model (its cluster) is deleted.
    plane.cache.set(snapshot_of(config({"m1": "a"}, {"a": 9001})))
    again = plane.envoy(delta=True, node_id="envoy-1")
    await again.send(type_url=type_urls.CLUSTER, initial_resource_versions=known_clusters)
    response = await again.recv()
    assert list(response.resources) == []  # rule/0 unchanged: not resent
    assert list(response.removed_resources) == ["default/r/rule/1"]


async def test_subscribing_to_a_known_name_resends_it(plane):
    plane.cache.set(snapshot_of(BASE))
    envoy = plane.envoy(delta=True)
    cds, eds, lds, rds = await sync(envoy)
    await envoy.send(type_url=type_urls.ENDPOINT, resource_names_subscribe=["default/r/rule/0"])
    response = await envoy.recv()
    assert names(response) == ["default/r/rule/0"]


async def test_unknown_names_are_answered_as_removed(plane):
    plane.cache.set(snapshot_of(BASE))
    envoy = plane.envoy(delta=True)
    await envoy.send(type_url=type_urls.ENDPOINT, resource_names_subscribe=["no-such-cluster"])
    response = await envoy.recv()
    assert list(response.removed_resources) == ["no-such-cluster"] and list(response.resources) == []


async def test_subscription_change_on_a_stale_nonce_is_honoured(plane):
    plane.cache.set(snapshot_of(BASE))
    envoy = plane.envoy(delta=True)
    await sync(envoy)
    await envoy.send(
        type_url=type_urls.ENDPOINT, response_nonce="424242", resource_names_subscribe=["default/r/rule/1"]
    )
    response = await envoy.recv()
    assert names(response) == ["default/r/rule/1"]


async def test_nack_is_not_resent(plane):
    plane.cache.set(snapshot_of(BASE))
    envoy = plane.envoy(delta=True)
    cds, eds, lds, rds = await sync(envoy)
    plane.cache.set(snapshot_of(BASE.replace("port: 9002", "port: 9004")))
    bad = await envoy.recv()
    await envoy.nack(bad, version="")
    await envoy.send(type_url=type_urls.ENDPOINT, resource_names_subscribe=["probe"])
    probe = await envoy.recv()
    assert list(probe.removed_resources) == ["probe"]


async def test_cluster_change_is_followed_by_its_endpoints(plane):
    plane.cache.set(snapshot_of(BASE))
    envoy = plane.envoy(delta=True)
    await sync(envoy)
    tls = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: a-tls}
spec:
  targetRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: a}]
  validation: {wellKnownCACertificates: System, hostname: a.example.com}
"""
    plane.cache.set(snapshot_of(BASE + tls))
    cds = await envoy.recv()
    assert cds.type_url == type_urls.CLUSTER and names(cds) == ["default/r/rule/0"]
    eds = await envoy.recv()
    assert eds.type_url == type_urls.ENDPOINT and names(eds) == ["default/r/rule/0"]


async def test_unsubscribing_a_name_also_held_by_the_wildcard_is_answered(plane):
    """A client subscribed to `*` and to names: unsubscribing a name is answered (the protocol's
    one exception to "unsubscribe needs no answer"), with the resource when the wildcard still holds
    it, else with its removal; found by review (no answer came)."""
    plane.cache.set(snapshot_of(BASE))
    envoy = plane.envoy(delta=True)
    await envoy.send(type_url=type_urls.CLUSTER, resource_names_subscribe=["*", "default/r/rule/0", "nowhere"])
    first = await envoy.recv()
    assert names(first) == EDS and list(first.removed_resources) == ["nowhere"]
    await envoy.ack(first)
    await envoy.send(type_url=type_urls.CLUSTER, resource_names_unsubscribe=["default/r/rule/0"])
    kept = await envoy.recv()
    assert names(kept) == ["default/r/rule/0"] and list(kept.removed_resources) == []
    await envoy.ack(kept)
    await envoy.send(type_url=type_urls.CLUSTER, resource_names_unsubscribe=["nowhere"])
    gone = await envoy.recv()
    assert names(gone) == [] and list(gone.removed_resources) == ["nowhere"]
    await envoy.ack(gone)
    # A name it holds through the wildcard alone: no answer (the next one is the subscription's).
    await envoy.send(type_url=type_urls.CLUSTER, resource_names_unsubscribe=["default/r/rule/1"])
    await envoy.send(type_url=type_urls.CLUSTER, resource_names_subscribe=["default/r/rule/0"])
    again = await envoy.recv()
    assert names(again) == ["default/r/rule/0"] and list(again.removed_resources) == []


async def test_unsubscribe_needs_no_answer_and_resubscribe_resends(plane):
    plane.cache.set(snapshot_of(BASE))
    envoy = plane.envoy(delta=True)
    await sync(envoy)
    await envoy.send(type_url=type_urls.ENDPOINT, resource_names_unsubscribe=["default/r/rule/0"])
    await envoy.send(type_url=type_urls.ENDPOINT, resource_names_subscribe=["default/r/rule/0"])
    response = await envoy.recv()
    assert names(response) == ["default/r/rule/0"] and list(response.removed_resources) == []


async def test_a_withheld_fleets_node_is_answered_nothing_until_the_fleet_is_fixed(plane):
    """A control plane started on a broken Gateway withholds its fleet (it exists and has errors,
    and nothing of it was ever good here): an Envoy that reconnects with what it serves gets no
    answer, where an unknown fleet's node gets an empty configuration, which would remove the
    listeners and clusters it serves. Once the fleet has a snapshot, the requests that waited are
    answered as usual; a fleet no longer withheld and still without one is unknown."""
    import asyncio

    import structlog

    plane.cache.withhold({"default/gw": "its Gateway or what it is built from has errors"})
    with structlog.testing.capture_logs() as logs:
        envoy = plane.envoy(delta=True)
        await envoy.send(type_url=type_urls.CLUSTER, initial_resource_versions={EDS[0]: "before", EDS[1]: "before"})
        await envoy.send(type_url=type_urls.LISTENER, initial_resource_versions={"default/gw/8080": "before"})
        waiting = asyncio.ensure_future(envoy.call.read())
        await asyncio.sleep(0.5)  # (a read that times out would cancel the whole call)
        assert not waiting.done()
    [warned] = [e for e in logs if e["event"] == "node_fleet_withheld"]
    assert warned["serving"] == "nothing until it is fixed: the node keeps the configuration it has"
    plane.cache.set(snapshot_of(BASE))
    cds, lds = await asyncio.wait_for(waiting, 10), await envoy.recv()
    assert (cds.type_url, names(cds), list(cds.removed_resources)) == (type_urls.CLUSTER, EDS, [])
    assert (lds.type_url, names(lds), list(lds.removed_resources)) == (type_urls.LISTENER, ["default/gw/8080"], [])

    other = plane.envoy(delta=True, node_id="envoy-2", cluster="default/other")
    plane.cache.withhold({"default/other": "its Gateway or what it is built from has errors"})
    await other.send(type_url=type_urls.LISTENER, initial_resource_versions={"default/other/8080": "before"})
    waiting = asyncio.ensure_future(other.call.read())
    await asyncio.sleep(0.5)
    assert not waiting.done()
    plane.cache.withhold({})  # its Gateway deleted: an unknown fleet, whose nodes serve nothing
    emptied = await asyncio.wait_for(waiting, 10)
    assert list(emptied.removed_resources) == ["default/other/8080"]


async def test_while_any_fleet_is_withheld_a_node_of_no_known_fleet_waits_too(plane):
    """A document that does not read may hold any fleet's Gateway (ANY_FLEET): a node whose fleet
    no snapshot names is answered nothing, not an empty configuration, until the withholding ends."""
    import asyncio

    from aigw_xds.xds.cache import ANY_FLEET

    plane.cache.withhold({ANY_FLEET: "gw.yaml does not read, and may hold its resources"})
    envoy = plane.envoy(delta=True, node_id="edge", cluster="default/later")
    await envoy.send(type_url=type_urls.LISTENER, initial_resource_versions={"default/later/8080": "before"})
    waiting = asyncio.ensure_future(envoy.call.read())
    await asyncio.sleep(0.5)
    assert not waiting.done()
    plane.cache.withhold({})  # the file reads again, and holds no such fleet: an unknown one, emptied
    emptied = await asyncio.wait_for(waiting, 10)
    assert list(emptied.removed_resources) == ["default/later/8080"]
