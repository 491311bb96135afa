"""Response content-encoding: the router phase must read (and may rewrite) provider bodies, so
gzip/deflate bodies are decoded, incrementally for streams. Other encodings are left untouched."""

from __future__ import annotations

import zlib

DECODABLE = frozenset({"gzip", "x-gzip", "deflate"})


class Decoder:
    def __init__(self, encoding: str) -> None:
        # gzip: wbits 16+; deflate: zlib-wrapped (32+ auto-detects gzip or zlib headers).
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS if "gzip" in encoding else 32 + zlib.MAX_WBITS)

    def feed(self, chunk: bytes) -> bytes:
        return self._d.decompress(chunk)

    def finish(self) -> bytes:
        return self._d.flush()


def normalise(value: str) -> str:
    return value.strip().lower()


def decode_all(encoding: str, body: bytes) -> bytes | None:
    """The decoded body, or None when it cannot be decoded."""
    try:
        d = Decoder(encoding)
        return d.feed(body) + d.finish()
    except zlib.error:
        return None
