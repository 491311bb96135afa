"""Anthropic Messages client -> AWS Bedrock Converse / ConverseStream (schema AWSBedrock), and the
Anthropic count_tokens endpoint -> Bedrock CountTokens (both Bedrock schemas).

Oracles: botocore's own bedrock-runtime service model (Converse and CountTokens input shapes), the
Bedrock fake's Converse validation, and the official anthropic SDK's stream accumulator, which
rebuilds the message from the SSE events exactly as a client does."""

from __future__ import annotations

import base64
import contextlib
import json
import random
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from aigw.translator.v1 import config_pb2
from aigw_fakes.bedrock import BedrockError, event_message, exception_message, validate_converse
from aigw_translator.client_stream import ClientStream
from aigw_translator.endpoints import ClientSchema, Endpoint
from aigw_translator.errors import GatewayError
from aigw_translator.translators import RequestContext, ResponseContext, get_pair
from aigw_translator.translators.anthropic_bedrock import (
    ConverseToAnthropicResponse,
    ConverseToAnthropicStream,
    converse_to_message,
    messages_to_converse,
    translate_request,
)
from aigw_translator.translators.bedrock_count_tokens import (
    CountTokensResponse,
    count_model,
    translate_converse_request,
    translate_invoke_request,
)

from .bedrock_shapes import assert_valid_input, blobs_as_bytes
from .streams import events, random_chunkings, run, splits

CLAUDE = "us.anthropic.claude-sonnet-4-20250514-v1:0"
NOVA = "us.amazon.nova-pro-v1:0"
PNG = base64.b64encode(b"\x89PNG fake").decode()
WEATHER = {
    "name": "get_weather",
    "description": "Weather of a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
WEATHER_SPEC = {
    "toolSpec": {
        "name": "get_weather",
        "description": "Weather of a city",
        "inputSchema": {"json": WEATHER["input_schema"]},
    }
}
TOOL_LOOP = [
    {"role": "user", "content": "weather in Paris?"},
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "call it", "signature": "sig1"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "tu1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
    },
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": "sunny"}]},
]


def _image(media_type: str = "image/png") -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": PNG}}


def _pdf(**kw: Any) -> dict[str, Any]:
    return {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PNG}, **kw}


def _user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


EMPTY_OBJECT = {"json": {"type": "object", "properties": {}}}


def _req(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **kw}


# ----------------------------------------------------------------------------- request


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        (
            _req(),
            {
                "messages": [{"role": "user", "content": [{"text": "hi"}]}],
                "inferenceConfig": {"maxTokens": 100},
                "additionalModelResponseFieldPaths": None,
            },
        ),
        (
            _req(system="be brief", temperature=0.3, top_p=0.9, stop_sequences=["END"], top_k=5),
            {
                "system": [{"text": "be brief"}],
                "inferenceConfig": {"maxTokens": 100, "temperature": 0.3, "topP": 0.9, "stopSequences": ["END"]},
                "additionalModelRequestFields": {"top_k": 5},
                # Converse names the matched stop sequence only when asked for Claude's field.
                "additionalModelResponseFieldPaths": ["/stop_sequence"],
            },
        ),
        (_req(stop_sequences=[""]), {"inferenceConfig": {"maxTokens": 100}, "additionalModelResponseFieldPaths": None}),
        (
            _req(
                system=[{"type": "text", "text": "long prompt", "cache_control": {"type": "ephemeral"}}],
                tools=[{**WEATHER, "cache_control": {"type": "ephemeral"}}],
            ),
            {
                "system": [{"text": "long prompt"}, {"cachePoint": {"type": "default"}}],
                "toolConfig": {"tools": [WEATHER_SPEC, {"cachePoint": {"type": "default"}}]},
            },
        ),
        (
            _req(tools=[WEATHER], tool_choice={"type": "any"}),
            {"toolConfig": {"tools": [WEATHER_SPEC], "toolChoice": {"any": {}}}},
        ),
        (
            _req(
                tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
            ),
            {"toolConfig": {"tools": [WEATHER_SPEC], "toolChoice": {"tool": {"name": "get_weather"}}}},
        ),
        # none: the tools are withheld...
        (_req(tools=[WEATHER], tool_choice={"type": "none"}), {"toolConfig": None}),
        # ...unless the history holds tool blocks (Bedrock then requires the toolConfig).
        (
            _req(messages=TOOL_LOOP, tools=[WEATHER], tool_choice={"type": "none"}),
            {"toolConfig": {"tools": [WEATHER_SPEC]}},
        ),
        (
            _req(messages=TOOL_LOOP),
            {
                "messages": [
                    {"role": "user", "content": [{"text": "weather in Paris?"}]},
                    {
                        "role": "assistant",
                        "content": [
                            {"reasoningContent": {"reasoningText": {"text": "call it", "signature": "sig1"}}},
                            {"text": "Let me check."},
                            {"toolUse": {"toolUseId": "tu1", "name": "get_weather", "input": {"city": "Paris"}}},
                        ],
                    },
                    {"role": "user", "content": [{"toolResult": {"toolUseId": "tu1", "content": [{"text": "sunny"}]}}]},
                ],
                # No tools declared: a minimal config from the history's tool names.
                "toolConfig": {
                    "tools": [
                        {
                            "toolSpec": {
                                "name": "get_weather",
                                "inputSchema": {"json": {"type": "object", "properties": {}}},
                            }
                        }
                    ]
                },
            },
        ),
        (
            _req(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            _image("image/png"),
                            {"type": "text", "text": "what is it?", "cache_control": {"type": "ephemeral"}},
                            _pdf(title="Q3 report.pdf"),
                            {
                                "type": "document",
                                "source": {"type": "text", "media_type": "text/plain", "data": "notes"},
                            },
                        ],
                    }
                ]
            ),
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"image": {"format": "png", "source": {"bytes": PNG}}},
                            {"text": "what is it?"},
                            {"cachePoint": {"type": "default"}},
                            {"document": {"format": "pdf", "name": "Q3 report pdf 1", "source": {"bytes": PNG}}},
                            {
                                "document": {
                                    "format": "txt",
                                    "name": "document 2",
                                    "source": {"bytes": base64.b64encode(b"notes").decode()},
                                }
                            },
                        ],
                    }
                ]
            },
        ),
        # Consecutive turns of a role merge; blank text goes; a prefill loses its trailing space.
        (
            _req(
                messages=[
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": [{"type": "text", "text": " "}, {"type": "text", "text": "b"}]},
                    {"role": "assistant", "content": "The answer is "},
                ]
            ),
            {
                "messages": [
                    {"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
                    {"role": "assistant", "content": [{"text": "The answer is"}]},
                ]
            },
        ),
        (
            _req(
                messages=[
                    *TOOL_LOOP[:2],
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "tu1",
                                "is_error": True,
                                "content": [
                                    {"type": "text", "text": "boom"},
                                    {
                                        "type": "image",
                                        "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG},
                                    },
                                ],
                            }
                        ],
                    },
                ],
            ),
            {
                "messages[2]": {
                    "role": "user",
                    "content": [
                        {
                            "toolResult": {
                                "toolUseId": "tu1",
                                "content": [{"text": "boom"}, {"image": {"format": "jpeg", "source": {"bytes": PNG}}}],
                                "status": "error",
                            }
                        }
                    ],
                }
            },
        ),
        (
            _req(thinking={"type": "enabled", "budget_tokens": 2048}, max_tokens=4096, metadata={"user_id": "u"}),
            {
                "inferenceConfig": {"maxTokens": 4096},
                "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 2048}},
            },
        ),
        (_req(thinking={"type": "disabled"}), {"additionalModelRequestFields": None}),
    ],
)
def test_request(req: dict[str, Any], expected: dict[str, Any]) -> None:
    out = messages_to_converse(req, CLAUDE)
    for key, value in expected.items():
        if key.startswith("messages["):
            assert out["messages"][int(key[9:-1])] == value
        else:
            assert out.get(key) == value, key
    validate_converse(out)  # the fake's Bedrock rules accept it


def test_betas_bedrock_takes_go_in_the_body_on_claude_only() -> None:
    betas = ["context-1m-2025-08-07"]
    out = messages_to_converse(_req(), CLAUDE, betas)
    assert out["additionalModelRequestFields"] == {"anthropic_beta": betas}
    assert "additionalModelRequestFields" not in messages_to_converse(_req(), NOVA, betas)


def test_the_matched_stop_sequence_is_asked_for_on_claude_only() -> None:
    """Other models have no `stop_sequence` field: Bedrock would ignore the path, so none is sent."""
    out = messages_to_converse(_req(stop_sequences=["END"]), NOVA)
    assert out["inferenceConfig"]["stopSequences"] == ["END"] and "additionalModelResponseFieldPaths" not in out


@pytest.mark.parametrize(
    ("req", "model", "status", "words"),
    [
        (_req(top_k=3), NOVA, 422, "top_k is only supported for Claude"),
        (_req(tools=[{"type": "web_search_20250305", "name": "web_search"}]), CLAUDE, 422, "server tool"),
        (_req(mcp_servers=[{"type": "url", "url": "https://x", "name": "x"}]), CLAUDE, 422, "mcp_servers"),
        (
            _req(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "url", "url": "https://x/a.png"}}],
                    }
                ]
            ),
            CLAUDE,
            422,
            "inline base64",
        ),
        (
            _req(
                messages=[
                    {
                        "role": "user",
                        "content": [_image("image/bmp")],
                    }
                ]
            ),
            CLAUDE,
            422,
            "image/bmp",
        ),
        (
            _req(messages=[{"role": "user", "content": [{"type": "tool_use", "id": "x", "name": "f", "input": {}}]}]),
            CLAUDE,
            422,
            "user turn",
        ),
        (_req(messages=[{"role": "system", "content": "x"}]), CLAUDE, 400, "role"),  # invalid in Anthropic's API
        (_req(messages=[]), CLAUDE, 400, "non-empty"),  # invalid in Anthropic's own API
        (_req(tool_choice={"type": "sometimes"}), CLAUDE, 422, "tool_choice"),
        (_req(max_tokens=0), CLAUDE, 400, "max_tokens"),
        (_req(temperature="hot"), CLAUDE, 400, "temperature"),
        (_req(top_k=-1), CLAUDE, 400, "top_k"),
        (_req(stop_sequences=[" "]), CLAUDE, 422, "whitespace"),
    ],
)
def test_requests_that_cannot_be_honoured_are_clear_errors(
    req: dict[str, Any], model: str, status: int, words: str
) -> None:
    with pytest.raises(GatewayError) as err:
        messages_to_converse(req, model)
    assert err.value.status == status and words in err.value.message


@pytest.mark.parametrize(
    "req",
    [
        _req(
            messages=TOOL_LOOP, tools=[WEATHER], tool_choice={"type": "auto"}, system="s", top_k=2, stop_sequences=["X"]
        ),
        _req(
            messages=[
                {
                    "role": "user",
                    "content": [
                        _image("image/webp"),
                        {
                            "type": "document",
                            "source": {"type": "base64", "media_type": "application/pdf", "data": PNG},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": [{"type": "redacted_thinking", "data": PNG}, {"type": "text", "text": "ok"}],
                },
                {"role": "user", "content": "next"},
            ],
            thinking={"type": "enabled", "budget_tokens": 1024},
        ),
    ],
)
def test_request_matches_the_converse_input_shape(req: dict[str, Any]) -> None:
    assert_valid_input("Converse", {"modelId": CLAUDE, **blobs_as_bytes(messages_to_converse(req, CLAUDE))})


def _ctx_req(model: str = CLAUDE, schema: str = "AWSBedrock", headers: dict[str, str] | None = None) -> RequestContext:
    backend = config_pb2.Backend(name="b", schema=config_pb2.Schema(name=schema))
    return RequestContext(Endpoint.MESSAGES, backend, "/anthropic/v1/messages", "", model, headers=headers or {})


@pytest.mark.parametrize(("stream", "op"), [(False, "converse"), (True, "converse-stream")])
def test_translate_request(stream: bool, op: str) -> None:
    headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "claude-code-20250219,context-1m-2025-08-07"}
    out = translate_request(_ctx_req(headers=headers), json.dumps(_req(stream=stream)).encode())
    assert out.path == f"/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/{op}"
    body = json.loads(out.body or b"")
    assert "model" not in body and "stream" not in body
    # Only the betas Bedrock takes (a first-party one would fail the whole request).
    assert body["additionalModelRequestFields"] == {"anthropic_beta": ["context-1m-2025-08-07"]}
    assert set(out.remove_headers) == {"anthropic-version", "anthropic-beta"}
    assert out.set_headers["content-type"] == "application/json"


def test_registry() -> None:
    pair = get_pair(Endpoint.MESSAGES, "AWSBedrock")
    assert pair is not None and pair.request is translate_request
    assert type(pair.response_translator(_ctx())) is ConverseToAnthropicResponse
    assert type(pair.response_translator(_ctx(stream=True))) is ConverseToAnthropicStream
    count = get_pair(Endpoint.COUNT_TOKENS, "AWSBedrock")
    assert count is not None and count.request is translate_converse_request
    assert type(count.response_translator(_ctx())) is CountTokensResponse


# ----------------------------------------------------------------------------- response

USAGE = {"inputTokens": 12, "outputTokens": 7, "totalTokens": 19, "cacheReadInputTokens": 3, "cacheWriteInputTokens": 2}


def _ctx(
    stream: bool = False, endpoint: Endpoint = Endpoint.MESSAGES, headers: dict[str, str] | None = None
) -> ResponseContext:
    return ResponseContext(
        endpoint=endpoint,
        client_schema=ClientSchema.ANTHROPIC,
        request_model="claude",
        effective_model=CLAUDE,
        stream=stream,
        response_headers=headers or {},
    )


def _valid_message(obj: dict[str, Any]) -> None:
    """The official SDK's Message model accepts it."""
    from anthropic.types import Message

    Message.model_validate(obj)


def test_response() -> None:
    resp = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s1"}}},
                    {"reasoningContent": {"redactedContent": "cmVkYWN0ZWQ="}},
                    {"text": "Checking."},
                    {"toolUse": {"toolUseId": "tu1", "name": "get_weather", "input": {"city": "Paris"}}},
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": USAGE,
        "metrics": {"latencyMs": 100},
    }
    tr = ConverseToAnthropicResponse(_ctx())
    out = json.loads(tr.body(json.dumps(resp).encode()) or b"")
    assert out["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": "s1"},
        {"type": "redacted_thinking", "data": "cmVkYWN0ZWQ="},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "tu1", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    assert out["stop_reason"] == "tool_use" and out["model"] == CLAUDE and out["id"].startswith("msg_")
    # Bedrock's inputTokens excludes cache reads and writes, as Anthropic's input_tokens does.
    assert out["usage"] == {
        "input_tokens": 12,
        "output_tokens": 7,
        "cache_read_input_tokens": 3,
        "cache_creation_input_tokens": 2,
    }
    assert tr.usage.known and tr.usage.input_tokens == 17 and tr.response_model == CLAUDE
    _valid_message(out)


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ("end_turn", "end_turn"),
        ("max_tokens", "max_tokens"),
        ("stop_sequence", "stop_sequence"),
        ("guardrail_intervened", "refusal"),
        ("content_filtered", "refusal"),
        ("model_context_window_exceeded", "model_context_window_exceeded"),
        ("malformed_tool_use", "end_turn"),
        ("brand_new", "end_turn"),
    ],
)
def test_stop_reasons(stop: str, expected: str) -> None:
    message, _ = converse_to_message({"output": {"message": {"content": [{"text": "x"}]}}, "stopReason": stop}, "m")
    assert message["stop_reason"] == expected


@pytest.mark.parametrize(
    ("stop", "fields", "expected"),
    [
        ("stop_sequence", {"stop_sequence": "END"}, "END"),
        ("stop_sequence", None, None),  # not asked for (or not Claude): unknown
        ("stop_sequence", {"stop_sequence": None}, None),
        ("stop_sequence", {"stop_sequence": 5}, None),
        ("stop_sequence", ["END"], None),
        ("end_turn", {"stop_sequence": None}, None),
        ("end_turn", {"stop_sequence": "END"}, None),  # only a stop_sequence stop names one
    ],
)
def test_the_matched_stop_sequence_comes_from_the_additional_response_fields(
    stop: str, fields: Any, expected: str | None
) -> None:
    resp = {"output": {"message": {"content": [{"text": "x"}]}}, "stopReason": stop, "usage": USAGE}
    if fields is not None:
        resp["additionalModelResponseFields"] = fields
    out = json.loads(ConverseToAnthropicResponse(_ctx()).body(json.dumps(resp).encode()) or b"")
    assert out["stop_sequence"] == expected and out["stop_reason"] == stop
    _valid_message(out)


def test_untranslatable_body_raises() -> None:
    with pytest.raises(ValueError):
        ConverseToAnthropicResponse(_ctx()).body(b"[1]")


def test_error_is_anthropic_shaped_by_the_error_type() -> None:
    headers = {"x-amzn-errortype": "ServiceUnavailableException:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    for tr in (
        ConverseToAnthropicResponse(_ctx(headers=headers)),
        ConverseToAnthropicStream(_ctx(True, headers=headers)),
    ):
        out = json.loads(tr.error(503, b'{"message":"Bedrock is unable to process your request."}'))
        assert out == {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Bedrock is unable to process your request."},
        }


# ----------------------------------------------------------------------------- stream


def _ev(kind: str, **payload: Any) -> bytes:
    return event_message(kind, {**payload, "p": "abcdef"})


STREAM_BODY = [
    _ev("messageStart", role="assistant"),
    _ev("contentBlockDelta", contentBlockIndex=0, delta={"reasoningContent": {"text": "Let me "}}),
    _ev("contentBlockDelta", contentBlockIndex=0, delta={"reasoningContent": {"text": "think."}}),
    _ev("contentBlockDelta", contentBlockIndex=0, delta={"reasoningContent": {"signature": "sig-xyz"}}),
    _ev("contentBlockStop", contentBlockIndex=0),
    _ev("contentBlockDelta", contentBlockIndex=1, delta={"text": "I'll "}),
    _ev("contentBlockDelta", contentBlockIndex=1, delta={"text": "check."}),
    _ev("contentBlockStop", contentBlockIndex=1),
    _ev("contentBlockStart", contentBlockIndex=2, start={"toolUse": {"toolUseId": "tu1", "name": "get_weather"}}),
    _ev("contentBlockDelta", contentBlockIndex=2, delta={"toolUse": {"input": '{"ci'}}),
    _ev("contentBlockDelta", contentBlockIndex=2, delta={"toolUse": {"input": 'ty": "Paris"}'}}),
    _ev("contentBlockStop", contentBlockIndex=2),
    _ev("someFutureEvent", foo=1),
    _ev("messageStop", stopReason="tool_use"),
]
METADATA = _ev("metadata", usage=USAGE, metrics={"latencyMs": 120})
STREAM = b"".join([*STREAM_BODY, METADATA])
_EVENT = TypeAdapter(RawMessageStreamEvent)


def _accumulate(out: bytes) -> Any:
    """The message as the official anthropic SDK builds it from the events."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for name, data in events(out):
        assert name == data["type"]
        event = _EVENT.validate_python(data)
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    return snapshot


def _random_chunkings(data: bytes, count: int) -> list[list[bytes]]:
    return random_chunkings(data, count, 7, 12)


@pytest.mark.parametrize("chunks", [*splits(STREAM, 97)[:4], *_random_chunkings(STREAM, 8)])
def test_stream_any_chunking(chunks: list[bytes]) -> None:
    tr = ConverseToAnthropicStream(_ctx(stream=True))
    out = run(tr, chunks)
    kinds = [name for name, _ in events(out)]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    message = _accumulate(out)
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[0].thinking == "Let me think." and message.content[0].signature == "sig-xyz"
    assert message.content[1].text == "I'll check."
    assert message.content[2].input == {"city": "Paris"} and message.content[2].id == "tu1"
    assert message.stop_reason == "tool_use" and message.model == CLAUDE
    assert message.usage.output_tokens == 7 and message.usage.input_tokens == 12
    assert message.usage.cache_read_input_tokens == 3
    assert tr.usage.known and tr.usage.input_tokens == 17
    stream = ClientStream(Endpoint.MESSAGES, ClientSchema.ANTHROPIC)
    stream.sent(out)
    assert stream.complete


def test_message_stop_waits_for_the_metadata_with_the_usage() -> None:
    tr = ConverseToAnthropicStream(_ctx(stream=True))
    out = tr.feed(b"".join(STREAM_BODY))
    assert b"message_stop" not in out and b"message_delta" not in out and not tr.usage.known
    out = tr.feed(METADATA)
    assert [name for name, _ in events(out)] == ["message_delta", "message_stop"]
    assert tr.usage.known and tr.finish() == b""


CUT_AFTER_MESSAGE_STOP = b"".join(STREAM_BODY)


@pytest.mark.parametrize(
    "chunks",
    [
        *splits(CUT_AFTER_MESSAGE_STOP, 97)[:4],
        *_random_chunkings(CUT_AFTER_MESSAGE_STOP, 6),
        [CUT_AFTER_MESSAGE_STOP, METADATA[:30]],  # metadata's frame cut short
    ],
)
def test_a_stream_ending_after_message_stop_without_metadata_is_incomplete(chunks: list[bytes]) -> None:
    """Bedrock always sends metadata (the usage) after messageStop: a stream without it was cut.
    No message_delta or message_stop, so the router phase adds its error event and charges its
    estimate."""
    tr = ConverseToAnthropicStream(_ctx(stream=True))
    out = run(tr, chunks)
    names = [name for name, _ in events(out)]
    assert names[-1] == "content_block_stop" and names.count("content_block_stop") == 3
    assert "message_delta" not in names and "message_stop" not in names and "error" not in names
    stream = ClientStream(Endpoint.MESSAGES, ClientSchema.ANTHROPIC)
    stream.sent(out)
    assert not stream.complete
    assert not tr.usage.known


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"stop_sequence": "</answer>"}, "</answer>"),
        ({"stop_sequence": None}, None),
        (None, None),
    ],
)
def test_the_stream_names_the_matched_stop_sequence(fields: dict[str, Any] | None, expected: str | None) -> None:
    stop = {"stopReason": "stop_sequence"} | ({"additionalModelResponseFields": fields} if fields else {})
    data = b"".join([*STREAM_BODY[:8], _ev("messageStop", **stop), METADATA])
    for chunks in [*splits(data, 61)[:3], *_random_chunkings(data, 3)]:
        out = run(ConverseToAnthropicStream(_ctx(stream=True)), chunks)
        delta = next(d for name, d in events(out) if name == "message_delta")
        assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": expected}
        message = _accumulate(out)
        assert message.stop_reason == "stop_sequence" and message.stop_sequence == expected


@pytest.mark.parametrize("cut", [1, 5, 9, 13])
def test_a_stream_cut_before_message_stop_never_gets_message_stop(cut: int) -> None:
    tr = ConverseToAnthropicStream(_ctx(stream=True))
    out = run(tr, [b"".join(STREAM_BODY[:cut])])
    assert b"message_stop" not in out and b"message_delta" not in out
    stream = ClientStream(Endpoint.MESSAGES, ClientSchema.ANTHROPIC)
    stream.sent(out)
    assert not stream.complete  # the router phase then adds its error event


@pytest.mark.parametrize(
    ("kind", "status_type"),
    [
        ("throttlingException", "rate_limit_error"),
        ("serviceUnavailableException", "overloaded_error"),
        ("modelStreamErrorException", "api_error"),
    ],
)
def test_an_exception_frame_ends_the_stream_with_an_anthropic_error_event(kind: str, status_type: str) -> None:
    tr = ConverseToAnthropicStream(_ctx(stream=True))
    out = run(tr, [b"".join(STREAM_BODY[:6]), exception_message(kind, {"message": "stop right there"}), METADATA])
    name, data = events(out)[-1]
    assert name == "error" and data == {"type": "error", "error": {"type": status_type, "message": "stop right there"}}
    assert b"message_stop" not in out and not tr.usage.known


@pytest.mark.parametrize("position", [2, 10, 30])
def test_a_corrupted_frame_ends_the_stream_with_an_error_event(position: int) -> None:
    frame = bytearray(STREAM_BODY[5])
    frame[position] ^= 0xFF
    tr = ConverseToAnthropicStream(_ctx(stream=True))
    out = run(tr, [b"".join(STREAM_BODY[:5]), bytes(frame), *STREAM_BODY[6:], METADATA])
    name, data = events(out)[-1]
    assert name == "error" and data["error"]["type"] == "api_error" and b"message_stop" not in out


def test_redacted_thinking_and_text_without_message_start() -> None:
    stream = b"".join(
        [
            _ev("contentBlockDelta", contentBlockIndex=0, delta={"reasoningContent": {"redactedContent": "UkVE"}}),
            _ev("contentBlockStop", contentBlockIndex=0),
            _ev("contentBlockDelta", contentBlockIndex=1, delta={"text": "hi"}),
            _ev("messageStop", stopReason="max_tokens"),
            METADATA,
        ]
    )
    out = run(ConverseToAnthropicStream(_ctx(stream=True)), [stream])
    message = _accumulate(out)
    assert [b.type for b in message.content] == ["redacted_thinking", "text"]
    assert message.content[0].data == "UkVE" and message.stop_reason == "max_tokens"


def test_events_of_an_unexpected_shape_are_dropped() -> None:
    stream = b"".join(
        [
            STREAM_BODY[0],
            _ev("contentBlockDelta", contentBlockIndex=0, delta={"toolUse": {"input": "{}"}}),  # no start
            _ev("contentBlockDelta", contentBlockIndex=0, delta="nonsense"),
            _ev("contentBlockDelta", contentBlockIndex=1, delta={"text": "ok"}),
            _ev("messageStop", stopReason="end_turn"),
            METADATA,
        ]
    )
    out = run(ConverseToAnthropicStream(_ctx(stream=True)), [stream])
    message = _accumulate(out)
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == "ok"


# ----------------------------------------------------------------------------- count tokens


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("us.anthropic.claude-sonnet-4-20250514-v1:0", "anthropic.claude-sonnet-4-20250514-v1:0"),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ("apac.anthropic.claude-3-5-sonnet-20240620-v1:0", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
        ("anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-haiku-20240307-v1:0"),
        ("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0", None),
    ],
)
def test_count_model(model: str, expected: str | None) -> None:
    assert count_model(model) == (expected or model)


COUNT_REQ = {
    "model": "claude",
    "system": "be brief",
    "messages": [{"role": "user", "content": "count me"}],
    "tools": [WEATHER],
    "thinking": {"type": "enabled", "budget_tokens": 8000},
}


def test_count_tokens_to_converse_matches_the_count_tokens_shape() -> None:
    ctx = _ctx_req()
    ctx.endpoint = Endpoint.COUNT_TOKENS
    out = translate_converse_request(ctx, json.dumps(COUNT_REQ).encode())
    assert out.path == "/model/anthropic.claude-sonnet-4-20250514-v1%3A0/count-tokens"
    body = json.loads(out.body or b"")
    converse = body["input"]["converse"]
    assert set(converse) == {"messages", "system", "toolConfig", "additionalModelRequestFields"}
    assert_valid_input("CountTokens", {"modelId": count_model(CLAUDE), **blobs_as_bytes(body)})


def test_count_tokens_to_invoke_model_is_a_base64_anthropic_body() -> None:
    ctx = _ctx_req(schema="AWSAnthropic", headers={"anthropic-beta": "token-counting-2024-11-01,context-1m-2025-08-07"})
    ctx.endpoint = Endpoint.COUNT_TOKENS
    out = translate_invoke_request(ctx, json.dumps(COUNT_REQ).encode())
    body = json.loads(out.body or b"")
    invoke = json.loads(base64.b64decode(body["input"]["invokeModel"]["body"]))
    assert invoke == {
        "anthropic_version": "bedrock-2023-05-31",
        "system": "be brief",
        "messages": [{"role": "user", "content": "count me"}],
        "tools": [WEATHER],
        "thinking": {"type": "enabled", "budget_tokens": 8000},
        "max_tokens": 8001,  # InvokeModel requires it, above the thinking budget
        "anthropic_beta": ["context-1m-2025-08-07"],
    }
    params = {
        "modelId": count_model(CLAUDE),
        "input": {"invokeModel": {"body": base64.b64decode(body["input"]["invokeModel"]["body"])}},
    }
    assert_valid_input("CountTokens", params)
    assert set(out.remove_headers) == {"anthropic-version", "anthropic-beta"}


def test_count_tokens_response_and_errors() -> None:
    tr = CountTokensResponse(_ctx(endpoint=Endpoint.COUNT_TOKENS))
    assert json.loads(tr.body(b'{"inputTokens": 42}') or b"") == {"input_tokens": 42}
    assert not tr.usage.known  # counting consumes nothing
    with pytest.raises(ValueError):
        tr.body(b'{"tokens": 1}')
    headers = {"x-amzn-errortype": "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    out = json.loads(
        CountTokensResponse(_ctx(endpoint=Endpoint.COUNT_TOKENS, headers=headers)).error(
            400, b'{"message":"The provided model doesn\'t support counting tokens."}'
        )
    )
    assert out["error"]["type"] == "invalid_request_error" and "counting tokens" in out["error"]["message"]


# ----------------------------------------------------------------------------- fuzz

_KEYS = ["text", "toolUse", "input", "reasoningContent", "signature", "redactedContent", "start", "delta",
         "contentBlockIndex", "stopReason", "usage", "inputTokens", "type", "content", "role", "source"]  # fmt: skip
_KINDS = ["messageStart", "contentBlockStart", "contentBlockDelta", "contentBlockStop", "messageStop", "metadata"]


def _rand(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.3:
        return rng.choice([None, True, 0, -1, 2**40, 1.5, "", "x", "end_turn", [], {}])
    if roll < 0.7:
        return {rng.choice(_KEYS): _rand(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [_rand(rng, depth + 1) for _ in range(rng.randrange(3))]


@pytest.mark.parametrize("seed", range(30))
def test_random_converse_events_never_crash_and_never_fake_an_end(seed: int) -> None:
    rng = random.Random(seed)
    frames = [_ev(rng.choice(_KINDS), **{k: _rand(rng) for k in rng.sample(_KEYS, 3)}) for _ in range(12)]
    tr = ConverseToAnthropicStream(_ctx(stream=True))
    out = run(tr, [b"".join(frames)])
    names = [name for name, _ in events(out)]  # every event is well-formed SSE with JSON data
    if "message_stop" in names:
        assert names[-2:] == ["message_delta", "message_stop"] and names.count("message_stop") == 1


@pytest.mark.parametrize("seed", range(30))
def test_random_requests_are_refused_cleanly(seed: int) -> None:
    rng = random.Random(500 + seed)
    for _ in range(20):
        req = {"max_tokens": 10, "messages": [{"role": rng.choice(["user", "assistant"]), "content": _rand(rng)}]}
        req.update({k: _rand(rng) for k in rng.sample(["system", "tools", "tool_choice", "thinking", "top_k"], 2)})
        with contextlib.suppress(GatewayError):  # a clear 400 or 422; anything else fails the test
            messages_to_converse(req, CLAUDE)


LLAMA = "us.meta.llama4-maverick-17b-instruct-v1:0"
OLD_CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"
PNG = "iVBORw0KGgo="
PDF = "JVBERi0xLjQK"


def _claude_code_turn(words: bool = True) -> dict[str, Any]:
    """What Claude Code sends every turn: the system prompt, tools and last message marked for prompt
    caching, thinking asked for, and a failed tool's result holding a screenshot and a PDF it read
    (`words`: the turn has text of its own besides the tool results)."""
    cached = {"type": "ephemeral"}
    result = {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "is_error": True,
        "content": [
            {"type": "text", "text": "partly unreadable"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}},
        ],
        **({} if words else {"cache_control": cached}),
    }
    return _req(
        system=[{"type": "text", "text": "You are Claude Code.", "cache_control": cached}],
        tools=[{"name": "Read", "input_schema": {"type": "object", "properties": {}}, "cache_control": cached}],
        thinking={"type": "enabled", "budget_tokens": 1024},
        max_tokens=2048,
        messages=[
            {"role": "user", "content": "read the report"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}]},
            {
                "role": "user",
                "content": [result, *([{"type": "text", "text": "go on", "cache_control": cached}] if words else [])],
            },
        ],
    )


def _cache_points(out: dict[str, Any]) -> dict[str, int]:
    places = {
        "system": out.get("system") or [],
        "tools": (out.get("toolConfig") or {}).get("tools") or [],
        "messages": [b for m in out["messages"] for b in m["content"]],
    }
    return {name: sum("cachePoint" in b for b in blocks) for name, blocks in places.items()}


ALL = {"system": 1, "tools": 1, "messages": 1}
NONE = {"system": 0, "tools": 0, "messages": 0}


@pytest.mark.parametrize("words", [True, False])
@pytest.mark.parametrize(
    ("model", "cache_points", "rich_results", "refusal"),
    [
        (CLAUDE, ALL, True, None),
        # An id that names no model (an application inference profile) goes as the client wrote it.
        (PROFILE, ALL, True, None),
        (NOVA, {"system": 1, "tools": 0, "messages": 1}, True, "extraneous key"),
        (OLD_CLAUDE, NONE, True, "prompt caching"),
        (LLAMA, NONE, False, "prompt caching"),
    ],
)
def test_what_claude_code_sends_is_fitted_to_the_model(
    model: str, cache_points: dict[str, int], rich_results: bool, refusal: str | None, words: bool
) -> None:
    """From a review with Claude Code's requests: cache points went to every model (Bedrock's 403 "did
    not allow prompt caching" on Llama, Mistral and Claude before 3.7 Sonnet, "extraneous key" in
    Nova's tools) and a failed tool's `status` and images to models that take neither, so every turn
    failed; a PDF in a tool result was a 422, and thinking a 422 off Claude. Now each family gets
    what it takes (the fake Bedrock refuses the rest, by AWS's feature tables; an application
    inference profile is not second-guessed), and the others' thinking is left out, as an OpenAI
    backend's is. A turn of tool results alone keeps a text block beside the files moved out of them
    (Converse wants one beside a document)."""
    turn = _claude_code_turn(words)
    out = messages_to_converse(turn, model)
    validate_converse(out, model)
    assert _cache_points(out) == cache_points
    last = out["messages"][2]["content"]
    result = next(b["toolResult"] for b in last if "toolResult" in b)
    if rich_results:
        assert result["status"] == "error" and {next(iter(i)) for i in result["content"]} == {
            "text",
            "image",
            "document",
        }
    else:
        assert "status" not in result and result["content"] == [{"text": "Error: partly unreadable"}]
        after = [next(iter(b)) for b in last][len(last) - 3 :]
        assert after == ["text", "image", "document"]  # the result's files follow, named by their call
        assert "toolu_1" in last[-3]["text"]
    assert ("thinking" in out.get("additionalModelRequestFields", {})) == (model == CLAUDE)  # the Claudes that think
    if refusal is not None:  # what was sent before: refused by the fake, as Bedrock refuses it
        sent = messages_to_converse(_claude_code_turn(words), CLAUDE)
        sent.pop("additionalModelRequestFields")  # (the thinking a model may not take: refused first)
        with pytest.raises(BedrockError, match=refusal):
            validate_converse(sent, model)


def test_an_openai_clients_cache_control_reaches_only_models_that_cache() -> None:
    """The same fitting for an OpenAI client's `cache_control` (chat_to_converse)."""
    from aigw_translator.translators.openai_bedrock import chat_to_converse

    cached = {"type": "text", "text": "long shared prefix", "cache_control": {"type": "ephemeral"}}
    req = {"model": "m", "messages": [{"role": "system", "content": [cached]}, {"role": "user", "content": [cached]}]}
    for model, points in ((CLAUDE, 2), (LLAMA, 0), (PROFILE, 2)):
        out = chat_to_converse(json.loads(json.dumps(req)), model)
        validate_converse(out, model)
        assert sum(_cache_points(out).values()) == points, model
