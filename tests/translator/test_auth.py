from __future__ import annotations

import pytest

from aigw.translator.v1 import config_pb2
from aigw_translator import auth as auth_module
from aigw_translator.auth import MissingCredentialError, resolve_auth
from aigw_translator.errors import GatewayError

CLIENT = {"authorization": "Bearer client", "x-api-key": "client", "api-key": "client", "x-other": "1"}


def _auth(kind: str, key: str = "configured", override: str | None = None, fallback: bool = False, header: str = ""):
    auth = config_pb2.Auth()
    getattr(auth, kind).key = key
    if override == "headers":
        auth.credential_override.from_request_headers.header = header
        auth.credential_override.fallback_to_configured = fallback
    elif override == "metadata":
        auth.credential_override.from_dynamic_metadata.namespace = "ns"
        auth.credential_override.from_dynamic_metadata.key = "k"
        auth.credential_override.fallback_to_configured = fallback
    return auth


@pytest.mark.parametrize(
    ("auth", "headers", "metadata", "set_headers", "removed"),
    [
        (None, CLIENT, {}, {}, {"authorization", "x-api-key", "api-key"}),
        (_auth("api_key"), CLIENT, {}, {"authorization": "Bearer configured"}, {"x-api-key", "api-key"}),
        (
            _auth("anthropic_api_key"),
            CLIENT,
            {},
            {"x-api-key": "configured", "anthropic-version": "2023-06-01"},
            {"authorization", "api-key"},
        ),
        (
            _auth("anthropic_api_key"),
            {**CLIENT, "anthropic-version": "2026-10-21"},
            {},
            {"x-api-key": "configured"},
            {"authorization", "api-key"},
        ),
        (_auth("azure_api_key"), CLIENT, {}, {"api-key": "configured"}, {"authorization", "x-api-key"}),
        (
            _auth("api_key", override="headers"),
            {**CLIENT, "x-aigw-api-key": "Bearer user-key"},
            {},
            {"authorization": "Bearer user-key"},
            {"x-api-key", "api-key", "x-aigw-api-key"},
        ),
        (
            _auth("anthropic_api_key", override="headers"),
            {"x-aigw-anthropic-api-key": "user-key", "x-aigw-api-key": "other"},
            {},
            {"x-api-key": "user-key", "anthropic-version": "2023-06-01"},
            {"authorization", "api-key", "x-aigw-anthropic-api-key", "x-aigw-api-key"},
        ),
        (
            _auth("azure_api_key", override="headers", header="X-My-Key"),
            {"x-my-key": "user-key"},
            {},
            {"api-key": "user-key"},
            {"authorization", "x-api-key", "x-my-key"},
        ),
        (
            _auth("api_key", override="headers", fallback=True),
            CLIENT,
            {},
            {"authorization": "Bearer configured"},
            {"x-api-key", "api-key"},
        ),
        (
            _auth("api_key", override="metadata"),
            CLIENT,
            {"ns": {"k": "from-md"}},
            {"authorization": "Bearer from-md"},
            {"x-api-key", "api-key"},
        ),
    ],
)
def test_resolve_auth(auth, headers, metadata, set_headers, removed) -> None:
    mutation = resolve_auth(auth, headers, metadata)
    assert mutation.set_headers == set_headers
    assert set(mutation.remove_headers) == removed
    assert not set(mutation.remove_headers) & set(mutation.set_headers)


@pytest.mark.parametrize(
    "auth",
    [
        _auth("api_key", override="headers"),
        _auth("api_key", key="", override="headers", fallback=True),
        _auth("api_key", override="metadata"),
    ],
)
def test_missing_override_is_401(auth) -> None:
    with pytest.raises(MissingCredentialError) as err:
        resolve_auth(auth, CLIENT, {})
    assert err.value.status == 401
    assert "client" not in err.value.message


def test_unsupported_auth_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every kind of the config is supported now; a kind the translator does not know stays a 500.
    monkeypatch.setattr(auth_module, "SUPPORTED_AUTH_KINDS", ("api_key",))
    auth = config_pb2.Auth()
    auth.gcp_credentials.region = "us-east5"
    with pytest.raises(GatewayError) as err:
        resolve_auth(auth, {}, {})
    assert err.value.status == 500


def test_aws_credentials_set_no_header_but_strip_the_clients() -> None:
    """SigV4 is a signature over the final request: backend_request adds it (aws.sign)."""
    auth = config_pb2.Auth()
    auth.aws_credentials.region = "us-east-1"
    mutation = resolve_auth(auth, {"authorization": "Bearer client", "x-api-key": "c"}, {})
    assert mutation.set_headers == {}
    assert {"authorization", "x-api-key", "api-key"} <= set(mutation.remove_headers)
