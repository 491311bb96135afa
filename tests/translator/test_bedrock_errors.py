"""Bedrock error answers (x-amzn-errortype header + {"message"} body) in the client's schema, and
the router phase handing the backend's response headers to the translator."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aigw.translator.v1 import config_pb2
from aigw_translator.server import ExternalProcessor
from aigw_translator.translators.bedrock_errors import error_name, to_anthropic, to_openai

from .extproc_helpers import drive, request_body, request_headers, response_body, response_headers

BEDROCK_NS = "http://internal.amazon.com/coral/com.amazon.bedrock/"
AUTH_NS = "http://internal.amazon.com/coral/com.amazon.coral.service/"


def _h(name: str, ns: str = BEDROCK_NS) -> dict[str, str]:
    return {"x-amzn-errortype": f"{name}:{ns}"}


@pytest.mark.parametrize(
    ("status", "name", "openai_type", "anthropic_type"),
    [
        (429, "ThrottlingException", "rate_limit_error", "rate_limit_error"),
        (503, "ServiceUnavailableException", "server_error", "overloaded_error"),
        (408, "ModelTimeoutException", "server_error", "api_error"),
        (403, "AccessDeniedException", "permission_error", "permission_error"),
        (400, "ValidationException", "invalid_request_error", "invalid_request_error"),
        (404, "ResourceNotFoundException", "not_found_error", "not_found_error"),
        (429, "ModelNotReadyException", "rate_limit_error", "rate_limit_error"),
        (503, "ModelNotReadyException", "server_error", "api_error"),
        (424, "ModelErrorException", "server_error", "api_error"),
        (500, "InternalServerException", "server_error", "api_error"),
        (400, "ServiceQuotaExceededException", "rate_limit_error", "rate_limit_error"),
        (403, "UnrecognizedClientException", "authentication_error", "authentication_error"),
        # A name the gateway does not know: the status decides.
        (409, "BrandNewException", "invalid_request_error", "invalid_request_error"),
    ],
)
def test_the_error_type_header_decides_the_type_and_the_status_is_kept(
    status: int, name: str, openai_type: str, anthropic_type: str
) -> None:
    body = b'{"message":"Too many requests, please wait before trying again."}'
    out = json.loads(to_openai(status, body, _h(name)))
    assert out == {
        "error": {
            "message": "Too many requests, please wait before trying again.",
            "type": openai_type,
            "param": None,
            "code": name,
        }
    }
    assert json.loads(to_anthropic(status, body, _h(name))) == {
        "type": "error",
        "error": {"type": anthropic_type, "message": "Too many requests, please wait before trying again."},
    }


@pytest.mark.parametrize(
    ("original", "anthropic_type"), [(529, "overloaded_error"), (500, "api_error"), (None, "api_error")]
)
def test_a_model_error_says_what_the_model_answered(original: int | None, anthropic_type: str) -> None:
    """A ModelErrorException (424) carries the model's own status (originalStatusCode): Claude's 529
    is overloaded_error for an Anthropic client, which its SDKs treat as such, as the same failure in
    a stream is (a diff review found the whole answer's path left out)."""
    body: dict[str, object] = {"message": "Model is overloaded"}
    if original is not None:
        body["originalStatusCode"] = original
    out = json.loads(to_anthropic(424, json.dumps(body).encode(), _h("ModelErrorException")))
    assert out["error"]["type"] == anthropic_type


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        (_h("ThrottlingException"), None, "ThrottlingException"),
        (_h("InvalidSignatureException", AUTH_NS), None, "InvalidSignatureException"),
        ({"x-amzn-errortype": "ValidationException"}, None, "ValidationException"),
        ({}, {"__type": "com.amazon.coral.service#ThrottlingException"}, "ThrottlingException"),
        ({}, {"message": "m"}, None),
        ({"x-amzn-errortype": ""}, None, None),
        # Not a name: never passed on.
        ({"x-amzn-errortype": "<script>:x"}, None, None),
        ({"x-amzn-errortype": "A" * 200}, None, None),
    ],
)
def test_error_name(headers: dict[str, str], body: Any, expected: str | None) -> None:
    assert error_name(headers, body) == expected


def test_capital_message_and_signature_errors_are_cut() -> None:
    message = (
        "The request signature we calculated does not match the signature you provided.\n\n"
        "The Canonical String for this request should have been\n'POST\nx-amz-security-token:SECRETTOKEN\n'"
    )
    body = json.dumps({"Message": message}).encode()
    headers = _h("InvalidSignatureException", AUTH_NS)
    for render in (to_openai, to_anthropic):
        text = render(403, body, headers).decode()
        assert "SECRETTOKEN" not in text and "Canonical" not in text
        assert "does not match the signature" in text


@pytest.mark.parametrize("body", [b"<html><body>Service Unavailable</body></html>", b""])
def test_a_body_that_is_not_json_keeps_the_status_and_the_name(body: bytes) -> None:
    out = json.loads(to_openai(503, body, _h("ServiceUnavailableException")))["error"]
    assert out["type"] == "server_error" and out["code"] == "ServiceUnavailableException"
    assert out["message"] == (body.decode() or "AWS Bedrock returned ServiceUnavailableException")
    anthropic = json.loads(to_anthropic(503, body, _h("ServiceUnavailableException")))
    assert anthropic["error"]["type"] == "overloaded_error" and anthropic["error"]["message"]


def test_without_a_name_the_status_decides_and_non_json_is_wrapped() -> None:
    out = json.loads(to_openai(502, b"<html>bad gateway</html>"))["error"]
    assert out["type"] == "server_error" and "bad gateway" in out["message"]
    out = json.loads(to_anthropic(502, b"<html>bad gateway</html>"))["error"]
    assert out["type"] == "api_error" and "bad gateway" in out["message"]


# ----------------------------------------------------------------------------- through the router phase

BACKENDS = {"AWSBedrock": "ns/bedrock/route/r/rule/0/ref/0", "AWSAnthropic": "ns/claude/route/r/rule/0/ref/0"}


def _config() -> config_pb2.TranslatorConfig:
    cfg = config_pb2.TranslatorConfig(name="ns/gw")
    for schema, name in BACKENDS.items():
        cfg.backends.add(name=name, service_backend=name, route_name="ns/r", schema=config_pb2.Schema(name=schema))
    return cfg


@pytest.mark.parametrize("schema", ["AWSBedrock", "AWSAnthropic"])
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        ("/anthropic/v1/messages", {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
    ],
)
async def test_router_phase_gives_the_response_headers_to_the_translator(
    schema: str, path: str, body: dict[str, Any]
) -> None:
    out = await drive(
        ExternalProcessor(_config()),
        [
            request_headers({":method": "POST", ":path": path, ":authority": "gw", "content-type": "application/json"}),
            request_body(body),
            response_headers(
                {":status": "429", "content-type": "application/json", **_h("ThrottlingException")},
                BACKENDS[schema],
            ),
            response_body(b'{"message":"Too many requests, please wait before trying again."}', end_of_stream=True),
        ],
    )
    sent = json.loads(out[3].response_body.response.body_mutation.body)
    if path.startswith("/anthropic/"):
        assert sent["type"] == "error" and sent["error"]["type"] == "rate_limit_error"
    else:
        assert sent["error"]["code"] == "ThrottlingException" and sent["error"]["type"] == "rate_limit_error"
