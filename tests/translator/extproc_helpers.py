"""Building ext_proc ProcessingRequests the way Envoy 1.40 sends them (as measured), and driving the
servicer without Envoy."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import json_format, struct_pb2

import aigw_contract as contract
from aigw_translator.server import ExternalProcessor


def headers(pairs: dict[str, str], end_of_stream: bool = False) -> ep.HttpHeaders:
    return ep.HttpHeaders(
        headers=base_pb2.HeaderMap(
            headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()]
        ),
        end_of_stream=end_of_stream,
    )


def metadata_text(backend_name: str, key: str = contract.BACKEND_NAME_KEY) -> str:
    """Envoy renders xds.*_metadata attributes as protobuf text format (measured)."""
    return (
        f'filter_metadata {{ key: "{contract.INTERNAL_METADATA_NAMESPACE}" value {{ fields {{ key: "{key}" '
        f'value {{ string_value: "{backend_name}" }} }} }} }} '
    )


def upstream_attributes(host_backend: str = "", cluster_backend: str = "", route: str = "ns/route") -> dict[str, Any]:
    fields = {
        contract.UPSTREAM_HOST_METADATA_ATTRIBUTE: metadata_text(host_backend) if host_backend else "",
        contract.CLUSTER_METADATA_ATTRIBUTE: metadata_text(cluster_backend) if cluster_backend else "",
        contract.ROUTE_METADATA_ATTRIBUTE: metadata_text(route, contract.ROUTE_NAME_KEY),
    }
    s = struct_pb2.Struct()
    s.update(fields)
    return {"envoy.filters.http.ext_proc": s}


def request_headers(pairs: dict[str, str], end_of_stream: bool = False, **kw: Any) -> ep.ProcessingRequest:
    return ep.ProcessingRequest(request_headers=headers(pairs, end_of_stream), **kw)


def request_body(body: bytes | dict) -> ep.ProcessingRequest:
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    return ep.ProcessingRequest(request_body=ep.HttpBody(body=body, end_of_stream=True))


def response_headers(
    pairs: dict[str, str], backend_name: str = "", end_of_stream: bool = False
) -> ep.ProcessingRequest:
    req = ep.ProcessingRequest(response_headers=headers(pairs, end_of_stream))
    if backend_name:
        md = struct_pb2.Struct()
        md.update({contract.BACKEND_NAME_METADATA_KEY: backend_name, contract.CONTENT_LENGTH_KEY: "10"})
        req.metadata_context.filter_metadata[contract.METADATA_NAMESPACE].CopyFrom(md)
    return req


def response_body(body: bytes, end_of_stream: bool = True) -> ep.ProcessingRequest:
    return ep.ProcessingRequest(response_body=ep.HttpBody(body=body, end_of_stream=end_of_stream))


# The gRPC initial metadata each of the two ext_proc filters sends (the control plane configures it).
ROUTER_STREAM = ((contract.PHASE_METADATA_KEY, contract.ROUTER_PHASE),)
UPSTREAM_STREAM = ((contract.PHASE_METADATA_KEY, contract.UPSTREAM_PHASE),)


class StreamContext:
    """The part of grpc.aio.ServicerContext the translator reads: the stream's initial metadata."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata


async def drive(
    processor: ExternalProcessor,
    requests: Iterable[ep.ProcessingRequest],
    stream_metadata: tuple[tuple[str, str], ...] | None = None,
) -> list[ep.ProcessingResponse]:
    """Runs one ext_proc stream. Without `stream_metadata`, the stream is marked as the filter that
    sends such messages would mark it (upstream when the first message carries attributes)."""
    requests = list(requests)

    async def source() -> AsyncIterator[ep.ProcessingRequest]:
        for r in requests:
            yield r

    if stream_metadata is None:
        stream_metadata = UPSTREAM_STREAM if requests and requests[0].attributes else ROUTER_STREAM
    context = StreamContext(stream_metadata)
    return [resp async for resp in processor.Process(source(), context)]  # type: ignore[arg-type]


def set_headers(mutation: ep.HeaderMutation) -> dict[str, str]:
    return {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}


def metadata(resp: ep.ProcessingResponse) -> dict[str, Any]:
    return json_format.MessageToDict(resp.dynamic_metadata).get(contract.METADATA_NAMESPACE, {})


def immediate_json(resp: ep.ProcessingResponse) -> tuple[int, Any]:
    assert resp.WhichOneof("response") == "immediate_response", resp
    return resp.immediate_response.status.code, json.loads(resp.immediate_response.body)
