"""Status validation the real CRD schemas apply on writes to ``/status`` (pure functions).

Every conditions list is ``[]metav1.Condition`` as the Gateway API and Envoy AI Gateway CRDs
declare it: type (required, qualified-name pattern, at most 316 characters, unique: a list-map keyed
by type), status (required, True|False|Unknown), reason (required, 1-1024 characters,
``^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$``), message (required, at most 32768), lastTransitionTime
(required, RFC 3339 date-time), observedGeneration (optional integer >= 0); Gateway API and
aigateway.envoyproxy.io lists hold at most 8. Gateway listener statuses (``status.listeners[]``)
need name, supportedKinds, attachedRoutes and conditions; a PolicyStatus's ``status.ancestors[]``
(at most 16) an ancestorRef with a name, a domain-prefixed controllerName and 1 to 8 conditions.
Errors come back as (reason, field, message) in the real server's field-path text.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from .errors import quote

Cause = tuple[str, str, str]

_TYPE = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_STATUSES = ("True", "False", "Unknown")
# status lists whose entries carry their own conditions (Gateway listeners, route/policy parents)
_NESTED = ("listeners", "parents", "ancestors")
_MAX_LISTENERS = 64
# PolicyStatus (Gateway API): at most 16 ancestors, each with an ancestorRef naming its object, a
# domain-prefixed controllerName and 1 to 8 conditions.
_MAX_ANCESTORS = 16
_CONTROLLER_NAME = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$"
)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "null"


def _type_error(field: str, value: Any, want: str) -> Cause:
    got = _json_type(value)
    return ("FieldValueTypeInvalid", field, f'Invalid value: "{got}": {field} in body must be of type {want}: "{got}"')


def is_rfc3339(value: str) -> bool:
    if not _RFC3339.match(value):
        return False
    try:
        datetime.fromisoformat(value.replace("z", "Z").replace("t", "T").replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _string(cond: dict[str, Any], key: str, path: str, out: list[Cause]) -> str | None:
    field = f"{path}.{key}"
    if key not in cond:
        out.append(("FieldValueRequired", field, "Required value"))
        return None
    value = cond[key]
    if not isinstance(value, str):
        out.append(_type_error(field, value, "string"))
        return None
    return value


def _bounded_match(value: str | None, field: str, limit: int, pattern: re.Pattern[str], out: list[Cause]) -> None:
    """The CRD's maxLength and pattern checks of a string field, with the API server's messages."""
    if value is None:
        return
    if len(value) > limit:
        out.append(("FieldValueTooLong", field, f"Too long: may not be more than {limit} bytes"))
    if not pattern.match(value):
        message = f"Invalid value: {quote(value)}: {field} in body should match '{pattern.pattern}'"
        out.append(("FieldValueInvalid", field, message))


def validate_condition(cond: Any, path: str) -> list[Cause]:
    if not isinstance(cond, dict):
        return [_type_error(path, cond, "object")]
    out: list[Cause] = []
    _bounded_match(_string(cond, "type", path, out), f"{path}.type", 316, _TYPE, out)
    status = _string(cond, "status", path, out)
    if status is not None and status not in _STATUSES:
        supported = ", ".join(quote(s) for s in _STATUSES)
        out.append(
            (
                "FieldValueNotSupported",
                f"{path}.status",
                f"Unsupported value: {quote(status)}: supported values: {supported}",
            )
        )
    _bounded_match(_string(cond, "reason", path, out), f"{path}.reason", 1024, _REASON, out)
    message = _string(cond, "message", path, out)
    if message is not None and len(message) > 32768:
        out.append(("FieldValueTooLong", f"{path}.message", "Too long: may not be more than 32768 bytes"))
    ltt = _string(cond, "lastTransitionTime", path, out)
    if ltt is not None and not is_rfc3339(ltt):
        field = f"{path}.lastTransitionTime"
        out.append(
            (
                "FieldValueInvalid",
                field,
                f"Invalid value: {quote(ltt)}: {field} in body must be of type date-time: {quote(ltt)}",
            )
        )
    if "observedGeneration" in cond:
        og = cond["observedGeneration"]
        field = f"{path}.observedGeneration"
        if not isinstance(og, int) or isinstance(og, bool):
            out.append(_type_error(field, og, "integer"))
        elif og < 0:
            out.append(
                (
                    "FieldValueInvalid",
                    field,
                    f"Invalid value: {og}: {field} in body should be greater than or equal to 0",
                )
            )
    return out


def validate_conditions(conditions: Any, path: str, max_items: int | None) -> list[Cause]:
    if not isinstance(conditions, list):
        return [_type_error(path, conditions, "array")]
    out: list[Cause] = []
    if max_items is not None and len(conditions) > max_items:
        out.append(("FieldValueTooMany", path, f"Too many: {len(conditions)}: must have at most {max_items} items"))
    seen: set[str] = set()
    for i, cond in enumerate(conditions):
        out.extend(validate_condition(cond, f"{path}[{i}]"))
        ctype = cond.get("type") if isinstance(cond, dict) else None
        if isinstance(ctype, str):
            if ctype in seen:
                out.append(
                    (
                        "FieldValueDuplicate",
                        f"{path}[{i}]",
                        f'Duplicate value: map[string]interface {{}}{{"type":{quote(ctype)}}}',
                    )
                )
            seen.add(ctype)
    return out


def _validate_listener(entry: Any, path: str, max_conditions: int | None) -> list[Cause]:
    if not isinstance(entry, dict):
        return [_type_error(path, entry, "object")]
    out: list[Cause] = []
    for key in ("name", "supportedKinds", "attachedRoutes", "conditions"):
        if key not in entry:
            out.append(("FieldValueRequired", f"{path}.{key}", "Required value"))
    if "name" in entry and not isinstance(entry["name"], str):
        out.append(_type_error(f"{path}.name", entry["name"], "string"))
    if "attachedRoutes" in entry:
        n = entry["attachedRoutes"]
        if not isinstance(n, int) or isinstance(n, bool):
            out.append(_type_error(f"{path}.attachedRoutes", n, "integer"))
    kinds = entry.get("supportedKinds")
    if "supportedKinds" in entry:
        if not isinstance(kinds, list):
            out.append(_type_error(f"{path}.supportedKinds", kinds, "array"))
        else:
            if len(kinds) > 8:
                out.append(
                    (
                        "FieldValueTooMany",
                        f"{path}.supportedKinds",
                        f"Too many: {len(kinds)}: must have at most 8 items",
                    )
                )
            for j, k in enumerate(kinds):
                kpath = f"{path}.supportedKinds[{j}]"
                if not isinstance(k, dict):
                    out.append(_type_error(kpath, k, "object"))
                elif not isinstance(k.get("kind"), str) or not k["kind"]:
                    out.append(("FieldValueRequired", f"{kpath}.kind", "Required value"))
    if "conditions" in entry:
        out.extend(validate_conditions(entry["conditions"], f"{path}.conditions", max_conditions))
    return out


def _validate_ancestor(entry: Any, path: str) -> list[Cause]:
    if not isinstance(entry, dict):
        return [_type_error(path, entry, "object")]
    out: list[Cause] = []
    for key in ("ancestorRef", "controllerName", "conditions"):
        if key not in entry:
            out.append(("FieldValueRequired", f"{path}.{key}", "Required value"))
    ref = entry.get("ancestorRef")
    if "ancestorRef" in entry:
        if not isinstance(ref, dict):
            out.append(_type_error(f"{path}.ancestorRef", ref, "object"))
        elif not isinstance(ref.get("name"), str) or not ref["name"]:
            out.append(("FieldValueRequired", f"{path}.ancestorRef.name", "Required value"))
    name = entry.get("controllerName")
    if "controllerName" in entry and (not isinstance(name, str) or not _CONTROLLER_NAME.match(name)):
        message = f"Invalid value: {quote(str(name))}: should match '{_CONTROLLER_NAME.pattern}'"
        out.append(("FieldValueInvalid", f"{path}.controllerName", message))
    conditions = entry.get("conditions")
    if "conditions" in entry:
        if isinstance(conditions, list) and not conditions:
            out.append(("FieldValueInvalid", f"{path}.conditions", "Invalid value: 0: should have at least 1 items"))
        out.extend(validate_conditions(conditions, f"{path}.conditions", 8))
    return out


def validate_status(status: Any, max_conditions: int | None) -> list[Cause]:
    """The causes that make a status write Invalid (empty: valid)."""
    if status is None:
        return []
    if not isinstance(status, dict):
        return [_type_error("status", status, "object")]
    out: list[Cause] = []
    if "conditions" in status:
        out.extend(validate_conditions(status["conditions"], "status.conditions", max_conditions))
    for key in _NESTED:
        if key not in status:
            continue
        entries = status[key]
        path = f"status.{key}"
        if not isinstance(entries, list):
            out.append(_type_error(path, entries, "array"))
            continue
        if key == "ancestors":
            if len(entries) > _MAX_ANCESTORS:
                message = f"Too many: {len(entries)}: must have at most {_MAX_ANCESTORS} items"
                out.append(("FieldValueTooMany", path, message))
            for i, entry in enumerate(entries):
                out.extend(_validate_ancestor(entry, f"{path}[{i}]"))
        elif key == "listeners":
            if len(entries) > _MAX_LISTENERS:
                out.append(
                    ("FieldValueTooMany", path, f"Too many: {len(entries)}: must have at most {_MAX_LISTENERS} items")
                )
            for i, entry in enumerate(entries):
                out.extend(_validate_listener(entry, f"{path}[{i}]", max_conditions))
        else:
            for i, entry in enumerate(entries):
                if isinstance(entry, dict) and "conditions" in entry:
                    out.extend(validate_conditions(entry["conditions"], f"{path}[{i}].conditions", max_conditions))
    return out
