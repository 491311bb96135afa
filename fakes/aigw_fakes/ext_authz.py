"""A stand-in for an external authorization service (what Envoy Gateway's ExtAuth names): Envoy asks
it, for each request, whether the request may pass. The real ones (OPA, Authorino, an in-house
service) decide on a policy; this one allows a request whose `x-access-control` header holds the
value it was given, as Envoy AI Gateway's test service does. It speaks either protocol Envoy asks
in, as strictly as Envoy's own reference services:

- gRPC: envoy.service.auth.v3.Authorization/Check over HTTP/2 (plain text). A CheckRequest without
  its HTTP request attributes is refused (INVALID_ARGUMENT), as a real service cannot judge it. It
  allows with OK (its `x-ext-authz-user` header added to the request, and `set_headers` given to
  the test), denies with PERMISSION_DENIED and a 403 whose body says why.
- HTTP: any method and path; a 200 allows (its `x-ext-authz-user` header is the one a route may
  pass on), a 403 with a text body denies.

Every check is recorded (`checks`): the path, method, headers, body, context extensions and route
metadata the service was sent (the last two over gRPC only, as HTTP carries none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from .common import InThread

ACCESS_HEADER = "x-access-control"
USER_HEADER = "x-ext-authz-user"
DENIED_BODY = "denied by the authorization service's policy"


@dataclass
class Check:
    path: str
    method: str
    headers: dict[str, str]
    body: str
    context_extensions: dict[str, str] = field(default_factory=dict)
    route_metadata: dict[str, Any] = field(default_factory=dict)


class ExtAuthzFake(InThread):
    """Serves gRPC (`grpc` True) or HTTP on 127.0.0.1:`port` (0: a free port; `port` once started),
    allowing requests whose access header is `allowed`. `set_headers`: more headers an allowed
    request gets (gRPC), to show what Envoy lets a service change."""

    def __init__(self, allowed: str = "letmein", grpc: bool = True, port: int = 0) -> None:
        self.allowed, self.grpc, self.port = allowed, grpc, port
        self.name = "ext-authz-grpc" if grpc else "ext-authz-http"
        self.set_headers: dict[str, str] = {}
        self.checks: list[Check] = []
        self._grpc_server: grpc.aio.Server | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> ExtAuthzFake:
        if self.grpc:
            server = grpc.aio.server()
            auth_grpc.add_AuthorizationServicer_to_server(_Servicer(self), server)
            self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
            await server.start()
            self._grpc_server = server
        else:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._http_check)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._grpc_server is not None:
            await self._grpc_server.stop(None)
        if self._runner is not None:
            await self._runner.cleanup()

    def allows(self, headers: dict[str, str]) -> bool:
        return headers.get(ACCESS_HEADER) == self.allowed

    async def _http_check(self, request: web.Request) -> web.Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        body = (await request.read()).decode(errors="replace")
        self.checks.append(Check(request.path_qs, request.method, headers, body))
        if self.allows(headers):
            return web.Response(status=200, headers={USER_HEADER: headers[ACCESS_HEADER]})
        return web.Response(status=403, text=DENIED_BODY)


class _Servicer(auth_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, fake: ExtAuthzFake) -> None:
        self.fake = fake

    async def Check(
        self, request: auth_pb2.CheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> auth_pb2.CheckResponse:
        if not request.attributes.HasField("request") or not request.attributes.request.HasField("http"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no HTTP request attributes to judge")
        http = request.attributes.request.http
        headers = dict(http.headers)
        metadata = json_format.MessageToDict(request.attributes.route_metadata_context)
        self.fake.checks.append(
            Check(
                http.path,
                http.method,
                headers,
                http.body,
                dict(request.attributes.context_extensions),
                metadata.get("filterMetadata", {}),
            )
        )
        if self.fake.allows(headers):
            added = {USER_HEADER: headers[ACCESS_HEADER], **self.fake.set_headers}
            return auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.OK),
                ok_response=auth_pb2.OkHttpResponse(
                    headers=[
                        base_pb2.HeaderValueOption(
                            header=base_pb2.HeaderValue(key=name, value=value),
                            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                        )
                        for name, value in added.items()
                    ]
                ),
            )
        return auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
            denied_response=auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=http_status_pb2.Forbidden),
                headers=[
                    base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key="content-type", value="text/plain"))
                ],
                body=DENIED_BODY,
            ),
        )
