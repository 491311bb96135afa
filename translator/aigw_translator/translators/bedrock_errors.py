"""AWS Bedrock error answers in the client's schema (OpenAI or Anthropic error JSON).

Bedrock names the error in the `x-amzn-errortype` response header
(`ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/`; older services put
`__type` in the body instead) and explains it in a JSON body `{"message": …}` (some services write
`Message`). The status is kept as Bedrock sent it (429 stays 429, so Envoy's retry and priority
failover on 429 and the clients' SDKs see a rate limit); the error name decides the client's error
type where the status alone would mislead (a 503 ServiceUnavailableException is Anthropic's
`overloaded_error`, a 408 ModelTimeoutException a server-side failure), and an OpenAI client also
gets it as `error.code`, so the Bedrock type stays visible.

Envoy AI Gateway puts the header's value in `error.type` itself; OpenAI clients switch on the
documented `type` values (`rate_limit_error`, …), so the name goes in `code` here instead.

AWS signature errors go on with the canonical request AWS expected, whose signed headers include
the gateway's session token: the message is cut before it (`public_message`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import (
    anthropic_error,
    anthropic_error_type,
    openai_error,
    openai_error_type,
    to_anthropic_error,
    to_openai_error,
)
from ..sse import encode_event
from .aws_eventstream import StreamFailure
from .base import load_json

ERROR_TYPE_HEADER = "x-amzn-errortype"

# Bedrock error name -> (OpenAI error type, Anthropic error type), where the name says more than
# the status does. Names not listed take the status's types.
_TYPES: dict[str, tuple[str, str]] = {
    "ThrottlingException": ("rate_limit_error", "rate_limit_error"),
    "ServiceQuotaExceededException": ("rate_limit_error", "rate_limit_error"),
    "ServiceUnavailableException": ("server_error", "overloaded_error"),
    "InternalServerException": ("server_error", "api_error"),
    "ModelErrorException": ("server_error", "api_error"),
    "ModelStreamErrorException": ("server_error", "api_error"),
    "ModelTimeoutException": ("server_error", "api_error"),
    "AccessDeniedException": ("permission_error", "permission_error"),
    "ValidationException": ("invalid_request_error", "invalid_request_error"),
    "ResourceNotFoundException": ("not_found_error", "not_found_error"),
    # The signature layer (com.amazon.coral.service): the gateway's AWS credentials were refused.
    "UnrecognizedClientException": ("authentication_error", "authentication_error"),
    "InvalidSignatureException": ("authentication_error", "authentication_error"),
    "IncompleteSignatureException": ("authentication_error", "authentication_error"),
    "MissingAuthenticationTokenException": ("authentication_error", "authentication_error"),
    "ExpiredTokenException": ("authentication_error", "authentication_error"),
}

# The longest error name passed on (a header is the backend's; nothing unbounded reaches a client).
_MAX_NAME = 100


def public_message(message: str) -> str:
    """An AWS error message as a client may read it: a signature error's message goes on with the
    canonical request AWS expected, whose signed headers include the gateway's session token."""
    for marker in ("The Canonical String for this request", "The String-to-Sign"):
        index = message.find(marker)
        if index >= 0:
            message = message[:index].rstrip()
    return message


def error_name(headers: Mapping[str, str], body: Any = None) -> str | None:
    """The Bedrock error name: `x-amzn-errortype` up to its `:`, else the body's `__type` after
    its `#` (`com.amazon#ServiceUnavailableException`). None when neither says."""
    raw = headers.get(ERROR_TYPE_HEADER)
    if not raw and isinstance(body, dict) and isinstance(body.get("__type"), str):
        raw = body["__type"].rsplit("#", 1)[-1]
    if not isinstance(raw, str):
        return None
    name = raw.split(":", 1)[0].strip()
    if not name or len(name) > _MAX_NAME or not name.replace("_", "").isalnum():
        return None
    return name


def _message(obj: Any) -> str | None:
    """The message of a Bedrock error body; None for a body of another shape."""
    if not isinstance(obj, dict) or isinstance(obj.get("error"), dict):
        return None
    for key in ("message", "Message"):
        if isinstance(obj.get(key), str):
            return public_message(obj[key])
    return None


def _status_type(status: int, openai: bool) -> str:
    if status == 424:  # the model failed while processing (ModelErrorException), not the request
        return "server_error" if openai else "api_error"
    return openai_error_type(status) if openai else anthropic_error_type(status)


def _model_status(status: int, name: str | None, obj: Any) -> int:
    """A ModelErrorException's (424) model's own status, which it carries as originalStatusCode
    (Claude's 529: overloaded) and says more; else the status as it came."""
    original = obj.get("originalStatusCode") if isinstance(obj, dict) else None
    if name == "ModelErrorException" and isinstance(original, int) and 400 <= original <= 599:
        return original
    return status


def anthropic_type(status: int, name: str | None) -> str:
    """The Anthropic error type of a Bedrock error (a response's, or an in-stream exception's, whose
    names start lower-case: `throttlingException`)."""
    if status == 529:  # the model was overloaded, whatever Bedrock names the failure: Claude's clients retry it
        return "overloaded_error"
    key = name[:1].upper() + name[1:] if name else None
    return _TYPES[key][1] if key in _TYPES else _status_type(status, openai=False)


def openai_stream_error(failure: StreamFailure) -> bytes:
    """The failure that ended a Bedrock stream as an OpenAI client's error event (the Bedrock name
    is `code`)."""
    return encode_event(openai_error(failure.status, failure.message, failure.openai_type, code=failure.code))


def anthropic_stream_error(failure: StreamFailure) -> bytes:
    """The failure that ended a Bedrock stream as an Anthropic client's `error` event."""
    body = anthropic_error(failure.status, failure.message, anthropic_type(failure.status, failure.code))
    return encode_event(body, "error")


def to_openai(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> bytes:
    """A Bedrock error answer as an OpenAI error; the Bedrock name is `code`."""
    obj = load_json(body)
    name = error_name(headers or {}, obj)
    type_ = _TYPES[name][0] if name in _TYPES else _status_type(status, openai=True)
    message = _message(obj)
    if message is not None:
        return openai_error(status, message, type_, code=name)
    if name is not None and obj is None:
        # Not JSON (a proxy's page, an empty body): the name and the status say what happened.
        text = body.decode("utf-8", errors="replace").strip()[:2000]
        return openai_error(status, public_message(text) or f"AWS Bedrock returned {name}", type_, code=name)
    return to_openai_error(status, body)


def to_anthropic(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> bytes:
    """A Bedrock error answer as an Anthropic error (whose shape has no code: the name is only in
    the type it decides)."""
    obj = load_json(body)
    name = error_name(headers or {}, obj)
    type_ = anthropic_type(_model_status(status, name, obj), name)
    message = _message(obj)
    if message is not None:
        return anthropic_error(status, message, type_)
    if name is not None and obj is None:
        text = body.decode("utf-8", errors="replace").strip()[:2000]
        return anthropic_error(status, public_message(text) or f"AWS Bedrock returned {name}", type_)
    return to_anthropic_error(status, body)
