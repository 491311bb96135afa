"""Incremental compile: what one AIGatewayRoute contributes to its Gateway, kept between compiles
and reused while nothing it read has changed.

A route is compiled on a scratch CompileContext whose resource view records every read as a token
(a resource key, a kind, a policy kind and target, a label value) and whose status book keeps
the conditions set. The result, a RouteUnit, holds what the route adds to the Gateway: its
attachment, its rules, its translator entries (backends, costs, models, budgets), its diagnostics,
conditions and closure. `RouteUnit.apply` replays it onto the Gateway's context in the order a
compile without the memo would have produced it, so the two never differ (tests compare them on
random edit sequences). CompileMemo keeps the units and an index from token to units; a new
resource set invalidates the units that read anything that changed since the last one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, TypeVar

from aigw.translator.v1 import config_pb2

from ..diagnostics import Diagnostic
from ..keys import ResourceKey
from ..resources import Loaded, ResourceSet, ResourceView, policy_targets
from . import ir
from .backend_traits import backend_configs
from .budgets import add_budgets
from .context import CompileContext
from .status import Conditions, StatusBook

Token = Hashable
Rules = list[tuple[tuple[str, ...], ir.Rule]]
T = TypeVar("T")


class RecordingView:
    """A resource view that notes what was read, as invalidation tokens."""

    def __init__(self, inner: ResourceView) -> None:
        self.inner = inner
        self.tokens: set[Token] = set()

    def get(self, kind: str, namespace: str, name: str) -> Loaded[Any] | None:
        self.tokens.add(("key", ResourceKey(kind, namespace, name)))
        return self.inner.get(kind, namespace, name)

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
    """What a piece of compiling did to the shared context."""

    diagnostics: tuple[Diagnostic, ...] = ()
    status: Conditions = field(default_factory=Conditions)
    closure: frozenset[ResourceKey] = frozenset()

    def apply(self, ctx: CompileContext) -> None:
        apply_effects(ctx, (self,))


def apply_effects(ctx: CompileContext, effects: Sequence[Effects]) -> None:
    """Each piece's effects in turn, as if applied one by one (one pass per part of the context)."""
    ctx.diagnostics.extend(chain.from_iterable(e.diagnostics for e in effects))
    ctx.status.put_all(*(e.status for e in effects))
    ctx.closure.update(*(e.closure for e in effects))


@dataclass(frozen=True, slots=True)
class RouteUnit:
    """One AIGatewayRoute's contribution to one Gateway."""

    gateway: Loaded[Any]  # the Gateway object it was compiled for (by identity)
    context_key: tuple[Any, ...]
    listeners: tuple[str, ...]  # the listeners it attaches to (none: not attached)
    attachment: Effects
    compiled: Effects
    rules: Rules
    # Its backends and route costs as a serialized TranslatorConfig (the Gateway's merges these: a
    # pass in C, where copying 20,000 backend messages cost more than all else an edit does), and
    # each of its backends serialized alone (what backend_traits reads).
    translator_entries: bytes = b""
    backend_configs: tuple[bytes, ...] = ()
    models: tuple[config_pb2.Model, ...] = ()
    rate_limits: tuple[config_pb2.RateLimit, ...] = ()
    tokens: frozenset[Token] = field(default=frozenset(), repr=False)


def translator_entries(scratch: config_pb2.TranslatorConfig) -> tuple[bytes, tuple[bytes, ...]]:
    """RouteUnit.translator_entries and .backend_configs of a route compiled onto `scratch`."""
    entries = config_pb2.TranslatorConfig(backends=scratch.backends, route_costs=scratch.route_costs)
    return entries.SerializeToString(deterministic=True), backend_configs(scratch)


def apply_compiled(
    ctx: CompileContext, translator: config_pb2.TranslatorConfig, units: Sequence[RouteUnit]
) -> tuple[bytes, ...]:
    """What the attached routes compiled to, onto their Gateway's context and translator, in their
    order: the same as applying them one route at a time, in one pass per part. Returns the
    backends added, serialized (backend_traits.backend_configs)."""
    apply_effects(ctx, [u.compiled for u in units])
    translator.MergeFromString(b"".join(u.translator_entries for u in units))
    for unit in units:
        for model in unit.models:
            ctx.merge_model(model)
    budgets = [b for u in units for b in u.rate_limits]
    if budgets:
        add_budgets(translator, budgets)
    return tuple(chain.from_iterable(u.backend_configs for u in units))


def context_key(ctx: CompileContext, translator: config_pb2.TranslatorConfig) -> tuple[Any, ...]:
    """What a route's compile reads of its Gateway's context besides resources."""
    return (
        ctx.placeholder_secrets,
        translator.name,
        translator.root_prefix,
        tuple(c.SerializeToString(deterministic=True) for c in translator.global_costs),
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
    )


@dataclass(frozen=True)
class _Shared:
    value: Any
    effects: Effects
    tokens: frozenset[Token]


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
    piece.effects.apply(ctx)
    if isinstance(ctx.resources, RecordingView):
        ctx.resources.tokens |= piece.tokens
    return piece.value  # type: ignore[no-any-return]


def effects_of(scratch: CompileContext) -> Effects:
    return Effects(tuple(scratch.diagnostics), scratch.status.conditions(), frozenset(scratch.closure))


def tokens_of(*scratches: CompileContext) -> frozenset[Token]:
    return frozenset(t for s in scratches if isinstance(s.resources, RecordingView) for t in s.resources.tokens)


@dataclass
class CompileMemo:
    """Route units kept between compiles of successive resource sets (one per control plane)."""

    units: dict[tuple[ResourceKey, ResourceKey], RouteUnit] = field(default_factory=dict)
    _index: dict[Token, set[tuple[ResourceKey, ResourceKey]]] = field(default_factory=dict)
    _previous: ResourceSet | None = None
    _used: set[tuple[ResourceKey, ResourceKey]] = field(default_factory=set)
    reused: int = 0
    compiled: int = 0

    def begin(self, resources: ResourceSet) -> None:
        """Forget the units that read anything that differs between the last set and this one."""
        self._used = set()
        self.reused = self.compiled = 0
        previous, self._previous = self._previous, resources
        if previous is None or previous is resources:
            return
        for token in changed_tokens(previous, resources):
            for unit_key in self._index.pop(token, ()):
                self._drop(unit_key)

    def end(self) -> None:
        """Forget the units no compile used this time (routes or Gateways that are gone)."""
        for unit_key in set(self.units) - self._used:
            self._drop(unit_key)

    def unit(
        self,
        gateway: Loaded[Any],
        route: Loaded[Any],
        key: tuple[Any, ...],
        compute: Callable[[], RouteUnit],
    ) -> RouteUnit:
        unit_key = (gateway.key, route.key)
        self._used.add(unit_key)
        unit = self.units.get(unit_key)
        if unit is not None and unit.gateway is gateway and unit.context_key == key:
            self.reused += 1
            return unit
        if unit is not None:
            self._drop(unit_key)
        unit = compute()
        self.compiled += 1
        self.units[unit_key] = unit
        for token in unit.tokens | {("key", route.key)}:
            self._index.setdefault(token, set()).add(unit_key)
        return unit

    def _drop(self, unit_key: tuple[ResourceKey, ResourceKey]) -> None:
        unit = self.units.pop(unit_key, None)
        if unit is None:
            return
        for token in unit.tokens | {("key", unit_key[1])}:
            users = self._index.get(token)
            if users is not None:
                users.discard(unit_key)
                if not users:
                    del self._index[token]


def changed_tokens(before: ResourceSet, after: ResourceSet) -> set[Token]:
    """The tokens whose reads may answer differently in `after` than in `before`."""
    tokens: set[Token] = set()
    changed = {k for k in before.items.keys() | after.items.keys() if before.items.get(k) is not after.items.get(k)}
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
