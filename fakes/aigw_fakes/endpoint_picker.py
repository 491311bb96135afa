"""A stand-in for the Gateway API Inference Extension's endpoint picker (EPP), the ext_proc service
an InferencePool names: it picks, for each request, the pod of the pool that serves it. The real
one watches the pool's pods and their model servers' metrics; this one is given the pods'
addresses and picks among them in turn. What it speaks is the real one's protocol (its v1 reference
implementation), as strictly:

- gRPC over TLS with a self-signed certificate (the real one's default), HTTP/2.
- Request body FULL_DUPLEX_STREAMED: the headers are answered only once the whole body arrived
  (the body decides the pod), then the body is streamed back, re-serialized. A body that is not a
  JSON object with a `model` is refused with a 400, as the real one refuses it; a pool without pods
  is a 503. A request without a body is placed on its headers alone; a
  BUFFERED body waits for ever, as with the real one (Envoy waits for the headers' answer first).
  The body goes back in pieces of 62,000 bytes, as the real one sends it.
- A request header x-gateway-model-name-rewrite replaces the body's model, as the real one does.
- The pick: the pod's "ip:port" in the x-gateway-destination-endpoint header and in dynamic
  metadata (namespace envoy.lb), as the real one gives it. The conformance tests' header
  `test-epp-endpoint-selection` ("ip:port,ip:port") narrows the choice to those pods, as the real
  one's test filter does.
- The response: its headers answered with `x-went-into-resp-headers: true` (the real one adds it),
  its body streamed back unchanged, its trailers answered.

Every exchange is recorded (`picks`): the request's headers as the picker saw them, its model and
the pod picked.
"""

from __future__ import annotations

import errno
import itertools
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2

from .certificates import self_signed
from .common import InThread

DESTINATION_HEADER = "x-gateway-destination-endpoint"
LB_NAMESPACE = "envoy.lb"
SELECTION_HEADER = "test-epp-endpoint-selection"
MODEL_REWRITE_HEADER = "x-gateway-model-name-rewrite"
RESPONSE_MARK = "x-went-into-resp-headers"
# The size of the pieces a body is sent back in (the reference picker's).
BODY_CHUNK = 62_000
NO_PODS = "inference gateway: ServiceUnavailable - failed to find candidate pods for serving the request"


@dataclass
class Pick:
    headers: dict[str, str]
    model: str | None
    pod: str | None


class FakeEndpointPicker(InThread):
    """Serves on `host`:`port` (0: a free port; `port` once started), picking among `pods`
    ("ip:port") in turn; its certificate names `server_name` (the name Envoy asks for: its Service's
    "<service>.<namespace>.svc"), as the real one's names whatever its start-up said."""

    def __init__(
        self,
        pods: Sequence[str],
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "endpoint-picker",
        server_name: str = "",
    ) -> None:
        self.pods = list(pods)
        self.host, self.port, self.name, self.server_name = host, port, name, server_name or name
        self.picks: list[Pick] = []
        self._server: grpc.aio.Server | None = None
        self._turn = itertools.count()

    async def start(self) -> FakeEndpointPicker:
        cert, key = self_signed(self.server_name)
        credentials = grpc.ssl_server_credentials([(key, cert)])
        self._server = grpc.aio.server()
        ep_grpc.add_ExternalProcessorServicer_to_server(_Servicer(self), self._server)
        address = f"{self.host}:{self.port}"
        try:
            self.port = self._server.add_secure_port(address, credentials)
        except RuntimeError:  # grpc's word for an address it could not bind
            self.port = 0
        if not self.port:
            self._server = None
            raise OSError(errno.EADDRINUSE, f"cannot listen on {address}")
        await self._server.start()
        return self

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace=0)

    def pick(self, headers: dict[str, str]) -> str | None:
        allowed = [p.strip() for p in headers.get(SELECTION_HEADER, "").split(",") if p.strip()]
        candidates = [p for p in self.pods if not allowed or p in allowed]
        return candidates[next(self._turn) % len(candidates)] if candidates else None


class _Servicer(ep_grpc.ExternalProcessorServicer):
    def __init__(self, picker: FakeEndpointPicker) -> None:
        self.picker = picker

    async def Process(
        self, requests: AsyncIterator[ep.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ep.ProcessingResponse]:
        headers: dict[str, str] = {}
        body = b""
        async for request in requests:
            kind = request.WhichOneof("request")
            if kind == "request_headers":
                headers = {
                    h.key: (h.raw_value.decode() if h.raw_value else h.value)
                    for h in request.request_headers.headers.headers
                }
                if request.request_headers.end_of_stream:  # no body: placed on the headers alone
                    pod = self.picker.pick(headers)
                    self.picker.picks.append(Pick(headers, None, pod))
                    yield _placed_headers(pod) if pod is not None else _refused(503, NO_PODS)
            elif kind == "request_body":
                body += request.request_body.body
                if request.request_body.end_of_stream:
                    for response in self._placed(headers, body):
                        yield response
            elif kind == "request_trailers":
                yield ep.ProcessingResponse(request_trailers=ep.TrailersResponse())
            elif kind == "response_headers":
                mark = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=RESPONSE_MARK, raw_value=b"true"))
                mutation = ep.HeaderMutation(set_headers=[mark])
                yield ep.ProcessingResponse(
                    response_headers=ep.HeadersResponse(response=ep.CommonResponse(header_mutation=mutation))
                )
            elif kind == "response_body":
                chunk = request.response_body
                yield ep.ProcessingResponse(response_body=_streamed(chunk.body, chunk.end_of_stream))
            elif kind == "response_trailers":
                yield ep.ProcessingResponse(response_trailers=ep.TrailersResponse())

    def _placed(self, headers: dict[str, str], body: bytes) -> list[ep.ProcessingResponse]:
        """The answers to a whole request: its headers (the pod), then its body; or a refusal."""
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        model = parsed.get("model") if isinstance(parsed, dict) else None
        if not isinstance(model, str) or not model:
            self.picker.picks.append(Pick(headers, None, None))
            return [_refused(400, "inference gateway: BadRequest - model not found in request body")]
        pod = self.picker.pick(headers)
        self.picker.picks.append(Pick(headers, model, pod))
        if pod is None:
            return [_refused(503, NO_PODS)]
        if headers.get(MODEL_REWRITE_HEADER):
            parsed["model"] = headers[MODEL_REWRITE_HEADER]
        rewritten = json.dumps(parsed).encode()
        chunks = [rewritten[i : i + BODY_CHUNK] for i in range(0, len(rewritten), BODY_CHUNK)] or [b""]
        return [
            _placed_headers(pod, len(rewritten)),
            *(
                ep.ProcessingResponse(request_body=_streamed(chunk, last == len(chunks) - 1))
                for last, chunk in enumerate(chunks)
            ),
        ]


def _placed_headers(pod: str, length: int | None = None) -> ep.ProcessingResponse:
    """The answer to a request's headers: the pod (the header and envoy.lb's metadata), and the
    length of the body sent back."""
    metadata = struct_pb2.Struct()
    metadata.update({LB_NAMESPACE: {DESTINATION_HEADER: pod}})
    set_headers = [
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=DESTINATION_HEADER, raw_value=pod.encode()))
    ]
    if length is not None:
        set_headers.append(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key="content-length", raw_value=str(length).encode())
            )
        )
    common = ep.CommonResponse(clear_route_cache=True, header_mutation=ep.HeaderMutation(set_headers=set_headers))
    return ep.ProcessingResponse(request_headers=ep.HeadersResponse(response=common), dynamic_metadata=metadata)


def _streamed(body: bytes, end_of_stream: bool) -> ep.BodyResponse:
    mutation = ep.BodyMutation(streamed_response=ep.StreamedBodyResponse(body=body, end_of_stream=end_of_stream))
    return ep.BodyResponse(response=ep.CommonResponse(body_mutation=mutation))


def _refused(status: int, message: str) -> ep.ProcessingResponse:
    return ep.ProcessingResponse(
        immediate_response=ep.ImmediateResponse(status=http_status_pb2.HttpStatus(code=status), body=message.encode())
    )
