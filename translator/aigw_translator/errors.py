"""Error bodies in each client schema, and mapping of upstream errors into the client's schema.

Gateway errors never echo request headers, so no credential can end up in an error body.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from .endpoints import ClientSchema

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# Anthropic error type -> OpenAI error type.
_ANTHROPIC_TO_OPENAI = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "request_too_large": "invalid_request_error",
    "rate_limit_error": "rate_limit_error",
    "billing_error": "insufficient_quota",
    "api_error": "server_error",
    "timeout_error": "server_error",
    "overloaded_error": "server_error",
}


class GatewayError(Exception):
    """An error the gateway answers itself, rendered in the client's schema."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class EndpointNotServed(GatewayError):
    """The backend's schema cannot serve the client's endpoint (422: the model the client asked
    for is not served that way)."""

    def __init__(self, endpoint: str, schema: str) -> None:
        super().__init__(422, f"endpoint {endpoint} is not supported by backend schema {schema}")


def reply_level(status: int) -> int:
    """The log level of a reply the gateway gives itself: a warning when the gateway is at fault
    (5xx: something for its operator), else info (the client's request was wrong)."""
    return logging.WARNING if status >= 500 else logging.INFO


class CredentialsUnavailable(GatewayError):
    """No `credential` (e.g. "AWS credentials") could be had for a backend: the request fails with a
    503 in the client's schema; other backends keep serving."""

    def __init__(self, backend: str, credential: str, reason: str) -> None:
        super().__init__(503, f"the gateway has no {credential} for this backend ({reason})")
        self.backend = backend
        self.reason = reason


def openai_error_type(status: int) -> str:
    return _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def anthropic_error_type(status: int) -> str:
    if status in _ANTHROPIC_TYPES:
        return _ANTHROPIC_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def openai_error(
    status: int, message: str, type_: str | None = None, param: str | None = None, code: str | None = None
) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_ or openai_error_type(status), "param": param, "code": code}}
    )


def anthropic_error(status: int, message: str, type_: str | None = None) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": type_ or anthropic_error_type(status), "message": message}})


def cohere_error(message: str) -> bytes:
    """Cohere's error body: {"message": ...} (the status says the kind; its SDKs read both)."""
    return orjson.dumps({"message": message})


def gateway_error_body(schema: ClientSchema, status: int, message: str, code: str | None = None) -> bytes:
    if schema is ClientSchema.ANTHROPIC:
        return anthropic_error(status, message)
    if schema is ClientSchema.COHERE:
        return cohere_error(message)
    return openai_error(status, message, code=code)


def _parse(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _raw_message(body: bytes, status: int) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text[:2000] if text else f"upstream returned status {status}"


def _extract(obj: Any) -> tuple[str, str | None, Any, Any] | None:
    """(message, type, param, code) of an OpenAI- or Anthropic-shaped error object."""
    if not isinstance(obj, dict):
        return None
    err = obj.get("error")
    if isinstance(err, dict):
        message = err.get("message")
        if not isinstance(message, str):
            message = orjson.dumps(err).decode()
        type_ = err.get("type") if isinstance(err.get("type"), str) else None
        return message, type_, err.get("param"), err.get("code")
    if isinstance(err, str):
        return err, None, None, None
    if isinstance(obj.get("message"), str):
        return obj["message"], obj.get("type") if isinstance(obj.get("type"), str) else None, None, None
    return None


def to_openai_error(status: int, body: bytes) -> bytes:
    """Any upstream error body as an OpenAI error object. OpenAI-shaped bodies pass unchanged."""
    obj = _parse(body)
    if isinstance(obj, dict) and isinstance(obj.get("error"), dict) and obj.get("type") != "error":
        return body
    extracted = _extract(obj)
    if extracted is None:
        return openai_error(status, _raw_message(body, status), code=str(status))
    message, type_, param, code = extracted
    if obj.get("type") == "error" and type_:
        type_ = _ANTHROPIC_TO_OPENAI.get(type_, type_)
    return openai_error(status, message, type_ or openai_error_type(status), param, code)


def to_anthropic_error(status: int, body: bytes) -> bytes:
    """Any upstream error body as an Anthropic error object. Anthropic-shaped bodies pass unchanged."""
    obj = _parse(body)
    if isinstance(obj, dict) and obj.get("type") == "error" and isinstance(obj.get("error"), dict):
        return body
    extracted = _extract(obj)
    if extracted is None:
        return anthropic_error(status, _raw_message(body, status))
    message = extracted[0]
    return anthropic_error(status, message)


def to_cohere_error(status: int, body: bytes) -> bytes:
    """Any upstream error body as a Cohere error object. Cohere-shaped bodies pass unchanged."""
    obj = _parse(body)
    if isinstance(obj, dict) and isinstance(obj.get("message"), str) and "error" not in obj:
        return body
    extracted = _extract(obj)
    return cohere_error(extracted[0] if extracted is not None else _raw_message(body, status))


# How a provider's 401 begins for the client: the gateway's credential was rejected, not the client's
# (which never reaches a provider), as the routes Envoy serves alone say it.
CREDENTIAL_REJECTED = "the provider rejected the gateway's credential for this backend (status {status})"


def credential_rejected(body: bytes, status: int) -> bytes:
    """A provider's rejection of the credential it was sent (a 401; AWS's 403s), in the client's
    shape already, saying whose credential was rejected before what the provider said ("Incorrect
    API key provided" read as the client's own key)."""
    obj = _parse(body)
    holder = obj.get("error") if isinstance(obj, dict) and isinstance(obj.get("error"), dict) else obj
    if not isinstance(holder, dict) or not isinstance(holder.get("message"), str):
        return body
    holder["message"] = f"{CREDENTIAL_REJECTED.format(status=status)}: {holder['message']}"
    return orjson.dumps(obj)


# Anthropic's 529 (overloaded), which no other API answers: their clients get a 503, which they
# retry as Anthropic's clients retry a 529.
OVERLOADED = 529
# OpenAI's 429 for an account out of credit (insufficient_quota), which retrying does not mend:
# Anthropic's API says it with a 402 (billing_error), which its clients do not retry.
QUOTA_EXHAUSTED, BILLING = "insufficient_quota", 402


def client_status(schema: ClientSchema, status: int, body: bytes = b"") -> int:
    """A provider's error status (and its body) as the client's API says it."""
    if status == OVERLOADED and schema is not ClientSchema.ANTHROPIC:
        return 503
    if status == 429 and schema is ClientSchema.ANTHROPIC:
        extracted = _extract(_parse(body))
        if extracted is not None and QUOTA_EXHAUSTED in (extracted[1], extracted[3]):
            return BILLING
    return status


def to_client_error(schema: ClientSchema, status: int, body: bytes) -> bytes:
    if schema is ClientSchema.ANTHROPIC:
        return to_anthropic_error(status, body)
    if schema is ClientSchema.COHERE:
        return to_cohere_error(status, body)
    return to_openai_error(status, body)
