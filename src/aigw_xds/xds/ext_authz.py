"""The Envoy side of external authorization (pure): a route with an ir.ExtAuth has Envoy ask its
service whether each request may pass, as Envoy Gateway builds a SecurityPolicy's extAuth.

- One ext_authz filter per service (named after its route), after the token checks, off unless a
  route turns it on: its route does, with its context extensions. Another route, and the OAuth
  metadata an MCP client reads before it signs in, are not checked. Which filters a request runs is
  decided by the route it first matched: one a service routes again (recomputeRoute) to another
  route skips that route's checks (compile/mcp.py serves no such route beside another route with
  OAuth or extAuth on its port).
- The service answers over gRPC (Envoy's Authorization service) or HTTP. Its refusal reaches the
  client as it gave it; a service that does not answer in time is statusOnError (403 by default),
  or lets the request through with failOpen.
- What the service may change of the request: not the gateway's own headers (x-aigw-*: what Envoy
  verified, such as the OAuth token's claims, travels in them), nor x-envoy-* headers.
- The headers an HTTP service's answer sets on the request (headersToBackend) are the service's
  alone: a client's own are removed before the check (client_headers_filter), so a request the
  service did not answer and failOpen let through carries none (Envoy Gateway passes the client's);
  but for those the service is sent (_SENT_TO_HTTP_SERVICES, headersToExtAuth): a service
  exchanging the client's Authorization for another reads the client's.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2, http_uri_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import any_pb2, struct_pb2, wrappers_pb2

import aigw_contract as contract

from ..compile import ir
from .messages import duration, packed

FILTER_PREFIX = "envoy.filters.http.ext_authz/"
CLUSTER_PREFIX = "aigw-extauth/"
CLIENT_HEADERS_FILTER = "aigw.ext_auth_client_headers"
# The client headers Envoy sends an HTTP service whatever headersToExtAuth says.
_SENT_TO_HTTP_SERVICES = frozenset({"authorization", "host", ":authority", "content-length"})
# The route metadata namespace a service that asks for it is sent (includeRouteMetadata), with
# the route's resource as Envoy Gateway names its own there.
ROUTE_METADATA_NAMESPACE = "envoy-gateway"
# HttpService.path_override (field 10): in Envoy 1.40, not in the xds-protos release that builds
# these messages; written as the field's bytes, which Envoy reads as the field.
_PATH_OVERRIDE_FIELD = 10


def filter_name(auth: ir.ExtAuth) -> str:
    return FILTER_PREFIX + auth.name


def cluster_name(auth: ir.ExtAuth) -> str:
    return CLUSTER_PREFIX + auth.name


def services(routes: Iterable[ir.McpRoute]) -> list[ir.ExtAuth]:
    """The services these routes ask, each once, by name."""
    found = {mcp.ext_auth.name: mcp.ext_auth for mcp in routes if mcp.ext_auth is not None}
    return [found[name] for name in sorted(found)]


def ext_authz_filter(auth: ir.ExtAuth) -> hcm_pb2.HttpFilter:
    """The service's filter, off unless a route turns it on (per_route)."""
    config = ext_authz_pb2.ExtAuthz(
        transport_api_version=config_source_pb2.V3,
        failure_mode_allow=auth.fail_open,
        clear_route_cache=auth.recompute_route,
        decoder_header_mutation_rules=mutation_rules_pb2.HeaderMutationRules(
            # Routing headers are the service's to change, as Envoy Gateway lets it (recomputeRoute).
            allow_all_routing=wrappers_pb2.BoolValue(value=True),
            disallow_expression=regex_pb2.RegexMatcher(regex=f"{contract.OVERRIDE_HEADER_PREFIX}.*"),
        ),
    )
    if auth.status_on_error is not None:
        config.status_on_error.CopyFrom(http_status_pb2.HttpStatus(code=auth.status_on_error))
    if auth.max_request_bytes is not None:
        config.with_request_body.CopyFrom(ext_authz_pb2.BufferSettings(max_request_bytes=auth.max_request_bytes))
    if auth.headers_to_ext_auth:
        config.allowed_headers.CopyFrom(_header_list(auth.headers_to_ext_auth))
    if auth.route_metadata:
        config.route_metadata_context_namespaces.append(ROUTE_METADATA_NAMESPACE)
    timeout = duration(auth.timeout_s)
    retry = _retry_policy(auth.retry) if auth.retry is not None else None
    if auth.grpc:
        config.grpc_service.CopyFrom(
            grpc_service_pb2.GrpcService(
                envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(
                    cluster_name=cluster_name(auth), authority=auth.authority
                ),
                timeout=timeout,
                retry_policy=retry,
            )
        )
    else:
        scheme = "https" if auth.targets[0].tls is not None else "http"
        service = ext_authz_pb2.HttpService(
            server_uri=http_uri_pb2.HttpUri(
                uri=f"{scheme}://{auth.authority}{auth.path_override or auth.path_prefix}",
                cluster=cluster_name(auth),
                timeout=timeout,
            ),
            path_prefix=auth.path_prefix,
            retry_policy=retry,
        )
        if auth.path_override:
            service.MergeFromString(_string_field(_PATH_OVERRIDE_FIELD, auth.path_override))
        if auth.headers_to_backend:
            service.authorization_response.allowed_upstream_headers.CopyFrom(_header_list(auth.headers_to_backend))
        config.http_service.CopyFrom(service)
    return hcm_pb2.HttpFilter(name=filter_name(auth), typed_config=packed(config), disabled=True)


def client_headers_filter() -> hcm_pb2.HttpFilter:
    """The filter that removes a client's own values of the headers a service sets (before the
    services' filters), off unless a route turns it on (client_headers_removed)."""
    return hcm_pb2.HttpFilter(
        name=CLIENT_HEADERS_FILTER, typed_config=packed(header_mutation_pb2.HeaderMutation()), disabled=True
    )


def stripped_client_headers(auth: ir.ExtAuth) -> tuple[str, ...]:
    """The client headers removed before the check: those the service sets, but for those it is sent."""
    sent = _SENT_TO_HTTP_SERVICES | {name.lower() for name in auth.headers_to_ext_auth}
    return tuple(dict.fromkeys(n.lower() for n in auth.headers_to_backend if n.lower() not in sent))


def client_headers_removed(auth: ir.ExtAuth) -> any_pb2.Any:
    """What turns client_headers_filter on for a route: stripped_client_headers removed."""
    removed = [mutation_rules_pb2.HeaderMutation(remove=name) for name in stripped_client_headers(auth)]
    mutations = header_mutation_pb2.Mutations(request_mutations=removed)
    return packed(header_mutation_pb2.HeaderMutationPerRoute(mutations=mutations))


def per_route(auth: ir.ExtAuth) -> any_pb2.Any:
    """What turns the service's filter on for its route, with the context extensions it is sent."""
    settings = ext_authz_pb2.CheckSettings(context_extensions=dict(auth.context_extensions))
    return packed(ext_authz_pb2.ExtAuthzPerRoute(check_settings=settings))


def route_metadata(kind: str, name: str) -> struct_pb2.Struct:
    """The route's resource, as the service is sent it (includeRouteMetadata): `name` "<ns>/<name>"."""
    namespace, _, short = name.partition("/")
    metadata = struct_pb2.Struct()
    metadata.update({"resources": [{"kind": kind, "namespace": namespace, "name": short}]})
    return metadata


def _header_list(names: tuple[str, ...]) -> string_pb2.ListStringMatcher:
    return string_pb2.ListStringMatcher(
        patterns=[string_pb2.StringMatcher(exact=name, ignore_case=True) for name in names]
    )


def _retry_policy(retry: ir.Retry) -> base_pb2.RetryPolicy:
    """A service's retry, as Envoy retries a call outside routing (no per-try timeout)."""
    policy = base_pb2.RetryPolicy(
        num_retries=wrappers_pb2.UInt32Value(value=retry.num_retries), retry_on=",".join(retry.retry_on)
    )
    if retry.backoff_base_s is not None:
        policy.retry_back_off.base_interval.CopyFrom(duration(retry.backoff_base_s))
        if retry.backoff_max_s is not None:
            policy.retry_back_off.max_interval.CopyFrom(duration(retry.backoff_max_s))
    return policy


def _string_field(number: int, value: str) -> bytes:
    """A length-delimited field as protobuf writes it."""
    data = value.encode()
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
