"""Compile (pure): resource set -> per-Gateway IR, status conditions and diagnostics.

This module holds the entry point, compile_resources, and its result: the loop over Gateways
(gateways.py compiles each), warnings for routes no Gateway takes, and Accepted=False on unusable
resources. The modules follow the resource graph: gateways -> routes -> backends -> security, with
costs beside routes and one CompileContext per Gateway (context.py) shared by all.

Every Gateway compiles on its own: an error in one never stops another. A Gateway with any error in
the resources it is built from is reported as failed, so the serving side keeps its last good
configuration.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

from ..api import kinds
from ..api.base import ParentReference
from ..api.decode import ANY_NAME
from ..diagnostics import Diagnostic, error, first_few, warning
from ..keys import ResourceKey
from ..resources import LAST_GOOD_VERSION, ResourceSet, as_route
from . import ir
from .attachment import ROUTE_KINDS
from .context import CompileContext, IssuerMetadata
from .gateways import compile_gateway
from .incremental import CompileMemo
from .policy_targets import check_policy_targets
from .quota import check_quota_policies
from .status import Condition, StatusBook
from .traffic import applies_somewhere, check_traffic_policies

# The policies a backend is not served without (compile_resources).
BACKEND_POLICIES = frozenset({"BackendSecurityPolicy", "BackendTLSPolicy", "QuotaPolicy"})
# The policies what they target is not served without: a backend's, a route's or Gateway's retries,
# timeouts and rate limits (Envoy Gateway answers 500 on a route whose policy failed), and a
# Gateway's client settings (an HTTPS listener without the client certificates it requires).
POLICIES = BACKEND_POLICIES | {"BackendTrafficPolicy", "ClientTrafficPolicy", "SecurityPolicy"}
# A policy's fields that say what it applies to (an error there: it applies to the other targets).
TARGET_FIELDS = ("spec.targetRef", "spec.targetSelectors")
# How the error on a Gateway that failed begins (the errors it names come before it).
NOT_APPLIED = "this version is not served until the errors above are fixed"


@dataclass(frozen=True)
class CompileResult:
    # Fleets ("<ns>/<gateway>") that compiled without error.
    gateways: Mapping[str, ir.GatewayIR]
    # Fleets with errors, and every resource each one touched (to keep its last good config; in
    # Kubernetes mode also in `gateways`, compiled without what `left_out` names).
    failed: Mapping[str, frozenset[ResourceKey]]
    # The conditions set while compiling (`statuses` has them per resource; compare those).
    status: StatusBook = field(compare=False, repr=False)
    diagnostics: tuple[Diagnostic, ...]
    bad_keys: frozenset[ResourceKey] = frozenset()
    # Fleets served without some of their objects (Kubernetes mode, excluding.py), and those objects.
    left_out: Mapping[str, frozenset[ResourceKey]] = field(default_factory=dict)
    # Routes whose parentRefs name only Gateways (or listeners, by sectionName) that are not there
    # (a typo, most often): a fleet that served one keeps its last good configuration (controller.py).
    orphaned: frozenset[ResourceKey] = frozenset()

    @cached_property
    def statuses(self) -> Mapping[ResourceKey, tuple[Condition, ...]]:
        """Each resource's conditions, sorted; built when first read (only status writers read it:
        at 10,000 routes it is a sort of 40,000 conditions an edit in file mode need not pay for)."""
        return self.status.snapshot()

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @cached_property
    def mistargeted(self) -> frozenset[ResourceKey]:
        """The policies with an error in what they target (one not there): they apply to their
        other targets, and a Gateway built with one before is kept as it was (controller.py)."""
        return frozenset(
            d.resource
            for d in self.diagnostics
            if d.is_error
            and d.resource is not None
            and d.resource.kind in POLICIES
            and d.field.startswith(TARGET_FIELDS)
        )


def compile_resources(
    resources: ResourceSet,
    *,
    placeholder_secrets: bool = False,
    seal_secret: bytes = b"",
    memo: CompileMemo | None = None,
    issuers: Mapping[str, IssuerMetadata] | None = None,
) -> CompileResult:
    """Compile every Gateway. placeholder_secrets (validate, translate): a secret value that could
    not be resolved (e.g. an unset environment variable) is a warning and compiles to a placeholder
    instead of failing its Gateway; `run` and `serve` leave it off, so they fail naming the variable.
    seal_secret: mixed into the seal key of a fleet that holds no credential of its own (see
    gateways._seal_key); the serving control plane passes random bytes, chosen once per process.
    memo: what routes compiled to in earlier calls (incremental.py), reused where nothing they read
    changed; the result is the same as without it. issuers: what the control plane learnt of the
    OAuth issuers MCPRoutes name without jwks (issuer_metadata.py)."""
    if memo is not None:
        memo.begin(resources)
    status = StatusBook()
    gateways: dict[str, ir.GatewayIR] = {}
    failed: dict[str, frozenset[ResourceKey]] = {}
    diagnostics: list[Diagnostic] = list(resources.diagnostics)
    attached_routes: set[ResourceKey] = set()
    # Checked once for the whole set; a policy they reject (but for its targets: it applies to the
    # others) fails every Gateway it applies to, as one that does not validate does.
    checked = [
        *check_traffic_policies(resources, status),
        *check_quota_policies(resources, status),
        *check_policy_targets(resources, status),
    ]
    # (Before the Gateways' own: a failed one's error points "above" at them.)
    diagnostics.extend(_of_last_good(checked, resources.stale_keys))
    rejected = {
        key
        for d in checked
        if (key := d.resource) is not None
        and d.is_error
        and not d.field.startswith(TARGET_FIELDS)
        # One that loses everywhere to another at the same level is not applied: nothing to hold.
        and (key.kind != "BackendTrafficPolicy" or applies_somewhere(resources, resources.items[key]))
    }
    for loaded in resources.of_kind("Gateway"):
        ctx = CompileContext(
            resources,
            status,
            placeholder_secrets=placeholder_secrets,
            seal_secret=seal_secret,
            memo=memo,
            issuers=issuers or {},
        )
        gateway_ir = compile_gateway(ctx, loaded, attached_routes)
        diagnostics.extend(_of_last_good(ctx.diagnostics, resources.stale_keys))
        # A policy that did not validate applies to nothing; what it targets is not served without
        # it that way (a backend in plaintext to port 443, without its credentials or quota; a
        # route without its rate limit): the Gateway fails as for any object it is built from.
        any_gateway_here = ResourceKey("Gateway", loaded.key.namespace, ANY_NAME)
        unapplied = {
            policy
            for policy, targets in resources.bad_targets.items()
            if policy.kind in POLICIES
            and policy not in resources.items
            and (not ctx.closure.isdisjoint(map(as_route, targets)) or any_gateway_here in targets)
        } | (ctx.closure & rejected)
        if any(d.is_error for d in ctx.diagnostics) or not resources.bad_keys.isdisjoint(ctx.closure) or unapplied:
            bad = sorted(str(k) for k in (ctx.closure & resources.bad_keys) | unapplied)
            if bad:
                # Compiling knows nothing of what is served: whether a last good configuration is
                # kept, the controller says (last_good_configuration_kept).
                # Its own newer version is one of them when it did not read (its last good one compiled).
                shown = [f"{k} itself" if k == str(loaded.key) else k for k in bad]
                message = f"{NOT_APPLIED} (they concern {first_few(shown)})"
                diagnostics.append(error(message, loaded.origin, loaded.key))
            failed[loaded.key.ref] = frozenset(ctx.closure | unapplied)
            first = next((d for d in ctx.diagnostics if d.is_error), None)
            if first is not None:
                where = f"{first.resource} " if first.resource else ""
                problem = f"{where}{first.detail}"
            else:  # what failed is a resource that does not read now (its errors are its own)
                problem = f"{', '.join(bad[:3]) or 'a resource it uses'} is invalid"
            kept = f"its last good configuration, if any, is served instead: {problem}"
            status.set(loaded.key, "Programmed", False, "Invalid", kept)
        else:
            gateways[loaded.key.ref] = gateway_ir
            status.set(loaded.key, "Programmed", True, "Programmed")
    unattached = [r for kind in ROUTE_KINDS for r in resources.of_kind(kind) if r.key not in attached_routes]
    accepted = status.having("Accepted", (r.key for r in unattached)) if unattached else set()
    gateway_names = [g.key.ref for g in resources.of_kind("Gateway")] if unattached else []
    orphaned = set()
    for loaded in unattached:
        if loaded.key in accepted:  # refused by a Gateway it names, which said why (one warning, not two)
            continue
        route: kinds.AIGatewayRoute | kinds.MCPRoute = loaded.resource
        named = [f"{p.namespace or loaded.key.namespace}/{p.name}" for p in route.spec.parentRefs]
        missing = [_missing_parent(resources, p, loaded.key.namespace) for p in route.spec.parentRefs]
        if missing and all(missing):
            orphaned.add(loaded.key)
        close = [m for n in named if n not in gateway_names for m in difflib.get_close_matches(n, gateway_names, n=1)]
        hint = f"; did you mean {close[0]}?" if close else ""
        hint += "".join(f"; {m}" for m in missing if m.startswith("Gateway"))
        message = f"not attached to any Gateway (parentRefs: {', '.join(named) or 'none'}{hint})"
        diagnostics.append(warning(message, loaded.origin, loaded.key, "spec.parentRefs"))
        status.set(loaded.key, "Accepted", False, "NoMatchingParent", message)
    _mark_invalid(resources, status)
    if memo is not None:
        memo.end()
    return CompileResult(
        gateways, failed, status, _dedupe(diagnostics), resources.bad_keys, orphaned=frozenset(orphaned)
    )


def _of_last_good(diagnostics: list[Diagnostic], stale: frozenset[ResourceKey]) -> list[Diagnostic]:
    """`diagnostics`, those of a resource whose current version does not read saying that they are of
    its last good version (compiled in its place): the file may no longer hold what they name."""
    if not stale:
        return diagnostics
    return [
        replace(d, message=f"{d.message} (in {LAST_GOOD_VERSION}, compiled in place of the one that does not read)")
        if d.resource in stale
        else d
        for d in diagnostics
    ]


def _missing_parent(resources: ResourceSet, ref: ParentReference, namespace: str) -> str:
    """What a parentRef names that is not there ("" when it is): its Gateway, or the listener its
    sectionName names (a typo either way: the route attaches nowhere)."""
    gateway = resources.get("Gateway", ref.namespace or namespace, ref.name)
    if gateway is None:
        return f"no Gateway {ref.namespace or namespace}/{ref.name}"
    if ref.sectionName is not None and all(lst.name != ref.sectionName for lst in gateway.resource.spec.listeners):
        return f"Gateway {gateway.key.ref} has no listener named {ref.sectionName}"
    return ""


def _mark_invalid(resources: ResourceSet, status: StatusBook) -> None:
    """Accepted=False on every resource whose current version is unusable, saying whether its last
    good version is still the one in use (stale) or nothing of it is."""
    first_error: dict[ResourceKey, str] = {}
    for d in resources.diagnostics:
        if d.is_error and d.resource is not None:
            first_error.setdefault(d.resource, d.detail)
    for key in sorted(resources.bad_keys):
        problem = first_error.get(key, "its file cannot be read")
        if key in resources.stale_keys:
            status.set(key, "Accepted", False, "Invalid", f"{problem}; the last good version stays in use (stale)")
        else:
            status.set(key, "Accepted", False, "Invalid", problem)


def _dedupe(diagnostics: list[Diagnostic]) -> tuple[Diagnostic, ...]:
    return tuple(dict.fromkeys(diagnostics))
