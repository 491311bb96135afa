"""The fake Entra ID token endpoint (client credentials) and the Azure OpenAI fake accepting its
tokens until they expire."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import jwt
import openai
import pytest

from aigw_fakes import AzureOpenAIFake, EntraFake, OIDCIssuerFake
from aigw_fakes.entra import SCOPE, TEST_CLIENT_ID, TEST_CLIENT_SECRET, TEST_TENANT_ID, FederatedCredential

from ._fakehttp import raw


@pytest.fixture
def entra() -> Iterator[EntraFake]:
    with EntraFake(lifetime=60, tls=False) as fake:
        yield fake


def _token(
    entra: EntraFake,
    *,
    tenant: str = TEST_TENANT_ID,
    secret: str = TEST_CLIENT_SECRET,
    client: str = TEST_CLIENT_ID,
    grant: str = "client_credentials",
    scope: str = SCOPE,
) -> tuple[int, dict]:
    form = urllib.parse.urlencode({"grant_type": grant, "client_id": client, "client_secret": secret, "scope": scope})
    status, _, body = raw(
        "POST",
        f"{entra.base_url}/{tenant}/oauth2/v2.0/token",
        form,
        {"content-type": "application/x-www-form-urlencoded"},
    )
    return status, json.loads(body)


def test_issues_opaque_expiring_tokens(entra: EntraFake) -> None:
    status, body = _token(entra)
    assert status == 200
    assert body["token_type"] == "Bearer" and body["expires_in"] == 60
    assert entra.validate(body["access_token"]) and not entra.validate("made-up")
    status, again = _token(entra)
    assert again["access_token"] != body["access_token"]
    assert entra.issued == [body["access_token"], again["access_token"]]


@pytest.mark.parametrize(
    ("kwargs", "status", "error", "code"),
    [
        ({"secret": "wrong"}, 401, "invalid_client", 7000215),
        ({"client": "someone-else"}, 400, "unauthorized_client", 700016),
        ({"tenant": "other-tenant"}, 400, "invalid_request", 90002),
        ({"grant": "password"}, 400, "unsupported_grant_type", 70003),
        ({"scope": "https://cognitiveservices.azure.com"}, 400, "invalid_scope", 1002012),
    ],
)
def test_errors_in_aads_shape(entra: EntraFake, kwargs: dict, status: int, error: str, code: int) -> None:
    got, body = _token(entra, **kwargs)
    assert got == status
    assert body["error"] == error and body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert {"timestamp", "trace_id", "correlation_id", "error_uri"} <= body.keys()
    assert "wrong" not in body["error_description"]


def test_azure_openai_accepts_its_tokens_until_they_expire() -> None:
    with EntraFake(lifetime=1, tls=False) as entra, AzureOpenAIFake(api_key=None, token_validator=entra) as azure:
        _, body = _token(entra)
        token = body["access_token"]

        def client(tok: str) -> openai.AzureOpenAI:
            return openai.AzureOpenAI(
                azure_ad_token=tok, azure_endpoint=azure.base_url, api_version="2024-10-21", max_retries=0
            )

        messages = [{"role": "user", "content": "hi"}]
        assert client(token).chat.completions.create(model="gpt-4o", messages=messages).choices
        with pytest.raises(openai.AuthenticationError) as unknown:
            client("not-issued").chat.completions.create(model="gpt-4o", messages=messages)
        assert unknown.value.body["code"] == "401"
        assert "Access token is missing, invalid" in unknown.value.body["message"]
        time.sleep(1.1)
        with pytest.raises(openai.AuthenticationError):
            client(token).chat.completions.create(model="gpt-4o", messages=messages)


def test_https_with_its_own_certificate_and_tenant_discovery() -> None:
    with EntraFake() as entra:
        assert entra.base_url.startswith("https://localhost:")
        context = ssl.create_default_context(cafile=entra.ca_file)
        url = f"{entra.base_url}/{TEST_TENANT_ID}/v2.0/.well-known/openid-configuration"
        with urllib.request.urlopen(url, context=context) as resp:
            config = json.loads(resp.read())
        assert config["token_endpoint"] == f"{entra.base_url}/{TEST_TENANT_ID}/oauth2/v2.0/token"
        with pytest.raises(urllib.error.URLError):  # not trusted without its CA
            urllib.request.urlopen(url, context=ssl.create_default_context())


# ---- workload identity: client assertions checked against a federated identity credential ---------


def _assertion_grant(entra: EntraFake, assertion: str, **extra: str) -> tuple[int, dict]:
    form = {
        "grant_type": "client_credentials",
        "client_id": TEST_CLIENT_ID,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
        "scope": SCOPE,
        **extra,
    }
    status, _, body = raw(
        "POST",
        f"{entra.base_url}/{TEST_TENANT_ID}/oauth2/v2.0/token",
        urllib.parse.urlencode(form),
        {"content-type": "application/x-www-form-urlencoded"},
    )
    return status, json.loads(body)


@pytest.fixture(scope="module")
def federated() -> Iterator[tuple[OIDCIssuerFake, EntraFake]]:
    with OIDCIssuerFake(subject="system:serviceaccount:aigw:translator") as issuer:
        record = FederatedCredential(issuer.verify, issuer.issuer, "system:serviceaccount:aigw:translator")
        with EntraFake(lifetime=60, tls=False, federated=record) as entra:
            yield issuer, entra


def test_a_matching_client_assertion_gets_a_token(federated: tuple[OIDCIssuerFake, EntraFake]) -> None:
    issuer, entra = federated
    status, body = _assertion_grant(entra, issuer.issue("api://AzureADTokenExchange"))
    assert status == 200 and entra.validate(body["access_token"])


@pytest.mark.parametrize(
    ("case", "status", "error", "code"),
    [
        ("wrong-audience", 401, "invalid_client", 700212),
        ("other-issuer", 401, "invalid_client", 700211),
        ("other-subject", 401, "invalid_client", 700213),
        ("expired", 401, "invalid_client", 700024),
        ("forged", 401, "invalid_client", 700027),
        ("malformed", 400, "invalid_request", 50027),
        ("with-secret", 400, "invalid_request", 700025),
        ("wrong-type", 400, "invalid_request", 70002),
    ],
)
def test_client_assertions_are_checked_like_entra(
    federated: tuple[OIDCIssuerFake, EntraFake], case: str, status: int, error: str, code: int
) -> None:
    issuer, entra = federated
    aud = "api://AzureADTokenExchange"
    extra: dict[str, str] = {}
    with OIDCIssuerFake(subject="system:serviceaccount:aigw:translator") as other:
        assertion = {
            "wrong-audience": issuer.issue("sts.amazonaws.com"),
            "other-issuer": other.issue(aud),
            "expired": issuer.issue(aud, lifetime=-5),
            "malformed": "not-a-jwt",
        }.get(case, issuer.issue(aud))
    if case == "other-subject":  # the record's issuer, signed by it, for another subject
        issuer.subject, saved = "someone:else", issuer.subject
        try:
            assertion = issuer.issue(aud)
        finally:
            issuer.subject = saved
    if case == "forged":  # the claims changed after signing
        head, payload, signature = assertion.split(".")
        claims = json.loads(jwt.utils.base64url_decode(payload))
        claims["jti"] = "replayed"
        forged = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
        assertion = f"{head}.{forged}.{signature}"
    if case == "with-secret":
        extra["client_secret"] = TEST_CLIENT_SECRET
    if case == "wrong-type":
        extra["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"
    got, body = _assertion_grant(entra, assertion, **extra)
    assert (got, body["error"], body["error_codes"]) == (status, error, [code])


def test_an_app_without_a_federated_credential_refuses_assertions(entra: EntraFake) -> None:
    with OIDCIssuerFake() as issuer:
        status, body = _assertion_grant(entra, issuer.issue("api://AzureADTokenExchange"))
    assert status == 401 and body["error_codes"] == [700211]
