"""Credentials a provider quotes in an error body (scrub.py), whatever the backend's auth: the
values its configuration holds, and the shapes of those the translator fetches or computes per
request (a security review found a Google token, a SigV4 Authorization header and an AWS session
token echoed back to the client whole)."""

from __future__ import annotations

import json

import pytest

from aigw.translator.v1 import config_pb2
from aigw_translator.scrub import configured_secrets, scrub_error_body

SIGNATURE = "0f" * 32
SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261206/us-east-1/bedrock/aws4_request, "
    f"SignedHeaders=host;x-amz-date;x-amz-security-token, Signature={SIGNATURE}"
)
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2NvZ25pdGl2ZXNlcnZpY2VzIn0.c2lnbmF0dXJlLWJ5dGVz"


@pytest.mark.parametrize(
    ("quoted", "left"),
    [
        ("Authorization: Bearer ya29.a0AfB_byC-token-value", "Authorization: Bearer [REDACTED]"),
        ("token ya29.a0AfB_byC-token-value expired", "token [REDACTED] expired"),
        (f"authorization={SIGV4}", "Credential=[REDACTED]/20261206"),
        (f"authorization={SIGV4}", "Signature=[REDACTED]"),
        # AWS's SignatureDoesNotMatch quotes the canonical request, header lines and all.
        ("host:bedrock\nx-amz-security-token:IQoJb3JpZ2luX2VjEXAMPLE/+=\n", "x-amz-security-token:[REDACTED]\n"),
        # ... or its headers as JSON (a diff review: the key's closing quote hid the value).
        ('headers {"X-Amz-Security-Token": "IQoJb3JpZ2luX2VjEXAMPLE"}', '"X-Amz-Security-Token": "[REDACTED]"'),
        (f"the token {JWT} is not valid", "the token [REDACTED] is not valid"),
    ],
)
def test_credentials_by_their_shape_are_scrubbed(quoted: str, left: str) -> None:
    body = json.dumps({"error": {"message": quoted}}).encode()
    message = json.loads(scrub_error_body(body, ()))["error"]["message"]
    assert left in message
    for secret in ("ya29.a0", SIGNATURE, "AKIAIOSFODNN7EXAMPLE", "IQoJb3JpZ2lu", "eyJhbGci"):
        assert secret not in message


def test_configured_values_are_scrubbed_as_written_or_escaped() -> None:
    backend = config_pb2.Backend(name="b")
    backend.auth.azure_api_key.key = "azure-key-0123456789"
    backend.header_mutation.set.add(name="ocp-apim-subscription-key", value="apim-subscription-secret")
    backend.header_mutation.set.add(name="x-short-key", value="v1")  # too short to be searched for
    # Not a credential's name: a date the provider may quote back in its error stays readable.
    backend.header_mutation.set.add(name="anthropic-version", value="2023-06-01")
    secrets = configured_secrets(backend)
    assert secrets == ("azure-key-0123456789", "apim-subscription-secret")
    escaped = "".join(f"\\u{ord(c):04x}" for c in "apim-subscription-secret")
    body = f'{{"error":{{"message":"key azure-key-0123456789, subscription {escaped}, version v1"}}}}'.encode()
    assert json.loads(scrub_error_body(body, secrets)) == {
        "error": {"message": "key [REDACTED], subscription [REDACTED], version v1"}
    }


def test_an_error_without_a_credential_is_left_as_it_came() -> None:
    """Nothing to take out: the very bytes (a signature-like word, a short bearer, bytes that are
    not UTF-8 untouched)."""
    body = b'{"error":{"message":"Bearer authentication failed; the signature does not match"}}\xff'
    assert scrub_error_body(body, ("sk-not-in-it-123",)) is body


def test_a_key_in_an_error_too_deep_to_write_again_is_not_passed_on() -> None:
    """An escaped key nested deeper than orjson writes: the body cannot be written again without
    it, so none of it goes on (not a 500 from the translator either)."""
    escaped = "".join(f"\\u{ord(c):04x}" for c in "sk-backend-secret-123").encode()
    body = b'{"a":' * 300 + b'"' + escaped + b'"' + b"}" * 300
    assert scrub_error_body(body, ("sk-backend-secret-123",)) == b"[REDACTED]"
