"""Small protobuf values the Envoy builders share."""

from __future__ import annotations

from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message


def packed(message: Message) -> any_pb2.Any:
    """`message` in a google.protobuf.Any, deterministically serialized."""
    out = any_pb2.Any()
    out.Pack(message, deterministic=True)
    return out


def duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))
