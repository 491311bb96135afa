"""Entra ID tokens for AzureCredentials backends: cached per (tenant, client, secret), refreshed in
the background before expiry (5 minutes, or half a short lifetime), one error line per outage and
never the secret; auth.resolve_auth puts the token in Authorization. The real token request is
checked against the fake Entra endpoint (aigw_fakes.EntraFake)."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable

import pytest
import structlog

from aigw.translator.v1 import config_pb2
from aigw_fakes.entra import TEST_CLIENT_ID, TEST_CLIENT_SECRET, TEST_TENANT_ID, EntraFake
from aigw_translator import auth as auth_module
from aigw_translator import azure_entra
from aigw_translator.auth import MissingCredentialError, resolve_auth
from aigw_translator.azure_entra import CredentialsUnavailable, TokenCache, TokenRequestError

CREDS = config_pb2.AzureCredentials(tenant_id="t", client_id="c", client_secret="s3cr3t-value")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Issuer:
    """A fake fetch: token-1, token-2... living `lifetime` seconds; `fail` makes it raise."""

    def __init__(self, lifetime: float = 3600) -> None:
        self.lifetime = lifetime
        self.calls = 0
        self.fail: str | None = None

    def __call__(self, tenant: str, client: str, secret: str) -> tuple[str, float]:
        self.calls += 1
        if self.fail is not None:
            raise TokenRequestError(self.fail)
        return f"token-{self.calls}", self.lifetime


def _cache(issuer: Issuer, clock: Clock, pending: list[Callable[[], None]] | None = None) -> TokenCache:
    spawn = pending.append if pending is not None else (lambda run: run())
    return TokenCache(fetch=issuer, clock=clock, spawn=spawn)


def test_one_token_is_fetched_and_reused_until_the_refresh_window() -> None:
    issuer, clock = Issuer(3600), Clock()
    cache = _cache(issuer, clock)
    assert cache.token("b", CREDS) == "token-1"
    clock.now += 3600 - 301
    assert cache.token("b", CREDS) == "token-1"
    assert issuer.calls == 1
    other = config_pb2.AzureCredentials(tenant_id="t", client_id="c", client_secret="other")
    assert cache.token("b2", other) == "token-2"  # a different secret is a different app login


def test_refresh_starts_5_minutes_before_expiry_in_the_background_and_the_current_token_serves() -> None:
    issuer, clock, pending = Issuer(3600), Clock(), []
    cache = _cache(issuer, clock, pending)
    assert cache.token("b", CREDS) == "token-1"
    clock.now += 3600 - 299
    assert cache.token("b", CREDS) == "token-1"  # not blocked: the refresh runs aside
    assert cache.token("b", CREDS) == "token-1"
    assert len(pending) == 1  # one refresh at a time
    pending.pop()()
    assert cache.token("b", CREDS) == "token-2"
    assert issuer.calls == 2


def test_short_lived_tokens_refresh_at_half_their_lifetime() -> None:
    issuer, clock, pending = Issuer(10), Clock(), []
    cache = _cache(issuer, clock, pending)
    assert cache.token("b", CREDS) == "token-1"
    clock.now += 4.9
    cache.token("b", CREDS)
    assert not pending
    clock.now += 0.2
    cache.token("b", CREDS)
    assert len(pending) == 1


def test_an_expired_token_is_never_sent() -> None:
    issuer, clock = Issuer(3600), Clock()
    cache = _cache(issuer, clock, [])  # background refreshes never run
    cache.token("b", CREDS)
    clock.now += 3600
    assert cache.token("b", CREDS) == "token-2"


def test_an_outage_is_a_503_with_one_error_line_and_never_the_secret() -> None:
    issuer, clock = Issuer(3600), Clock()
    issuer.fail = "token endpoint answered 401 invalid_client AADSTS7000215"
    cache = _cache(issuer, clock)
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            with pytest.raises(CredentialsUnavailable) as err:
                cache.token("azure-backend", CREDS)
            assert err.value.status == 503
            clock.now += 0.5
        clock.now += 10
        for _ in range(3):  # retried after RETRY_AFTER_FAILURE: still the same outage
            with pytest.raises(CredentialsUnavailable):
                cache.token("azure-backend", CREDS)
            clock.now += 3
        errors = [e for e in logs if e["log_level"] == "error"]
        assert len(errors) == 1
        assert errors[0]["event"] == "azure_token_unavailable" and errors[0]["backend"] == "azure-backend"
        assert "AADSTS7000215" in errors[0]["reason"]
        assert issuer.calls < 8  # failures are not retried on every request
        issuer.fail = None
        assert cache.token("azure-backend", CREDS).startswith("token-")
        issuer.fail = "down again"
        clock.now += 3600
        with pytest.raises(CredentialsUnavailable):
            cache.token("azure-backend", CREDS)
    assert [e["event"] for e in logs if e["log_level"] in ("error", "info")] == [
        "azure_token_unavailable",
        "azure_token_recovered",
        "azure_token_unavailable",
    ]
    assert "s3cr3t-value" not in repr(logs) and "s3cr3t-value" not in str(err.value)


def test_a_failed_background_refresh_keeps_the_current_token_until_it_expires() -> None:
    issuer, clock = Issuer(3600), Clock()
    cache = _cache(issuer, clock)
    cache.token("b", CREDS)
    issuer.fail = "unreachable"
    clock.now += 3600 - 100
    with structlog.testing.capture_logs() as logs:
        assert cache.token("b", CREDS) == "token-1"
    assert [e["event"] for e in logs] == ["azure_token_unavailable"]
    clock.now += 100
    with pytest.raises(CredentialsUnavailable):
        cache.token("b", CREDS)


def test_a_secret_echoed_by_the_fetch_is_scrubbed() -> None:
    def leaky(tenant: str, client: str, secret: str) -> tuple[str, float]:
        raise RuntimeError(f"boom {secret}")

    cache = TokenCache(fetch=leaky, clock=Clock(), spawn=lambda run: run())
    with structlog.testing.capture_logs() as logs, pytest.raises(CredentialsUnavailable) as err:
        cache.token("b", CREDS)
    assert "s3cr3t-value" not in repr(logs) + str(err.value)


def test_concurrent_first_requests_fetch_once() -> None:
    gate = threading.Event()
    calls = []

    def slow(tenant: str, client: str, secret: str) -> tuple[str, float]:
        calls.append(1)
        gate.wait(5)
        return "tok", 3600

    cache = TokenCache(fetch=slow)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(cache.token("b", CREDS))) for _ in range(8)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(5)
    assert results == ["tok"] * 8 and len(calls) == 1


def test_missing_fields_are_a_503() -> None:
    with pytest.raises(CredentialsUnavailable):
        TokenCache(fetch=Issuer()).token("b", config_pb2.AzureCredentials(tenant_id="t", client_id="c"))


def test_the_token_request_against_the_fake_entra_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    with EntraFake(lifetime=120) as entra:
        monkeypatch.setenv(azure_entra.AUTHORITY_ENV, entra.base_url)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", entra.ca_file)
        token, lifetime = azure_entra.request_token(TEST_TENANT_ID, TEST_CLIENT_ID, TEST_CLIENT_SECRET)
        assert entra.validate(token) and 110 < lifetime <= 120
        discovery, login = entra.requests
        assert discovery.path == f"/{TEST_TENANT_ID}/v2.0/.well-known/openid-configuration"
        form = login.raw_body.decode()
        assert "grant_type=client_credentials" in form and "scope=https%3A%2F%2Fcognitiveservices" in form
        assert login.path == f"/{TEST_TENANT_ID}/oauth2/v2.0/token"
        with pytest.raises(TokenRequestError) as err:
            azure_entra.request_token(TEST_TENANT_ID, TEST_CLIENT_ID, "wrong-secret")
        assert str(err.value) == "the token endpoint refused the app (AADSTS7000215)"
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")  # removed with the fake
    with pytest.raises(TokenRequestError, match=r"token request failed: .*(?i:connect)"):
        azure_entra.request_token(TEST_TENANT_ID, TEST_CLIENT_ID, TEST_CLIENT_SECRET)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "https://login.microsoftonline.com"),
        ("login.microsoftonline.us/", "https://login.microsoftonline.us"),
        ("https://localhost:8443", "https://localhost:8443"),
    ],
)
def test_authority(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: str) -> None:
    if value is None:
        monkeypatch.delenv(azure_entra.AUTHORITY_ENV, raising=False)
    else:
        monkeypatch.setenv(azure_entra.AUTHORITY_ENV, value)
    assert azure_entra.authority() == expected


def test_https_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(azure_entra.AUTHORITY_ENV, "http://127.0.0.1:8080")
    with pytest.raises(TokenRequestError, match="https"):
        azure_entra.authority()


def test_resolve_auth_sets_the_bearer_token_and_strips_client_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []

    def fake_token(backend: str, azure: config_pb2.AzureCredentials) -> str:
        seen.append((backend, azure.client_id))
        return "entra-tok"

    monkeypatch.setattr(auth_module.azure_entra, "bearer_token", fake_token)
    auth = config_pb2.Auth(azure_credentials=CREDS)
    mutation = resolve_auth(auth, {"authorization": "Bearer client", "api-key": "k", "x-api-key": "x"}, {}, "az")
    assert mutation.set_headers == {"authorization": "Bearer entra-tok"}
    assert set(mutation.remove_headers) == {"x-api-key", "api-key"}
    assert seen == [("az", "c")]


def test_resolve_auth_azure_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_module.azure_entra, "bearer_token", lambda b, a: "configured")
    auth = config_pb2.Auth(azure_credentials=CREDS)
    auth.credential_override.from_request_headers.header = ""
    auth.credential_override.fallback_to_configured = True
    headers = {"x-aigw-azure-access-token": "Bearer user-token"}
    assert resolve_auth(auth, headers, {}).set_headers["authorization"] == "Bearer user-token"
    assert "x-aigw-azure-access-token" in resolve_auth(auth, headers, {}).remove_headers
    assert resolve_auth(auth, {}, {}).set_headers["authorization"] == "Bearer configured"
    auth.credential_override.fallback_to_configured = False
    with pytest.raises(MissingCredentialError):
        resolve_auth(auth, {}, {})


def test_tokens_are_fetched_in_the_background_when_a_configuration_arrives(monkeypatch) -> None:
    """So the first request of a backend rarely fetches its token on the translator's event loop."""
    import threading

    from aigw_translator import azure_entra as module
    from aigw_translator import token_cache

    fetched: list[str] = []
    done = threading.Event()

    def fake_token(backend: str, azure: config_pb2.AzureCredentials) -> str:
        fetched.append(backend)
        done.set()
        return "token"

    monkeypatch.setitem(module.PREFETCH, "azure_credentials", (fake_token, None))
    config = config_pb2.TranslatorConfig()
    config.backends.add(name="ns/azure", auth=config_pb2.Auth(azure_credentials=CREDS))
    config.backends.add(name="ns/openai", auth=config_pb2.Auth(api_key=config_pb2.APIKey(key="k")))
    token_cache.prefetch([config], module.PREFETCH)
    assert done.wait(timeout=5)
    assert fetched == ["ns/azure"]


# ---- workload identity: an OIDC token as the client assertion --------------------------------------


def _workload_policy(issuer_url: str, audience: str = "") -> config_pb2.AzureCredentials:
    from aigw_fakes.oidc_issuer import TEST_CLIENT_ID as OIDC_CLIENT
    from aigw_fakes.oidc_issuer import TEST_CLIENT_SECRET as OIDC_SECRET

    return config_pb2.AzureCredentials(
        tenant_id=TEST_TENANT_ID,
        client_id=TEST_CLIENT_ID,
        oidc=config_pb2.OIDCToken(
            issuer=issuer_url, client_id=OIDC_CLIENT, client_secret=OIDC_SECRET, audience=audience
        ),
    )


def test_workload_identity_sends_the_oidc_token_as_client_assertion(monkeypatch: pytest.MonkeyPatch) -> None:
    from aigw_fakes import OIDCIssuerFake
    from aigw_fakes.entra import FederatedCredential
    from aigw_translator import oidc

    oidc.reset()
    with OIDCIssuerFake() as issuer:
        record = FederatedCredential(issuer.verify, issuer.issuer, issuer.subject)
        with EntraFake(lifetime=120, federated=record) as entra:
            monkeypatch.setenv(azure_entra.AUTHORITY_ENV, entra.base_url)
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", entra.ca_file)
            cache = TokenCache(spawn=lambda run: run())
            token = cache.token("ns/azure", _workload_policy(issuer.issuer))
            assert entra.validate(token)
            assert cache.token("ns/azure", _workload_policy(issuer.issuer)) == token  # cached
            [login] = [r for r in entra.requests if r.method == "POST"]
            form = dict(urllib.parse.parse_qsl(login.raw_body.decode()))
            assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            assert form["client_assertion"] == issuer.issued[0] and "client_secret" not in form
            # The default audience is Entra's federated one.
            assert issuer.verify(form["client_assertion"], "api://AzureADTokenExchange")

            # An audience the federated credential does not list: Entra refuses, one error line.
            with structlog.testing.capture_logs() as logs:
                for _ in range(2):
                    with pytest.raises(CredentialsUnavailable) as err:
                        cache.token("ns/azure-2", _workload_policy(issuer.issuer, audience="api://other"))
            assert "AADSTS700212" in err.value.message
            errors = [e for e in logs if e["log_level"] == "error"]
            assert len(errors) == 1 and errors[0]["backend"] == "ns/azure-2"
            assert errors[0]["issuer"] == issuer.issuer
    oidc.reset()


def test_workload_identity_without_an_oidc_token_says_so() -> None:
    from aigw_translator import oidc

    oidc.reset()
    cache = TokenCache(spawn=lambda run: run())
    with pytest.raises(CredentialsUnavailable) as err:
        cache.token("ns/azure", _workload_policy("http://127.0.0.1:9"))
    assert "no OIDC token for the client assertion" in err.value.message
    assert "unreachable" in err.value.message
    oidc.reset()
