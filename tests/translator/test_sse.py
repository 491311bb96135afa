from __future__ import annotations

import pytest

from aigw_translator.sse import Event, SSEParser, encode_event

STREAM = (
    b": comment\n"
    b'event: message_start\ndata: {"a": "\xc3\xa9t\xc3\xa9"}\n\n'
    b"data: line1\r\ndata: line2\r\n\r\n"
    b"id: 7\ndata:nospace\r\r"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    Event(data='{"a": "été"}', event="message_start"),
    Event(data="line1\nline2"),
    Event(data="nospace", id="7"),
    Event(data="[DONE]"),
]


def _parse(chunks: list[bytes]) -> list[Event]:
    parser = SSEParser()
    out: list[Event] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out + parser.finish()


def test_whole_stream() -> None:
    assert _parse([STREAM]) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_every_two_chunk_split(cut: int) -> None:
    assert _parse([STREAM[:cut], STREAM[cut:]]) == EXPECTED


def test_byte_by_byte() -> None:
    assert _parse([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


def test_events_are_returned_as_soon_as_complete() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: first\n") == []
    assert parser.feed(b"\ndata: sec") == [Event(data="first")]
    assert parser.feed(b"ond\n\n") == [Event(data="second")]


def test_finish_flushes_unterminated_event() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: tail") == []
    assert parser.finish() == [Event(data="tail")]


@pytest.mark.parametrize(
    ("data", "event", "encoded"),
    [
        ("x", None, b"data: x\n\n"),
        ("a\nb", "e", b"event: e\ndata: a\ndata: b\n\n"),
        (b"{}", "ping", b"event: ping\ndata: {}\n\n"),
    ],
)
def test_encode(data: str | bytes, event: str | None, encoded: bytes) -> None:
    assert encode_event(data, event) == encoded
    assert _parse([encoded]) == [Event(data=data if isinstance(data, str) else data.decode(), event=event)]


@pytest.mark.parametrize("cut", [0, 1, 2, 3, 5])
def test_utf8_bom_at_the_start_does_not_drop_the_first_event(cut: int) -> None:
    data = b'\xef\xbb\xbfdata: {"first": 1}\n\ndata: [DONE]\n\n'
    parser = SSEParser()
    got = parser.feed(data[:cut]) + parser.feed(data[cut:]) + parser.finish()
    assert got == [Event(data='{"first": 1}'), Event(data="[DONE]")]


def test_bom_only_at_the_very_start() -> None:
    parser = SSEParser()
    got = parser.feed(b"data: a\n\n") + parser.feed(b"\xef\xbb\xbfdata: b\n\n") + parser.finish()
    assert got == [Event(data="a")]  # a BOM later is part of a line ("\ufeffdata" is no field)
    parser = SSEParser()
    assert parser.feed(b"\xef\xbb") + parser.finish() == []


def test_an_event_is_held_up_to_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """An event larger than sse.MAX_EVENT_BYTES (made small here) fails: a line that never ends, or
    data lines that never meet a blank line; events below it, cut anywhere, parse as before."""
    from aigw_translator import sse

    monkeypatch.setattr(sse, "MAX_EVENT_BYTES", 100)
    endless = SSEParser()
    endless.feed(b"data: ")
    with pytest.raises(sse.EventTooLarge, match="larger than"):
        for _ in range(20):
            endless.feed(b"x" * 10)
    lines = SSEParser()
    with pytest.raises(sse.EventTooLarge):
        lines.feed(b"data: 0123456789\n" * 10)
    parser = SSEParser()
    whole = b"data: " + b"y" * 80 + b"\n\n"
    got = [e for i in range(len(whole)) for e in parser.feed(whole[i : i + 1])]
    assert [e.data for e in got] == ["y" * 80]
    assert [e.data for e in parser.feed(whole + whole)] == ["y" * 80, "y" * 80]  # held one at a time
