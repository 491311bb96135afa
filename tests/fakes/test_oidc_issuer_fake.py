"""The fake OIDC issuer: discovery, the client-credentials grant (Basic or form client
authentication), RFC 6749 error answers, RS256 JWTs verifiable in process and through its JWKS."""

from __future__ import annotations

import time
from collections.abc import Iterator

import jwt
import pytest
import requests

from aigw_fakes import OIDCIssuerFake
from aigw_fakes.oidc_issuer import TEST_CLIENT_ID, TEST_CLIENT_SECRET


@pytest.fixture(scope="module")
def issuer() -> Iterator[OIDCIssuerFake]:
    with OIDCIssuerFake(token_lifetime_s=120) as fake:
        yield fake


def _grant(issuer: OIDCIssuerFake, form: dict[str, str], **kwargs: object) -> requests.Response:
    return requests.post(issuer.token_endpoint, data=form, timeout=5, **kwargs)  # type: ignore[arg-type]


def test_discovery_names_the_token_endpoint_and_keys(issuer: OIDCIssuerFake) -> None:
    doc = requests.get(issuer.issuer + "/.well-known/openid-configuration", timeout=5).json()
    assert doc["issuer"] == issuer.issuer == issuer.base_url
    assert doc["token_endpoint"] == issuer.base_url + "/token"
    assert doc["jwks_uri"] == issuer.base_url + "/jwks"
    assert "client_credentials" in doc["grant_types_supported"]


def test_basic_auth_grant_answers_a_signed_jwt_for_the_requested_audience(issuer: OIDCIssuerFake) -> None:
    answer = _grant(
        issuer,
        {"grant_type": "client_credentials", "scope": "a b", "audience": "sts.amazonaws.com"},
        auth=(TEST_CLIENT_ID, TEST_CLIENT_SECRET),
    )
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 120 and body["scope"] == "a b"
    claims = issuer.verify(body["access_token"], "sts.amazonaws.com")
    assert claims["iss"] == issuer.issuer and claims["sub"] == TEST_CLIENT_ID and claims["scope"] == "a b"
    assert 120 <= claims["exp"] - time.time() <= 121 and claims["jti"]
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "RS256"
    with pytest.raises(jwt.InvalidAudienceError):
        issuer.verify(body["access_token"], "api://AzureADTokenExchange")
    # The JWKS verifies it too (what an out-of-process relying party does).
    keys = jwt.PyJWKSet.from_dict(requests.get(issuer.base_url + "/jwks", timeout=5).json())
    key = keys[jwt.get_unverified_header(body["access_token"])["kid"]]
    assert jwt.decode(body["access_token"], key.key, algorithms=["RS256"], audience="sts.amazonaws.com")["sub"]


def test_form_client_authentication_and_default_audience(issuer: OIDCIssuerFake) -> None:
    form = {"grant_type": "client_credentials", "client_id": TEST_CLIENT_ID, "client_secret": TEST_CLIENT_SECRET}
    body = _grant(issuer, form).json()
    assert issuer.verify(body["access_token"], TEST_CLIENT_ID)["aud"] == TEST_CLIENT_ID
    assert "scope" not in body


def test_a_secret_with_reserved_characters_is_form_encoded_in_basic_auth() -> None:
    secret = "s:e/c r+e%t"
    with OIDCIssuerFake(client_secret=secret) as fake:
        quoted = (TEST_CLIENT_ID, requests.utils.quote(secret, safe="").replace("%20", "+"))
        assert _grant(fake, {"grant_type": "client_credentials"}, auth=quoted).status_code == 200
        # Sent raw, ':' splits it wrongly and '+' decodes to a space: refused.
        assert _grant(fake, {"grant_type": "client_credentials"}, auth=(TEST_CLIENT_ID, secret)).status_code == 401


@pytest.mark.parametrize(
    ("form", "auth", "status", "error"),
    [
        ({"grant_type": "client_credentials"}, (TEST_CLIENT_ID, "wrong"), 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, ("someone-else", TEST_CLIENT_SECRET), 401, "invalid_client"),
        ({"grant_type": "client_credentials", "client_id": TEST_CLIENT_ID, "client_secret": "x"}, None, 401,
         "invalid_client"),
        ({"grant_type": "password"}, (TEST_CLIENT_ID, TEST_CLIENT_SECRET), 400, "unsupported_grant_type"),
        ({}, (TEST_CLIENT_ID, TEST_CLIENT_SECRET), 400, "invalid_request"),
        ({"grant_type": "client_credentials"}, None, 400, "invalid_request"),
        ({"grant_type": "client_credentials", "client_secret": TEST_CLIENT_SECRET},
         (TEST_CLIENT_ID, TEST_CLIENT_SECRET), 400, "invalid_request"),
    ],
)  # fmt: skip
def test_errors_are_rfc6749_json(
    issuer: OIDCIssuerFake, form: dict[str, str], auth: tuple[str, str] | None, status: int, error: str
) -> None:
    answer = _grant(issuer, form, auth=auth)
    assert answer.status_code == status and answer.json()["error"] == error
    assert answer.json()["error_description"]
    assert ("www-authenticate" in answer.headers) == (status == 401 and auth is not None)


def test_json_bodies_are_refused(issuer: OIDCIssuerFake) -> None:
    answer = requests.post(
        issuer.token_endpoint, json={"grant_type": "client_credentials"}, auth=(TEST_CLIENT_ID, TEST_CLIENT_SECRET),
        timeout=5,
    )  # fmt: skip
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"


def test_verify_refuses_expired_foreign_and_tampered_tokens(issuer: OIDCIssuerFake) -> None:
    with pytest.raises(jwt.ExpiredSignatureError):
        issuer.verify(issuer.issue("aud", lifetime=-1), "aud")
    with OIDCIssuerFake() as other, pytest.raises(jwt.InvalidTokenError):
        issuer.verify(other.issue("aud"), "aud")
    good = issuer.issue("aud")
    head, payload, signature = good.split(".")
    forged = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"aud":"aud"', b'"aud":"xyz"')
    ).decode()
    with pytest.raises(jwt.InvalidSignatureError):
        issuer.verify(f"{head}.{forged}.{signature}", "xyz")
    assert issuer.verify(good, "aud")["aud"] == "aud"


def test_injected_failures_use_oauth_shapes(issuer: OIDCIssuerFake) -> None:
    issuer.fail_next(1, 503)
    answer = _grant(issuer, {"grant_type": "client_credentials"}, auth=(TEST_CLIENT_ID, TEST_CLIENT_SECRET))
    assert answer.status_code == 503 and answer.json()["error"] == "temporarily_unavailable"
