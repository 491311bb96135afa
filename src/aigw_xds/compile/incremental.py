"""Incremental compile: what one AIGatewayRoute contributes to its Gateway, kept between compiles
and reused while nothing it read has changed.

A route is compiled on a scratch CompileContext whose resource view records every read as a token
(a resource key, a kind, a policy kind and target, a label value) and whose status book keeps
the conditions set. The result, a RouteUnit, holds what the route adds to the Gateway: its
attachment, its rules, its translator entries (backends, costs, models, budgets), its diagnostics,
conditions and closure. Runs of consecutive units are merged into one Contribution each, which
is put on the Gateway's context in the order a compile without the memo would have produced, so
the two never differ (tests compare them on random edit sequences). CompileMemo keeps the units,
an index from token to units, and the runs' contributions; a new resource set invalidates the
units that read anything that changed since the last one, and with them their runs.
"""

from __future__ import annotations

import bisect
import zlib
from array import array
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain, islice
from typing import Any, TypeVar

import aigw_contract as contract
from aigw.translator.v1 import config_pb2

from ..diagnostics import Diagnostic
from ..keys import ResourceKey
from ..resources import Loaded, ResourceSet, ResourceView, found_key, policy_targets
from ..runs import RUN_LENGTH, Run, runs
from ..wire import Serialized, entries, string_field
from . import ir
from .backend_traits import FleetBackends, backend_configs
from .budgets import add_budgets
from .context import CompileContext
from .status import NO_CONDITIONS, Condition, Conditions, Slot, StatusBook

Token = Hashable
Rules = list[tuple[tuple[str, ...], ir.Rule]]
T = TypeVar("T")


class RecordingView:
    """A resource view that notes what was read, as invalidation tokens."""

    def __init__(self, inner: ResourceView) -> None:
        self.inner = inner
        self.tokens: set[Token] = set()

    def get(self, kind: str, namespace: str, name: str) -> Loaded[Any] | None:
        loaded = self.inner.get(kind, namespace, name)
        self.tokens.add(("key", found_key(loaded, kind, namespace, name)))
        return loaded

    def of_kind(self, kind: str) -> Iterator[Loaded[Any]]:
        self.tokens.add(("kind", kind))
        return self.inner.of_kind(kind)

    def policies_for(self, policy_kind: str, target: ResourceKey) -> tuple[Loaded[Any], ...]:
        self.tokens.add(("policies", policy_kind, target))
        return self.inner.policies_for(policy_kind, target)

    def with_label(self, kind: str, label: str, namespace: str, value: str) -> tuple[Loaded[Any], ...]:
        self.tokens.add(("label", kind, label, namespace, value))
        return self.inner.with_label(kind, label, namespace, value)

    def is_bad(self, key: ResourceKey) -> bool:
        self.tokens.add(("key", key))
        return self.inner.is_bad(key)


@dataclass(frozen=True, slots=True)
class Effects:
    """What a piece of compiling did to the shared context. The closure is a tuple (of distinct
    keys), not a frozenset: only iterated, and a route's is kept per unit (10,000 of them)."""

    diagnostics: tuple[Diagnostic, ...] = ()
    status: Conditions = NO_CONDITIONS
    closure: tuple[ResourceKey, ...] = ()

    def apply(self, ctx: CompileContext) -> None:
        ctx.diagnostics.extend(self.diagnostics)
        ctx.status.put_all(self.status)
        ctx.closure.update(self.closure)


@dataclass(frozen=True, slots=True)
class RouteUnit:
    """One AIGatewayRoute's contribution to one Gateway."""

    gateway: Loaded[Any]  # the Gateway object it was compiled for (by identity)
    route: ResourceKey
    context_key: tuple[Any, ...]
    listeners: tuple[str, ...]  # the listeners it attaches to (none: not attached)
    attachment: Effects
    compiled: Effects
    rules: Rules
    # Its route costs as a serialized TranslatorConfig, and each of its backends serialized alone
    # (what backend_traits reads, and what backend_entries makes the backends' TranslatorConfig of):
    # what the Gateway's configuration is assembled from (copying 20,000 backend messages cost more
    # than all else an edit does).
    cost_entries: bytes = b""
    backend_configs: tuple[bytes, ...] = ()
    # Its models as a serialized TranslatorConfig holding them in route_models (route_models_entry;
    # a Model message is 500 bytes more, 10,000 of them).
    model_entries: bytes = b""
    rate_limits: tuple[config_pb2.RateLimit, ...] = ()
    tokens: tuple[Token, ...] = field(default=(), repr=False)  # distinct; only iterated
    run_mark: int = 0  # where runs of units end (runs.py): of the route's key


def translator_entries(scratch: config_pb2.TranslatorConfig) -> tuple[bytes, tuple[bytes, ...]]:
    """RouteUnit.cost_entries and .backend_configs of a route compiled onto `scratch`."""
    costs = config_pb2.TranslatorConfig(route_costs=scratch.route_costs).SerializeToString(deterministic=True)
    return costs, backend_configs(scratch)


BACKENDS = config_pb2.TranslatorConfig.BACKENDS_FIELD_NUMBER
ROUTE_MODELS = config_pb2.TranslatorConfig.ROUTE_MODELS_FIELD_NUMBER


@dataclass(frozen=True, slots=True)
class Contribution:
    """What a run of consecutive route units adds to their Gateway, merged: putting it on the
    Gateway is the same as putting each unit's on in turn (every part merges associatively). The
    memo keeps runs whose units are unchanged, so an edit merges again only the runs it touched."""

    attachment: MergedEffects  # every unit's, attached or not
    compiled: MergedEffects  # the attached units' only, as the rest below
    # The attached routes' units, in order, whose entries (route_entries: each route's backends,
    # route costs and models) the parts of a translator configuration served in parts are made of;
    # and each stretch of them that goes to one part (translator_part): the part, the first unit,
    # the end. The entries are not kept joined here: the served parts hold them so (2.8 MB more at
    # 10,000 routes, a copy of what the units and the parts hold).
    attached: tuple[RouteUnit, ...]
    part_spans: array[int]
    part_mask: int  # bit p set: some of its routes are in part p
    cost_entries: bytes  # the attached routes' route costs, in order (the Gateway's message holds them)
    backends: FleetBackends
    rate_limits: tuple[config_pb2.RateLimit, ...]
    attached_routes: frozenset[ResourceKey]
    # Per attached route: the listeners it attaches to, and its rules with their hostnames.
    placed: tuple[tuple[tuple[str, ...], Rules], ...]
    # Every attached route's rules, in order: the run a virtual host takes whole when all of them
    # belong to it (the build keeps what it makes of a run while the run is this object's).
    rules: Run[ir.Rule]
    listener_sets: frozenset[tuple[str, ...]]  # the attached routes' distinct `placed` listeners
    hostless: bool  # no rule names a hostname


def contribution(units: Sequence[RouteUnit]) -> Contribution:
    attached = tuple(u for u in units if u.listeners)
    placed = tuple((u.listeners, u.rules) for u in attached)
    configs = tuple(chain.from_iterable(u.backend_configs for u in attached))
    spans = _part_spans(attached)
    return Contribution(
        attachment=merged_effects([u.attachment for u in units]),
        compiled=merged_effects([u.compiled for u in attached]),
        attached=attached,
        part_spans=spans,
        part_mask=sum({1 << part for part in spans[::3]}),
        cost_entries=b"".join(u.cost_entries for u in attached),
        backends=FleetBackends.of(configs),
        rate_limits=tuple(chain.from_iterable(u.rate_limits for u in attached)),
        attached_routes=frozenset(u.route for u in attached),
        placed=placed,
        rules=Run(rule for _, rules in placed for _, rule in rules),
        listener_sets=frozenset(listeners for listeners, _ in placed),
        hostless=not any(hosts for _, rules in placed for hosts, _ in rules),
    )


def parts_changed(before: Sequence[Contribution], now: Sequence[Contribution]) -> int:
    """The parts of a translator configuration (a bit each) that `now`'s contributions may make
    otherwise than `before`'s. As many as before (an edit that added or removed no route): the
    parts where a contribution in some place holds other entries than the one there before (an
    edited route's part; a run's other routes are in parts of their own). Else those any
    contribution added or dropped has routes in; every part when the contributions both have are
    not in the same order."""
    if len(before) == len(now):
        changed = 0
        for was, new in zip(before, now, strict=True):
            if was is not new:
                changed |= _parts_differing(was, new)
        return changed
    ids_before, ids_now = {id(c) for c in before}, {id(c) for c in now}
    changed = 0
    for c in now:
        if id(c) not in ids_before:
            changed |= c.part_mask
    for c in before:
        if id(c) not in ids_now:
            changed |= c.part_mask
    common_before = [c for c in before if id(c) in ids_now]
    common_now = [c for c in now if id(c) in ids_before]
    if not all(a is b for a, b in zip(common_before, common_now, strict=True)):
        return (1 << contract.TRANSLATOR_CONFIG_PARTS) - 1
    return changed


def _parts_differing(a: Contribution, b: Contribution) -> int:
    """The parts (a bit each) in which two contributions hold different entries."""
    of_a, of_b = _entries_by_part(a), _entries_by_part(b)
    return sum(1 << part for part in of_a.keys() | of_b.keys() if of_a.get(part) != of_b.get(part))


def _entries_by_part(c: Contribution) -> dict[int, bytes]:
    pieces: dict[int, list[bytes]] = defaultdict(list)
    for part, start, end in part_stretches(c):
        pieces[part].extend(stretch_entries(c, start, end))
    return {part: b"".join(piece) for part, piece in pieces.items()}


def part_stretches(c: Contribution) -> Iterator[tuple[int, int, int]]:
    """Contribution.part_spans read as (part, first, end), a stretch of its attached units in one
    part each."""
    spans = c.part_spans
    return zip(spans[::3], spans[1::3], spans[2::3], strict=True)


def stretch_entries(c: Contribution, first: int, end: int) -> Iterator[bytes]:
    """The entries (route_entries) of a stretch of the contribution's attached units."""
    return map(route_entries, islice(c.attached, first, end))


def translator_part(route: ResourceKey) -> int:
    """The part of a translator configuration served in parts (contract.TRANSLATOR_CONFIG_PARTS)
    that holds a route's backends, route costs and models: a hash of the route's key."""
    return zlib.crc32(route.ref.encode()) % contract.TRANSLATOR_CONFIG_PARTS


def route_models_entry(route: ResourceKey, models: Iterable[config_pb2.Model]) -> bytes:
    """RouteUnit.model_entries of a route's models: nothing for a route that names none."""
    listed = [model.SerializeToString(deterministic=True) for model in models]
    if not listed:
        return b""
    route_models = string_field(1, route.namespace) + string_field(2, route.name) + entries(3, listed)
    return entries(ROUTE_MODELS, [route_models])


def route_entries(unit: RouteUnit) -> bytes:
    """What a route puts in its part of a translator configuration served in parts, as a
    serialized TranslatorConfig: its backends, route costs and models."""
    return entries(BACKENDS, unit.backend_configs) + unit.cost_entries + unit.model_entries


def _part_spans(units: Sequence[RouteUnit]) -> array[int]:
    """Contribution.part_spans of the attached units."""
    spans = array("I")
    for end, unit in enumerate(units, 1):
        part = translator_part(unit.route)
        if not (spans and spans[-3] == part):  # a new stretch begins
            spans.extend((part, end - 1, end))
        spans[-1] = end
    return spans


@dataclass(frozen=True, slots=True)
class MergedEffects:
    """The effects of several pieces applied in turn, as one; their conditions as they are, which a
    book takes as layers (StatusBook.put_layers)."""

    diagnostics: tuple[Diagnostic, ...]
    status: tuple[Conditions, ...]
    closure: tuple[ResourceKey, ...]  # distinct


def merged_effects(effects: Sequence[Effects]) -> MergedEffects:
    status = tuple(e.status for e in effects if e.status is not NO_CONDITIONS)
    diagnostics = tuple(chain.from_iterable(e.diagnostics for e in effects))
    return MergedEffects(diagnostics, status, tuple(set().union(*(e.closure for e in effects))))


def apply_merged_effects(ctx: CompileContext, merged: Sequence[MergedEffects]) -> None:
    ctx.diagnostics.extend(chain.from_iterable(m.diagnostics for m in merged))
    ctx.status.put_layers(*(m.status for m in merged))
    ctx.closure.update(*(m.closure for m in merged))


@dataclass(frozen=True, slots=True)
class Applied:
    """What apply_contributions added to the Gateway's translator configuration."""

    backends: FleetBackends  # what the fleet's passes read of the backends
    # The route costs as merged, in the routes' order (the Gateway's TranslatorConfig holds them).
    cost_entries: bytes


def apply_contributions(
    ctx: CompileContext, translator: config_pb2.TranslatorConfig, contributions: Sequence[Contribution]
) -> Applied:
    """What the routes compiled to (their runs' contributions, in order), onto their Gateway's
    context and translator configuration (its route costs and budgets; see Applied): every route's
    attachment effects, then what the attached ones compiled."""
    apply_merged_effects(ctx, [c.attachment for c in contributions])
    apply_merged_effects(ctx, [c.compiled for c in contributions])
    costs = b"".join(c.cost_entries for c in contributions)
    translator.MergeFromString(costs)
    budgets = [b for c in contributions for b in c.rate_limits]
    if budgets:
        add_budgets(translator, budgets)
    backends = FleetBackends.merged([c.backends for c in contributions])
    return Applied(backends, costs)


def context_key(
    ctx: CompileContext, translator: config_pb2.TranslatorConfig, proxy: ir.Endpoint | None
) -> tuple[Any, ...]:
    """What a route's compile reads of its Gateway's context besides resources (`proxy`: the
    Gateway's forward proxy)."""
    return (
        ctx.placeholder_secrets,
        translator.name,
        translator.root_prefix,
        tuple(c.SerializeToString(deterministic=True) for c in translator.global_costs),
        proxy,
    )


def scratch_context(ctx: CompileContext, record: bool) -> CompileContext:
    inner = ctx.resources.inner if isinstance(ctx.resources, RecordingView) else ctx.resources
    return CompileContext(
        RecordingView(inner) if record else inner,
        StatusBook(),
        placeholder_secrets=ctx.placeholder_secrets,
        seal_secret=ctx.seal_secret,
        memo=ctx.memo,
        shared=ctx.shared,
        issuers=ctx.issuers,
    )


@dataclass(frozen=True, slots=True)
class _Shared:
    value: Any
    effects: Effects
    tokens: tuple[Token, ...]


# The key, in CompileContext.shared, of the conditions the shared pieces set: per slot, the pair
# (slot, condition) as a piece's Conditions holds it, which the Conditions of every route that
# replays the piece holds too (not a pair of its own: 10,000 routes replay 2,000 backends').
_PAIRS = object()
# The keys there of one of each equal token, and of each equal resource key in a closure, that the
# compile's pieces and units keep (10,000 routes read the same Gateway's policies, and each reads
# its backends as the backends' shared pieces do).
_TOKENS, _KEYS = object(), object()


def shared(ctx: CompileContext, key: Hashable, compute: Callable[[CompileContext], T]) -> T:
    """compute(scratch) once per `key` and compile of a Gateway, for every route that needs it (an
    AIServiceBackend ten thousand routes send to is resolved once, not ten thousand times); each
    call replays on `ctx` what computing it did (diagnostics, conditions, closure, reads), so the
    route's own effects are those of computing it there."""
    piece = ctx.shared.get(key)
    if piece is None:
        scratch = scratch_context(ctx, isinstance(ctx.resources, RecordingView))
        value = compute(scratch)
        piece = ctx.shared[key] = _Shared(value, effects_of(scratch), tokens_of(scratch))
        status = piece.effects.status
        ctx.shared.setdefault(_PAIRS, {}).update((pair[0], pair) for pair in chain(status.true, status.false))
    piece.effects.apply(ctx)
    if isinstance(ctx.resources, RecordingView):
        ctx.resources.tokens.update(piece.tokens)
    return piece.value  # type: ignore[no-any-return]


def effects_of(scratch: CompileContext) -> Effects:
    status = scratch.status.conditions()
    pairs = scratch.shared.get(_PAIRS)
    if pairs and status is not NO_CONDITIONS:
        status = Conditions(_pairs_kept(pairs, status.true), _pairs_kept(pairs, status.false))
    return Effects(tuple(scratch.diagnostics), status, _kept(scratch, _KEYS, scratch.closure))


def _kept(scratch: CompileContext, what: object, items: Iterable[T]) -> tuple[T, ...]:
    """`items`, each as the first equal one the compile kept (in scratch.shared[what])."""
    kept: dict[T, T] = scratch.shared.setdefault(what, {})
    return tuple(kept.setdefault(i, i) for i in items)


Pairs = tuple[tuple[Slot, Condition], ...]


def _pairs_kept(kept: dict[Slot, tuple[Slot, Condition]], pairs: Pairs) -> Pairs:
    """`pairs`, each replaced by the equal pair a shared piece's Conditions holds, if any."""
    return tuple(k if (k := kept.get(p[0])) is not None and k[1] is p[1] else p for p in pairs)


def tokens_of(*scratches: CompileContext) -> tuple[Token, ...]:
    reads = [s.resources.tokens for s in scratches if isinstance(s.resources, RecordingView)]
    if not reads:
        return ()
    return _kept(scratches[0], _TOKENS, reads[0] if len(reads) == 1 else set().union(*reads))


UnitKey = tuple[ResourceKey, ResourceKey]  # a Gateway's key and a route's
_LISTED = 32  # CompileMemo._index keeps the units of a token in a list up to this many


@dataclass(frozen=True, slots=True)
class _Layout:
    """A Gateway's routes as a compile laid them out in runs: what the next compile patches when an
    edit only changed what some routes are (none added or removed)."""

    generation: int  # the compile that made it
    gateway: Loaded[Any]
    key: tuple[Any, ...]  # the routes' context (context_key)
    units: list[RouteUnit]  # one per route, in the resource set's order
    positions: dict[ResourceKey, int]  # route key -> its place there
    ends: list[int]  # where each run ends (exclusive), ascending
    run_keys: list[tuple[int, ...]]  # each run's units' identities (held by `units`)
    contributions: list[Contribution]


@dataclass
class CompileMemo:
    """Route units kept between compiles of successive resource sets (one per control plane)."""

    # Per Gateway, its routes' units by route key.
    units: dict[ResourceKey, dict[ResourceKey, RouteUnit]] = field(default_factory=dict)
    # Per token, the units that read it: one unit's key alone, a list of up to _LISTED, or a set of
    # more (most tokens are read by one route, most others by a few: a set of one is 216 bytes, of
    # ten 728, a list of ten 200; 40,000 tokens at 10,000 routes).
    _index: dict[Token, UnitKey | list[UnitKey] | set[UnitKey]] = field(default_factory=dict)
    _previous: ResourceSet | None = None
    _gateways: set[ResourceKey] = field(default_factory=set)  # the Gateways compiled this time
    reused: int = 0
    compiled: int = 0
    patched: int = 0  # Gateways whose last layout this compile patched
    # Units are merged in runs of this many on average (runs.py).
    run_length: int = RUN_LENGTH
    _generation: int = 0
    _layouts: dict[ResourceKey, _Layout] = field(default_factory=dict)  # per Gateway, its last
    # The routes whose content changed since the last compile, when none was added or removed (None:
    # the routes' order may differ); and the units `begin` forgot.
    _edited: frozenset[ResourceKey] | None = None
    _dropped: set[UnitKey] = field(default_factory=set)
    _configs: dict[ResourceKey, tuple[Serialized, ...]] = field(default_factory=dict)  # per Gateway, served
    # Per Gateway, the contributions its last compile made the translator configuration's parts of,
    # and those parts.
    _parts: dict[ResourceKey, tuple[tuple[Contribution, ...], tuple[Serialized, ...]]] = field(default_factory=dict)

    def begin(self, resources: ResourceSet) -> None:
        """Forget the units that read anything that differs between the last set and this one."""
        self._gateways = set()
        self._generation += 1
        self._dropped = set()
        self.reused = self.compiled = self.patched = 0
        previous, self._previous = self._previous, resources
        self._edited = frozenset() if previous is resources else _edited_routes(previous, resources)
        if previous is None or previous is resources:
            return
        for token in changed_tokens(previous, resources):
            users = self._index.pop(token, None)
            for unit_key in (users,) if isinstance(users, tuple) else () if users is None else users:
                self._drop(unit_key)

    def end(self) -> None:
        """Forget the units of Gateways no compile used this time (Gateways that are gone)."""
        for gateway in set(self.units) - self._gateways:
            for route in list(self.units[gateway]):
                self._drop((gateway, route))
            del self.units[gateway]
        for gateway in set(self._layouts) - self._gateways:
            del self._layouts[gateway]
        for gateway in set(self._parts) - self._gateways:
            del self._parts[gateway]
        self._dropped = set()

    def same_config(self, gateway: ResourceKey, config: tuple[Serialized, ...]) -> tuple[Serialized, ...]:
        """`config` (a translator configuration's head and parts, GatewayIR.translator_served), each
        piece whose bytes are the same as the one served in its place (`served`) being that very
        object: the snapshot serving it holds the megabytes once (not once there and once in the
        IR), and sees at a glance what did not change. Compared with what is served, not with the
        last compiled: a compile that was not served (an error, since reverted) would otherwise
        leave a second copy for good."""
        served = self._configs.get(gateway, ())
        if len(served) != len(config):
            return config
        return tuple(s if s.packed == c.packed else c for s, c in zip(served, config, strict=True))

    def parts_kept(self, gateway: ResourceKey) -> tuple[tuple[Contribution, ...], tuple[Serialized, ...]]:
        """The contributions the Gateway's last compile made its translator configuration's parts
        of, and those parts (keep_parts)."""
        return self._parts.get(gateway, ((), ()))

    def keep_parts(
        self, gateway: ResourceKey, contributions: Sequence[Contribution], parts: Sequence[Serialized]
    ) -> None:
        """The contributions the Gateway's translator configuration's parts were made of, and the
        parts (none when it is served whole): the next compile makes again only the parts whose
        contributions changed (gateways._translator_parts)."""
        self._parts[gateway] = (tuple(contributions), tuple(parts))

    def served(self, configs: Mapping[ResourceKey, tuple[Serialized, ...]]) -> None:
        """The translator configurations served now, by Gateway (what same_config gives back)."""
        self._configs = dict(configs)

    def contributions_for(
        self,
        gateway: Loaded[Any],
        routes: Sequence[Loaded[Any]],
        key: tuple[Any, ...],
        compute: Callable[[Loaded[Any]], RouteUnit],
    ) -> list[Contribution]:
        """The routes' contributions to `gateway`, a run of units at a time (runs.py): each unit the
        kept one while nothing it read has changed and it was compiled for the same Gateway object
        and context (`key`), compute(route) otherwise; each run's contribution kept while its units
        are. When the last compile laid these routes out and only some changed, only their runs are
        merged again (not a pass over every route)."""
        self._gateways.add(gateway.key)
        layout = self._layouts.get(gateway.key)
        if (
            layout is not None
            and self._edited is not None
            and layout.generation == self._generation - 1
            and layout.gateway is gateway
            and layout.key == key
            and len(layout.units) == len(routes)
        ):
            touched = self._edited | {route for g, route in self._dropped if g == gateway.key}
            layout = self._patched(layout, routes, sorted(layout.positions[k] for k in touched), compute)
            self.patched += 1
        else:
            layout = self._laid_out(gateway, routes, key, compute, layout)
        self._layouts[gateway.key] = layout
        return layout.contributions

    def _patched(
        self,
        layout: _Layout,
        routes: Sequence[Loaded[Any]],
        places: list[int],
        compute: Callable[[Loaded[Any]], RouteUnit],
    ) -> _Layout:
        units, contributions, run_keys = list(layout.units), list(layout.contributions), list(layout.run_keys)
        for place in places:
            units[place] = self._compiled(layout.gateway, routes[place], compute)
        for run in sorted({bisect.bisect_right(layout.ends, place) for place in places}):
            members = units[layout.ends[run - 1] if run else 0 : layout.ends[run]]
            contributions[run] = contribution(members)
            run_keys[run] = tuple(map(id, members))
        self.reused += len(units) - len(places)
        return replace(layout, generation=self._generation, units=units, run_keys=run_keys, contributions=contributions)

    def _laid_out(
        self,
        gateway: Loaded[Any],
        routes: Sequence[Loaded[Any]],
        key: tuple[Any, ...],
        compute: Callable[[Loaded[Any]], RouteUnit],
        before: _Layout | None,
    ) -> _Layout:
        kept = self.units.setdefault(gateway.key, {})
        if any(u.gateway is not gateway or u.context_key != key for u in islice(kept.values(), 1)):
            for route_key in list(kept):  # compiled for another Gateway object or context: all of them
                self._drop((gateway.key, route_key))
        units = []
        compiled = self.compiled
        for route in routes:  # the unit of a route that is gone was forgotten by `begin` (its key changed)
            unit = kept.get(route.key)
            units.append(unit if unit is not None else self._compiled(gateway, route, compute))
        self.reused += len(units) - (self.compiled - compiled)
        earlier = dict(zip(before.run_keys, before.contributions, strict=True)) if before is not None else {}
        ends: list[int] = []
        run_keys: list[tuple[int, ...]] = []
        contributions: list[Contribution] = []
        for run in runs(units, (u.run_mark for u in units), self.run_length):
            run_keys.append(tuple(map(id, run)))
            contributions.append(earlier.get(run_keys[-1]) or contribution(run))
            ends.append((ends[-1] if ends else 0) + len(run))
        positions = {route.key: place for place, route in enumerate(routes)}
        return _Layout(self._generation, gateway, key, units, positions, ends, run_keys, contributions)

    def _compiled(
        self, gateway: Loaded[Any], route: Loaded[Any], compute: Callable[[Loaded[Any]], RouteUnit]
    ) -> RouteUnit:
        """compute(route), kept and indexed by what it read."""
        unit = self.units.setdefault(gateway.key, {})[route.key] = compute(route)
        self.compiled += 1
        unit_key = (gateway.key, route.key)  # one tuple in every set of the index it is in
        index = self._index
        for token in (*unit.tokens, ("key", route.key)):
            users = index.get(token)
            if users is None:
                index[token] = unit_key
            elif isinstance(users, tuple):
                if users != unit_key:
                    index[token] = [users, unit_key]
            elif isinstance(users, list):
                if unit_key not in users:
                    users.append(unit_key)
                    if len(users) > _LISTED:
                        index[token] = set(users)
            else:
                users.add(unit_key)
        return unit

    def _drop(self, unit_key: UnitKey) -> None:
        gateway, route = unit_key
        unit = self.units.get(gateway, {}).pop(route, None)
        if unit is None:
            return
        self._dropped.add(unit_key)
        index = self._index
        for token in (*unit.tokens, ("key", route)):
            users = index.get(token)
            if users is None:
                continue
            if isinstance(users, tuple):
                if users == unit_key:
                    del index[token]
                continue
            if isinstance(users, set):
                users.discard(unit_key)
            elif unit_key in users:
                users.remove(unit_key)
            if len(users) == 1:
                index[token] = next(iter(users))
            elif not users:
                del index[token]


def _edited_routes(before: ResourceSet | None, after: ResourceSet) -> frozenset[ResourceKey] | None:
    """The AIGatewayRoutes whose content changed between the sets, when every one of them is in both
    (then the routes are the same, in the same order); None when one was added or removed, or the
    changes are not known."""
    known = after.changes.since(before) if after.changes is not None and before is not None else None
    if known is None or before is None:
        return None
    edited = frozenset(k for k in known if k.kind == "AIGatewayRoute")
    return edited if all(k in before.items and k in after.items for k in edited) else None


def changed_tokens(before: ResourceSet, after: ResourceSet) -> set[Token]:
    """The tokens whose reads may answer differently in `after` than in `before`."""
    tokens: set[Token] = set()
    known = after.changes.since(before) if after.changes is not None else None  # the source knows them
    if known is not None:
        changed = set(known)
    else:
        both = before.items.keys() | after.items.keys()
        changed = {k for k in both if before.items.get(k) is not after.items.get(k)}
    changed |= before.bad_keys ^ after.bad_keys
    for key in changed:
        tokens.add(("key", key))
        tokens.add(("kind", key.kind))
        for loaded in (before.items.get(key), after.items.get(key)):
            if loaded is None:
                continue
            for target in policy_targets(loaded):
                tokens.add(("policies", key.kind, target))
            metadata = getattr(loaded.resource, "metadata", None)
            for label, value in (getattr(metadata, "labels", None) or {}).items():
                tokens.add(("label", key.kind, label, key.namespace, value))
    return tokens
