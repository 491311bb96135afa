"""The stream state machines over random sequences of snapshots and client behaviour: a push to a
stream that was in sync takes a shortcut (only what changed since the snapshot it mirrors is looked
at, shared by the fleet's streams); these check that the shortcut never loses or adds anything.

A simulated client applies every response as Envoy does (delta: upserts and removals by name;
SotW: the whole set of a wildcard type, the named ones otherwise, which a SotW answer of route
configurations may leave out: the client keeps them), ACKs it, sometimes NACKs, changes its EDS and
RDS subscriptions, or reconnects with what it has. After each step the client must hold
exactly the snapshot's resources it subscribes to, and a delta push must carry only resources whose
version the client lacks (plus the endpoints of a changed cluster, which Envoy needs to finish
warming it)."""

from __future__ import annotations

import random

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from aigw_xds.xds import type_urls
from aigw_xds.xds.cache import Resource, Snapshot, versions_digest

from .test_streams import DeltaStream, SotwStream, delta, sotw, versioned

TYPES = (type_urls.CLUSTER, type_urls.ENDPOINT, type_urls.LISTENER, type_urls.ROUTE)
ROUTE_NAMES = [f"r{i}" for i in range(6)]


def _resource(type_url: str, name: str, version: str) -> Resource:
    """A resource that says its version (SotW responses carry none per resource)."""
    message = {
        type_urls.CLUSTER: lambda: cluster_pb2.Cluster(name=name, alt_stat_name=version),
        type_urls.ENDPOINT: lambda: endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name, endpoints=[endpoint_components_pb2.LocalityLbEndpoints(locality={"region": version})]
        ),
        type_urls.LISTENER: lambda: listener_pb2.Listener(name=name, stat_prefix=version),
        type_urls.ROUTE: lambda: route_pb2.RouteConfiguration(
            name=name, virtual_hosts=[route_components_pb2.VirtualHost(name=version)]
        ),
    }[type_url]()
    return versioned(name, version, message)


def _version_of(packed: any_pb2.Any) -> tuple[str, str]:
    for message_type in (
        cluster_pb2.Cluster,
        endpoint_pb2.ClusterLoadAssignment,
        listener_pb2.Listener,
        route_pb2.RouteConfiguration,
    ):
        message = message_type()
        if packed.Unpack(message):
            if isinstance(message, route_pb2.RouteConfiguration):
                return message.name, message.virtual_hosts[0].name
            if isinstance(message, cluster_pb2.Cluster):
                return message.name, message.alt_stat_name
            if isinstance(message, listener_pb2.Listener):
                return message.name, message.stat_prefix
            region = message.endpoints[0].locality.region if message.endpoints else "missing"
            return message.cluster_name, region
    raise AssertionError(packed.type_url)


def _carried(response) -> dict[str, str]:
    """name -> version of the resources a response carries."""
    if isinstance(response, discovery_pb2.DeltaDiscoveryResponse):
        return {r.name: r.version for r in response.resources}
    return dict(_version_of(packed) for packed in response.resources)


def snapshot(**by_type: dict[str, str]) -> Snapshot:
    urls = {"CDS": type_urls.CLUSTER, "EDS": type_urls.ENDPOINT, "LDS": type_urls.LISTENER, "RDS": type_urls.ROUTE}
    resources = {urls[t]: {n: _resource(urls[t], n, v) for n, v in names.items()} for t, names in by_type.items()}
    overall = versions_digest({f"{t}|{n}": r.version for t, rs in resources.items() for n, r in rs.items()})
    return Snapshot("ns/gw", resources, overall)


def random_snapshot(rng: random.Random) -> Snapshot:
    clusters = {f"c{i}": f"v{rng.randrange(3)}" for i in range(12) if rng.random() < 0.8}
    endpoints = {n: f"e{rng.randrange(3)}" for n in clusters}  # every cluster is an EDS cluster
    listeners = {f"l{i}": f"v{rng.randrange(2)}" for i in range(3) if rng.random() < 0.9}
    routes = {n: f"v{rng.randrange(3)}" for n in ROUTE_NAMES if rng.random() < 0.8}
    return snapshot(CDS=clusters, EDS=endpoints, LDS=listeners, RDS=routes)


class Client:
    """What an Envoy holds and asks for, over one stream of either variant."""

    def __init__(
        self,
        rng: random.Random,
        mode: str,
        held: dict[str, dict[str, str]] | None = None,
        rds_names: set[str] | None = None,
    ) -> None:
        self.rng = rng
        self.mode = mode
        self.stream: DeltaStream | SotwStream = DeltaStream() if mode == "delta" else SotwStream()
        self.held: dict[str, dict[str, str]] = held or {t: {} for t in TYPES}
        # (name, version) pairs rejected: the stream does not resend a version the client rejected
        # until the snapshot changes it (NACK hold), so a snapshot that has it again is not owed.
        self.rejected: dict[str, set[tuple[str, str]]] = {t: set() for t in TYPES}
        self.eds_names: set[str] = set()
        # The route configurations it asks for (as its listeners would name them).
        self.rds_names: set[str] = rds_names or set(rng.sample(ROUTE_NAMES, 4))
        self.pending: list = []

    def connect(self, snap: Snapshot) -> None:
        self.eds_names = set(snap.of_type(type_urls.CLUSTER))
        for type_url in TYPES:
            names = self._names(type_url)
            if self.mode == "delta":
                initial = dict(self.held[type_url])
                request = delta(type_url, subscribe=names, initial=initial)
            else:
                request = sotw(type_url, names)
            self.pending += self.stream.on_request(request, snap)

    def settle(self, snap: Snapshot, nack_rate: float = 0.0) -> None:
        """Apply and answer every response until the stream has nothing more to say."""
        for _ in range(50):
            if not self.pending:
                return
            response = self.pending.pop(0)
            nack = self.rng.random() < nack_rate
            if nack and self.mode == "sotw" and response.type_url == type_urls.ROUTE:
                # Envoy applies a SotW answer of route configurations one by one up to the one it
                # rejects: a prefix of it is taken, the rest is not.
                carried = list(_carried(response).items())
                taken = self.rng.randrange(len(carried) + 1)
                self.held[response.type_url].update((n, v) for n, v in carried[:taken] if n in self.rds_names)
                self.rejected[response.type_url] |= set(carried[taken:])
            elif nack:
                self.rejected[response.type_url] |= set(_carried(response).items())
                self.rejected[response.type_url] |= {(n, "") for n in getattr(response, "removed_resources", ())}
            else:
                self._apply(response)
                if response.type_url == type_urls.CLUSTER:
                    self._follow_clusters(snap)
            names = self._names(response.type_url)
            if self.mode == "delta":
                request = delta(response.type_url, nonce=response.nonce, nack="rejected" if nack else "")
            else:
                request = sotw(response.type_url, names, response.nonce, nack="rejected" if nack else "")
            self.pending += self.stream.on_request(request, snap)
        raise AssertionError("the stream never settled")

    def _names(self, type_url: str) -> list[str]:
        """What a SotW request names (its subscription) for `type_url`."""
        return sorted({type_urls.ENDPOINT: self.eds_names, type_urls.ROUTE: self.rds_names}.get(type_url, ()))

    def change_routes(self, snap: Snapshot) -> None:
        """Its listeners now name other route configurations: one dropped (and forgotten, as Envoy
        drops a route configuration no listener names) and another asked for (perhaps one it held
        before: it must come again); or one dropped and asked for again before any answer (a
        listener removed and added again: the stream still has it as sent, and must send it)."""
        dropped = self.rng.choice(sorted(self.rds_names))
        self.held[type_urls.ROUTE].pop(dropped, None)
        if self.rng.random() < 0.5:
            self.rds_names.discard(dropped)
            self._ask_routes(snap, [], [dropped])
            self.rds_names.add(dropped)
            self._ask_routes(snap, [dropped], [])
            return
        added = self.rng.choice(sorted(set(ROUTE_NAMES) - self.rds_names))
        self.rds_names = (self.rds_names - {dropped}) | {added}
        self._ask_routes(snap, [added], [dropped])

    def _ask_routes(self, snap: Snapshot, subscribe: list[str], unsubscribe: list[str]) -> None:
        if self.mode == "delta":
            request = delta(type_urls.ROUTE, subscribe=subscribe, unsubscribe=unsubscribe)
        else:
            request = sotw(type_urls.ROUTE, self._names(type_urls.ROUTE), self.stream.types[type_urls.ROUTE].last_nonce)
        self.pending += self.stream.on_request(request, snap)

    def _apply(self, response) -> None:
        held = self.held[response.type_url]
        if response.type_url in type_urls.FULL_STATE and isinstance(response, discovery_pb2.DiscoveryResponse):
            held.clear()
        carried = _carried(response)
        if response.type_url == type_urls.ROUTE:  # Envoy ignores what no watch of its names
            carried = {n: v for n, v in carried.items() if n in self.rds_names}
        held.update(carried)
        for name in getattr(response, "removed_resources", ()):
            held.pop(name, None)
        touched = carried.keys() | set(getattr(response, "removed_resources", ()))
        if isinstance(response, discovery_pb2.DiscoveryResponse) and response.type_url in type_urls.FULL_STATE:
            touched |= {n for n, _ in self.rejected[response.type_url]}  # the whole set was replaced
        self.rejected[response.type_url] = {(n, v) for n, v in self.rejected[response.type_url] if n not in touched}

    def _follow_clusters(self, snap: Snapshot) -> None:
        """Envoy asks for the endpoints of the EDS clusters it holds, and no others."""
        before = set(self.eds_names)
        self.eds_names = set(self.held[type_urls.CLUSTER])
        dropped, added = before - self.eds_names, self.eds_names - before
        if not dropped and not added:
            return
        for name in dropped:
            self.held[type_urls.ENDPOINT].pop(name, None)
        if self.mode == "delta":
            request = delta(type_urls.ENDPOINT, subscribe=sorted(added), unsubscribe=sorted(dropped))
        else:
            nonce = self.stream.types[type_urls.ENDPOINT].last_nonce
            request = sotw(type_urls.ENDPOINT, sorted(self.eds_names), nonce)
        self.pending += self.stream.on_request(request, snap)

    def expect_in_sync(self, snap: Snapshot) -> None:
        for type_url in TYPES:
            clusters_rejected = self.rejected[type_urls.CLUSTER] or self.rejected[type_urls.ENDPOINT]
            if type_url in (type_urls.LISTENER, type_urls.ROUTE) and clusters_rejected:
                continue  # listeners and routes wait for clusters the client took (make-before-break)
            wanted = {n: r.version for n, r in snap.of_type(type_url).items()}
            if type_url == type_urls.ROUTE:
                wanted = {n: v for n, v in wanted.items() if n in self.rds_names}
            if type_url == type_urls.ENDPOINT:
                wanted = {n: v for n, v in wanted.items() if n in self.eds_names}
                held = {n: v for n, v in self.held[type_url].items() if v != "missing"}
            else:
                held = self.held[type_url]
            owed = {n: v for n, v in wanted.items() if (n, v) not in self.rejected[type_url]}
            assert {n: v for n, v in held.items() if n in owed} == owed, type_urls.SHORT[type_url]
            # A rejected answer may have been a removal; SotW has none for a route configuration
            # (its listener no longer naming it is what removes it from Envoy).
            if not self.rejected[type_url] and not (self.mode == "sotw" and type_url == type_urls.ROUTE):
                assert held.keys() <= wanted.keys(), type_urls.SHORT[type_url]


@pytest.mark.parametrize("mode", ["delta", "sotw"])
@pytest.mark.parametrize("seed", range(40))
def test_random_sequences_leave_the_client_with_the_snapshot(mode: str, seed: int) -> None:
    rng = random.Random(f"{mode}-{seed}")
    snap = random_snapshot(rng)
    client = Client(rng, mode)
    client.connect(snap)
    client.settle(snap)
    client.expect_in_sync(snap)
    for step in range(25):
        roll = rng.random()
        if roll < 0.15:
            client.change_routes(snap)
            client.settle(snap)
        elif roll < 0.6:
            previous_held = {t: dict(v) for t, v in client.held.items()}
            snap = random_snapshot(rng)
            # After a NACK the stream believes the client has what it rejected (NACK hold).
            rejected = {t: {n for n, _ in pairs} for t, pairs in client.rejected.items()}
            if mode == "sotw":
                # Except route configurations: what a NACKed SotW answer of them carried comes
                # again with the next answer (Envoy may have taken part of it).
                client.rejected[type_urls.ROUTE] = set()
            pushed = client.stream.on_snapshot(snap)
            if mode == "delta":
                # The endpoints of a cluster sent in this push come along, changed or not.
                clusters_sent = {r.name for p in pushed if p.type_url == type_urls.CLUSTER for r in p.resources}
                for response in pushed:
                    held = previous_held[response.type_url]
                    for resource in response.resources:
                        forced = response.type_url == type_urls.ENDPOINT and resource.name in clusters_sent
                        was_rejected = resource.name in rejected[response.type_url]
                        owed = held.get(resource.name) != resource.version or forced or was_rejected
                        assert owed, (step, resource.name)
            client.pending += pushed
            client.settle(snap, nack_rate=0.1 if rng.random() < 0.2 else 0.0)
        else:  # the stream breaks; the client reconnects with what it has
            client = Client(rng, mode, client.held if mode == "delta" else None, client.rds_names)
            client.connect(snap)
            client.settle(snap)
        # A NACKed version is not resent until the snapshot changes: a push of the same snapshot
        # brings whatever was rejected back in sync only when it differs, so compare after a
        # clean round (the same snapshot again, applied without NACKs).
        client.pending += client.stream.on_snapshot(snap)
        client.settle(snap)
        client.expect_in_sync(snap)
        # What a stream must resend is an immutable set (rebound, never changed in place).
        assert all(type(state.force) is frozenset for state in client.stream.types.values())


def test_streams_in_sync_share_the_push() -> None:
    """Two streams that hold the same snapshot are answered the same resources for the next one,
    and the snapshot computes what changed once for both."""
    first = snapshot(CDS={"c1": "v1", "c2": "v1"}, LDS={"l1": "v1"})
    streams = [Client(random.Random(i), "delta") for i in range(2)]
    for client in streams:
        client.connect(first)
        client.settle(first)
    second = snapshot(CDS={"c1": "v2", "c2": "v1"}, LDS={"l1": "v1"})
    pushes = [client.stream.on_snapshot(second) for client in streams]
    assert [[(p.type_url, [r.name for r in p.resources]) for p in push] for push in pushes] == [
        [(type_urls.CLUSTER, ["c1"])]
    ] * 2
    computed = [k[1] for k in second._memo if k[0] == "changed_since"]
    assert sorted(computed) == sorted(set(computed)), computed  # once per type, not per stream


def test_an_acked_delta_stream_holds_the_snapshots_map_and_only_what_differs() -> None:
    """Once everything sent is ACKed, a delta stream's record of what the client has is the
    snapshot's own map (shared by every stream in sync) plus what differs: names it subscribed to
    that do not exist (told removed), and none of the names it did not subscribe to."""
    first = snapshot(CDS={"a": "v1", "b": "v1"}, EDS={"a": "e1", "b": "e1"})
    streams = [DeltaStream(), DeltaStream()]
    for stream in streams:
        [eds] = stream.on_request(delta(type_urls.ENDPOINT, subscribe=["a", "ghost"]), first)
        assert [r.name for r in eds.resources] == ["a"] and list(eds.removed_resources) == ["ghost"]
        stream.on_request(delta(type_urls.ENDPOINT, nonce=eds.nonce), first)
        state = stream.types[type_urls.ENDPOINT]
        assert state.status_of("a") == ("e1", "SYNCED")
        assert state.status_of("b") == ("", "NOT_SENT")  # not subscribed
        assert state.status_of("ghost")[0] == "removed"
        assert state.sent.names() == {"a", "ghost"}
    assert streams[0].types[type_urls.ENDPOINT].sent._base is first.of_type(type_urls.ENDPOINT)
    assert streams[1].types[type_urls.ENDPOINT].sent._base is first.of_type(type_urls.ENDPOINT)
    second = snapshot(CDS={"a": "v1", "b": "v1"}, EDS={"a": "e1", "b": "e2", "ghost": "e1"})
    for stream in streams:
        [push] = stream.on_snapshot(second)
        assert [r.name for r in push.resources] == ["ghost"] and not push.removed_resources  # not b


def test_a_sotw_answer_of_route_configurations_carries_what_changed_and_is_answered_per_name() -> None:
    """SotW route configurations go as delta's do (type_urls.CHANGES_ONLY): an edit of one scope
    sends that one; a NACK marks what that answer carried, not what the client holds from before;
    once all is ACKed the stream's record is the snapshot's shared map again."""
    names = ["a", "b", "c"]
    first = snapshot(RDS={"a": "v1", "b": "v1", "c": "v1"})
    stream = SotwStream()
    [answer] = stream.on_request(sotw(type_urls.ROUTE, names), first)
    assert _carried(answer) == {"a": "v1", "b": "v1", "c": "v1"}
    stream.on_request(sotw(type_urls.ROUTE, names, answer.nonce), first)
    second = snapshot(RDS={"a": "v1", "b": "v2", "c": "v1"})
    [push] = stream.on_snapshot(second)
    assert _carried(push) == {"b": "v2"}
    state = stream.types[type_urls.ROUTE]
    stream.on_request(sotw(type_urls.ROUTE, names, push.nonce, nack="rejected"), second)
    assert [state.status_of(n) for n in names] == [("v1", "SYNCED"), ("v2", "ERROR"), ("v1", "SYNCED")]
    third = snapshot(RDS={"a": "v2", "b": "v3", "c": "v1"})
    [push] = stream.on_snapshot(third)
    assert _carried(push) == {"a": "v2", "b": "v3"}
    stream.on_request(sotw(type_urls.ROUTE, names, push.nonce), third)
    assert [state.status_of(n) for n in names] == [("v2", "SYNCED"), ("v3", "SYNCED"), ("v1", "SYNCED")]
    assert state.sent.base is third.of_type(type_urls.ROUTE) and not state.sent._own


def test_a_nacked_sotw_answer_of_route_configurations_is_carried_again_with_the_next_one() -> None:
    """Envoy takes a SotW answer of route configurations one by one up to the one it rejects: what
    the NACKed answer carried comes again with the next answer, so that what Envoy did not take is
    not left behind, and the stream's record folds back to the shared map once it is ACKed (review)."""
    names = ["a", "b", "c"]
    first = snapshot(RDS={"a": "v1", "b": "v1", "c": "v1"})
    stream = SotwStream()
    [answer] = stream.on_request(sotw(type_urls.ROUTE, names), first)
    stream.on_request(sotw(type_urls.ROUTE, names, answer.nonce), first)
    second = snapshot(RDS={"a": "v2", "b": "v2", "c": "v1"})
    [push] = stream.on_snapshot(second)
    assert stream.on_request(sotw(type_urls.ROUTE, names, push.nonce, nack="b is bad"), second) == []
    third = snapshot(RDS={"a": "v2", "b": "v2", "c": "v2"})
    [push] = stream.on_snapshot(third)
    assert _carried(push) == {"a": "v2", "b": "v2", "c": "v2"}
    stream.on_request(sotw(type_urls.ROUTE, names, push.nonce), third)
    state = stream.types[type_urls.ROUTE]
    assert [state.status_of(n)[1] for n in names] == ["SYNCED"] * 3
    assert state.sent.base is third.of_type(type_urls.ROUTE) and not state.sent._own
