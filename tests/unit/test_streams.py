"""The SotW and Delta stream state machines on hand-made snapshots, without gRPC: requests and
snapshots in, responses out."""

from __future__ import annotations

from dataclasses import replace

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import scoped_route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.rpc import status_pb2

from aigw_xds.xds import streams, type_urls
from aigw_xds.xds.cache import FleetResources, Packer, Resource, Snapshot, make_snapshot, pack, versions_digest


class SotwStream(streams.SotwStream):
    """The state machine, its replies parsed as Envoy parses the bytes sent."""

    def on_request(self, request, snapshot):  # type: ignore[override]
        return [discovery_pb2.DiscoveryResponse.FromString(r.data) for r in super().on_request(request, snapshot)]

    def on_snapshot(self, snapshot):  # type: ignore[override]
        return [discovery_pb2.DiscoveryResponse.FromString(r.data) for r in super().on_snapshot(snapshot)]


class DeltaStream(streams.DeltaStream):
    """The state machine, its replies parsed as Envoy parses the bytes sent."""

    def on_request(self, request, snapshot):  # type: ignore[override]
        return [discovery_pb2.DeltaDiscoveryResponse.FromString(r.data) for r in super().on_request(request, snapshot)]

    def on_snapshot(self, snapshot):  # type: ignore[override]
        return [discovery_pb2.DeltaDiscoveryResponse.FromString(r.data) for r in super().on_snapshot(snapshot)]


def versioned(name: str, version: str, message) -> Resource:
    """A resource of the message at a version of the test's choosing."""
    return Resource(name, version, pack(name, message).packed, message)


def _resource(type_url: str, name: str, version: str) -> Resource:
    message = {
        type_urls.CLUSTER: lambda: cluster_pb2.Cluster(name=name),
        type_urls.ENDPOINT: lambda: endpoint_pb2.ClusterLoadAssignment(cluster_name=name),
        type_urls.LISTENER: lambda: listener_pb2.Listener(name=name),
        type_urls.SCOPED_ROUTE: lambda: scoped_route_pb2.ScopedRouteConfiguration(name=name),
    }[type_url]()
    return versioned(name, version, message)


def snapshot(**by_type: dict[str, str]) -> Snapshot:
    """snapshot(CDS={"c1": "v1"}, EDS={...}, LDS={...}, SRDS={...}): name -> version per type."""
    urls = {
        "CDS": type_urls.CLUSTER,
        "EDS": type_urls.ENDPOINT,
        "LDS": type_urls.LISTENER,
        "SRDS": type_urls.SCOPED_ROUTE,
    }
    resources = {urls[t]: {n: _resource(urls[t], n, v) for n, v in names.items()} for t, names in by_type.items()}
    overall = versions_digest({f"{t}|{n}": r.version for t, rs in resources.items() for n, r in rs.items()})
    return Snapshot("ns/gw", resources, overall)


def sotw(type_url: str, names=(), nonce: str = "", nack: str = "", version: str = "") -> discovery_pb2.DiscoveryRequest:
    request = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=list(names), response_nonce=nonce, version_info=version
    )
    if nack:
        request.error_detail.CopyFrom(status_pb2.Status(code=3, message=nack))
    return request


def delta(type_url: str, subscribe=(), unsubscribe=(), nonce: str = "", initial=None, nack: str = ""):
    request = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url,
        resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe),
        response_nonce=nonce,
        initial_resource_versions=initial or {},
    )
    if nack:
        request.error_detail.CopyFrom(status_pb2.Status(code=3, message=nack))
    return request


def names(response) -> list[str]:
    if isinstance(response, discovery_pb2.DeltaDiscoveryResponse):
        return [r.name for r in response.resources]
    return [_unpack_name(response.type_url, r) for r in response.resources]


def _unpack_name(type_url: str, packed: any_pb2.Any) -> str:
    message = {
        type_urls.CLUSTER: cluster_pb2.Cluster,
        type_urls.ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
        type_urls.SCOPED_ROUTE: scoped_route_pb2.ScopedRouteConfiguration,
    }.get(type_url, listener_pb2.Listener)()
    packed.Unpack(message)
    return getattr(message, "name", "") or getattr(message, "cluster_name", "")


# --------------------------------------------------------------------------------------------
# State of the world


def test_sotw_wildcard_ack_and_push_of_the_changed_type_only():
    stream, snap = SotwStream(), snapshot(CDS={"c1": "v1", "c2": "v1"}, LDS={"l1": "v1"})
    [cds] = stream.on_request(sotw(type_urls.CLUSTER), snap)
    assert names(cds) == ["c1", "c2"]
    assert stream.on_request(sotw(type_urls.CLUSTER, nonce=cds.nonce), snap) == []  # ACK: nothing to send
    [lds] = stream.on_request(sotw(type_urls.LISTENER), snap)
    stream.on_request(sotw(type_urls.LISTENER, nonce=lds.nonce), snap)
    changed = snapshot(CDS={"c1": "v2", "c2": "v1"}, LDS={"l1": "v1"})
    [push] = stream.on_snapshot(changed)
    assert push.type_url == type_urls.CLUSTER and names(push) == ["c1", "c2"]  # SotW sends the whole set


def test_sotw_request_with_a_stale_nonce_is_ignored():
    """A request answering a response the client has since been sent a newer one of is superseded:
    not even its subscription change counts (the client will repeat it with the newer nonce)."""
    stream, snap = SotwStream(), snapshot(EDS={"a": "v1", "b": "v1"})
    [first] = stream.on_request(sotw(type_urls.ENDPOINT, ["a"]), snap)
    [second] = stream.on_snapshot(snapshot(EDS={"a": "v2", "b": "v1"}))
    assert stream.on_request(sotw(type_urls.ENDPOINT, ["a", "b"], first.nonce), snap) == []
    assert stream.types[type_urls.ENDPOINT].status_of("a") == ("v2", "STALE")
    stream.on_request(sotw(type_urls.ENDPOINT, ["a"], second.nonce), snap)
    assert stream.types[type_urls.ENDPOINT].status_of("a") == ("v2", "SYNCED")


def test_sotw_nack_is_not_resent_until_the_snapshot_changes():
    stream, snap = SotwStream(), snapshot(CDS={"c1": "v1"})
    [cds] = stream.on_request(sotw(type_urls.CLUSTER), snap)
    assert stream.on_request(sotw(type_urls.CLUSTER, nonce=cds.nonce, nack="bad cluster"), snap) == []
    assert stream.types[type_urls.CLUSTER].status_of("c1") == ("v1", "ERROR")
    assert stream.on_snapshot(snap) == []
    [fixed] = stream.on_snapshot(snapshot(CDS={"c1": "v2"}))
    assert names(fixed) == ["c1"]


def test_sotw_listener_waits_for_its_clusters_and_their_endpoints():
    stream = SotwStream()
    snap = snapshot(CDS={"c1": "v1"}, EDS={"c1": "v1"}, LDS={"l1": "v1"})
    [cds] = stream.on_request(sotw(type_urls.CLUSTER), snap)
    [eds] = stream.on_request(sotw(type_urls.ENDPOINT, ["c1"]), snap)
    [lds] = stream.on_request(sotw(type_urls.LISTENER), snap)
    for response in (cds, eds, lds):
        stream.on_request(sotw(response.type_url, [] if response is not eds else ["c1"], response.nonce), snap)
    update = snapshot(CDS={"c1": "v2"}, EDS={"c1": "v2"}, LDS={"l1": "v2"})
    pushed = stream.on_snapshot(update)
    assert [p.type_url for p in pushed] == [type_urls.CLUSTER, type_urls.ENDPOINT]  # the listener is held
    cds2, eds2 = pushed
    assert stream.on_request(sotw(type_urls.CLUSTER, nonce=cds2.nonce), update) == []  # endpoints not ACKed yet
    [released] = stream.on_request(sotw(type_urls.ENDPOINT, ["c1"], eds2.nonce), update)
    assert released.type_url == type_urls.LISTENER


def test_sotw_endpoints_of_unknown_clusters_are_answered_empty():
    stream = SotwStream()
    [eds] = stream.on_request(sotw(type_urls.ENDPOINT, ["nowhere"]), snapshot(CDS={}))
    assert names(eds) == ["nowhere"]  # an empty assignment: a warming cluster is never left waiting


def test_sotw_resubscribe_resends():
    stream, snap = SotwStream(), snapshot(CDS={"c1": "v1"}, EDS={"a": "v1", "b": "v1"})
    [eds] = stream.on_request(sotw(type_urls.ENDPOINT, ["a", "b"]), snap)
    stream.on_request(sotw(type_urls.ENDPOINT, ["a", "b"], eds.nonce), snap)
    assert stream.on_request(sotw(type_urls.ENDPOINT, ["a"], eds.nonce), snap) == []  # a removal needs no answer
    [again] = stream.on_request(sotw(type_urls.ENDPOINT, ["a", "b"], eds.nonce), snap)
    assert sorted(names(again)) == ["a", "b"]


# --------------------------------------------------------------------------------------------
# Delta


def test_delta_reconnect_with_current_versions_is_sent_nothing():
    stream, snap = DeltaStream(), snapshot(CDS={"c1": "v1", "c2": "v1"})
    [response] = stream.on_request(delta(type_urls.CLUSTER, initial={"c1": "v1", "c2": "v1"}), snap)
    assert list(response.resources) == [] and list(response.removed_resources) == []


def test_delta_sends_changes_and_removals_only():
    stream = DeltaStream()
    [first] = stream.on_request(delta(type_urls.CLUSTER), snapshot(CDS={"c1": "v1", "c2": "v1"}))
    assert names(first) == ["c1", "c2"]
    stream.on_request(delta(type_urls.CLUSTER, nonce=first.nonce), snapshot(CDS={"c1": "v1", "c2": "v1"}))
    [update] = stream.on_snapshot(snapshot(CDS={"c1": "v2"}))
    assert names(update) == ["c1"] and list(update.removed_resources) == ["c2"]


def test_delta_nack_is_not_resent_and_a_resubscription_is_answered():
    stream, snap = DeltaStream(), snapshot(CDS={"c1": "v1"}, EDS={"c1": "v1"})
    [eds] = stream.on_request(delta(type_urls.ENDPOINT, subscribe=["c1"]), snap)
    assert stream.on_request(delta(type_urls.ENDPOINT, nonce=eds.nonce, nack="no"), snap) == []
    assert stream.types[type_urls.ENDPOINT].status_of("c1") == ("v1", "ERROR")
    assert stream.on_snapshot(snap) == []
    stream.on_request(delta(type_urls.ENDPOINT, unsubscribe=["c1"], nonce=eds.nonce), snap)
    [again] = stream.on_request(delta(type_urls.ENDPOINT, subscribe=["c1"]), snap)
    assert names(again) == ["c1"]


def test_delta_wildcard_dropped_and_taken_again_resends_what_it_alone_brought():
    """A client that unsubscribes `*` may drop what only the wildcard gave it: subscribing `*` again
    is answered with all of it. What it still names explicitly it keeps, and is not sent again."""
    stream, snap = DeltaStream(), snapshot(LDS={"l1": "v1", "l2": "v1"})
    [first] = stream.on_request(delta(type_urls.LISTENER, subscribe=["*", "l1"]), snap)
    assert names(first) == ["l1", "l2"]
    stream.on_request(delta(type_urls.LISTENER, nonce=first.nonce), snap)
    assert stream.on_request(delta(type_urls.LISTENER, unsubscribe=["*"]), snap) == []
    [again] = stream.on_request(delta(type_urls.LISTENER, subscribe=["*"]), snap)
    assert names(again) == ["l2"] and list(again.removed_resources) == []


def test_delta_endpoint_of_a_changed_cluster_is_resent_even_if_unchanged():
    """A changed EDS cluster leaves warming only on a fresh EDS answer."""
    stream = DeltaStream()
    snap = snapshot(CDS={"c1": "v1"}, EDS={"c1": "e1"})
    [cds] = stream.on_request(delta(type_urls.CLUSTER), snap)
    [eds] = stream.on_request(delta(type_urls.ENDPOINT, subscribe=["c1"]), snap)
    stream.on_request(delta(type_urls.CLUSTER, nonce=cds.nonce), snap)
    stream.on_request(delta(type_urls.ENDPOINT, nonce=eds.nonce), snap)
    pushed = stream.on_snapshot(snapshot(CDS={"c1": "v2"}, EDS={"c1": "e1"}))
    assert [(p.type_url, names(p)) for p in pushed] == [(type_urls.CLUSTER, ["c1"]), (type_urls.ENDPOINT, ["c1"])]


def test_streams_that_subscribe_alike_hold_one_set_of_names():
    """A fleet's streams ask for the same endpoints and routes, each request with its own copies of
    the names: they keep one shared set, not one per node (what most of a node's memory was)."""
    snap = snapshot(CDS={"c1": "v1", "c2": "v1"}, EDS={"c1": "v1", "c2": "v1"})
    sotw_streams, delta_streams = [SotwStream(), SotwStream()], [DeltaStream(), DeltaStream()]
    for stream in sotw_streams:
        stream.on_request(sotw(type_urls.ENDPOINT, ["c2", "c1"]), snap)
    for stream in delta_streams:
        stream.on_request(delta(type_urls.ENDPOINT, ["c1"]), snap)
        stream.on_request(delta(type_urls.ENDPOINT, ["c2"]), snap)
    held = [s.types[type_urls.ENDPOINT].names for s in (*sotw_streams, *delta_streams)]
    assert all(names == {"c1", "c2"} for names in held)
    assert all(names is held[0] for names in held)
    # What one stream changes is its own.
    delta_streams[0].on_request(delta(type_urls.ENDPOINT, unsubscribe=["c2"]), snap)
    assert delta_streams[0].types[type_urls.ENDPOINT].names == {"c1"}
    assert delta_streams[1].types[type_urls.ENDPOINT].names == {"c1", "c2"}


def test_a_message_built_again_with_the_same_content_keeps_the_snapshot_map():
    """The translator's cluster is built anew on every compile: the same content must not count as a
    change, or every edit would look like a cluster change to every stream (make-before-break then
    compares every cluster of every stream: the first edit after a connect was 4x slower)."""

    def fleet(model: str) -> FleetResources:
        return FleetResources(
            {
                type_urls.CLUSTER: {"c1": cluster_pb2.Cluster(name="c1"), "c2": cluster_pb2.Cluster(name="c2")},
                type_urls.LISTENER: {"l": listener_pb2.Listener(name="l", stat_prefix=model)},
            }
        )

    packer = Packer()
    first = make_snapshot("ns/gw", fleet("a"), packer)
    second = make_snapshot("ns/gw", fleet("b"), packer, first)
    assert second.of_type(type_urls.CLUSTER) is first.of_type(type_urls.CLUSTER)
    assert second.of_type(type_urls.LISTENER) is not first.of_type(type_urls.LISTENER)
    assert second.of_type(type_urls.LISTENER)["l"].version != first.of_type(type_urls.LISTENER)["l"].version
    # A changed cluster is a new map holding the unchanged ones as they were.
    changed = FleetResources(
        {
            type_urls.CLUSTER: {
                "c1": cluster_pb2.Cluster(name="c1", alt_stat_name="x"),
                "c2": cluster_pb2.Cluster(name="c2"),
            }
        }
    )
    third = make_snapshot("ns/gw", changed, packer, second)
    assert third.of_type(type_urls.CLUSTER) is not second.of_type(type_urls.CLUSTER)
    assert third.of_type(type_urls.CLUSTER)["c2"] is second.of_type(type_urls.CLUSTER)["c2"]
    assert third.of_type(type_urls.CLUSTER)["c1"].version != second.of_type(type_urls.CLUSTER)["c1"].version


def test_a_snapshot_built_on_the_previous_one_has_the_versions_of_one_built_from_nothing():
    """make_snapshot takes a type's version from the previous snapshot where the type's map is the
    same: versions must be those of the same resources packed from nothing, change with any
    resource, and not with how the snapshot was reached."""

    def fleet(listener: str, cluster: str) -> FleetResources:
        return FleetResources(
            {
                type_urls.CLUSTER: {"c": cluster_pb2.Cluster(name="c", alt_stat_name=cluster)},
                type_urls.LISTENER: {"l": listener_pb2.Listener(name="l", stat_prefix=listener)},
            }
        )

    packer = Packer()
    chain = [make_snapshot("ns/gw", fleet("a", "x"), packer)]
    for listener, cluster in (("b", "x"), ("b", "y"), ("a", "x")):
        chain.append(make_snapshot("ns/gw", fleet(listener, cluster), packer, chain[-1]))
    alone = [make_snapshot("ns/gw", fleet(lst, cl), Packer()) for lst, cl in (("a", "x"), ("b", "x"), ("b", "y"))]
    assert [s.version for s in chain] == [alone[0].version, alone[1].version, alone[2].version, alone[0].version]
    assert len({s.version for s in alone}) == 3
    for built in chain:
        for type_url in type_urls.ORDER:
            expected = versions_digest({n: r.version for n, r in built.of_type(type_url).items()})
            assert built.type_version(type_url) == expected


def test_delta_a_request_answered_from_a_newer_snapshot_holds_listeners_until_clusters_settle():
    """Make-before-break also when a request, not a push, meets a new snapshot: the client's listener
    ACK is read after a snapshot that changes a cluster and a listener was published but before the
    stream's push (found in review). The listener waits for the cluster, as in a push."""
    stream = DeltaStream()
    old = snapshot(CDS={"c1": "v1"}, EDS={"c1": "e1"}, LDS={"l1": "v1"})
    [cds] = stream.on_request(delta(type_urls.CLUSTER), old)
    [eds] = stream.on_request(delta(type_urls.ENDPOINT, subscribe=["c1"]), old)
    stream.on_request(delta(type_urls.CLUSTER, nonce=cds.nonce), old)
    stream.on_request(delta(type_urls.ENDPOINT, nonce=eds.nonce), old)
    [lds] = stream.on_request(delta(type_urls.LISTENER), old)
    new = snapshot(CDS={"c1": "v2"}, EDS={"c1": "e1"}, LDS={"l1": "v2"})
    assert stream.on_request(delta(type_urls.LISTENER, nonce=lds.nonce), new) == []  # not before c1
    cds2, eds2 = stream.on_snapshot(new)
    assert [(p.type_url, names(p)) for p in (cds2, eds2)] == [(type_urls.CLUSTER, ["c1"]), (type_urls.ENDPOINT, ["c1"])]
    assert stream.on_request(delta(type_urls.CLUSTER, nonce=cds2.nonce), new) == []
    [released] = stream.on_request(delta(type_urls.ENDPOINT, nonce=eds2.nonce), new)
    assert (released.type_url, names(released)) == (type_urls.LISTENER, ["l1"])


def test_sotw_a_new_subscription_under_a_newer_snapshot_waits_for_clusters():
    """The same for SotW: names added to a gated type while the clusters of a newer snapshot are not
    yet answered are answered once they are."""
    stream = SotwStream()
    old = snapshot(CDS={"c1": "v1"}, EDS={"c1": "e1"}, LDS={"l1": "v1", "l2": "v1"})
    [cds] = stream.on_request(sotw(type_urls.CLUSTER), old)
    [eds] = stream.on_request(sotw(type_urls.ENDPOINT, ["c1"]), old)
    stream.on_request(sotw(type_urls.CLUSTER, nonce=cds.nonce), old)
    stream.on_request(sotw(type_urls.ENDPOINT, ["c1"], eds.nonce), old)
    [lds] = stream.on_request(sotw(type_urls.LISTENER, ["l1"]), old)
    new = snapshot(CDS={"c1": "v2"}, EDS={"c1": "e1"}, LDS={"l1": "v2", "l2": "v2"})
    assert stream.on_request(sotw(type_urls.LISTENER, ["l1", "l2"], lds.nonce), new) == []
    cds2, eds2 = stream.on_snapshot(new)
    assert stream.on_request(sotw(type_urls.CLUSTER, nonce=cds2.nonce), new) == []
    [released] = stream.on_request(sotw(type_urls.ENDPOINT, ["c1"], eds2.nonce), new)
    assert released.type_url == type_urls.LISTENER and sorted(names(released)) == ["l1", "l2"]


def test_a_name_set_no_stream_holds_is_not_kept():
    """Sharing keeps only what streams hold: an edit that adds a cluster makes a new full set of EDS
    names, and the old one must go with its last stream (found in review: a table that kept every
    set seen held hundreds of MB at 10,000 clusters)."""
    from aigw_xds.xds import streams

    before = len(streams._shared_name_sets)
    stream = SotwStream()
    snap = snapshot(CDS={"c1": "v1", "c2": "v1"}, EDS={"c1": "v1", "c2": "v1"})
    stream.on_request(sotw(type_urls.ENDPOINT, ["c1"]), snap)
    stream.on_request(sotw(type_urls.ENDPOINT, ["c1", "c2"]), snap)  # the first set is no one's now
    live = {frozenset(ref() or ()) for refs in streams._shared_name_sets.values() for ref in refs}
    assert frozenset({"c1", "c2"}) in live and frozenset({"c1"}) not in live
    del stream, snap  # (a snapshot's memo of SotW answers holds the sets it was asked for)
    assert len(streams._shared_name_sets) == before


# --------------------------------------------------------------------------------------------
# Listener hand-over: a listener named after its port, moved to another port, is a new listener
# and the old one's removal; the old one stays until the new one is accepted.


def _listening(stream, request, snap, delta: bool = False):
    """The stream's first LDS answer under `snap`, ACKed."""
    [lds] = stream.on_request(request(type_urls.LISTENER), snap)
    assert stream.on_request(request(type_urls.LISTENER, nonce=lds.nonce), snap) == []
    return lds


def test_sotw_a_listener_replaced_stays_until_its_replacement_is_accepted():
    stream = SotwStream()
    _listening(stream, sotw, snapshot(LDS={"gw/8080": "v1", "gw/8443": "v1"}))
    moved = snapshot(LDS={"gw/9090": "v1", "gw/8443": "v1"})
    [both] = stream.on_snapshot(moved)
    assert sorted(names(both)) == ["gw/8080", "gw/8443", "gw/9090"]  # the old one kept meanwhile
    [after] = stream.on_request(sotw(type_urls.LISTENER, nonce=both.nonce), moved)  # accepted
    assert sorted(names(after)) == ["gw/8443", "gw/9090"]
    assert stream.on_request(sotw(type_urls.LISTENER, nonce=after.nonce), moved) == []


def test_sotw_a_replacement_refused_keeps_the_old_listener_until_one_is_accepted():
    stream = SotwStream()
    _listening(stream, sotw, snapshot(LDS={"gw/8080": "v1"}))
    busy = snapshot(LDS={"gw/9090": "v1"})
    [both] = stream.on_snapshot(busy)
    assert stream.on_request(sotw(type_urls.LISTENER, nonce=both.nonce, nack="cannot bind"), busy) == []
    assert stream.on_snapshot(busy) == []  # NACK hold: nothing resent, 8080 still served
    free = snapshot(LDS={"gw/9091": "v1"})
    [again] = stream.on_snapshot(free)
    assert sorted(names(again)) == ["gw/8080", "gw/9091"]  # the accepted one, not the refused one
    [after] = stream.on_request(sotw(type_urls.LISTENER, nonce=again.nonce), free)
    assert names(after) == ["gw/9091"]


def test_sotw_a_node_that_reconnects_keeps_the_listeners_it_names_until_it_accepts_their_replacement():
    """A SotW node that reconnects after a port edit names the listener version it holds: while
    the snapshot knows that version (earlier_listeners), the hand-over keeps those listeners, as it
    does within a stream; a version it does not know (a restarted control plane) gets the new ones
    alone."""
    first = snapshot(LDS={"gw/8080": "v1", "gw/8443": "v1"})
    held = _listening(SotwStream(), sotw, first).version_info  # what the node accepted, then it went
    moved = replace(
        snapshot(LDS={"gw/9090": "v1", "gw/8443": "v1"}),
        earlier_listeners={held: first.of_type(type_urls.LISTENER)},
    )
    stream = SotwStream()
    [both] = stream.on_request(sotw(type_urls.LISTENER, version=held), moved)
    assert sorted(names(both)) == ["gw/8080", "gw/8443", "gw/9090"]
    [after] = stream.on_request(sotw(type_urls.LISTENER, nonce=both.nonce, version=both.version_info), moved)
    assert sorted(names(after)) == ["gw/8443", "gw/9090"]

    refusing = SotwStream()  # the new port is taken on the node's host: the old one keeps serving
    [both] = refusing.on_request(sotw(type_urls.LISTENER, version=held), moved)
    assert (
        refusing.on_request(sotw(type_urls.LISTENER, nonce=both.nonce, nack="cannot bind", version=held), moved) == []
    )
    assert refusing.on_snapshot(moved) == []

    [alone] = SotwStream().on_request(sotw(type_urls.LISTENER, version="unknown"), moved)
    assert sorted(names(alone)) == ["gw/8443", "gw/9090"]


def test_sotw_a_node_that_reconnects_naming_the_current_listeners_keeps_them_through_the_next_edit():
    """Reconnected with the snapshot's own listener version, and a port edit published before the
    node's first ACK (which then has a stale nonce): the hand-over keeps the listeners it named
    (review)."""
    first = snapshot(LDS={"gw/8080": "v1"})
    current = first.type_version(type_urls.LISTENER)
    stream = SotwStream()
    [lds] = stream.on_request(sotw(type_urls.LISTENER, version=current), first)
    moved = replace(snapshot(LDS={"gw/9090": "v1"}), earlier_listeners={current: first.of_type(type_urls.LISTENER)})
    [both] = stream.on_snapshot(moved)
    assert sorted(names(both)) == ["gw/8080", "gw/9090"]


def test_a_snapshot_knows_the_fleets_earlier_listener_sets_by_version():
    from aigw_xds.xds.cache import LISTENER_SETS_KEPT, FleetResources, make_snapshot

    def listeners(*ports: int) -> FleetResources:
        return FleetResources({type_urls.LISTENER: {f"gw/{p}": listener_pb2.Listener(name=f"gw/{p}") for p in ports}})

    first = make_snapshot("ns/gw", listeners(8080))
    assert first.earlier_listeners == {}
    same = make_snapshot("ns/gw", listeners(8080), previous=first)  # no listener changed: nothing to add
    assert same.earlier_listeners == {}
    moved = make_snapshot("ns/gw", listeners(9090), previous=same)
    assert moved.earlier_listeners == {first.type_version(type_urls.LISTENER): first.of_type(type_urls.LISTENER)}
    latest = moved
    for port in range(9091, 9091 + LISTENER_SETS_KEPT + 2):
        latest = make_snapshot("ns/gw", listeners(port), previous=latest)
    assert len(latest.earlier_listeners) == LISTENER_SETS_KEPT
    assert first.type_version(type_urls.LISTENER) not in latest.earlier_listeners  # the oldest went first
    assert list(latest.earlier_listeners.values())[-1].keys() == {f"gw/{9091 + LISTENER_SETS_KEPT}"}


def test_sotw_a_listener_removed_with_none_new_goes_at_once():
    stream = SotwStream()
    _listening(stream, sotw, snapshot(LDS={"gw/8080": "v1", "gw/8443": "v1"}))
    [push] = stream.on_snapshot(snapshot(LDS={"gw/8443": "v2"}))
    assert names(push) == ["gw/8443"]


def test_delta_a_listener_replaced_is_removed_once_its_replacement_is_accepted():
    stream = DeltaStream()
    _listening(stream, delta, snapshot(LDS={"gw/8080": "v1"}))
    moved = snapshot(LDS={"gw/9090": "v1"})
    [new] = stream.on_snapshot(moved)
    assert names(new) == ["gw/9090"] and list(new.removed_resources) == []
    [gone] = stream.on_request(delta(type_urls.LISTENER, nonce=new.nonce), moved)
    assert names(gone) == [] and list(gone.removed_resources) == ["gw/8080"]
    assert stream.on_request(delta(type_urls.LISTENER, nonce=gone.nonce), moved) == []


def test_delta_a_replacement_refused_keeps_the_old_listener_until_one_is_accepted():
    stream = DeltaStream()
    _listening(stream, delta, snapshot(LDS={"gw/8080": "v1"}))
    busy = snapshot(LDS={"gw/9090": "v1"})
    [new] = stream.on_snapshot(busy)
    assert stream.on_request(delta(type_urls.LISTENER, nonce=new.nonce, nack="cannot bind"), busy) == []
    free = snapshot(LDS={"gw/9091": "v1"})
    [again] = stream.on_snapshot(free)
    assert names(again) == ["gw/9091"] and list(again.removed_resources) == []
    [gone] = stream.on_request(delta(type_urls.LISTENER, nonce=again.nonce), free)
    assert sorted(gone.removed_resources) == ["gw/8080", "gw/9090"]


def _scoped(port: int, version: str = "v1") -> dict[str, dict[str, str]]:
    """A listener on `port` with two route scopes (named after it: build._scope_names)."""
    return {"LDS": {f"gw/{port}": version}, "SRDS": {f"gw/{port}#0": version, f"gw/{port}#1": version}}


def test_sotw_a_listener_kept_by_a_hand_over_keeps_its_route_scopes():
    """The scopes of a listener a hand-over keeps stay in the SotW answers of scopes (a full set:
    leaving them out removes them, and the listener still serving would find no route) until the
    listener goes; then they go too (review of route scopes)."""
    stream = SotwStream()
    first = snapshot(**_scoped(8080))
    _listening(stream, sotw, first)
    [srds] = stream.on_request(sotw(type_urls.SCOPED_ROUTE), first)
    stream.on_request(sotw(type_urls.SCOPED_ROUTE, nonce=srds.nonce), first)
    moved = snapshot(**_scoped(9090))
    [both, scopes] = stream.on_snapshot(moved)
    assert sorted(names(both)) == ["gw/8080", "gw/9090"]
    assert sorted(names(scopes)) == ["gw/8080#0", "gw/8080#1", "gw/9090#0", "gw/9090#1"]
    assert stream.on_request(sotw(type_urls.SCOPED_ROUTE, nonce=scopes.nonce), moved) == []
    [after, scopes_after] = stream.on_request(sotw(type_urls.LISTENER, nonce=both.nonce), moved)
    assert names(after) == ["gw/9090"] and sorted(names(scopes_after)) == ["gw/9090#0", "gw/9090#1"]


def test_delta_a_listener_kept_by_a_hand_over_keeps_its_route_scopes():
    stream = DeltaStream()
    first = snapshot(**_scoped(8080))
    _listening(stream, delta, first)
    [srds] = stream.on_request(delta(type_urls.SCOPED_ROUTE), first)
    assert stream.on_request(delta(type_urls.SCOPED_ROUTE, nonce=srds.nonce), first) == []
    moved = snapshot(**_scoped(9090))
    [new, scopes] = stream.on_snapshot(moved)
    assert names(new) == ["gw/9090"] and list(new.removed_resources) == []
    assert sorted(names(scopes)) == ["gw/9090#0", "gw/9090#1"] and list(scopes.removed_resources) == []
    assert stream.on_request(delta(type_urls.SCOPED_ROUTE, nonce=scopes.nonce), moved) == []
    [gone, scopes_gone] = stream.on_request(delta(type_urls.LISTENER, nonce=new.nonce), moved)
    assert list(gone.removed_resources) == ["gw/8080"]
    assert names(scopes_gone) == [] and sorted(scopes_gone.removed_resources) == ["gw/8080#0", "gw/8080#1"]


def test_sotw_a_hand_over_finished_under_a_newer_snapshot_still_waits_for_its_clusters():
    """The ACK that accepts the new listener meets a newer snapshot whose clusters are not settled:
    the answer that drops the old listener waits for them, as any listener update does (review)."""
    stream = SotwStream()
    first = snapshot(CDS={"c1": "v1"}, EDS={"c1": "v1"}, LDS={"gw/8080": "v1"})
    [cds] = stream.on_request(sotw(type_urls.CLUSTER), first)
    [eds] = stream.on_request(sotw(type_urls.ENDPOINT, ["c1"]), first)
    [lds] = stream.on_request(sotw(type_urls.LISTENER), first)
    for response in (cds, eds, lds):
        stream.on_request(sotw(response.type_url, [] if response is not eds else ["c1"], response.nonce), first)
    [both] = stream.on_snapshot(snapshot(CDS={"c1": "v1"}, EDS={"c1": "v1"}, LDS={"gw/9090": "v1"}))
    newer = snapshot(CDS={"c1": "v1", "c2": "v1"}, EDS={"c1": "v1", "c2": "v1"}, LDS={"gw/9090": "v2"})
    [cds2] = stream.on_snapshot(newer)  # the listener update is held for c2
    assert stream.on_request(sotw(type_urls.LISTENER, nonce=both.nonce), newer) == []  # held too
    assert stream.on_request(sotw(type_urls.CLUSTER, nonce=cds2.nonce), newer) == []  # c2's endpoints asked for next
    [eds2] = stream.on_request(sotw(type_urls.ENDPOINT, ["c1", "c2"], eds.nonce), newer)
    [released] = stream.on_request(sotw(type_urls.ENDPOINT, ["c1", "c2"], eds2.nonce), newer)
    assert released.type_url == type_urls.LISTENER and names(released) == ["gw/9090"]


def test_sotw_a_hand_over_keeps_only_listeners_the_client_still_asks_for():
    stream = SotwStream()
    [lds] = stream.on_request(sotw(type_urls.LISTENER, ["gw/8080"]), snapshot(LDS={"gw/8080": "v1"}))
    stream.on_request(sotw(type_urls.LISTENER, ["gw/8080"], lds.nonce), snapshot(LDS={"gw/8080": "v1"}))
    moved = snapshot(LDS={"gw/9090": "v1"})
    [answer] = stream.on_request(sotw(type_urls.LISTENER, ["gw/9090"], lds.nonce), moved)
    assert names(answer) == ["gw/9090"]  # gw/8080 is no longer asked for


def test_delta_a_listener_unsubscribed_before_its_ack_does_not_hold_removals_for_ever():
    """A listener sent new and unsubscribed before its ACK is no longer awaited: later removals go
    (review: it stayed awaited, and every later removal of the stream was withheld)."""
    stream = DeltaStream()
    first = snapshot(LDS={"gw/8080": "v1"})
    [answer] = stream.on_request(delta(type_urls.LISTENER, subscribe=["gw/8080", "gw/7070"]), first)
    stream.on_request(delta(type_urls.LISTENER, nonce=answer.nonce), first)
    both = snapshot(LDS={"gw/9090": "v1", "gw/7070": "v1"})
    [sent] = stream.on_request(delta(type_urls.LISTENER, subscribe=["gw/9090"]), both)
    assert names(sent) == ["gw/7070", "gw/9090"] and list(sent.removed_resources) == []  # 8080 kept meanwhile
    stream.on_request(delta(type_urls.LISTENER, unsubscribe=["gw/9090"]), both)
    [acked] = stream.on_request(delta(type_urls.LISTENER, nonce=sent.nonce), both)
    assert list(acked.removed_resources) == ["gw/8080"]  # nothing awaited any more
    [gone] = stream.on_snapshot(snapshot(LDS={"gw/9090": "v1"}))
    assert list(gone.removed_resources) == ["gw/7070"]
