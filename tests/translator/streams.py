"""Helpers for stream translator tests."""

from __future__ import annotations

import json
import random
import struct
import zlib
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


def random_chunkings(data: bytes, count: int, seed: int, cuts: int | tuple[int, int]) -> list[list[bytes]]:
    """`count` random cuttings of the stream, the same on every run (`seed`), each at `cuts` places
    (a number, or a (least, most) range drawn for each cutting)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        points = sorted(rng.sample(range(1, len(data)), cuts if isinstance(cuts, int) else rng.randint(*cuts)))
        out.append([data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)])
    return out


def aws_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message, as Bedrock streams them: prelude (total length, headers
    length, CRC), string headers, payload, message CRC (CRC32 of everything before it)."""
    raw = b"".join(
        bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v.encode())) + v.encode()
        for k, v in headers.items()
    )
    prelude = struct.pack(">II", 16 + len(raw) + len(payload), len(raw))
    msg = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw + payload
    return msg + struct.pack(">I", zlib.crc32(msg))


def aws_exception(kind: str, message: str, **fields: Any) -> bytes:
    """A Bedrock stream's exception frame (`:exception-type` kind, e.g. throttlingException; `fields`
    beside the message, e.g. a modelStreamErrorException's originalStatusCode)."""
    headers = {":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"}
    return aws_frame(headers, json.dumps({"message": message, **fields}).encode())
