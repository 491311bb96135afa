from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from aigw.translator.v1 import config_pb2
from aigw_fakes.anthropic import AnthropicError, AnthropicFake
from aigw_translator.endpoints import ClientSchema, Endpoint
from aigw_translator.errors import GatewayError
from aigw_translator.translators import RequestContext, ResponseContext, TranslationError
from aigw_translator.translators.capabilities import opaque_user_id
from aigw_translator.translators.claude_reasoning import THINKING_BUDGETS
from aigw_translator.translators.openai_anthropic import (
    AnthropicToOpenAIResponse,
    AnthropicToOpenAIStream,
    chat_to_messages,
    finish_reason,
    translate_request,
)

from .streams import events, run, splits

TOOL = {
    "type": "function",
    "function": {"name": "f", "description": "d", "parameters": {"type": "object", "properties": {"a": {}}}},
}


def _req(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}


# A model from before adaptive thinking: reasoning_effort becomes a thinking budget.
BUDGET_MODEL = "claude-sonnet-4-5"


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        (
            _req(),
            {
                "model": "claude",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "max_tokens": 4096,
            },
        ),
        (_req(max_tokens=10), {"max_tokens": 10}),
        (_req(max_tokens=10, max_completion_tokens=20), {"max_tokens": 20}),
        (_req(stop="END"), {"stop_sequences": ["END"]}),
        (_req(stop=["a", "b"]), {"stop_sequences": ["a", "b"]}),
        (_req(temperature=1.7, top_p=0.5), {"temperature": 1.0, "top_p": None}),
        (_req(stream=True, stream_options={"include_usage": True}), {"stream": True}),
        (_req(user="u1"), {"metadata": {"user_id": opaque_user_id("u1", b"")}}),
        (
            _req(tools=[TOOL]),
            {"tools": [{"name": "f", "description": "d", "input_schema": {"type": "object", "properties": {"a": {}}}}]},
        ),
        (_req(tools=[TOOL], tool_choice="auto"), {"tool_choice": {"type": "auto"}}),
        (_req(tools=[TOOL], tool_choice="required"), {"tool_choice": {"type": "any"}}),
        (_req(tools=[TOOL], tool_choice="none"), {"tool_choice": {"type": "none"}}),
        (
            _req(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "f"}}),
            {"tool_choice": {"type": "tool", "name": "f"}},
        ),
        (
            _req(tools=[TOOL], parallel_tool_calls=False),
            {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
        ),
        (
            {
                "model": "m",
                "messages": [
                    {"role": "system", "content": "s1"},
                    {"role": "developer", "content": [{"type": "text", "text": "s2"}]},
                    {"role": "user", "content": "q"},
                ],
            },
            {"system": [{"type": "text", "text": "s1"}, {"type": "text", "text": "s2"}]},
        ),
        (
            {"model": "m", "messages": [{"role": "system", "content": "only"}, {"role": "user", "content": "q"}]},
            {"system": "only"},
        ),
        (
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "weather?"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
                            {"id": "c2", "type": "function", "function": {"name": "f", "arguments": ""}},
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": "r1"},
                    {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "r2"}]},
                    {"role": "user", "content": "thanks"},
                ],
            },
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
                            {"type": "tool_use", "id": "c2", "name": "f", "input": {}},
                        ],
                    },
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "c1", "content": "r1"},
                            {"type": "tool_result", "tool_use_id": "c2", "content": "r2"},
                            {"type": "text", "text": "thanks"},
                        ],
                    },
                ]
            },
        ),
        (
            {
                "model": "m",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "look"},
                            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}},
                            {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                        ],
                    }
                ],
            },
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "look"},
                            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"}},
                            {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                        ],
                    }
                ]
            },
        ),
    ],
)
def test_request(req: dict[str, Any], expected: dict[str, Any]) -> None:
    out = chat_to_messages(req, "claude")
    assert {k: out.get(k) for k in expected} == expected
    assert "stream_options" not in out and "n" not in out


@pytest.mark.parametrize(
    "req",
    [
        _req(n=2),
        _req(response_format={"type": "json_object"}),
        {"model": "m", "messages": [{"role": "system", "content": "only system"}]},
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
        {
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}],
        },
        {
            "model": "m",
            "messages": [
                {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{bad"}}]}
            ],
        },
        _req(tools=[{"type": "custom", "custom": {}}]),
    ],
)
def test_untranslatable_requests_are_422(req: dict[str, Any]) -> None:
    with pytest.raises(TranslationError) as err:
        chat_to_messages(req, "claude")
    assert err.value.status == 422


def test_a_request_invalid_in_openais_api_is_a_400() -> None:
    with pytest.raises(GatewayError) as err:
        chat_to_messages({"model": "m", "messages": []}, "claude")
    assert err.value.status == 400


def test_translate_request_path_and_headers() -> None:
    backend = config_pb2.Backend(name="b", schema=config_pb2.Schema(name="Anthropic"))
    ctx = RequestContext(Endpoint.CHAT_COMPLETIONS, backend, "/v1/chat/completions", "", "claude", {})
    tr = translate_request(ctx, json.dumps(_req()).encode())
    assert tr.path == "/v1/messages"
    assert tr.set_headers == {"anthropic-version": "2023-06-01"}
    assert json.loads(tr.body)["model"] == "claude"
    backend.schema.prefix = "anthropic/v2"
    assert translate_request(ctx, json.dumps(_req()).encode()).path == "/anthropic/v2/messages"


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
        (None, None),
    ],
)
def test_finish_reason(stop: str | None, finish: str | None) -> None:
    assert finish_reason(stop) == finish


def _ctx(stream: bool = False, include_usage: bool = False) -> ResponseContext:
    return ResponseContext(Endpoint.CHAT_COMPLETIONS, ClientSchema.OPENAI, "m", "claude", stream, include_usage)


def test_response_body() -> None:
    msg = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "a"},
            {"type": "text", "text": "b"},
            {"type": "tool_use", "id": "t1", "name": "f", "input": {"x": [1]}},
        ],
        "stop_reason": "tool_use",
        "usage": {
            "input_tokens": 5,
            "output_tokens": 9,
            "cache_read_input_tokens": 3,
            "cache_creation_input_tokens": 2,
        },
    }
    tr = AnthropicToOpenAIResponse(_ctx())
    out = json.loads(tr.body(json.dumps(msg).encode()))
    assert out["object"] == "chat.completion"
    assert out["model"] == "claude-x"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "ab"
    assert choice["message"]["tool_calls"] == [
        {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"x":[1]}'}}
    ]
    assert out["usage"]["prompt_tokens"] == 10
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 3, "cache_write_tokens": 2}
    assert (tr.usage.total_tokens, tr.usage.known, tr.response_model) == (19, True, "claude-x")


def test_error_body_is_openai_shaped() -> None:
    tr = AnthropicToOpenAIResponse(_ctx())
    body = b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'
    assert json.loads(tr.error(429, body)) == {
        "error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}
    }


def _ev(kind: str, **obj: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **obj})}\n\n".encode()


ANTHROPIC_STREAM = b"".join(
    [
        _ev(
            "message_start",
            message={
                "id": "msg_1",
                "model": "claude-x",
                "content": [],
                "usage": {"input_tokens": 5, "cache_read_input_tokens": 3, "output_tokens": 1},
            },
        ),
        _ev("ping"),
        _ev("content_block_start", index=0, content_block={"type": "thinking", "thinking": ""}),
        _ev("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "hm"}),
        _ev("content_block_stop", index=0),
        _ev("content_block_start", index=1, content_block={"type": "text", "text": ""}),
        _ev("content_block_delta", index=1, delta={"type": "text_delta", "text": "Hé"}),
        _ev("content_block_delta", index=1, delta={"type": "text_delta", "text": "llo"}),
        _ev("content_block_stop", index=1),
        _ev("content_block_start", index=2, content_block={"type": "tool_use", "id": "t1", "name": "f", "input": {}}),
        _ev("content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": '{"ci'}),
        _ev("content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": 'ty": "P"}'}),
        _ev("content_block_stop", index=2),
        _ev("content_block_start", index=3, content_block={"type": "tool_use", "id": "t2", "name": "g", "input": {}}),
        # A tool without parameters: Claude streams one empty fragment; the call's arguments are "{}".
        _ev("content_block_delta", index=3, delta={"type": "input_json_delta", "partial_json": ""}),
        _ev("content_block_stop", index=3),
        _ev("some_future_event", foo=1),
        _ev("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 20}),
        _ev("message_stop"),
    ]
)


def _collect(out: bytes) -> dict[str, Any]:
    evs = events(out)
    assert evs[-1] == (None, "[DONE]")
    chunks = [d for _, d in evs[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
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
    return {"text": text, "calls": calls, "finishes": finishes, "usage": usage, "chunks": chunks}


@pytest.mark.parametrize("chunks", splits(ANTHROPIC_STREAM, 37))
def test_stream_any_chunking(chunks: list[bytes]) -> None:
    tr = AnthropicToOpenAIStream(_ctx(stream=True, include_usage=True))
    got = _collect(run(tr, chunks))
    assert got["text"] == "Héllo"
    assert got["calls"] == {
        0: {"id": "t1", "name": "f", "arguments": '{"city": "P"}'},
        1: {"id": "t2", "name": "g", "arguments": "{}"},
    }
    assert got["finishes"] == ["tool_calls"]
    assert got["usage"] == [
        {
            "prompt_tokens": 8,
            "completion_tokens": 20,
            "total_tokens": 28,
            "prompt_tokens_details": {"cached_tokens": 3},
        }
    ]
    assert got["chunks"][0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["id"] == "msg_1" and c["object"] == "chat.completion.chunk" for c in got["chunks"])
    assert (tr.usage.total_tokens, tr.response_model) == (28, "claude-x")


def test_a_tool_input_given_whole_at_the_blocks_start_is_the_calls_arguments() -> None:
    """Some Anthropic-compatible servers put a tool call's whole input in content_block_start and
    stream no fragment (Anthropic's own API starts with {} and streams it): the call's arguments are
    that input, not "{}"; two tool blocks keep two indexes even when both lack their block index."""
    stream = b"".join(
        [
            _ev("message_start", message={"id": "msg_1", "model": "c", "usage": {"input_tokens": 1}}),
            _ev(
                "content_block_start",
                index=0,
                content_block={"type": "tool_use", "id": "t1", "name": "f", "input": {"city": "Oslo"}},
            ),
            _ev("content_block_stop", index=0),
            _ev("content_block_start", content_block={"type": "tool_use", "id": "t2", "name": "g", "input": {}}),
            _ev("content_block_start", content_block={"type": "tool_use", "id": "t3", "name": "h", "input": {}}),
            _ev("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 5}),
            _ev("message_stop"),
        ]
    )
    got = _collect(run(AnthropicToOpenAIStream(_ctx(stream=True)), [stream]))
    assert got["calls"][0] == {"id": "t1", "name": "f", "arguments": '{"city":"Oslo"}'}
    assert [got["calls"][i]["id"] for i in (1, 2)] == ["t2", "t3"]


def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    tr = AnthropicToOpenAIStream(_ctx(stream=True, include_usage=False))
    got = _collect(run(tr, [ANTHROPIC_STREAM]))
    assert got["usage"] == []
    assert tr.usage.known and tr.usage.total_tokens == 28


def test_first_event_is_not_delayed() -> None:
    tr = AnthropicToOpenAIStream(_ctx(stream=True))
    first = ANTHROPIC_STREAM.index(b"event: ping")
    assert events(tr.feed(ANTHROPIC_STREAM[:first]))[0][1]["choices"][0]["delta"]["role"] == "assistant"


def test_stream_dying_early_reports_no_usage() -> None:
    cut = ANTHROPIC_STREAM.index(b"event: message_delta")
    tr = AnthropicToOpenAIStream(_ctx(stream=True, include_usage=True))
    out = run(tr, [ANTHROPIC_STREAM[:cut]])
    assert b"[DONE]" not in out
    assert not tr.usage.known


def test_stream_error_event() -> None:
    data = ANTHROPIC_STREAM[: ANTHROPIC_STREAM.index(b"event: ping")] + _ev(
        "error", error={"type": "overloaded_error", "message": "Overloaded"}
    )
    tr = AnthropicToOpenAIStream(_ctx(stream=True, include_usage=True))
    evs = events(run(tr, [data]))
    assert evs[-1][1] == {"error": {"message": "Overloaded", "type": "server_error", "param": None, "code": None}}
    assert not tr.usage.known


def test_cache_control_is_kept() -> None:
    req = {
        "model": "m",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "long", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": [{"type": "text", "text": "q", "cache_control": {"type": "ephemeral"}}]},
        ],
        "tools": [{**TOOL, "cache_control": {"type": "ephemeral"}}],
    }
    out = chat_to_messages(req, "claude")
    assert out["system"] == [{"type": "text", "text": "long", "cache_control": {"type": "ephemeral"}}]
    assert out["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert out["tools"][0]["cache_control"] == {"type": "ephemeral"}
    # An image's too (Anthropic caches image blocks; the breakpoint had been dropped).
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    message = {"role": "user", "content": [{**image, "cache_control": {"type": "ephemeral"}}]}
    [block] = chat_to_messages({"model": "m", "messages": [message]}, "claude")["messages"][0]["content"]
    assert block == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
        "cache_control": {"type": "ephemeral"},
    }


def test_thinking_becomes_reasoning_content() -> None:
    msg = {
        "content": [{"type": "thinking", "thinking": "because", "signature": "s"}, {"type": "text", "text": "A"}],
        "stop_reason": "end_turn",
    }
    out = json.loads(AnthropicToOpenAIResponse(_ctx()).body(json.dumps(msg).encode()))
    assert out["choices"][0]["message"]["reasoning_content"] == "because"
    tr = AnthropicToOpenAIStream(_ctx(stream=True))
    chunks = [d for _, d in events(run(tr, [ANTHROPIC_STREAM])) if isinstance(d, dict)]
    assert "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks if c["choices"]) == "hm"


# ----------------------------------------------------------------------------- provider rejections


def _user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        # Current Claude models reject temperature and top_p together; top_p 1 is OpenAI's default.
        (_req(temperature=0.2, top_p=1), {"temperature": 0.2, "top_p": None}),
        (_req(temperature=1, top_p=0.9), {"temperature": None, "top_p": 0.9}),
        (_req(temperature=0.3, top_p=0.9), {"temperature": 0.3, "top_p": None}),
        (_req(top_p=0.9), {"top_p": 0.9}),
        # Empty stop sequences never match; they are left out.
        (_req(stop=["", "END"]), {"stop_sequences": ["END"]}),
        (_req(stop=""), {"stop_sequences": None}),
        # Empty or whitespace-only text is left out (Anthropic rejects empty text blocks).
        (
            _req(messages=[_user([{"type": "text", "text": ""}, {"type": "text", "text": "q"}])]),
            {"messages": [_user([{"type": "text", "text": "q"}])]},
        ),
        (
            _req(messages=[_user("  "), {"role": "assistant", "content": ""}, _user("q")]),
            {"messages": [_user([{"type": "text", "text": "q"}])]},
        ),
        (
            _req(messages=[{"role": "system", "content": " "}, _user("q")]),
            {"system": None, "messages": [_user([{"type": "text", "text": "q"}])]},
        ),
        # A prefilled final assistant turn loses its trailing whitespace.
        (
            _req(messages=[_user("q"), {"role": "assistant", "content": "Sure, "}]),
            {
                "messages": [
                    _user([{"type": "text", "text": "q"}]),
                    {"role": "assistant", "content": [{"type": "text", "text": "Sure,"}]},
                ]
            },
        ),
        # image/jpg is not a media type Anthropic knows.
        (
            _req(messages=[_user([{"type": "image_url", "image_url": {"url": "data:image/jpg;base64,QQ=="}}])]),
            {
                "messages": [
                    _user([{"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QQ=="}}])
                ]
            },
        ),
        # reasoning_effort -> extended thinking; max_tokens must exceed the budget.
        (
            _req(reasoning_effort="medium"),
            {"thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 4096 + 2048},
        ),
        (
            _req(reasoning_effort="high", max_completion_tokens=3000, temperature=1),
            {"thinking": {"type": "enabled", "budget_tokens": 2999}, "max_tokens": 3000, "temperature": None},
        ),
        (_req(reasoning_effort="minimal"), {"thinking": None}),
        # Above high, OpenAI's xhigh and max (Codex sends them): twice the budget each.
        (
            _req(reasoning_effort="xhigh"),
            {"thinking": {"type": "enabled", "budget_tokens": 8192}, "max_tokens": 4096 + 8192},
        ),
        (_req(reasoning_effort="max"), {"thinking": {"type": "enabled", "budget_tokens": 16384}}),
        # Ignored: no effect an Anthropic backend could give, and no harm in leaving them out.
        (_req(seed=7, frequency_penalty=0, presence_penalty=0, logprobs=False, store=True), {"max_tokens": 4096}),
    ],
)
def test_request_that_anthropic_would_reject_is_fixed(req: dict[str, Any], expected: dict[str, Any]) -> None:
    out = chat_to_messages(req, BUDGET_MODEL)
    assert {k: out.get(k) for k in expected} == expected
    assert not ({"seed", "frequency_penalty", "presence_penalty", "logprobs", "store", "reasoning_effort"} & out.keys())


def test_a_tool_history_without_tools_declares_them_not_to_be_called() -> None:
    """A summary or title turn replays a tool loop and declares no tools: Anthropic refuses tool
    blocks in a request without tools (the fake does as it does), so the history's tools are
    declared with tool_choice none (a reviewer found the upstream body without them)."""
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    req = _req(
        messages=[
            _user("weather in Oslo?"),
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            _user("summarise this conversation in five words"),
        ]
    )
    out = chat_to_messages(req, "claude-sonnet-4-5")
    assert out["tools"] == [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}]
    assert out["tool_choice"] == {"type": "none"}
    AnthropicFake().validate(out)  # raises AnthropicError for what the API would refuse
    without = {k: v for k, v in out.items() if k not in ("tools", "tool_choice")}
    with pytest.raises(AnthropicError, match="must define tools"):
        AnthropicFake().validate(without)
    # Without tool calls in the history nothing is declared.
    assert "tools" not in chat_to_messages(_req(), "claude-sonnet-4-5")


@pytest.mark.parametrize(
    ("req", "status", "words"),
    [
        (_req(stop=["\n"]), 422, "whitespace"),
        (_req(stop=" "), 422, "whitespace"),
        (_req(logprobs=True), 422, "logprobs"),
        (_req(top_logprobs=3), 422, "logprobs"),
        (_req(logit_bias={"50256": -100}), 422, "logit_bias"),
        (_req(frequency_penalty=0.5), 422, "frequency_penalty"),
        (_req(presence_penalty=-1), 422, "presence_penalty"),
        (_req(modalities=["text", "audio"]), 422, "audio"),
        (_req(reasoning_effort="low", max_completion_tokens=500), 422, "reasoning_effort"),
        (_req(reasoning_effort="low", temperature=0.2), 422, "temperature"),
        (_req(reasoning_effort="extreme"), 400, "reasoning_effort"),
        # With thinking enabled Anthropic takes tool_choice auto or none only.
        (_req(reasoning_effort="low", tools=[TOOL], tool_choice="required"), 422, "tool_choice"),
        (
            _req(reasoning_effort="high", tools=[TOOL], tool_choice={"type": "function", "function": {"name": "f"}}),
            422,
            "tool_choice",
        ),
        (_req(max_tokens=0), 400, "max_tokens"),
        (_req(max_tokens="100"), 400, "max_tokens"),
        (_req(max_completion_tokens=-5), 400, "max_completion_tokens"),
        (_req(temperature="hot"), 400, "temperature"),
        (_req(messages=[_user(""), {"role": "assistant", "content": " "}]), 422, "content"),
    ],
)
def test_request_that_cannot_be_honoured_is_a_clear_error(req: dict[str, Any], status: int, words: str) -> None:
    with pytest.raises(GatewayError) as err:
        chat_to_messages(req, BUDGET_MODEL)
    assert err.value.status == status
    assert words in err.value.message


@pytest.mark.parametrize("user", ["someone@example.com", "u" * 300])
def test_user_is_forwarded_opaque_and_short(user: str) -> None:
    user_id = chat_to_messages(_req(user=user), "claude")["metadata"]["user_id"]
    assert user_id == opaque_user_id(user, b"") and len(user_id) <= 64 and "@" not in user_id


def test_user_id_is_keyed_with_the_fleet_key() -> None:
    """An unsalted hash of an e-mail address is reversed with a dictionary: the id is an HMAC with
    the fleet's key, stable for one key and different under another."""
    backend = config_pb2.Backend(name="b", schema=config_pb2.Schema(name="Anthropic"))
    body = json.dumps(_req(user="someone@example.com")).encode()

    def sent(key: bytes) -> str:
        ctx = RequestContext(Endpoint.CHAT_COMPLETIONS, backend, "/v1/chat/completions", "", "claude", {}, key)
        return json.loads(translate_request(ctx, body).body)["metadata"]["user_id"]

    unsalted = "aigw-" + hashlib.sha256(b"someone@example.com").hexdigest()[:32]
    assert sent(b"fleet-a") == sent(b"fleet-a") == opaque_user_id("someone@example.com", b"fleet-a")
    assert sent(b"fleet-a") != sent(b"fleet-b")
    assert unsalted not in (sent(b"fleet-a"), sent(b"fleet-b"))
    assert sent(b"fleet-a").startswith("aigw-") and len(sent(b"fleet-a")) == len("aigw-") + 32


def test_untranslatable_success_body_raises() -> None:
    with pytest.raises(ValueError):
        AnthropicToOpenAIResponse(_ctx()).body(b"[1, 2]")


def test_request_too_deep_to_re_encode_is_400() -> None:
    deep: Any = {}
    for _ in range(300):
        deep = {"d": deep}
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": deep}}}
    backend = config_pb2.Backend(name="b", schema=config_pb2.Schema(name="Anthropic"))
    ctx = RequestContext(Endpoint.CHAT_COMPLETIONS, backend, "/v1/chat/completions", "", "claude", {})
    with pytest.raises(GatewayError) as err:
        translate_request(ctx, json.dumps(_req(tools=[tool])).encode())
    assert err.value.status == 400


CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TOOL_LOOP = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": None, "reasoning_content": "hmm", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "c1", "content": "42"},
]


@pytest.mark.parametrize(
    ("model", "effort", "thinking", "level"),
    [
        # Opus 4.7 and later: adaptive only (a budget is their 400), the level as output_config.effort.
        ("claude-opus-4-7", "high", {"type": "adaptive"}, "high"),
        ("claude-opus-4-8", "xhigh", {"type": "adaptive"}, "xhigh"),
        ("claude-fable-5", "low", {"type": "adaptive"}, "low"),
        ("anthropic.claude-mythos-5-v1:0", "max", {"type": "adaptive"}, "max"),
        # Opus 4.6 and Sonnet 4.6 take both (a budget is deprecated); their levels have no xhigh.
        ("claude-sonnet-4-6", "xhigh", {"type": "adaptive"}, "max"),
        ("claude-opus-4-6@20260205", "medium", {"type": "adaptive"}, "medium"),
        # Dotted names (proxies spell them so) are the same families.
        ("claude-opus-4.7", "high", {"type": "adaptive"}, "high"),
        ("claude-sonnet-4.5", "low", {"type": "enabled", "budget_tokens": 1024}, None),
        # A name that says nothing of its family (an inference profile): a current model.
        ("arn:aws:bedrock:us-east-1:1:application-inference-profile/abc", "low", {"type": "adaptive"}, "low"),
        # Every family before them: a budget, and no effort.
        ("claude-sonnet-4-5", "medium", {"type": "enabled", "budget_tokens": 2048}, None),
        ("claude-haiku-4-5-20251001", "low", {"type": "enabled", "budget_tokens": 1024}, None),
        ("claude-opus-4-1@20250805", "high", {"type": "enabled", "budget_tokens": 4096}, None),
        ("us.anthropic.claude-sonnet-4-20250514-v1:0", "high", {"type": "enabled", "budget_tokens": 4096}, None),
        ("claude-opus-4-20250514", "high", {"type": "enabled", "budget_tokens": 4096}, None),
        ("claude-3-7-sonnet-latest", "high", {"type": "enabled", "budget_tokens": 4096}, None),
    ],
)
def test_reasoning_effort_follows_the_models_thinking(
    model: str, effort: str, thinking: dict[str, Any], level: str | None
) -> None:
    out = chat_to_messages(_req(reasoning_effort=effort), model)
    assert out["thinking"] == thinking
    assert out.get("output_config") == ({"effort": level} if level else None)
    assert out["max_tokens"] == 4096 + THINKING_BUDGETS[effort]
    # A client's limit stands: an adaptive model needs no room for a budget it does not have.
    if level:
        limited = chat_to_messages(_req(reasoning_effort=effort, max_completion_tokens=600), model)
        assert limited["max_tokens"] == 600 and limited["thinking"] == {"type": "adaptive"}
    else:
        with pytest.raises(TranslationError):
            chat_to_messages(_req(reasoning_effort=effort, max_completion_tokens=600), model)


@pytest.mark.parametrize("model", ["claude-3-5-haiku-latest", "claude-3-5-sonnet-20241022", "claude-3-opus-20240229"])
def test_reasoning_effort_is_left_out_for_claude_models_that_do_not_think(model: str) -> None:
    """Extended thinking came with Claude 3.7 Sonnet: a new user's trial saw 3.5 Haiku sent a
    thinking budget (the API's 400), from the examples' own model."""
    out = chat_to_messages(_req(reasoning_effort="low"), model)
    assert "thinking" not in out and "output_config" not in out and out["max_tokens"] == 4096


def test_a_json_schema_response_format_is_claudes_structured_output() -> None:
    """`client.chat.completions.parse(response_format=Model)` sends a json_schema: Claude's
    output_config.format, beside the effort when both are asked for."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}}
    out = chat_to_messages(_req(response_format=response_format, reasoning_effort="low"), "claude-opus-4-7")
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": schema}, "effort": "low"}
    assert chat_to_messages(_req(response_format={"type": "text"}), "claude-opus-4-7").get("output_config") is None


@pytest.mark.parametrize(
    ("req", "thinking"),
    [
        # The assistant turn would have to begin with its thinking block, whose signature an OpenAI
        # client does not carry back: thinking is not enabled for this request.
        (_req(messages=TOOL_LOOP, reasoning_effort="medium", tools=[TOOL]), None),
        (_req(messages=TOOL_LOOP, reasoning_effort="low", tools=[TOOL], tool_choice="required"), None),
        # A finished tool loop followed by a new question: the last assistant turn holds no call.
        (
            _req(
                messages=[*TOOL_LOOP, {"role": "assistant", "content": "42."}, {"role": "user", "content": "and?"}],
                reasoning_effort="medium",
                tools=[TOOL],
            ),
            {"type": "enabled", "budget_tokens": 2048},
        ),
        # Thinking with tool_choice auto (or none) is accepted.
        (_req(reasoning_effort="low", tools=[TOOL], tool_choice="auto"), {"type": "enabled", "budget_tokens": 1024}),
        (_req(reasoning_effort="low", tools=[TOOL], tool_choice="none"), {"type": "enabled", "budget_tokens": 1024}),
        # A forced tool_choice without tools is not sent, so it does not conflict.
        (_req(reasoning_effort="low", tool_choice="required"), {"type": "enabled", "budget_tokens": 1024}),
    ],
)
def test_reasoning_effort_with_tools(req: dict[str, Any], thinking: dict[str, Any] | None) -> None:
    out = chat_to_messages(req, BUDGET_MODEL)
    assert out.get("thinking") == thinking
    if thinking is None:
        assert out["max_tokens"] == 4096
