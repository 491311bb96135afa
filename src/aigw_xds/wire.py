"""Protobuf's wire format, where messages are assembled from bytes serialized apart (a route
configuration from its routes, a TranslatorConfig from its backends): a repeated message field is
its entries one after the other, each the field's key, the message's length and the message."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain

from google.protobuf.message import Message

_ANY_TYPE_URL, _ANY_VALUE = 1, 2  # google/protobuf/any.proto


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


def string_field(number: int, text: str) -> bytes:
    """A singular string field: nothing when empty (proto3's default)."""
    data = text.encode()
    return field_key(number, len(data)) + data if data else b""


@dataclass(frozen=True, slots=True)
class Serialized:
    """A message assembled as its deterministic serialization rather than built (a route
    configuration, joined from each route's bytes: a message of 20,000 routes would be copied from
    the routes, then serialized again, on every edit, and hold ten times the memory; a translator
    configuration, from its runs' backends). Kept packed in a google.protobuf.Any: the very bytes
    every stream sends (xds.cache.pack), not a copy."""

    message_type: type[Message]
    packed: bytes = field(repr=False)
    start: int = field(repr=False)  # where the message's serialization begins in `packed`

    @classmethod
    def of(cls, message: Message) -> Serialized:
        return cls.joined(type(message), (message.SerializeToString(deterministic=True),))

    @classmethod
    def joined(cls, message_type: type[Message], parts: Sequence[bytes | memoryview]) -> Serialized:
        """The message whose serialization is `parts`, one after the other, packed in a
        google.protobuf.Any as Any.Pack would hold it."""
        length = sum(map(len, parts))
        type_url = string_field(_ANY_TYPE_URL, "type.googleapis.com/" + message_type.DESCRIPTOR.full_name)
        head = type_url + field_key(_ANY_VALUE, length) if length else type_url
        return cls(message_type, b"".join((head, *parts)), len(head))

    @property
    def data(self) -> memoryview:
        """The message's serialization (a view: no copy)."""
        return memoryview(self.packed)[self.start :]

    def parse(self) -> Message:
        return self.message_type.FromString(self.data)  # type: ignore[arg-type]  # a memoryview: no copy
