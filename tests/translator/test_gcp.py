"""GCP access tokens for GCPCredentials backends (aigw_translator.gcp), through the real google-auth
against the fake Google token services (aigw_fakes.google_auth): a service-account key, application
default credentials (GOOGLE_APPLICATION_CREDENTIALS), workload identity federation (OIDC -> STS,
with and without service-account impersonation); tokens cached and refreshed before expiry; an
outage is a 503 with one log line naming the backend and never the key or a token; resolve_auth
sends the token as Authorization and honours the override header."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import structlog

from aigw.translator.v1 import config_pb2
from aigw_fakes.google_auth import GoogleAuthFake, provider_audience
from aigw_fakes.oidc_issuer import TEST_CLIENT_ID, TEST_CLIENT_SECRET, OIDCIssuerFake
from aigw_fakes.service_account_key import make_service_account_key
from aigw_translator import gcp, oidc, token_cache
from aigw_translator.auth import MissingCredentialError, resolve_auth
from aigw_translator.errors import CredentialsUnavailable

# The pool audience names the project by number; a service account's email by project ID.
PROJECT_NUMBER = "123456789012"
PROJECT_ID = "aigw-vertex-project"


@pytest.fixture
def google() -> Iterator[GoogleAuthFake]:
    gcp.reset()
    oidc.reset()
    with GoogleAuthFake() as fake:
        yield fake
    gcp.reset()
    oidc.reset()


def sa_creds(key: dict[str, object]) -> config_pb2.GCPCredentials:
    return config_pb2.GCPCredentials(project_name="p", region="us-central1", service_account_json=json.dumps(key))


def test_a_service_account_key_gets_a_token_the_token_endpoint_issued_and_it_is_reused(google: GoogleAuthFake) -> None:
    creds = sa_creds(google.make_key())
    token = gcp.bearer_token("vertex", creds)
    assert google.validate(token)
    assert gcp.bearer_token("vertex", creds) == token
    assert google.issued == [("service_account", "aigw-test@aigw-test-project.iam.gserviceaccount.com")]
    assert google.requests[0].path == "/token"  # the key's token_uri, never oauth2.googleapis.com


def test_short_lived_tokens_are_refreshed_before_they_expire_and_an_expired_one_is_never_sent(
    google: GoogleAuthFake,
) -> None:
    google.lifetime = 2.0
    creds = sa_creds(google.make_key())
    first = gcp.bearer_token("vertex", creds)
    seen = {first}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        token = gcp.bearer_token("vertex", creds)
        assert google.validate(token)  # every token handed out is still valid at the fake
        seen.add(token)
        time.sleep(0.05)
    assert len(seen) >= 3  # refreshed about every second (half of the 2 s lifetime)


def test_a_key_the_token_endpoint_does_not_know_is_a_503_with_one_log_line_and_never_the_key(
    google: GoogleAuthFake,
) -> None:
    key = make_service_account_key(google.token_uri)  # not registered: Google answers invalid_grant
    creds = sa_creds(key)
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            with pytest.raises(CredentialsUnavailable) as err:
                gcp.bearer_token("vertex-gemini", creds)
            assert err.value.status == 503
    lines = [line for line in logs if line["event"] == "gcp_token_unavailable"]
    assert len(lines) == 1
    assert lines[0]["backend"] == "vertex-gemini"
    assert lines[0]["client_email"] == key["client_email"]
    assert "invalid_grant" in lines[0]["reason"]
    private = str(key["private_key"]).splitlines()[1]
    assert private not in repr(logs) and private not in err.value.message


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "not JSON"),
        (json.dumps({"type": "service_account", "client_email": "a@b"}), "missing token_uri, private_key"),
        (json.dumps({"type": "authorized_user"}), "type authorized_user is not taken here"),
        (json.dumps({"type": "external_account"}), "type external_account is not taken here"),
        ("[1]", "not a JSON object"),
    ],
)
def test_a_bad_key_file_is_a_503_naming_what_is_wrong(google: GoogleAuthFake, text: str, reason: str) -> None:
    creds = config_pb2.GCPCredentials(project_name="p", region="r", service_account_json=text)
    with pytest.raises(CredentialsUnavailable) as err:
        gcp.bearer_token("b", creds)
    assert reason in err.value.message


def test_application_default_credentials_from_google_application_credentials(
    google: GoogleAuthFake, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "key.json"  # type: ignore[operator]
    key_file.write_text(json.dumps(google.make_key(account="adc")))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    token = gcp.bearer_token("b", config_pb2.GCPCredentials(project_name="p", region="r"))
    assert google.validate(token)
    assert google.issued[-1] == ("service_account", "adc@aigw-test-project.iam.gserviceaccount.com")


def test_no_application_default_credentials_is_a_503(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    gcp.reset()
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))  # type: ignore[operator]
    with pytest.raises(CredentialsUnavailable) as err:
        gcp.bearer_token("b", config_pb2.GCPCredentials(project_name="p", region="r"))
    # Named file missing: google-auth stops there (no metadata server is probed).
    assert "no application default credentials (File " in err.value.message and "was not found" in err.value.message
    gcp.reset()


def _wif(issuer: OIDCIssuerFake, service_account: str = "") -> config_pb2.GCPCredentials:
    return config_pb2.GCPCredentials(
        project_name=PROJECT_ID,
        region="us-central1",
        workload_identity_federation=config_pb2.WorkloadIdentityFederation(
            project_id=PROJECT_NUMBER,
            pool="aigw-pool",
            provider="aigw-oidc",
            service_account=service_account,
            oidc=config_pb2.OIDCToken(
                issuer=issuer.issuer,
                client_id=TEST_CLIENT_ID,
                client_secret=TEST_CLIENT_SECRET,
                audience="https:" + provider_audience(PROJECT_NUMBER, "aigw-pool", "aigw-oidc"),
            ),
        ),
    )


@pytest.fixture
def federation(
    google: GoogleAuthFake, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[GoogleAuthFake, OIDCIssuerFake]]:
    with OIDCIssuerFake() as issuer:
        google.add_workload_provider(
            provider_audience(PROJECT_NUMBER, "aigw-pool", "aigw-oidc"),
            issuer=issuer.issuer,
            jwks_uri=issuer.base_url + "/jwks",
        )
        monkeypatch.setenv(gcp.STS_URL_ENV, google.sts_url)
        monkeypatch.setenv(gcp.IAM_CREDENTIALS_URL_ENV, google.iam_credentials_url)
        yield google, issuer


def test_workload_identity_federation_exchanges_the_oidc_token_at_sts(
    federation: tuple[GoogleAuthFake, OIDCIssuerFake],
) -> None:
    google, issuer = federation
    token = gcp.bearer_token("vertex", _wif(issuer))
    assert google.validate(token)
    assert [kind for kind, _ in google.issued] == ["sts"]
    assert google.issued[0][1].endswith(f"/subject/{TEST_CLIENT_ID}")
    sts = next(r for r in google.requests if r.path == "/v1/token")
    assert "subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt" in sts.raw_body.decode()


def test_workload_identity_federation_impersonates_the_service_account(
    federation: tuple[GoogleAuthFake, OIDCIssuerFake],
) -> None:
    google, issuer = federation
    email = f"vertex-caller@{PROJECT_ID}.iam.gserviceaccount.com"
    google.allow_impersonation(email)
    token = gcp.bearer_token("vertex", _wif(issuer, "vertex-caller"))
    assert google.validate(token)
    assert google.issued == [(google.issued[0][0], google.issued[0][1]), ("impersonated", email)]
    assert google.issued[0][0] == "sts"
    sts = next(r for r in google.requests if r.path == "/v1/token")
    assert f"projects%2F{PROJECT_NUMBER}%2Flocations" in sts.raw_body.decode()  # the audience: the number


def test_a_service_account_that_may_not_be_impersonated_is_a_503(
    federation: tuple[GoogleAuthFake, OIDCIssuerFake],
) -> None:
    _google, issuer = federation
    with structlog.testing.capture_logs() as logs, pytest.raises(CredentialsUnavailable) as err:
        gcp.bearer_token("vertex", _wif(issuer, "nobody"))
    assert err.value.status == 503
    lines = [line for line in logs if line["event"] == "gcp_token_unavailable"]
    assert len(lines) == 1 and lines[0]["service_account"] == "nobody"
    assert TEST_CLIENT_SECRET not in repr(logs)


def test_sts_down_is_a_503_saying_it_is_unreachable(
    federation: tuple[GoogleAuthFake, OIDCIssuerFake], monkeypatch: pytest.MonkeyPatch
) -> None:
    _google, issuer = federation
    monkeypatch.setenv(gcp.STS_URL_ENV, "http://127.0.0.1:9/v1/token")  # nothing listens on the discard port
    with pytest.raises(CredentialsUnavailable) as err:
        gcp.bearer_token("vertex", _wif(issuer))
    assert "unreachable" in err.value.message


def test_resolve_auth_sends_the_token_and_the_override_header_wins(
    google: GoogleAuthFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = config_pb2.Auth(gcp_credentials=sa_creds(google.make_key()))
    mutation = resolve_auth(auth, {"authorization": "Bearer client-key", "x-goog-api-key": "k"}, backend="v")
    token = mutation.set_headers["authorization"].removeprefix("Bearer ")
    assert google.validate(token)

    auth.credential_override.from_request_headers.SetInParent()
    auth.credential_override.fallback_to_configured = False
    mutation = resolve_auth(auth, {"x-aigw-gcp-access-token": "Bearer ya29.client"}, backend="v")
    assert mutation.set_headers["authorization"] == "Bearer ya29.client"
    assert "x-aigw-gcp-access-token" in mutation.remove_headers
    with pytest.raises(MissingCredentialError):
        resolve_auth(auth, {}, backend="v")


def test_tokens_are_fetched_when_a_configuration_arrives(google: GoogleAuthFake) -> None:
    config = config_pb2.TranslatorConfig()
    backend = config.backends.add(name="vertex")
    backend.auth.gcp_credentials.CopyFrom(sa_creds(google.make_key()))
    token_cache.prefetch([config], gcp.PREFETCH)
    deadline = time.monotonic() + 5
    while not google.issued and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(google.issued) == 1


def test_a_rotated_key_is_forgotten_with_its_credential_when_the_new_configuration_arrives(
    google: GoogleAuthFake,
) -> None:
    def configuration(key: dict[str, object]) -> config_pb2.TranslatorConfig:
        config = config_pb2.TranslatorConfig()
        config.backends.add(name="vertex").auth.gcp_credentials.CopyFrom(sa_creds(key))
        return config

    def prefetched(config: config_pb2.TranslatorConfig, issued: int) -> None:
        with token_cache.new_configuration():
            token_cache.prefetch([config], gcp.PREFETCH)
        deadline = time.monotonic() + 5
        while (len(google.issued) < issued or len(gcp._credentials) != 1) and time.monotonic() < deadline:
            time.sleep(0.02)

    old = configuration(google.make_key())
    prefetched(old, 1)
    old_key = gcp._key(old.backends[0].auth.gcp_credentials)
    assert set(gcp._credentials) == {old_key}
    new = configuration(google.make_key())
    prefetched(new, 2)
    assert set(gcp._credentials) == {gcp._key(new.backends[0].auth.gcp_credentials)}
    assert old_key not in gcp._cache._entries


def test_an_oidc_issuer_that_is_down_is_a_503_naming_the_oidc_token(
    federation: tuple[GoogleAuthFake, OIDCIssuerFake],
) -> None:
    google, issuer = federation
    creds = _wif(issuer)
    creds.workload_identity_federation.oidc.issuer = "http://127.0.0.1:9"  # nothing listens there
    with pytest.raises(CredentialsUnavailable) as err:
        gcp.bearer_token("vertex", creds)
    assert "no OIDC token to exchange" in err.value.message
    assert not google.issued


def test_the_quota_project_of_application_default_credentials_is_sent_and_no_other(
    google: GoogleAuthFake, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GOOGLE_CLOUD_QUOTA_PROJECT gives application default credentials a quota project (google-auth
    applies it): sent as x-goog-user-project with their token. A policy's own key has none, and a
    client's own token (an override) is sent without the gateway's."""
    key_file = tmp_path / "key.json"  # type: ignore[operator]
    key_file.write_text(json.dumps(google.make_key(account="adc")))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    monkeypatch.setenv("GOOGLE_CLOUD_QUOTA_PROJECT", "billing-project")
    adc = config_pb2.Auth(gcp_credentials=config_pb2.GCPCredentials(project_name="p", region="r"))
    mutation = resolve_auth(adc, {"x-goog-user-project": "clients-choice"}, backend="v")
    assert mutation.set_headers["x-goog-user-project"] == "billing-project"
    assert google.validate(mutation.set_headers["authorization"].removeprefix("Bearer "))

    own_key = config_pb2.Auth(gcp_credentials=sa_creds(google.make_key()))
    assert "x-goog-user-project" not in resolve_auth(own_key, {}, backend="v").set_headers

    adc.credential_override.from_request_headers.SetInParent()
    adc.credential_override.fallback_to_configured = True
    mutation = resolve_auth(adc, {"x-aigw-gcp-access-token": "ya29.client"}, backend="v")
    assert mutation.set_headers == {"authorization": "Bearer ya29.client"}
