"""A complete answer sent as the stream the client asked for (whole_as_stream): the events each
API's stream has, which the SDKs' stream readers accumulate back into the same answer; anything
else is left as it came."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aigw_translator.endpoints import Endpoint
from aigw_translator.sse import SSEParser
from aigw_translator.whole_as_stream import whole_as_stream

CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}
USAGE = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 7,
    "model": "gpt-x",
    "system_fingerprint": "fp",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hello", "refusal": None}, "finish_reason": "stop"},
        {
            "index": 1,
            "message": {"role": "assistant", "content": None, "tool_calls": [CALL]},
            "finish_reason": "tool_calls",
        },
    ],
    "usage": USAGE,
}


def _events(stream: bytes) -> list[tuple[str | None, Any]]:
    return [(e.event, e.data if e.data == "[DONE]" else json.loads(e.data)) for e in SSEParser().feed(stream)]


def test_a_chat_completion_becomes_its_chunks() -> None:
    events = _events(whole_as_stream(Endpoint.CHAT_COMPLETIONS, json.dumps(CHAT).encode(), include_usage=True) or b"")
    assert events[-1] == (None, "[DONE]")
    chunks = [data for _, data in events[:-1]]
    assert {(c["object"], c["id"], c["model"], c["created"]) for c in chunks} == {
        ("chat.completion.chunk", "chatcmpl-1", "gpt-x", 7)
    }
    assert [c["choices"] for c in chunks] == [
        [{"index": 0, "delta": {"role": "assistant", "content": "hello", "refusal": None}, "finish_reason": None}],
        [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        [
            {
                "index": 1,
                "delta": {"role": "assistant", "content": None, "tool_calls": [{"index": 0, **CALL}]},
                "finish_reason": None,
            }
        ],
        [{"index": 1, "delta": {}, "finish_reason": "tool_calls"}],
        [],
    ]
    assert chunks[-1]["usage"] == USAGE and all("usage" not in c for c in chunks[:-1])
    # Without stream_options.include_usage, no usage chunk (as OpenAI streams).
    plain = _events(whole_as_stream(Endpoint.CHAT_COMPLETIONS, json.dumps(CHAT).encode(), include_usage=False) or b"")
    assert len(plain) == len(events) - 1 and all(data == "[DONE]" or data["choices"] for _, data in plain)


def test_a_text_completion_becomes_its_chunks() -> None:
    answer = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "text": "abc", "logprobs": None, "finish_reason": "length"}],
        "usage": USAGE,
    }
    events = _events(whole_as_stream(Endpoint.COMPLETIONS, json.dumps(answer).encode(), include_usage=True) or b"")
    assert [data["choices"] for _, data in events[:-1]] == [
        [{"index": 0, "text": "abc", "finish_reason": None}],
        [{"index": 0, "text": "", "finish_reason": "length"}],
        [],
    ]
    assert events[-1] == (None, "[DONE]")


def test_a_message_becomes_the_messages_event_sequence() -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 4},
    }
    events = _events(whole_as_stream(Endpoint.MESSAGES, json.dumps(message).encode(), include_usage=False) or b"")
    assert [name for name, _ in events] == [
        "message_start",
        *["content_block_start", "content_block_delta", "content_block_delta", "content_block_stop"],
        *["content_block_start", "content_block_delta", "content_block_stop"],
        *["content_block_start", "content_block_delta", "content_block_stop"],
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert (
        start["content"] == []
        and start["stop_reason"] is None
        and start["usage"]
        == {
            "input_tokens": 9,
            "output_tokens": 0,
        }
    )
    assert [d["delta"] for _, d in events if d["type"] == "content_block_delta"] == [
        {"type": "thinking_delta", "thinking": "hmm"},
        {"type": "signature_delta", "signature": "sig"},
        {"type": "text_delta", "text": "Let me check."},
        {"type": "input_json_delta", "partial_json": '{"city":"Oslo"}'},
    ]
    assert events[8][1]["content_block"] == {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}
    assert events[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[-2][1]["usage"] == {"output_tokens": 4}


@pytest.mark.parametrize(
    ("endpoint", "answer"),
    [
        (Endpoint.RESPONSES, {"object": "response", "output": []}),  # its stream is another matter
        (Endpoint.CHAT_COMPLETIONS, {"object": "text_completion", "choices": []}),  # not a chat answer
        (Endpoint.MESSAGES, ["not", "an", "object"]),
        (Endpoint.CHAT_COMPLETIONS, "data: {}"),  # SSE sent as application/json: not JSON
    ],
)
def test_what_is_not_such_an_answer_is_left_as_it_came(endpoint: Endpoint, answer: Any) -> None:
    text = answer if isinstance(answer, str) else json.dumps(answer)
    assert whole_as_stream(endpoint, text.encode(), include_usage=False) is None


def test_an_answer_of_the_shape_that_cannot_be_read_is_an_error() -> None:
    with pytest.raises(ValueError):
        whole_as_stream(Endpoint.CHAT_COMPLETIONS, b'{"object":"chat.completion","choices":["x"]}', False)


def test_annotations_and_citations_reach_the_stream() -> None:
    """What the SDKs' stream accumulators rebuild: url_citation annotations in a chat delta, a text
    block's citations as citations_delta events."""
    annotation = {"type": "url_citation", "url_citation": {"url": "https://x", "title": "x", "start_index": 0}}
    chat = {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "see x", "annotations": [annotation]},
                "finish_reason": "stop",
            }
        ],
    }
    events = _events(whole_as_stream(Endpoint.CHAT_COMPLETIONS, json.dumps(chat).encode(), False) or b"")
    assert events[0][1]["choices"][0]["delta"]["annotations"] == [annotation]
    citation = {"type": "char_location", "cited_text": "x", "document_index": 0, "start_char_index": 0}
    message = {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": "x", "citations": [citation]}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    events = _events(whole_as_stream(Endpoint.MESSAGES, json.dumps(message).encode(), False) or b"")
    assert events[1][1]["content_block"] == {"type": "text", "text": "", "citations": []}
    assert [e[1]["delta"] for e in events[2:4]] == [
        {"type": "text_delta", "text": "x"},
        {"type": "citations_delta", "citation": citation},
    ]
