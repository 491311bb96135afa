"""The stream as the client receives it: how many events it was sent, whether it reached its
proper end, and the error event that ends one that did not.

A provider that closes a stream early (before `[DONE]`, `message_stop` or `response.completed`) must
not look complete to the client: SDKs treat a stream that simply stops as a finished answer. The
count and the check look at the bytes the client was sent (whatever translator produced them), so
they hold for every schema pair alike.
"""

from __future__ import annotations

import orjson

from .endpoints import MEDIA_STREAM_ENDPOINTS, ClientSchema, Endpoint
from .errors import gateway_error_body
from .sse import encode_event

# The line that ends a complete stream, per client-facing stream kind, matched as a whole SSE line
# (a newline before and after it), so that model text that happens to contain these words (JSON
# escapes the newlines in text) never counts. An error event also ends a stream: the client has been
# told what went wrong.
_OPENAI_ENDS = (b"\ndata: [DONE]\n", b"\ndata: [DONE]\r", b'\ndata: {"error"')
_ANTHROPIC_ENDS = (b"\nevent: message_stop\n", b"\nevent: message_stop\r", b"\nevent: error\n", b"\nevent: error\r")


def _typed_ends(*names: bytes) -> tuple[bytes, ...]:
    """The lines that end a stream of OpenAI's typed events on one of `names`: its `event:` line, or
    its data naming its `type` first (SSE's event line is optional; OpenAI's data says the type)."""
    return tuple(b"\nevent: " + name + end for name in names for end in (b"\n", b"\r")) + tuple(
        b'\ndata: {"type":' + space + b'"' + name + b'"' for name in names for space in (b"", b" ")
    )


_RESPONSES_ENDS = _typed_ends(b"response.completed", b"response.incomplete", b"response.failed", b"error")
# An image generation, speech or transcription stream ends with the event that carries its usage.
_MEDIA_ENDS = (
    _typed_ends(
        b"image_generation.completed", b"image_edit.completed", b"speech.audio.done", b"transcript.text.done", b"error"
    )
    + _OPENAI_ENDS
)
# Cohere's v2 chat stream ends with its message-end event (an error is one too), sometimes followed
# by a `data: [DONE]` line.
_COHERE_ENDS = (
    b"\nevent: message-end\n",
    b"\nevent: message-end\r",
    b'\ndata: {"type":"message-end"',
    b"\ndata: [DONE]\n",
    b"\ndata: [DONE]\r",
)
_TAIL = 64


class ClientStream:
    """Follows the bytes sent to the client: `events` sent so far, `complete` once an end marker
    went out."""

    def __init__(self, endpoint: Endpoint, schema: ClientSchema) -> None:
        self.endpoint = endpoint
        self.schema = schema
        self._markers: tuple[bytes, ...]
        if schema is ClientSchema.ANTHROPIC:
            self._markers = _ANTHROPIC_ENDS
        elif schema is ClientSchema.COHERE:
            self._markers = _COHERE_ENDS
        elif endpoint is Endpoint.RESPONSES:
            self._markers = _RESPONSES_ENDS
        elif endpoint in MEDIA_STREAM_ENDPOINTS:
            self._markers = _MEDIA_ENDS
        else:
            self._markers = _OPENAI_ENDS
        self._tail = b"\n"  # the stream starts at a line start
        self.events = 0
        self.complete = False

    def sent(self, out: bytes) -> None:
        if not out:
            return
        window = self._tail + out
        # Every SSE event has a data line; one split across two chunks is counted once.
        self.events += window.count(b"\ndata:") - self._tail.count(b"\ndata:")
        self.complete = self.complete or any(marker in window for marker in self._markers)
        self._tail = window[-_TAIL:]

    def error_event(self, message: str = "the backend ended the stream before the response was complete") -> bytes:
        """The event that tells the client its stream was cut short, in the client's schema."""
        if self.schema is ClientSchema.ANTHROPIC:
            return encode_event(gateway_error_body(self.schema, 502, message), "error")
        if self.schema is ClientSchema.COHERE:
            # Cohere's own way to end a failed generation: finish_reason ERROR with the error text.
            end = {"type": "message-end", "delta": {"finish_reason": "ERROR", "error": message}}
            return encode_event(orjson.dumps(end), "message-end")
        if self.endpoint is Endpoint.RESPONSES:
            body = {"type": "error", "code": "upstream_stream_incomplete", "message": message, "param": None}
            return encode_event(orjson.dumps(body), "error")
        return encode_event(gateway_error_body(self.schema, 502, message))
