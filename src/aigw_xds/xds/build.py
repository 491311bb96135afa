"""Build (pure): one Gateway's IR -> the Envoy resources a node of its fleet gets.

The layout follows Envoy AI Gateway's data plane: a listener per port with an HTTP connection
manager (RDS over ADS, a JSON access log, and the router-level ext_proc: the translator reads the
model from the body, sets x-ai-eg-model and clears the route cache), virtual hosts per hostname,
routes matching x-ai-eg-model under the root prefix, one cluster per route rule whose localities
are the rule's backendRefs (priority, weight, endpoint metadata naming the backend), and per
cluster the upstream filters [ext_proc, header_mutation (content-length), upstream_codec]. Without
the translator (translator_enabled off) there are no ext_proc filters and no translator cluster.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, grpc_service_pb2, protocol_pb2
from envoy.config.core.v3 import substitution_format_string_pb2 as sfs_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2, processing_mode_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.http.upstream_codec.v3 import upstream_codec_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2, wrappers_pb2
from google.protobuf.message import Message

import aigw_contract as contract
from aigw.translator.v1 import config_pb2

from ..compile import ir
from . import type_urls
from .cache import FleetResources

ROUTE_NOT_FOUND_BODY = (
    '{"error":{"message":"No matching route found. It is likely because the model specified in your request is '
    'not configured in the Gateway.","type":"invalid_request_error","param":"model","code":"model_not_found"}}'
)
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
RETRIABLE_STATUS_CODES = (429, 500, 502, 503, 504)


def _metadata(key: str) -> str:
    """The access-log operator reading `key` of the translator's dynamic metadata."""
    return f"%DYNAMIC_METADATA({contract.METADATA_NAMESPACE}:{key})%"


ACCESS_LOG_FORMAT = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    # The client's path: the upstream phase rewrites :path for the backend it picked.
    "path": f"%REQ({contract.ORIGINAL_PATH_HEADER.upper()}?:PATH)%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "duration_ms": "%DURATION%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "gen_ai.request.model": f"%REQ({contract.MODEL_HEADER.upper()})%",
    "gen_ai.response.model": _metadata(contract.RESPONSE_MODEL_KEY),
    "gen_ai.request.model_override": _metadata(contract.MODEL_NAME_OVERRIDE_KEY),
    "gen_ai.provider.name": _metadata(contract.BACKEND_NAME_METADATA_KEY),
    contract.INPUT_TOKENS_KEY: _metadata(contract.INPUT_TOKENS_KEY),
    contract.OUTPUT_TOKENS_KEY: _metadata(contract.OUTPUT_TOKENS_KEY),
    # True when the usage and costs of the line are provisional: a stream that stopped before the
    # provider reported its final usage (the client hung up, the provider cut it).
    contract.USAGE_ESTIMATED_KEY: _metadata(contract.USAGE_ESTIMATED_KEY),
}


@dataclass(frozen=True)
class BuildSettings:
    # Where Envoy reaches the translator: "host:port" or "unix:/path", comma-separated when there are
    # several translator processes (translator_addresses). The control plane fills in port 0.
    translator_address: str = "127.0.0.1:1063"
    # Off: no ext_proc filters at all (routing still works when clients send x-ai-eg-model).
    translator_enabled: bool = True
    access_log: bool = True
    # Empty: Envoy's stdout. Otherwise a file path on the Envoy host.
    access_log_path: str = ""
    # The IP address the Gateway's listeners bind on the Envoy host (`run`: its --listen-address,
    # 127.0.0.1 unless asked).
    listener_address: str = "0.0.0.0"
    # On the Envoy host: the CA bundle that verifies backends whose BackendTLSPolicy names no CA.
    system_ca_bundle: str = SYSTEM_CA_BUNDLE


def _any(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def _duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )


def _struct(values: dict[str, str]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def build_fleet(gateway: ir.GatewayIR, settings: BuildSettings) -> FleetResources:
    clusters: dict[str, Message] = {}
    endpoints: dict[str, Message] = {}
    listeners: dict[str, Message] = {}
    routes: dict[str, Message] = {}
    secrets: dict[str, Message] = {}
    override_namespaces = _override_namespaces(gateway.translator)
    for rule in gateway.rules:
        namespaces = tuple(sorted({override_namespaces.get(t.name, "") for t in rule.backends} - {""}))
        cluster, assignment, cluster_secrets = _cluster(rule, gateway.fleet, settings, namespaces)
        clusters[cluster.name] = cluster
        if assignment is not None:
            endpoints[assignment.cluster_name] = assignment
        secrets.update(cluster_secrets)
    if settings.translator_enabled:
        translator = _translator_cluster(settings.translator_address)
        clusters[translator.name] = translator
    for listener in gateway.listeners:
        listeners[listener.name] = _listener(listener, gateway.fleet, fleet_cost_keys(gateway.translator), settings)
        routes[listener.name] = _route_configuration(listener)
        for cert in listener.certificates:
            secrets[cert.name] = secret_pb2.Secret(
                name=cert.name,
                tls_certificate=common_pb2.TlsCertificate(
                    certificate_chain=base_pb2.DataSource(inline_string=cert.cert_pem),
                    private_key=base_pb2.DataSource(inline_string=cert.key_pem),
                ),
            )
    return FleetResources(
        {
            type_urls.CLUSTER: clusters,
            type_urls.ENDPOINT: endpoints,
            type_urls.LISTENER: listeners,
            type_urls.ROUTE: routes,
            type_urls.SECRET: secrets,
        }
    )


def translator_fleet(gateways: dict[str, ir.GatewayIR]) -> FleetResources:
    """What translator processes get: every fleet's translator configuration, named by fleet."""
    return FleetResources({type_urls.TRANSLATOR: {fleet: gateway.translator for fleet, gateway in gateways.items()}})


# --------------------------------------------------------------------------------------------
# Listeners and routes


def _listener(
    listener: ir.Listener, fleet: str, cost_keys: tuple[str, ...], settings: BuildSettings
) -> listener_pb2.Listener:
    http_filters = []
    if settings.translator_enabled:
        http_filters.append(
            hcm_pb2.HttpFilter(name=contract.EXT_PROC_FILTER_NAME, typed_config=_any(_ext_proc(fleet, upstream=False)))
        )
    http_filters.append(hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=_any(router_pb2.Router())))
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=listener.name.replace("/", "_"),
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(route_config_name=listener.name, config_source=_ads()),
        http_filters=http_filters,
        # Streams of LLM responses run long: no idle cut-off below the route timeouts.
        stream_idle_timeout=_duration(0),
        request_timeout=_duration(0),
        scheme_header_transformation=protocol_pb2.SchemeHeaderTransformation(match_upstream=True),
    )
    if settings.access_log:
        manager.access_log.append(_access_log(settings.access_log_path, cost_keys))
    chain = listener_components_pb2.FilterChain(
        filters=[
            listener_components_pb2.Filter(
                name="envoy.filters.network.http_connection_manager", typed_config=_any(manager)
            )
        ]
    )
    if listener.tls:
        context = tls_pb2.DownstreamTlsContext(
            common_tls_context=tls_pb2.CommonTlsContext(
                tls_certificate_sds_secret_configs=[
                    secret_pb2.SdsSecretConfig(name=c.name, sds_config=_ads()) for c in listener.certificates
                ],
                alpn_protocols=["h2", "http/1.1"],
            )
        )
        chain.transport_socket.CopyFrom(
            base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=_any(context))
        )
    return listener_pb2.Listener(
        name=listener.name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=settings.listener_address, port_value=listener.port)
        ),
        filter_chains=[chain],
        per_connection_buffer_limit_bytes=wrappers_pb2.UInt32Value(value=listener.buffer_limit),
    )


def _access_log(path: str, cost_keys: tuple[str, ...]) -> accesslog_pb2.AccessLog:
    """JSON access log with the AI fields; every cost the fleet's routes define appears under its
    metadata key, read from the metadata the translator writes at the end of the response."""
    fields = dict(ACCESS_LOG_FORMAT)
    for key in cost_keys:
        fields[key] = _metadata(key)
    fmt = sfs_pb2.SubstitutionFormatString(json_format=_struct(fields))
    if path:
        return accesslog_pb2.AccessLog(
            name="envoy.access_loggers.file", typed_config=_any(file_pb2.FileAccessLog(path=path, log_format=fmt))
        )
    return accesslog_pb2.AccessLog(
        name="envoy.access_loggers.stdout", typed_config=_any(stream_pb2.StdoutAccessLog(log_format=fmt))
    )


def fleet_cost_keys(translator: config_pb2.TranslatorConfig) -> tuple[str, ...]:
    keys = {c.metadata_key for c in translator.global_costs}
    keys.update(c.metadata_key for route in translator.route_costs for c in route.costs)
    return tuple(sorted(keys))


def _ext_proc(fleet: str, *, upstream: bool, namespaces: tuple[str, ...] = ()) -> ext_proc_pb2.ExternalProcessor:
    """The translator filter. Router level (in the HCM): whole request and response, the response
    body switched to STREAMED by the translator for SSE. Upstream level (per attempt, in the
    cluster): request only, plus the attributes naming the endpoint Envoy picked, plus the dynamic
    metadata `namespaces` the cluster's credentialOverride.fromDynamicMetadata read. Each level names
    itself in the stream's gRPC metadata; the translator refuses a stream that does not."""
    mode = processing_mode_pb2.ProcessingMode
    phase = contract.UPSTREAM_PHASE if upstream else contract.ROUTER_PHASE
    return ext_proc_pb2.ExternalProcessor(
        grpc_service=_translator_grpc_service(fleet, phase),
        processing_mode=mode(
            request_header_mode=mode.SEND,
            request_body_mode=mode.BUFFERED,
            request_trailer_mode=mode.SKIP,
            response_header_mode=mode.SKIP if upstream else mode.SEND,
            response_body_mode=mode.NONE if upstream else mode.BUFFERED,
            response_trailer_mode=mode.SKIP,
        ),
        request_attributes=list(contract.UPSTREAM_ATTRIBUTES) if upstream else [],
        message_timeout=_duration(10),
        failure_mode_allow=False,
        allow_mode_override=True,
        metadata_options=_metadata_options(namespaces),
    )


def _metadata_options(extra_forwarding: tuple[str, ...] = ()) -> ext_proc_pb2.MetadataOptions:
    """The translator writes usage and backend metadata (receiving) and reads back what an earlier
    phase or attempt wrote (forwarding): that is how the response path learns, statelessly, which
    backend served the final attempt. `extra_forwarding`: other namespaces the translator reads
    (credential overrides from dynamic metadata another filter set)."""
    ours = [contract.METADATA_NAMESPACE]
    forwarding = ours + [n for n in extra_forwarding if n != contract.METADATA_NAMESPACE]
    return ext_proc_pb2.MetadataOptions(
        receiving_namespaces=ext_proc_pb2.MetadataOptions.MetadataNamespaces(untyped=ours),
        forwarding_namespaces=ext_proc_pb2.MetadataOptions.MetadataNamespaces(untyped=forwarding),
    )


def _override_namespaces(translator: config_pb2.TranslatorConfig) -> dict[str, str]:
    """Backend name -> the dynamic metadata namespace its credential override is read from."""
    return {
        b.name: b.auth.credential_override.from_dynamic_metadata.namespace
        for b in translator.backends
        if b.auth.credential_override.from_dynamic_metadata.namespace
    }


def _translator_grpc_service(fleet: str, phase: str) -> grpc_service_pb2.GrpcService:
    """The translator's gRPC service; the fleet name travels as gRPC metadata, so one translator
    process can serve several Gateways, each with its own configuration, and so does the phase
    (which of the two ext_proc filters opened the stream)."""
    return grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=contract.TRANSLATOR_CLUSTER_NAME),
        timeout=_duration(30),
        initial_metadata=[
            base_pb2.HeaderValue(key=contract.FLEET_METADATA_KEY, value=fleet),
            base_pb2.HeaderValue(key=contract.PHASE_METADATA_KEY, value=phase),
        ],
    )


def _route_configuration(listener: ir.Listener) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name=listener.name,
        virtual_hosts=[_virtual_host(v) for v in listener.virtual_hosts]
        or [_virtual_host(ir.VirtualHost(f"{listener.name}/*", ("*",), ()))],
    )


def _virtual_host(vhost: ir.VirtualHost) -> route_components_pb2.VirtualHost:
    entries: list[tuple[int, int, route_components_pb2.Route]] = []
    for order, rule in enumerate(vhost.rules):
        for match_index, match in enumerate(rule.matches or ((),)):
            entries.append((-len(match), order * 1000 + match_index, _route(rule, match_index, match)))
    entries.sort(key=lambda e: (e[0], e[1]))
    routes = [e[2] for e in entries]
    routes.append(
        route_components_pb2.Route(
            name=f"{vhost.name}/route-not-found",
            match=route_components_pb2.RouteMatch(prefix="/"),
            direct_response=route_components_pb2.DirectResponseAction(
                status=404, body=base_pb2.DataSource(inline_string=ROUTE_NOT_FOUND_BODY)
            ),
            response_headers_to_add=[
                base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key="content-type", value="application/json"),
                    append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                )
            ],
        )
    )
    return route_components_pb2.VirtualHost(name=vhost.name, domains=list(vhost.domains), routes=routes)


@lru_cache(maxsize=1 << 16)
def _route(rule: ir.Rule, match_index: int, match: tuple[ir.HeaderMatch, ...]) -> route_components_pb2.Route:
    """A rule's route for one match. Memoized on the (immutable) rule, so an edit rebuilds only the
    routes and clusters it changed; callers copy the result and never mutate it."""
    headers = []
    for header in match:
        if header.regex:
            matcher = string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=header.value))
        else:
            matcher = string_pb2.StringMatcher(exact=header.value)
        headers.append(route_components_pb2.HeaderMatcher(name=header.name, string_match=matcher))
    action = route_components_pb2.RouteAction(
        cluster=rule.cluster,
        timeout=_duration(rule.timeout_s),
        auto_host_rewrite=wrappers_pb2.BoolValue(value=True),
    )
    retry = _retry_policy(rule)
    if retry is not None:
        action.retry_policy.CopyFrom(retry)
    metadata = base_pb2.Metadata()
    metadata.filter_metadata[contract.INTERNAL_METADATA_NAMESPACE].update({contract.ROUTE_NAME_KEY: rule.route})
    return route_components_pb2.Route(
        name=f"{rule.cluster}/match/{match_index}",
        match=route_components_pb2.RouteMatch(prefix="/", headers=headers),
        route=action,
        metadata=metadata,
    )


def _retry_policy(rule: ir.Rule) -> route_components_pb2.RetryPolicy | None:
    """Failover to the next priority when a rule has several; a per-try idle timeout when asked."""
    if rule.priorities < 2 and rule.idle_timeout_s is None:
        return None
    policy = route_components_pb2.RetryPolicy()
    if rule.priorities >= 2:
        policy.retry_on = "5xx,reset,connect-failure,retriable-status-codes"
        policy.retriable_status_codes.extend(RETRIABLE_STATUS_CODES)
        policy.num_retries.value = rule.priorities - 1
        policy.retry_priority.CopyFrom(
            route_components_pb2.RetryPolicy.RetryPriority(
                name="envoy.retry_priorities.previous_priorities",
                typed_config=_any(previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=1)),
            )
        )
    if rule.idle_timeout_s is not None:
        policy.per_try_idle_timeout.CopyFrom(_duration(rule.idle_timeout_s))
        if not policy.retry_on:
            policy.retry_on = "reset"
            policy.num_retries.value = 0
    return policy


# --------------------------------------------------------------------------------------------
# Clusters and endpoints


@lru_cache(maxsize=1 << 16)
def _cluster(
    rule: ir.Rule, fleet: str, settings: BuildSettings, override_namespaces: tuple[str, ...] = ()
) -> tuple[cluster_pb2.Cluster, endpoint_pb2.ClusterLoadAssignment | None, dict[str, Message]]:
    """The rule's cluster. Backends reached by IP or socket path are served over EDS; a cluster with
    any FQDN endpoint is STRICT_DNS with its endpoints inline, since Envoy resolves names only for
    DNS clusters. `override_namespaces`: the dynamic metadata namespaces its backends' credential
    overrides read, forwarded to the upstream ext_proc."""
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=rule.cluster)
    for target in rule.backends:
        assignment.endpoints.append(_locality(target))
    uses_dns = any(e.kind == "fqdn" for t in rule.backends for e in t.endpoints)
    cluster = cluster_pb2.Cluster(
        name=rule.cluster,
        connect_timeout=_duration(10),
        per_connection_buffer_limit_bytes=wrappers_pb2.UInt32Value(value=contract.BUFFER_LIMIT_BYTES),
        common_lb_config=cluster_pb2.Cluster.CommonLbConfig(
            locality_weighted_lb_config=cluster_pb2.Cluster.CommonLbConfig.LocalityWeightedLbConfig()
        ),
    )
    if uses_dns:
        cluster.type = cluster_pb2.Cluster.STRICT_DNS
        cluster.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
        cluster.load_assignment.CopyFrom(assignment)
    else:
        cluster.type = cluster_pb2.Cluster.EDS
        cluster.eds_cluster_config.CopyFrom(cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads()))
    secrets: dict[str, Message] = {}
    tls_targets = {t.tls for t in rule.backends if t.tls is not None}
    for tls in sorted(tls_targets, key=lambda t: (t.sni, t.ca_pem or "")):
        context = tls_pb2.UpstreamTlsContext(sni=tls.sni)
        context.common_tls_context.validation_context.CopyFrom(_validation_context(tls, settings, secrets))
        socket = base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=_any(context))
        cluster.transport_socket_matches.append(
            cluster_pb2.Cluster.TransportSocketMatch(
                name=_tls_match_name(tls), match=_struct({"tls": _tls_match_name(tls)}), transport_socket=socket
            )
        )
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http_protocol_options=protocol_pb2.Http1ProtocolOptions()
        ),
    )
    if settings.translator_enabled:
        options.http_filters.extend(_upstream_filters(fleet, override_namespaces))
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Pack(options, deterministic=True)
    return cluster, (None if uses_dns else assignment), secrets


def _tls_match_name(tls: ir.UpstreamTLS) -> str:
    import hashlib

    digest = hashlib.sha256((tls.ca_pem or "system").encode()).hexdigest()[:12]
    return f"tls/{tls.sni}/{digest}"


def _validation_context(
    tls: ir.UpstreamTLS, settings: BuildSettings, secrets: dict[str, Message]
) -> common_pb2.CertificateValidationContext:
    context = common_pb2.CertificateValidationContext(
        match_typed_subject_alt_names=[
            common_pb2.SubjectAltNameMatcher(
                san_type=common_pb2.SubjectAltNameMatcher.DNS, matcher=string_pb2.StringMatcher(exact=tls.sni)
            )
        ]
    )
    if tls.ca_pem is None:
        context.trusted_ca.filename = settings.system_ca_bundle
    else:
        context.trusted_ca.inline_string = tls.ca_pem
    return context


def _locality(target: ir.BackendTarget) -> endpoint_components_pb2.LocalityLbEndpoints:
    metadata = base_pb2.Metadata()
    metadata.filter_metadata[contract.INTERNAL_METADATA_NAMESPACE].update(
        {contract.BACKEND_NAME_KEY: target.name, contract.UPSTREAM_HOST_KEY: target.upstream_host}
    )
    if target.tls is not None:
        metadata.filter_metadata["envoy.transport_socket_match"].update({"tls": _tls_match_name(target.tls)})
    lb_endpoints = []
    for endpoint in target.endpoints:
        if endpoint.kind == "unix":
            address = address_pb2.Address(pipe=address_pb2.Pipe(path=endpoint.address))
        else:
            address = address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=endpoint.address, port_value=endpoint.port)
            )
        lb_endpoints.append(
            endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(address=address, hostname=target.upstream_host),
                metadata=metadata,
            )
        )
    return endpoint_components_pb2.LocalityLbEndpoints(
        locality=base_pb2.Locality(sub_zone=target.name),
        lb_endpoints=lb_endpoints,
        load_balancing_weight=wrappers_pb2.UInt32Value(value=target.weight),
        priority=target.priority,
    )


def _upstream_filters(fleet: str, override_namespaces: tuple[str, ...]) -> Iterable[hcm_pb2.HttpFilter]:
    content_length = mutation_rules_pb2.HeaderMutation(
        append=base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(
                key="content-length",
                value=_metadata(contract.CONTENT_LENGTH_KEY),
            ),
            append_action=base_pb2.HeaderValueOption.ADD_IF_ABSENT,
        )
    )
    yield hcm_pb2.HttpFilter(
        name=contract.EXT_PROC_FILTER_NAME,
        typed_config=_any(_ext_proc(fleet, upstream=True, namespaces=override_namespaces)),
    )
    yield hcm_pb2.HttpFilter(
        name="envoy.filters.http.header_mutation",
        typed_config=_any(
            header_mutation_pb2.HeaderMutation(
                mutations=header_mutation_pb2.Mutations(request_mutations=[content_length])
            )
        ),
    )
    yield hcm_pb2.HttpFilter(
        name="envoy.filters.http.upstream_codec", typed_config=_any(upstream_codec_pb2.UpstreamCodec())
    )


def translator_addresses(address: str) -> list[address_pb2.Address]:
    """Parse the translator address setting: comma-separated "host:port" or "unix:/path" entries,
    one per translator process (Envoy spreads the ext_proc streams over them)."""
    out = []
    for entry in (a.strip() for a in address.split(",")):
        if not entry:
            continue
        if entry.startswith("unix:"):
            out.append(address_pb2.Address(pipe=address_pb2.Pipe(path="/" + entry.removeprefix("unix:").lstrip("/"))))
            continue
        host, _, port = entry.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"translator address {entry!r} is not host:port or unix:/path")
        out.append(
            address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=host.strip("[]") or "127.0.0.1", port_value=int(port))
            )
        )
    return out


def _translator_cluster(address: str) -> cluster_pb2.Cluster:
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions(
                initial_connection_window_size=wrappers_pb2.UInt32Value(value=1024 * 1024),
                initial_stream_window_size=wrappers_pb2.UInt32Value(value=64 * 1024),
            )
        )
    )
    cluster = cluster_pb2.Cluster(
        name=contract.TRANSLATOR_CLUSTER_NAME,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=_duration(10),
        per_connection_buffer_limit_bytes=wrappers_pb2.UInt32Value(value=contract.BUFFER_LIMIT_BYTES),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=contract.TRANSLATOR_CLUSTER_NAME,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(address=a))
                        for a in translator_addresses(address)
                    ]
                )
            ],
        ),
    )
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Pack(options, deterministic=True)
    return cluster
