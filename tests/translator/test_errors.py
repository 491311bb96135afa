from __future__ import annotations

import json

import pytest

from aigw_translator.endpoints import ClientSchema
from aigw_translator.errors import gateway_error_body, to_anthropic_error, to_openai_error

OPENAI_ERR = (
    b'{"error":{"message":"bad model","type":"invalid_request_error","param":"model","code":"model_not_found"}}'
)
ANTHROPIC_ERR = b'{"type":"error","error":{"type":"overloaded_error","message":"busy"},"request_id":"req_1"}'


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, OPENAI_ERR, json.loads(OPENAI_ERR)),
        (
            529,
            ANTHROPIC_ERR,
            {"error": {"message": "busy", "type": "server_error", "param": None, "code": None}},
        ),
        (
            503,
            b"upstream connect error",
            {"error": {"message": "upstream connect error", "type": "server_error", "param": None, "code": "503"}},
        ),
        (
            429,
            b"",
            {
                "error": {
                    "message": "upstream returned status 429",
                    "type": "rate_limit_error",
                    "param": None,
                    "code": "429",
                }
            },
        ),
        (
            400,
            b'{"message":"flat"}',
            {"error": {"message": "flat", "type": "invalid_request_error", "param": None, "code": None}},
        ),
    ],
)
def test_to_openai(status: int, body: bytes, expected: dict) -> None:
    assert json.loads(to_openai_error(status, body)) == expected


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (529, ANTHROPIC_ERR, json.loads(ANTHROPIC_ERR)),
        (404, OPENAI_ERR, {"type": "error", "error": {"type": "not_found_error", "message": "bad model"}}),
        (
            503,
            b"no healthy upstream",
            {"type": "error", "error": {"type": "api_error", "message": "no healthy upstream"}},
        ),
        (
            413,
            b"",
            {"type": "error", "error": {"type": "request_too_large", "message": "upstream returned status 413"}},
        ),
        (429, b"[1]", {"type": "error", "error": {"type": "rate_limit_error", "message": "[1]"}}),
        # Anthropic's own types for these statuses (a provider-API review: api_error and invalid_request_error).
        (
            504,
            b"upstream request timeout",
            {"type": "error", "error": {"type": "timeout_error", "message": "upstream request timeout"}},
        ),
        (402, b'{"error":{"message":"pay"}}', {"type": "error", "error": {"type": "billing_error", "message": "pay"}}),
    ],
)
def test_to_anthropic(status: int, body: bytes, expected: dict) -> None:
    assert json.loads(to_anthropic_error(status, body)) == expected


@pytest.mark.parametrize(
    ("schema", "status", "expected"),
    [
        (
            ClientSchema.OPENAI,
            400,
            {"error": {"message": "m", "type": "invalid_request_error", "param": None, "code": None}},
        ),
        (
            ClientSchema.OPENAI,
            401,
            {"error": {"message": "m", "type": "authentication_error", "param": None, "code": None}},
        ),
        (ClientSchema.OPENAI, 404, {"error": {"message": "m", "type": "not_found_error", "param": None, "code": None}}),
        (ClientSchema.OPENAI, 500, {"error": {"message": "m", "type": "server_error", "param": None, "code": None}}),
        (ClientSchema.ANTHROPIC, 413, {"type": "error", "error": {"type": "request_too_large", "message": "m"}}),
        (ClientSchema.ANTHROPIC, 422, {"type": "error", "error": {"type": "invalid_request_error", "message": "m"}}),
        (ClientSchema.ANTHROPIC, 401, {"type": "error", "error": {"type": "authentication_error", "message": "m"}}),
    ],
)
def test_gateway_errors(schema: ClientSchema, status: int, expected: dict) -> None:
    assert json.loads(gateway_error_body(schema, status, "m")) == expected


def test_translation_is_idempotent() -> None:
    once = to_openai_error(500, ANTHROPIC_ERR)
    assert to_openai_error(500, once) == once
    once = to_anthropic_error(500, OPENAI_ERR)
    assert to_anthropic_error(500, once) == once
