"""Helpers for stream translator tests."""

from __future__ import annotations

import json
from typing import Any

from aigw_translator.sse import SSEParser
from aigw_translator.translators.base import ResponseTranslator


def run(translator: ResponseTranslator, chunks: list[bytes]) -> bytes:
    out = b"".join(translator.feed(c) for c in chunks)
    return out + translator.finish()


def events(data: bytes) -> list[tuple[str | None, Any]]:
    parser = SSEParser()
    out = []
    for ev in [*parser.feed(data), *parser.finish()]:
        out.append((ev.event, ev.data if ev.data == "[DONE]" else json.loads(ev.data)))
    return out


def splits(data: bytes, step: int) -> list[list[bytes]]:
    """The stream whole, byte by byte, and cut every `step` bytes from several offsets."""
    out = [[data], [data[i : i + 1] for i in range(len(data))]]
    for offset in range(0, step):
        cut = [data[:offset]] + [data[i : i + step] for i in range(offset, len(data), step)]
        out.append([c for c in cut if c])
    return out
