"""The Cohere v2 fake, driven over raw HTTP (the cohere SDK is not a dependency)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from aigw_fakes import CohereFake, providers

from ._fakehttp import raw, sse_events

KEY = "co-test-key-1"
AUTH = {"authorization": f"Bearer {KEY}"}
RERANK = {
    "model": "rerank-english-v3.0",
    "query": "capital of France",
    "documents": ["Berlin", "Paris is the capital of France", "France"],
}
CHAT = {"model": "command-a-03-2025", "messages": [{"role": "user", "content": "Hello there"}]}
EMBED = {"model": "embed-english-v3.0", "input_type": "search_document", "texts": ["a", "b c"]}


@pytest.fixture(scope="module")
def fake() -> Iterator[CohereFake]:
    with CohereFake(api_key=KEY, name="cohere-a", cached_tokens=3) as f:
        yield f


@pytest.fixture(autouse=True)
def _reset(fake: CohereFake) -> None:
    fake.reset()


def _post(fake: CohereFake, op: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, _, payload = raw("POST", f"{fake.base_url}/v2/{op}", body, AUTH if headers is None else headers)
    return status, json.loads(payload)


def test_registered_as_the_cohere_provider() -> None:
    assert providers()["cohere"] is CohereFake


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "no api key supplied"),
        ({"authorization": "Bearer wrong"}, "invalid api token"),
        ({"authorization": KEY}, "invalid api token"),  # the scheme is required
        ({"x-api-key": KEY}, "no api key supplied"),
    ],
)
def test_bearer_key_is_required(fake: CohereFake, headers, message) -> None:
    assert _post(fake, "rerank", RERANK, headers) == (401, {"message": message})


@pytest.mark.parametrize(
    ("op", "body", "message"),
    [
        (
            "rerank",
            {**RERANK, "return_documents": True},
            "unknown field: parameter 'return_documents' is not a valid field",
        ),
        ("rerank", {k: v for k, v in RERANK.items() if k != "model"}, "model must be a non-empty string"),
        ("rerank", {**RERANK, "query": " "}, "query must be a non-empty string"),
        ("rerank", {**RERANK, "documents": [{"text": "x"}]}, "documents must be a list of strings"),
        ("rerank", {**RERANK, "top_n": 0}, "top_n must be a positive integer"),
        ("chat", {**CHAT, "messages": []}, "messages must be a non-empty list"),
        (
            "chat",
            {**CHAT, "messages": [{"role": "developer", "content": "x"}]},
            "messages[0].role must be one of system, user, assistant, tool",
        ),
        ("chat", {**CHAT, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id is required"),
        ("chat", {**CHAT, "max_tokens": 0}, "max_tokens must be a positive integer"),
        ("chat", {**CHAT, "p": 1.0}, "p must be between 0.01 and 0.99"),
        ("chat", {**CHAT, "stream_options": {}}, "unknown field: parameter 'stream_options' is not a valid field"),
        (
            "embed",
            {k: v for k, v in EMBED.items() if k != "input_type"},
            "input_type must be one of classification, clustering, image, search_document, search_query",
        ),
        (
            "embed",
            {**EMBED, "images": ["data:image/png;base64,AA=="]},
            "exactly one of texts, images or inputs must be given",
        ),
        (
            "embed",
            {**EMBED, "embedding_types": ["float16"]},
            "embedding_types must be a non-empty list of base64, binary, float, int8, ubinary, uint8",
        ),
    ],
)
def test_invalid_requests_are_400_with_cohere_messages(fake: CohereFake, op, body, message) -> None:
    assert _post(fake, op, body) == (400, {"message": f"invalid request: {message}"})


def test_body_must_be_json(fake: CohereFake) -> None:
    status, _, payload = raw(
        "POST", f"{fake.base_url}/v2/rerank", b"{nope", {**AUTH, "content-type": "application/json"}
    )
    assert (status, json.loads(payload)) == (
        400,
        {"message": "invalid request: could not parse the request body as JSON"},
    )


def test_unknown_path_and_version_are_404(fake: CohereFake) -> None:
    status, _, payload = raw("POST", f"{fake.base_url}/v1/rerank", RERANK, AUTH)
    assert (status, json.loads(payload)) == (404, {"message": "Not Found"})


def test_unknown_model_when_models_are_listed() -> None:
    with CohereFake(api_key=KEY, models=["rerank-v3.5"]) as f:
        status, body = _post(f, "rerank", RERANK)
    assert status == 404 and body["message"].startswith("model 'rerank-english-v3.0' not found")


def test_rerank_orders_by_relevance_with_meta(fake: CohereFake) -> None:
    status, body = _post(fake, "rerank", {**RERANK, "top_n": 2})
    assert status == 200
    assert [r["index"] for r in body["results"]] == [1, 2]
    assert body["results"][0]["relevance_score"] > body["results"][1]["relevance_score"]
    assert body["meta"]["billed_units"] == {"search_units": 1}
    assert body["meta"]["tokens"]["input_tokens"] > 0 and body["meta"]["tokens"]["output_tokens"] == 0
    assert "model" not in body  # Cohere's answers name no model
    sent = fake.last_request
    assert sent.path == "/v2/rerank" and sent.body["model"] == "rerank-english-v3.0"


def test_embed_by_type_with_billed_tokens(fake: CohereFake) -> None:
    status, body = _post(fake, "embed", {**EMBED, "embedding_types": ["float", "int8", "base64"]})
    assert status == 200
    assert set(body["embeddings"]) == {"float", "int8", "base64"}
    assert len(body["embeddings"]["float"]) == 2 and len(body["embeddings"]["float"][0]) == fake.dimensions
    assert body["embeddings"]["float"] != [body["embeddings"]["float"][0]] * 2
    assert body["texts"] == ["a", "b c"]
    assert body["meta"]["billed_units"] == {"input_tokens": 3}


def test_chat_answer_and_usage(fake: CohereFake) -> None:
    status, body = _post(fake, "chat", CHAT)
    assert status == 200
    assert body["finish_reason"] == "COMPLETE"
    assert body["message"]["role"] == "assistant"
    assert "Hello there" in body["message"]["content"][0]["text"]
    usage = body["usage"]
    assert usage["billed_units"]["input_tokens"] == 2
    assert usage["tokens"]["input_tokens"] == 2 + 7  # the prompt template is counted, not billed
    assert usage["tokens"]["output_tokens"] == usage["billed_units"]["output_tokens"] > 0
    assert usage["cached_tokens"] == 3


def test_chat_max_tokens_truncates(fake: CohereFake) -> None:
    status, body = _post(fake, "chat", {**CHAT, "max_tokens": 2})
    assert (status, body["finish_reason"]) == (200, "MAX_TOKENS")
    assert 0 < body["usage"]["billed_units"]["output_tokens"] <= 2


def test_chat_stream_events_in_order_with_usage_at_message_end(fake: CohereFake) -> None:
    status, headers, payload = raw("POST", f"{fake.base_url}/v2/chat", {**CHAT, "stream": True}, AUTH)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [(name, json.loads(data)) for name, data in sse_events(payload)]
    names = [name for name, _ in events]
    assert names[:2] == ["message-start", "content-start"] and names[-2:] == ["content-end", "message-end"]
    assert all(name == data["type"] for name, data in events)
    text = "".join(d["delta"]["message"]["content"]["text"] for n, d in events if n == "content-delta")
    assert "Hello there" in text
    end = events[-1][1]["delta"]
    assert end["finish_reason"] == "COMPLETE"
    assert end["usage"]["tokens"]["input_tokens"] == 9


def test_chat_stream_error_is_a_message_end_with_error(fake: CohereFake) -> None:
    _, _, payload = raw(
        "POST", f"{fake.base_url}/v2/chat", {**CHAT, "stream": True}, {**AUTH, "x-fake-stream-error-after": "2"}
    )
    events = sse_events(payload)
    assert len(events) == 3
    name, data = events[-1]
    assert name == "message-end" and json.loads(data)["delta"]["finish_reason"] == "ERROR"


def test_injected_429_has_cohere_shape(fake: CohereFake) -> None:
    status, body = _post(fake, "rerank", RERANK, {**AUTH, "x-fake-status": "429"})
    assert status == 429 and set(body) == {"message"}
