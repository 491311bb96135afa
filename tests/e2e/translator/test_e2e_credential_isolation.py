"""End to end through real Envoy: credentials and provider headers never cross backends or attempts.

Priority failover and weighted splits land one request on backends other than the one a header
was meant for; Envoy's upstream filters share one header map across retry attempts. The fakes record
every request they receive, so the tests assert on exactly what each provider saw."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from envoy.extensions.filters.http.header_to_metadata.v3 import header_to_metadata_pb2 as h2m_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2

from aigw_fakes import OpenAIFake
from aigw_xds.xds import build
from tests.e2e.harness import resources
from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.providers import ANTHROPIC_KEY, AZURE_KEY, AZURE_VERSION, OPENAI_KEY, Fakes
from tests.e2e.harness.resources import Ref, Route, Rule

pytestmark = pytest.mark.e2e

APIM = "ocp-apim-subscription-key"
APIM_VALUE = "apim-gateway-secret"
AZURE_USER_HEADER = "x-azure-user-key"
TENANT_HEADER = "x-tenant-key"
PROVIDER_SCOPED = {
    "openai-organization": "org-client",
    "openai-project": "proj-client",
    "cookie": "session=client",
    "x-goog-api-key": "goog-client",
}

ROUTE = Route(
    "iso",
    [
        Rule(
            ["failover"],
            [
                Ref(
                    "azure",
                    model_name_override="gpt-4o-mini",
                    header_mutation={"set": [{"name": "Ocp-Apim-Subscription-Key", "value": APIM_VALUE}]},
                ),
                Ref("anthropic", priority=1, model_name_override="claude-test"),
            ],
        ),
        Rule(["split"], [Ref("openai"), Ref("anthropic", model_name_override="claude-test")]),
        Rule(["anthropic-first"], [Ref("anthropic", model_name_override="claude-test"), Ref("openai", priority=1)]),
    ],
)


def _resources(fakes: Fakes) -> tuple[str, ...]:
    """Azure's policy reads a custom override header, OpenAI's another; Anthropic's reads none."""
    return (
        ROUTE.yaml(),
        resources.backend("openai", fakes.openai.port),
        resources.api_key("openai", OPENAI_KEY, override_header=TENANT_HEADER),
        resources.backend("anthropic", fakes.anthropic.port, "Anthropic"),
        resources.api_key("anthropic", ANTHROPIC_KEY, "AnthropicAPIKey"),
        resources.backend("azure", fakes.azure.port, "AzureOpenAI", version=AZURE_VERSION, hostname="localhost"),
        resources.api_key("azure", AZURE_KEY, "AzureAPIKey", override_header=AZURE_USER_HEADER),
    )


def _client(url: str, **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="client-secret", max_retries=0, default_headers=headers)


CHAT = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("status", [503, 429])
async def test_azure_attempt_headers_never_reach_the_anthropic_failover(fakes: Fakes, status: int) -> None:
    fakes.azure.always_fail(status)
    async with run_gateway(*_resources(fakes)) as gw:
        client = _client(gw.url, **{AZURE_USER_HEADER: AZURE_KEY, TENANT_HEADER: "tenant-secret"}, **PROVIDER_SCOPED)
        resp = await client.chat.completions.create(model="failover", messages=CHAT)
        assert resp.choices[0].message.content == "Fake claude-test reply to: hi"
    [tried] = fakes.azure.requests
    [served] = fakes.anthropic.requests
    # Attempt 1 got Azure's headers (so the retry had them in Envoy's shared header map) ...
    assert tried.header(APIM) == APIM_VALUE
    assert tried.header("api-key") == AZURE_KEY
    # ... and attempt 2 none of them, nor any client credential or provider-scoped header.
    for name in (APIM, "api-key", "authorization", AZURE_USER_HEADER, TENANT_HEADER, *PROVIDER_SCOPED):
        assert served.header(name) is None, name
    assert served.header("x-api-key") == ANTHROPIC_KEY
    assert served.header("anthropic-version") == "2023-06-01"
    assert served.header("host").startswith("127.0.0.1")  # not the Azure attempt's host
    for seen in (tried, served):
        assert "client-secret" not in str(seen.headers)
        assert not set(PROVIDER_SCOPED) & set(seen.headers)


async def test_anthropic_attempt_headers_never_reach_the_openai_failover(fakes: Fakes) -> None:
    fakes.anthropic.always_fail(503)
    async with run_gateway(*_resources(fakes)) as gw:
        resp = await _client(gw.url).chat.completions.create(model="anthropic-first", messages=CHAT)
        assert resp.choices[0].message.content == "Fake anthropic-first reply to: hi"
    [tried] = fakes.anthropic.requests
    [served] = fakes.openai.requests
    assert tried.header("anthropic-version") == "2023-06-01" and tried.header("x-api-key") == ANTHROPIC_KEY
    assert served.header("anthropic-version") is None
    assert served.header("x-api-key") is None
    assert served.header("authorization") == f"Bearer {OPENAI_KEY}"


async def test_weighted_split_never_forwards_another_backends_override_header(fakes: Fakes) -> None:
    """OpenAI's policy reads x-tenant-key; when the split picks Anthropic, Anthropic must not get it."""
    async with run_gateway(*_resources(fakes)) as gw:
        client = _client(gw.url, **{TENANT_HEADER: OPENAI_KEY})
        for _ in range(60):
            await client.chat.completions.create(model="split", messages=CHAT)
            if fakes.openai.requests and fakes.anthropic.requests:
                break
    assert fakes.openai.requests and fakes.anthropic.requests, "the split never picked both backends"
    for seen in fakes.anthropic.requests:
        assert seen.header(TENANT_HEADER) is None
        assert seen.header("x-api-key") == ANTHROPIC_KEY
    for seen in fakes.openai.requests:
        assert seen.header(TENANT_HEADER) is None
        assert seen.header("authorization") == f"Bearer {OPENAI_KEY}"


TENANT_NAMESPACE = "tenant.auth"
TENANT_TOKEN_HEADER = "x-tenant-token"


def _metadata_policy(fallback: bool) -> str:
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: meta-key, namespace: {resources.NAMESPACE}}}
spec:
  targetRefs:
    - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: meta}}
  type: APIKey
  apiKey:
    secretRef: {{name: meta-key}}
  credentialOverride:
    fromDynamicMetadata: {{namespace: {TENANT_NAMESPACE}, key: api_key, fallbackToConfigured: {str(fallback).lower()}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: meta-key, namespace: {resources.NAMESPACE}}}
stringData: {{apiKey: shared-gateway-key}}
"""


@pytest.fixture
def tenant_metadata_filter(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The listener the control plane builds, with Envoy's header_to_metadata filter first: it
    moves the client's x-tenant-token into dynamic metadata (namespace tenant.auth, key api_key),
    as an authentication filter of the user's would."""
    original = build._listener

    def with_metadata_filter(*args, **kwargs):
        listener = original(*args, **kwargs)
        network_filter = listener.filter_chains[0].filters[0]
        manager = hcm_pb2.HttpConnectionManager()
        network_filter.typed_config.Unpack(manager)
        rule = h2m_pb2.Config.Rule(
            header=TENANT_TOKEN_HEADER,
            on_header_present=h2m_pb2.Config.KeyValuePair(
                metadata_namespace=TENANT_NAMESPACE, key="api_key", type=h2m_pb2.Config.STRING
            ),
            remove=True,
        )
        config = any_pb2.Any()
        config.Pack(h2m_pb2.Config(request_rules=[rule]))
        manager.http_filters.insert(
            0, hcm_pb2.HttpFilter(name="envoy.filters.http.header_to_metadata", typed_config=config)
        )
        network_filter.typed_config.Pack(manager)
        return listener

    monkeypatch.setattr(build, "_listener", with_metadata_filter)
    yield


@pytest.mark.parametrize("fallback", [False, True])
async def test_credential_override_from_another_filters_metadata_namespace(
    tenant_metadata_filter: None, fallback: bool
) -> None:
    """The upstream ext_proc forwards the namespace the policy names: the tenant's key is used,
    never the shared one (with fallbackToConfigured, a missing namespace used to fall back silently)."""
    provider = await OpenAIFake(api_key="tenant-token-1").start()
    try:
        route = Route("meta", [Rule(["tenant-model"], [Ref("meta")])])
        docs = (route.yaml(), resources.backend("meta", provider.port), _metadata_policy(fallback))
        async with run_gateway(*docs) as gw:
            client = _client(gw.url, **{TENANT_TOKEN_HEADER: "tenant-token-1"})
            resp = await client.chat.completions.create(model="tenant-model", messages=CHAT)
            assert resp.choices[0].message.content
            [seen] = provider.requests
            assert seen.header("authorization") == "Bearer tenant-token-1"
            assert seen.header(TENANT_TOKEN_HEADER) is None
    finally:
        await provider.stop()


async def test_model_cannot_walk_out_of_its_azure_deployment_and_control_characters_are_400(fakes: Fakes) -> None:
    """A model that names a path ("<deployment>/../<other deployment>") stays one path segment, so
    it can never reach another deployment with the gateway's key; a model with a control character
    is the client's error, not a failed header mutation (500)."""
    walker = "gpt-4o/../gpt-4o-mini"
    route = Route("walk", [Rule([walker, "gpt-4o"], [Ref("azure")])])
    docs = (
        route.yaml(),
        resources.backend("azure", fakes.azure.port, "AzureOpenAI", version=AZURE_VERSION, hostname="localhost"),
        resources.api_key("azure", AZURE_KEY, "AzureAPIKey"),
    )
    async with run_gateway(*docs) as gw:
        client = _client(gw.url)
        ok = await client.chat.completions.create(model="gpt-4o", messages=CHAT)
        assert ok.model.startswith("gpt-4o-2024")
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model=walker, messages=CHAT)
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="gpt-4o\r\nx-injected: 1", messages=CHAT)
        assert "control characters" in bad.value.message
    # The control-character request never reached the provider.
    assert len(fakes.azure.requests) == 2
