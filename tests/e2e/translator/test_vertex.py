"""GCP Vertex AI through real Envoy with the official openai and anthropic SDKs as clients: Gemini
chat, streamed tool calls and embeddings (GCPVertexAI), Claude on Vertex for Anthropic clients
(GCPAnthropic), GCPCredentials from YAML end to end (a service-account key, workload identity
federation OIDC -> STS -> impersonation, gcloud's user credentials and their quota project), token
rotation without a failed request, a key that gives no token (a 503 in each client's shape, one log
line, other backends serving), and cross-cloud failover from a throttled Bedrock to Vertex.

The stand-ins, on loopback: aigw_fakes.GoogleAuthFake (Google's token endpoint, STS and IAM
Credentials; expiring opaque tokens), aigw_fakes.VertexFake (accepts only tokens that fake issued
and has not expired), aigw_fakes.OIDCIssuerFake, BedrockFake and OpenAIFake. The translator runs in
process; google-auth reaches the token endpoint through the key's own token_uri, STS and IAM
Credentials through AIGW_GCP_STS_URL / AIGW_GCP_IAM_CREDENTIALS_URL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import google.oauth2.credentials
import httpx
import openai
import pytest
import structlog

from aigw_fakes import BedrockFake, GoogleAuthFake, OIDCIssuerFake, OpenAIFake, VertexFake
from aigw_fakes.bedrock import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY
from aigw_fakes.google_auth import provider_audience
from aigw_fakes.oidc_issuer import TEST_CLIENT_ID, TEST_CLIENT_SECRET
from aigw_fakes.service_account_key import make_service_account_key
from aigw_translator import gcp, oidc
from tests.e2e.harness import resources
from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.resources import NAMESPACE, Ref, Route, Rule
from tests.e2e.harness.traffic import send_without_a_failure
from tests.e2e.translator.test_bedrock import WEATHER, _aws_policy

pytestmark = pytest.mark.e2e

PROJECT, REGION = "my-project", "us-central1"
PROJECT_NUMBER, POOL, PROVIDER = "123456789012", "aigw-pool", "aigw-oidc"
OPENAI_KEY = "sk-openai-bystander"
CLAUDE = "claude-3-5-haiku@20241022"
ROUTE = Route(
    "vertex",
    [
        Rule(["gemini-2.5-flash", "gemini-embedding-001", "gemini-3-pro-preview"], [Ref("vertex")]),
        Rule(["claude-haiku"], [Ref("claude", model_name_override=CLAUDE)]),
        Rule(["gpt-4o-mini"], [Ref("openai")]),
        Rule(
            ["cross-cloud"],
            [
                Ref("bedrock", model_name_override="amazon.nova-micro-v1:0"),
                Ref("vertex", priority=1, model_name_override="gemini-2.0-flash"),
            ],
        ),
    ],
)
CHAT = [{"role": "user", "content": "hello there"}]
GEMINI_PATH = f"/v1/projects/{PROJECT}/locations/{REGION}/publishers/google/models"


def _gcp_policy(credential: str, secret: str) -> str:
    """The GCPCredentials policy of both Vertex backends (`credential`: its credentialsFile or
    workloadIdentityFederationConfig line(s)) and its Secret (`secret`: the stringData)."""
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: vertex-gcp, namespace: {NAMESPACE}}}
spec:
  targetRefs:
    - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: vertex}}
    - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: claude}}
  type: GCPCredentials
  gcpCredentials:
    projectName: {PROJECT}
    region: {REGION}
{credential}
---
apiVersion: v1
kind: Secret
metadata: {{name: vertex-gcp, namespace: {NAMESPACE}}}
stringData: {secret}
"""


def _key_policy(key_json: str) -> str:
    return _gcp_policy(
        "    credentialsFile: {secretRef: {name: vertex-gcp}}", f"{{service_account.json: {json.dumps(key_json)}}}"
    )


def _federation_policy(issuer: str, service_account: str) -> str:
    audience = json.dumps("https:" + provider_audience(PROJECT_NUMBER, POOL, PROVIDER))
    return _gcp_policy(
        f"""    workloadIdentityFederationConfig:
      projectID: "{PROJECT_NUMBER}"
      workloadIdentityPoolName: {POOL}
      workloadIdentityProviderName: {PROVIDER}
      serviceAccountImpersonation: {{serviceAccountName: {service_account}}}
      oidcExchangeToken:
        oidc:
          provider: {{issuer: {json.dumps(issuer)}}}
          clientID: {json.dumps(TEST_CLIENT_ID)}
          clientSecret: {{name: vertex-gcp}}
        aud: {audience}""",
        f"{{client-secret: {json.dumps(TEST_CLIENT_SECRET)}}}",
    )


@dataclass
class Services:
    google: GoogleAuthFake
    vertex: VertexFake
    bedrock: BedrockFake
    openai: OpenAIFake

    def docs(self, policy: str) -> tuple[str, ...]:
        return (
            ROUTE.yaml(),
            resources.backend("vertex", self.vertex.port, "GCPVertexAI"),
            resources.backend("claude", self.vertex.port, "GCPAnthropic", version="vertex-2023-10-16"),
            policy,
            resources.backend("bedrock", self.bedrock.port, "AWSBedrock"),
            _aws_policy("bedrock", TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY),
            resources.backend("openai", self.openai.port),
            resources.api_key("openai", OPENAI_KEY),
        )

    def key_docs(self) -> tuple[str, ...]:
        return self.docs(_key_policy(json.dumps(self.google.make_key())))


@pytest.fixture
async def services() -> AsyncIterator[Services]:
    # The token services run on their own threads: the translator's token request blocks the
    # event loop it runs on (this test's) until the token comes.
    gcp.reset()
    oidc.reset()
    google = GoogleAuthFake().start_in_thread()
    vertex = await VertexFake(
        token_validator=google.validate, user_tokens=google.user_token, project=PROJECT, region=REGION
    ).start()
    bedrock = await BedrockFake().start()
    bystander = await OpenAIFake(api_key=OPENAI_KEY).start()
    try:
        yield Services(google, vertex, bedrock, bystander)
    finally:
        for fake in (vertex, bedrock, bystander):
            await fake.stop()
        google.stop_thread()
        gcp.reset()
        oidc.reset()


def _client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="client-key", max_retries=0)


def _bearers(vertex: VertexFake) -> list[str]:
    return [str(r.header("authorization")) for r in vertex.requests]


async def test_gemini_chat_streamed_tool_call_and_embeddings_with_a_service_account_key(services: Services) -> None:
    async with run_gateway(*services.key_docs()) as gw:
        client = _client(gw.url)
        reply = await client.chat.completions.create(model="gemini-2.5-flash", messages=CHAT)
        assert reply.choices[0].message.content == "Fake gemini-2.5-flash reply to: hello there"
        assert reply.usage is not None and reply.usage.prompt_tokens > 0

        stream = await client.chat.completions.create(
            model="gemini-2.5-flash",
            messages=[{"role": "user", "content": "call get_weather for Paris"}],
            tools=[WEATHER],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        assert [(tc.function.name, tc.function.arguments) for tc in calls if tc.function] == [
            ("get_weather", '{"city":"example city"}')
        ]
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
            "tool_calls"
        ]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

        embedding = await client.embeddings.create(model="gemini-embedding-001", input=["b c"])
        assert [len(d.embedding) for d in embedding.data] == [3072]  # gemini-embedding-001's default
        # gemini-embedding-001 takes one input per request: two are refused here, never sent.
        with pytest.raises(openai.UnprocessableEntityError, match="one input per request"):
            await client.embeddings.create(model="gemini-embedding-001", input=["a", "b c"])

    paths = [r.path for r in services.vertex.requests]
    assert paths == [
        f"{GEMINI_PATH}/gemini-2.5-flash:generateContent",
        f"{GEMINI_PATH}/gemini-2.5-flash:streamGenerateContent",
        f"{GEMINI_PATH}/gemini-embedding-001:predict",
    ]
    assert services.vertex.requests[1].query == {"alt": "sse"}
    assert len(services.google.issued) == 1  # one token, cached, for every request
    assert all(services.google.validate(b.removeprefix("Bearer ")) for b in _bearers(services.vertex))
    assert "client-key" not in json.dumps([r.headers for r in services.vertex.requests])


@pytest.mark.parametrize("quota_project", ["billing-project", None])
async def test_gcloud_user_credentials_send_their_quota_project(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quota_project: str | None
) -> None:
    """The application default credentials `gcloud auth application-default login` writes (a user's
    refresh token, in gcloud's configuration directory: CLOUDSDK_CONFIG here) and a policy naming no
    key: the quota project they name goes to Vertex AI as x-goog-user-project, as Google's client
    libraries send it. Without one the fake answers as Vertex does a user's token, a 403 saying so,
    which reaches the client in its shape."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("GOOGLE_CLOUD_QUOTA_PROJECT", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    # google-auth sends a user's refresh grant to Google's token endpoint whatever the file says.
    monkeypatch.setattr(google.oauth2.credentials, "_GOOGLE_OAUTH2_TOKEN_ENDPOINT", services.google.token_uri)
    adc = services.google.add_user(email="dev@example.com", quota_project=quota_project)
    (tmp_path / "application_default_credentials.json").write_text(json.dumps(adc))
    async with run_gateway(*services.docs(_gcp_policy("", "{}"))) as gw:
        client = _client(gw.url)
        if quota_project is None:
            with pytest.raises(openai.PermissionDeniedError, match="requires a quota project"):
                await client.chat.completions.create(model="gemini-2.5-flash", messages=CHAT)
        else:
            reply = await client.chat.completions.create(model="gemini-2.5-flash", messages=CHAT)
            assert reply.choices[0].message.content == "Fake gemini-2.5-flash reply to: hello there"
    assert [r.header("x-goog-user-project") for r in services.vertex.requests] == [quota_project]
    assert services.google.issued == [("user", "dev@example.com")]
    assert adc["refresh_token"] not in json.dumps([r.headers for r in services.vertex.requests])


async def test_vllm_tokenize_is_counted_by_gemini_count_tokens(services: Services) -> None:
    """POST /tokenize (vLLM's shape) on a Gemini model: :countTokens, answered as vLLM's
    TokenizeResponse with Vertex's count (the same the chat's prompt_tokens shows)."""
    messages = [{"role": "system", "content": "be brief"}, *CHAT]
    services.vertex.fail_next(1, 429)
    async with run_gateway(*services.key_docs()) as gw, httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
        limited = await http.post("/tokenize", json={"model": "gemini-2.5-flash", "prompt": "hello there"})
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "RESOURCE_EXHAUSTED"

        by_messages = await http.post("/tokenize", json={"model": "gemini-2.5-flash", "messages": messages})
        assert by_messages.status_code == 200, by_messages.text
        by_prompt = await http.post(
            "/tokenize", json={"model": "gemini-2.5-flash", "prompt": "hello there", "add_special_tokens": True}
        )
        assert by_prompt.status_code == 200, by_prompt.text
        reply = await _client(gw.url).chat.completions.create(model="gemini-2.5-flash", messages=messages)  # type: ignore[arg-type]
        refused = await http.post("/tokenize", json={"model": "gemini-2.5-flash"})
        assert refused.status_code == 400
        assert "prompt" in refused.json()["error"]["message"]

    counted = by_messages.json()
    assert reply.usage is not None
    assert counted == {"count": reply.usage.prompt_tokens, "max_model_len": None, "tokens": []}
    assert counted["count"] > by_prompt.json()["count"] > 0  # the system instruction is counted
    requests = services.vertex.requests
    assert [r.path for r in requests] == [f"{GEMINI_PATH}/gemini-2.5-flash:countTokens"] * 3 + [
        f"{GEMINI_PATH}/gemini-2.5-flash:generateContent"
    ]
    assert requests[2].body == {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}
    assert requests[1].body["systemInstruction"] == {"parts": [{"text": "be brief"}]}


async def test_gemini_3_thought_signatures_come_back_on_the_next_turn(services: Services) -> None:
    """Gemini 3 refuses a function call sent back without the thoughtSignature it came with: the
    client's next turn, as the openai SDK returns the assistant message, must carry it."""
    ask = [{"role": "user", "content": "call get_weather for Paris"}]
    async with run_gateway(*services.key_docs()) as gw:
        client = _client(gw.url)
        first = await client.chat.completions.create(model="gemini-3-pro-preview", messages=ask, tools=[WEATHER])
        assistant = first.choices[0].message.model_dump(exclude_none=True)
        [call] = assistant["tool_calls"]
        answer = {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature": 21}'}
        second = await client.chat.completions.create(
            model="gemini-3-pro-preview", messages=[*ask, assistant, answer], tools=[WEATHER]
        )
        assert second.choices[0].message.content
    sent = services.vertex.requests[1].body["contents"][1]["parts"][0]
    issued = services.vertex.requests[0]
    assert sent["functionCall"]["name"] == "get_weather" and sent["thoughtSignature"]
    assert sent["thoughtSignature"] != "skip_thought_signature_validator"  # the one Gemini gave
    assert issued.path.endswith("/gemini-3-pro-preview:generateContent")


async def test_a_gemini_3_tool_loop_rebuilt_without_its_signature_still_answers(services: Services) -> None:
    """From a provider-API review: most frameworks rebuild the assistant's tool_calls from id, type
    and function, and a history failed over from another model never had a signature; Gemini 3
    answered such a turn 400. The call goes with the signature Google documents for turns the model
    did not produce, which the fake, as Vertex, accepts."""
    ask = [{"role": "user", "content": "call get_weather for Paris"}]
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    rebuilt = {"role": "assistant", "content": None, "tool_calls": [call]}
    answer = {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'}
    async with run_gateway(*services.key_docs()) as gw:
        client = _client(gw.url)
        reply = await client.chat.completions.create(
            model="gemini-3-pro-preview", messages=[*ask, rebuilt, answer], tools=[WEATHER]
        )
        assert reply.choices[0].message.content
        # A Gemini 2.x model, which checks no signature, is sent none.
        history = [*ask, rebuilt, answer]
        await client.chat.completions.create(model="gemini-2.5-flash", messages=history, tools=[WEATHER])
    signed = services.vertex.requests[0].body["contents"][1]["parts"][0]
    assert signed["thoughtSignature"] == "skip_thought_signature_validator"
    assert "thoughtSignature" not in services.vertex.requests[1].body["contents"][1]["parts"][0]


async def test_reasoning_comes_back_with_its_token_count(services: Services) -> None:
    async with run_gateway(*services.key_docs()) as gw:
        client = _client(gw.url)
        reply = await client.chat.completions.create(model="gemini-2.5-flash", messages=CHAT, reasoning_effort="low")
    config = services.vertex.requests[0].body["generationConfig"]["thinkingConfig"]
    assert config["includeThoughts"] is True
    message = reply.choices[0].message
    assert (message.model_extra or {}).get("reasoning_content", "").startswith("Fake reasoning about: hello there")
    assert message.content == "Fake gemini-2.5-flash reply to: hello there"
    assert reply.usage is not None and reply.usage.completion_tokens_details is not None
    assert (reply.usage.completion_tokens_details.reasoning_tokens or 0) > 0


async def test_structured_output_reaches_gemini_and_comes_back_as_json(services: Services) -> None:
    """The openai SDK's json_schema response_format: Gemini is asked for JSON of that schema (the
    fake answers such JSON only when asked, as Gemini does) and the content parses into it."""
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
        "additionalProperties": False,
    }
    async with run_gateway(*services.key_docs()) as gw:
        reply = await _client(gw.url).chat.completions.create(
            model="gemini-2.5-flash",
            messages=CHAT,
            response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": schema, "strict": True}},
        )
    config = services.vertex.requests[0].body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    answer = json.loads(reply.choices[0].message.content or "")
    assert isinstance(answer["city"], str) and isinstance(answer["days"], int)


async def test_logprobs_come_back_from_gemini_in_openai_s_shape(services: Services) -> None:
    """logprobs and top_logprobs become responseLogprobs and logprobs, and Gemini's logprobsResult
    comes back as the choice's logprobs (a provider-API review found no fake answering any: the
    conversion had never run end to end)."""
    async with run_gateway(*services.key_docs()) as gw:
        reply = await _client(gw.url).chat.completions.create(
            model="gemini-2.5-flash", messages=CHAT, logprobs=True, top_logprobs=2
        )
    config = services.vertex.requests[0].body["generationConfig"]
    assert config["responseLogprobs"] is True and config["logprobs"] == 2
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert "".join(t.token for t in logprobs.content) == reply.choices[0].message.content
    assert all(t.logprob < 0 and len(t.top_logprobs) == 2 for t in logprobs.content)
    assert logprobs.content[0].top_logprobs[0].token == logprobs.content[0].token


async def test_a_rate_limited_vertex_is_a_429_in_each_clients_shape(services: Services) -> None:
    services.vertex.fail_next(2, 429)
    async with run_gateway(*services.key_docs()) as gw:
        with pytest.raises(openai.RateLimitError) as limited:
            await _client(gw.url).chat.completions.create(model="gemini-2.5-flash", messages=CHAT)
        assert limited.value.status_code == 429
        claude = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0)
        with pytest.raises(anthropic.RateLimitError) as refused:
            await claude.messages.create(model="claude-haiku", max_tokens=10, messages=CHAT)  # type: ignore[arg-type]
        assert refused.value.status_code == 429


async def test_anthropic_sdk_to_claude_on_vertex(services: Services) -> None:
    async with run_gateway(*services.key_docs()) as gw:
        client = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="client-key", max_retries=0)
        message = await client.messages.create(model="claude-haiku", max_tokens=100, messages=CHAT)  # type: ignore[arg-type]
        assert message.content[0].text == f"Fake {CLAUDE} reply to: hello there"  # type: ignore[union-attr]
        async with client.messages.stream(model="claude-haiku", max_tokens=100, messages=CHAT) as stream:  # type: ignore[arg-type]
            text = "".join([piece async for piece in stream.text_stream])
        assert text == f"Fake {CLAUDE} reply to: hello there"
        counted = await client.messages.count_tokens(model="claude-haiku", messages=CHAT)  # type: ignore[arg-type]
        assert counted.input_tokens > 0
    raw, streamed, count = services.vertex.requests
    models = f"/v1/projects/{PROJECT}/locations/{REGION}/publishers/anthropic/models"
    assert count.path == f"{models}/count-tokens:rawPredict" and count.body["model"] == CLAUDE
    base = f"{models}/{CLAUDE}"
    assert (raw.path, streamed.path) == (f"{base}:rawPredict", f"{base}:streamRawPredict")
    assert raw.body["anthropic_version"] == "vertex-2023-10-16" and "model" not in raw.body
    assert raw.header("x-api-key") is None and "client-key" not in json.dumps(raw.headers)


async def test_claude_code_s_betas_reach_vertex_as_far_as_it_takes_them(services: Services) -> None:
    """A provider-API review: Claude Code sends first-party betas (claude-code-..., effort-...,
    oauth-...) to any Anthropic base URL, and Claude on Vertex answers each unknown one with a 400
    "Unexpected value(s)": every request failed. The betas Vertex takes pass; the others go (the
    header with them when none is left), for messages and token counting alike."""
    betas = "claude-code-20250219,interleaved-thinking-2025-05-14,effort-2025-11-24,web-search-2025-03-05"
    async with run_gateway(*services.key_docs()) as gw:
        client = anthropic.AsyncAnthropic(
            base_url=gw.url + "/anthropic", api_key="k", max_retries=0, default_headers={"anthropic-beta": betas}
        )
        message = await client.messages.create(model="claude-haiku", max_tokens=100, messages=CHAT)  # type: ignore[arg-type]
        assert message.content[0].text == f"Fake {CLAUDE} reply to: hello there"  # type: ignore[union-attr]
        counted = await client.messages.count_tokens(model="claude-haiku", messages=CHAT)  # type: ignore[arg-type]
        assert counted.input_tokens > 0
        first_party = client.with_options(default_headers={"anthropic-beta": "claude-code-20250219"})
        assert (await first_party.messages.create(model="claude-haiku", max_tokens=9, messages=CHAT)).content  # type: ignore[arg-type]
    raw, count, alone = services.vertex.requests
    assert raw.header("anthropic-beta") == "interleaved-thinking-2025-05-14,web-search-2025-03-05"
    assert count.header("anthropic-beta") == "interleaved-thinking-2025-05-14"  # no web search when counting
    assert alone.header("anthropic-beta") is None


async def test_workload_identity_federation_impersonating_a_service_account(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    email = f"vertex-caller@{PROJECT}.iam.gserviceaccount.com"  # the project ID (projectName), not the number
    with OIDCIssuerFake() as issuer:
        services.google.add_workload_provider(
            provider_audience(PROJECT_NUMBER, POOL, PROVIDER), issuer=issuer.issuer, jwks_uri=issuer.base_url + "/jwks"
        )
        services.google.allow_impersonation(email)
        monkeypatch.setenv(gcp.STS_URL_ENV, services.google.sts_url)
        monkeypatch.setenv(gcp.IAM_CREDENTIALS_URL_ENV, services.google.iam_credentials_url)
        async with run_gateway(*services.docs(_federation_policy(issuer.issuer, "vertex-caller"))) as gw:
            client = _client(gw.url)
            reply = await client.chat.completions.create(model="gemini-2.5-flash", messages=CHAT)
            assert reply.choices[0].message.content
        assert issuer.token_requests >= 1
    kinds = [kind for kind, _ in services.google.issued]
    assert kinds[:2] == ["sts", "impersonated"]
    assert services.google.issued[1] == ("impersonated", email)
    [bearer] = _bearers(services.vertex)
    assert services.google.validate(bearer.removeprefix("Bearer "))


async def test_short_lived_tokens_rotate_without_a_failed_request(services: Services) -> None:
    services.google.lifetime = 2
    async with run_gateway(*services.key_docs()) as gw:
        client = _client(gw.url)
        sent = await send_without_a_failure(
            lambda: [client.chat.completions.create(model="gemini-2.5-flash", messages=CHAT) for _ in range(4)], 7
        )
    used = _bearers(services.vertex)
    assert len(used) == sent
    assert len(services.google.issued) >= 3  # about one a second (refreshed at half the lifetime)
    assert len(set(used)) >= 3


@pytest.mark.parametrize("bad", ["unknown-key", "unreadable-key"])
async def test_a_key_that_gives_no_token_is_a_503_in_each_clients_shape_and_others_keep_serving(
    services: Services, capfd: pytest.CaptureFixture[str], bad: str
) -> None:
    key: dict[str, Any] = make_service_account_key(services.google.token_uri)  # never registered
    # A key that is not JSON, or misses a field, is refused when compiled (test_compile); one whose
    # private key does not read passes that check and fails here, as an unknown key does.
    unreadable = {**key, "private_key": "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"}
    key_json = json.dumps(key if bad == "unknown-key" else unreadable)
    secret_line = str(key["private_key"]).splitlines()[1]
    with structlog.testing.capture_logs() as logs:
        async with run_gateway(*services.docs(_key_policy(key_json))) as gw:
            client = _client(gw.url)
            for _ in range(3):
                with pytest.raises(openai.InternalServerError) as failed:
                    await client.chat.completions.create(model="gemini-2.5-flash", messages=CHAT)
                assert failed.value.status_code == 503
                assert isinstance(failed.value.body, dict) and failed.value.body["type"] == "server_error"
                assert "no GCP access token" in failed.value.body["message"]
            claude = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0)
            with pytest.raises(anthropic.InternalServerError) as refused:
                await claude.messages.create(model="claude-haiku", max_tokens=10, messages=CHAT)  # type: ignore[arg-type]
            assert refused.value.status_code == 503
            assert isinstance(refused.value.body, dict) and refused.value.body["type"] == "error"
            # Another backend keeps serving.
            served = await client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)
            assert served.choices[0].message.content
    assert not services.vertex.requests  # nothing was sent without a token
    unavailable = [e for e in logs if e.get("event") == "gcp_token_unavailable"]
    assert len(unavailable) == 1, unavailable
    assert unavailable[0]["backend"].startswith(f"{NAMESPACE}/")
    assert unavailable[0]["policy"] == f"{NAMESPACE}/vertex-gcp"
    assert ("invalid_grant" if bad == "unknown-key" else "unreadable private key") in unavailable[0]["reason"]
    out, err = capfd.readouterr()
    for text in (repr(logs), out, err):
        assert secret_line not in text


async def test_a_throttled_bedrock_fails_over_to_vertex_in_openai_shape(services: Services) -> None:
    """Priority 0 is Bedrock, throttled (429); priority 1 is Gemini on Vertex: the client gets
    Gemini's answer as an OpenAI chat completion, each cloud having seen its own credential only."""
    services.bedrock.always_fail(429)
    async with run_gateway(*services.key_docs()) as gw:
        client = _client(gw.url)
        reply = await client.chat.completions.create(model="cross-cloud", messages=CHAT)
        assert reply.object == "chat.completion"
        assert reply.choices[0].message.content == "Fake gemini-2.0-flash reply to: hello there"
        # Found by review: an Anthropic client fails over the same way, to Gemini, which serves no
        # Anthropic Messages: that was a 422 the SDK never retries, for a passing outage of Bedrock.
        claude = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0)
        with pytest.raises(anthropic.InternalServerError) as unavailable:
            await claude.messages.create(model="cross-cloud", max_tokens=16, messages=CHAT)
        assert unavailable.value.status_code == 503
        assert "failed over" in unavailable.value.message, unavailable.value.message
    throttled = services.bedrock.requests[0]
    assert len(services.bedrock.requests) == 2  # the OpenAI client's and the Anthropic client's
    assert throttled.header("authorization", "").startswith("AWS4-HMAC-SHA256 ")
    [served] = services.vertex.requests
    assert served.path == f"{GEMINI_PATH}/gemini-2.0-flash:generateContent"
    assert served.header("authorization", "").startswith("Bearer ya29.fake-")
    assert served.header("x-amz-date") is None and served.header("x-amz-security-token") is None
