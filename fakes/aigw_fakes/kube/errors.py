"""The API server's failure answers: a ``Status`` object (kind Status, apiVersion v1) with the
reason, code and message text the real kube-apiserver sends, raised as ``ApiError``."""

from __future__ import annotations

import json
from typing import Any

from .resources import ResourceType


class ApiError(Exception):
    """A request the API server refuses; ``status`` is the Status object it answers."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    @property
    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            out["details"] = self.details
        return out


def _details(res: ResourceType, name: str | None, kind: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if name:
        d["name"] = name
    if res.group:
        d["group"] = res.group
    d["kind"] = kind or res.plural
    return d


def not_found(res: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found', _details(res, name))


def already_exists(res: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{res.qualified} "{name}" already exists', _details(res, name))


STALE = "the object has been modified; please apply your changes to the latest version and try again"


def conflict(res: ResourceType, name: str, why: str = STALE) -> ApiError:
    return ApiError(
        409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": {why}', _details(res, name)
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def route_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def method_not_allowed(method: str) -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", f"the server does not allow this method on the requested resource ({method})"
    )


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def unsupported_media_type(content_type: str) -> ApiError:
    if content_type.startswith("application/apply-patch"):  # real servers accept it; this stand-in does not
        return ApiError(415, "UnsupportedMediaType", "server-side apply is not emulated by this stand-in API server")
    return ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
    )


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def too_old_resource_version(requested: int, oldest: int) -> ApiError:
    return expired(f"too old resource version: {requested} ({oldest})")


def expired_continue() -> ApiError:
    return expired(
        "The provided continue parameter is too old to display a consistent list result. "
        "You can start a new list without the continue parameter."
    )


def forbidden(
    user: str, verb: str, res: ResourceType, subresource: str | None, namespace: str | None, name: str | None
) -> ApiError:
    resource = f"{res.plural}/{subresource}" if subresource else res.plural
    what = f'{res.qualified} "{name}"' if name else res.qualified
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    return ApiError(
        403,
        "Forbidden",
        f'{what} is forbidden: User "{user}" cannot {verb} resource "{resource}" in API group "{res.group}" {scope}',
        _details(res, name),
    )


def invalid(res: ResourceType, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 Invalid; each cause is (reason, field, message) where message is the part after
    ``<field>: `` (e.g. ``Required value``)."""
    texts = [f"{field}: {msg}" for _reason, field, msg in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details = _details(res, name, kind=res.kind)
    details["causes"] = [{"reason": reason, "message": msg, "field": field} for reason, field, msg in causes]
    return ApiError(422, "Invalid", f'{res.qualified_kind} "{name}" is invalid: {joined}', details)


def quote(value: Any) -> str:
    """A value as the real server's field errors print it (Go's %q for strings, JSON otherwise)."""
    return json.dumps(value, ensure_ascii=False)
