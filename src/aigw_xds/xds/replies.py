"""xDS responses as the bytes gRPC sends, joined from each resource's serialization.

A resource is serialized once per version (cache.pack) and every stream of a fleet sends those very
bytes: a response is its few fields of its own (version, type URL, nonce) around them. Building a
DiscoveryResponse message per stream instead copied each resource into it and serialized it all
again, for each of a thousand nodes.

The bytes are what the message's deterministic serialization would be (fields in number order,
proto3 defaults left out): tests/unit/test_replies.py compares them with protobuf's own."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from .. import wire

if TYPE_CHECKING:
    from .cache import Resource

# Field numbers (envoy/service/discovery/v3/discovery.proto).
_VERSION_INFO, _RESOURCES, _TYPE_URL, _NONCE = 1, 2, 4, 5  # DiscoveryResponse, DeltaDiscoveryResponse
_REMOVED_RESOURCES = 6  # DeltaDiscoveryResponse
_ENTRY_VERSION, _ENTRY_RESOURCE, _ENTRY_NAME = 1, 2, 3  # discovery Resource


@dataclass(frozen=True, slots=True)
class Reply:
    """A response ready to send, and what the stream's log line says of it."""

    type_url: str
    nonce: str
    resources: int  # how many it carries
    removed: int  # delta: how many it says are gone
    data: bytes = field(repr=False)


@dataclass
class Selection:
    """A SotW answer's resources and version_info, shared by the streams that subscribe alike (one
    per snapshot and subscription: Snapshot.memo)."""

    resources: dict[str, Resource]
    version: str

    @cached_property
    def body(self) -> bytes:
        """The resources field, joined once for every stream this answer goes to."""
        return wire.entries(_RESOURCES, (r.packed for r in self.resources.values()))

    def forget_body(self) -> None:
        """Drop the joined body (a copy of every resource answered: as large as all the fleet's
        clusters) once the burst that needed it is over; joined again if needed again."""
        self.__dict__.pop("body", None)


def sotw(selection: Selection, type_url: str, nonce: str) -> Reply:
    """A DiscoveryResponse carrying the selection."""
    head = wire.string_field(_VERSION_INFO, selection.version)
    data = b"".join((head, selection.body, wire.string_field(_TYPE_URL, type_url), wire.string_field(_NONCE, nonce)))
    return Reply(type_url, nonce, len(selection.resources), 0, data)


def delta(
    system_version: str, type_url: str, nonce: str, send: Mapping[str, Resource], removed: Iterable[str]
) -> Reply:
    """A DeltaDiscoveryResponse carrying `send` (by name) and naming `removed` as gone. One join:
    each resource's bytes are copied once, into the response."""
    parts = [wire.string_field(_VERSION_INFO, system_version)]
    for name, resource in send.items():
        version, packed, name_bytes = resource.version.encode(), resource.packed, name.encode()
        fields = (
            (wire.field_key(_ENTRY_VERSION, len(version)), version) if version else (),
            (wire.field_key(_ENTRY_RESOURCE, len(packed)), packed),
            (wire.field_key(_ENTRY_NAME, len(name_bytes)), name_bytes) if name_bytes else (),
        )
        length = sum(len(part) for pair in fields for part in pair)
        parts.append(wire.field_key(_RESOURCES, length))
        parts.extend(part for pair in fields for part in pair)
    parts += (wire.string_field(_TYPE_URL, type_url), wire.string_field(_NONCE, nonce))
    gone = [name.encode() for name in removed]
    parts.extend(wire.field_key(_REMOVED_RESOURCES, len(name)) + name for name in gone)
    return Reply(type_url, nonce, len(send), len(gone), b"".join(parts))
