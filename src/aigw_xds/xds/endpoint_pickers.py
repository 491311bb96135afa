"""The Envoy side of InferencePools (pure): a rule sending to a pool asks the pool's endpoint picker
(the Gateway API Inference Extension's EPP, an ext_proc service) which pod serves each request, and
its cluster connects where the picker answered.

- One ext_proc filter, just before the router, that does nothing unless a route turns its phases
  on: each pool rule's routes do, naming their pool's picker (ExtProcPerRoute overrides its
  processing mode and gRPC service). The picker reads the request as the translator left it (the
  router phase runs before it) and streams it back (FULL_DUPLEX_STREAMED, as the reference picker
  requires; its trailers too), then sees the response. It fails closed: a request it did not place
  gets a 503. The request keeps its route (the picker's request to route again is not followed).
- The rule's cluster is ORIGINAL_DST on the picker's header: the pod's "ip:port". A client's own
  value of that header is removed before any filter runs (early header mutation), so only the
  picker places a request (and only the request's body names its model: the reference picker's
  model rewrite header goes too).
- The picker's cluster: its Service's ready endpoints (over EDS), reached over HTTP/2 and TLS whose
  certificate is not verified (the reference picker serves a self-signed one; Envoy AI Gateway
  connects the same way).
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, extension_pb2, grpc_service_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2, processing_mode_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import header_mutation_pb2 as early_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import any_pb2

import aigw_contract as contract

from ..compile import ir
from ..compile.pools import PICKER_CLUSTER_PREFIX
from .messages import HTTP_PROTOCOL_OPTIONS, ads, duration, packed

# Where the picker puts the address of the pod it picked (the Inference Extension's protocol).
DESTINATION_HEADER = "x-gateway-destination-endpoint"
# What a client may not tell the picker: the pod, and another model than the body's (the reference
# picker rewrites the body's model to this header's, past the routes that matched the model: a
# model name with an Authorization match, as Envoy AI Gateway's example has). A request's objective
# and fairness id are the client's to give (the Inference Extension's x-gateway-inference-*).
CLIENT_HEADERS_REMOVED = (DESTINATION_HEADER, "x-gateway-model-name-rewrite")
FILTER_NAME = "envoy.filters.http.ext_proc/endpoint_picker"
# The route metadata key (contract.INTERNAL_METADATA_NAMESPACE) naming the pool of a route's rule.
POOL_KEY = "inference_pool"
# How long Envoy waits for each of the picker's answers: it may hold a request while the pool is
# saturated (Envoy AI Gateway's figure).
MESSAGE_TIMEOUT_S = 300


def pickers(virtual_hosts: Iterable[ir.VirtualHost]) -> dict[str, ir.EndpointPicker]:
    """The pickers the hosts' rules ask, by cluster name, sorted."""
    found = {rule.picker.cluster: rule.picker for vhost in virtual_hosts for rule in vhost.rules if rule.picker}
    return dict(sorted(found.items()))


def _grpc_service(cluster: str, authority: str = "") -> grpc_service_pb2.GrpcService:
    return grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster, authority=authority)
    )


# The picker filter's own gRPC service: required, never asked (every route that switches the filter
# on names its pool's picker), so the listener does not change with the pools there are.
_NO_PICKER = _grpc_service(PICKER_CLUSTER_PREFIX + "none")


def picker_filter() -> hcm_pb2.HttpFilter:
    """The listener's picker filter. It processes nothing of its own (every phase skipped: no stream
    opened) and is on for every route: a route decides only once the request's body gave its model,
    after Envoy made the filter chain, so one off by default would never be made for it. A pool
    rule's routes switch its phases on and name their picker (picker_per_route)."""
    mode = processing_mode_pb2.ProcessingMode
    processor = ext_proc_pb2.ExternalProcessor(
        grpc_service=_NO_PICKER,
        processing_mode=mode(
            request_header_mode=mode.SKIP,
            request_body_mode=mode.NONE,
            request_trailer_mode=mode.SKIP,
            response_header_mode=mode.SKIP,
            response_body_mode=mode.NONE,
            response_trailer_mode=mode.SKIP,
        ),
        message_timeout=duration(MESSAGE_TIMEOUT_S),
        failure_mode_allow=False,
        status_on_error=http_status_pb2.HttpStatus(code=http_status_pb2.ServiceUnavailable),
        # The route stays the one the request had when the picker was asked (the reference picker
        # asks Envoy to route again): routed again, after the translator's router phase took off
        # the route-scope headers and rewrote the path, it would find no route, or another one.
        route_cache_action=ext_proc_pb2.ExternalProcessor.RETAIN,
    )
    return hcm_pb2.HttpFilter(name=FILTER_NAME, typed_config=packed(processor))


def picker_per_route(picker: ir.EndpointPicker) -> any_pb2.Any:
    """A pool rule's route: the picker asked for the whole exchange, headers and bodies streamed
    both ways (FULL_DUPLEX_STREAMED, which needs the trailers sent too)."""
    mode = processing_mode_pb2.ProcessingMode
    streamed = mode.FULL_DUPLEX_STREAMED
    processing = mode(
        request_header_mode=mode.SEND,
        request_body_mode=streamed,
        request_trailer_mode=mode.SEND,
        response_header_mode=mode.SEND,
        response_body_mode=streamed,
        response_trailer_mode=mode.SEND,
    )
    grpc_service = _grpc_service(picker.cluster, picker.sni)
    overrides = ext_proc_pb2.ExtProcOverrides(processing_mode=processing, grpc_service=grpc_service)
    return packed(ext_proc_pb2.ExtProcPerRoute(overrides=overrides))


def client_headers_removed() -> extension_pb2.TypedExtensionConfig:
    """The HCM's early header mutation: a client's own destination and model rewrite headers, gone
    before routing."""
    mutation = early_pb2.HeaderMutation(
        mutations=[mutation_rules_pb2.HeaderMutation(remove=name) for name in CLIENT_HEADERS_REMOVED]
    )
    return extension_pb2.TypedExtensionConfig(
        name="envoy.http.early_header_mutation.header_mutation", typed_config=packed(mutation)
    )


def pool_cluster(cluster: cluster_pb2.Cluster, rule: ir.Rule) -> None:
    """Make `cluster` (the rule's, built as for any rule) its pool's: it connects to the address the
    picker put in the request, and names the pool's backend for the per-attempt phase (its hosts
    carry no metadata). A traffic policy's load balancer and health checks have no hosts to work on
    (the picker balances; the pods come and go with it; compile warns)."""
    cluster.type = cluster_pb2.Cluster.ORIGINAL_DST
    cluster.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    cluster.original_dst_lb_config.CopyFrom(
        cluster_pb2.Cluster.OriginalDstLbConfig(use_http_header=True, http_header_name=DESTINATION_HEADER)
    )
    cluster.ClearField("common_lb_config")  # locality weights, a panic threshold: no hosts to weigh
    for field in (
        "load_balancing_policy",
        "health_checks",
        "outlier_detection",
        "eds_cluster_config",
        "load_assignment",
    ):
        cluster.ClearField(field)
    cluster.ignore_health_on_host_removal = False
    fields = cluster.metadata.filter_metadata[contract.INTERNAL_METADATA_NAMESPACE].fields
    fields[contract.BACKEND_NAME_KEY].string_value = rule.backends[0].name


def picker_cluster(picker: ir.EndpointPicker) -> tuple[cluster_pb2.Cluster, endpoint_pb2.ClusterLoadAssignment]:
    """The picker's cluster (gRPC over HTTP/2 and TLS) and its assignment: its Service's ready
    endpoints."""
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
        )
    )
    cluster = cluster_pb2.Cluster(
        name=picker.cluster,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads()),
        connect_timeout=duration(10),
        transport_socket=base_pb2.TransportSocket(
            name="envoy.transport_sockets.tls", typed_config=packed(_picker_tls(picker))
        ),
    )
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Pack(options, deterministic=True)
    assignment = endpoint_pb2.ClusterLoadAssignment(
        cluster_name=picker.cluster,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(
                            address=address_pb2.Address(
                                socket_address=address_pb2.SocketAddress(address=e.address, port_value=e.port)
                            )
                        )
                    )
                    for e in picker.endpoints
                ]
            )
        ],
    )
    return cluster, assignment


def _picker_tls(picker: ir.EndpointPicker) -> tls_pb2.UpstreamTlsContext:
    """TLS to the picker, offering HTTP/2 (gRPC); its certificate is not verified."""
    context = tls_pb2.UpstreamTlsContext(sni=picker.sni)
    context.common_tls_context.alpn_protocols.append("h2")
    return context
