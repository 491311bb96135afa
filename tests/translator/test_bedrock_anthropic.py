"""OpenAI chat and Anthropic Messages clients -> Claude on Bedrock through InvokeModel (AWSAnthropic)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from aigw.translator.v1 import config_pb2
from aigw_translator.client_stream import ClientStream
from aigw_translator.endpoints import ClientSchema, Endpoint
from aigw_translator.errors import GatewayError
from aigw_translator.server import ExternalProcessor
from aigw_translator.translators import RequestContext, ResponseContext, get_pair
from aigw_translator.translators.anthropic_anthropic import AnthropicPassthroughResponse
from aigw_translator.translators.bedrock_anthropic import (
    DEFAULT_BEDROCK_ANTHROPIC_VERSION,
    BedrockAnthropicPassthroughResponse,
    BedrockAnthropicPassthroughStream,
    BedrockAnthropicToOpenAIResponse,
    BedrockAnthropicToOpenAIStream,
    from_invocation_metrics,
    translate_chat_request,
    translate_messages_request,
)
from aigw_translator.translators.bedrock_count_tokens import translate_invoke_request
from aigw_translator.translators.openai_anthropic import AnthropicToOpenAIStream, chat_to_messages
from aigw_translator.usage import TokenUsage

from .claude_cases import CHAT_REQUESTS, TOOL, body_of, chat, msgs
from .extproc_helpers import drive, metadata, request_body, request_headers, response_body, response_headers
from .extproc_helpers import set_headers as header_set
from .streams import aws_exception, aws_frame, events, random_chunkings, run, splits

CLAUDE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
ARN = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"
VERSION = DEFAULT_BEDROCK_ANTHROPIC_VERSION


def _backend(version: str = "") -> config_pb2.Backend:
    return config_pb2.Backend(name="b", schema=config_pb2.Schema(name="AWSAnthropic", version=version))


def _rctx(
    endpoint: Endpoint, model: str = CLAUDE, version: str = "", headers: dict[str, str] | None = None
) -> RequestContext:
    local = "/anthropic/v1/messages" if endpoint is Endpoint.MESSAGES else "/v1/chat/completions"
    return RequestContext(endpoint, _backend(version), local, "", model, headers or {})


# ----------------------------------------------------------------------------- request: OpenAI client


@CHAT_REQUESTS
def test_chat_request_is_openai_anthropics_body_for_invoke_model(req: dict[str, Any]) -> None:
    tr = translate_chat_request(_rctx(Endpoint.CHAT_COMPLETIONS), json.dumps(req).encode())
    stream = req.get("stream") is True
    suffix = "invoke-with-response-stream" if stream else "invoke"
    assert tr.path == f"/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/{suffix}"
    body = body_of(tr)
    expected = chat_to_messages(req, CLAUDE)
    expected.pop("model")
    expected.pop("stream", None)
    assert body == {"anthropic_version": VERSION, **expected}
    assert next(iter(body)) == "anthropic_version"
    assert "model" not in body and "stream" not in body
    # The version travels in the body: no anthropic-version header is set, a client's is removed.
    assert tr.set_headers == {"content-type": "application/json"}
    assert set(tr.remove_headers) == {"anthropic-version", "anthropic-beta"}


def test_chat_request_maps_like_openai_anthropic() -> None:
    req = chat(
        messages=[{"role": "developer", "content": "s"}, {"role": "user", "content": "q"}],
        max_tokens=10,
        tools=[TOOL],
        tool_choice="auto",
        parallel_tool_calls=False,
    )
    body = body_of(translate_chat_request(_rctx(Endpoint.CHAT_COMPLETIONS), json.dumps(req).encode()))
    assert body == {
        "anthropic_version": VERSION,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}],
        "system": "s",
        "max_tokens": 10,
        "tools": [{"name": "f", "input_schema": {"type": "object"}, "description": "d"}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    }


@pytest.mark.parametrize(
    ("req", "status"),
    [
        (chat(n=2), 422),
        (chat(response_format={"type": "json_object"}), 422),
        (chat(max_tokens=0), 400),
        ({"model": "m", "messages": []}, 400),  # invalid in OpenAI's own API
    ],
)
def test_chat_request_errors_are_openai_anthropics(req: dict[str, Any], status: int) -> None:
    with pytest.raises(GatewayError) as err:
        translate_chat_request(_rctx(Endpoint.CHAT_COMPLETIONS), json.dumps(req).encode())
    assert err.value.status == status


# ----------------------------------------------------------------------------- request: Anthropic client


@pytest.mark.parametrize(
    ("req", "headers", "expected"),
    [
        (msgs(), {}, {"anthropic_version": VERSION, "max_tokens": 50, "messages": msgs()["messages"]}),
        (
            msgs(stream=True, system=[{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}]),
            {"anthropic-version": "2023-06-01"},
            {
                "anthropic_version": VERSION,
                "max_tokens": 50,
                "messages": msgs()["messages"],
                "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
            },
        ),
        # Every other field passes as the client sent it.
        (
            msgs(thinking={"type": "enabled", "budget_tokens": 1024}, top_k=5, metadata={"user_id": "u"}),
            {},
            {
                "anthropic_version": VERSION,
                "max_tokens": 50,
                "messages": msgs()["messages"],
                "thinking": {"type": "enabled", "budget_tokens": 1024},
                "top_k": 5,
                "metadata": {"user_id": "u"},
            },
        ),
        # anthropic-beta header -> anthropic_beta in the body, as Anthropic's Bedrock SDK sends it.
        (
            msgs(),
            {"anthropic-beta": "interleaved-thinking-2025-05-14, token-efficient-tools-2025-02-19,"},
            {
                "anthropic_version": VERSION,
                "max_tokens": 50,
                "messages": msgs()["messages"],
                "anthropic_beta": ["interleaved-thinking-2025-05-14", "token-efficient-tools-2025-02-19"],
            },
        ),
        # The body's own anthropic_beta wins (only betas Bedrock accepts); a client's
        # anthropic_version is Bedrock's.
        (
            msgs(anthropic_beta=["context-1m-2025-08-07", "x"], anthropic_version="2023-06-01"),
            {"anthropic-beta": "interleaved-thinking-2025-05-14"},
            {
                "anthropic_version": VERSION,
                "max_tokens": 50,
                "messages": msgs()["messages"],
                "anthropic_beta": ["context-1m-2025-08-07"],
            },
        ),
    ],
)
def test_messages_request_is_the_clients_body_for_invoke_model(
    req: dict[str, Any], headers: dict[str, str], expected: dict[str, Any]
) -> None:
    tr = translate_messages_request(_rctx(Endpoint.MESSAGES, headers=headers), json.dumps(req).encode())
    suffix = "invoke-with-response-stream" if req.get("stream") else "invoke"
    assert tr.path == f"/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/{suffix}"
    assert body_of(tr) == expected
    assert tr.set_headers == {"content-type": "application/json"}
    assert set(tr.remove_headers) == {"anthropic-version", "anthropic-beta"}


@pytest.mark.parametrize("translate", [translate_chat_request, translate_messages_request])
@pytest.mark.parametrize(
    ("model", "stream", "path"),
    [
        ("anthropic.claude-3-haiku-20240307-v1:0", False, "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke"),
        (
            ARN,
            True,
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fabc123"
            "/invoke-with-response-stream",
        ),
        ("my model?#", False, "/model/my%20model%3F%23/invoke"),
    ],
)
def test_path_model_is_one_segment(translate: Any, model: str, stream: bool, path: str) -> None:
    endpoint = Endpoint.MESSAGES if translate is translate_messages_request else Endpoint.CHAT_COMPLETIONS
    req = msgs(stream=stream) if endpoint is Endpoint.MESSAGES else chat(stream=stream)
    tr = translate(_rctx(endpoint, model=model), json.dumps(req).encode())
    assert tr.path == path and tr.path.count("/") == 3


@pytest.mark.parametrize("translate", [translate_chat_request, translate_messages_request])
def test_schema_version_is_the_anthropic_version(translate: Any) -> None:
    endpoint = Endpoint.MESSAGES if translate is translate_messages_request else Endpoint.CHAT_COMPLETIONS
    req = msgs() if endpoint is Endpoint.MESSAGES else chat()
    tr = translate(_rctx(endpoint, version="bedrock-2099-01-01"), json.dumps(req).encode())
    assert body_of(tr)["anthropic_version"] == "bedrock-2099-01-01"


@pytest.mark.parametrize("translate", [translate_chat_request, translate_messages_request])
def test_request_without_model_is_400(translate: Any) -> None:
    with pytest.raises(GatewayError) as err:
        translate(_rctx(Endpoint.MESSAGES, model=""), json.dumps(msgs()).encode())
    assert err.value.status == 400


def test_messages_request_not_an_object_is_400() -> None:
    with pytest.raises(GatewayError) as err:
        translate_messages_request(_rctx(Endpoint.MESSAGES), b"[1]")
    assert err.value.status == 400


def _ctx(
    endpoint: Endpoint = Endpoint.CHAT_COMPLETIONS, stream: bool = False, include_usage: bool = False
) -> ResponseContext:
    schema = ClientSchema.ANTHROPIC if endpoint is Endpoint.MESSAGES else ClientSchema.OPENAI
    return ResponseContext(endpoint, schema, "m", CLAUDE, stream, include_usage)


def test_registry() -> None:
    chat = get_pair(Endpoint.CHAT_COMPLETIONS, "AWSAnthropic")
    assert chat is not None and chat.request is translate_chat_request
    assert type(chat.response_translator(_ctx())) is BedrockAnthropicToOpenAIResponse
    assert type(chat.response_translator(_ctx(stream=True))) is BedrockAnthropicToOpenAIStream
    messages = get_pair(Endpoint.MESSAGES, "AWSAnthropic")
    assert messages is not None and messages.request is translate_messages_request
    assert type(messages.response_translator(_ctx(Endpoint.MESSAGES))) is BedrockAnthropicPassthroughResponse
    stream = messages.response_translator(_ctx(Endpoint.MESSAGES, stream=True))
    assert type(stream) is BedrockAnthropicPassthroughStream
    count = get_pair(Endpoint.COUNT_TOKENS, "AWSAnthropic")
    assert count is not None and count.request is translate_invoke_request
    for endpoint in (Endpoint.EMBEDDINGS, Endpoint.RESPONSES):
        assert get_pair(endpoint, "AWSAnthropic") is None


# ----------------------------------------------------------------------------- JSON response

MESSAGE = {
    "id": "msg_bdrk_01abc",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-haiku-20241022",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "s"},
        {"type": "text", "text": "Hello"},
        {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 5, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 2, "output_tokens": 9},
}


def test_json_response_to_openai() -> None:
    tr = BedrockAnthropicToOpenAIResponse(_ctx())
    out = json.loads(tr.body(json.dumps(MESSAGE).encode()) or b"")
    assert out["object"] == "chat.completion" and out["id"] == "msg_bdrk_01abc"
    assert out["model"] == "claude-3-5-haiku-20241022"
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello",
        "reasoning_content": "hmm",
        "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
    }
    assert out["usage"]["prompt_tokens"] == 10 and out["usage"]["completion_tokens"] == 9
    assert (tr.usage, tr.response_model) == (TokenUsage(10, 3, 2, 9, 0, 19, True), "claude-3-5-haiku-20241022")


def test_json_response_to_anthropic_passes_through() -> None:
    tr = BedrockAnthropicPassthroughResponse(_ctx(Endpoint.MESSAGES))
    assert tr.body(json.dumps(MESSAGE).encode()) is None
    assert (tr.usage, tr.response_model) == (TokenUsage(10, 3, 2, 9, 0, 19, True), "claude-3-5-haiku-20241022")


def test_json_response_without_usage_invents_none() -> None:
    msg = {k: v for k, v in MESSAGE.items() if k != "usage"}
    for tr in (BedrockAnthropicToOpenAIResponse(_ctx()), BedrockAnthropicPassthroughResponse(_ctx(Endpoint.MESSAGES))):
        tr.body(json.dumps(msg).encode())
        assert not tr.usage.known


@pytest.mark.parametrize(
    ("status", "body", "openai", "anthropic"),
    [
        (429, b'{"message":"Too many requests"}', ("rate_limit_error", "Too many requests"), "rate_limit_error"),
        (400, b'{"message":"Malformed input request"}', ("invalid_request_error", None), "invalid_request_error"),
        (403, b'{"Message":"User is not authorized"}', ("permission_error", None), "permission_error"),
        (424, b'{"message":"The model returned an error"}', ("server_error", None), "api_error"),
        (500, b'{"message":"internal"}', ("server_error", None), "api_error"),
        (502, b"<html>bad gateway</html>", ("server_error", None), "api_error"),
    ],
)
def test_error_bodies_in_the_clients_shape(
    status: int, body: bytes, openai: tuple[str, str | None], anthropic: str
) -> None:
    for tr in (BedrockAnthropicToOpenAIResponse(_ctx()), BedrockAnthropicToOpenAIStream(_ctx(stream=True))):
        err = json.loads(tr.error(status, body))["error"]
        assert err["type"] == openai[0]
        assert openai[1] is None or err["message"] == openai[1]
    passthrough = (
        BedrockAnthropicPassthroughResponse(_ctx(Endpoint.MESSAGES)),
        BedrockAnthropicPassthroughStream(_ctx(Endpoint.MESSAGES, stream=True)),
    )
    for passing in passthrough:
        out = json.loads(passing.error(status, body))
        assert out["type"] == "error" and out["error"]["type"] == anthropic
        assert out["error"]["message"]


# ----------------------------------------------------------------------------- stream


def _chunk(event: dict[str, Any], padding: bool = True) -> bytes:
    payload: dict[str, Any] = {"bytes": base64.b64encode(json.dumps(event).encode()).decode()}
    if padding:
        payload["p"] = "abcdefghij"  # the undocumented padding real Bedrock adds
    headers = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
    return aws_frame(headers, json.dumps(payload).encode())


START = {
    "type": "message_start",
    "message": {
        "id": "msg_bdrk_01x",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-20241022",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 5,
            "cache_read_input_tokens": 3,
            "cache_creation_input_tokens": 2,
            "output_tokens": 1,
        },
    },
}
METRICS = {"inputTokenCount": 50, "outputTokenCount": 90, "invocationLatency": 120, "firstByteLatency": 60}
EVENTS: list[dict[str, Any]] = [
    START,
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hé"}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "llo"}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2,
     "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"ci'}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": 'ty": "P"}'}},
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 9}},
    {"type": "message_stop", "amazon-bedrock-invocationMetrics": METRICS},
]  # fmt: skip
FRAMES = [_chunk(e) for e in EVENTS]
STREAM = b"".join(FRAMES)
# What the Anthropic API itself would stream for the same answer.
SSE = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in EVENTS)
USAGE = TokenUsage(10, 3, 2, 9, 0, 19, True)


def _normalised(out: bytes) -> list[Any]:
    """The events without the per-response timestamp."""
    return [({k: v for k, v in d.items() if k != "created"} if isinstance(d, dict) else d) for _, d in events(out)]


def _random_chunkings(data: bytes, count: int) -> list[list[bytes]]:
    return random_chunkings(data, count, 4321, (1, 60))


CHUNKINGS = [*splits(STREAM, 61), *_random_chunkings(STREAM, 25)]
# openai_anthropic's translation of the same events as SSE: what the OpenAI client must get.
DIRECT = run(AnthropicToOpenAIStream(_ctx(stream=True, include_usage=True)), [SSE])


def _openai_stream(include_usage: bool = True) -> BedrockAnthropicToOpenAIStream:
    return BedrockAnthropicToOpenAIStream(_ctx(stream=True, include_usage=include_usage))


def _anthropic_stream() -> BedrockAnthropicPassthroughStream:
    return BedrockAnthropicPassthroughStream(_ctx(Endpoint.MESSAGES, stream=True))


def _complete(out: bytes, endpoint: Endpoint = Endpoint.CHAT_COMPLETIONS) -> bool:
    schema = ClientSchema.ANTHROPIC if endpoint is Endpoint.MESSAGES else ClientSchema.OPENAI
    cs = ClientStream(endpoint, schema)
    cs.sent(out)
    return cs.complete


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_openai_stream_any_chunking_is_openai_anthropics_translation(chunks: list[bytes]) -> None:
    tr = _openai_stream()
    out = run(tr, chunks)
    assert _normalised(out) == _normalised(DIRECT)
    data = [d for _, d in events(out)]
    assert data[-1] == "[DONE]"
    chunks_out = data[:-1]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks_out if c["choices"]) == "Héllo"
    assert "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks_out if c["choices"]) == "hm"
    args = "".join(
        tc["function"].get("arguments", "")
        for c in chunks_out
        if c["choices"]
        for tc in c["choices"][0]["delta"].get("tool_calls") or []
    )
    assert args == '{"city": "P"}'
    finishes = [
        c["choices"][0]["finish_reason"] for c in chunks_out if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    assert finishes == ["tool_calls"]
    assert chunks_out[-1]["choices"] == [] and chunks_out[-1]["usage"]["prompt_tokens"] == 10
    assert {c["id"] for c in chunks_out} == {"msg_bdrk_01x"}
    assert {c["model"] for c in chunks_out} == {"claude-3-5-haiku-20241022"}
    # The Anthropic usage, not the invocation metrics (which say 50/90).
    assert (tr.usage, tr.response_model) == (USAGE, "claude-3-5-haiku-20241022")
    assert _complete(out)


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_anthropic_stream_any_chunking_is_the_anthropic_events(chunks: list[bytes]) -> None:
    tr = _anthropic_stream()
    out = run(tr, chunks)
    assert events(out) == events(SSE)
    assert out.startswith(b"event: message_start\ndata: {")
    assert (tr.usage, tr.response_model) == (USAGE, "claude-3-5-haiku-20241022")
    assert _complete(out, Endpoint.MESSAGES)


def test_anthropic_stream_usage_as_anthropic_passthrough_knows_it() -> None:
    direct = AnthropicPassthroughResponse(_ctx(Endpoint.MESSAGES, stream=True))
    run(direct, [SSE])
    tr = _anthropic_stream()
    run(tr, [STREAM])
    assert (tr.usage, tr.response_model) == (direct.usage, direct.response_model)


def test_events_go_out_as_soon_as_their_frame_is_whole() -> None:
    for tr in (_openai_stream(), _anthropic_stream()):
        assert tr.feed(FRAMES[0][:-1]) == b""
        first = tr.feed(FRAMES[0][-1:])
        assert len(events(first)) == 1
        assert not tr.usage.known  # message_start's counts are not final


def test_openai_stream_without_include_usage_has_no_usage_chunk() -> None:
    tr = _openai_stream(include_usage=False)
    out = run(tr, [STREAM])
    assert all(not d.get("usage") for _, d in events(out) if isinstance(d, dict))
    assert tr.usage == USAGE


NO_DELTA_USAGE = [
    *EVENTS[:-2],
    {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}},
    EVENTS[-1],
]


def test_invocation_metrics_stand_in_for_missing_usage() -> None:
    data = b"".join(_chunk(e) for e in NO_DELTA_USAGE)
    expected = TokenUsage(50, 0, 0, 90, 0, 140, True)
    tr = _openai_stream()
    out = run(tr, [data])
    assert tr.usage == expected
    assert [d for _, d in events(out)][-2]["usage"]["prompt_tokens"] == 50
    passthrough = _anthropic_stream()
    run(passthrough, [data])
    assert passthrough.usage == expected


def test_no_usage_at_all_stays_unknown() -> None:
    stop = {"type": "message_stop"}
    data = b"".join(_chunk(e) for e in [*NO_DELTA_USAGE[:-1], stop])
    tr = _openai_stream()
    out = run(tr, [data])
    assert events(out)[-1][1] == "[DONE]" and b'"usage"' not in out  # no usage chunk: none is known
    anth = _anthropic_stream()
    run(anth, [data])
    for t in (tr, anth):
        assert not t.usage.known and t.usage.input_tokens == 10  # message_start's, for the estimate


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ({"inputTokenCount": 5, "outputTokenCount": 9}, TokenUsage(5, 0, 0, 9, 0, 14, True)),
        (
            {
                "inputTokenCount": 5,
                "outputTokenCount": 9,
                "cacheReadInputTokenCount": 3,
                "cacheWriteInputTokenCount": 2,
            },
            TokenUsage(10, 3, 2, 9, 0, 19, True),
        ),
        ({"invocationLatency": 5}, TokenUsage()),
        (None, TokenUsage()),
    ],
)
def test_from_invocation_metrics(metrics: Any, expected: TokenUsage) -> None:
    assert from_invocation_metrics(metrics) == expected


@pytest.mark.parametrize("cut", [len(FRAMES) - 1, 5, 1])
def test_stream_dying_before_message_stop_is_not_complete(cut: int) -> None:
    """No fake end: the router phase sees an incomplete stream and adds its own error event. The
    usage is final once message_delta reported it, as openai_anthropic and anthropic_anthropic know it."""
    data = b"".join(FRAMES[:cut])
    delta_seen = cut == len(FRAMES) - 1
    for chunks in ([data], [data + FRAMES[cut][:20]]):
        tr = _openai_stream()
        out = run(tr, chunks)
        assert b"[DONE]" not in out and b'"error"' not in out
        assert not _complete(out)
        direct = AnthropicToOpenAIStream(_ctx(stream=True, include_usage=True))
        run(direct, [b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in EVENTS[:cut])])
        assert tr.usage == direct.usage and tr.usage.known is delta_seen
        anth = _anthropic_stream()
        out = run(anth, chunks)
        assert b"message_stop" not in out and b"event: error" not in out
        assert not _complete(out, Endpoint.MESSAGES) and anth.usage.known is delta_seen


@pytest.mark.parametrize(
    ("kind", "openai_type", "anthropic_type", "status", "fields"),
    [
        ("throttlingException", "rate_limit_error", "rate_limit_error", 429, {}),
        ("modelStreamErrorException", "server_error", "api_error", 424, {}),
        # Claude itself overloaded mid-stream: Bedrock's wrapper carries its 529, which Claude's
        # clients retry (a reviewer found it told them api_error).
        ("modelStreamErrorException", "server_error", "overloaded_error", 529, {"originalStatusCode": 529}),
        ("validationException", "invalid_request_error", "invalid_request_error", 400, {}),
        ("internalServerException", "server_error", "api_error", 500, {}),
        ("modelTimeoutException", "server_error", "api_error", 408, {}),
        # Bedrock overloaded: what Anthropic itself says when it is (its SDKs back off on it).
        ("serviceUnavailableException", "server_error", "overloaded_error", 503, {}),
        ("somethingNewException", "server_error", "api_error", 500, {}),
    ],
)
def test_exception_frame_ends_the_stream_with_an_error(
    kind: str, openai_type: str, anthropic_type: str, status: int, fields: dict[str, Any]
) -> None:
    data = b"".join(FRAMES[:7]) + aws_exception(kind, "it broke", **fields) + b"".join(FRAMES[7:])
    for chunks in splits(data, 97)[:3]:
        tr = _openai_stream()
        out = run(tr, chunks)
        assert events(out)[-1][1] == {
            "error": {"message": "it broke", "type": openai_type, "param": None, "code": kind}
        }
        assert b"[DONE]" not in out and b"llo" not in out  # nothing after the error
        assert _complete(out) and not tr.usage.known
        anth = _anthropic_stream()
        out = run(anth, chunks)
        assert events(out)[-1] == ("error", {"type": "error", "error": {"type": anthropic_type, "message": "it broke"}})
        assert b"message_stop" not in out and b"llo" not in out
        assert _complete(out, Endpoint.MESSAGES) and not anth.usage.known


def test_unmodeled_error_frame() -> None:
    frame = aws_frame({":message-type": "error", ":error-code": "InternalFailure", ":error-message": "oops"}, b"")
    out = run(_openai_stream(), [FRAMES[0], frame, *FRAMES[1:]])
    assert events(out)[-1][1] == {
        "error": {"message": "oops", "type": "server_error", "param": None, "code": "InternalFailure"}
    }
    out = run(_anthropic_stream(), [FRAMES[0], frame, *FRAMES[1:]])
    assert events(out)[-1] == ("error", {"type": "error", "error": {"type": "api_error", "message": "oops"}})


def test_anthropic_error_event_in_a_chunk() -> None:
    """An Anthropic `error` event Bedrock relays: the OpenAI client gets openai_anthropic's error, the
    Anthropic client the event itself; the stream ends there."""
    err = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    data = b"".join([*FRAMES[:3], _chunk(err), *FRAMES[3:]])
    tr = _openai_stream()
    out = run(tr, [data])
    assert events(out)[-1][1]["error"]["message"] == "Overloaded" and b"[DONE]" not in out
    assert _complete(out) and not tr.usage.known
    anth = _anthropic_stream()
    out = run(anth, [data])
    assert events(out)[-1] == ("error", err) and b"message_stop" not in out
    assert _complete(out, Endpoint.MESSAGES) and not anth.usage.known


def _corrupt(frame: bytes, at: int) -> bytes:
    return frame[:at] + bytes([frame[at] ^ 0xFF]) + frame[at + 1 :]


@pytest.mark.parametrize("position", [2, 9, 20, -10, -1])
def test_corrupted_frame_is_an_error_event(position: int) -> None:
    bad = _corrupt(FRAMES[6], position % len(FRAMES[6]))
    data = b"".join(FRAMES[:6]) + bad + b"".join(FRAMES[7:])
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        tr = _openai_stream()
        out = run(tr, chunks)
        last = events(out)[-1][1]["error"]
        assert last["type"] == "server_error" and "could not be parsed" in last["message"]
        assert b"[DONE]" not in out and b"llo" not in out
        assert _complete(out) and not tr.usage.known
        anth = _anthropic_stream()
        out = run(anth, chunks)
        kind, body = events(out)[-1]
        assert kind == "error" and body["error"]["type"] == "api_error"
        assert "could not be parsed" in body["error"]["message"]
        assert b"message_stop" not in out and b"llo" not in out
        assert _complete(out, Endpoint.MESSAGES) and not anth.usage.known


def test_frames_that_carry_no_anthropic_event_are_dropped() -> None:
    headers = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
    odd = [
        aws_frame(headers, b'{"bytes": "not base64!"}'),
        aws_frame(headers, json.dumps({"bytes": base64.b64encode(b"not json").decode()}).encode()),
        aws_frame(headers, json.dumps({"bytes": base64.b64encode(b'{"no": "type"}').decode()}).encode()),
        aws_frame(headers, b"not json"),
        aws_frame(headers, b'{"p": "x"}'),
        aws_frame({**headers, ":event-type": "somethingElse"}, b"{}"),
    ]
    data = FRAMES[0] + b"".join(odd) + b"".join(FRAMES[1:])
    assert _normalised(run(_openai_stream(), [data])) == _normalised(DIRECT)
    assert events(run(_anthropic_stream(), [data])) == events(SSE)


def test_event_json_with_newlines_is_one_data_line() -> None:
    pretty = json.dumps(EVENTS[6], indent=2).encode()
    assert b"\n" in pretty
    headers = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
    frame = aws_frame(headers, json.dumps({"bytes": base64.b64encode(pretty).decode()}).encode())
    out = run(_anthropic_stream(), [b"".join(FRAMES[:6]), frame])
    assert out.endswith(b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,'
                        b'"delta":{"type":"text_delta","text":"H\xc3\xa9"}}\n\n')  # fmt: skip


def test_nothing_after_the_end() -> None:
    late = _chunk({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "late"}})
    for tr in (_openai_stream(), _anthropic_stream()):
        run(tr, [STREAM])
        assert tr.feed(late) == b"" and tr.finish() == b""


# ----------------------------------------------------------------------------- through the router phase

BACKEND = "ns/claude/route/r/rule/0/ref/0"


def _router_config() -> config_pb2.TranslatorConfig:
    cfg = config_pb2.TranslatorConfig(name="ns/gw")
    cfg.backends.add(
        name=BACKEND, service_backend="ns/claude", route_name="ns/r", schema=config_pb2.Schema(name="AWSAnthropic")
    )
    cfg.global_costs.add(metadata_key="total", type=config_pb2.LLMRequestCost.TOTAL_TOKEN)
    return cfg


@pytest.mark.parametrize("endpoint", [Endpoint.CHAT_COMPLETIONS, Endpoint.MESSAGES])
async def test_router_phase_streams_the_event_stream_as_sse(endpoint: Endpoint) -> None:
    path = "/anthropic/v1/messages" if endpoint is Endpoint.MESSAGES else "/v1/chat/completions"
    req: dict[str, Any] = {"model": CLAUDE, "messages": [], "stream": True, "max_tokens": 5}
    if endpoint is Endpoint.CHAT_COMPLETIONS:
        req["stream_options"] = {"include_usage": True}
    out = await drive(
        ExternalProcessor(_router_config()),
        [
            request_headers({":method": "POST", ":path": path, ":authority": "gw", "content-type": "application/json"}),
            request_body(req),
            response_headers({":status": "200", "content-type": "application/vnd.amazon.eventstream"}, BACKEND),
            response_body(STREAM[:100], end_of_stream=False),
            response_body(STREAM[100:], end_of_stream=True),
        ],
    )
    assert header_set(out[2].response_headers.response.header_mutation)["content-type"] == "text/event-stream"
    sent = b"".join(r.response_body.response.body_mutation.body for r in out[3:])
    if endpoint is Endpoint.MESSAGES:
        assert events(sent) == events(SSE)
    else:
        assert _normalised(sent) == _normalised(DIRECT)
    assert metadata(out[4])["total"] == 19.0 and metadata(out[4])["usage_estimated"] is False
