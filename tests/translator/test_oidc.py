"""OIDC client-credentials tokens (aigw_translator.oidc) against the fake OIDC issuer: discovery,
the grant's form and client authentication, caching and refresh before expiry, and outages as
one log line and a 503 that never carry the secret."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import structlog

from aigw.translator.v1 import config_pb2
from aigw_fakes import OIDCIssuerFake
from aigw_fakes.oidc_issuer import TEST_CLIENT_ID, TEST_CLIENT_SECRET
from aigw_translator import oidc
from aigw_translator.errors import CredentialsUnavailable


@pytest.fixture
def issuer() -> Iterator[OIDCIssuerFake]:
    oidc.reset()
    with OIDCIssuerFake(token_lifetime_s=3600) as fake:
        yield fake
    oidc.reset()


def _policy(fake: OIDCIssuerFake, /, **fields: object) -> config_pb2.OIDCToken:
    policy = config_pb2.OIDCToken(issuer=fake.issuer, client_id=TEST_CLIENT_ID, client_secret=TEST_CLIENT_SECRET)
    for name, value in fields.items():
        if isinstance(value, list):
            policy.ClearField(name)
            getattr(policy, name).extend(value)
        else:
            setattr(policy, name, value)
    return policy


def test_discovers_the_endpoint_once_and_caches_the_token(issuer: OIDCIssuerFake) -> None:
    policy = _policy(issuer, scopes=["openid", "sts"], audience="sts.amazonaws.com")
    first = oidc.token("ns/bedrock", policy)
    assert oidc.token("ns/bedrock", policy) == first == issuer.issued[0]
    assert oidc.token("ns/other-backend", policy) == first  # same policy settings, same token
    claims = issuer.verify(first, "sts.amazonaws.com")
    assert claims["scope"] == "openid sts" and claims["sub"] == TEST_CLIENT_ID
    discovery = [r for r in issuer.requests if r.path == "/.well-known/openid-configuration"]
    grants = [r for r in issuer.requests if r.path == "/token"]
    assert len(discovery) == 1 and len(grants) == 1
    [grant] = grants
    assert grant.header("authorization", "").startswith("Basic ")  # RFC 6749 §2.3.1
    assert grant.header("content-type") == "application/x-www-form-urlencoded"
    assert grant.body == "grant_type=client_credentials&scope=openid+sts&audience=sts.amazonaws.com"
    assert TEST_CLIENT_SECRET not in grant.raw_body.decode()
    # Another audience is another token (and no second discovery).
    assert oidc.token("ns/azure", _policy(issuer, audience="api://AzureADTokenExchange")) != first
    assert len([r for r in issuer.requests if r.path == "/.well-known/openid-configuration"]) == 1


def test_an_explicit_token_endpoint_skips_discovery(issuer: OIDCIssuerFake) -> None:
    value = oidc.token("b", _policy(issuer, issuer="", token_endpoint=issuer.token_endpoint))
    assert issuer.verify(value, TEST_CLIENT_ID)
    assert [r.path for r in issuer.requests] == ["/token"]


def test_a_client_without_secret_sends_its_id_in_the_form(issuer: OIDCIssuerFake) -> None:
    with pytest.raises(CredentialsUnavailable):  # the fake's client is confidential: 401 invalid_client
        oidc.token("b", _policy(issuer, client_secret=""))
    [grant] = [r for r in issuer.requests if r.path == "/token"]
    assert grant.header("authorization") is None and f"client_id={TEST_CLIENT_ID}" in grant.body


def test_short_lived_tokens_are_refreshed_in_the_background_at_80_percent(issuer: OIDCIssuerFake) -> None:
    issuer.token_lifetime_s = 2
    policy = _policy(issuer)
    first = oidc.token("b", policy)
    time.sleep(1.0)
    assert oidc.token("b", policy) == first  # not due yet
    # The timer armed at the fetch refreshes at 1.6 s without any request.
    deadline = time.monotonic() + 3
    while issuer.token_requests < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert issuer.token_requests >= 2
    assert oidc.token("b", policy) == issuer.issued[-1] != first


def test_a_wrong_secret_is_one_log_line_and_a_503_without_the_secret(issuer: OIDCIssuerFake) -> None:
    wrong = "very-wrong-oidc-secret"
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            with pytest.raises(CredentialsUnavailable) as err:
                oidc.token("ns/bedrock", _policy(issuer, client_secret=wrong))
            assert err.value.status == 503 and "401 invalid_client" in err.value.message
            assert wrong not in err.value.message
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1 and errors[0]["event"] == "oidc_token_unavailable"
    assert errors[0]["backend"] == "ns/bedrock" and errors[0]["issuer"] == issuer.issuer
    assert wrong not in repr(logs)


def test_an_unreachable_issuer_is_a_503(issuer: OIDCIssuerFake) -> None:
    policy = config_pb2.OIDCToken(issuer="http://127.0.0.1:9", client_id="c", client_secret="s")
    with pytest.raises(CredentialsUnavailable) as err:
        oidc.token("b", policy)
    assert "unreachable" in err.value.message


@pytest.mark.parametrize(
    "url", ["http://idp.example.com", "ftp://127.0.0.1/x", "not a url", "http://10.0.0.1:8080/realms/x"]
)
def test_only_https_or_loopback_http(url: str) -> None:
    with pytest.raises(oidc.OIDCError):
        oidc.check_url(url, "OIDC issuer")


@pytest.mark.parametrize("url", ["https://idp.example.com/realms/x", "http://127.0.0.1:8080", "http://localhost/x"])
def test_https_and_loopback_http_pass(url: str) -> None:
    assert oidc.check_url(url, "OIDC issuer") == url


def test_a_discovery_document_without_a_token_endpoint_is_refused(issuer: OIDCIssuerFake) -> None:
    with pytest.raises(oidc.OIDCError, match="answered 404"):
        oidc.token_endpoint(config_pb2.OIDCToken(issuer=issuer.issuer + "/nowhere"))
    with pytest.raises(oidc.OIDCError, match="neither"):
        oidc.token_endpoint(config_pb2.OIDCToken())
