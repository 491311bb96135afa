"""OpenAI chat and Anthropic Messages clients -> Claude on GCP Vertex AI (GCPAnthropic)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aigw.translator.v1 import config_pb2
from aigw_translator.backend_request import backend_request
from aigw_translator.client_stream import ClientStream
from aigw_translator.config import RuntimeConfig
from aigw_translator.endpoints import ClientSchema, Endpoint
from aigw_translator.errors import GatewayError
from aigw_translator.translators import RequestContext, ResponseContext, get_pair
from aigw_translator.translators.gcp_anthropic import (
    DEFAULT_VERTEX_ANTHROPIC_VERSION,
    GCPAnthropicPassthroughResponse,
    GCPAnthropicToOpenAIResponse,
    GCPAnthropicToOpenAIStream,
    translate_chat_request,
    translate_messages_request,
)
from aigw_translator.translators.openai_anthropic import chat_to_messages
from aigw_translator.usage import TokenUsage

from .claude_cases import CHAT_REQUESTS, body_of, chat, msgs
from .streams import events, run, splits

CLAUDE = "claude-3-5-haiku@20241022"
PREFIX = "/v1/projects/proj-1/locations/europe-west1/publishers/anthropic/models"


def _backend(version: str = "", gcp: bool = True) -> config_pb2.Backend:
    backend = config_pb2.Backend(name="ns/claude", schema=config_pb2.Schema(name="GCPAnthropic", version=version))
    if gcp:
        backend.auth.gcp_credentials.project_name = "proj-1"
        backend.auth.gcp_credentials.region = "europe-west1"
    return backend


def _rctx(endpoint: Endpoint, model: str = CLAUDE, version: str = "", gcp: bool = True) -> RequestContext:
    local = {
        Endpoint.MESSAGES: "/anthropic/v1/messages",
        Endpoint.COUNT_TOKENS: "/anthropic/v1/messages/count_tokens",
    }.get(endpoint, "/v1/chat/completions")
    headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "context-1m-2025-08-07"}
    return RequestContext(endpoint, _backend(version, gcp), local, "", model, headers)


def _ctx(endpoint: Endpoint = Endpoint.CHAT_COMPLETIONS, stream: bool = False, **kw: Any) -> ResponseContext:
    schema = ClientSchema.OPENAI if endpoint is Endpoint.CHAT_COMPLETIONS else ClientSchema.ANTHROPIC
    return ResponseContext(endpoint, schema, "m", CLAUDE, stream=stream, **kw)


# ----------------------------------------------------------------------------- request


@CHAT_REQUESTS
def test_chat_request_is_openai_anthropics_body_for_raw_predict(req: dict[str, Any]) -> None:
    tr = translate_chat_request(_rctx(Endpoint.CHAT_COMPLETIONS), json.dumps(req).encode())
    stream = req.get("stream") is True
    assert tr.path == f"{PREFIX}/{CLAUDE}:" + ("streamRawPredict" if stream else "rawPredict")
    body = body_of(tr)
    expected = chat_to_messages(req, CLAUDE)
    expected.pop("model")
    assert body == {"anthropic_version": DEFAULT_VERTEX_ANTHROPIC_VERSION, **expected}
    assert next(iter(body)) == "anthropic_version" and "model" not in body
    # stream stays in the body for streamRawPredict, as Anthropic's Vertex SDK sends it.
    assert body.get("stream") is (True if stream else None)
    assert tr.set_headers == {"content-type": "application/json"}
    assert tr.remove_headers == ["anthropic-version"]


@pytest.mark.parametrize("stream", [False, True])
def test_messages_request_is_the_clients_body_without_model(stream: bool) -> None:
    req = msgs(
        stream=stream,
        system="s",
        thinking={"type": "enabled", "budget_tokens": 1024},
        anthropic_version="bedrock-2023-05-31",
        metadata={"user_id": "u"},
    )
    tr = translate_messages_request(_rctx(Endpoint.MESSAGES, version="vertex-2099-01-01"), json.dumps(req).encode())
    assert tr.path == f"{PREFIX}/{CLAUDE}:" + ("streamRawPredict" if stream else "rawPredict")
    expected = {k: v for k, v in req.items() if k not in ("model", "anthropic_version")}
    assert body_of(tr) == {"anthropic_version": "vertex-2099-01-01", **expected}
    # The beta header passes (Vertex reads betas there); the version header is the body's job.
    assert tr.remove_headers == ["anthropic-version"] and "anthropic-beta" not in tr.set_headers


def test_count_tokens_goes_to_the_count_tokens_model_with_the_model_in_the_body() -> None:
    req = {"model": "client-alias", "messages": [{"role": "user", "content": "hi"}], "system": "s"}
    tr = translate_messages_request(_rctx(Endpoint.COUNT_TOKENS), json.dumps(req).encode())
    assert tr.path == f"{PREFIX}/count-tokens:rawPredict"
    assert body_of(tr) == {
        "anthropic_version": DEFAULT_VERTEX_ANTHROPIC_VERSION,
        "messages": req["messages"],
        "system": "s",
        "model": CLAUDE,
    }


def test_model_is_one_path_segment() -> None:
    tr = translate_messages_request(_rctx(Endpoint.MESSAGES, model="claude/x:y@1"), json.dumps(msgs()).encode())
    assert tr.path == f"{PREFIX}/claude%2Fx%3Ay@1:rawPredict"


@pytest.mark.parametrize("endpoint", [Endpoint.CHAT_COMPLETIONS, Endpoint.MESSAGES, Endpoint.COUNT_TOKENS])
def test_missing_gcp_credentials_is_a_500(endpoint: Endpoint) -> None:
    pair = get_pair(endpoint, "GCPAnthropic")
    assert pair is not None
    with pytest.raises(GatewayError) as err:
        pair.request(_rctx(endpoint, gcp=False), json.dumps(msgs()).encode())
    assert err.value.status == 500 and "GCPCredentials projectName and region" in err.value.message


def test_chat_request_errors_are_openai_anthropics() -> None:
    with pytest.raises(GatewayError) as err:
        translate_chat_request(_rctx(Endpoint.CHAT_COMPLETIONS), json.dumps(chat(n=3)).encode())
    assert err.value.status == 422 and "n > 1" in err.value.message


# ----------------------------------------------------------------------------- response


MESSAGE: dict[str, Any] = {
    "id": "msg_vrtx_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-haiku-20241022",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "s"},
        {"type": "text", "text": "Hello"},
        {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
    ],
    "stop_reason": "tool_use",
    "usage": {"input_tokens": 5, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 2, "output_tokens": 9},
}
USAGE = TokenUsage(10, 3, 2, 9, 0, 19, True)


def test_json_response_to_openai() -> None:
    tr = GCPAnthropicToOpenAIResponse(_ctx())
    out = json.loads(tr.body(json.dumps(MESSAGE).encode()) or b"")
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello",
        "reasoning_content": "hmm",
        "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
    }
    assert (tr.usage, tr.response_model) == (USAGE, "claude-3-5-haiku-20241022")


def test_json_response_to_anthropic_passes_through() -> None:
    tr = GCPAnthropicPassthroughResponse(_ctx(Endpoint.MESSAGES))
    assert tr.body(json.dumps(MESSAGE).encode()) is None
    assert (tr.usage, tr.response_model) == (USAGE, "claude-3-5-haiku-20241022")


def test_count_tokens_answer_passes_and_is_not_usage() -> None:
    tr = GCPAnthropicPassthroughResponse(_ctx(Endpoint.COUNT_TOKENS))
    assert tr.body(b'{"input_tokens": 42}') is None
    assert not tr.usage.known


EVENTS: list[dict[str, Any]] = [
    {"type": "message_start", "message": {**MESSAGE, "content": [], "stop_reason": None,
                                           "usage": {**MESSAGE["usage"], "output_tokens": 1}}},
    {"type": "ping"},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hé"}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2,
     "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"ci'}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": 'ty": "P"}'}},
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
    {"type": "message_stop"},
]  # fmt: skip
SSE = b"".join(f"event: {e['type']}\r\ndata: {json.dumps(e)}\r\n\r\n".encode() for e in EVENTS)


def _deltas(out: bytes) -> list[Any]:
    return [d if d == "[DONE]" else (d["choices"][0] if d["choices"] else d["usage"]) for _, d in events(out)]


@pytest.mark.parametrize("chunks", splits(SSE, 97))
def test_stream_to_openai_at_any_chunking(chunks: list[bytes]) -> None:
    tr = GCPAnthropicToOpenAIStream(_ctx(stream=True, include_usage=True))
    out = run(tr, chunks)
    calls = [
        {"index": 0, "id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"ci'}},
        {"index": 0, "function": {"arguments": 'ty": "P"}'}},
    ]
    assert _deltas(out) == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None},
        {"index": 0, "delta": {"reasoning_content": "hm"}, "finish_reason": None},
        {"index": 0, "delta": {"content": "Hé"}, "finish_reason": None},
        *({"index": 0, "delta": {"tool_calls": [c]}, "finish_reason": None} for c in calls),
        {"index": 0, "delta": {}, "finish_reason": "tool_calls"},
        {
            "prompt_tokens": 10,
            "completion_tokens": 9,
            "total_tokens": 19,
            "prompt_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 2},
        },
        "[DONE]",
    ]
    assert tr.usage == USAGE
    client = ClientStream(Endpoint.CHAT_COMPLETIONS, ClientSchema.OPENAI)
    client.sent(out)
    assert client.complete


@pytest.mark.parametrize("chunks", splits(SSE, 89))
def test_stream_to_anthropic_passes_through(chunks: list[bytes]) -> None:
    tr = GCPAnthropicPassthroughResponse(_ctx(Endpoint.MESSAGES, stream=True))
    assert run(tr, chunks) == SSE
    assert (tr.usage, tr.response_model) == (USAGE, "claude-3-5-haiku-20241022")


def test_cut_stream_is_not_complete_for_either_client() -> None:
    cut = SSE[: SSE.index(b"event: message_delta")]
    out = run(GCPAnthropicToOpenAIStream(_ctx(stream=True)), [cut])
    client = ClientStream(Endpoint.CHAT_COMPLETIONS, ClientSchema.OPENAI)
    client.sent(out)
    assert b"[DONE]" not in out and not client.complete
    tr = GCPAnthropicPassthroughResponse(_ctx(Endpoint.MESSAGES, stream=True))
    client = ClientStream(Endpoint.MESSAGES, ClientSchema.ANTHROPIC)
    client.sent(run(tr, [cut]))
    assert not client.complete and not tr.usage.known


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "body", "openai", "anthropic"),
    [
        (
            429,
            {"error": {"code": 429, "message": "Quota exceeded for aiplatform", "status": "RESOURCE_EXHAUSTED"}},
            ("rate_limit_error", "Quota exceeded for aiplatform", "RESOURCE_EXHAUSTED"),
            ("rate_limit_error", "Quota exceeded for aiplatform"),
        ),
        (
            404,
            [{"error": {"code": 404, "message": "Publisher model not found", "status": "NOT_FOUND"}}],
            ("not_found_error", "Publisher model not found", "NOT_FOUND"),
            ("not_found_error", "Publisher model not found"),
        ),
        (
            529,
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            ("server_error", "Overloaded", None),
            ("overloaded_error", "Overloaded"),
        ),
        (
            400,
            {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}},
            ("invalid_request_error", "max_tokens: Field required", None),
            ("invalid_request_error", "max_tokens: Field required"),
        ),
    ],
)
def test_errors_in_the_clients_shape(
    status: int, body: Any, openai: tuple[str, str, str | None], anthropic: tuple[str, str]
) -> None:
    raw = json.dumps(body).encode()
    for tr in (GCPAnthropicToOpenAIResponse(_ctx()), GCPAnthropicToOpenAIStream(_ctx(stream=True))):
        err = json.loads(tr.error(status, raw))["error"]
        assert (err["type"], err["message"], err["code"]) == openai
    for endpoint in (Endpoint.MESSAGES, Endpoint.COUNT_TOKENS):
        out = json.loads(GCPAnthropicPassthroughResponse(_ctx(endpoint)).error(status, raw))
        assert out["type"] == "error" and (out["error"]["type"], out["error"]["message"]) == anthropic


def test_backend_request_for_an_anthropic_client() -> None:
    cfg = config_pb2.TranslatorConfig(name="ns/gw")
    backend = cfg.backends.add()
    backend.CopyFrom(_backend())
    backend.name = "b"
    backend.auth.credential_override.from_request_headers.header = "x-my-google-token"
    view = {
        ":path": "/anthropic/v1/messages",
        ":method": "POST",
        "content-type": "application/json",
        "x-api-key": "client-key",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "context-1m-2025-08-07",
        "x-my-google-token": "Bearer ya29.t",
    }
    body = json.dumps(msgs(model=CLAUDE, stream=True)).encode()
    sent = backend_request(RuntimeConfig.build(cfg), "b", view, CLAUDE, {}, body, True)
    assert sent.set_headers[":path"] == f"{PREFIX}/{CLAUDE}:streamRawPredict"
    assert sent.set_headers["authorization"] == "Bearer ya29.t"
    assert {"anthropic-version", "x-api-key", "x-my-google-token"} <= set(sent.remove_headers)
    assert "anthropic-beta" not in sent.remove_headers
    assert json.loads(sent.body or b"")["anthropic_version"] == DEFAULT_VERTEX_ANTHROPIC_VERSION


URL = {"type": "url", "url": "https://example.com/a.pdf"}


@pytest.mark.parametrize(
    ("endpoint", "req"),
    [
        (
            Endpoint.CHAT_COMPLETIONS,
            chat(
                messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}]
            ),
        ),
        (
            Endpoint.MESSAGES,
            msgs(
                messages=[
                    {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x"}}]}
                ]
            ),
        ),
        (
            Endpoint.COUNT_TOKENS,
            msgs(messages=[{"role": "user", "content": [{"type": "document", "source": URL}]}]),
        ),
        (
            Endpoint.MESSAGES,
            msgs(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [{"type": "image", "source": {"type": "url", "url": "https://x"}}],
                            }
                        ],
                    }
                ]
            ),
        ),
    ],
)
def test_url_sources_are_refused_before_vertex_rejects_them(endpoint: Endpoint, req: dict[str, Any]) -> None:
    pair = get_pair(endpoint, "GCPAnthropic")
    assert pair is not None
    with pytest.raises(GatewayError) as err:
        pair.request(_rctx(endpoint), json.dumps(req).encode())
    assert err.value.status == 422 and "not supported by Claude on GCP Vertex AI" in err.value.message


def test_inline_images_pass() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    req = msgs(messages=[{"role": "user", "content": [image, {"type": "text", "text": "what is it?"}]}])
    assert (
        body_of(translate_messages_request(_rctx(Endpoint.MESSAGES), json.dumps(req).encode()))["messages"]
        == req["messages"]
    )
