from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from aigw.translator.v1 import config_pb2
from aigw_translator.endpoints import ClientSchema, Endpoint
from aigw_translator.errors import GatewayError, client_status
from aigw_translator.translators import InvalidRequest, RequestContext, ResponseContext, TranslationError, get_pair
from aigw_translator.translators.anthropic_openai import (
    OpenAIToAnthropicResponse,
    OpenAIToAnthropicStream,
    messages_to_chat,
    stop_reason,
    translate_request,
    translate_request_azure,
)
from aigw_translator.translators.capabilities import azure_version_is_modern, opaque_user_id

from .streams import events, run, splits


def _req(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **kw}


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        (
            _req(),
            {
                "model": "gpt",
                "messages": [{"role": "user", "content": "hi"}],
                "max_completion_tokens": 100,
                "max_tokens": None,
            },
        ),
        (
            _req(system="be brief"),
            {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
        ),
        (
            _req(
                system=[
                    {"type": "text", "text": "a"},
                    {"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}},
                ]
            ),
            {"messages": [{"role": "system", "content": "a\nb"}, {"role": "user", "content": "hi"}]},
        ),
        (
            _req(stop_sequences=["X"], temperature=0.2, top_p=0.9),
            {"stop": ["X"], "temperature": 0.2, "top_p": 0.9},
        ),
        (_req(metadata={"user_id": "u"}), {"user": opaque_user_id("u", b"")}),
        (_req(stream=True), {"stream": True, "stream_options": {"include_usage": True}}),
        (
            _req(
                tools=[{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
                tool_choice={"type": "any"},
            ),
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"type": "object"}, "description": "d"},
                    }
                ],
                "tool_choice": "required",
            },
        ),
        (
            _req(
                tools=[{"name": "f", "input_schema": {"type": "object"}}],
                tool_choice={"type": "tool", "name": "f", "disable_parallel_tool_use": True},
            ),
            {"tool_choice": {"type": "function", "function": {"name": "f"}}, "parallel_tool_calls": False},
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "q"}]},
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "thinking", "thinking": "...", "signature": "s"},
                            {"type": "text", "text": "calling"},
                            {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                        ],
                    },
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "42"}]},
                            {"type": "tool_result", "tool_use_id": "t2", "content": "boom", "is_error": True},
                            {"type": "text", "text": "go on"},
                            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QQ=="}},
                        ],
                    },
                ],
            },
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {
                        "role": "assistant",
                        "content": "calling",
                        "tool_calls": [
                            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
                        ],
                    },
                    {"role": "tool", "tool_call_id": "t1", "content": "42"},
                    {"role": "tool", "tool_call_id": "t2", "content": "Error: boom"},
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "go on"},
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,QQ=="}},
                        ],
                    },
                ]
            },
        ),
    ],
)
def test_request(req: dict[str, Any], expected: dict[str, Any]) -> None:
    out = messages_to_chat(req, "gpt")
    assert {k: out.get(k) for k in expected} == expected


@pytest.mark.parametrize(
    "req",
    [
        _req(messages=[{"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "x"}}]}]),
        _req(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "document"}]}],
                }
            ]
        ),
        _req(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
        _req(output_config={"format": {"type": "text"}}),
        _req(output_config={"verbosity": "low"}),
    ],
)
def test_untranslatable(req: dict[str, Any]) -> None:
    with pytest.raises(TranslationError):
        messages_to_chat(req, "gpt")


@pytest.mark.parametrize("messages", [[], [{"role": "system", "content": "x"}]])
def test_a_request_invalid_in_anthropics_api_is_a_400(messages: list[Any]) -> None:
    with pytest.raises(InvalidRequest):
        messages_to_chat(_req(messages=messages), "gpt")


def test_translate_request_path() -> None:
    backend = config_pb2.Backend(name="b", schema=config_pb2.Schema(name="OpenAI", prefix="openai/v1"))
    ctx = RequestContext(Endpoint.MESSAGES, backend, "/anthropic/v1/messages", "", "gpt", {})
    tr = translate_request(ctx, json.dumps(_req()).encode())
    assert tr.path == "/openai/v1/chat/completions"
    assert "anthropic-version" in tr.remove_headers


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        ("x", "end_turn"),
    ],
)
def test_stop_reason(finish: str, stop: str) -> None:
    assert stop_reason(finish) == stop


def _ctx(stream: bool = False) -> ResponseContext:
    return ResponseContext(Endpoint.MESSAGES, ClientSchema.ANTHROPIC, "m", "gpt", stream)


def test_response_body() -> None:
    resp = {
        "id": "chatcmpl-1",
        "model": "gpt-x",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "hi",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 4,
            "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 6},
        },
    }
    tr = OpenAIToAnthropicResponse(_ctx())
    out = json.loads(tr.body(json.dumps(resp).encode()))
    assert out == {
        "id": "chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "model": "gpt-x",
        "content": [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 4,
            "output_tokens": 4,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 6,
        },
    }
    assert tr.usage.input_tokens == 10 and tr.usage.cached_input_tokens == 6


def test_error_is_anthropic_shaped() -> None:
    tr = OpenAIToAnthropicResponse(_ctx())
    out = json.loads(tr.error(401, b'{"error":{"message":"bad key","type":"invalid_request_error"}}'))
    assert out == {"type": "error", "error": {"type": "authentication_error", "message": "bad key"}}


def _chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
    obj = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-x", **extra}
    obj["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


OPENAI_STREAM = b"".join(
    [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hel"}),
        _chunk({"content": "lo"}),
        _chunk(
            {"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]}
        ),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
        _chunk(
            {"tool_calls": [{"index": 1, "id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}
        ),
        _chunk({}, "tool_calls"),
        _chunk(None, usage={"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}),
        b"data: [DONE]\n\n",
    ]
)


@pytest.mark.parametrize("chunks", splits(OPENAI_STREAM, 41))
def test_stream_any_chunking(chunks: list[bytes]) -> None:
    tr = OpenAIToAnthropicStream(_ctx(stream=True))
    evs = events(run(tr, chunks))
    kinds = [k for k, _ in evs]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(d["type"] == k for k, d in evs)
    assert evs[0][1]["message"]["model"] == "gpt-x"
    assert evs[5][1] == {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "c1", "name": "f", "input": {}},
    }
    args = "".join(
        d["delta"]["partial_json"]
        for _, d in evs
        if d.get("delta", {}).get("type") == "input_json_delta" and d["index"] == 1
    )
    assert json.loads(args) == {"a": 1}
    assert evs[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert evs[-2][1]["usage"]["output_tokens"] == 3
    assert evs[-2][1]["usage"]["input_tokens"] == 9
    assert tr.usage.total_tokens == 12


def test_stream_cut_before_finish_does_not_invent_an_end() -> None:
    cut = OPENAI_STREAM.index(
        b'data: {"id": "c", "object": "chat.completion.chunk", "model": "gpt-x", "choices": [{"index": 0, "delta": {}'
    )
    tr = OpenAIToAnthropicStream(_ctx(stream=True))
    kinds = [k for k, _ in events(run(tr, [OPENAI_STREAM[:cut]]))]
    assert "message_stop" not in kinds
    assert not tr.usage.known


def test_stream_error_chunk() -> None:
    data = (
        _chunk({"role": "assistant", "content": ""})
        + b'data: {"error": {"message": "boom", "type": "server_error"}}\n\n'
    )
    evs = events(run(OpenAIToAnthropicStream(_ctx(stream=True)), [data]))
    assert evs[-1] == ("error", {"type": "error", "error": {"type": "api_error", "message": "boom"}})


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_becomes_thinking(field: str) -> None:
    """`reasoning_content` (DeepSeek's, vLLM's before), and `reasoning`: vLLM's name since it
    dropped the other, OpenRouter's, Ollama's, Groq's (a provider-API review: it was lost)."""
    resp = {"choices": [{"message": {field: "why", "content": "A"}, "finish_reason": "stop"}]}
    out = json.loads(OpenAIToAnthropicResponse(_ctx()).body(json.dumps(resp).encode()))
    assert out["content"] == [{"type": "thinking", "thinking": "why", "signature": ""}, {"type": "text", "text": "A"}]
    data = (
        _chunk({"role": "assistant", field: "wh"})
        + _chunk({field: "y"})
        + _chunk({"content": "A"})
        + _chunk({}, "stop")
        + b"data: [DONE]\n\n"
    )
    evs = events(run(OpenAIToAnthropicStream(_ctx(stream=True)), [data]))
    starts = [d["content_block"]["type"] for k, d in evs if k == "content_block_start"]
    assert starts == ["thinking", "text"]
    thinking = "".join(d["delta"]["thinking"] for k, d in evs if k == "content_block_delta" and d["index"] == 0)
    assert thinking == "why"


def test_claude_code_style_user_turn() -> None:
    """Tool results with screenshots, several text blocks, and a PDF document."""
    req = _req(
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [
                            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QQ=="}}
                        ],
                    },
                    {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "ok"}]},
                    {
                        "type": "tool_result",
                        "tool_use_id": "t3",
                        "is_error": True,
                        "content": [
                            {"type": "text", "text": "page 2 unreadable"},
                            {  # a PDF Claude Code's Read tool returns (was a 422: found by review)
                                "type": "document",
                                "source": {"type": "base64", "media_type": "application/pdf", "data": "UERH"},
                            },
                        ],
                    },
                    {"type": "text", "text": "<system-reminder>x</system-reminder>"},
                    {"type": "text", "text": "continue", "cache_control": {"type": "ephemeral"}},
                    {
                        "type": "document",
                        "title": "spec.pdf",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": "UERG"},
                    },
                ],
            }
        ]
    )
    out = messages_to_chat(req, "gpt")["messages"]
    assert out[0] == {
        "role": "tool",
        "tool_call_id": "t1",
        "content": "(the tool returned files; they follow in the next message)",
    }
    assert out[1] == {"role": "tool", "tool_call_id": "t2", "content": "ok"}
    assert out[2] == {"role": "tool", "tool_call_id": "t3", "content": "Error: page 2 unreadable"}
    assert out[3]["role"] == "user"
    assert out[3]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,QQ=="}},
        {"type": "file", "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,UERH"}},
        {"type": "text", "text": "<system-reminder>x</system-reminder>"},
        {"type": "text", "text": "continue"},
        {"type": "file", "file": {"filename": "spec.pdf", "file_data": "data:application/pdf;base64,UERG"}},
    ]
    text_doc = _req(
        messages=[
            {
                "role": "user",
                "content": [{"type": "document", "title": "t", "source": {"type": "text", "data": "body"}}],
            }
        ]
    )
    assert messages_to_chat(text_doc, "gpt")["messages"] == [{"role": "user", "content": "t\nbody"}]


def test_azure_deployment_path_drops_client_query() -> None:
    backend = config_pb2.Backend(name="b", schema=config_pb2.Schema(name="AzureOpenAI", version="2024-10-21"))
    ctx = RequestContext(Endpoint.MESSAGES, backend, "/anthropic/v1/messages", "?beta=true", "dep", {})
    tr = translate_request_azure(ctx, json.dumps(_req()).encode())
    assert tr.path == "/openai/deployments/dep/chat/completions?api-version=2024-10-21"
    assert json.loads(tr.body)["model"] == "dep"


# ----------------------------------------------------------------------------- provider rejections


@pytest.mark.parametrize(
    ("version", "modern"),
    [
        ("2024-10-21", True),
        ("2024-09-01-preview", True),
        ("2025-04-01-preview", True),
        ("preview", True),
        ("", True),
        ("2024-06-01", False),
        ("2024-08-01-preview", False),
        ("2024-05-01-preview", False),
        ("2023-05-15", False),
    ],
)
def test_azure_versions_that_take_stream_options(version: str, modern: bool) -> None:
    assert azure_version_is_modern(version) is modern


@pytest.mark.parametrize(
    ("schema", "expected", "absent"),
    [
        # o-series and gpt-5 reject max_tokens: every modern backend gets max_completion_tokens.
        (
            config_pb2.Schema(name="OpenAI", prefix="v1"),
            {"max_completion_tokens": 100, "stream_options": {"include_usage": True}},
            "max_tokens",
        ),
        (
            config_pb2.Schema(name="AzureOpenAI", version="2024-10-21"),
            {"max_completion_tokens": 100, "stream_options": {"include_usage": True}},
            "max_tokens",
        ),
        # Classic Azure before 2024-09-01 knows neither max_completion_tokens nor stream_options.
        (config_pb2.Schema(name="AzureOpenAI", version="2024-06-01"), {"max_tokens": 100}, "stream_options"),
    ],
)
def test_token_limit_and_usage_option_follow_the_backend(
    schema: config_pb2.Schema, expected: dict[str, Any], absent: str
) -> None:
    backend = config_pb2.Backend(name="b", schema=schema)
    ctx = RequestContext(Endpoint.MESSAGES, backend, "/anthropic/v1/messages", "", "gpt-5", {})
    fn = translate_request_azure if schema.name == "AzureOpenAI" else translate_request
    out = json.loads(fn(ctx, json.dumps(_req(stream=True)).encode()).body)
    assert {k: out.get(k) for k in expected} == expected
    assert absent not in out


@pytest.mark.parametrize(("modern", "sent"), [(True, {"parallel_tool_calls": False}), (False, {})])
def test_disable_parallel_tool_use_reaches_only_backends_that_take_it(modern: bool, sent: dict) -> None:
    """Azure api-versions before 2024-09-01 refuse parallel_tool_calls ("Unrecognized request
    argument supplied")."""
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    choice = {"type": "auto", "disable_parallel_tool_use": True}
    out = messages_to_chat(_req(tools=tools, tool_choice=choice), "gpt", modern=modern)
    assert {k: v for k, v in out.items() if k == "parallel_tool_calls"} == sent


def test_user_id_is_forwarded_opaque_and_short() -> None:
    claude_code_id = "user_" + "a" * 64 + "_account_" + "b" * 36 + "_session_" + "c" * 36
    for user in (claude_code_id, "someone@example.com"):
        out = messages_to_chat(_req(metadata={"user_id": user}), "gpt")
        assert out["user"] == opaque_user_id(user, b"")
        assert len(out["user"]) <= 64 and "@" not in out["user"] and user not in out["user"]
    assert opaque_user_id("x", b"k") == opaque_user_id("x", b"k") != opaque_user_id("y", b"k")


def test_user_id_is_keyed_with_the_fleet_key() -> None:
    backend = config_pb2.Backend(name="b", schema=config_pb2.Schema(name="OpenAI", prefix="v1"))
    body = json.dumps(_req(metadata={"user_id": "someone@example.com"})).encode()

    def sent(key: bytes) -> str:
        ctx = RequestContext(Endpoint.MESSAGES, backend, "/anthropic/v1/messages", "", "gpt", {}, key)
        return json.loads(translate_request(ctx, body).body)["user"]

    assert sent(b"fleet-a") == sent(b"fleet-a") != sent(b"fleet-b")
    assert sent(b"fleet-a") != "aigw-" + hashlib.sha256(b"someone@example.com").hexdigest()[:32]
    assert sent(b"fleet-a").startswith("aigw-") and len(sent(b"fleet-a")) == len("aigw-") + 32


@pytest.mark.parametrize(
    ("version", "query", "sent", "expected", "absent"),
    [
        ("", "", "2024-10-21", {"max_completion_tokens": 100, "stream_options": {"include_usage": True}}, "max_tokens"),
        ("", "?beta=true&api-version=2024-06-01", "2024-06-01", {"max_tokens": 100}, "stream_options"),
        ("2024-06-01", "?api-version=2025-04-01-preview", "2024-06-01", {"max_tokens": 100}, "stream_options"),
    ],
)
def test_azure_api_version_is_always_sent_and_decides_the_body(
    version: str, query: str, sent: str, expected: dict[str, Any], absent: str
) -> None:
    """Backend's api-version, else the client's, else the documented default: never none at all."""
    backend = config_pb2.Backend(name="b", schema=config_pb2.Schema(name="AzureOpenAI", version=version))
    ctx = RequestContext(Endpoint.MESSAGES, backend, "/anthropic/v1/messages", query, "dep", {})
    tr = translate_request_azure(ctx, json.dumps(_req(stream=True)).encode())
    assert tr.path == f"/openai/deployments/dep/chat/completions?api-version={sent}"
    out = json.loads(tr.body)
    assert {k: out.get(k) for k in expected} == expected
    assert absent not in out


def test_finish_stop_with_tool_calls_is_tool_use() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    resp = {"model": "gemini", "choices": [{"message": {"tool_calls": [call]}, "finish_reason": "stop"}]}
    out = json.loads(OpenAIToAnthropicResponse(_ctx()).body(json.dumps(resp).encode()))
    assert out["stop_reason"] == "tool_use"
    stream = b"".join(
        [
            _chunk({"tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
            _chunk({}, "stop"),
            b"data: [DONE]\n\n",
        ]
    )
    evs = events(run(OpenAIToAnthropicStream(_ctx(stream=True)), [stream]))
    assert evs[-2][1]["delta"]["stop_reason"] == "tool_use"


def _tool_uses(evs: list[tuple[str | None, Any]]) -> list[tuple[str, str, Any]]:
    """(id, name, input) of each tool_use block, checking the blocks are strictly sequential."""
    blocks: dict[int, dict[str, Any]] = {}
    open_index = None
    for kind, data in evs:
        if kind == "content_block_start":
            assert open_index is None, "a block started while another was open"
            open_index = data["index"]
            blocks[open_index] = {**data["content_block"], "json": ""}
        elif kind == "content_block_delta":
            assert data["index"] == open_index, "a delta for a block that is not open"
            blocks[open_index]["json"] += data["delta"].get("partial_json", "")
        elif kind == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert open_index is None
    return [(b["id"], b["name"], json.loads(b["json"])) for b in blocks.values() if b["type"] == "tool_use"]


@pytest.mark.parametrize(
    "deltas",
    [
        # Gemini's OpenAI-compatible endpoint: no index, each call whole.
        [
            [{"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}],
            [{"id": "b", "type": "function", "function": {"name": "g", "arguments": '{"y": 2}'}}],
        ],
        # Both calls in one delta, without index.
        [
            [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
                {"id": "b", "type": "function", "function": {"name": "g", "arguments": '{"y": 2}'}},
            ]
        ],
        # Parallel calls whose argument fragments interleave.
        [
            [{"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}],
            [{"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": '{"y"'}}],
            [{"index": 0, "function": {"arguments": '{"x"'}}],
            [{"index": 1, "function": {"arguments": ": 2}"}}],
            [{"index": 0, "function": {"arguments": ": 1}"}}],
        ],
        # Two calls sent with the same index but different ids.
        [
            [{"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}],
            [{"index": 0, "id": "b", "type": "function", "function": {"name": "g", "arguments": '{"y": 2}'}}],
        ],
    ],
)
def test_stream_tool_calls_without_index_or_interleaved(deltas: list[list[dict[str, Any]]]) -> None:
    stream = b"".join(
        [
            _chunk({"role": "assistant", "content": ""}),
            *(_chunk({"tool_calls": d}) for d in deltas),
            _chunk({}, "tool_calls"),
            b"data: [DONE]\n\n",
        ]
    )
    evs = events(run(OpenAIToAnthropicStream(_ctx(stream=True)), [stream]))
    assert _tool_uses(evs) == [("a", "f", {"x": 1}), ("b", "g", {"y": 2})]
    assert evs[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_untranslatable_success_body_raises() -> None:
    with pytest.raises(ValueError):
        OpenAIToAnthropicResponse(_ctx()).body(b"<html>gateway timeout</html>")


# ----------------------------------------------------------------------------- reviewer findings

_TOOLS = [{"name": "f", "input_schema": {"type": "object"}}]


@pytest.mark.parametrize(
    "choice",
    [
        {"type": "none"},
        {"type": "auto"},
        {"type": "any"},
        {"type": "tool", "name": "f"},
        {"type": "auto", "disable_parallel_tool_use": True},
    ],
)
def test_tool_choice_without_tools_is_not_sent(choice: dict[str, Any]) -> None:
    """OpenAI rejects tool_choice without tools (400 "'tool_choice' is only allowed when 'tools'
    are specified")."""
    out = messages_to_chat(_req(tool_choice=choice), "gpt")
    assert "tool_choice" not in out and "parallel_tool_calls" not in out and "tools" not in out
    assert messages_to_chat(_req(tools=_TOOLS, tool_choice={"type": "none"}), "gpt")["tool_choice"] == "none"


def test_top_k_and_every_stop_sequence_go_to_the_backend() -> None:
    """OpenAI-compatible servers (vLLM, Ollama) take top_k and more than 4 stop sequences; OpenAI
    refuses them with a 400 of its own that names the field. Neither is dropped or refused here."""
    out = messages_to_chat(_req(top_k=5, stop_sequences=["a", "b", "c", "d", "e"]), "gpt")
    assert out["top_k"] == 5 and out["stop"] == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    ("schema", "host", "kept"),
    [
        ("OpenAI", "api.openai.com", False),
        ("OpenAI", "eu.api.openai.com", False),
        ("OpenAI", "r.openai.azure.com", False),  # Azure's v1 API, with the OpenAI schema
        ("AzureOpenAI", "r.openai.azure.com", False),
        ("OpenAI", "vllm.local", True),
        ("OpenAI", "notapi.openai.com.example", True),
    ],
)
def test_top_k_is_dropped_for_the_apis_that_refuse_it(schema: str, host: str, kept: bool) -> None:
    """Found by review: Claude Code's top_k reached api.openai.com, whose 400 ("Unrecognized request
    argument supplied: top_k") failed a request valid in Anthropic's API. OpenAI's own API and Azure
    have no top_k; other OpenAI-compatible servers keep it."""
    backend = config_pb2.Backend(name="b", schema=config_pb2.Schema(name=schema), upstream_host=host)
    ctx = RequestContext(Endpoint.MESSAGES, backend, "/anthropic/v1/messages", "", "gpt", {})
    pair = get_pair(Endpoint.MESSAGES, schema)
    assert pair is not None
    sent = json.loads(pair.request(ctx, json.dumps(_req(top_k=5)).encode()).body)
    assert ("top_k" in sent) is kept and sent["messages"]


def test_output_config_format_becomes_strict_json_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    out = messages_to_chat(_req(output_config={"format": {"type": "json_schema", "schema": schema}}), "gpt")
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }
    assert "reasoning_effort" not in out


@pytest.mark.parametrize(
    ("thinking", "config", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, None, "low"),
        ({"type": "enabled", "budget_tokens": 4095}, None, "low"),
        ({"type": "enabled", "budget_tokens": 4096}, None, "medium"),
        ({"type": "enabled", "budget_tokens": 16383}, None, "medium"),
        ({"type": "enabled", "budget_tokens": 16384}, None, "high"),
        ({"type": "disabled"}, None, None),
        ({"type": "adaptive"}, None, None),
        ({"type": "adaptive"}, {"effort": "low"}, "low"),
        ({"type": "enabled", "budget_tokens": 32000}, {"effort": "medium"}, "medium"),
        (None, {"effort": "max"}, "high"),
        (None, {"effort": "xhigh"}, "high"),
        (None, {"task_budget": {"type": "tokens", "total": 400000}}, None),
    ],
)
def test_thinking_and_effort_become_reasoning_effort(
    thinking: dict[str, Any] | None, config: dict[str, Any] | None, effort: str | None
) -> None:
    out = messages_to_chat(_req(thinking=thinking, output_config=config), "o4-mini")
    assert out.get("reasoning_effort") == effort
    for model in ("gpt-5.1", "GPT-5", "o3", "gpt-oss-120b"):
        assert messages_to_chat(_req(thinking=thinking, output_config=config), model).get("reasoning_effort") == effort
    # Models that refuse reasoning_effort (gpt-4o, an OpenAI-compatible server's llama) get none:
    # Claude Code asks for thinking, and its requests must not fail there.
    for model in ("gpt-4o", "gpt-4.1-mini", "llama-3.1-8b", "o1-mini", "o1-preview", "gpt-5-chat-latest"):
        assert "reasoning_effort" not in messages_to_chat(_req(thinking=thinking, output_config=config), model)


@pytest.mark.parametrize(
    ("model", "thinking", "kept"),
    [
        ("gpt-4o", None, True),
        ("gpt-5-chat-latest", None, True),
        ("gpt-oss-120b", {"type": "enabled", "budget_tokens": 2048}, True),  # (vLLM and others take them)
        ("gpt-5.1", None, True),  # not reasoning: its default effort is none
        ("gpt-5.1", {"type": "enabled", "budget_tokens": 2048}, False),
        ("gpt-5", None, False),
        ("gpt-5-mini", None, False),
        ("o3", None, False),
        ("o1-mini", None, False),
    ],
)
def test_a_reasoning_openai_model_gets_the_default_sampling_only(
    model: str, thinking: dict[str, Any] | None, kept: bool
) -> None:
    """OpenAI's reasoning models refuse a temperature or top_p other than 1 with a 400 (found by
    review: every request of an Anthropic client setting them failed): they are left out there, and
    1 is kept."""
    out = messages_to_chat(_req(temperature=0.2, top_p=0.9, thinking=thinking), model)
    assert (out.get("temperature"), out.get("top_p")) == ((0.2, 0.9) if kept else (None, None))
    out = messages_to_chat(_req(temperature=1, top_p=1, thinking=thinking), model)
    assert (out["temperature"], out["top_p"]) == (1, 1)


@pytest.mark.parametrize(
    "req",
    [
        _req(thinking={"type": "enabled"}),
        _req(thinking={"type": "enabled", "budget_tokens": "big"}),
        _req(thinking={"type": "sometimes"}),
        _req(thinking="on"),
        _req(output_config={"effort": "huge"}),
        _req(output_config={"format": {"type": "json_schema"}}),
        _req(output_config="json"),
    ],
)
def test_invalid_thinking_or_output_config_is_a_client_error(req: dict[str, Any]) -> None:
    with pytest.raises(GatewayError) as err:
        messages_to_chat(req, "gpt")
    assert err.value.status == 400


AZURE_FILTER_CHUNK = (
    b'data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":'
    b'[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}\n\n'
)


def test_azure_prompt_filter_chunk_does_not_start_the_message() -> None:
    stream = b"".join(
        [
            AZURE_FILTER_CHUNK,
            _chunk({"role": "assistant", "content": ""}, id="chatcmpl-A", model="gpt-4o-2024-08-06"),
            _chunk({"content": "hi"}, id="chatcmpl-A", model="gpt-4o-2024-08-06"),
            _chunk({}, "stop", id="chatcmpl-A", model="gpt-4o-2024-08-06"),
            b"data: [DONE]\n\n",
        ]
    )
    tr = OpenAIToAnthropicStream(_ctx(stream=True))
    evs = events(run(tr, [stream]))
    assert [k for k, _ in evs].count("message_start") == 1
    assert evs[0][1]["message"]["id"] == "chatcmpl-A"
    assert evs[0][1]["message"]["model"] == "gpt-4o-2024-08-06" == tr.response_model
    assert evs[-2][1]["delta"]["stop_reason"] == "end_turn"


def test_message_without_id_gets_one() -> None:
    stream = AZURE_FILTER_CHUNK + _chunk({"content": "hi"}, "stop", id="") + b"data: [DONE]\n\n"
    evs = events(run(OpenAIToAnthropicStream(_ctx(stream=True)), [stream]))
    message_id = evs[0][1]["message"]["id"]
    assert message_id.startswith("msg_") and len(message_id) > len("msg_")
    resp = {"id": "", "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]}
    out = json.loads(OpenAIToAnthropicResponse(_ctx()).body(json.dumps(resp).encode()))
    assert out["id"].startswith("msg_") and out["id"] != message_id


def test_refusal_is_kept_with_stop_reason_refusal() -> None:
    resp = {
        "id": "chatcmpl-1",
        "choices": [{"message": {"content": None, "refusal": "I can't help with that."}, "finish_reason": "stop"}],
    }
    out = json.loads(OpenAIToAnthropicResponse(_ctx()).body(json.dumps(resp).encode()))
    assert out["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert out["stop_reason"] == "refusal"
    stream = b"".join(
        [
            _chunk({"role": "assistant", "content": None, "refusal": ""}),
            _chunk({"refusal": "I can't "}),
            _chunk({"refusal": "help with that."}),
            _chunk({}, "stop"),
            b"data: [DONE]\n\n",
        ]
    )
    evs = events(run(OpenAIToAnthropicStream(_ctx(stream=True)), [stream]))
    assert [d["content_block"] for k, d in evs if k == "content_block_start"] == [{"type": "text", "text": ""}]
    text = "".join(d["delta"]["text"] for k, d in evs if k == "content_block_delta")
    assert text == "I can't help with that."
    assert evs[-2][1]["delta"] == {"stop_reason": "refusal", "stop_sequence": None}


@pytest.mark.parametrize(
    ("model", "modern", "sent"),
    [
        ("gpt-4o", True, ("max_completion_tokens", 16384)),
        ("gpt-4o-2024-05-13", False, ("max_tokens", 4096)),
        ("gpt-4.1-mini", True, ("max_completion_tokens", 32000)),  # under its 32768
        ("o3-mini", True, ("max_completion_tokens", 32000)),
        ("gpt-5-chat-latest", True, ("max_completion_tokens", 16384)),
        ("my-deployment", True, ("max_completion_tokens", 32000)),  # not known: the client's
    ],
)
def test_max_tokens_is_capped_to_what_a_known_openai_model_takes(model: str, modern: bool, sent: tuple) -> None:
    out = messages_to_chat(_req(max_tokens=32000), model, modern=modern)
    key, value = sent
    assert out[key] == value


@pytest.mark.parametrize("schema", ["OpenAI", "AzureOpenAI", "AWSBedrock"])
def test_a_messages_request_without_max_tokens_is_refused_as_anthropic_refuses_it(schema: str) -> None:
    """Found by review: without max_tokens (which Anthropic requires) an Anthropic client was
    answered by Nova or GPT but refused by a Claude backend of the same route, so it broke when it
    landed on, or failed over to, Claude. Now every translated backend refuses it alike."""
    backend = config_pb2.Backend(name="b", schema=config_pb2.Schema(name=schema, version="2025-04-01-preview"))
    ctx = RequestContext(Endpoint.MESSAGES, backend, "/anthropic/v1/messages", "", "m", {})
    pair = get_pair(Endpoint.MESSAGES, schema)
    assert pair is not None
    without = {k: v for k, v in _req().items() if k != "max_tokens"}
    with pytest.raises(InvalidRequest) as refused:
        pair.request(ctx, json.dumps(without).encode())
    assert (refused.value.status, refused.value.message) == (400, "max_tokens: Field required")
    assert pair.request(ctx, json.dumps(_req()).encode()).body  # with it: translated


@pytest.mark.parametrize(
    ("named", "stop", "sequence"), [("\n\nHuman:", "stop_sequence", "\n\nHuman:"), (None, "end_turn", None)]
)
def test_a_stop_sequence_the_backend_names_is_the_stop_reason(
    named: str | None, stop: str, sequence: str | None
) -> None:
    """vLLM names the stop string a choice ended on (`stop_reason`): the Anthropic client gets
    stop_sequence and the string, as from Claude (a provider-API review: end_turn and null)."""
    choice = {"message": {"content": "A"}, "finish_reason": "stop", "stop_reason": named}
    out = json.loads(OpenAIToAnthropicResponse(_ctx()).body(json.dumps({"choices": [choice]}).encode()))
    assert (out["stop_reason"], out["stop_sequence"]) == (stop, sequence)
    last = json.loads(_chunk({}, "stop").removeprefix(b"data: "))
    last["choices"][0]["stop_reason"] = named
    data = (
        _chunk({"role": "assistant", "content": "A"}) + b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n"
    )
    evs = events(run(OpenAIToAnthropicStream(_ctx(stream=True)), [data]))
    [delta] = [d["delta"] for k, d in evs if k == "message_delta"]
    assert (delta["stop_reason"], delta["stop_sequence"]) == (stop, sequence)


def test_a_backend_that_reports_no_usage_gives_the_client_an_estimate_not_zero() -> None:
    """Azure before 2024-09-01 and servers without include_usage report no usage: the client's
    message_delta (and a whole message) said 0 and 0, which Claude Code reads as an empty context
    (it compacts its conversation by these figures). It now says the prompt's estimate and the
    generated text at ~4 characters a token (found by review)."""
    from dataclasses import replace

    ctx = replace(_ctx(stream=True), prompt_estimate=120)
    chunk = {
        "id": "c",
        "model": "gpt",
        "choices": [{"index": 0, "delta": {"content": "x" * 400}, "finish_reason": None}],
    }
    done = {"id": "c", "model": "gpt", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    data = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in (chunk, done)) + b"data: [DONE]\n\n"
    evs = events(run(OpenAIToAnthropicStream(ctx), [data]))
    [usage] = [d["usage"] for kind, d in evs if kind == "message_delta"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (120, 100)
    whole = OpenAIToAnthropicResponse(replace(_ctx(), prompt_estimate=120))
    answer = {
        "id": "c",
        "model": "gpt",
        "choices": [{"index": 0, "message": {"content": "y" * 40}, "finish_reason": "stop"}],
    }
    out = json.loads(whole.body(json.dumps(answer).encode()) or b"{}")
    assert (out["usage"]["input_tokens"], out["usage"]["output_tokens"]) == (120, 10)
    assert not whole.usage.known  # the gateway's own metering stays the router's estimate


@pytest.mark.parametrize(
    ("error", "anthropic_type"),
    [
        ({"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}, "rate_limit_error"),
        (
            {"message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded"},
            "invalid_request_error",
        ),
        (
            {"message": "The server is overloaded", "type": "server_error", "code": "server_is_overloaded"},
            "overloaded_error",
        ),
        ({"message": "boom", "type": "server_error", "code": None}, "api_error"),
        ({"message": "quota", "type": "insufficient_quota", "code": "insufficient_quota"}, "billing_error"),
        ({"message": "bad", "type": "BadRequestError", "code": 400}, "invalid_request_error"),  # vLLM's
        ({"message": "slow down", "type": "x", "code": "429"}, "rate_limit_error"),  # LiteLLM's
    ],
)
def test_an_error_ending_an_openai_stream_keeps_its_kind(error: dict[str, Any], anthropic_type: str) -> None:
    """A rate limit that ends a stream reached an Anthropic client as api_error, which its SDK and
    Claude Code do not treat as a rate limit (found by review): the error's code or type decides."""
    chunk = {"id": "c", "model": "gpt", "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
    data = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps({'error': error})}\n\n".encode()
    evs = events(run(OpenAIToAnthropicStream(_ctx(stream=True)), [data]))
    assert evs[-1] == ("error", {"type": "error", "error": {"type": anthropic_type, "message": error["message"]}})


def test_an_account_out_of_credit_is_a_billing_error_to_an_anthropic_client() -> None:
    """OpenAI's 429 insufficient_quota reached Anthropic clients as a rate limit, which their SDKs
    and Claude Code retry (found by review; an ended stream already said billing_error): it is
    Anthropic's 402 billing_error. Other clients and other 429s keep their status."""
    quota = {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}
    body = json.dumps({"error": quota}).encode()
    assert client_status(ClientSchema.ANTHROPIC, 429, body) == 402
    answer = json.loads(OpenAIToAnthropicResponse(_ctx()).error(402, body))
    assert answer == {"type": "error", "error": {"type": "billing_error", "message": quota["message"]}}
    assert client_status(ClientSchema.OPENAI, 429, body) == 429
    limited = json.dumps({"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}})
    assert client_status(ClientSchema.ANTHROPIC, 429, limited.encode()) == 429
    assert client_status(ClientSchema.ANTHROPIC, 429, b"not json") == 429
