"""Cohere's v2 API through real Envoy with the official cohere SDK as the client, pointed at the
gateway as users do (`base_url=<gateway>/cohere`): rerank routed by the body's model, chat, the v2
chat stream (content deltas, message-end usage, metered), embed; errors as the SDK's typed
exceptions with their status (the provider's 401 without the key, 404 for unknown models and paths
below /cohere, a 429 that stays TooManyRequests, the provider's 400); a stream cut before
message-end as Cohere's own failed ending; the compat example basic_cohere.yaml against the fake.

The SDK is `cohere.AsyncClientV2`, the async twin of the `ClientV2` the example's README shows (one
generated client: same paths, headers, bodies, error classes); the sync one would block the event
loop the fake serves from. The README's sync code runs in tests/examples/test_documented_commands.py.

Plain HTTP only where the SDK cannot send the request: a Content-Type other than its own
`application/json` (routing by x-ai-eg-model, set by the router phase), and a body without a model
(the SDK requires one).

The provider is aigw_fakes.CohereFake, a stand-in that checks the Bearer key and rejects unknown or
missing fields as Cohere does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import cohere
import httpx
import openai
import pytest
import yaml

from aigw_fakes import CohereFake
from aigw_fakes.rewrite import for_fakes
from tests.e2e.harness import resources
from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.resources import Ref, Route, Rule
from tests.unit.test_compat import EXAMPLES as COMPAT

KEY = "co-gateway-key"
RERANK_MODEL = "rerank-english-v3.0"
CHAT_MODEL = "command-a-03-2025"
EMBED_MODEL = "embed-english-v3.0"
ROUTES = Route("cohere", [Rule([RERANK_MODEL, CHAT_MODEL, EMBED_MODEL], [Ref("cohere")])])
RERANK: dict[str, Any] = {
    "model": RERANK_MODEL,
    "query": "capital of France",
    "documents": ["Berlin", "Paris is the capital"],
}
MESSAGES: list[Any] = [{"role": "user", "content": "Hello there"}]


def _docs(port: int, key: str = KEY) -> tuple[str, ...]:
    return (ROUTES.yaml(), resources.backend("cohere", port, "Cohere", version="v2"), resources.api_key("cohere", key))


@pytest.fixture
async def cohere_fake():
    fake = await CohereFake(api_key=KEY).start()
    try:
        yield fake
    finally:
        await fake.stop()


@asynccontextmanager
async def _sdk(gw, key: str = "client-key") -> AsyncIterator[cohere.AsyncClientV2]:
    """The SDK on <gateway>/cohere with the client's own key (the gateway puts the backend's in its
    place). max_retries=0: the SDK retries 429 and 5xx by default, and a test must see the one
    answer the gateway gave."""
    async with httpx.AsyncClient() as http:
        yield cohere.AsyncClientV2(
            api_key=key, base_url=gw.url + "/cohere", max_retries=0, timeout=30, httpx_client=http
        )


async def _post_plain(gw, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """Plain HTTP, for what the SDK cannot send (see the module docstring): status and JSON body."""
    hdrs = {"authorization": "Bearer client-key", "content-type": "application/json", **(headers or {})}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.post(gw.url + "/cohere" + path, data=json.dumps(body), headers=hdrs) as resp,
    ):
        return resp.status, json.loads(await resp.read())


def _text(answer: cohere.V2ChatResponse) -> str:
    parts = answer.message.content or []
    return "".join(p.text for p in parts if isinstance(p, cohere.TextAssistantMessageResponseContentItem))


def _delta_text(event: cohere.ContentDeltaV2ChatStreamResponse) -> str:
    content = event.delta.message.content if event.delta and event.delta.message else None
    assert content is not None and isinstance(content.text, str), event
    return content.text


async def test_rerank_by_body_model_and_by_header_with_usage(cohere_fake) -> None:
    """By the body's model (Envoy reads it: one ext_proc stream), and by the x-ai-eg-model header the
    compat example matches (a content type Envoy does not read: the router phase finds the model and
    sets the header, the per-attempt phase translates): both reach Cohere's /v2/rerank."""
    async with run_gateway(*_docs(cohere_fake.port)) as gw, _sdk(gw) as co:
        ranked = await co.rerank(**RERANK)
        assert [r.index for r in ranked.results] == [1, 0]
        assert ranked.results[0].relevance_score > ranked.results[1].relevance_score
        assert ranked.meta is not None and ranked.meta.tokens is not None

        # Plain HTTP: the SDK always sends `application/json`, which Envoy reads itself.
        status, _ = await _post_plain(
            gw,
            "/v2/rerank",
            {"model": RERANK_MODEL, "query": "q", "documents": ["d"]},
            headers={"content-type": "application/json;charset=utf8", "x-ai-eg-model": "spoofed"},
        )
        assert status == 200
        # Plain HTTP: a body without a model (the SDK requires one) is Cohere's 400, answered by the
        # gateway in Cohere's shape.
        assert await _post_plain(gw, "/v2/rerank", {"query": "q", "documents": ["d"]}) == (
            400,
            {"message": "field 'model' is required"},
        )

        assert [r.path for r in cohere_fake.requests] == ["/v2/rerank", "/v2/rerank"]
        assert cohere_fake.requests[0].body == RERANK  # the SDK's body, passed through as sent
        for seen in cohere_fake.requests:
            assert seen.header("authorization") == f"Bearer {KEY}"  # never the client's key
        entries = await gw.access_log.wait_for(2)
        assert entries[0]["path"] == "/cohere/v2/rerank"
        assert entries[0]["gen_ai.usage.input_tokens"] == ranked.meta.tokens.input_tokens
        assert entries[0]["gen_ai.response.model"] == RERANK_MODEL


async def test_chat_and_stream_pass_through_with_usage_recorded(cohere_fake) -> None:
    async with run_gateway(*_docs(cohere_fake.port)) as gw, _sdk(gw) as co:
        plain = await co.chat(model=CHAT_MODEL, messages=MESSAGES)
        assert plain.finish_reason == "COMPLETE"
        assert _text(plain) == f"Fake {CHAT_MODEL} reply to: Hello there"
        assert plain.usage is not None and plain.usage.tokens is not None
        tokens = plain.usage.tokens

        events = [e async for e in co.chat_stream(model=CHAT_MODEL, messages=MESSAGES)]
        assert events[0].type == "message-start"
        deltas = [_delta_text(e) for e in events if isinstance(e, cohere.ContentDeltaV2ChatStreamResponse)]
        assert len(deltas) > 1 and "".join(deltas) == _text(plain)  # streamed in pieces, not buffered into one
        end = events[-1]
        assert isinstance(end, cohere.MessageEndV2ChatStreamResponse) and end.delta is not None
        # The gateway did not judge the Cohere stream incomplete: Cohere's ending, with its usage.
        assert end.delta.finish_reason == "COMPLETE" and end.delta.error is None
        assert end.delta.usage is not None and end.delta.usage.tokens is not None
        assert (end.delta.usage.tokens.input_tokens, end.delta.usage.tokens.output_tokens) == (
            tokens.input_tokens,
            tokens.output_tokens,
        )
        assert [r.body.get("stream") for r in cohere_fake.requests] == [False, True]

        entries = await gw.access_log.wait_for(2)
        for entry in entries:
            assert entry["path"] == "/cohere/v2/chat"
            assert entry["gen_ai.usage.input_tokens"] == tokens.input_tokens
            assert entry["gen_ai.usage.output_tokens"] == tokens.output_tokens
        assert entries[1]["usage_estimated"] is False


async def test_a_stream_cut_before_message_end_ends_with_cohere_error_and_estimated_usage(cohere_fake) -> None:
    """The provider ends the stream cleanly after two events, without message-end: the SDK gets
    Cohere's own failed ending (message-end, finish_reason ERROR; it does not hide it), and the line
    is charged an estimate, flagged so."""
    async with run_gateway(*_docs(cohere_fake.port)) as gw, _sdk(gw) as co:
        cut = co.chat_stream(
            model=CHAT_MODEL,
            messages=MESSAGES,
            request_options={"additional_headers": {"x-fake-stream-end-after": "2"}},
        )
        events = [e async for e in cut]
        assert [e.type for e in events] == ["message-start", "content-start", "message-end"]
        end = events[-1]
        assert isinstance(end, cohere.MessageEndV2ChatStreamResponse) and end.delta is not None
        assert end.delta.finish_reason == "ERROR" and end.delta.error
        assert len(cohere_fake.requests) == 1  # not retried or resumed behind the client's back
        [entry] = await gw.access_log.wait_for(1)
        assert entry["usage_estimated"] is True and entry["gen_ai.usage.input_tokens"] > 0


async def test_embed_passes_through_with_billed_tokens(cohere_fake) -> None:
    async with run_gateway(*_docs(cohere_fake.port)) as gw, _sdk(gw) as co:
        embedded = await co.embed(
            model=EMBED_MODEL, input_type="search_query", texts=["a b", "c"], embedding_types=["float"]
        )
        vectors = embedded.embeddings.float_
        assert vectors is not None and len(vectors) == 2 and vectors[0] != vectors[1]
        assert embedded.meta is not None and embedded.meta.billed_units is not None
        [entry] = await gw.access_log.wait_for(1)
        assert entry["path"] == "/cohere/v2/embed"
        billed = embedded.meta.billed_units.input_tokens
        assert billed is not None and billed > 0 and entry["gen_ai.usage.input_tokens"] == billed


async def test_the_providers_401_is_unauthorized_without_the_key(cohere_fake) -> None:
    async with run_gateway(*_docs(cohere_fake.port, key="co-wrong-key-123")) as gw, _sdk(gw) as co:
        with pytest.raises(cohere.UnauthorizedError) as denied:
            await co.rerank(**RERANK)
        assert denied.value.status_code == 401
        rejected = "the provider rejected the gateway's credential for this backend (status 401)"
        assert denied.value.body == {"message": f"{rejected}: invalid api token"}
        assert "co-wrong-key-123" not in json.dumps(denied.value.body) + json.dumps(denied.value.headers)


async def test_provider_errors_reach_the_sdk_typed_with_their_status(cohere_fake) -> None:
    """Cohere's 400 and 429 as sent (a 429 stays a 429), on plain calls and streams: each answered
    by the one request the provider saw."""
    async with run_gateway(*_docs(cohere_fake.port)) as gw, _sdk(gw) as co:
        with pytest.raises(cohere.BadRequestError) as bad:
            await co.rerank(**RERANK, request_options={"additional_body_parameters": {"return_documents": True}})
        assert bad.value.status_code == 400
        assert bad.value.body == {
            "message": "invalid request: unknown field: parameter 'return_documents' is not a valid field"
        }

        limited_headers: Any = {"additional_headers": {"x-fake-status": "429"}}
        with pytest.raises(cohere.TooManyRequestsError) as limited:
            await co.rerank(**RERANK, request_options=limited_headers)
        assert limited.value.status_code == 429 and set(limited.value.body) == {"message"}
        with pytest.raises(cohere.TooManyRequestsError) as limited_stream:
            async for _ in co.chat_stream(model=CHAT_MODEL, messages=MESSAGES, request_options=limited_headers):
                pass
        assert limited_stream.value.status_code == 429 and set(limited_stream.value.body) == {"message"}
        assert [r.path for r in cohere_fake.requests] == ["/v2/rerank", "/v2/rerank", "/v2/chat"]


async def test_unknown_cohere_paths_and_models_are_not_found(cohere_fake) -> None:
    """The gateway's own 404s, in Cohere's shape: a model no rule names, and endpoints of the SDK the
    gateway does not serve (classify, the model list); nothing is passed through."""
    async with run_gateway(*_docs(cohere_fake.port)) as gw, _sdk(gw) as co:
        with pytest.raises(cohere.NotFoundError) as unknown_model:
            await co.rerank(**{**RERANK, "model": "rerank-unknown"})
        assert unknown_model.value.status_code == 404
        assert set(unknown_model.value.body) == {"message"}
        assert "No matching route" in unknown_model.value.body["message"]

        with pytest.raises(cohere.NotFoundError) as unknown_path:
            await co.classify(model=RERANK_MODEL, inputs=["x"])
        assert unknown_path.value.status_code == 404
        assert unknown_path.value.body == {"message": "unsupported path: /cohere/v1/classify"}

        with pytest.raises(cohere.NotFoundError) as models:
            await co.models.list()
        assert models.value.status_code == 404 and set(models.value.body) == {"message"}
        assert cohere_fake.requests == []


async def test_openai_chat_to_a_cohere_backend_is_a_clear_422(cohere_fake) -> None:
    """Envoy AI Gateway has no OpenAI chat -> Cohere translation; neither do we, and say so."""
    async with run_gateway(*_docs(cohere_fake.port)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)
        with pytest.raises(openai.UnprocessableEntityError, match="not supported by backend schema Cohere"):
            await client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES)
        assert cohere_fake.requests == []


async def test_compat_example_basic_cohere_runs_against_the_fake(cohere_fake) -> None:
    """Envoy AI Gateway's basic_cohere.yaml, unchanged but for its Backend pointed at the fake (its
    Gateway comes from basic_basic.yaml in the original; the harness writes one here). Its route
    matches the x-ai-eg-model header, sent by the SDK as the example's curl does."""
    documents = [d for d in yaml.safe_load_all((COMPAT / "basic_cohere.yaml").read_text()) if d]
    rewritten = for_fakes(documents, {"envoy-ai-gateway-basic-cohere": cohere_fake.port}, annotate=False)
    for doc in filter(None, rewritten.documents):  # (None: a BackendTLSPolicy left out)
        if doc["kind"] == "AIGatewayRoute":
            doc["spec"]["parentRefs"][0]["name"] = resources.GATEWAY
        if doc["kind"] == "Secret":
            doc["stringData"]["apiKey"] = KEY
    async with run_gateway("\n---\n" + rewritten.text()) as gw, _sdk(gw) as co:
        ranked = await co.rerank(**RERANK, request_options={"additional_headers": {"x-ai-eg-model": RERANK_MODEL}})
        assert [r.index for r in ranked.results] == [1, 0]
        [seen] = cohere_fake.requests
        assert seen.path == "/v2/rerank" and seen.header("authorization") == f"Bearer {KEY}"
