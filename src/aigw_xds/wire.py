"""Protobuf's wire format, where messages are assembled from bytes serialized apart (a route
configuration from its routes, a TranslatorConfig from its backends): a repeated message field is
its entries one after the other, each the field's key, the message's length and the message."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from itertools import chain


@lru_cache(maxsize=1 << 12)
def field_key(number: int, length: int) -> bytes:
    """The key of length-delimited field `number`, then `length`, as varints."""
    out = bytearray()
    for value in ((number << 3) | 2, length):
        while value >= 0x80:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out)


def entries(number: int, messages: Iterable[bytes]) -> bytes:
    """Messages, each serialized alone, as the entries of repeated field `number`: what a message
    holding them there serializes that field to."""
    return b"".join(chain.from_iterable((field_key(number, len(m)), m) for m in messages))
