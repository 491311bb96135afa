"""What the real API server does to the built-in types it decodes, for the few this stand-in serves
(pure functions): Secret ``stringData`` folded into base64 ``data`` (and ``data`` that is not
base64 refused), Service defaults (type ClusterIP, a cluster IP kept across updates, port protocol
TCP, targetPort = port), Lease MicroTime fields re-encoded in UTC with microseconds."""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import UTC, datetime
from typing import Any

from . import errors
from .resources import ResourceType

_MICRO_TIME_FIELDS = ("acquireTime", "renewTime")


def micro_time(value: Any, field: str) -> str:
    """A MicroTime as the API server writes it back (``2006-01-02T15:04:05.000000Z``); 400 if unparsable."""
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise errors.bad_request(f'{field}: parsing time "{value}" as RFC 3339: cannot parse') from exc
    if parsed.tzinfo is None:
        raise errors.bad_request(f'{field}: parsing time "{value}" as RFC 3339: no time zone')
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _lease(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec")
    if not isinstance(spec, dict) or not any(spec.get(f) for f in _MICRO_TIME_FIELDS):
        return obj
    times = {f: micro_time(spec[f], f"spec.{f}") for f in _MICRO_TIME_FIELDS if spec.get(f)}
    return {**obj, "spec": {**spec, **times}}


def _secret(obj: dict[str, Any]) -> dict[str, Any]:
    data = obj.get("data") or {}
    string_data = obj.get("stringData") or {}
    if not isinstance(data, dict) or not isinstance(string_data, dict):
        raise errors.bad_request("Secret data and stringData must be objects of strings")
    for key, value in data.items():
        try:
            base64.b64decode(str(value), validate=True)
        except binascii.Error as exc:
            raise errors.bad_request(
                f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data '
                f"at input byte 0 (key {key!r})"
            ) from exc
    if "stringData" not in obj:
        return obj
    merged = {**data, **{k: base64.b64encode(str(v).encode()).decode() for k, v in string_data.items()}}
    out = {k: v for k, v in obj.items() if k != "stringData"}
    if merged:
        out["data"] = merged
    return out


def _cluster_ip(namespace: str, name: str) -> str:
    """A stable address in 10.96.0.0/12 for a Service (the stand-in's allocator)."""
    n = int.from_bytes(hashlib.sha256(f"{namespace}/{name}".encode()).digest()[:4], "big") % ((1 << 20) - 2) + 1
    return f"10.{96 + (n >> 16)}.{(n >> 8) & 0xFF}.{n & 0xFF}"


def _service(obj: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return obj
    spec = dict(spec)
    spec.setdefault("type", "ClusterIP")
    if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
        old = (current or {}).get("spec") or {}
        meta = obj.get("metadata") or {}
        spec["clusterIP"] = old.get("clusterIP") or _cluster_ip(meta.get("namespace", ""), meta.get("name", ""))
    if spec.get("clusterIP") and not spec.get("clusterIPs"):
        spec["clusterIPs"] = [spec["clusterIP"]]
    ports = spec.get("ports")
    if isinstance(ports, list):
        spec["ports"] = [
            {"protocol": "TCP", **p, "targetPort": p.get("targetPort", p.get("port"))} if isinstance(p, dict) else p
            for p in ports
        ]
    return {**obj, "spec": spec}


def prepare(res: ResourceType, obj: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    """``obj`` (a create, or an update of ``current``) as the real server would store it."""
    if res.key == ("", "secrets"):
        return _secret(obj)
    if res.key == ("", "services"):
        return _service(obj, current)
    if res.key == ("coordination.k8s.io", "leases"):
        return _lease(obj)
    return obj
