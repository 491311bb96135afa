"""AWS event-stream frames (`application/vnd.amazon.eventstream`), as Bedrock streams them
(ConverseStream, InvokeModelWithResponseStream): incremental decoding with botocore's parser, at
any chunking, and the in-stream failures a frame can carry.

A frame that cannot be parsed (CRC mismatch, bad prelude or header) cannot be skipped: the stream
cannot be resynchronised, so `FrameDecoder.next` raises `CorruptFrame` and the translator ends the
client's stream with an error event.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from .base import load_json

# Exceptions a Bedrock stream can carry (`:exception-type`) -> (HTTP status, OpenAI error type).
STREAM_EXCEPTIONS = {
    "throttlingException": (429, "rate_limit_error"),
    "serviceQuotaExceededException": (429, "rate_limit_error"),
    "validationException": (400, "invalid_request_error"),
    "accessDeniedException": (403, "permission_error"),
    "resourceNotFoundException": (404, "not_found_error"),
    "modelStreamErrorException": (424, "server_error"),
    "modelTimeoutException": (408, "server_error"),
    "modelNotReadyException": (429, "rate_limit_error"),
    "internalServerException": (500, "server_error"),
    "serviceUnavailableException": (503, "server_error"),
}

T = TypeVar("T")

# What botocore's parser raises for bytes that are not a valid frame.
_PARSE_ERRORS = (ParserError, struct.error, KeyError, ValueError, IndexError)


class CorruptFrame(Exception):
    """The event stream holds bytes that are not a valid frame."""


class FrameDecoder:
    """Whole frames out of a byte stream cut anywhere: partial frames stay buffered."""

    def __init__(self) -> None:
        self._buffer = EventStreamBuffer()

    def add(self, chunk: bytes) -> None:
        self._buffer.add_data(chunk)

    def next(self) -> EventStreamMessage | None:
        """The next whole frame, or None until more bytes arrive. Raises CorruptFrame."""
        try:
            return self._buffer.next()
        except StopIteration:
            return None
        except _PARSE_ERRORS as exc:
            raise CorruptFrame(type(exc).__name__) from exc


@dataclass(frozen=True)
class StreamFailure:
    """An exception (modeled) or error (unmodeled) frame: what the client is told."""

    status: int
    openai_type: str
    message: str
    code: str | None


def frame_failure(message: EventStreamMessage) -> StreamFailure | None:
    """The failure an exception or error frame reports; None for any other frame."""
    headers = message.headers
    kind = headers.get(":message-type")
    if kind == "exception":
        name = str(headers.get(":exception-type") or "")
        status, type_ = STREAM_EXCEPTIONS.get(name, (500, "server_error"))
        payload = load_json(message.payload)
        text = payload.get("message") or payload.get("Message") if isinstance(payload, dict) else None
        original = payload.get("originalStatusCode") if isinstance(payload, dict) else None
        if name == "modelStreamErrorException" and isinstance(original, int) and 400 <= original <= 599:
            status = original  # the model's own answer (Claude's 529: overloaded), which says more than 424
        return StreamFailure(status, type_, str(text or name or "the backend stream failed"), name or None)
    if kind == "error":
        code = str(headers.get(":error-code") or "")
        text = str(headers.get(":error-message") or code or "the backend stream failed")
        return StreamFailure(500, "server_error", text, code or None)
    return None


def translate_items(
    items: Iterable[T | StreamFailure],
    translate: Callable[[T], bytes],
    fail: Callable[[StreamFailure], bytes],
    done: Callable[[], bool],
) -> bytes:
    """A Bedrock stream's decoded items through a stream translator: each event `translate`d until
    the translator is `done` (its last event or an error event went out); the failure that ends
    the backend's stream answered by `fail`, and nothing after it."""
    out: list[bytes] = []
    for item in items:
        if isinstance(item, StreamFailure):
            out.append(fail(item))
            break
        out.append(translate(item))
        if done():
            break
    return b"".join(out)
