"""The controller: resource sets in, published snapshots out.

For each recompile it decides, per fleet, what to serve: the new configuration when the Gateway
compiled cleanly, the last good one when anything the Gateway is built from is broken, nothing when
the Gateway was deleted. It is the only stateful piece between the pure stages and the server.
"""

from __future__ import annotations

import difflib
import gc
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from aigw_contract import TRANSLATORS_FLEET

from .api.spelling import CLOSENESS
from .compile import CompileResult, compile_resources
from .compile.context import IssuerMetadata
from .compile.excluding import without_invalid
from .compile.incremental import CompileMemo
from .compile.ir import GatewayIR
from .compile.policy_targets import CHECKED_TARGETS
from .diagnostics import Diagnostic
from .keys import ResourceKey, gateway_key
from .resources import Loaded, ResourceSet, as_route, policy_targets, target_refs
from .xds.build import BuildSettings, build_fleet, translator_fleet
from .xds.cache import ANY_FLEET, FleetResources, InconsistentSnapshot, Packer, SnapshotCache, make_snapshot
from .xds.scope_hold import MARGIN_S, RELEASE_RETRY_S, HeldScope, held_scopes, with_held

log = structlog.get_logger(__name__)

# What a host adds to "the Gateway compiled": its configuration can be served here. Given the
# Gateway as compiled, as served (None: not yet) and the resources, the errors that keep the served
# one (`run` refuses a listener moved to a port something else on the machine holds).
Admission = Callable[[GatewayIR, "GatewayIR | None", ResourceSet], tuple[Diagnostic, ...]]

# The configuration is hundreds of thousands of long-lived objects (resources, IR, Envoy messages),
# and a compile allocates many short-lived ones: with CPython's default thresholds (700, 10, 10)
# the collector walks the long-lived ones over and over (half the time of an edit at 10,000 routes,
# docs/performance.md). Fewer, larger young collections; reference counting frees the rest.
GC_THRESHOLDS = (50_000, 20, 20)


def _refs_dropped(then: Loaded[Any], now: Loaded[Any], served: frozenset[ResourceKey]) -> bool:
    """Whether an edit of a policy took away a reference it had (compared whole: group, kind, name,
    sectionName) to an object of `served` (a fleet's closure): its order, references added, an
    object deleted while the policy stayed as it was, are no such edit."""
    kept = set(_refs(now))
    return any(ref not in kept and target in served for ref, target in _refs(then).items())


def _refs(loaded: Loaded[Any]) -> dict[tuple[str, str, str, str | None], ResourceKey]:
    """A policy's target references, whole, with the object each names here (as_route)."""
    return {
        (ref.group, ref.kind, ref.name, getattr(ref, "sectionName", None)): as_route(
            ResourceKey(ref.kind, loaded.key.namespace, ref.name)
        )
        for ref in target_refs(loaded)
    }


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a configuration compiles and builds: most of what a
    first compile allocates outlives it, and the collector would walk it again and again (0.6 s of
    5.8 s at 10,000 routes, docs/performance.md). Reference counting frees what dies meanwhile; the
    collector finds any cycles once it runs again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def log_diagnostics(diagnostics: Iterable[Diagnostic]) -> None:
    """Each diagnostic a line of the log: an error's at error level, the others' at warning."""
    for diagnostic in diagnostics:
        (log.error if diagnostic.is_error else log.warning)("diagnostic", **diagnostic.log_fields())


@dataclass
class ApplyReport:
    published: list[str] = field(default_factory=list)  # fleets whose snapshot changed
    kept: list[str] = field(default_factory=list)  # fleets held at their last good config
    removed: list[str] = field(default_factory=list)
    diagnostics: tuple[Diagnostic, ...] = ()


def _closing(result: CompileResult) -> list[str]:
    """The failed fleets a SecurityPolicy in error (one that cannot be enforced) names: served closed
    (compile/excluding.py)."""
    return [
        fleet
        for fleet, closure in result.failed.items()
        if any(d.is_error and d.resource in closure and d.resource.kind == "SecurityPolicy" for d in result.errors)
    ]


class Controller:
    def __init__(
        self,
        cache: SnapshotCache,
        settings: BuildSettings,
        seal_secret: bytes | None = None,
        admission: Admission | None = None,
        envoy_drain_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        exclude_invalid: bool = False,
        withhold_incomplete: bool = False,
    ) -> None:
        self.cache = cache
        # serve's file mode: a fleet never served here that a document in error names (a route whose
        # parentRefs name its Gateway) is withheld, not served without it: Envoys that outlived a
        # restart keep what they serve. `run`, whose Envoy starts with it, serves the rest.
        self.withhold_incomplete = withhold_incomplete
        # Kubernetes mode: a Gateway with invalid objects is served without them (compile/excluding.py),
        # not held at a last good configuration only this process has.
        self.exclude_invalid = exclude_invalid
        self._excluding_memos: dict[str, CompileMemo] = {}  # those compiles' memos, per failing fleet
        self.settings = settings
        self.admission = admission
        self.last_good: dict[str, GatewayIR] = {}
        self.last_result: CompileResult | None = None
        # For the seal key of fleets that hold no credential of their own (compile.gateways).
        # Replicas that share one (Kubernetes mode: derived from the TLS Secret) build identical
        # translator configurations; otherwise random, chosen once per process.
        self._seal_secret = seal_secret or os.urandom(32)
        self.kept: set[str] = set()  # fleets held at their last good config by the latest apply
        self._memo = CompileMemo()  # what each route compiled to: an edit recompiles what it touches
        self._packer = Packer()  # each Envoy resource serialized once: an edit packs what it changed
        self._built: dict[str, FleetResources] = {}  # each fleet's last build: an edit assembles what it changed
        # The resources each fleet's last good configuration was built from (_lost: what a policy
        # targeted then). The set's own mapping, kept as it is: nothing is copied at a publish.
        self._built_from: dict[str, Mapping[ResourceKey, Loaded[Any]]] = {}
        # The route scopes each fleet's builds dropped, served on while Envoy drains (scope_hold.py).
        self._held: dict[str, dict[str, HeldScope]] = {}
        self._hold_s = envoy_drain_s + MARGIN_S if envoy_drain_s > 0 else 0.0
        self._clock = clock
        gc.set_threshold(*GC_THRESHOLDS)

    def apply(
        self, resources: ResourceSet, issuers: Mapping[str, IssuerMetadata] | None = None, quiet: bool = False
    ) -> ApplyReport:
        """Compile `resources` (with what is known of the OAuth issuers MCPRoutes name without jwks)
        and publish each fleet that compiled. `quiet`: the diagnostics are not logged (the caller
        says them, or logs them with log_diagnostics)."""
        with collector_paused():
            return self._apply(resources, issuers or {}, quiet)

    def _apply(self, resources: ResourceSet, issuers: Mapping[str, IssuerMetadata], quiet: bool) -> ApplyReport:
        result = compile_resources(resources, seal_secret=self._seal_secret, memo=self._memo, issuers=issuers)
        if self.exclude_invalid and result.failed:
            result = without_invalid(result, resources, self._seal_secret, self._excluding_memos, issuers)
        elif closing := _closing(result):  # (file mode too: never a last good configuration open to all)
            result = without_invalid(
                result, resources, self._seal_secret, self._excluding_memos, issuers, fleets=closing
            )
        refusals = self._refusals(result, resources)
        # (Kubernetes mode serves a Gateway without what is invalid, never withholds it for that.)
        incomplete = (
            self._incomplete(resources, result) if self.withhold_incomplete and not self.exclude_invalid else {}
        )
        if refusals:
            result = replace(result, diagnostics=result.diagnostics + tuple(d for ds in refusals.values() for d in ds))
        self.last_result = result
        report = ApplyReport(diagnostics=result.diagnostics)
        if not quiet:
            log_diagnostics(result.diagnostics)
        for fleet, gateway in result.gateways.items():
            if fleet in refusals:
                if fleet in self.last_good:
                    reason = "it cannot be served here (the error above)"
                    log.warning("last_good_configuration_kept", fleet=fleet, reason=reason)
                    report.kept.append(fleet)
                continue
            if fleet in incomplete and fleet not in self.last_good:
                continue
            lost = self._lost(fleet, result, resources)
            if lost:
                reason = f"{lost} it was built with now names what is not there (its diagnostic above)"
                log.warning("last_good_configuration_kept", fleet=fleet, reason=reason)
                report.kept.append(fleet)
                continue
            try:
                built = build_fleet(gateway, self.settings, self._built.get(fleet))
                changed = self._publish(fleet, built)
            except Exception as exc:  # a bug of ours, never the user's: keep serving the last good config
                reason = "inconsistent snapshot" if isinstance(exc, InconsistentSnapshot) else "build failed"
                log.exception("last_good_configuration_kept", fleet=fleet, reason=reason)
                report.kept.append(fleet)
                continue
            self.last_good[fleet] = gateway
            self._built_from[fleet] = resources.items
            if changed:
                report.published.append(fleet)
        for fleet in sorted(set(self.last_good) - set(result.gateways)):
            if self._broken(fleet, result):
                log.warning(
                    "last_good_configuration_kept",
                    fleet=fleet,
                    reason="its Gateway or what it is built from has errors",
                )
                report.kept.append(fleet)
            else:
                del self.last_good[fleet]
                self._built_from.pop(fleet, None)
                self._built.pop(fleet, None)
                self._held.pop(fleet, None)
                self.cache.remove(fleet)
                report.removed.append(fleet)
        withheld = self._withheld(result, {*refusals, *report.kept}, incomplete)
        served = self.cache.get(TRANSLATORS_FLEET)
        configs = translator_fleet(self.last_good)
        self._memo.served({gateway.key: gateway.translator_served for gateway in self.last_good.values()})
        # A translator that follows this control plane keeps a withheld fleet's configuration.
        self.cache.set(make_snapshot(TRANSLATORS_FLEET, configs, self._packer, served, frozenset(withheld)))
        self._packer.keep()
        for fleet in sorted(self.kept & set(result.gateways) - set(report.kept)):
            log.info("configuration_fixed", fleet=fleet)
        self.kept = set(report.kept)
        self.cache.withhold(withheld)
        return report

    def _withheld(self, result: CompileResult, unserved: set[str], incomplete: dict[str, str]) -> dict[str, str]:
        """The fleets whose Gateway exists but has never been served here for its errors (a
        Gateway that does not validate, or failed to compile; `unserved`: those refused or not
        built; `incomplete`: those a document in error names): their nodes get nothing rather than
        an empty configuration until it is fixed."""
        broken = {key.ref for key in result.bad_keys if key.kind == "Gateway"} | set(result.failed) | unserved
        reasons = dict.fromkeys(broken, "its Gateway or what it is built from has errors") | incomplete
        return {fleet: reason for fleet, reason in reasons.items() if fleet not in self.last_good}

    @staticmethod
    def _incomplete(resources: ResourceSet, result: CompileResult) -> dict[str, str]:
        """The compiled fleets named by a document in error that has no last good version (a route
        whose parentRefs name the Gateway), with the first such document. (A Gateway that is gone,
        or never was, is named in vain: its nodes are told it is not there.)"""
        named: dict[str, str] = {}
        for document, targets in sorted(resources.bad_targets.items()):
            if document not in resources.items:
                for target in targets:
                    if target.kind == "Gateway" and target.ref in result.gateways:
                        named.setdefault(target.ref, f"{document} names it and has errors")
        # A backend's policy (policy_targets.CHECKED_TARGETS) naming a target not there by a name
        # close to one a fleet is built from (a typo): that fleet is not served without it (its
        # credential, its TLS).
        for policy in sorted(k for k in result.mistargeted if k.kind in CHECKED_TARGETS):
            loaded = resources.items.get(policy)
            missing = [t for t in policy_targets(loaded) if t not in resources.items] if loaded is not None else []
            for fleet, gateway in result.gateways.items():
                for target in missing:
                    # (An object with a policy of that kind of its own is not the one meant.)
                    names = [
                        k.name
                        for k in gateway.closure
                        if k[:2] == target[:2] and not resources.policies_for(policy.kind, k)  # kind, namespace
                    ]
                    close = difflib.get_close_matches(target.name, names, n=1, cutoff=CLOSENESS)
                    if close:
                        reason = f"{policy} names {target}, which is not there: is it meant for {close[0]}?"
                        named.setdefault(fleet, reason)
        # A document that does not read (YAML syntax) names nothing: it may hold any fleet's route,
        # or its Gateway (a node of a fleet not compiled is then answered nothing, not an empty one).
        unread = next((d for d in resources.diagnostics if d.is_error and d.resource is None and d.origin), None)
        if unread is not None:
            for fleet in [*result.gateways, ANY_FLEET]:
                named.setdefault(fleet, f"{unread.origin} does not read, and may hold its resources")
        return named

    def _publish(self, fleet: str, built: FleetResources, held: dict[str, HeldScope] | None = None) -> bool:
        """The fleet's build published with the scopes it holds: those given, else those held before
        and those the build dropped (scope_hold.held_scopes). False when the snapshot is the one
        served. Raises what building the snapshot raises, with nothing recorded."""
        served = self.cache.get(fleet)
        if held is None:
            served_contents = served.contents if served is not None else {}
            held = held_scopes(served_contents, built, self._held.get(fleet, {}), self._clock(), self._hold_s)
        changed = self.cache.set(make_snapshot(fleet, with_held(built, held), self._packer, served))
        self._built[fleet] = built
        self._held[fleet] = held
        return changed

    def next_release(self) -> float | None:
        """When the first held scope is due (the controller's clock), None when none is held."""
        return min((h.until for held in self._held.values() for h in held.values()), default=None)

    def release_held(self) -> list[str]:
        """Publish, without them, the held scopes that are due; the fleets published."""
        now = self._clock()
        released = []
        for fleet, held in sorted(self._held.items()):
            due = [name for name, h in held.items() if h.until <= now]
            if not due:
                continue
            kept = {name: h for name, h in held.items() if h.until > now}
            try:
                self._publish(fleet, self._built[fleet], kept)
            except Exception:  # a bug of ours: the scopes stay held, and are tried again in a while
                log.exception("route_scopes_release_failed", fleet=fleet, retry_in_s=RELEASE_RETRY_S)
                self._held[fleet] = {
                    name: replace(h, until=now + RELEASE_RETRY_S) if name in due else h for name, h in held.items()
                }
                continue
            log.info("route_scopes_released", fleet=fleet, scopes=len(due), still_held=len(kept))
            released.append(fleet)
        return released

    def _refusals(self, result: CompileResult, resources: ResourceSet) -> dict[str, tuple[Diagnostic, ...]]:
        """The admission's errors of each fleet it refuses."""
        if self.admission is None:
            return {}
        admit = self.admission
        refusals = {fleet: admit(gw, self.last_good.get(fleet), resources) for fleet, gw in result.gateways.items()}
        return {fleet: errors for fleet, errors in refusals.items() if errors}

    def _lost(self, fleet: str, result: CompileResult, resources: ResourceSet) -> str:
        """The first object the fleet's last good configuration was built with that an edit made
        name what is not there ("" when none): a policy whose targets changed to one not there (a
        typo would serve the backend without its credential or TLS, the route without its budget;
        one whose target was deleted is no edit of it), a route all of whose parent Gateways are
        not there (its models would go). (Kubernetes mode serves without it, as Gateway API says.)"""
        served = self.last_good.get(fleet)
        if served is None or self.exclude_invalid:
            return ""
        then, now = self._built_from.get(fleet, {}), resources.items
        edited = {
            policy
            for policy in served.closure & result.mistargeted
            if policy in now and policy in then and _refs_dropped(then[policy], now[policy], served.closure)
        }
        return str(min(edited | (served.closure & result.orphaned), default=""))

    def _broken(self, fleet: str, result: CompileResult) -> bool:
        """True when the fleet's Gateway still exists but cannot be built now: it failed to compile,
        or its Gateway or anything its last good config was built from is invalid."""
        if fleet in result.failed:
            return True
        return gateway_key(fleet) in result.bad_keys or bool(self.last_good[fleet].closure & result.bad_keys)
