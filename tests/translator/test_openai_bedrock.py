from __future__ import annotations

import json
from typing import Any

import pytest

from aigw.translator.v1 import config_pb2
from aigw_translator.client_stream import ClientStream
from aigw_translator.endpoints import ClientSchema, Endpoint
from aigw_translator.errors import GatewayError
from aigw_translator.server import ExternalProcessor
from aigw_translator.translators import RequestContext, ResponseContext, TranslationError, get_pair
from aigw_translator.translators.openai_bedrock import (
    BedrockToOpenAIResponse,
    BedrockToOpenAIStream,
    chat_to_converse,
    finish_reason,
    translate_request,
)
from aigw_translator.usage import TokenUsage, from_bedrock

from .bedrock_shapes import assert_valid_input, blobs_as_bytes
from .extproc_helpers import (
    drive,
    metadata,
    request_body,
    request_headers,
    response_body,
    response_headers,
    set_headers,
)
from .streams import aws_exception, aws_frame, events, random_chunkings, run, splits

CLAUDE = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
NOVA = "us.amazon.nova-micro-v1:0"
TOOL = {
    "type": "function",
    "function": {"name": "f", "description": "d", "parameters": {"type": "object", "properties": {"a": {}}}},
}
SPEC = {
    "toolSpec": {"name": "f", "description": "d", "inputSchema": {"json": {"type": "object", "properties": {"a": {}}}}}
}
EMPTY_SCHEMA = {"json": {"type": "object", "properties": {}}}
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
TOOL_LOOP = [
    {"role": "user", "content": "weather?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
]


def _req(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}


def _user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def _assistant(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": list(blocks)}


# ----------------------------------------------------------------------------- request


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        (_req(), {"messages": [_user({"text": "hi"})], "system": None, "inferenceConfig": None, "toolConfig": None}),
        (_req(max_tokens=10), {"inferenceConfig": {"maxTokens": 10}}),
        (_req(max_tokens=10, max_completion_tokens=20), {"inferenceConfig": {"maxTokens": 20}}),
        (_req(stop="END"), {"inferenceConfig": {"stopSequences": ["END"]}}),
        (_req(stop=["a", "", "b"]), {"inferenceConfig": {"stopSequences": ["a", "b"]}}),
        (_req(stop=""), {"inferenceConfig": None}),
        (_req(temperature=1.7), {"inferenceConfig": {"temperature": 1.0}}),
        (_req(temperature=0.2, top_p=0.9), {"inferenceConfig": {"temperature": 0.2}}),
        (_req(temperature=1, top_p=0.9), {"inferenceConfig": {"topP": 0.9}}),
        (_req(top_p=0.5), {"inferenceConfig": {"topP": 0.5}}),
        # Ignored: no effect Bedrock could give, and no harm in leaving them out.
        (
            _req(
                stream=True,
                stream_options={"include_usage": True},
                user="u",
                seed=7,
                store=True,
                parallel_tool_calls=False,
                frequency_penalty=0,
                logprobs=False,
                metadata={"k": "v"},
                service_tier="auto",
            ),
            {"messages": [_user({"text": "hi"})], "inferenceConfig": None},
        ),
        (
            {
                "model": "m",
                "messages": [
                    {"role": "system", "content": "s1"},
                    {"role": "developer", "content": [{"type": "text", "text": "s2"}]},
                    {"role": "system", "content": " "},
                    {"role": "user", "content": "q"},
                ],
            },
            {"system": [{"text": "s1"}, {"text": "s2"}], "messages": [_user({"text": "q"})]},
        ),
        # Consecutive turns of one role are merged; blank text is left out (Bedrock rejects it).
        (
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "text", "text": ""}]},
                    {"role": "assistant", "content": "c"},
                    {"role": "assistant", "content": [{"type": "text", "text": "d"}]},
                    {"role": "assistant", "content": ""},
                    {"role": "user", "content": "  "},
                    {"role": "user", "content": "e"},
                ],
            },
            {
                "messages": [
                    _user({"text": "a"}, {"text": "b"}),
                    _assistant({"text": "c"}, {"text": "d"}),
                    _user({"text": "e"}),
                ]
            },
        ),
        # A prefilled final assistant turn loses its trailing whitespace.
        (
            _req(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "Sure, "}]),
            {"messages": [_user({"text": "q"}), _assistant({"text": "Sure,"})]},
        ),
        # Images: data URLs as inline bytes.
        (
            _req(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "look"},
                            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}},
                            {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,QQ=="}},
                            {"type": "image_url", "image_url": "data:image/PNG;base64,UE5H"},
                            {"type": "image_url", "image_url": {"url": "data:image/webp;base64,V0VC", "detail": "low"}},
                            {"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lG"}},
                        ],
                    }
                ]
            ),
            {
                "messages": [
                    _user(
                        {"text": "look"},
                        {"image": {"format": "jpeg", "source": {"bytes": "QUJD"}}},
                        {"image": {"format": "jpeg", "source": {"bytes": "QQ=="}}},
                        {"image": {"format": "png", "source": {"bytes": "UE5H"}}},
                        {"image": {"format": "webp", "source": {"bytes": "V0VC"}}},
                        {"image": {"format": "gif", "source": {"bytes": "R0lG"}}},
                    )
                ]
            },
        ),
        # Tools and tool_choice.
        (_req(tools=[TOOL]), {"toolConfig": {"tools": [SPEC]}}),
        (_req(tools=[TOOL], tool_choice="auto"), {"toolConfig": {"tools": [SPEC], "toolChoice": {"auto": {}}}}),
        (_req(tools=[TOOL], tool_choice="required"), {"toolConfig": {"tools": [SPEC], "toolChoice": {"any": {}}}}),
        (
            _req(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "f"}}),
            {"toolConfig": {"tools": [SPEC], "toolChoice": {"tool": {"name": "f"}}}},
        ),
        # No "none" in Converse: the tools are withheld.
        (_req(tools=[TOOL], tool_choice="none"), {"toolConfig": None}),
        # A tool choice without tools is not sent.
        (_req(tool_choice="required"), {"toolConfig": None}),
        (
            _req(tools=[{"type": "function", "function": {"name": "g"}}]),
            {"toolConfig": {"tools": [{"toolSpec": {"name": "g", "inputSchema": EMPTY_SCHEMA}}]}},
        ),
        # Tool history: assistant tool_calls -> toolUse, role tool -> toolResult in a user turn.
        (
            _req(
                messages=[
                    {"role": "user", "content": "weather?"},
                    {
                        "role": "assistant",
                        "content": "Let me check.",
                        "tool_calls": [
                            CALL,
                            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": ""}},
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": '{"sky": "blue"}'},
                    {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "r2"}]},
                    {"role": "user", "content": "thanks"},
                ],
                tools=[TOOL],
            ),
            {
                "messages": [
                    _user({"text": "weather?"}),
                    _assistant(
                        {"text": "Let me check."},
                        {"toolUse": {"toolUseId": "c1", "name": "f", "input": {"a": 1}}},
                        {"toolUse": {"toolUseId": "c2", "name": "g", "input": {}}},
                    ),
                    _user(
                        {"toolResult": {"toolUseId": "c1", "content": [{"text": '{"sky": "blue"}'}]}},
                        {"toolResult": {"toolUseId": "c2", "content": [{"text": "r2"}]}},
                        {"text": "thanks"},
                    ),
                ],
                "toolConfig": {"tools": [SPEC]},
            },
        ),
        # Tool history without tools: a minimal toolConfig naming the tools used is synthesised.
        (
            _req(
                messages=[
                    *TOOL_LOOP,
                    {
                        "role": "assistant",
                        "tool_calls": [{**CALL, "id": "c3"}, {"id": "c4", "function": {"name": "h"}}],
                    },
                    {"role": "tool", "tool_call_id": "c3", "content": "x"},
                    {"role": "tool", "tool_call_id": "c4", "content": "y"},
                ]
            ),
            {
                "toolConfig": {
                    "tools": [
                        {"toolSpec": {"name": "f", "inputSchema": EMPTY_SCHEMA}},
                        {"toolSpec": {"name": "h", "inputSchema": EMPTY_SCHEMA}},
                    ]
                }
            },
        ),
        # tool_choice none with tool history: the toolConfig must stay, without a toolChoice.
        (_req(messages=TOOL_LOOP, tools=[TOOL], tool_choice="none"), {"toolConfig": {"tools": [SPEC]}}),
        (
            _req(messages=TOOL_LOOP, tool_choice="none"),
            {"toolConfig": {"tools": [{"toolSpec": {"name": "f", "inputSchema": EMPTY_SCHEMA}}]}},
        ),
        # Prompt caching: cache_control -> a cachePoint after the block.
        (
            {
                "model": "m",
                "messages": [
                    {
                        "role": "system",
                        "content": [{"type": "text", "text": "long", "cache_control": {"type": "ephemeral"}}],
                    },
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "q", "cache_control": {"type": "ephemeral"}}],
                    },
                ],
                "tools": [{**TOOL, "cache_control": {"type": "ephemeral"}}],
            },
            {
                "system": [{"text": "long"}, {"cachePoint": {"type": "default"}}],
                "messages": [_user({"text": "q"}, {"cachePoint": {"type": "default"}})],
                "toolConfig": {"tools": [SPEC, {"cachePoint": {"type": "default"}}]},
            },
        ),
        # ... after an image too (the breakpoint had been dropped).
        (
            {
                "model": "m",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64,AAAA"},
                                "cache_control": {"type": "ephemeral"},
                            }
                        ],
                    }
                ],
            },
            {
                "messages": [
                    _user(
                        {"image": {"format": "png", "source": {"bytes": "AAAA"}}}, {"cachePoint": {"type": "default"}}
                    ),
                ]
            },
        ),
    ],
)
def test_request(req: dict[str, Any], expected: dict[str, Any]) -> None:
    out = chat_to_converse(req, CLAUDE)
    assert {k: out.get(k) for k in expected} == expected
    assert not ({"model", "stream", "stream_options", "n", "user", "seed", "tools", "tool_choice"} & out.keys())


def test_empty_tool_result_is_a_placeholder() -> None:
    req = _req(messages=[*TOOL_LOOP[:2], {"role": "tool", "tool_call_id": "c1", "content": ""}], tools=[TOOL])
    assert chat_to_converse(req, CLAUDE)["messages"][-1] == _user(
        {"toolResult": {"toolUseId": "c1", "content": [{"text": "(empty)"}]}}
    )


@pytest.mark.parametrize(
    ("req", "model", "expected"),
    [
        # Non-Claude models take temperature and topP together; whitespace stop sequences pass.
        (
            _req(temperature=0.2, top_p=0.9, stop=["\n"]),
            NOVA,
            {"temperature": 0.2, "topP": 0.9, "stopSequences": ["\n"]},
        ),
        (_req(temperature=0.2, top_p=0.9), CLAUDE, {"temperature": 0.2}),
    ],
)
def test_model_family_rules(req: dict[str, Any], model: str, expected: dict[str, Any]) -> None:
    assert chat_to_converse(req, model)["inferenceConfig"] == expected


@pytest.mark.parametrize(
    ("req", "model", "expected"),
    [
        (
            _req(reasoning_effort="medium"),
            CLAUDE,
            {
                "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 2048}},
                "inferenceConfig": {"maxTokens": 4096 + 2048},
            },
        ),
        (
            _req(reasoning_effort="high", max_completion_tokens=3000, temperature=1),
            CLAUDE,
            {
                "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 2999}},
                "inferenceConfig": {"maxTokens": 3000},
            },
        ),
        (
            _req(reasoning_effort="low", tools=[TOOL], tool_choice="auto"),
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-20250514-v1:0",
            {"additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 1024}}},
        ),
        (_req(reasoning_effort="minimal"), CLAUDE, {"additionalModelRequestFields": None, "inferenceConfig": None}),
        (
            _req(reasoning_effort="xhigh"),
            CLAUDE,
            {"additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 8192}}},
        ),
        # Opus 4.7 and later think adaptively only (a budget is their 400): adaptive thinking, and the
        # level as Converse's own outputConfig.effort; Sonnet 4.6 has no xhigh, so max.
        (
            _req(reasoning_effort="xhigh"),
            "global.anthropic.claude-opus-4-7",
            {
                "additionalModelRequestFields": {"thinking": {"type": "adaptive"}},
                "outputConfig": {"effort": "xhigh"},
                "inferenceConfig": {"maxTokens": 4096 + 8192},
            },
        ),
        (
            _req(reasoning_effort="xhigh", max_completion_tokens=500),
            "us.anthropic.claude-sonnet-4-6",
            {
                "additionalModelRequestFields": {"thinking": {"type": "adaptive"}},
                "outputConfig": {"effort": "max"},
                "inferenceConfig": {"maxTokens": 500},
            },
        ),
        # Not a Claude model: dropped.
        (_req(reasoning_effort="high"), NOVA, {"additionalModelRequestFields": None, "inferenceConfig": None}),
        (_req(reasoning_effort="max"), NOVA, {"additionalModelRequestFields": None, "inferenceConfig": None}),
        # The last assistant turn holds a tool call whose thinking block cannot be replayed.
        (
            _req(messages=TOOL_LOOP, reasoning_effort="medium", tools=[TOOL]),
            CLAUDE,
            {"additionalModelRequestFields": None},
        ),
    ],
)
def test_reasoning_effort(req: dict[str, Any], model: str, expected: dict[str, Any]) -> None:
    out = chat_to_converse(req, model)
    assert {k: out.get(k) for k in expected} == expected


def test_a_reasoning_effort_openai_does_not_define_is_a_400_on_every_model() -> None:
    """Found by review: on a model other than Claude it was dropped unread once the effort mapping
    moved (it had been a 400)."""
    for model in (CLAUDE, NOVA):
        with pytest.raises(GatewayError) as err:
            chat_to_converse(_req(reasoning_effort="bogus"), model)
        assert err.value.status == 400 and "reasoning_effort" in err.value.message


def test_a_json_schema_response_format_is_converse_structured_output() -> None:
    """Converse takes the schema as a string, under outputConfig.textFormat (Bedrock's OutputFormat);
    on every model, since Bedrock itself refuses one that cannot follow it."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}}
    for model in (CLAUDE, NOVA):
        out = chat_to_converse(_req(response_format=response_format), model)
        text_format = out["outputConfig"]["textFormat"]
        assert text_format["type"] == "json_schema"
        assert text_format["structure"]["jsonSchema"]["name"] == "place"
        assert json.loads(text_format["structure"]["jsonSchema"]["schema"]) == schema


@pytest.mark.parametrize(
    ("req", "status", "words"),
    [
        (_req(n=2), 422, "n > 1"),
        (_req(response_format={"type": "json_schema", "json_schema": {}}), 400, "json_schema.schema"),
        (_req(response_format={"type": "json_object"}), 422, "response_format"),
        (_req(logprobs=True), 422, "logprobs"),
        (_req(top_logprobs=3), 422, "logprobs"),
        (_req(logit_bias={"50256": -100}), 422, "logit_bias"),
        (_req(frequency_penalty=0.5), 422, "frequency_penalty"),
        (_req(presence_penalty=-1), 422, "presence_penalty"),
        (_req(modalities=["text", "audio"]), 422, "audio"),
        (_req(prediction={"type": "content", "content": "x"}), 422, "prediction"),
        ({"model": "m", "messages": []}, 400, "messages"),  # invalid in OpenAI's own API
        ({"model": "m", "messages": [{"role": "system", "content": "only system"}]}, 422, "no user"),
        (_req(messages=[_user({"type": "input_audio", "input_audio": {}})]), 422, "input_audio"),
        (
            _req(messages=[_user({"type": "image_url", "image_url": {"url": "https://x.test/a.png"}})]),
            422,
            "image URLs are not supported",
        ),
        (_req(messages=[_user({"type": "image_url", "image_url": {"url": "ftp://x"}})]), 422, "scheme"),
        (_req(messages=[_user({"type": "image_url", "image_url": {"url": "data:image/png,xyz"}})]), 422, "base64"),
        (
            _req(messages=[_user({"type": "image_url", "image_url": {"url": "data:image/tiff;base64,QQ=="}})]),
            422,
            "tiff",
        ),
        (
            _req(
                messages=[
                    {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{bad"}}]}
                ]
            ),
            422,
            "not valid JSON",
        ),
        (
            _req(
                messages=[
                    {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}
                ]
            ),
            422,
            "JSON object",
        ),
        (_req(messages=[{"role": "function", "content": "x"}]), 422, "role"),
        (_req(tools=[{"type": "custom", "custom": {}}]), 422, "function tools"),
        (_req(tools=[TOOL], tool_choice={"type": "allowed_tools"}), 422, "tool_choice"),
        (_req(stop=" "), 422, "whitespace"),
        (_req(reasoning_effort="low", max_completion_tokens=500), 422, "reasoning_effort"),
        (_req(reasoning_effort="low", temperature=0.2), 422, "temperature"),
        (_req(reasoning_effort="low", top_p=0.5), 422, "top_p"),
        (_req(reasoning_effort="low", tools=[TOOL], tool_choice="required"), 422, "tool_choice"),
        (_req(reasoning_effort="extreme"), 400, "reasoning_effort"),
        (_req(max_tokens=0), 400, "max_tokens"),
        (_req(max_completion_tokens="100"), 400, "max_completion_tokens"),
        (_req(temperature="hot"), 400, "temperature"),
    ],
)
def test_request_that_cannot_be_honoured_is_a_clear_error(req: dict[str, Any], status: int, words: str) -> None:
    with pytest.raises(GatewayError) as err:
        chat_to_converse(req, CLAUDE)
    assert err.value.status == status
    assert words in err.value.message
    if status == 422:
        assert isinstance(err.value, TranslationError)


@pytest.mark.parametrize(
    "req",
    [
        _req(max_tokens=5, temperature=0.5, stop=["a", "b"]),
        _req(reasoning_effort="medium", tools=[TOOL], tool_choice="auto"),
        _req(tools=[{**TOOL, "cache_control": {"type": "ephemeral"}}], tool_choice={"function": {"name": "f"}}),
        _req(messages=TOOL_LOOP),
        _req(messages=[*TOOL_LOOP[:2], {"role": "tool", "tool_call_id": "c1", "content": ""}], tool_choice="none"),
        _req(
            messages=[
                {"role": "system", "content": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,UE5H"}},
                    ],
                },
            ]
        ),
    ],
)
def test_request_matches_the_converse_input_shape(req: dict[str, Any]) -> None:
    """Checked against botocore's own bedrock-runtime service model (types, unions, required keys)."""
    assert_valid_input("Converse", {"modelId": CLAUDE, **blobs_as_bytes(chat_to_converse(req, CLAUDE))})


def _request_ctx(model: str) -> RequestContext:
    backend = config_pb2.Backend(name="b", schema=config_pb2.Schema(name="AWSBedrock"))
    return RequestContext(Endpoint.CHAT_COMPLETIONS, backend, "/v1/chat/completions", "", model, {})


@pytest.mark.parametrize(
    ("model", "stream", "path"),
    [
        ("amazon.nova-micro-v1:0", False, "/model/amazon.nova-micro-v1%3A0/converse"),
        (CLAUDE, True, "/model/us.anthropic.claude-3-7-sonnet-20250219-v1%3A0/converse-stream"),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0",
            False,
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2F"
            "us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse",
        ),
        ("my model?#", False, "/model/my%20model%3F%23/converse"),
    ],
)
def test_translate_request_path(model: str, stream: bool, path: str) -> None:
    tr = translate_request(_request_ctx(model), json.dumps(_req(stream=stream)).encode())
    assert tr.path == path
    assert tr.path.count("/") == 3  # the model id is one path segment
    body = json.loads(tr.body or b"")
    assert "model" not in body and "stream" not in body
    assert body["messages"] == [_user({"text": "hi"})]


def test_translate_request_without_model_is_400() -> None:
    with pytest.raises(GatewayError) as err:
        translate_request(_request_ctx(""), json.dumps(_req()).encode())
    assert err.value.status == 400


def test_registry() -> None:
    pair = get_pair(Endpoint.CHAT_COMPLETIONS, "AWSBedrock")
    assert pair is not None and pair.request is translate_request
    assert pair.response_translator(_ctx()).__class__ is BedrockToOpenAIResponse
    assert pair.response_translator(_ctx(stream=True)).__class__ is BedrockToOpenAIStream
    # Other endpoints of the same schema are other modules' (bedrock_embeddings, anthropic_bedrock).
    for endpoint in (Endpoint.EMBEDDINGS, Endpoint.MESSAGES, Endpoint.COUNT_TOKENS):
        other = get_pair(endpoint, "AWSBedrock")
        assert other is not None and other.request is not translate_request
    assert get_pair(Endpoint.RESPONSES, "AWSBedrock") is None


# ----------------------------------------------------------------------------- response


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("malformed_tool_use", "stop"),
        ("something_new", "stop"),
        (None, None),
    ],
)
def test_finish_reason(stop: str | None, finish: str | None) -> None:
    assert finish_reason(stop) == finish


def _ctx(stream: bool = False, include_usage: bool = False) -> ResponseContext:
    return ResponseContext(Endpoint.CHAT_COMPLETIONS, ClientSchema.OPENAI, "m", CLAUDE, stream, include_usage)


USAGE = {"inputTokens": 5, "outputTokens": 9, "totalTokens": 14, "cacheReadInputTokens": 3, "cacheWriteInputTokens": 2}


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"inputTokens": 5, "outputTokens": 9, "totalTokens": 14}, TokenUsage(5, 0, 0, 9, 0, 14, True)),
        (USAGE, TokenUsage(10, 3, 2, 9, 0, 19, True)),
        ({}, TokenUsage()),
        (None, TokenUsage()),
    ],
)
def test_from_bedrock(usage: Any, expected: TokenUsage) -> None:
    assert from_bedrock(usage) == expected


def test_response_body() -> None:
    resp = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s"}}},
                    {"reasoningContent": {"redactedContent": "AAAA"}},
                    {"text": "a"},
                    {"text": "b"},
                    {"toolUse": {"toolUseId": "t1", "name": "f", "input": {"x": [1]}}},
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": USAGE,
        "metrics": {"latencyMs": 100},
    }
    tr = BedrockToOpenAIResponse(_ctx())
    out = json.loads(tr.body(json.dumps(resp).encode()) or b"")
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    assert out["model"] == CLAUDE
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": "ab",
        "reasoning_content": "hmm",
        "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"x":[1]}'}}],
    }
    assert out["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 9,
        "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 2},
    }
    assert (tr.usage, tr.response_model) == (TokenUsage(10, 3, 2, 9, 0, 19, True), CLAUDE)


@pytest.mark.parametrize(
    ("stop", "finish"),
    [("end_turn", "stop"), ("max_tokens", "length"), ("guardrail_intervened", "content_filter"), ("new", "stop")],
)
def test_response_text_and_stop_reasons(stop: str, finish: str) -> None:
    resp = {"output": {"message": {"role": "assistant", "content": [{"text": "hello"}]}}, "stopReason": stop}
    tr = BedrockToOpenAIResponse(_ctx())
    out = json.loads(tr.body(json.dumps(resp).encode()) or b"")
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "hello"}
    assert out["choices"][0]["finish_reason"] == finish
    assert not tr.usage.known  # no usage reported: none invented


def test_untranslatable_success_body_raises() -> None:
    with pytest.raises(ValueError):
        BedrockToOpenAIResponse(_ctx()).body(b"[1, 2]")


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, b'{"message":"Too many requests, please wait before trying again."}', ("rate_limit_error", None)),
        (400, b'{"message":"Malformed input request"}', ("invalid_request_error", None)),
        (403, b'{"Message":"User is not authorized"}', ("permission_error", None)),
        (401, b'{"message":"The security token included in the request is invalid."}', ("authentication_error", None)),
        (404, b'{"message":"The provided model identifier is invalid."}', ("not_found_error", None)),
        (500, b'{"message":"boom"}', ("server_error", None)),
        (424, b'{"message":"model failed","originalStatusCode":500}', ("server_error", None)),
        (
            503,
            b'{"message":"unavailable","__type":"com.amazon#ServiceUnavailableException"}',
            ("server_error", "ServiceUnavailableException"),
        ),
    ],
)
def test_error_body_is_openai_shaped(status: int, body: bytes, expected: tuple[str, str | None]) -> None:
    out = json.loads(BedrockToOpenAIResponse(_ctx()).error(status, body))
    message = json.loads(body).get("message") or json.loads(body).get("Message")
    assert out == {"error": {"message": message, "type": expected[0], "param": None, "code": expected[1]}}
    assert json.loads(BedrockToOpenAIStream(_ctx(stream=True)).error(status, body)) == out


def test_error_body_not_json() -> None:
    out = json.loads(BedrockToOpenAIResponse(_ctx()).error(502, b"<html>bad gateway</html>"))
    assert out["error"]["type"] == "server_error" and "bad gateway" in out["error"]["message"]


# ----------------------------------------------------------------------------- stream


def _event(kind: str, **obj: Any) -> bytes:
    # Bedrock pads payloads with a "p" field.
    payload = json.dumps({**obj, "p": "abcdefgh"}).encode()
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return aws_frame(headers, payload)


STREAM_BODY = [
    _event("messageStart", role="assistant"),
    _event("contentBlockDelta", contentBlockIndex=0, delta={"reasoningContent": {"text": "hm"}}),
    _event("contentBlockDelta", contentBlockIndex=0, delta={"reasoningContent": {"signature": "sig"}}),
    _event("contentBlockStop", contentBlockIndex=0),
    _event("contentBlockDelta", contentBlockIndex=1, delta={"text": "Hé"}),
    _event("contentBlockDelta", contentBlockIndex=1, delta={"text": "llo"}),
    _event("contentBlockStop", contentBlockIndex=1),
    _event("contentBlockStart", contentBlockIndex=2, start={"toolUse": {"toolUseId": "t1", "name": "f"}}),
    _event("contentBlockDelta", contentBlockIndex=2, delta={"toolUse": {"input": '{"ci'}}),
    _event("contentBlockDelta", contentBlockIndex=2, delta={"toolUse": {"input": 'ty": "P"}'}}),
    _event("contentBlockStop", contentBlockIndex=2),
    _event("contentBlockStart", contentBlockIndex=3, start={"toolUse": {"toolUseId": "t2", "name": "g"}}),
    # A tool without parameters, no input delta: the call's arguments are "{}", as OpenAI gives them.
    _event("contentBlockStop", contentBlockIndex=3),
    _event("someFutureEvent", foo=1),
    _event("messageStop", stopReason="tool_use"),
]
METADATA = _event("metadata", usage=USAGE, metrics={"latencyMs": 120})
STREAM = b"".join([*STREAM_BODY, METADATA])


def _collect(out: bytes) -> dict[str, Any]:
    evs = events(out)
    assert evs[-1] == (None, "[DONE]")
    chunks = [d for _, d in evs[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"])
    calls: dict[int, dict[str, str]] = {}
    for c in chunks:
        for choice in c["choices"]:
            for tc in choice["delta"].get("tool_calls") or []:
                entry = calls.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
                entry["id"] += tc.get("id", "")
                entry["name"] += (tc.get("function") or {}).get("name", "")
                entry["arguments"] += (tc.get("function") or {}).get("arguments", "")
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    usage = [c["usage"] for c in chunks if c.get("usage")]
    return {
        "text": text,
        "reasoning": reasoning,
        "calls": calls,
        "finishes": finishes,
        "usage": usage,
        "chunks": chunks,
    }


def _normalised(out: bytes) -> list[Any]:
    """The events without the per-response id and timestamp."""
    return [
        {k: v for k, v in d.items() if k not in ("id", "created")} if isinstance(d, dict) else d for _, d in events(out)
    ]


def _random_chunkings(data: bytes, count: int) -> list[list[bytes]]:
    return random_chunkings(data, count, 1234, (1, 40))


WHOLE = run(BedrockToOpenAIStream(_ctx(stream=True, include_usage=True)), [STREAM])


@pytest.mark.parametrize("chunks", [*splits(STREAM, 53), *_random_chunkings(STREAM, 30)])
def test_stream_any_chunking(chunks: list[bytes]) -> None:
    tr = BedrockToOpenAIStream(_ctx(stream=True, include_usage=True))
    out = run(tr, chunks)
    assert _normalised(out) == _normalised(WHOLE)
    got = _collect(out)
    assert got["text"] == "Héllo"
    assert got["reasoning"] == "hm"
    assert got["calls"] == {
        0: {"id": "t1", "name": "f", "arguments": '{"city": "P"}'},
        1: {"id": "t2", "name": "g", "arguments": "{}"},
    }
    assert got["finishes"] == ["tool_calls"]
    assert got["usage"] == [
        {
            "prompt_tokens": 10,
            "completion_tokens": 9,
            "total_tokens": 19,
            "prompt_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 2},
        }
    ]
    assert got["chunks"][-1]["choices"] == []  # the usage chunk comes last, after the finish chunk
    assert got["chunks"][0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    ids = {c["id"] for c in got["chunks"]}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == CLAUDE for c in got["chunks"])
    assert (tr.usage, tr.response_model) == (TokenUsage(10, 3, 2, 9, 0, 19, True), CLAUDE)


def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    tr = BedrockToOpenAIStream(_ctx(stream=True, include_usage=False))
    got = _collect(run(tr, [STREAM]))
    assert got["usage"] == []
    assert tr.usage == TokenUsage(10, 3, 2, 9, 0, 19, True)


def test_usage_is_known_as_soon_as_metadata_arrives_and_done_follows_it() -> None:
    tr = BedrockToOpenAIStream(_ctx(stream=True, include_usage=True))
    before = tr.feed(b"".join(STREAM_BODY))
    assert b"[DONE]" not in before and b'"finish_reason":"tool_calls"' in before
    assert not tr.usage.known  # messageStop carries no usage
    after = tr.feed(METADATA)
    assert tr.usage.known and tr.usage.total_tokens == 19
    assert [d for _, d in events(after)][-1] == "[DONE]"
    assert tr.finish() == b""
    assert tr.feed(_event("contentBlockDelta", contentBlockIndex=9, delta={"text": "late"})) == b""


def test_first_event_is_not_delayed() -> None:
    tr = BedrockToOpenAIStream(_ctx(stream=True))
    assert events(tr.feed(STREAM_BODY[0]))[0][1]["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def _client_stream(out: bytes) -> ClientStream:
    cs = ClientStream(Endpoint.CHAT_COMPLETIONS, ClientSchema.OPENAI)
    cs.sent(out)
    return cs


@pytest.mark.parametrize("cut", [len(STREAM_BODY) - 1, 3, 1])
def test_stream_dying_before_message_stop_is_not_complete(cut: int) -> None:
    """No fake end: the router phase sees an incomplete stream and adds its own error event."""
    data = b"".join(STREAM_BODY[:cut])
    for chunks in ([data], [data + METADATA[:20]]):
        tr = BedrockToOpenAIStream(_ctx(stream=True, include_usage=True))
        out = run(tr, chunks)
        assert b"[DONE]" not in out and b'"error"' not in out
        assert not _client_stream(out).complete
        assert not tr.usage.known


CUT_AFTER_MESSAGE_STOP = b"".join(STREAM_BODY)


@pytest.mark.parametrize(
    "chunks",
    [
        *splits(CUT_AFTER_MESSAGE_STOP, 53)[:6],
        *_random_chunkings(CUT_AFTER_MESSAGE_STOP, 6),
        [CUT_AFTER_MESSAGE_STOP, METADATA[:30]],  # metadata's frame cut short
    ],
)
def test_stream_ending_after_message_stop_without_metadata_is_incomplete(chunks: list[bytes]) -> None:
    """Bedrock always sends metadata (the usage) after messageStop: a stream without it was cut.
    The finish reason went out, but no [DONE] and no usage chunk: the router phase adds its error
    event and charges its estimate."""
    tr = BedrockToOpenAIStream(_ctx(stream=True, include_usage=True))
    out = run(tr, chunks)
    evs = events(out)
    finishes = [ch["finish_reason"] for _, c in evs for ch in c["choices"] if ch["finish_reason"]]
    assert finishes == ["tool_calls"] and not any(c.get("usage") for _, c in evs)
    assert b"[DONE]" not in out and b'"error"' not in out
    assert not _client_stream(out).complete
    assert not tr.usage.known


def test_metadata_before_message_stop() -> None:
    data = b"".join([*STREAM_BODY[:-1], METADATA, STREAM_BODY[-1]])
    tr = BedrockToOpenAIStream(_ctx(stream=True, include_usage=True))
    got = _collect(run(tr, [data]))
    assert got["finishes"] == ["tool_calls"] and len(got["usage"]) == 1
    assert tr.usage.known


@pytest.mark.parametrize(
    ("kind", "status_type"),
    [
        ("throttlingException", "rate_limit_error"),
        ("modelStreamErrorException", "server_error"),
        ("validationException", "invalid_request_error"),
        ("internalServerException", "server_error"),
        ("somethingNewException", "server_error"),
    ],
)
def test_stream_exception_frame(kind: str, status_type: str) -> None:
    data = b"".join(STREAM_BODY[:5]) + aws_exception(kind, "it broke") + b"".join(STREAM_BODY[5:]) + METADATA
    for chunks in splits(data, 97)[:3]:
        tr = BedrockToOpenAIStream(_ctx(stream=True, include_usage=True))
        out = run(tr, chunks)
        evs = events(out)
        assert evs[-1][1] == {"error": {"message": "it broke", "type": status_type, "param": None, "code": kind}}
        assert b"[DONE]" not in out and b"llo" not in out  # nothing after the error
        assert _client_stream(out).complete
        assert not tr.usage.known


def test_stream_unmodeled_error_frame() -> None:
    frame = aws_frame({":message-type": "error", ":error-code": "InternalFailure", ":error-message": "oops"}, b"")
    tr = BedrockToOpenAIStream(_ctx(stream=True))
    evs = events(run(tr, [STREAM_BODY[0], frame]))
    assert evs[-1][1] == {
        "error": {"message": "oops", "type": "server_error", "param": None, "code": "InternalFailure"}
    }


def _corrupt(frame: bytes, at: int) -> bytes:
    return frame[:at] + bytes([frame[at] ^ 0xFF]) + frame[at + 1 :]


@pytest.mark.parametrize(
    "position",
    [
        2,  # total length: the prelude CRC no longer matches
        9,  # the prelude CRC itself
        20,  # a header byte: the message CRC no longer matches
        -10,  # the payload
        -1,  # the message CRC
    ],
)
def test_corrupted_frame_is_an_error_event(position: int) -> None:
    bad = _corrupt(STREAM_BODY[4], position % len(STREAM_BODY[4]))
    data = b"".join(STREAM_BODY[:4]) + bad + b"".join(STREAM_BODY[5:]) + METADATA
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        tr = BedrockToOpenAIStream(_ctx(stream=True, include_usage=True))
        out = run(tr, chunks)
        evs = events(out)
        assert evs[-1][1]["error"]["type"] == "server_error"
        assert "could not be parsed" in evs[-1][1]["error"]["message"]
        assert b"[DONE]" not in out and b"H\\u00e9" not in out and "Hé".encode() not in out
        assert _client_stream(out).complete
        assert not tr.usage.known


def test_event_of_an_unexpected_shape_is_dropped() -> None:
    odd = [
        _event("contentBlockDelta", contentBlockIndex=1, delta="nope"),
        aws_frame({":message-type": "event", ":event-type": "contentBlockDelta"}, b"not json"),
        _event("contentBlockDelta", contentBlockIndex=7, delta={"toolUse": {"input": "{}"}}),  # no start
        _event("contentBlockStart", contentBlockIndex=8, start={"text": {}}),
    ]
    data = STREAM_BODY[0] + b"".join(odd) + b"".join(STREAM_BODY[1:]) + METADATA
    got = _collect(run(BedrockToOpenAIStream(_ctx(stream=True, include_usage=True)), [data]))
    assert got["text"] == "Héllo" and len(got["calls"]) == 2


# ----------------------------------------------------------------------------- through the router phase

BEDROCK = "ns/bedrock/route/r/rule/0/ref/0"
CHAT = {":method": "POST", ":path": "/v1/chat/completions", ":authority": "gw", "content-type": "application/json"}


def _router_config() -> config_pb2.TranslatorConfig:
    cfg = config_pb2.TranslatorConfig(name="ns/gw")
    cfg.backends.add(
        name=BEDROCK, service_backend="ns/bedrock", route_name="ns/r", schema=config_pb2.Schema(name="AWSBedrock")
    )
    cfg.global_costs.add(metadata_key="total", type=config_pb2.LLMRequestCost.TOTAL_TOKEN)
    return cfg


async def _drive_stream(stream: bytes, cut: int) -> list[Any]:
    return await drive(
        ExternalProcessor(_router_config()),
        [
            request_headers(CHAT),
            request_body({"model": CLAUDE, "messages": [], "stream": True, "stream_options": {"include_usage": True}}),
            response_headers({":status": "200", "content-type": "application/vnd.amazon.eventstream"}, BEDROCK),
            response_body(stream[:cut], end_of_stream=False),
            response_body(stream[cut:], end_of_stream=True),
        ],
    )


async def test_router_phase_streams_the_event_stream_as_sse() -> None:
    out = await _drive_stream(STREAM, 100)
    mutation = out[2].response_headers.response.header_mutation
    assert set_headers(mutation)["content-type"] == "text/event-stream"
    sent = b"".join(r.response_body.response.body_mutation.body for r in out[3:])
    assert _normalised(sent) == _normalised(WHOLE)
    assert metadata(out[4])["total"] == 19.0 and metadata(out[4])["usage_estimated"] is False


@pytest.mark.parametrize("data", [b"".join(STREAM_BODY[:5]), CUT_AFTER_MESSAGE_STOP])
async def test_router_phase_ends_a_cut_stream_with_an_error(data: bytes) -> None:
    out = await _drive_stream(data, 50)
    sent = b"".join(r.response_body.response.body_mutation.body for r in out[3:])
    last = events(sent)[-1][1]
    assert b"[DONE]" not in sent and "before the response was complete" in last["error"]["message"]
    assert metadata(out[4])["usage_estimated"] is True and metadata(out[4])["total"] > 0


@pytest.mark.parametrize(
    ("title", "name"),
    [
        ("report.2025.pdf", "report 2025 pdf 1"),
        ("a" * 79 + " tail", "a" * 79 + " 1"),  # cut after the space: never two in a row
        ("../../etc/passwd", "etc passwd 1"),
        ("", "document 1"),
    ],
)
def test_a_document_name_is_one_converse_takes(title: str, name: str) -> None:
    """Found by review: a title cut at 80 characters just after a space gave "…  1", which Converse
    refuses (no two whitespace characters in a row)."""
    from aigw_fakes.bedrock import DOCUMENT_NAME
    from aigw_translator.translators.openai_bedrock import converse_document

    block = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERg=="}}
    made = converse_document({**block, "title": title}, 1)["document"]["name"]
    assert made == name and DOCUMENT_NAME.fullmatch(made) and "  " not in made


@pytest.mark.parametrize(
    ("name", "message", "whose"),
    [
        ("UnrecognizedClientException", "The security token included in the request is invalid.", True),
        # Not a credential refused: the account may not use the model (not enabled, IAM, caching).
        ("AccessDeniedException", "You don't have access to the model with the specified model ID.", False),
    ],
)
async def test_aws_refusing_the_gateways_credentials_is_said_whose(name: str, message: str, whose: bool) -> None:
    """AWS answers an unknown or expired key and a bad signature with a 403 (no 401), which the
    client got as the provider's words alone, as if its own key were wrong: it now says the
    gateway's credential was rejected, as a 401 from another provider does (found by review); a 403
    that refuses the model, not the key, stays the provider's words."""
    cfg = _router_config()
    cfg.backends[0].auth.aws_credentials.region = "us-east-1"
    out = await drive(
        ExternalProcessor(cfg),
        [
            request_headers(CHAT),
            request_body({"model": CLAUDE, "messages": [{"role": "user", "content": "hi"}]}),
            response_headers(
                {
                    ":status": "403",
                    "content-type": "application/json",
                    "x-amzn-errortype": f"{name}:http://internal.amazon.com/coral/com.amazon.coral.service/",
                },
                BEDROCK,
            ),
            response_body(json.dumps({"message": message}).encode()),
        ],
    )
    error = json.loads(out[3].response_body.response.body_mutation.body)["error"]
    assert error["type"] == ("authentication_error" if whose else "permission_error")
    prefix = "the provider rejected the gateway's credential for this backend (status 403): "
    assert error["message"] == (prefix if whose else "") + message
