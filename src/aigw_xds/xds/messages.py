"""Small protobuf values the Envoy builders share."""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message

# The key of a cluster's HTTP protocol options (typed_extension_protocol_options).
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def packed(message: Message) -> any_pb2.Any:
    """`message` in a google.protobuf.Any, deterministically serialized."""
    out = any_pb2.Any()
    out.Pack(message, deterministic=True)
    return out


def duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def ads() -> config_source_pb2.ConfigSource:
    """The aggregated (ADS) stream, where every resource the builders name comes from."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )
