"""The status each object should have (pure): conditions from the compile, Gateways' Programmed
from what their Envoys applied, in the shape the Gateway API and Envoy AI Gateway CRDs define.

Only objects of our Gateways get status: our GatewayClasses, their Gateways, and what those
Gateways are built from (their closure), so objects served by another controller in the same
cluster are left alone. lastTransitionTime changes only when a condition's status does; a status
equal to the one already written is not written again.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..api.base import GATEWAY_API_GROUP
from ..compile import CompileResult
from ..compile.attachment import ROUTE_KINDS, SERVED_PROTOCOLS, attachment, kinds_admit, takes_kind
from ..compile.excluding import BACKEND_REF_FIELD
from ..compile.references import NEEDS_GRANT
from ..compile.status import Condition
from ..keys import ResourceKey
from ..resources import ResourceSet
from ..sources.kube_kinds import AI_GATEWAY, DEFAULT_CONTROLLER_NAME, POLICY_STATUS_KINDS, STATUS_KINDS
from ..xds.acks import FleetSync

MAX_MESSAGE = 32_768
# The Gateway API CRDs' limit on a PolicyStatus's ancestors.
MAX_ANCESTORS = 16
_CLASS_ACCEPTED = {"Accepted": Condition("Accepted", True, "Accepted", "handled by aigw-xds")}
# A policy the compile said nothing of: accepted, in Envoy Gateway's words.
_POLICY_ACCEPTED = Condition("Accepted", True, "Accepted", "Policy has been accepted.")


@dataclass(frozen=True)
class Current:
    """An object as last read from the API: what observedGeneration and lastTransitionTime
    are computed from."""

    generation: int
    status: Mapping[str, Any]


def _observed_generation(key: ResourceKey, resources: ResourceSet, seen: Current) -> int:
    """The generation the conditions are about: the one compiled, or for an object whose new
    version was refused (bad, maybe stale), the one the API holds now."""
    loaded = resources.items.get(key)
    compiled = getattr(getattr(loaded.resource, "metadata", None), "generation", None) if loaded else None
    if compiled is None or key in resources.bad_keys:
        return seen.generation
    return int(compiled)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def owned_keys(result: CompileResult, resources: ResourceSet) -> set[ResourceKey]:
    """The objects whose status we write."""
    owned = {k for k in resources.items if k.kind in ("GatewayClass", "Gateway")}
    for gateway in result.gateways.values():
        owned |= gateway.closure
    for closure in (*result.failed.values(), *result.left_out.values()):
        owned |= closure
    ours = {k for k in owned if k.kind == "Gateway"}
    for route in (*resources.of_kind("AIGatewayRoute"), *resources.of_kind("MCPRoute")):  # refused ones too
        if any(_parent_key(route.key, parent) in ours for parent in route.resource.spec.parentRefs):
            owned.add(route.key)
    for key, targets in resources.bad_targets.items():  # and ones that never validated
        if key.kind in ROUTE_KINDS and key not in resources.items and not ours.isdisjoint(targets):
            owned.add(key)
    return {k for k in owned if k.kind in STATUS_KINDS}


def _parent_key(route: ResourceKey, parent: Any) -> ResourceKey:
    return ResourceKey("Gateway", parent.namespace or route.namespace, parent.name)


def desired_conditions(
    result: CompileResult, sync: Callable[[str], FleetSync]
) -> dict[ResourceKey, dict[str, Condition]]:
    """Per object, its conditions by type: the compile's, an error it caused turned into
    Accepted=False (with the message `validate` prints), Gateways' Programmed from their fleet."""
    conditions: dict[ResourceKey, dict[str, Condition]] = {
        key: {c.type: c for c in found} for key, found in result.statuses.items()
    }
    for diagnostic in result.errors:
        key = diagnostic.resource
        if key is None or key.kind == "Gateway":  # compile judges Gateways itself (Accepted vs Programmed)
            continue
        if key.kind == "AIGatewayRoute" and BACKEND_REF_FIELD.match(diagnostic.field or ""):
            continue  # a backendRef that does not resolve: ResolvedRefs=False, the route still Accepted
        if key.kind == "InferencePool" and (diagnostic.field or "").startswith("spec.endpointPickerRef"):
            continue  # its picker not reached: ResolvedRefs=False (InvalidExtensionRef), the pool still Accepted
        by_type = conditions.setdefault(key, {})
        accepted = by_type.get("Accepted")
        if accepted is None or accepted.status:
            by_type["Accepted"] = Condition("Accepted", False, "Invalid", diagnostic.detail)
    for key, by_type in conditions.items():
        if key.kind == "Gateway" and key.ref in result.gateways:
            by_type["Programmed"] = _programmed(key, sync(key.ref))
        by_type.setdefault("Accepted", Condition("Accepted", True, "Accepted"))
    return conditions


def _programmed(key: ResourceKey, sync: FleetSync) -> Condition:
    if sync.rejections:
        first = sync.rejections[0]
        more = f" (and {len(sync.rejections) - 1} more rejections)" if len(sync.rejections) > 1 else ""
        message = f"Envoy {first.node} rejected {first.type} {', '.join(first.names)}: {first.error}{more}"
        return Condition("Programmed", False, "Invalid", message)
    if sync.connected == 0:
        if sync.refused:
            message = (
                f"{len(sync.refused)} Envoy node(s) of this Gateway were refused its configuration: {sync.refused[0]}"
            )
            return Condition("Programmed", False, "Pending", message)
        hint = f'no Envoy of this Gateway is connected (node.cluster "{key.ref}")'
        return Condition("Programmed", False, "Pending", hint)
    if not sync.programmed:
        message = f"{sync.applied} of {_envoys(sync.connected)} applied the current configuration"
        return Condition("Programmed", False, "Pending", message)
    return Condition("Programmed", True, "Programmed", f"{_envoys(sync.connected)} applied the current configuration")


def _envoys(count: int) -> str:
    return f"{count} Envoy" if count == 1 else f"{count} Envoys"


def condition_dicts(
    found: Mapping[str, Condition], generation: int, previous: list[Any], now: str
) -> list[dict[str, Any]]:
    """metav1.Condition objects, ordered by type; lastTransitionTime kept while status holds."""
    before = {c.get("type"): c for c in previous if isinstance(c, dict)}
    out = []
    for type_ in sorted(found):
        condition = found[type_]
        status = "True" if condition.status else "False"
        old = before.get(type_)
        since = old.get("lastTransitionTime") if old and old.get("status") == status else None
        out.append(
            {
                "type": type_,
                "status": status,
                "reason": condition.reason,
                "message": condition.message[:MAX_MESSAGE],
                "observedGeneration": generation,
                "lastTransitionTime": since or now,
            }
        )
    return out


def _listener_findings(result: CompileResult, key: ResourceKey) -> dict[int, tuple[str, str]]:
    """Per listener index, the first problem compile reported on it (field spec.listeners[i]...):
    (reason, message)."""
    found: dict[int, tuple[str, str]] = {}
    for diagnostic in result.diagnostics:
        match = _LISTENER_FIELD.match(diagnostic.field) if diagnostic.resource == key else None
        if match is not None and int(match[1]) not in found:
            reason = "InvalidCertificateRef" if "certificateRefs" in diagnostic.field else "Invalid"
            if reason == "InvalidCertificateRef" and NEEDS_GRANT in diagnostic.message:
                reason = "RefNotPermitted"
            found[int(match[1])] = (reason, diagnostic.detail)
    return found


_LISTENER_FIELD = re.compile(r"spec\.listeners\[(\d+)\]")


def _listeners(
    key: ResourceKey,
    result: CompileResult,
    resources: ResourceSet,
    gateway_conditions: Mapping[str, Condition],
    generation: int,
    current: Mapping[str, Any],
    now: str,
) -> list[dict[str, Any]]:
    """status.listeners of a Gateway: per listener, its own conditions (a listener compile
    reported a problem on is not Accepted; a bad certificateRef is ResolvedRefs=False; one of a
    protocol not served is not Accepted, UnsupportedProtocol; one whose allowedRoutes take none of
    our route kinds is ResolvedRefs=False, InvalidRouteKinds), the route kinds it takes and the
    AIGatewayRoutes and MCPRoutes attached to it (compile/attachment.py: by their parentRefs, its
    allowedRoutes and their hostnames, whether or not they are otherwise Accepted)."""
    loaded = resources.items.get(key)
    if loaded is None:
        return []
    gateway = loaded.resource
    attached: Counter[str] = Counter()
    for route in (*resources.of_kind("AIGatewayRoute"), *resources.of_kind("MCPRoute")):
        if route.key.kind == "MCPRoute" and route.key.namespace != key.namespace:
            continue  # (an MCPRoute attaches to Gateways of its own namespace only)
        attached.update(attachment(key, gateway, route.key, route.resource.spec).listeners)
    findings = _listener_findings(result, key)
    previous = {entry.get("name"): entry for entry in current.get("listeners") or [] if isinstance(entry, dict)}
    programmed = gateway_conditions.get("Programmed")
    out = []
    for index, listener in enumerate(gateway.spec.listeners):
        problem = findings.get(index)
        kinds = _supported_kinds(listener)
        if listener.protocol not in SERVED_PROTOCOLS:
            problem = ("UnsupportedProtocol", f"protocol {listener.protocol} is not served (HTTP and HTTPS are)")
        elif unserved := sorted(
            k.kind for k in listener.allowedRoutes.kinds if not any(takes_kind(k.group, k.kind, r) for r in ROUTE_KINDS)
        ):
            problem = ("InvalidRouteKinds", f"allowedRoutes kinds {', '.join(unserved)}: not a route kind served here")
        conditions: dict[str, Condition] = {
            "Accepted": Condition("Accepted", True, "Accepted")
            if problem is None or problem[0] not in ("Invalid", "UnsupportedProtocol")
            else Condition("Accepted", False, problem[0], problem[1]),
            "ResolvedRefs": Condition("ResolvedRefs", True, "ResolvedRefs")
            if problem is None or problem[0] not in ("InvalidCertificateRef", "RefNotPermitted", "InvalidRouteKinds")
            else Condition("ResolvedRefs", False, problem[0], problem[1]),
        }
        if programmed is not None:
            usable = problem is None
            conditions["Programmed"] = (
                programmed if usable else Condition("Programmed", False, "Invalid", "the listener has errors")
            )
        before = (previous.get(listener.name) or {}).get("conditions") or []
        out.append(
            {
                "name": listener.name,
                "supportedKinds": kinds,
                "attachedRoutes": attached[listener.name],
                "conditions": condition_dicts(conditions, generation, list(before), now),
            }
        )
    return out


# What the Gateway API's CRDs give a Gateway no controller has taken yet.
WAITING = "Waiting for controller"


def written_by_us(status: Mapping[str, Any]) -> bool:
    """Whether a Gateway's status is ours: its listeners' supportedKinds name AIGatewayRoute, which
    no other Gateway controller writes (so a replica knows it without having written it itself)."""
    listeners = status.get("listeners")
    ours = {"group": AI_GATEWAY, "kind": "AIGatewayRoute"}
    return isinstance(listeners, list) and any(
        isinstance(entry, dict) and ours in (entry.get("supportedKinds") or []) for entry in listeners
    )


def _supported_kinds(listener: Any) -> list[dict[str, str]]:
    """The route kinds a listener takes: ours, or those of ours its allowedRoutes kinds name."""
    if listener.protocol not in SERVED_PROTOCOLS:
        return []
    return [{"group": AI_GATEWAY, "kind": kind} for kind in ROUTE_KINDS if kinds_admit(listener, kind)]


def released_gateway_status(generation: int, now: str) -> dict[str, Any]:
    """The status of a Gateway this controller served and no longer does (its class changed to
    another controller's, or to one that does not exist): the Gateway API's initial status, instead
    of our Accepted and Programmed, which would go on saying it is served. Its listeners' statuses
    are removed (a merge patch's null)."""
    waiting = {t: Condition(t, False, "Pending", WAITING) for t in ("Accepted", "Programmed")}
    conditions = condition_dicts(waiting, generation, [], now)
    for condition in conditions:
        condition["status"] = "Unknown"
    return {"conditions": conditions, "listeners": None}


def status_updates(
    result: CompileResult,
    resources: ResourceSet,
    sync: Callable[[str], FleetSync],
    current: Callable[[ResourceKey], Current | None],
    now: str,
    with_our_entries: Iterable[ResourceKey] = (),
    controller: str = DEFAULT_CONTROLLER_NAME,
) -> dict[ResourceKey, dict[str, Any]]:
    """The status patches to write: per owned object whose status differs from what it has; and
    per InferencePool or policy whose status has an entry of ours (entries_ours) that no Gateway of
    ours uses any more, that entry removed. `controller`: our controllerName, which a policy's
    entries name."""
    conditions = desired_conditions(result, sync)
    updates: dict[ResourceKey, dict[str, Any]] = {}
    # An object that no longer validates, out of every Gateway's closure (what used it is invalid
    # too), still has the status written while it was used: it is told why it is refused, not left
    # Accepted at its last generation. (Conditions on it were ours: no other controller serves it.)
    refused = {
        key
        for key in resources.bad_keys
        if key.kind in STATUS_KINDS
        and key.kind not in ("Gateway", "GatewayClass", "InferencePool")
        and (seen := current(key)) is not None
        and (entries_ours(key.kind, seen.status, controller) or seen.status.get("conditions"))
    }
    owned = owned_keys(result, resources)
    for key in sorted(set(with_our_entries) - owned):
        seen = current(key)
        if seen is None:
            continue
        if key.kind == "InferencePool":
            parents = _pool_parents(key, result, {}, seen.generation, seen.status, now)
            if parents != seen.status.get("parents"):
                updates[key] = {"parents": parents}
        elif key.kind in POLICY_STATUS_KINDS:
            ancestors = _policy_ancestors(key, set(), {}, seen.generation, seen.status, now, controller)
            if ancestors != seen.status.get("ancestors"):
                updates[key] = {"ancestors": ancestors}
    for key in sorted(owned | refused):
        seen = current(key)
        found = conditions.get(key) or (_CLASS_ACCEPTED if key.kind == "GatewayClass" else None)
        accepted = (found or {}).get("Accepted")
        if key.kind in POLICY_STATUS_KINDS and (accepted is None or (accepted.status and not accepted.message)):
            found = {**(found or {}), "Accepted": _POLICY_ACCEPTED}
        if found and key in resources.bad_keys and "Accepted" in found:
            # Refused: only that is about its current generation (the rest came from compiling the
            # last good version, if any).
            found = {"Accepted": found["Accepted"]}
        if seen is None or not found:
            continue
        generation = _observed_generation(key, resources, seen)
        status: dict[str, Any]
        if key.kind == "InferencePool":
            status = {"parents": _pool_parents(key, result, found, generation, seen.status, now)}
        elif key.kind in POLICY_STATUS_KINDS:
            # A refused policy is in no Gateway's closure: told so where it was last used.
            gateways = _gateways_using(key, result) or {
                fleet  # (of those still there)
                for fleet in _ancestors_ours(seen.status, controller, key.namespace)
                if ResourceKey("Gateway", *fleet.split("/", 1)) in resources.items
            }
            status = {"ancestors": _policy_ancestors(key, gateways, found, generation, seen.status, now, controller)}
        else:
            status = {"conditions": condition_dicts(found, generation, list(seen.status.get("conditions") or []), now)}
        if key.kind == "Gateway":
            status["listeners"] = _listeners(key, result, resources, found, generation, seen.status, now)
        if any(seen.status.get(field) != value for field, value in status.items()):
            updates[key] = status
    return updates


def _pool_parents(
    key: ResourceKey,
    result: CompileResult,
    found: Mapping[str, Condition],
    generation: int,
    previous: Mapping[str, Any],
    now: str,
) -> list[dict[str, Any]]:
    """An InferencePool's status.parents (the Inference Extension's shape): an entry per Gateway of
    ours built from it, with its conditions, where it was (a new one last); the entries of other
    controllers as they are; ours for a Gateway that no longer uses it (or is gone), removed."""
    return _merged_entries(
        previous.get("parents"),
        _gateways_using(key, result),
        key.namespace,
        _ours,
        "parentRef",
        lambda fleet, earlier: _pool_entry(fleet, found, generation, earlier, now),
    )


def _merged_entries(
    entries: Any,
    gateways: set[str],
    namespace: str,
    ours: Callable[[Mapping[str, Any]], bool],
    ref_field: str,
    entry: Callable[[str, Mapping[str, Any]], dict[str, Any]],
) -> list[Any]:
    """A status list of entries per Gateway and controller (a pool's parents, a policy's
    ancestors): ours for each of `gateways` (made by `entry` from the one there was), where it was
    (a new one last); other controllers' entries as they are; ours for another Gateway, removed.
    `ref_field` names an entry's Gateway (no namespace: `namespace`)."""
    left = dict.fromkeys(sorted(gateways))
    out = []
    for earlier in entries or []:
        if not isinstance(earlier, dict) or not ours(earlier):
            out.append(earlier)
        elif (fleet := _gateway_named(earlier.get(ref_field), namespace)) in left:
            out.append(entry(fleet, earlier))
            del left[fleet]
    out.extend(entry(fleet, {}) for fleet in left)
    return out


# What says a pool's parent entry is ours: its Accepted condition's message begins so (the
# Inference Extension's v1 entries name no controller).
_POOL_ACCEPTED_BY_US = "accepted by aigw-xds"
_POOL_REFUSED_BY_US = "refused by aigw-xds"


def pool_entries_ours(status: Mapping[str, Any]) -> bool:
    """Whether an InferencePool's status has an entry of ours."""
    parents = status.get("parents")
    return isinstance(parents, list) and any(isinstance(p, dict) and _ours(p) for p in parents)


def _ours(parent: Mapping[str, Any]) -> bool:
    conditions = parent.get("conditions")
    return isinstance(conditions, list) and any(
        isinstance(c, dict)
        and c.get("type") == "Accepted"
        and str(c.get("message") or "").startswith((_POOL_ACCEPTED_BY_US, _POOL_REFUSED_BY_US))
        for c in conditions
    )


def _pool_entry(
    fleet: str, found: Mapping[str, Condition], generation: int, earlier: Mapping[str, Any], now: str
) -> dict[str, Any]:
    namespace, _, name = fleet.partition("/")
    accepted = found.get("Accepted")
    if accepted is not None and not accepted.status:
        accepted = Condition("Accepted", False, accepted.reason, f"{_POOL_REFUSED_BY_US}: {accepted.message}")
    else:
        accepted = Condition("Accepted", True, "Accepted", _POOL_ACCEPTED_BY_US)
    conditions = {**found, "Accepted": accepted}
    return {
        "parentRef": {"group": GATEWAY_API_GROUP, "kind": "Gateway", "namespace": namespace, "name": name},
        "conditions": condition_dicts(conditions, generation, list(earlier.get("conditions") or []), now),
    }


def _gateway_named(ref: Any, namespace: str) -> str:
    """The Gateway an entry's parentRef or ancestorRef names, "<ns>/<name>" (no namespace: the
    pool's or policy's, `namespace`)."""
    ref = ref if isinstance(ref, dict) else {}
    return f"{ref.get('namespace') or namespace}/{ref.get('name', '')}"


def _gateways_using(key: ResourceKey, result: CompileResult) -> set[str]:
    """The Gateways of ours ("<ns>/<name>") built from `key`: served, failed or left out."""
    return {fleet for fleet, gateway in result.gateways.items() if key in gateway.closure} | {
        fleet for fleet, closure in (*result.failed.items(), *result.left_out.items()) if key in closure
    }


def _policy_ancestors(
    key: ResourceKey,
    gateways: set[str],
    found: Mapping[str, Condition],
    generation: int,
    previous: Mapping[str, Any],
    now: str,
    controller: str,
) -> list[dict[str, Any]]:
    """A policy's status.ancestors (the Gateway API's PolicyStatus): an entry of ours per Gateway of
    ours in `gateways`, with the policy's conditions, where it was (a new one last); the entries of
    other controllers as they are; ours for another Gateway, removed. At most MAX_ANCESTORS, as the
    CRDs allow."""
    out = _merged_entries(
        previous.get("ancestors"),
        gateways,
        key.namespace,
        lambda entry: _is_ours(entry, controller),
        "ancestorRef",
        lambda fleet, earlier: _ancestor_entry(fleet, found, generation, earlier, now, controller),
    )
    return out[:MAX_ANCESTORS]


def _ancestor_entry(
    fleet: str, found: Mapping[str, Condition], generation: int, earlier: Mapping[str, Any], now: str, controller: str
) -> dict[str, Any]:
    namespace, _, name = fleet.partition("/")
    return {
        "ancestorRef": {"group": GATEWAY_API_GROUP, "kind": "Gateway", "namespace": namespace, "name": name},
        "controllerName": controller,
        "conditions": condition_dicts(found, generation, list(earlier.get("conditions") or []), now),
    }


def entries_ours(kind: str, status: Mapping[str, Any], controller: str) -> bool:
    """Whether an InferencePool's or a policy's status has an entry of ours."""
    if kind == "InferencePool":
        return pool_entries_ours(status)
    return kind in POLICY_STATUS_KINDS and bool(_ancestors_ours(status, controller, ""))


def _ancestors_ours(status: Mapping[str, Any], controller: str, namespace: str) -> set[str]:
    """The Gateways ("<ns>/<name>") of a policy's ancestor entries of ours (`namespace`: the
    policy's, for an entry that names none)."""
    entries = status.get("ancestors")
    if not isinstance(entries, list):
        return set()
    return {
        _gateway_named(e.get("ancestorRef"), namespace)
        for e in entries
        if isinstance(e, dict) and _is_ours(e, controller)
    }


def _is_ours(entry: Mapping[str, Any], controller: str) -> bool:
    return entry.get("controllerName") == controller
