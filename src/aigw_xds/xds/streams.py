"""Per-stream protocol state for SotW and Delta ADS: subscriptions, nonces, what the client has,
ACK/NACK bookkeeping. Pure state machines: the server feeds them requests and snapshots and sends
whatever they return."""

from __future__ import annotations

import functools
import itertools
import weakref
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

import aigw_contract as contract

from . import replies, type_urls
from .cache import ANY_FLEET, Resource, Snapshot, pack, versions_digest
from .replies import Reply, Selection

Status = Literal["SYNCED", "STALE", "ERROR", "NOT_SENT"]
WILDCARD = "*"
_NOTHING: Mapping[str, Resource] = MappingProxyType({})


# The empty set of names, shared: each frozenset() made anew is an object of 216 bytes, and every
# stream would hold a few (per type: what it was sent besides, what must be resent).
_NO_NAMES: frozenset[str] = frozenset()


class _SharedNames(frozenset[str]):
    """A set of names shared by the streams that hold it (weakly referenced by the table below)."""


# hash -> the live shared sets with that hash; a set no stream holds any more leaves at once.
_shared_name_sets: dict[int, list[weakref.ref[_SharedNames]]] = {}


def shared_names(names: Iterable[str]) -> frozenset[str]:
    """One object for equal sets of resource names. A fleet's streams subscribe alike (every EDS
    cluster, every route configuration), and each request brings its own copies of the names: kept
    per stream, they were most of what a node cost (tens of KB each). Only sets some stream holds
    are kept (an edit that adds a cluster makes a new full set; the old one goes with its users)."""
    key = names if isinstance(names, frozenset) else frozenset(names)
    if not key:
        return _NO_NAMES
    digest = hash(key)
    for ref in _shared_name_sets.get(digest, ()):
        shared = ref()
        if shared is not None and shared == key:
            return shared
    shared = _SharedNames(key)
    _shared_name_sets.setdefault(digest, []).append(weakref.ref(shared, functools.partial(_forget, digest)))
    return shared


def _forget(digest: int, ref: weakref.ref[_SharedNames]) -> None:
    refs = _shared_name_sets.get(digest)
    if refs is not None:
        refs.remove(ref)
        if not refs:
            del _shared_name_sets[digest]


class Sent:
    """name -> (version, nonce) of what a stream sent: the client is believed to have it.

    Most of it is one map of resources shared with every stream in the same state (a snapshot's
    resources of the type, or a SotW answer's), all under one nonce; only where this stream differs
    does it hold entries of its own. A thousand streams in sync hold one map, not a thousand."""

    __slots__ = ("_base", "_base_nonce", "_gone", "_own")

    def __init__(self) -> None:
        self._base: Mapping[str, Resource] = _NOTHING
        self._base_nonce = ""
        self._own: dict[str, tuple[str, str]] = {}
        self._gone: set[str] | frozenset[str] = _NO_NAMES  # names of the base this stream does not hold

    def get(self, name: str) -> tuple[str, str] | None:
        own = self._own.get(name)
        if own is not None:
            return own
        resource = self._base.get(name)
        if resource is None or (self._gone and name in self._gone):
            return None
        return resource.version, self._base_nonce

    def version(self, name: str) -> str:
        own = self._own.get(name)
        if own is not None:
            return own[0]
        resource = self._base.get(name)
        if resource is None or (self._gone and name in self._gone):
            return ""
        return resource.version

    def covers(self, resources: Mapping[str, Resource]) -> bool:
        """Whether every one of `resources` was sent at its version (cheap when the base is them)."""
        if self._base is resources and not self._gone and not (self._own.keys() & resources.keys()):
            return True
        return all(self.version(n) == r.version for n, r in resources.items())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __setitem__(self, name: str, entry: tuple[str, str]) -> None:
        self._own[name] = entry

    def pop(self, name: str) -> None:
        self._own.pop(name, None)
        if name in self._base:
            gone = self._gone if isinstance(self._gone, set) else set(self._gone)
            gone.add(name)
            self._gone = gone

    def names(self) -> set[str]:
        return (self._base.keys() - self._gone) | self._own.keys()

    def items(self) -> Iterator[tuple[str, tuple[str, str]]]:
        for name in sorted(self.names()):
            entry = self.get(name)
            assert entry is not None
            yield name, entry

    def nonces(self) -> set[str]:
        """The nonces some entry was sent with."""
        live = {nonce for _, nonce in self._own.values()}
        if self._base.keys() - self._gone - self._own.keys():
            live.add(self._base_nonce)
        return live

    def advance(self, base: Mapping[str, Resource], nonce: str, carried: AbstractSet[str]) -> None:
        """SotW, an answer of what changed (type_urls.CHANGES_ONLY): the client holds `base` (shared,
        not copied), the `carried` names as sent under `nonce`, the others as they were sent before
        (under the earlier base's nonce, or entries of their own). fold() makes it one map again."""
        own = {n: e for n, e in self._own.items() if n in base and n not in carried}
        own.update((n, (base[n].version, nonce)) for n in carried)
        self._base, self._own, self._gone = base, own, _NO_NAMES

    def fold(self, nonce: str) -> None:
        """Everything sent is answered alike: all of it under `nonce`, no entries of its own (a
        thousand streams in sync share the base again)."""
        self._base_nonce, self._own = nonce, {}

    def rebase(self, base: Mapping[str, Resource], nonce: str, own: dict[str, tuple[str, str]] | None = None) -> None:
        """What was sent is now `base` (shared, not copied) under `nonce`, plus `own`."""
        self._base, self._base_nonce, self._own = base, nonce, own or {}
        self._gone = _NO_NAMES

    @property
    def base(self) -> Mapping[str, Resource]:
        """The shared map of the last rebase: for SotW, the resources of the last answer."""
        return self._base

    def keep_only(self, names: AbstractSet[str]) -> None:
        """Forget the base's names outside `names`."""
        self._gone = frozenset(self._base.keys() - names) or _NO_NAMES


@dataclass(slots=True)
class TypeState:
    """What one stream knows about one resource type."""

    type_url: str
    wildcard: bool = False
    explicit: bool = False  # the client has named resources (legacy wildcard rule)
    names: frozenset[str] = frozenset()  # shared_names()
    requested: bool = False  # any request seen for this type
    last_nonce: str = ""
    last_version: str = ""  # SotW: version_info of the last response
    sent: Sent = field(default_factory=Sent)
    nonce_status: dict[str, Status] = field(default_factory=dict)
    error: str = ""  # last NACK message
    force: frozenset[str] = frozenset()  # names to send even if unchanged
    # Bumped by every change to what the client has or asks for: the memos below hold for one value.
    generation: int = 0
    # Delta: `sent` mirrors these resources (a snapshot's, by identity) over what the client
    # subscribes to, as of `generation`: the next answer need only look at what changed since.
    mirror: tuple[dict[str, Resource], int] | None = None
    # holds(): the (generation, type version) for which every resource's version was found sent.
    _held: tuple[int, str] | None = None
    # Names the last answer sent at a version the client did not have.
    last_changed: frozenset[str] = frozenset()  # shared_names()
    # Listeners only (the hand-over, _handed_over): SotW, the resources of the last answer the
    # client accepted; delta, the names sent new and not accepted yet.
    accepted: Mapping[str, Resource] = field(default_factory=lambda: _NOTHING)  # shared, not a dict each
    arriving: frozenset[str] = _NO_NAMES

    def force_resend(self, names: AbstractSet[str]) -> None:
        """Send these names in the next answer even if the client was sent their versions."""
        if names:
            self.force = self.force.union(names)

    def forget_forced(self, names: AbstractSet[str]) -> None:
        """These names are sent (or no longer wanted): nothing forces them any more. `force` stays
        an immutable set, the shared empty one when nothing is left."""
        if self.force:
            self.force = self.force.difference(names) or _NO_NAMES

    def subscribed(self, snapshot: Snapshot | None) -> list[str]:
        available = snapshot.of_type(self.type_url) if snapshot else {}
        names = set(self.names)
        if self.wildcard:
            names |= set(available)
        return sorted(names)

    def holds(self, snapshot: Snapshot) -> bool:
        """Whether the client was sent every resource of this type in the snapshot at its current
        version and has answered each (ACK or NACK). Cheap when nothing changed: a fleet's push
        asks it of every stream."""
        current = snapshot.of_type(self.type_url)
        key = (self.generation, snapshot.type_version(self.type_url))
        if self._held != key:
            if not self.sent.covers(current):
                return False
            self._held = key
        if "STALE" not in self.nonce_status.values():
            return True
        return all(self.status_of(n)[1] != "STALE" for n in current)

    def record_sent(self, nonce: str, versions: dict[str, str]) -> None:
        """A response went out carrying these resources (delta: on top of what was sent before)."""
        for name, version in versions.items():
            self.sent[name] = (version, nonce)
        self.recorded(nonce)

    def record_all(self, nonce: str, resources: Mapping[str, Resource]) -> None:
        """A response went out carrying exactly these resources (SotW), a map shared, not copied."""
        self.sent.rebase(resources, nonce)
        self.recorded(nonce)

    def recorded(self, nonce: str) -> None:
        """A response went out under `nonce` (`sent` says what it carried)."""
        self.generation += 1
        self.last_nonce = nonce
        self.nonce_status[nonce] = "STALE"
        live = self.sent.nonces() | {nonce}
        self.nonce_status = {n: s for n, s in self.nonce_status.items() if n in live}

    def ack(self, nonce: str) -> None:
        if nonce in self.nonce_status:
            self.nonce_status[nonce] = "SYNCED"
        self.error = ""
        self._fold()

    def _fold(self) -> None:
        """Delta: once everything sent is ACKed and it mirrors a snapshot's resources, hold that
        map (shared with every stream in sync) instead of entries of its own."""
        mirror = self.mirror
        if mirror is None or mirror[1] != self.generation or set(self.nonce_status.values()) != {"SYNCED"}:
            return
        available = mirror[0]
        removed = {n: e for n in self.names - available.keys() if (e := self.sent.get(n)) is not None}
        self.sent.rebase(available, self.last_nonce, removed)
        if not self.wildcard:
            self.sent.keep_only(self.names)
        self.nonce_status = {n: "SYNCED" for n in self.sent.nonces() | {self.last_nonce}}

    def fold_answers(self) -> None:
        """SotW (type_urls.CHANGES_ONLY): once every answer is ACKed, what was sent is one shared map
        under the last nonce again."""
        if set(self.nonce_status.values()) == {"SYNCED"}:
            self.sent.fold(self.last_nonce)
            self.nonce_status = {self.last_nonce: "SYNCED"}

    def nack(self, nonce: str, message: str) -> None:
        if nonce in self.nonce_status:
            self.nonce_status[nonce] = "ERROR"
        self.error = message

    def status_of(self, name: str) -> tuple[str, Status]:
        entry = self.sent.get(name)
        if entry is None:
            return "", "NOT_SENT"
        version, nonce = entry
        return version, self.nonce_status.get(nonce, "SYNCED")


_nonces = itertools.count(1)


def next_nonce() -> str:
    return str(next(_nonces))


def _empty_assignment(name: str) -> Resource:
    message = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    return Resource(name, "missing", pack(name, message).packed, message)


def _selection(state: TypeState, snapshot: Snapshot | None) -> Selection:
    """A SotW answer's resources and version_info, computed once per snapshot and subscription and
    shared by the streams that subscribe alike. EDS names we do not know get an empty assignment so
    that a warming cluster is never left waiting (Envoy #9934)."""
    if snapshot is None:
        return _select(state.type_url, {}, sorted(state.names))
    wildcard, names = state.wildcard, frozenset(state.names)
    return snapshot.memo(
        ("selection", state.type_url, wildcard, names),
        lambda: _select(state.type_url, snapshot.of_type(state.type_url), state.subscribed(snapshot)),
    )


def _select(type_url: str, available: dict[str, Resource], names: list[str]) -> Selection:
    out: dict[str, Resource]
    if len(names) == len(available) and all(n in available for n in names):
        # All of them (a wildcard, or every EDS cluster): the snapshot's own map, so that what a
        # stream was sent is that map, which later snapshots keep while the type is unchanged and
        # make-before-break checks by identity (Sent.covers).
        out = available
    else:
        out = {n: available[n] for n in names if n in available}
        if type_url == type_urls.ENDPOINT:
            for name in names:
                if name not in out:
                    out[name] = _empty_assignment(name)
    return Selection(out, versions_digest({n: r.version for n, r in out.items()}))


def clusters_settled(states: dict[str, TypeState], snapshot: Snapshot | None) -> bool:
    """Make-before-break: True once the client has answered the latest clusters and the endpoints
    of every EDS cluster, so listeners and routes that point at them may follow. Routes are not
    warmed by Envoy: a route pushed before its cluster finished warming fails requests."""
    if snapshot is None:
        return True
    for type_url in (type_urls.CLUSTER, type_urls.ENDPOINT):
        state = states.get(type_url)
        if state is not None and not state.holds(snapshot):
            return False
    return True


GATED = (type_urls.LISTENER, type_urls.SCOPED_ROUTE, type_urls.ROUTE)


class _Stream:
    """What both protocol variants share: per-type state, ADS order on pushes, and holding listener
    and route updates until the clusters they may use have settled."""

    def __init__(self) -> None:
        self.types: dict[str, TypeState] = {}
        self.deferred: set[str] = set()  # listener/route updates waiting for clusters to settle

    def _push(self, state: TypeState, snapshot: Snapshot | None) -> Reply | None:
        """The response (or None) that brings one type up to date after a snapshot change."""
        raise NotImplementedError

    def on_snapshot(self, snapshot: Snapshot | None) -> list[Reply]:
        """Responses for every subscribed type whose content changed, in ADS order."""
        out: list[Reply] = []
        for type_url in type_urls.ORDER:
            state = self.types.get(type_url)
            if state is None or not state.requested:
                continue
            if type_url in GATED and not clusters_settled(self.types, snapshot):
                self.deferred.add(type_url)
                continue
            response = self._push(state, snapshot)
            if response is None:
                continue
            out.append(response)
            eds = self.types.get(type_urls.ENDPOINT)
            if type_url == type_urls.CLUSTER and eds is not None and snapshot is not None:
                # A changed EDS cluster leaves warming only on a fresh EDS answer, even when its
                # endpoints did not change: resend the assignment of every changed cluster.
                eds.force_resend(state.last_changed & snapshot.of_type(type_urls.ENDPOINT).keys())
        return out

    def _handed_over_listeners(self, snapshot: Snapshot | None) -> frozenset[str]:
        """Listeners the client holds that the snapshot no longer has: kept by a hand-over until
        the ones replacing them are accepted. Their route scopes stay as long (a scope is named
        after its listener: build._scope_names), or the listener still serving would find none."""
        lds = self.types.get(type_urls.LISTENER)
        if lds is None:
            return _NO_NAMES
        current = snapshot.of_type(type_urls.LISTENER) if snapshot else {}
        return frozenset(n for n in lds.sent.names() if n not in current and lds.sent.version(n) != "removed")

    def _scopes_follow(self, snapshot: Snapshot | None) -> list[Reply]:
        """After an answer of listeners: the route scopes of a listener it removed go too."""
        state = self.types.get(type_urls.SCOPED_ROUTE)
        if state is None or not state.requested:
            return []
        response = self._push(state, snapshot)
        return [response] if response is not None else []

    def _held_back(self, type_url: str, first: bool, snapshot: Snapshot | None) -> bool:
        """Whether an answer to a request for a listener or route type must wait, as a push does,
        for the clusters of the current snapshot to settle (a request can meet a snapshot newer
        than the stream's last push). The first request of a type is answered: Envoy asks for
        listeners once its clusters are warm."""
        if first or type_url not in GATED or clusters_settled(self.types, snapshot):
            return False
        self.deferred.add(type_url)
        return True

    def _flush_deferred(self, snapshot: Snapshot | None) -> list[Reply]:
        if not self.deferred or not clusters_settled(self.types, snapshot):
            return []
        deferred, self.deferred = self.deferred, set()
        out = []
        for type_url in GATED:
            if type_url in deferred:
                response = self._push(self.types[type_url], snapshot)
                if response is not None:
                    out.append(response)
        return out


# --------------------------------------------------------------------------------------------
# State of the world


class SotwStream(_Stream):
    def _push(self, state: TypeState, snapshot: Snapshot | None) -> Reply | None:
        return self._respond(state, snapshot, always=False)

    def on_request(self, request: discovery_pb2.DiscoveryRequest, snapshot: Snapshot | None) -> list[Reply]:
        state = self.types.setdefault(request.type_url, TypeState(request.type_url))
        if request.response_nonce and request.response_nonce != state.last_nonce:
            return []  # stale nonce: superseded by a response the client has not seen yet
        first = not state.requested
        state.requested = True
        if first and request.type_url == type_urls.LISTENER and request.version_info and snapshot is not None:
            # A node that reconnects names the listeners it holds (their version): the hand-over
            # keeps them until it accepts the ones replacing them.
            state.accepted = snapshot.listeners_of_version(request.version_info) or state.accepted
        accepted = False
        if request.response_nonce:
            if request.HasField("error_detail") and request.error_detail.code != 0:
                state.nack(request.response_nonce, request.error_detail.message)
                if request.type_url in type_urls.CHANGES_ONLY:
                    # Envoy applies such an answer resource by resource up to the one it rejects:
                    # what it carried is owed again with the next answer (not resent as it is:
                    # the next answer comes with a change, or a new subscription).
                    state.force_resend({n for n, (_, nonce) in state.sent.items() if nonce == request.response_nonce})
            else:
                state.ack(request.response_nonce)
                if request.type_url in type_urls.CHANGES_ONLY:
                    state.fold_answers()
                accepted = request.type_url == type_urls.LISTENER
                if accepted:
                    state.accepted = state.sent.base  # the answer ACKed: the last one (stale nonces end above)
        previous = state.names, state.wildcard
        self._update_subscription(state, list(request.resource_names))
        added = state.names - previous[0]
        if state.names != previous[0] or state.wildcard != previous[1]:
            state.generation += 1
        out = []
        if first or added or (state.wildcard and not previous[1]):
            state.force_resend(added)
            if self._held_back(request.type_url, first, snapshot):
                state.last_version = ""  # answered in full once released
            else:
                response = self._respond(state, snapshot, always=True)
                if response is not None:
                    out.append(response)
        elif (
            accepted
            and state.accepted.keys() - _selection(state, snapshot).resources.keys()
            and not self._held_back(request.type_url, False, snapshot)
        ):
            # The listeners that replace the ones a hand-over kept are accepted: those go now (or
            # once the clusters of a newer snapshot settled, as any listener update), and their
            # route scopes after them.
            response = self._respond(state, snapshot, always=False)
            if response is not None:
                out += [response, *self._scopes_follow(snapshot)]
        return out + self._flush_deferred(snapshot)

    @staticmethod
    def _update_subscription(state: TypeState, names: list[str]) -> None:
        if state.type_url in type_urls.FULL_STATE:
            if not names and not state.explicit:
                state.wildcard = True  # legacy wildcard: never named anything
                state.names = _NO_NAMES
                return
            state.explicit = True
            state.wildcard = WILDCARD in names
            state.names = shared_names(n for n in names if n != WILDCARD)
        else:
            state.explicit = state.explicit or bool(names)
            state.names = shared_names(names)

    def _respond(self, state: TypeState, snapshot: Snapshot | None, *, always: bool) -> Reply | None:
        selection = _selection(state, snapshot)
        if state.type_url == type_urls.LISTENER:
            selection = _handed_over(selection, state)
        elif state.type_url == type_urls.SCOPED_ROUTE:
            selection = _scopes_kept(selection, state, self._handed_over_listeners(snapshot))
        resources, version = selection.resources, selection.version
        forced = state.force & resources.keys()
        if not always and not forced:
            if version == state.last_version:
                return None
            unchanged = all(state.sent.version(n) == r.version for n, r in resources.items())
            if unchanged and state.type_url not in type_urls.FULL_STATE:
                # Only removals: a shrinking set of routes or endpoints needs no response.
                state.last_version = version
                return None
        state.forget_forced(resources.keys())
        nonce = next_nonce()
        state.last_version = version
        state.last_changed = shared_names(n for n, r in resources.items() if state.sent.version(n) != r.version)
        carried = state.last_changed | forced
        if state.type_url in type_urls.CHANGES_ONLY and len(carried) < len(resources):
            state.sent.advance(resources, nonce, carried)
            state.recorded(nonce)
            return replies.sotw(_changes(state.type_url, selection, carried, snapshot), state.type_url, nonce)
        state.record_all(nonce, resources)
        return replies.sotw(selection, state.type_url, nonce)


def _changes(type_url: str, selection: Selection, names: frozenset[str], snapshot: Snapshot | None) -> Selection:
    """An answer of `names` alone, under the version of the whole selection: computed once per
    snapshot for the streams in the same state."""

    def select() -> Selection:
        return Selection({n: r for n, r in selection.resources.items() if n in names}, selection.version)

    if snapshot is None:
        return select()
    # The selection's version digests its names and versions: equal versions, equal answers.
    return snapshot.memo(("changes", type_url, selection.version, names), select)


def _scopes_kept(selection: Selection, state: TypeState, listeners: frozenset[str]) -> Selection:
    """A SotW answer of route scopes keeps those of `listeners` (kept by a hand-over) it was sent."""
    if not listeners:
        return selection
    kept = {
        n: r for n, r in state.sent.base.items() if n not in selection.resources and n.rpartition("#")[0] in listeners
    }
    if not kept:
        return selection
    resources = {**selection.resources, **kept}
    return Selection(resources, versions_digest({n: r.version for n, r in resources.items()}))


def _handed_over(selection: Selection, state: TypeState) -> Selection:
    """Make-before-break between listeners: an answer that brings listeners the client has not
    accepted also keeps the accepted ones it drops, until the new ones are accepted. A listener is
    named after its port: a port edited is a new listener and the old one's removal, and an Envoy
    that cannot bind the new port (taken, or privileged) would otherwise serve neither."""
    accepted = state.accepted
    wanted = state.wildcard or not state.explicit
    kept = {n: r for n, r in accepted.items() if n not in selection.resources and (wanted or n in state.names)}
    if not kept or selection.resources.keys() <= accepted.keys():
        return selection
    resources = {**selection.resources, **kept}
    return Selection(resources, versions_digest({n: r.version for n, r in resources.items()}))


# --------------------------------------------------------------------------------------------
# Delta (incremental)


class DeltaStream(_Stream):
    def _push(self, state: TypeState, snapshot: Snapshot | None) -> Reply | None:
        return self._respond(state, snapshot, reply_if_empty=False)

    def on_request(self, request: discovery_pb2.DeltaDiscoveryRequest, snapshot: Snapshot | None) -> list[Reply]:
        state = self.types.get(request.type_url)
        first = state is None
        if state is not None and (request.resource_names_subscribe or request.resource_names_unsubscribe):
            state.generation += 1  # what the client asks for changes
        elif state is None:
            state = self.types[request.type_url] = TypeState(request.type_url)
            state.requested = True
            subscribe = list(request.resource_names_subscribe)
            state.wildcard = not subscribe or WILDCARD in subscribe
            if request.type_url not in type_urls.FULL_STATE and not subscribe:
                state.wildcard = False
            for name, version in request.initial_resource_versions.items():
                state.sent[name] = (version, "")
        # Delta answers every response on its own: an ACK of an earlier response that crossed a
        # later one (a subscription change answered meanwhile) still counts for what it carried.
        if request.response_nonce and request.response_nonce in state.nonce_status:
            if request.HasField("error_detail") and request.error_detail.code != 0:
                state.nack(request.response_nonce, request.error_detail.message)
            else:
                state.ack(request.response_nonce)
        # Subscription changes count even on a stale nonce.
        if request.resource_names_subscribe or request.resource_names_unsubscribe:
            self._update_subscription(state, request, first)
        out = []
        if (request.type_url not in self.deferred or first) and not self._held_back(request.type_url, first, snapshot):
            response = self._respond(state, snapshot, reply_if_empty=first and state.wildcard)
            if response is not None:
                out.append(response)
                if request.type_url == type_urls.LISTENER and response.removed:
                    out += self._scopes_follow(snapshot)
        return out + self._flush_deferred(snapshot)

    @staticmethod
    def _update_subscription(state: TypeState, request: discovery_pb2.DeltaDiscoveryRequest, first: bool) -> None:
        names = set(state.names)
        forced: set[str] = set()  # the client may have forgotten them: always answer
        for name in request.resource_names_subscribe:
            if name == WILDCARD:
                state.wildcard = True
                continue
            names.add(name)
            if not first:
                forced.add(name)
        unsubscribed, answered = set(), set()
        for name in request.resource_names_unsubscribe:
            if name == WILDCARD:
                if state.wildcard:
                    # What it had through the wildcard alone it may drop: subscribing `*` again
                    # sends it anew.
                    for had in state.sent.names() - names:
                        state.sent.pop(had)
                state.wildcard = False
                continue
            if state.wildcard and name in names:
                # Subscribed by name and by the wildcard: the client cannot know whether it keeps
                # the resource, so it is told (sent again if the wildcard holds it, else removed).
                answered.add(name)
            names.discard(name)
            unsubscribed.add(name)
            if not state.wildcard:
                state.sent.pop(name)
        state.force_resend(forced)
        state.forget_forced(unsubscribed)
        state.force_resend(answered)
        if names != state.names:
            state.names = shared_names(names)

    def _respond(self, state: TypeState, snapshot: Snapshot | None, *, reply_if_empty: bool) -> Reply | None:
        available = snapshot.of_type(state.type_url) if snapshot else {}
        mirror = state.mirror
        candidates: AbstractSet[str]
        if mirror is not None and mirror[1] == state.generation and snapshot is not None:
            # What the client has mirrors an earlier snapshot: only what changed since can differ.
            candidates = snapshot.changed_since(state.type_url, mirror[0]) | state.force
        else:
            candidates = state.names | state.sent.names() | (available.keys() if state.wildcard else set())
        send: dict[str, Resource] = {}
        removed: list[str] = []
        for name in sorted(candidates):
            resource = available.get(name)
            known = state.sent.version(name)
            if resource is None:
                if ((name in state.sent or name in state.names) and known != "removed") or name in state.force:
                    removed.append(name)
            elif (state.wildcard or name in state.names) and (known != resource.version or name in state.force):
                send[name] = resource
        if state.type_url == type_urls.LISTENER:
            removed = self._hand_over(state, available, send, removed)
        # Kept back (not removed): looked at again on every answer, never mirrored.
        withheld = bool(snapshot is not None and snapshot.withheld)
        if removed and withheld:  # the translator configurations of withheld fleets (of any: none)
            assert snapshot is not None
            kept_back = snapshot.withheld
            fleet_of = contract.translator_config_fleet
            removed = [] if ANY_FLEET in kept_back else [n for n in removed if fleet_of(n) not in kept_back]
        if state.type_url == type_urls.SCOPED_ROUTE and removed:
            listeners = self._handed_over_listeners(snapshot)
            kept = [n for n in removed if n.rpartition("#")[0] in listeners]
            removed = [n for n in removed if n not in kept]
            withheld = withheld or bool(kept)
        state.forget_forced(send.keys() | set(removed))
        state.last_changed = shared_names(n for n, r in send.items() if state.sent.version(n) != r.version)
        if not send and not removed and not reply_if_empty:
            state.mirror = (available, state.generation) if not state.arriving and not withheld else None
            return None
        nonce = next_nonce()
        state.record_sent(nonce, {n: r.version for n, r in send.items()})
        for name in removed:
            if name in state.names:
                state.sent[name] = ("removed", nonce)  # told: it does not exist
            else:
                state.sent.pop(name)
        state.mirror = (available, state.generation) if not state.arriving and not withheld else None
        return replies.delta(snapshot.version if snapshot else "", state.type_url, nonce, send, removed)

    @staticmethod
    def _hand_over(
        state: TypeState, available: Mapping[str, Resource], send: Mapping[str, Resource], removed: list[str]
    ) -> list[str]:
        """Make-before-break between listeners (_handed_over): removals wait while listeners sent new
        (and still served) are not accepted; the answer to the ACK that accepts them makes them (no
        mirror meanwhile, so that it looks at every name again)."""
        outstanding = ("STALE", "ERROR")  # sent and not accepted (an unsubscribed name is neither)
        arriving = {n for n in state.arriving if n in available and state.status_of(n)[1] in outstanding}
        arriving |= {n for n in send if state.sent.version(n) in ("", "removed")}
        state.arriving = frozenset(arriving)
        return [] if arriving else removed
