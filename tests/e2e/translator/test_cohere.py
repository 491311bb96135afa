"""Cohere's v2 API through real Envoy (client: plain HTTP, as the cohere SDK sends it): rerank routed
by the body's model and by the x-ai-eg-model header alone, chat and its v2 stream passed through
with usage in the access log, the provider's 401 in Cohere's shape without the key, unknown /cohere
paths and models as Cohere-shaped 404s, and the compat example basic_cohere.yaml served against the
fake.

The provider is aigw_fakes.CohereFake, a stand-in that checks the Bearer key and rejects unknown or
missing fields as Cohere does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
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
ROUTES = Route("cohere", [Rule([RERANK_MODEL, CHAT_MODEL, "embed-english-v3.0"], [Ref("cohere")])])
RERANK = {"model": RERANK_MODEL, "query": "capital of France", "documents": ["Berlin", "Paris is the capital"]}
CHAT = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hello there"}]}


def _docs(port: int, key: str = KEY) -> tuple[str, ...]:
    return (ROUTES.yaml(), resources.backend("cohere", port, "Cohere", version="v2"), resources.api_key("cohere", key))


@pytest.fixture
async def cohere():
    fake = await CohereFake(api_key=KEY).start()
    try:
        yield fake
    finally:
        await fake.stop()


class _Response:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status_code, self.headers, self.content = status, headers, body
        self.text = body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class _Client:
    """Plain HTTP below <gateway>/cohere, as cohere.ClientV2(base_url=<gateway>/cohere) sends it:
    the client's own key as a Bearer token (the gateway puts the backend's in its place)."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> _Response:
        hdrs = {"authorization": "Bearer client-key", "content-type": "application/json", **(headers or {})}
        data = json.dumps(body).encode() if body is not None else None
        async with self.session.request(method, self.base + path, data=data, headers=hdrs) as resp:
            return _Response(resp.status, resp.headers, await resp.read())

    async def post(self, path: str, json: Any, headers: dict[str, str] | None = None) -> _Response:
        return await self.request("POST", path, json, headers)

    async def get(self, path: str) -> _Response:
        return await self.request("GET", path)


@asynccontextmanager
async def _client(gw, prefix: str = "/cohere") -> AsyncIterator[_Client]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield _Client(session, gw.url + prefix)


async def test_rerank_by_body_model_and_by_header_with_usage(cohere) -> None:
    """By the body's model (Envoy reads it: one ext_proc stream), and by the x-ai-eg-model header the
    compat example matches (a content type Envoy does not read: the router phase finds the model and
    sets the header, the per-attempt phase translates): both reach Cohere's /v2/rerank."""
    async with run_gateway(*_docs(cohere.port)) as gw, _client(gw) as client:
        by_body = await client.post("/v2/rerank", json=RERANK)
        assert by_body.status_code == 200, by_body.text
        assert [r["index"] for r in by_body.json()["results"]] == [1, 0]
        by_header = await client.post(
            "/v2/rerank",
            json={"model": RERANK_MODEL, "query": "q", "documents": ["d"]},
            headers={"content-type": "application/json;charset=utf8", "x-ai-eg-model": "spoofed"},
        )
        assert by_header.status_code == 200, by_header.text
        # A body without a model is Cohere's 400, answered by the gateway in Cohere's shape.
        no_model = await client.post("/v2/rerank", json={"query": "q", "documents": ["d"]})
        assert (no_model.status_code, no_model.json()) == (400, {"message": "field 'model' is required"})

        assert [r.path for r in cohere.requests] == ["/v2/rerank", "/v2/rerank"]
        for seen in cohere.requests:
            assert seen.header("authorization") == f"Bearer {KEY}"  # never the client's key
        tokens = by_body.json()["meta"]["tokens"]["input_tokens"]
        entries = await gw.access_log.wait_for(2)
        assert entries[0]["path"] == "/cohere/v2/rerank"
        assert entries[0]["gen_ai.usage.input_tokens"] == tokens
        assert entries[0]["gen_ai.response.model"] == RERANK_MODEL


async def test_chat_and_stream_pass_through_with_usage_recorded(cohere) -> None:
    async with run_gateway(*_docs(cohere.port)) as gw, _client(gw) as client:
        plain = await client.post("/v2/chat", json=CHAT)
        assert plain.status_code == 200, plain.text
        usage = plain.json()["usage"]["tokens"]

        streamed = await client.post("/v2/chat", json={**CHAT, "stream": True})
        assert streamed.status_code == 200
        assert streamed.headers["content-type"].startswith("text/event-stream")
        body = streamed.content
        events = [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: ")]
        assert events[0]["type"] == "message-start"
        assert events[-1]["type"] == "message-end" and events[-1]["delta"]["finish_reason"] == "COMPLETE"
        assert b'"ERROR"' not in body  # the gateway did not judge the Cohere stream incomplete

        entries = await gw.access_log.wait_for(2)
        for entry in entries:
            assert entry["path"] == "/cohere/v2/chat"
            assert entry["gen_ai.usage.input_tokens"] == usage["input_tokens"]
            assert entry["gen_ai.usage.output_tokens"] == usage["output_tokens"]
        assert entries[1]["usage_estimated"] is False


async def test_a_stream_cut_before_message_end_ends_with_cohere_error_and_estimated_usage(cohere) -> None:
    """The provider ends the stream cleanly after two events, without message-end: the client gets
    Cohere's own failed ending (message-end, finish_reason ERROR), and the line is charged an
    estimate, flagged so."""
    async with run_gateway(*_docs(cohere.port)) as gw, _client(gw) as client:
        cut = await client.post("/v2/chat", json={**CHAT, "stream": True}, headers={"x-fake-stream-end-after": "2"})
        assert cut.status_code == 200
        events = [json.loads(line[6:]) for line in cut.content.decode().splitlines() if line.startswith("data: ")]
        assert [e["type"] for e in events] == ["message-start", "content-start", "message-end"]
        assert events[-1]["delta"]["finish_reason"] == "ERROR"
        [entry] = await gw.access_log.wait_for(1)
        assert entry["usage_estimated"] is True and entry["gen_ai.usage.input_tokens"] > 0


async def test_embed_passes_through_with_billed_tokens(cohere) -> None:
    async with run_gateway(*_docs(cohere.port)) as gw, _client(gw) as client:
        body = {"model": "embed-english-v3.0", "input_type": "search_query", "texts": ["a b", "c"]}
        resp = await client.post("/v2/embed", json=body)
        assert resp.status_code == 200, resp.text
        assert len(resp.json()["embeddings"]["float"]) == 2
        [entry] = await gw.access_log.wait_for(1)
        assert entry["gen_ai.usage.input_tokens"] == resp.json()["meta"]["billed_units"]["input_tokens"]


async def test_the_providers_401_is_cohere_shaped_without_the_key(cohere) -> None:
    async with run_gateway(*_docs(cohere.port, key="co-wrong-key-123")) as gw, _client(gw) as client:
        resp = await client.post("/v2/rerank", json=RERANK)
        assert resp.status_code == 401
        assert resp.json() == {"message": "invalid api token"}
        assert "co-wrong-key-123" not in resp.text


async def test_provider_validation_errors_reach_the_client_as_sent(cohere) -> None:
    async with run_gateway(*_docs(cohere.port)) as gw, _client(gw) as client:
        resp = await client.post("/v2/rerank", json={**RERANK, "return_documents": True})
        assert resp.status_code == 400
        assert resp.json() == {
            "message": "invalid request: unknown field: parameter 'return_documents' is not a valid field"
        }
        limited = await client.post("/v2/rerank", json=RERANK, headers={"x-fake-status": "429"})
        assert limited.status_code == 429 and set(limited.json()) == {"message"}  # a 429 stays a 429


async def test_unknown_cohere_paths_and_models_are_cohere_shaped_404s(cohere) -> None:
    async with run_gateway(*_docs(cohere.port)) as gw, _client(gw) as client:
        unknown_path = await client.post("/v2/classify", json={"model": RERANK_MODEL, "inputs": ["x"]})
        assert unknown_path.status_code == 404
        assert unknown_path.json() == {"message": "unsupported path: /cohere/v2/classify"}

        unknown_model = await client.post("/v2/rerank", json={**RERANK, "model": "rerank-unknown"})
        assert unknown_model.status_code == 404
        assert set(unknown_model.json()) == {"message"} and "No matching route" in unknown_model.json()["message"]

        no_model = await client.get("/v1/models")
        assert no_model.status_code == 404 and set(no_model.json()) == {"message"}
        assert cohere.requests == []  # nothing below /cohere is passed through


async def test_openai_chat_to_a_cohere_backend_is_a_clear_422(cohere) -> None:
    """Envoy AI Gateway has no OpenAI chat -> Cohere translation; neither do we, and say so."""
    async with run_gateway(*_docs(cohere.port)) as gw, _client(gw, "") as client:
        resp = await client.post("/v1/chat/completions", json={"model": CHAT_MODEL, "messages": CHAT["messages"]})
        assert resp.status_code == 422
        assert "not supported by backend schema Cohere" in resp.json()["error"]["message"]
        assert cohere.requests == []


async def test_compat_example_basic_cohere_runs_against_the_fake(cohere) -> None:
    """Envoy AI Gateway's basic_cohere.yaml, unchanged but for its Backend pointed at the fake (its
    Gateway comes from basic_basic.yaml in the original; the harness writes one here)."""
    documents = [d for d in yaml.safe_load_all((COMPAT / "basic_cohere.yaml").read_text()) if d]
    rewritten = for_fakes(documents, {"envoy-ai-gateway-basic-cohere": cohere.port}, annotate=False)
    for doc in rewritten.documents:
        if doc["kind"] == "AIGatewayRoute":
            doc["spec"]["parentRefs"][0]["name"] = resources.GATEWAY
        if doc["kind"] == "Secret":
            doc["stringData"]["apiKey"] = KEY
    async with run_gateway("\n---\n" + rewritten.text()) as gw, _client(gw) as client:
        resp = await client.post("/v2/rerank", json=RERANK, headers={"x-ai-eg-model": RERANK_MODEL})
        assert resp.status_code == 200, resp.text
        [seen] = cohere.requests
        assert seen.path == "/v2/rerank" and seen.header("authorization") == f"Bearer {KEY}"
