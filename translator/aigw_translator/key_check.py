"""The Authorization service (Envoy's ext_authz, over gRPC) that checks a request's client key for a
SecurityPolicy's apiKeyAuth (or its user and password, for its basicAuth): the keys (the users'
password digests) stay in the translator's configuration, never in Envoy's.

Envoy names the policies the request's route asks for (contract.CLIENT_KEY_POLICIES: any of them;
with contract.CLIENT_KEY_OPTIONAL, a request with no key of theirs passes too: it is on its way to
the router phase, which may route it to a rule that checks again). A key of them: the request
passes, its client's id in each such policy's forwardClientIDHeader (over any the client sent), and
each such policy's name (contract.CLIENT_KEY_METADATA_PREFIX) with the client's in the request's
metadata (what the check after the router phase reads: one Secret may serve two policies), and every
key source of the policies removed (a client's key reaches no provider, whatever `sanitize` says).
Else a 401 in the client's API shape. With no configuration of the stream's fleet, UNAVAILABLE (Envoy
answers its 503): not the client's fault.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2
from multidict import CIMultiDict, MultiDict

import aigw_contract as contract

from .client_keys import ClientKeys
from .endpoints import client_schema_of_path
from .errors import gateway_error_body
from .logs import get_logger

log = get_logger(__name__)
Context = grpc.aio.ServicerContext[auth_pb2.CheckRequest, auth_pb2.CheckResponse]

UNAUTHENTICATED_MESSAGE = "a valid API key is required"
BASIC_UNAUTHENTICATED_MESSAGE = "a valid user name and password are required (HTTP Basic authentication)"


def verdict(
    keys: Mapping[str, ClientKeys], policies: list[str], optional: bool, headers: Mapping[str, str], path: str
) -> auth_pb2.CheckResponse:
    """The answer to a request (`headers` as Envoy sends them: lowercase names, values of one name
    joined by commas; `path` with its query) whose route asks for a key of any of `policies`."""
    query = MultiDict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query, keep_blank_values=True))
    request_headers = CIMultiDict(headers)
    known = {name: keys[name] for name in policies if name in keys}
    found = [(name, client) for name, policy in known.items() if (client := policy.client_id(request_headers, query))]
    if found or optional:
        return _ok(known, found)
    schema = client_schema_of_path(path)
    # Users' names and passwords asked for (every policy a basicAuth): a Basic challenge, which
    # browsers and HTTP clients answer.
    basic = bool(known) and all(policy.basic for policy in known.values())
    answer_headers = [_header("content-type", "application/json")]
    if basic:
        answer_headers.append(_header("www-authenticate", 'Basic realm="aigw"'))
    return auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.UNAUTHENTICATED),
        denied_response=auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.Unauthorized),
            headers=answer_headers,
            body=gateway_error_body(
                schema, 401, BASIC_UNAUTHENTICATED_MESSAGE if basic else UNAUTHENTICATED_MESSAGE
            ).decode(),
        ),
    )


def _ok(known: Mapping[str, ClientKeys], found: list[tuple[str, str]]) -> auth_pb2.CheckResponse:
    ok = auth_pb2.OkHttpResponse(
        headers_to_remove=sorted({h.lower() for keys in known.values() for h in keys.source_names("header")}),
        query_parameters_to_remove=sorted({q for keys in known.values() for q in keys.source_names("query_param")}),
    )
    metadata = struct_pb2.Struct()
    for name, client in found:
        header = known[name].client_id_header
        if header:
            ok.headers.append(_header(header, client))
        metadata.update({contract.CLIENT_KEY_METADATA_PREFIX + name: client})
    return auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK), ok_response=ok, dynamic_metadata=metadata)


def _header(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


class KeyCheck(auth_grpc.AuthorizationServicer):  # type: ignore[misc]  # (generated without types)
    """The service, on the translator's gRPC server: the configuration of the stream's fleet."""

    def __init__(self, runtime_for: Callable[[Any], Any]) -> None:
        self._runtime_for = runtime_for

    async def Check(
        self,
        request: auth_pb2.CheckRequest,
        context: grpc.aio.ServicerContext[auth_pb2.CheckRequest, auth_pb2.CheckResponse],
    ) -> auth_pb2.CheckResponse:
        runtime = self._runtime_for(context)
        if runtime is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no configuration of this fleet here (yet)")
        extensions = request.attributes.context_extensions
        http = request.attributes.request.http
        policies = [name for name in extensions.get(contract.CLIENT_KEY_POLICIES, "").split(",") if name]
        keys = runtime.client_keys
        missing = [name for name in policies if name not in keys]
        if missing:  # (a configuration not here yet, or another fleet's: no key of theirs is known)
            log.warning("client_keys_unknown", policies=missing)
        optional = extensions.get(contract.CLIENT_KEY_OPTIONAL) == "1"
        return verdict(keys, policies, optional, http.headers, http.path or "/")
