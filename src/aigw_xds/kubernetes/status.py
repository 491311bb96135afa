"""The status each object should have (pure): conditions from the compile, Gateways' Programmed
from what their Envoys applied, in the shape the Gateway API and Envoy AI Gateway CRDs define.

Only objects of our Gateways get status: our GatewayClasses, their Gateways, and what those
Gateways are built from (their closure), so objects served by another controller in the same
cluster are left alone. lastTransitionTime changes only when a condition's status does; a status
equal to the one already written is not written again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..compile import CompileResult
from ..compile.status import Condition
from ..keys import ResourceKey
from ..resources import ResourceSet
from ..sources.kube_kinds import AI_GATEWAY, STATUS_KINDS
from ..xds.acks import FleetSync

MAX_MESSAGE = 32_768
_CLASS_ACCEPTED = {"Accepted": Condition("Accepted", True, "Accepted", "handled by aigw-xds")}


@dataclass(frozen=True)
class Current:
    """An object as last read from the API: what observedGeneration and lastTransitionTime
    are computed from."""

    generation: int
    status: Mapping[str, Any]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def owned_keys(result: CompileResult, resources: ResourceSet) -> set[ResourceKey]:
    """The objects whose status we write."""
    owned = {k for k in resources.items if k.kind in ("GatewayClass", "Gateway")}
    for gateway in result.gateways.values():
        owned |= gateway.closure
    for closure in result.failed.values():
        owned |= closure
    return {k for k in owned if k.kind in STATUS_KINDS}


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
        if key is None:
            continue
        by_type = conditions.setdefault(key, {})
        accepted = by_type.get("Accepted")
        if accepted is None or accepted.status:
            message = f"{diagnostic.field}: {diagnostic.message}" if diagnostic.field else diagnostic.message
            by_type["Accepted"] = Condition("Accepted", False, "Invalid", message)
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
        hint = f'no Envoy of this Gateway is connected (node.cluster "{key.ref}")'
        return Condition("Programmed", False, "Pending", hint)
    if not sync.programmed:
        message = f"{sync.applied} of {sync.connected} Envoys applied configuration {sync.version}"
        return Condition("Programmed", False, "Pending", message)
    return Condition("Programmed", True, "Programmed", f"{sync.connected} Envoys applied configuration {sync.version}")


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


def _listeners(
    key: ResourceKey, resources: ResourceSet, conditions: list[dict[str, Any]], current: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """status.listeners of a Gateway: per listener, the AIGatewayRoutes attached to it."""
    loaded = resources.items.get(key)
    if loaded is None:
        return []
    attached: dict[str | None, int] = {}
    for route in resources.of_kind("AIGatewayRoute"):
        for parent in route.resource.spec.parentRefs:
            if parent.name == key.name and (parent.namespace or route.key.namespace) == key.namespace:
                attached[parent.sectionName] = attached.get(parent.sectionName, 0) + 1
    previous = {entry.get("name"): entry for entry in current.get("listeners") or [] if isinstance(entry, dict)}
    out = []
    for listener in loaded.resource.spec.listeners:
        before = (previous.get(listener.name) or {}).get("conditions") or []
        since = {c.get("type"): c.get("lastTransitionTime") for c in before if isinstance(c, dict)}
        listener_conditions = [
            {**c, "lastTransitionTime": since.get(c["type"]) or c["lastTransitionTime"]}
            if any(b.get("type") == c["type"] and b.get("status") == c["status"] for b in before)
            else c
            for c in conditions
        ]
        out.append(
            {
                "name": listener.name,
                "supportedKinds": [{"group": AI_GATEWAY, "kind": "AIGatewayRoute"}],
                "attachedRoutes": attached.get(listener.name, 0) + attached.get(None, 0),
                "conditions": listener_conditions,
            }
        )
    return out


def status_updates(
    result: CompileResult,
    resources: ResourceSet,
    sync: Callable[[str], FleetSync],
    current: Callable[[ResourceKey], Current | None],
    now: str,
) -> dict[ResourceKey, dict[str, Any]]:
    """The status patches to write: per owned object whose status differs from what it has."""
    conditions = desired_conditions(result, sync)
    updates: dict[ResourceKey, dict[str, Any]] = {}
    for key in sorted(owned_keys(result, resources)):
        seen = current(key)
        found = conditions.get(key) or (_CLASS_ACCEPTED if key.kind == "GatewayClass" else None)
        if seen is None or not found:
            continue
        status: dict[str, Any] = {
            "conditions": condition_dicts(found, seen.generation, list(seen.status.get("conditions") or []), now)
        }
        if key.kind == "Gateway":
            listener_conditions = [c for c in status["conditions"] if c["type"] in ("Accepted", "Programmed")] + [
                {
                    "type": "ResolvedRefs",
                    "status": "True",
                    "reason": "ResolvedRefs",
                    "message": "",
                    "observedGeneration": seen.generation,
                    "lastTransitionTime": now,
                }
            ]
            status["listeners"] = _listeners(key, resources, listener_conditions, seen.status)
        if any(seen.status.get(field) != value for field, value in status.items()):
            updates[key] = status
    return updates
