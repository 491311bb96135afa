"""Kubernetes mode: a Gateway whose objects include invalid ones is served from the others, as
Envoy Gateway does, instead of being held at a last good configuration. (In file mode too, a Gateway
a SecurityPolicy that cannot be enforced names: served closed, not at a last good open one.)

A last good configuration lives in one process: a replica started later (a rollout, a crash, a
scale-up) has none, and served nothing, so the Envoys that reconnected to it dropped their
listeners; and it keeps what the objects no longer allow (a deleted ReferenceGrant, a deleted
Secret's key) for as long as anything else in the Gateway is invalid. Compiled from the objects
alone, every replica serves the same thing and a revocation takes effect at once. File mode keeps
last-good (a typo in a file being edited takes nothing offline).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from ..api.decode import ANY_NAME
from ..diagnostics import Diagnostic, first_few, warning
from ..keys import ResourceKey, gateway_key
from ..resources import LAST_GOOD_VERSION, Loaded, ResourceSet, as_route, policy_targets
from . import ir
from .attachment import ROUTE_KINDS
from .compiler import NOT_APPLIED, POLICIES, CompileResult, compile_resources
from .context import IssuerMetadata
from .incremental import CompileMemo
from .security_policies import names_gateway, targeted_routes
from .traffic import naming_route

# Kinds an error of which cannot be left out: the Gateway is not served without them.
_ESSENTIAL = frozenset({"Gateway", "GatewayClass", "GatewayConfig"})
# Each round leaves out what the previous one's errors named (a route relying on a backend left out
# errs in the next); a chain is rarely longer than policy -> backend -> AIServiceBackend -> route.
MAX_ROUNDS = 8


def without_invalid(
    result: CompileResult,
    resources: ResourceSet,
    seal_secret: bytes,
    memos: dict[str, CompileMemo],
    issuers: Mapping[str, IssuerMetadata] | None = None,
    fleets: Iterable[str] | None = None,
) -> CompileResult:
    """`result`, each Gateway that failed compiled again without the objects whose errors failed it
    (round by round, with what relied on them), unless the Gateway itself or its class is what is
    invalid. The objects left out keep their errors (and Accepted=False); the Gateway gets a warning
    naming them instead of the error saying nothing is applied. `memos`: each such Gateway's compile
    memo, kept by the caller from one call to the next (so an edit recompiles only what it touched;
    those of Gateways that no longer fail are dropped). `issuers`: as compile_resources takes them.
    `fleets`: those of the failed Gateways to compile so (None: all)."""
    gateways = dict(result.gateways)
    left_out_by_fleet: dict[str, list[ResourceKey]] = {}
    trimmed_by_fleet: dict[str, Trimmed] = {}
    for fleet in set(memos) - set(result.failed):
        del memos[fleet]
    for fleet in result.failed if fleets is None else fleets:
        memo = memos.setdefault(fleet, CompileMemo())
        compiled = _compiled_without_invalid(gateway_key(fleet), result, resources, seal_secret, memo, issuers)
        if compiled is not None:
            gateways[fleet], left_out_by_fleet[fleet], trimmed_by_fleet[fleet] = compiled
            gateway = resources.items[gateway_key(fleet)]
            refusals = (_refusal(key, resources, gateway) for key in left_out_by_fleet[fleet])
            refusal = next((r for r in refusals if r), "")
            if refusal:
                gateways[fleet] = _refusing(gateways[fleet], refusal)
    if not left_out_by_fleet and not trimmed_by_fleet:
        return result
    all_left_out = {key for keys in left_out_by_fleet.values() for key in keys}
    diagnostics = [
        d
        for d in result.diagnostics
        if not (d.is_error and d.message.startswith(NOT_APPLIED) and _fleet_of(d) in left_out_by_fleet)
        and not (d.resource in all_left_out and d.message.startswith(LAST_GOOD_VERSION))  # it is not in use
    ]
    for key in sorted(all_left_out & resources.stale_keys):
        problem = next((d.detail for d in resources.diagnostics if d.is_error and d.resource == key), "it is invalid")
        result.status.set(key, "Accepted", False, "Invalid", f"{problem}; left out until it is fixed")
    erring = {d.resource for d in result.diagnostics if d.is_error}
    for fleet, left_out in left_out_by_fleet.items():
        for key in left_out:
            if key not in erring and key not in resources.bad_keys:  # left out for what it relies on
                message = (
                    f"left out of Gateway {fleet}: it relies on an object with errors (the Gateway's Accepted "
                    "condition names them)"
                )
                result.status.set(key, "Accepted", False, "Invalid", message)
        gateway = resources.items[gateway_key(fleet)]
        served_without = []
        if left_out:
            shown = first_few([str(key) for key in left_out])
            refusal = next((r for r in (_refusal(key, resources, gateway) for key in left_out) if r), "")
            if refusal:  # (not served open without it: closed)
                served_without.append(f"every request answered a 500 ({refusal}); left out: {shown}")
            else:
                served_without.append(f"served without {shown} (invalid, or relying on what is: the errors above)")
        for route, refs in sorted(trimmed_by_fleet.get(fleet, {}).items()):
            shown = first_few([f"spec.rules[{i}].backendRefs[{j}]" for i, j in sorted(refs)])
            served_without.append(
                f"served {route} without its {shown} (the errors above); its other rules are served, and a "
                "rule left without a backend answers 503"
            )
        diagnostics.extend(warning(message, gateway.origin, gateway.key) for message in served_without)
        if served_without:  # in its status too: the errors are on those objects, the log is not read
            result.status.set(gateway.key, "Accepted", True, "Accepted", "; ".join(served_without))
    # The fleets stay in `failed` too: their whole closure is still theirs (status is written on it).
    return replace(
        result,
        gateways=gateways,
        diagnostics=tuple(diagnostics),
        left_out={fleet: frozenset(keys) for fleet, keys in left_out_by_fleet.items()},
    )


# What a client of a Gateway served without its invalid ClientTrafficPolicy (and so without any of
# its routes) is answered, with a 500, as Envoy Gateway answers: not a 404 saying its model is not
# configured. The policy's name and errors are the operator's (the log, the Gateway's status).
CLIENT_SETTINGS_REFUSAL = (
    "The gateway's listener settings (a ClientTrafficPolicy) are invalid: no request is served until they are fixed."
)


# ... and of one a SecurityPolicy that cannot be enforced names (as Envoy Gateway answers a route whose
# SecurityPolicy is invalid: a 500).
CLIENT_CHECKS_REFUSAL = (
    "The gateway's client checks (a SecurityPolicy) are invalid or not supported: no request is served until they "
    "are fixed."
)


def _refusal(key: ResourceKey, resources: ResourceSet, gateway: Loaded[Any]) -> str:
    """What every request to the Gateway is answered, served without `key` ("": nothing): a
    ClientTrafficPolicy's listeners take no client without it; a SecurityPolicy naming the Gateway
    (one that does not validate: whatever it names) admits none."""
    policy = resources.items.get(key)
    if key.kind == "ClientTrafficPolicy":
        return CLIENT_SETTINGS_REFUSAL
    if key.kind == "SecurityPolicy" and (policy is None or names_gateway(policy, gateway)):
        return CLIENT_CHECKS_REFUSAL
    return ""


def _refusing(gateway: ir.GatewayIR, refusal: str) -> ir.GatewayIR:
    """The Gateway IR with every listener answering `refusal`."""
    listeners = tuple(replace(listener, refusal=refusal) for listener in gateway.listeners)
    return replace(gateway, listeners=listeners)


# Which backendRefs of a route were left out: route -> {(rule index, backendRef index)}.
Trimmed = dict[ResourceKey, set[tuple[int, int]]]
# Where a route's error is about one backendRef (its reference, or what that reference reaches).
BACKEND_REF_FIELD = re.compile(r"spec\.rules\[(\d+)\]\.backendRefs\[(\d+)\]")


def _compiled_without_invalid(
    gateway: ResourceKey,
    first: CompileResult,
    resources: ResourceSet,
    seal_secret: bytes,
    memo: CompileMemo,
    issuers: Mapping[str, IssuerMetadata] | None,
) -> tuple[Any, list[ResourceKey], Trimmed] | None:
    """The Gateway's IR compiled without the objects that fail it, those objects, and the
    backendRefs left out of routes otherwise valid (a route whose only errors are backendRefs keeps
    its other rules and backends: one bad backend took every model of its route offline); None
    when it cannot be (the Gateway or its class is invalid, or
    the errors name nothing to leave out). The first round's errors are those of `first`, the
    compile of everything."""
    left_out: set[ResourceKey] = set()
    trimmed: Trimmed = {}
    again, view = first, resources
    for _ in range(MAX_ROUNDS):
        closure = again.failed.get(gateway.ref, frozenset())
        named = {
            d.resource
            for d in again.errors
            if d.resource in closure and not d.message.startswith(NOT_APPLIED)  # that one sums the others up
        }
        refs = _failed_backend_refs(again, named - view.bad_keys, resources, trimmed)
        for route, failed in refs.items():
            trimmed.setdefault(route, set()).update(failed)
        named -= refs.keys()
        culprits: set[ResourceKey] = set()
        for key in named | (closure & view.bad_keys):
            culprits.add(key)
            if key.kind in POLICIES:  # what it applies to, not served without it
                loaded = resources.items.get(key)
                targets = policy_targets(loaded) if loaded is not None else resources.bad_targets.get(key, ())
                any_here = ResourceKey("Gateway", gateway.namespace, ANY_NAME)  # (a selector that did not read)
                for target in map(as_route, targets):
                    if target in (gateway, any_here):  # the Gateway's routes (its listeners stay: replicas agree)
                        culprits.update(_routes_under_gateway_policy(resources, closure, key.kind))
                    elif target.kind != "Gateway":  # another Gateway's policy is its own
                        culprits.add(target)
                if key.kind == "SecurityPolicy" and loaded is not None:  # (its routes by labels too)
                    culprits.update(
                        route for _, route in targeted_routes(loaded, resources) if route in resources.items
                    )
        culprits -= left_out
        if (not culprits and not refs) or any(key.kind in _ESSENTIAL for key in culprits):
            return None
        left_out |= culprits
        for key in left_out:
            trimmed.pop(key, None)
        view = _view(resources, gateway, left_out, trimmed)
        again = compile_resources(view, seal_secret=seal_secret, memo=memo, issuers=issuers)
        if gateway.ref in again.gateways:
            return again.gateways[gateway.ref], sorted(left_out), trimmed
    return None


def _failed_backend_refs(
    result: CompileResult, named: set[ResourceKey], resources: ResourceSet, trimmed: Trimmed
) -> Trimmed:
    """The routes among `named` whose every error is about a backendRef, and those backendRefs that
    were not left out before, by their index in the route as written (an error of a trimmed route
    names the index in what was compiled, which lacks the refs left out)."""
    found: Trimmed = {}
    for key in named:
        if key.kind != "AIGatewayRoute":
            continue
        spots = [BACKEND_REF_FIELD.match(d.field or "") for d in result.errors if d.resource == key]
        if not spots or not all(spots):
            continue
        before = trimmed.get(key, set())
        written = resources.items[key].resource.spec.rules
        refs = set()
        for m in filter(None, spots):
            rule, compiled = int(m.group(1)), int(m.group(2))
            kept = [j for j in range(len(written[rule].backendRefs)) if (rule, j) not in before]
            refs.add((rule, kept[compiled]))
        if refs - before:
            found[key] = refs
    return found


def _without_refs(loaded: Loaded[Any], refs: set[tuple[int, int]]) -> Loaded[Any]:
    """The route without the backendRefs `refs` (a rule keeps its place: rule/{i} names its cluster)."""
    route = loaded.resource
    rules = [
        rule.model_copy(update={"backendRefs": [ref for j, ref in enumerate(rule.backendRefs) if (i, j) not in refs]})
        for i, rule in enumerate(route.spec.rules)
    ]
    spec = route.spec.model_copy(update={"rules": rules})
    return replace(loaded, resource=route.model_copy(update={"spec": spec}))


def _routes_under_gateway_policy(
    resources: ResourceSet, closure: frozenset[ResourceKey], policy_kind: str
) -> set[ResourceKey]:
    """The Gateway's routes a policy on the Gateway applies to: a ClientTrafficPolicy's or a
    SecurityPolicy's, all of them (its listeners' clients reach every route: without it, an HTTPS
    listener would take clients without the certificates it requires, a route clients it was to
    check); a BackendTrafficPolicy's, all AIGatewayRoutes but those
    a policy names whole (by route, not by rule), whose rules that one's applies to instead."""
    if policy_kind in ("ClientTrafficPolicy", "SecurityPolicy"):
        return {key for key in closure if key.kind in ROUTE_KINDS}
    return {key for key in closure if key.kind == "AIGatewayRoute" and not naming_route(resources, key, None)}


def _fleet_of(diagnostic: Diagnostic) -> str | None:
    resource = diagnostic.resource
    return resource.ref if resource is not None and resource.kind == "Gateway" else None


def _view(resources: ResourceSet, gateway: ResourceKey, left_out: set[ResourceKey], trimmed: Trimmed) -> ResourceSet:
    """The objects without those left out, the trimmed routes without their failed backendRefs, and
    without the other Gateways (only this one is compiled)."""
    items = {
        key: _without_refs(loaded, trimmed[key]) if key in trimmed else loaded
        for key, loaded in resources.items.items()
        if key not in left_out and (key.kind != "Gateway" or key == gateway)
    }
    return ResourceSet(
        items,
        resources.bad_keys - left_out,
        resources.diagnostics,
        resources.stale_keys - left_out,
        {key: targets for key, targets in resources.bad_targets.items() if key not in left_out},
    )
