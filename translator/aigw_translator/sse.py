"""Incremental Server-Sent Events parsing and encoding.

The parser accepts chunks cut at arbitrary byte positions (inside a line, inside a UTF-8 sequence,
between "\\r" and "\\n") and returns each event as soon as its terminating blank line arrives, so
nothing is held longer than the event it belongs to. An event is held up to MAX_EVENT_BYTES: a
backend that sends more without ending it fails its stream (EventTooLarge) instead of filling
the translator's memory; a line that arrives in many chunks is joined once, when it ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from .logs import get_logger

log = get_logger(__name__)

_BOM = b"\xef\xbb\xbf"
# The largest event held: above any provider's (an image's base64 in a Responses API
# `response.completed` is a few MiB), and a bound on what one stream can make the translator hold
# (parsed, an event takes several times its size: a few such streams must fit a sidecar's memory).
MAX_EVENT_BYTES = 16 * 1024 * 1024


class EventTooLarge(ValueError):
    """The backend's stream holds an event larger than MAX_EVENT_BYTES."""

    def __init__(self) -> None:
        super().__init__(f"the backend sent a stream event larger than {MAX_EVENT_BYTES / 2**20:g} MiB")


@dataclass(frozen=True, slots=True)
class Event:
    data: str
    event: str | None = None
    id: str | None = None


class SSEParser:
    def __init__(self) -> None:
        self._line_parts: list[bytes] = []  # the line under way (its pieces, joined once it ends)
        self._line_bytes = 0
        self._event_bytes = 0  # the data lines of the event under way
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._has_fields = False
        self._pending_cr = False
        # Bytes seen so far at the start of the stream, while they may still be a UTF-8 BOM.
        self._head: bytes | None = b""

    def _strip_bom(self, chunk: bytes) -> bytes:
        """A UTF-8 byte order mark at the very start of a stream is not part of the first line
        (the SSE spec says to ignore it), even when it arrives split across chunks."""
        assert self._head is not None
        head = self._head + chunk
        if len(head) < len(_BOM) and _BOM.startswith(head):
            self._head = head
            return b""
        self._head = None
        return head[len(_BOM) :] if head.startswith(_BOM) else head

    def feed(self, chunk: bytes) -> list[Event]:
        if self._head is not None:
            chunk = self._strip_bom(chunk)
        if not chunk:
            return []
        if self._pending_cr:
            # "\r" ended the previous chunk: a "\n" right after it belongs to the same line break.
            self._pending_cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if b"\n" not in chunk and b"\r" not in chunk:  # the line goes on
            self._line_parts.append(chunk)
            self._line_bytes += len(chunk)
            if self._event_bytes + self._line_bytes > MAX_EVENT_BYTES:
                raise EventTooLarge()
            return []
        buf = b"".join((*self._line_parts, chunk)) if self._line_parts else chunk
        if b"\r" in buf:
            if buf.endswith(b"\r"):
                self._pending_cr = True
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[Event] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            self._line(buf[start:nl], events)
            start = nl + 1
        rest = buf[start:]
        self._line_parts, self._line_bytes = ([rest], len(rest)) if rest else ([], 0)
        if self._event_bytes + self._line_bytes > MAX_EVENT_BYTES:
            raise EventTooLarge()
        return events

    def finish(self) -> list[Event]:
        """Events left when the stream ends without a final blank line."""
        events: list[Event] = []
        if self._head:
            self._line_parts.append(self._head)  # a stream shorter than a BOM: what it held was not one
        self._head = None
        if self._line_parts:
            self._line(b"".join(self._line_parts), events)
            self._line_parts, self._line_bytes = [], 0
        self._dispatch(events)
        return events

    def _line(self, raw: bytes, events: list[Event]) -> None:
        if not raw:
            self._dispatch(events)
            return
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(":"):
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_fields = True
            self._event_bytes += len(raw)
            if self._event_bytes > MAX_EVENT_BYTES:
                raise EventTooLarge()
        elif name == "event":
            self._event = value
            self._has_fields = True
        elif name == "id":
            self._id = value
            self._has_fields = True

    def _dispatch(self, events: list[Event]) -> None:
        if self._has_fields and (self._data or self._event):
            events.append(Event(data="\n".join(self._data), event=self._event, id=self._id))
        self._data = []
        self._event_bytes = 0
        self._event = None
        self._id = None
        self._has_fields = False


class RelayedEvents:
    """The events of a stream relayed to the client as the backend sent it, read on the way (its
    usage, its model): past an event too large to hold, the reading stops, not the stream (the
    client has that event's bytes already, and gets the rest as they come)."""

    def __init__(self) -> None:
        self._parser: SSEParser | None = SSEParser()

    def feed(self, chunk: bytes) -> list[Event]:
        if self._parser is None:
            return []
        try:
            return self._parser.feed(chunk)
        except EventTooLarge as exc:
            self._parser = None
            log.warning("stream_no_longer_read", reason=str(exc))
            return []

    def finish(self) -> list[Event]:
        return self._parser.finish() if self._parser is not None else []


def encode_event(data: str | bytes, event: str | None = None) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8")
    head = b"event: " + event.encode("utf-8") + b"\n" if event else b""
    body = b"".join(b"data: " + line + b"\n" for line in data.split(b"\n"))
    return head + body + b"\n"
