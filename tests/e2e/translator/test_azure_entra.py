"""Azure OpenAI with an AzureCredentials BackendSecurityPolicy (Entra ID client credentials) through
real Envoy, with the official openai SDK as client.

The translator (in process) gets tokens from aigw_fakes.EntraFake, reached through
azure-identity's ClientSecretCredential with AZURE_AUTHORITY_HOST=https://localhost:<port>: the fake
serves TLS with a self-signed certificate made at start, trusted through REQUESTS_CA_BUNDLE (the
credential's transport is requests). aigw_fakes.AzureOpenAIFake accepts exactly the tokens that
fake issued and has not expired yet, and refuses its own api-key here (api_key=None)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import openai
import pytest
import structlog

from aigw_fakes import AzureOpenAIFake, EntraFake
from aigw_fakes.entra import TEST_CLIENT_ID, TEST_CLIENT_SECRET, TEST_TENANT_ID
from aigw_translator import azure_entra
from tests.e2e.harness import resources
from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.resources import NAMESPACE, Ref, Route, Rule
from tests.e2e.harness.traffic import send_without_a_failure

pytestmark = pytest.mark.e2e

VERSION = "2024-10-21"
ROUTE = Route("entra", [Rule(["gpt-4o"], [Ref("azure")])])
CHAT = [{"role": "user", "content": "hello there"}]


def _entra_policy(backend: str, secret: str) -> str:
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: {backend}-entra, namespace: {NAMESPACE}}}
spec:
  targetRefs:
    - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {backend}}}
  type: AzureCredentials
  azureCredentials:
    clientID: {json.dumps(TEST_CLIENT_ID)}
    tenantID: {json.dumps(TEST_TENANT_ID)}
    clientSecretRef: {{name: {backend}-entra}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {backend}-entra, namespace: {NAMESPACE}}}
stringData: {{client-secret: {json.dumps(secret)}}}
"""


def _docs(azure_port: int, secret: str = TEST_CLIENT_SECRET) -> tuple[str, ...]:
    return (
        ROUTE.yaml(),
        resources.backend("azure", azure_port, "AzureOpenAI", version=VERSION, hostname="localhost"),
        _entra_policy("azure", secret),
    )


@pytest.fixture
async def providers(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[EntraFake, AzureOpenAIFake]]:
    # The token endpoint runs on its own thread: the translator's token request blocks the event
    # loop it runs on (this test's) until the token comes.
    entra = EntraFake().start_in_thread()
    azure = await AzureOpenAIFake(api_key=None, token_validator=entra.validate).start()
    monkeypatch.setenv(azure_entra.AUTHORITY_ENV, entra.base_url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", entra.ca_file)
    monkeypatch.setattr(azure_entra, "_cache", azure_entra.TokenCache())  # no token of another test
    try:
        yield entra, azure
    finally:
        await azure.stop()
        entra.stop_thread()


def _client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="client-key", max_retries=0)


async def test_requests_carry_the_token_the_fake_issued(providers: tuple[EntraFake, AzureOpenAIFake]) -> None:
    entra, azure = providers
    async with run_gateway(*_docs(azure.port)) as gw:
        client = _client(gw.url)
        resp = await client.chat.completions.create(model="gpt-4o", messages=CHAT)
        assert resp.choices[0].message.content == "Fake gpt-4o-2024-08-06 reply to: hello there"
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=CHAT, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("Fake gpt-4o")
        for _ in range(3):
            await client.chat.completions.create(model="gpt-4o", messages=CHAT)
    assert len(entra.issued) == 1  # cached: one token for five requests
    assert [r.header("authorization") for r in azure.requests] == [f"Bearer {entra.issued[0]}"] * 5
    for seen in azure.requests:
        assert seen.path == "/openai/deployments/gpt-4o/chat/completions" and seen.query["api-version"] == VERSION
        assert seen.header("api-key") is None and "client-key" not in json.dumps(seen.headers)
    [login] = [r for r in entra.requests if r.method == "POST"]
    assert f"client_id={TEST_CLIENT_ID}" in login.raw_body.decode()


async def test_short_lived_tokens_rotate_without_a_failed_request(
    providers: tuple[EntraFake, AzureOpenAIFake],
) -> None:
    entra, azure = providers
    entra.lifetime = 2
    async with run_gateway(*_docs(azure.port)) as gw:
        client = _client(gw.url)
        # Four at a time: concurrent requests across a refresh.
        sent = await send_without_a_failure(
            lambda: [client.chat.completions.create(model="gpt-4o", messages=CHAT) for _ in range(4)], seconds=7
        )
    used = [r.header("authorization") for r in azure.requests]
    assert len(used) == sent
    assert len(entra.issued) >= 3  # about one per second (refreshed at half the lifetime)
    assert len(set(used)) >= 3 and set(used) <= {f"Bearer {t}" for t in entra.issued}


async def test_a_wrong_client_secret_is_an_openai_shaped_503_without_the_secret(
    providers: tuple[EntraFake, AzureOpenAIFake], capfd: pytest.CaptureFixture[str]
) -> None:
    entra, azure = providers
    wrong = "wrong-entra-secret~abcdef"
    with structlog.testing.capture_logs() as logs:
        async with run_gateway(*_docs(azure.port, secret=wrong)) as gw:
            client = _client(gw.url)
            errors = []
            for _ in range(4):
                with pytest.raises(openai.InternalServerError) as failed:
                    await client.chat.completions.create(model="gpt-4o", messages=CHAT)
                errors.append(failed.value)
    for err in errors:
        assert err.status_code == 503
        assert isinstance(err.body, dict) and err.body["type"] == "server_error"
        assert "no Azure Entra ID token" in err.body["message"]
        assert wrong not in json.dumps(err.body) and wrong not in str(err.response.headers)
    assert not azure.requests  # nothing was sent without a token
    assert entra.requests  # the token endpoint was asked (and said invalid_client)
    unavailable = [e for e in logs if e.get("event") == "azure_token_unavailable"]
    assert len(unavailable) == 1 and "AADSTS7000215" in unavailable[0]["reason"]
    assert wrong not in repr(logs)
    out, err_text = capfd.readouterr()
    assert wrong not in out and wrong not in err_text
