"""Snapshots and the snapshot cache.

A snapshot is the immutable set of Envoy resources for one fleet. Every resource carries a version
that is a hash of its deterministic serialization, so two replicas (or a restarted process) given
the same input produce the same versions, and an Envoy that reconnects elsewhere is sent nothing
it already has.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

import structlog
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import scoped_route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf.message import Message

from ..wire import Serialized
from . import type_urls
from .replies import Selection

log = structlog.get_logger(__name__)


Content = Message | Serialized


def as_message(content: Content) -> Message:
    return content.parse() if isinstance(content, Serialized) else content


def as_serialized(content: Content) -> Serialized:
    return content if isinstance(content, Serialized) else Serialized.of(content)


Maps = tuple[dict[str, Content], dict[str, Content], dict[str, Content]]  # clusters, assignments, secrets


@dataclass(frozen=True)
class Assembly:
    """How a build assembled a fleet's cluster, assignment and secret maps: the parts it took them
    from (compared by identity: the next build of the fleet takes these maps whole, or patches the
    parts that differ), the maps (never written to), and when patched, the maps they were patched
    from and the names that may differ from those."""

    parts: tuple[object, ...]
    maps: Maps
    base: Maps | None = None
    changed: tuple[frozenset[str], ...] = ()

    def changed_since(self, base: Mapping[str, Content]) -> frozenset[str] | None:
        """The names whose message may not be base's, when `base` is one of the maps patched."""
        for map_, names in zip(self.base or (), self.changed, strict=False):
            if map_ is base:
                return names
        return None


@dataclass(frozen=True)
class FleetResources:
    """Envoy resources for one fleet, by type URL then name: what the builder makes and a snapshot
    is made of."""

    by_type: dict[str, dict[str, Content]]
    assembly: Assembly | None = field(default=None, compare=False, repr=False)
    # The parts each route configuration was joined from (build.py): the next build of the fleet
    # takes a route configuration whose parts are the same (a scope an edit did not touch) whole.
    route_parts: Mapping[str, list[bytes]] = field(default_factory=dict, compare=False, repr=False)

    def messages(self, type_url: str) -> dict[str, Message]:
        """The resources of a type as messages (a Serialized one parsed)."""
        return {name: as_message(content) for name, content in self.by_type.get(type_url, {}).items()}


@dataclass(frozen=True, slots=True)
class Resource:
    """A resource of a snapshot: one of tens of thousands at fleet scale, hence its slots."""

    name: str
    version: str
    packed: bytes = field(compare=False, repr=False)  # a google.protobuf.Any: what every stream sends
    content: Content = field(compare=False, repr=False)
    _needs: tuple[tuple[str, str], ...] | None = field(default=None, init=False, compare=False, repr=False)

    @property
    def message(self) -> Message:
        return as_message(self.content)

    @property
    def needs(self) -> tuple[tuple[str, str], ...]:
        """(type URL, name) of each resource this one names and Envoy would wait for: a listener's
        route configurations and TLS certificates, a route scope's route configuration, an EDS cluster's
        assignment. Read once per
        Resource (a snapshot keeps the previous one while its version holds), not on every edit."""
        needs = self._needs
        if needs is None:
            content = self.content
            kind = content.message_type if isinstance(content, Serialized) else type(content)
            if kind is listener_pb2.Listener:
                needs = _listener_needs(self.message)
            elif kind is cluster_pb2.Cluster:
                needs = _cluster_needs(self.message)
            elif kind is scoped_route_pb2.ScopedRouteConfiguration:
                needs = _scope_needs(self.message)
            else:
                needs = ()
            object.__setattr__(self, "_needs", needs)
        return needs


def _cluster_needs(cluster: cluster_pb2.Cluster) -> tuple[tuple[str, str], ...]:
    if cluster.type != cluster_pb2.Cluster.EDS:
        return ()
    return ((type_urls.ENDPOINT, cluster.eds_cluster_config.service_name or cluster.name),)


def _scope_needs(scope: scoped_route_pb2.ScopedRouteConfiguration) -> tuple[tuple[str, str], ...]:
    return ((type_urls.ROUTE, scope.route_configuration_name),)


def _listener_needs(listener: listener_pb2.Listener) -> tuple[tuple[str, str], ...]:
    needs = []
    for chain in listener.filter_chains:
        for network_filter in chain.filters:
            manager = hcm_pb2.HttpConnectionManager()
            if network_filter.typed_config.Unpack(manager) and manager.HasField("rds"):
                needs.append((type_urls.ROUTE, manager.rds.route_config_name))
        if chain.HasField("transport_socket"):
            context = tls_pb2.DownstreamTlsContext()
            if chain.transport_socket.typed_config.Unpack(context):
                common = context.common_tls_context
                for sds in common.tls_certificate_sds_secret_configs:
                    needs.append((type_urls.SECRET, sds.name))
                # The CAs client certificates are verified against (a ClientTrafficPolicy's).
                for validation in (
                    common.validation_context_sds_secret_config,
                    common.combined_validation_context.validation_context_sds_secret_config,
                ):
                    if validation.name:
                        needs.append((type_urls.SECRET, validation.name))
    return tuple(needs)


def versions_digest(resources: dict[str, str]) -> str:
    """A version for a set of (name, version) pairs: stable, order-free."""
    lines = "".join([f"{name}\0{resources[name]}\n" for name in sorted(resources)])
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


T = TypeVar("T")
_NONE: dict[str, Resource] = {}  # one shared empty map (never written): the same object for every stream
_MEMO_ENTRIES = 64


@dataclass(frozen=True)
class Snapshot:
    fleet: str
    resources: dict[str, dict[str, Resource]]
    version: str
    # What every stream of the fleet would otherwise compute on its own (see memo).
    _memo: dict[Hashable, Any] = field(default_factory=dict, compare=False, repr=False)
    # The maps of messages it was packed from (FleetResources.by_type): the next snapshot of the
    # fleet packs only what is not the very same message (make_snapshot).
    contents: Mapping[str, Mapping[str, Content]] = field(default_factory=dict, compare=False, repr=False)
    # The fleet's listener sets of its last snapshots before this one, by their version (the SotW
    # version_info of all of them): a SotW node that reconnects names the version it holds, and the
    # listener hand-over keeps those until it accepts the ones replacing them (streams.py).
    earlier_listeners: Mapping[str, Mapping[str, Resource]] = field(default_factory=dict, compare=False, repr=False)
    # The translators' snapshot: the withheld fleets (SnapshotCache.withhold), whose translator
    # configurations it lacks but a translator that holds one keeps (never told it is removed).
    withheld: frozenset[str] = field(default=frozenset(), compare=False)

    def of_type(self, type_url: str) -> dict[str, Resource]:
        return self.resources.get(type_url, _NONE)

    def listeners_of_version(self, version: str) -> Mapping[str, Resource] | None:
        """The fleet's listener set whose SotW version_info is `version`: this snapshot's or an
        earlier one's it knows (earlier_listeners); None for a version it does not know."""
        if version == self.type_version(type_urls.LISTENER):
            return self.of_type(type_urls.LISTENER)
        return self.earlier_listeners.get(version)

    def memo(self, key: Hashable, compute: Callable[[], T]) -> T:
        """compute() once per snapshot and key, shared by every stream of the fleet: a push to a
        thousand nodes computes each answer once, not once per node. Bounded: a client cannot grow
        it without limit by subscribing to many different sets of names."""
        try:
            return self._memo[key]  # type: ignore[no-any-return]
        except KeyError:
            pass
        if len(self._memo) >= _MEMO_ENTRIES:
            self._memo.clear()
        value = self._memo[key] = compute()
        return value

    def forget_answers(self) -> None:
        """Drop the SotW answers joined for the streams of a burst (memo): kept until the next
        snapshot, they were a second copy of every resource answered."""
        for value in list(self._memo.values()):
            if isinstance(value, Selection):
                value.forget_body()

    def type_version(self, type_url: str) -> str:
        """One version for every resource of a type: equal for equal (name, version) sets."""
        return self.memo(
            ("type_version", type_url),
            lambda: versions_digest({n: r.version for n, r in self.of_type(type_url).items()}),
        )

    def changed_since(self, type_url: str, before: dict[str, Resource]) -> frozenset[str]:
        """Names of the type added, changed or removed since `before` (the same type's resources in
        an earlier snapshot)."""
        if before is self.of_type(type_url):
            return frozenset()

        def compute() -> tuple[dict[str, Resource], frozenset[str]]:
            now = self.of_type(type_url)
            changed = {n for n, r in now.items() if before.get(n, r) is not r and before[n].version != r.version}
            changed |= now.keys() ^ before.keys()
            return before, frozenset(changed)  # `before` kept alive: its id is the key

        return self.memo(("changed_since", type_url, id(before)), compute)[1]

    @cached_property
    def holds_credentials(self) -> bool:
        """Whether any secret is a credential: a backend key (an SDS generic secret for
        credential_injector) or a private key (a listener's TLS certificate, a client certificate)."""
        return any(
            r.message.HasField("generic_secret") or r.message.HasField("tls_certificate")
            for r in self.of_type(type_urls.SECRET).values()
        )


def _identity(content: Content) -> object:
    """What stands for a content's identity: a Serialized's bytes (two Serialized of the very same
    bytes are the same content), or the message."""
    return content.packed if isinstance(content, Serialized) else content


def pack(name: str, content: Content) -> Resource:
    """A resource, serialized once and versioned by the hash of its deterministic serialization."""
    serialized = as_serialized(content)
    return Resource(name, hashlib.sha256(serialized.data).hexdigest()[:16], serialized.packed, content)


class Packer:
    """Packs each message object once: the builder hands back the very message objects of what an
    edit did not change (its caches), so an edit serializes and hashes only what it changed. Holds
    what the last snapshots used (`keep`), nothing older."""

    def __init__(self) -> None:
        # By the identity of the message (of a Serialized's bytes), which the Resource holds (so the
        # id stays its while the entry is here): the builder gives each message object one name (a
        # key of the id alone is 56 bytes less, and a Resource without the message beside it in a
        # pair 64 bytes less, 20,000 of them at 10,000 routes); one packed under another name is
        # packed again.
        self._packed: dict[int, Resource] = {}
        self._used: dict[int, Resource] = {}

    def __call__(self, name: str, message: Content) -> Resource:
        same = _identity(message)
        key = id(same)
        resource = self._packed.get(key) or self._used.get(key)
        if resource is None or _identity(resource.content) is not same or resource.name != name:
            resource = pack(name, message)
        self._used[key] = resource
        return resource

    def keep(self) -> None:
        """Forget what the snapshots made since the last call did not use."""
        self._packed, self._used = self._used, {}


def make_snapshot(
    fleet: str,
    fleet_resources: FleetResources,
    packer: Callable[[str, Content], Resource] = pack,
    previous: Snapshot | None = None,
    withheld: frozenset[str] = frozenset(),
) -> Snapshot:
    """The snapshot of a fleet's resources. With the fleet's `previous` snapshot, a resource whose
    version did not change stays the previous Resource object, and a type whose resources all stayed
    keeps the previous map object: streams that hold it see at a glance that nothing of that type
    changed (a message built again with the same content, such as the translator's cluster, does
    not count as a change)."""
    resources: dict[str, dict[str, Resource]] = {}
    assembly = fleet_resources.assembly
    for type_url in type_urls.ORDER:
        by_name = fleet_resources.by_type.get(type_url, {})
        before = previous.of_type(type_url) if previous is not None else _NONE
        packed_from = previous.contents.get(type_url) if previous is not None else None
        if packed_from is not None and packed_from.keys() == by_name.keys():
            # The same names: pack what is not the very message packed last time (none when the
            # map is the same object), and keep the previous map if no version changed.
            candidates = assembly.changed_since(packed_from) if assembly is not None else None
            changed = [n for n in (by_name if candidates is None else candidates) if packed_from[n] is not by_name[n]]
            resources[type_url] = _patched(before, {n: packer(n, by_name[n]) for n in changed})
            continue
        packed: dict[str, Resource] = {}
        kept = 0  # how many are the previous Resource
        for name in sorted(by_name):
            content = by_name[name]
            resource = kept_resource = before.get(name)
            if resource is None or resource.content is not content:  # the same content object: packed already
                fresh = packer(name, content)
                if resource is None or resource.version != fresh.version:
                    resource = fresh
            kept += resource is kept_resource
            packed[name] = resource
        same = previous is not None and len(before) == len(packed) == kept
        resources[type_url] = before if same else packed
    # The snapshot's version digests its types' versions (Snapshot.type_version), each taken from
    # the previous snapshot where the type's map is the same.
    versions = {
        type_url: previous.type_version(type_url)
        if previous is not None and by_name is previous.of_type(type_url)
        else versions_digest({n: r.version for n, r in by_name.items()})
        for type_url, by_name in resources.items()
    }
    snapshot = Snapshot(
        fleet,
        resources,
        versions_digest(versions),
        contents=fleet_resources.by_type,
        earlier_listeners=_earlier_listeners(previous, resources.get(type_urls.LISTENER, _NONE)),
        withheld=withheld,
    )
    snapshot._memo.update({("type_version", type_url): version for type_url, version in versions.items()})
    return snapshot


# How many of a fleet's earlier listener sets a snapshot knows (a few edits of a port while a node
# was away: each is an answer it may have accepted last).
LISTENER_SETS_KEPT = 8


def _earlier_listeners(
    previous: Snapshot | None, listeners: Mapping[str, Resource]
) -> Mapping[str, Mapping[str, Resource]]:
    """The earlier listener sets of a fleet's snapshot: the previous snapshot's, and its own set when
    it is not this one's."""
    if previous is None:
        return {}
    before = previous.of_type(type_urls.LISTENER)
    if before is listeners or not before:
        return previous.earlier_listeners
    version = previous.type_version(type_urls.LISTENER)
    kept = {v: s for v, s in previous.earlier_listeners.items() if v != version}
    kept[version] = before
    return dict(list(kept.items())[-LISTENER_SETS_KEPT:])


def _patched(before: dict[str, Resource], fresh: dict[str, Resource]) -> dict[str, Resource]:
    """`before` with the fresh resources whose version differs (in its order: names sorted), or
    `before` itself when none does."""
    changed = {n: r for n, r in fresh.items() if before[n].version != r.version}
    return {**before, **changed} if changed else before


class InconsistentSnapshot(ValueError):
    """A snapshot that names resources it does not hold."""


def check_consistency(snapshot: Snapshot, published: Snapshot | None = None) -> None:
    """Every RDS, EDS and SDS name that a listener, route scope or cluster refers to must be in the snapshot;
    otherwise Envoy would wait for it forever (warming). Raises InconsistentSnapshot. With the
    fleet's `published` snapshot (consistent, checked when it was published) and no name gone since,
    only the listeners and clusters that are not the very resources there are checked."""
    gone = published is None or any(
        not published.of_type(t).keys() <= snapshot.of_type(t).keys()
        for t in type_urls.ORDER
        if published.of_type(t) is not snapshot.of_type(t)
    )
    missing: list[str] = []
    for type_url, kind in (
        (type_urls.LISTENER, "listener"),
        (type_urls.SCOPED_ROUTE, "scope"),
        (type_urls.CLUSTER, "cluster"),
    ):
        checked = _NONE if gone or published is None else published.of_type(type_url)
        resources = snapshot.of_type(type_url)
        if resources is checked:
            continue
        for resource in resources.values():
            if checked.get(resource.name) is resource:
                continue
            for needed, name in resource.needs:
                if name not in snapshot.of_type(needed):
                    missing.append(f"{needed.rsplit('.', 1)[1]} {name} ({kind} {resource.name})")
    if missing:
        raise InconsistentSnapshot("snapshot refers to resources it lacks: " + "; ".join(missing))


Listener = Callable[[str], None]


# Withheld as a fleet name: every fleet without a snapshot (a document that does not read may hold
# any fleet's resources).
ANY_FLEET = "*"


class SnapshotCache:
    """The current snapshot of every fleet; tells subscribers which fleet changed. A fleet with no
    snapshot is either unknown (its nodes get an empty configuration) or withheld: its Gateway
    exists but has errors and no configuration was ever good here (a control plane started on a
    broken file). A withheld fleet's nodes are answered nothing until it has a snapshot or is
    unknown: an Envoy that reconnects keeps the configuration it serves, never an empty one."""

    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._subscribers: list[Listener] = []
        self.publishes: Counter[str] = Counter()  # fleet -> configurations published (metrics)
        self._withheld: dict[str, str] = {}  # fleet -> why

    def get(self, fleet: str) -> Snapshot | None:
        return self._snapshots.get(fleet)

    def withheld(self, fleet: str) -> str | None:
        """Why a fleet with no snapshot is withheld (None: it is not); ANY_FLEET withholds every one."""
        if fleet in self._snapshots:
            return None
        return self._withheld.get(fleet) or self._withheld.get(ANY_FLEET)

    def withheld_fleets(self) -> list[str]:
        """The fleets withheld now that have no snapshot."""
        return sorted(fleet for fleet in self._withheld if fleet not in self._snapshots)

    def withhold(self, fleets: dict[str, str]) -> None:
        """The fleets withheld now (fleet -> why, ANY_FLEET: every fleet without a snapshot); the
        subscribers hear of each one that changed (of ANY_FLEET: as a notice to every fleet)."""
        changed = self._withheld.keys() ^ fleets.keys()
        self._withheld = dict(fleets)
        for fleet in sorted(changed):
            if fleet == ANY_FLEET:  # the fleets served keep their snapshots: only new ones wait
                event = (
                    "fleets_without_a_snapshot_withheld" if fleet in fleets else "fleets_without_a_snapshot_released"
                )
                log.info(event, reason=fleets.get(fleet, ""))
            else:
                log.info("fleet_withheld" if fleet in fleets else "fleet_no_longer_withheld", fleet=fleet)
            self._notify(fleet)

    def fleets(self) -> list[str]:
        return sorted(self._snapshots)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._subscribers.append(listener)
        return lambda: self._subscribers.remove(listener)

    def set(self, snapshot: Snapshot) -> bool:
        """Publish a snapshot after checking it; False when it equals the current one (nothing sent)."""
        current = self._snapshots.get(snapshot.fleet)
        check_consistency(snapshot, current)
        if current is not None and current.version == snapshot.version and current.withheld == snapshot.withheld:
            return False
        self._snapshots[snapshot.fleet] = snapshot
        if current is not None and current.version == snapshot.version:  # only what it withholds changed
            log.info("snapshot_withheld_fleets_changed", fleet=snapshot.fleet, withheld=sorted(snapshot.withheld))
        else:
            self.publishes[snapshot.fleet] += 1
            log.info("snapshot_published", fleet=snapshot.fleet, version=snapshot.version)
        self._notify(snapshot.fleet)
        return True

    def forget_answers(self) -> None:
        """Every current snapshot's joined answers dropped (Snapshot.forget_answers): once a burst is
        over (memory.MemoryTrimmer)."""
        for snapshot in self._snapshots.values():
            snapshot.forget_answers()

    def remove(self, fleet: str) -> bool:
        if self._snapshots.pop(fleet, None) is None:
            return False
        log.info("snapshot_removed", fleet=fleet)
        self._notify(fleet)
        return True

    def _notify(self, fleet: str) -> None:
        for listener in list(self._subscribers):
            listener(fleet)
