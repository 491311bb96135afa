"""ClientStream: events counted and the end of a stream recognised on whole SSE lines only."""

from __future__ import annotations

import json

import pytest

from aigw_translator.client_stream import ClientStream
from aigw_translator.endpoints import ClientSchema, Endpoint

CHUNK = b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n'


def _text_event(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"delta": {"content": text}}]}).encode() + b"\n\n"


@pytest.mark.parametrize(
    ("endpoint", "schema", "end"),
    [
        (Endpoint.CHAT_COMPLETIONS, ClientSchema.OPENAI, b"data: [DONE]\n\n"),
        (Endpoint.CHAT_COMPLETIONS, ClientSchema.OPENAI, b'data: {"error":{"message":"boom"}}\n\n'),
        (Endpoint.MESSAGES, ClientSchema.ANTHROPIC, b'event: message_stop\ndata: {"type":"message_stop"}\n\n'),
        (Endpoint.MESSAGES, ClientSchema.ANTHROPIC, b'event: error\ndata: {"type":"error"}\n\n'),
        (Endpoint.RESPONSES, ClientSchema.OPENAI, b'event: response.completed\ndata: {"type":"x"}\n\n'),
        # SSE's event line is optional: a Responses event names itself in its data.
        (Endpoint.RESPONSES, ClientSchema.OPENAI, b'data: {"type":"response.completed","sequence_number":9}\n\n'),
        (Endpoint.RESPONSES, ClientSchema.OPENAI, b'data: {"type": "response.failed", "sequence_number": 9}\n\n'),
    ],
)
def test_end_marker_completes_the_stream_even_split_across_chunks(endpoint, schema, end):
    stream = ClientStream(endpoint, schema)
    stream.sent(CHUNK)
    assert not stream.complete
    for i in range(len(end)):  # every split point
        split = ClientStream(endpoint, schema)
        split.sent(CHUNK + end[:i])
        split.sent(end[i:])
        assert split.complete, i


@pytest.mark.parametrize(
    ("endpoint", "schema"),
    [(Endpoint.CHAT_COMPLETIONS, ClientSchema.OPENAI), (Endpoint.MESSAGES, ClientSchema.ANTHROPIC)],
)
def test_model_text_that_looks_like_an_end_marker_does_not_end_the_stream(endpoint, schema):
    stream = ClientStream(endpoint, schema)
    stream.sent(_text_event("data: [DONE]\n\nevent: message_stop\nevent: error\n"))
    assert not stream.complete
    assert b"before the response was complete" in stream.error_event()


def test_events_are_counted_once_across_chunk_boundaries():
    stream = ClientStream(Endpoint.CHAT_COMPLETIONS, ClientSchema.OPENAI)
    body = CHUNK * 5
    for i in range(0, len(body), 7):
        stream.sent(body[i : i + 7])
    assert stream.events == 5
