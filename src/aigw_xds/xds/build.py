"""Build (pure): one Gateway's IR -> the Envoy resources a node of its fleet gets.

The layout follows Envoy AI Gateway's data plane where it can, and does per request only what the
rule needs (route_classes.py): a listener per port with an HTTP connection manager (RDS over ADS, a
JSON access log) whose filters are

  json_to_metadata (the body's model and stream flag -> metadata; Envoy re-picks the route),
  ext_proc (the router phase; each route turns it off or names its backend),
  json_to_metadata (usage from JSON responses, for routes Envoy serves alone), router;

virtual hosts per hostname; per rule match, routes on the body's model (metadata) and on the
x-ai-eg-model header; one cluster per route rule whose localities are the rule's backendRefs
(priority, weight, endpoint metadata naming the backend), and per cluster the upstream filters
[ext_proc (per attempt), header_mutation (content-length), credential_injector, upstream_codec],
each only where a route needs it. Without the translator (translator_enabled off) there are no
ext_proc or json_to_metadata filters and no translator cluster: routing is on the header only.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import urllib.parse
from collections.abc import Iterable, Iterator, KeysView
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import chain
from typing import Any

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    extension_pb2,
    grpc_service_pb2,
    health_check_pb2,
    protocol_pb2,
)
from envoy.config.core.v3 import substitution_format_string_pb2 as sfs_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2, scoped_route_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2 as cel_filter_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.credential_injector.v3 import credential_injector_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2, processing_mode_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.header_to_metadata.v3 import header_to_metadata_pb2 as h2m_pb2
from envoy.extensions.filters.http.json_to_metadata.v3 import json_to_metadata_pb2 as j2m_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.http.upstream_codec.v3 import upstream_codec_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.formatter.req_without_query.v3 import req_without_query_pb2 as rwq_pb2
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import header_mutation_pb2 as early_pb2
from envoy.extensions.http.injected_credentials.generic.v3 import generic_pb2
from envoy.extensions.load_balancing_policies.common.v3 import common_pb2 as lb_common_pb2
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.maglev.v3 import maglev_pb2
from envoy.extensions.load_balancing_policies.random.v3 import random_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import metadata_pb2, regex_pb2, string_pb2
from envoy.type.v3 import http_status_pb2, percent_pb2, range_pb2
from google.protobuf import any_pb2, struct_pb2, wrappers_pb2
from google.protobuf.message import Message

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_contract import bearer
from aigw_contract.backend_name import BackendName

from ..compile import ir
from ..compile.backend_traits import traits
from ..runs import Run
from ..wire import Serialized, field_key
from . import client_checks, ext_authz, type_urls
from .cache import Assembly, Content, FleetResources, Maps
from .client_checks import CORS_FILTER_NAME, JWT_DENIED, JWT_FILTER_NAME
from .client_settings import (
    client_ca_secret,
    client_protocol,
    connection_limit_filter,
    downstream_tls,
    early_header_changes,
    health_check_filters,
    listener_settings,
)
from .endpoint_pickers import (
    FILTER_NAME as PICKER_FILTER_NAME,
)
from .endpoint_pickers import (
    POOL_KEY,
    client_headers_removed,
    picker_cluster,
    picker_filter,
    picker_per_route,
    pickers,
    pool_cluster,
)
from .forward_proxy import name_proxy, tunnel_sockets
from .messages import HTTP_PROTOCOL_OPTIONS
from .messages import ads as _ads
from .messages import duration as _duration
from .messages import packed as _any
from .route_classes import (
    NATIVE_COST_FIELDS,
    NATIVE_STRIP_PREFIXES,
    FleetFacts,
    RouteClass,
    RulePlan,
    floor_rule,
    native_cost_keys,
    native_path_regex,
    plan_of,
)

ROUTE_NOT_FOUND_MESSAGE = (
    "No matching route found. It is likely because the model specified in your request is not configured in the "
    "Gateway."
)
# A request that names no model at all (`client.files.list()`): "the model specified" would send
# its reader looking for a typo in a model it never gave.
NO_MODEL_MESSAGE = (
    "No matching route found. The request names no model (a 'model' field in its JSON body, or an "
    "x-ai-eg-model header), and the Gateway routes requests by their model."
)


def _not_found_shapes(message: str, code: str) -> dict[str, dict[str, Any]]:
    """The 404's body per client API: OpenAI's shape, Anthropic's for clients of its paths, and
    Cohere's ({"message": ...}) for clients of its paths."""
    openai = {"message": message, "type": "invalid_request_error", "param": "model", "code": code}
    anthropic = {"type": "error", "error": {"type": "not_found_error", "message": message}}
    return {"openai": {"error": openai}, "anthropic": anthropic, "cohere": {"message": message}}


def _not_found_bodies(message: str, code: str) -> dict[str, str]:
    return {api: json.dumps(body, separators=(",", ":")) for api, body in _not_found_shapes(message, code).items()}


ROUTE_NOT_FOUND_BODIES = _not_found_bodies(ROUTE_NOT_FOUND_MESSAGE, "model_not_found")
NO_MODEL_BODIES = _not_found_bodies(NO_MODEL_MESSAGE, "model_missing")
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
RETRIABLE_STATUS_CODES = (429, 500, 502, 503, 504)
# Envoy Gateway's default for each circuit breaker threshold (connections, pending requests,
# parallel requests, parallel retries); Envoy's own default for parallel retries is only 3.
DEFAULT_CIRCUIT_THRESHOLD = 1024
REQUEST_BODY_FILTER_NAME = "aigw.request_body"
ROUTE_SCOPE_FILTER_NAME = "aigw.route_scope"
RESPONSE_USAGE_FILTER_NAME = "aigw.response_usage"
PROVIDER_ERRORS_FILTER_NAME = "aigw.provider_errors"


def _metadata(key: str) -> str:
    """The access-log operator reading `key` of the translator's dynamic metadata."""
    return f"%DYNAMIC_METADATA({contract.METADATA_NAMESPACE}:{key})%"


ACCESS_LOG_FORMAT = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    # The client's path: the upstream phase rewrites :path for the backend it picked. Without its
    # query, which may hold a key (an MCP client's, a Gemini client's ?key=).
    "path": f"%REQ_WITHOUT_QUERY({contract.ORIGINAL_PATH_HEADER.upper()}?:PATH)%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    # Why Envoy answered as it did: via_upstream, or the cause of a reply of its own.
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "duration_ms": "%DURATION%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "gen_ai.request.model": _metadata(contract.REQUEST_MODEL_KEY),
    "gen_ai.response.model": _metadata(contract.RESPONSE_MODEL_KEY),
    "gen_ai.request.model_override": _metadata(contract.MODEL_NAME_OVERRIDE_KEY),
    # The backend of the endpoint that answered (the final attempt's), whichever class the route is.
    "gen_ai.provider.name": f"%UPSTREAM_METADATA({contract.INTERNAL_METADATA_NAMESPACE}:{contract.BACKEND_NAME_KEY})%",
    contract.INPUT_TOKENS_KEY: _metadata(contract.INPUT_TOKENS_KEY),
    contract.OUTPUT_TOKENS_KEY: _metadata(contract.OUTPUT_TOKENS_KEY),
    # True when the usage and costs of the line are provisional: a stream that stopped before the
    # provider reported its final usage (the client hung up, the provider cut it).
    contract.USAGE_ESTIMATED_KEY: _metadata(contract.USAGE_ESTIMATED_KEY),
    contract.RATE_LIMIT_UNCHECKED_KEY: _metadata(contract.RATE_LIMIT_UNCHECKED_KEY),
    contract.RATE_LIMITED_BY_KEY: _metadata(contract.RATE_LIMITED_BY_KEY),
    # MCPRoutes: what the MCP proxy says it did (unset on other routes: "-").
    "mcp.method.name": _metadata(contract.MCP_METADATA_KEYS[contract.MCP_METHOD_HEADER]),
    "mcp.tool.name": _metadata(contract.MCP_METADATA_KEYS[contract.MCP_TOOL_HEADER]),
    "mcp.provider.name": _metadata(contract.MCP_METADATA_KEYS[contract.MCP_BACKEND_HEADER]),
}


@dataclass(frozen=True)
class BuildSettings:
    # Where Envoy reaches the translator: "host:port" or "unix:/path", comma-separated when there are
    # several translator processes (translator_addresses). The control plane fills in port 0.
    translator_address: str = contract.TRANSLATOR_ADDRESS
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
    # Whether backend keys may reach Envoy as SDS secrets (the control plane sets it when every xDS
    # client is trusted: loopback or mTLS). Off: the rules Envoy would serve alone are translated on
    # one stream instead, and keys stay in the translator.
    envoy_credentials: bool = False
    # Whether the translator processes share rate-limit counters (Redis). Off (in-memory counters):
    # a fleet with budgets reaches only the first translator address, where its counters live.
    shared_counters: bool = False
    # Where Envoy reaches the translator's MCP proxy (MCPRoutes): "host:port" (loopback: the proxy
    # listens nowhere else). The control plane fills in port 0.
    mcp_address: str = contract.MCP_PROXY_ADDRESS
    # A listener whose rules match this many models by name (or more) has its routes in scopes
    # (route scopes, below); 0: every listener's. Needs the translator.
    route_scopes_from: int = contract.DEFAULT_ROUTE_SCOPES_FROM

    def __hash__(self) -> int:  # a key of the build's caches, hashed for every rule
        return ir.hash_once(self)


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def build_fleet(
    gateway: ir.GatewayIR, settings: BuildSettings, previous: FleetResources | None = None
) -> FleetResources:
    """The fleet's Envoy resources. With the fleet's `previous` build, its cluster, assignment and
    secret maps are the very ones of that build while they are made of the same runs' resources
    (a snapshot then sees at a glance that they did not change)."""
    listeners: dict[str, Content] = {}
    routes: dict[str, Content] = {}
    route_parts: dict[str, list[bytes]] = {}
    plans: dict[Run[ir.Rule], tuple[RulePlan, ...]] = {}
    parts: list[_RunResources] = []
    for run, configs, run_plans in _planned_runs(gateway, settings.envoy_credentials):
        plans[run] = run_plans
        parts.append(_run_resources(run, run_plans, configs, gateway.fleet, settings))
    if settings.translator_enabled:
        address = settings.translator_address
        budgets = gateway.translator_core.rate_limits
        if any(b.local for b in budgets) or (budgets and not settings.shared_counters):
            # In-memory counters live in one translator process (a local rate limit's always do):
            # every stream of the fleet goes there.
            address = _first_address(address)
        parts.append(_translator_part(address))
        if any(vhost.mcp_routes for listener in gateway.listeners for vhost in listener.virtual_hosts):
            parts.append(_mcp_proxy_part(settings.mcp_address))
            mcp_routes = (
                mcp for listener in gateway.listeners for vhost in listener.virtual_hosts for mcp in vhost.mcp_routes
            )
            parts += [_ext_auth_part(auth, settings.system_ca_bundle) for auth in ext_authz.services(mcp_routes)]
    parts += [_jwks_part(uri, settings.system_ca_bundle) for uri in _jwks_uris(gateway, settings.translator_enabled)]
    # The InferencePools' endpoint pickers each listener's rules ask, and the fleet's clusters of them.
    listener_pickers = {listener.name: pickers(listener.virtual_hosts) for listener in gateway.listeners}
    fleet_pickers = dict(sorted((c, p) for found in listener_pickers.values() for c, p in found.items()))
    parts += [_picker_part(picker) for picker in fleet_pickers.values()]
    assembly = _assembly(tuple(parts), previous)
    clusters, endpoints, secrets = assembly.maps
    certificates: dict[str, Content] = {}
    native_costs = native_cost_keys(gateway.translator_core)
    source_address = any(
        c.HasField("source") for budget in gateway.translator_core.rate_limits for c in budget.conditions
    )
    scopes: dict[str, Content] = {}
    for listener in gateway.listeners:
        scoped = _scoped(listener, settings)
        listeners[listener.name] = _listener(
            listener,
            gateway.fleet,
            fleet_cost_keys(gateway.translator_core),
            native_costs,
            settings,
            source_address,
            scoped,
            bool(listener_pickers[listener.name]),
        )
        root_prefix = gateway.translator_core.root_prefix
        for name, listener_parts in _route_configurations(
            listener, plans, root_prefix, settings.translator_enabled, scoped
        ).items():
            routes[name] = _joined(name, listener_parts, previous)
            route_parts[name] = listener_parts
        if scoped:
            scopes.update(_route_scopes(listener.name))
        for cert in listener.certificates:
            certificates[cert.name] = _certificate_secret(cert.name, cert.cert_pem, cert.key_pem)
        if listener.tls and listener.client.tls is not None and listener.client.tls.client_ca is not None:
            certificates[listener.client.tls.client_ca.name] = client_ca_secret(listener.client.tls.client_ca)
    return FleetResources(
        {
            type_urls.CLUSTER: clusters,
            type_urls.ENDPOINT: endpoints,
            type_urls.LISTENER: listeners,
            type_urls.SCOPED_ROUTE: scopes,
            type_urls.ROUTE: routes,
            type_urls.SECRET: {**secrets, **certificates} if certificates else secrets,
        },
        assembly,
        route_parts,
    )


MCP_WITHOUT_TRANSLATOR = "--no-translator emits no translator, and its MCP proxy is what answers an MCPRoute"


def mcp_routes_left_out(gateway: ir.GatewayIR, settings: BuildSettings) -> list[str]:
    """The MCPRoutes a build of the Gateway leaves out: all of them without the translator
    (--no-translator), whose MCP proxy answers them. Said by the commands that build."""
    return [] if settings.translator_enabled else [route.name for route in gateway.translator_core.mcp_routes]


def _joined(name: str, parts: list[bytes], previous: FleetResources | None) -> Content:
    """The route configuration joined from `parts`: the previous build's very object when it was
    joined from the same parts (compared by identity first: an edit's untouched scopes hold the
    very bytes of their runs), so that the snapshot packs and hashes only what an edit changed."""
    if previous is not None and previous.route_parts.get(name) == parts:
        return previous.by_type[type_urls.ROUTE][name]
    return Serialized.joined(route_pb2.RouteConfiguration, parts)


# How many runs an edit may change for the build to patch the previous maps rather than assemble them
# again (a copy of each map, and a pass over the parts that differ).
_PATCHED_PARTS = 16


def _assembly(parts: tuple[_RunResources, ...], previous: FleetResources | None) -> Assembly:
    """The clusters, assignments and secrets of a fleet's runs (and its translator cluster, last),
    by name: the previous build's maps when they were assembled from the very same parts, or those
    maps patched where a few parts differ and name the same resources (then in the same order)."""
    before = previous.assembly if previous is not None else None
    if before is not None and len(before.parts) == len(parts):
        differ = [i for i, (was, now) in enumerate(zip(before.parts, parts, strict=True)) if was is not now]
        if not differ:
            return before
        replaced = [(before.parts[i], parts[i]) for i in differ]
        if len(differ) <= _PATCHED_PARTS and all(
            isinstance(was, _RunResources) and was.names() == now.names() for was, now in replaced
        ):
            maps = (dict(before.maps[0]), dict(before.maps[1]), dict(before.maps[2]))
            for _, now in replaced:
                for map_, part_map in zip(maps, now.maps(), strict=True):
                    map_.update(part_map)
            changed = tuple(frozenset(chain.from_iterable(now.maps()[i] for _, now in replaced)) for i in range(3))
            return Assembly(parts, maps, before.maps, changed)
    maps = ({}, {}, {})
    for part in parts:
        for map_, part_map in zip(maps, part.maps(), strict=True):
            map_.update(part_map)
    return Assembly(parts, maps)


@lru_cache(maxsize=64)
def _certificate_secret(name: str, cert_pem: str, key_pem: str) -> secret_pb2.Secret:
    """A listener's certificate as an SDS secret (the same object while the certificate is)."""
    return secret_pb2.Secret(
        name=name,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_string=cert_pem),
            private_key=base_pb2.DataSource(inline_string=key_pem),
        ),
    )


Named = tuple[tuple[str, Content], ...]
RuleConfigs = tuple[tuple[bytes | None, ...], ...]  # per rule of a run, its backends' configs
# How many runs of rules the build keeps what it made of: the live runs of 30,000 rules, and those an
# edit replaced (up to this many in all: what an edit replaced is held until it falls out).
_RUNS_KEPT = 1 << 10


def rule_plans(gateway: ir.GatewayIR, envoy_credentials: bool) -> dict[str, RulePlan]:
    """Cluster name -> the class of its rule's requests."""
    plans: dict[str, RulePlan] = {}
    for run, _, run_plans in _planned_runs(gateway, envoy_credentials):
        plans.update(zip((rule.cluster for rule in run), run_plans, strict=True))
    return plans


def _planned_runs(
    gateway: ir.GatewayIR, envoy_credentials: bool
) -> Iterator[tuple[Run[ir.Rule], RuleConfigs, tuple[RulePlan, ...]]]:
    """The Gateway's rules in runs (as its virtual hosts hold them), each with its rules' backend
    configurations and plans: what the build computes per run and keeps, so an edit builds again
    the run it touched."""
    by_name = gateway.backends.by_name
    facts = FleetFacts.of(gateway.translator_core, gateway.backends)
    for run in gateway.rule_runs:
        configs = _by_rule(run, tuple(map(by_name.get, _backend_names(run))))
        yield run, configs, _run_plans(run, configs, envoy_credentials, facts)


@lru_cache(maxsize=_RUNS_KEPT)
def _backend_names(run: Run[ir.Rule]) -> tuple[str, ...]:
    """The names of the backends of a run's rules, rule after rule."""
    return tuple(chain.from_iterable(rule.backend_names for rule in run))


@lru_cache(maxsize=_RUNS_KEPT)
def _by_rule(run: Run[ir.Rule], configs: tuple[bytes | None, ...]) -> RuleConfigs:
    """The backends' configs of a run (_backend_names order), rule by rule: one object while they
    are the same (hashed once: a Run), so the caches keyed on them compare it by identity."""
    out = []
    start = 0
    for rule in run:
        out.append(configs[start : start + len(rule.backends)])
        start += len(rule.backends)
    return Run(out)


@lru_cache(maxsize=_RUNS_KEPT)
def _run_plans(
    run: Run[ir.Rule], configs: RuleConfigs, envoy_credentials: bool, facts: FleetFacts
) -> tuple[RulePlan, ...]:
    """The plans of a run's rules, hashed once (a Run): the build's caches are keyed on them."""
    return Run(_plan(rule, c, envoy_credentials, facts) for rule, c in zip(run, configs, strict=True))


@dataclass(frozen=True, slots=True, eq=False)
class _RunResources:
    clusters: dict[str, Content]
    endpoints: dict[str, Content]
    secrets: dict[str, Content]

    def maps(self) -> Maps:
        return self.clusters, self.endpoints, self.secrets

    def names(self) -> tuple[KeysView[str], ...]:
        return self.clusters.keys(), self.endpoints.keys(), self.secrets.keys()


@lru_cache(maxsize=8)
def _translator_part(address: str) -> _RunResources:
    """The translator's cluster, as the last part of a fleet's assembly."""
    cluster = _translator_cluster(address)
    return _RunResources({cluster.name: cluster}, {}, {})


@lru_cache(maxsize=8)
def _mcp_proxy_part(address: str) -> _RunResources:
    """The MCP proxy's cluster (a fleet with MCPRoutes), after the translator's."""
    cluster = _mcp_proxy_cluster(address)
    return _RunResources({cluster.name: cluster}, {}, {})


@lru_cache(maxsize=64)
def _picker_part(picker: ir.EndpointPicker) -> _RunResources:
    """An InferencePool's endpoint picker's cluster and its endpoints (over EDS: the picker's pods
    coming and going change its assignment only)."""
    cluster, assignment = picker_cluster(picker)
    return _RunResources({cluster.name: cluster}, {cluster.name: assignment}, {})


def _oauth_routes(virtual_hosts: Iterable[ir.VirtualHost]) -> list[ir.McpRoute]:
    """The MCPRoutes of these hosts whose clients authenticate with OAuth, each once, in order."""
    routes = {mcp.name: mcp for vhost in virtual_hosts for mcp in vhost.mcp_routes if mcp.oauth is not None}
    return list(routes.values())


def _jwks_uris(gateway: ir.GatewayIR, mcp: bool) -> list[str]:
    """Where the Gateway's SecurityPolicies (and its OAuth MCPRoutes, where `mcp`: the translator
    serves them) have Envoy fetch signing keys, each once, sorted."""
    vhosts = [vhost for listener in gateway.listeners for vhost in listener.virtual_hosts]
    routes = _oauth_routes(vhosts) if mcp else []
    uris = {mcp.oauth.jwks_uri for mcp in routes if mcp.oauth is not None and mcp.oauth.jwks_uri}
    return sorted(uris | client_checks.jwks_uris(client_checks.hosts_checks(vhosts)))


@lru_cache(maxsize=64)
def _jwks_part(uri: str, ca_bundle: str) -> _RunResources:
    """The cluster Envoy fetches a JWKS URI's keys from: its host and port, over TLS (verified with
    the system's CAs, for the host's name) for an https URI."""
    cluster = _jwks_cluster(uri, ca_bundle)
    return _RunResources({cluster.name: cluster}, {}, {})


@lru_cache(maxsize=64)
def _ext_auth_part(auth: ir.ExtAuth, ca_bundle: str) -> _RunResources:
    cluster = _ext_auth_cluster(auth, ca_bundle)
    return _RunResources({cluster.name: cluster}, {}, {})


def _ext_auth_cluster(auth: ir.ExtAuth, ca_bundle: str) -> cluster_pb2.Cluster:
    """An external authorization service's cluster: its backends' endpoints inline (resolved by DNS
    where one is a name), each backend a locality of its weight (a fallback one of the next
    priority), over the TLS of its BackendTLSPolicy; HTTP/2 for a gRPC service."""
    name = ext_authz.cluster_name(auth)
    uses_dns = any(e.kind == "fqdn" for t in auth.targets for e in t.endpoints)
    cluster = cluster_pb2.Cluster(
        name=name,
        alt_stat_name=name.replace(".", "_"),
        type=cluster_pb2.Cluster.STRICT_DNS if uses_dns else cluster_pb2.Cluster.STATIC,
        dns_lookup_family=cluster_pb2.Cluster.V4_PREFERRED,
        connect_timeout=_duration(auth.connect_timeout_s or 10),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name, endpoints=[_locality(target) for target in auth.targets]
        ),
        common_lb_config=cluster_pb2.Cluster.CommonLbConfig(
            locality_weighted_lb_config=cluster_pb2.Cluster.CommonLbConfig.LocalityWeightedLbConfig()
        ),
    )
    cluster.circuit_breakers.CopyFrom(_circuit_breakers(auth.circuit_breaker or ir.CircuitBreaker()))
    _tls_socket_matches(
        cluster, {t.tls for t in auth.targets if t.tls is not None}, ca_bundle, ("h2",) if auth.grpc else ()
    )
    if auth.grpc:
        options = http_protocol_options_pb2.HttpProtocolOptions(
            explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
            )
        )
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Pack(options, deterministic=True)
    return cluster


def _jwks_cluster(uri: str, ca_bundle: str) -> cluster_pb2.Cluster:
    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname or ""
    name = client_checks.jwks_cluster_name(uri)
    try:
        ipaddress.ip_address(host)
        kind = cluster_pb2.Cluster.STATIC
    except ValueError:
        kind = cluster_pb2.Cluster.STRICT_DNS
    port = client_checks.uri_port(parts)
    address = address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))
    cluster = cluster_pb2.Cluster(
        name=name,
        type=kind,
        connect_timeout=_duration(10),
        dns_lookup_family=cluster_pb2.Cluster.V4_PREFERRED,
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(address=address))
                    ]
                )
            ],
        ),
    )
    if parts.scheme == "https":
        context = tls_pb2.UpstreamTlsContext(sni=host)
        context.common_tls_context.validation_context.CopyFrom(_validation_context(ir.UpstreamTLS(sni=host), ca_bundle))
        cluster.transport_socket.CopyFrom(
            base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=_any(context))
        )
    return cluster


@lru_cache(maxsize=_RUNS_KEPT)
def _run_resources(
    run: Run[ir.Rule], plans: tuple[RulePlan, ...], configs: RuleConfigs, fleet: str, settings: BuildSettings
) -> _RunResources:
    """A run's clusters, assignments and secrets (_rule_resources), by name, in rule order."""
    built = _RunResources({}, {}, {})
    for rule, plan, rule_configs in zip(run, plans, configs, strict=True):
        # The dynamic metadata namespaces its backends' credential overrides read.
        namespaces = {traits(c).override_namespace for c in rule_configs if c is not None} - {""}
        rule_clusters, rule_endpoints, rule_secrets = _rule_resources(
            rule, plan, fleet, settings, tuple(sorted(namespaces))
        )
        built.clusters.update(rule_clusters)
        built.endpoints.update(rule_endpoints)
        built.secrets.update(rule_secrets)
    return built


@lru_cache(maxsize=1 << 16)
def _rule_resources(
    rule: ir.Rule, plan: RulePlan, fleet: str, settings: BuildSettings, namespaces: tuple[str, ...]
) -> tuple[Named, Named, Named]:
    """A rule's clusters (its own, and one per priority a spent quota skips), their assignments and
    its secrets, by name. Memoized: an edit builds (and the packer serializes) only what it changed.
    `namespaces`: the dynamic metadata namespaces its backends' credential overrides read."""
    credential = plan.native.credential if plan.native is not None and settings.translator_enabled else None
    cluster, assignment = _cluster(
        rule,
        fleet,
        settings,
        namespaces,
        credential[0] if credential else "",
        strip_prefixes=NATIVE_STRIP_PREFIXES if plan.native is not None else (),
    )
    clusters: dict[str, Content] = {rule.cluster: cluster}
    endpoints: dict[str, Content] = {rule.cluster: assignment} if assignment is not None else {}
    secrets: dict[str, Content] = {}
    for skipped in range(1, len(plan.priorities)):
        floor = floor_rule(rule, skipped)
        floor_cluster, floor_assignment = _cluster(floor, fleet, settings, namespaces)
        clusters[floor.cluster] = floor_cluster
        if floor_assignment is not None:
            endpoints[floor.cluster] = floor_assignment
    if credential is not None:
        name = _credential_secret_name(rule)
        secrets[name] = secret_pb2.Secret(
            name=name,
            generic_secret=secret_pb2.GenericSecret(secret=base_pb2.DataSource(inline_string=credential[1])),
        )
    return tuple(clusters.items()), tuple(endpoints.items()), tuple(secrets.items())


@lru_cache(maxsize=1 << 16)
def _plan(rule: ir.Rule, configs: tuple[bytes | None, ...], envoy_credentials: bool, facts: FleetFacts) -> RulePlan:
    """route_classes.plan_of, memoized on what it depends on (the rule's backends serialized): an
    edit plans again only the rules it changed."""
    parsed = tuple(config_pb2.Backend.FromString(c) if c is not None else None for c in configs)
    return plan_of(rule, parsed, envoy_credentials, facts)


def _model_match(match: tuple[ir.HeaderMatch, ...]) -> ir.HeaderMatch | None:
    return next((h for h in match if h.name == contract.MODEL_HEADER), None)


def _credential_secret_name(rule: ir.Rule) -> str:
    """The SDS secret of a NATIVE rule's key, named after what the key is for: the AIServiceBackends
    and the endpoints they reach, never the rule's position. A secret's value is therefore only
    ever the key of those backends (a rotation updates it in place), and a rule that comes to send
    elsewhere (rules reordered, a backend repointed) names another secret in the same cluster update
    that changes its endpoints (NATIVE clusters carry them inline): no moment where one backend's
    key goes to another's endpoints. A Kubernetes Service's target is named by the Service and
    port, not by its pods' addresses, so pods coming and going keep the secret (and its name); an
    InferencePool's, by the pool (its pods are the picker's to choose)."""
    identity = sorted(
        f"{_service_backend(t.name)}|{reached}|{t.upstream_host}"
        for t in rule.backends
        for reached in (
            [f"service:{t.service}"]
            if t.service
            else [f"pool:{rule.picker.pool}"]
            if rule.picker is not None
            else [f"{e.kind}:{e.address}:{e.port}" for e in t.endpoints]
        )
    )
    digest = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]
    return f"credential/{digest}"


def _service_backend(backend_name: str) -> str:
    parsed = BackendName.parse(backend_name)
    return f"{parsed.namespace}/{parsed.service_backend}" if parsed else backend_name


def translator_fleet(gateways: dict[str, ir.GatewayIR]) -> FleetResources:
    """What translator processes get: every fleet's translator configuration (its head named by the
    fleet, its parts after it: GatewayIR.translator_config_resources), as compiled (packed already;
    the compile gives a piece whose bytes did not change as the very object it gave before: an edit
    packs and hashes again only the pieces it changed, and megabytes are kept once)."""
    resources: dict[str, Content] = {}
    for gateway in gateways.values():
        resources.update(gateway.translator_config_resources())
    return FleetResources({type_urls.TRANSLATOR: resources})


# --------------------------------------------------------------------------------------------
# Listeners and routes


def _listener(
    listener: ir.Listener,
    fleet: str,
    cost_keys: tuple[str, ...],
    native_costs: dict[str, int],
    settings: BuildSettings,
    source_address: bool = False,
    scoped: bool = False,
    pools: bool = False,
) -> listener_pb2.Listener:
    """`source_address`: a budget of the fleet selects clients by address (the router phase asks
    Envoy for it). `scoped`: its routes come in route scopes. `pools`: some of its rules send to
    InferencePools (their endpoint pickers' filter, before the router)."""
    http_filters = health_check_filters(listener.client)
    vhosts = listener.virtual_hosts
    oauth_routes = _oauth_routes(vhosts) if settings.translator_enabled else []
    mcp_routes = [mcp for vhost in vhosts for mcp in vhost.mcp_routes]
    auth_services = ext_authz.services(mcp_routes) if settings.translator_enabled else []
    if settings.translator_enabled:
        http_filters.append(hcm_pb2.HttpFilter(name=REQUEST_BODY_FILTER_NAME, typed_config=_any(_request_body_rules())))
        if scoped:
            http_filters.append(_route_scope_filter(listener.name))
    # Once the route is known (its scope's too): browsers' preflights answered (an OAuth MCPRoute's,
    # a SecurityPolicy's CORS), then the client's token checked (the client's own values of the
    # headers its claims go to removed first), before anything else reads the request.
    needs = client_checks.ListenerNeeds.of(vhosts)
    keys = settings.translator_enabled and needs.keys
    mcp_cors = settings.translator_enabled and any(m.cors_headers is not None for m in mcp_routes)
    if mcp_cors or needs.cors:
        http_filters.append(client_checks.cors_filter())
    if needs.claims:
        http_filters.append(client_checks.claim_headers_filter())
    if oauth_routes or needs.jwt:
        http_filters.append(_jwt_filter(tuple(oauth_routes), vhosts, settings.translator_enabled))
    if keys:
        grpc_service = _translator_grpc_service(fleet, contract.CLIENT_KEYS_PHASE)
        grpc_service.timeout.CopyFrom(_duration(KEY_CHECK_TIMEOUT_S))
        http_filters.append(client_checks.client_keys_filter(grpc_service))
    if needs.credentials:  # (after every check: each reads them)
        http_filters.append(client_checks.credentials_removed_filter())
    if needs.authorization:  # (after the checks: rules read the token's claims)
        http_filters.append(client_checks.authorization_filter(client_checks.AUTHORIZATION_FILTER))
    if settings.translator_enabled:
        # Then the external authorization services of its MCPRoutes, each off but on its own route
        # (the headers they set taken off the client's request first).
        if any(ext_authz.stripped_client_headers(auth) for auth in auth_services):
            http_filters.append(ext_authz.client_headers_filter())
        http_filters += [ext_authz.ext_authz_filter(auth) for auth in auth_services]
        router_phase = _ext_proc(fleet, upstream=False)
        if source_address:
            router_phase.request_attributes.append(contract.SOURCE_ADDRESS_ATTRIBUTE)
        if needs.credentials or needs.authorization:  # (it knows Envoy's refusals of a SecurityPolicy by their details)
            router_phase.response_attributes.append(contract.RESPONSE_DETAILS_ATTRIBUTE)
        http_filters.append(hcm_pb2.HttpFilter(name=contract.EXT_PROC_FILTER_NAME, typed_config=_any(router_phase)))
        if needs.again:  # the token verified for the route the router phase chose
            http_filters.append(client_checks.verified_filter())
        if needs.authorization_routed:  # and its authorization rules
            http_filters.append(client_checks.authorization_filter(client_checks.AUTHORIZATION_ROUTED_FILTER))
        # After ext_proc: on the way back it sees the provider's own response first (the translator,
        # where it runs, writes the same keys later and has the last word).
        http_filters.append(
            hcm_pb2.HttpFilter(name=RESPONSE_USAGE_FILTER_NAME, typed_config=_any(_response_usage_rules(native_costs)))
        )
        # Does nothing unless a route (Envoy serving it alone) names its script: provider errors
        # there are shaped as the translator would shape them.
        http_filters.append(
            hcm_pb2.HttpFilter(
                name=PROVIDER_ERRORS_FILTER_NAME,
                typed_config=_any(
                    lua_pb2.Lua(
                        source_codes={NATIVE_ERRORS_SOURCE: base_pb2.DataSource(inline_string=NATIVE_ERRORS_LUA)}
                    )
                ),
            )
        )
    mcp = any(vhost.mcp_routes for vhost in listener.virtual_hosts)
    if mcp:
        http_filters.append(_MCP_LOG_FILTER)
    if pools:  # last: it reads the request as the translator left it
        http_filters.append(picker_filter())
    client = listener.client
    # Unless asked, the router adds no x-envoy-* headers of its own (as Envoy Gateway): a provider is
    # not told the gateway's host (x-envoy-original-host) nor its timeouts, a client not the upstream's
    # time. (The client's own are gone as its request arrives: _CLIENT_ENVOY_HEADERS_REMOVED.)
    router = router_pb2.Router(suppress_envoy_headers=not client.envoy_headers)
    http_filters.append(hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=_any(router)))
    manager = hcm_pb2.HttpConnectionManager(
        # Envoy's tag extractor takes the prefix up to its first dot (names hold no '_': no two meet)
        stat_prefix=listener.name.replace("/", "_").replace(".", "_"),
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        http_filters=http_filters,
        scheme_header_transformation=protocol_pb2.SchemeHeaderTransformation(match_upstream=True),
        local_reply_config=_local_replies(
            mcp,
            tuple(oauth_routes),
            pools,
            bool(auth_services),
            _body_checked(mcp_routes, auth_services),
            needs.jwt,
            keys,
            needs.authorization,
        ),
    )
    client_protocol(manager, client)
    if not (client.client_ip and client.client_ip.header.startswith("x-envoy-")):  # (one Envoy must read)
        manager.early_header_mutation_extensions.append(_CLIENT_ENVOY_HEADERS_REMOVED)
    if client.early_headers is not None:  # the policy's, then the gateway's own removals that must hold
        manager.early_header_mutation_extensions.append(early_header_changes(client.early_headers))
    if pools:
        manager.early_header_mutation_extensions.append(client_headers_removed())
    if scoped:
        manager.scoped_routes.CopyFrom(_scoped_routes(listener.name))
    else:
        manager.rds.CopyFrom(hcm_pb2.Rds(route_config_name=listener.name, config_source=_ads()))
    if settings.access_log:
        manager.access_log.append(_access_log(settings.access_log_path, cost_keys, pools))
    limit = connection_limit_filter(manager.stat_prefix, client)
    chain = listener_components_pb2.FilterChain(
        filters=[
            *((limit,) if limit is not None else ()),
            listener_components_pb2.Filter(
                name="envoy.filters.network.http_connection_manager", typed_config=_any(manager)
            ),
        ]
    )
    if listener.tls:
        chain.transport_socket.CopyFrom(downstream_tls([c.name for c in listener.certificates], client.tls))
    out = listener_pb2.Listener(
        name=listener.name,
        address=address_pb2.Address(
            # "::" is every address, IPv4 too (as `run --listen-address ::` says: http://localhost:PORT)
            socket_address=address_pb2.SocketAddress(
                address=settings.listener_address,
                port_value=listener.port,
                ipv4_compat=_every_ipv6_address(settings.listener_address),
            )
        ),
        filter_chains=[chain],
        per_connection_buffer_limit_bytes=wrappers_pb2.UInt32Value(value=listener.client.buffer_limit),
    )
    listener_settings(out, client)
    return out


# On a listener with MCPRoutes: the MCP proxy's answer headers for the access log (contract
# MCP_METADATA_KEYS) moved into dynamic metadata, and off the answer.
_MCP_LOG_FILTER = hcm_pb2.HttpFilter(
    name="aigw.mcp_log",
    typed_config=_any(
        h2m_pb2.Config(
            response_rules=[
                h2m_pb2.Config.Rule(
                    header=header,
                    on_header_present=h2m_pb2.Config.KeyValuePair(
                        metadata_namespace=contract.METADATA_NAMESPACE, key=key, type=h2m_pb2.Config.STRING
                    ),
                    remove=True,
                )
                for header, key in contract.MCP_METADATA_KEYS.items()
            ]
        )
    ),
)


# What a reply of ext_proc's own says in its details when the translator did not answer: it could
# not be reached, failed, or took too long (ext_proc_error_gRPC_error_14{...} and the like). The
# details, which may carry the translator's gRPC message, go to the access log, not to the client.
_TRANSLATOR_FAILED = "response.code_details.startsWith('ext_proc_error')"
_TRANSLATOR_FAILED_MESSAGE = (
    "the gateway's translator did not answer (unreachable, failed or too slow); try again later"
)
# A route to an InferencePool (its rule's, in its metadata).
_ON_POOL_ROUTE = (
    f"'{contract.INTERNAL_METADATA_NAMESPACE}' in xds.route_metadata.filter_metadata && "
    f"'{POOL_KEY}' in xds.route_metadata.filter_metadata['{contract.INTERNAL_METADATA_NAMESPACE}']"
)
_PICKER_FAILED_MESSAGE = (
    "the InferencePool's endpoint picker or the gateway's translator did not answer (unreachable, failed or "
    "too slow); try again later"
)
# A reply of the picker's own: no details, no content type (the translator's name their details and
# are JSON, even a translator older than this rule that names none).
_PICKER_REPLY = "response.code_details == '' && !('content-type' in response.headers)"
_PICKER_REFUSED_MESSAGE = "the InferencePool's endpoint picker did not place the request: %LOCAL_REPLY_BODY%"


def _jwt_filter(
    routes: tuple[ir.McpRoute, ...], vhosts: tuple[ir.VirtualHost, ...], translator: bool
) -> hcm_pb2.HttpFilter:
    """Envoy's jwt_authn: the SecurityPolicies' providers and requirements (client_checks), and a
    provider (and a requirement of the same name) per OAuth MCPRoute."""
    config = jwt_pb2.JwtAuthentication()
    config.CopyFrom(_mcp_jwt_config(routes))
    client_checks.add_providers(config, vhosts)
    # Browsers' preflights pass (to the host's preflight route, never a rule's): only where there is
    # one, with a translator (an MCPRoute's, too, has one).
    config.bypass_cors_preflight = translator
    return client_checks.jwt_filter(config)


@lru_cache(maxsize=64)
def _mcp_jwt_config(routes: tuple[ir.McpRoute, ...]) -> jwt_pb2.JwtAuthentication:
    """A provider (and a requirement of the same name) per OAuth MCPRoute, which only that route's
    own configuration asks for: a route without one checks nothing. The token is read from
    Authorization (Bearer) only, as the MCP specification has clients send it; its verified payload
    goes to the MCP proxy in a header of its own, whose claims the authorization rules and claim
    headers read (the token itself reaches no backend)."""
    # Its own challenge (a realm, no resource metadata) left out: the route's local replies give the
    # MCP one (_oauth_challenges), and none to a 503 that is not the token's fault; the policies'
    # replies are in their client's API shape (_jwt_refusals).
    config = jwt_pb2.JwtAuthentication(bypass_cors_preflight=True, strip_failure_response=True)
    for mcp in routes:
        oauth = mcp.oauth
        assert oauth is not None
        provider = jwt_pb2.JwtProvider(
            issuer=oauth.issuer,
            audiences=oauth.audiences,
            # The token itself goes no further than Envoy (the proxy needs its payload only).
            forward=False,
            # (The scheme is case-insensitive, RFC 7235: as clients spell it.)
            from_headers=[jwt_pb2.JwtHeader(name="Authorization", value_prefix=p) for p in ("Bearer ", "bearer ")],
            # The claims the proxy reads: those of the token verified (set over a client's).
            forward_payload_header=contract.MCP_JWT_PAYLOAD_HEADER,
        )
        client_checks.set_signing_keys(provider, oauth.jwks_uri, oauth.jwks_cache_s, oauth.local_jwks)
        config.providers[mcp.name].CopyFrom(provider)
        config.requirement_map[mcp.name].provider_name = mcp.name
    return config


def _oauth_challenges(routes: tuple[ir.McpRoute, ...]) -> list[hcm_pb2.ResponseMapper]:
    """An OAuth MCPRoute's 401 (Envoy's jwt_authn refusing a token, or finding none) with the
    challenge MCP clients read (RFC 6750, RFC 9728): where the route's protected resource metadata
    is, and the scopes to ask for; `error="invalid_token"` when a token was there (a browser's
    client reads it: the CORS filter exposes it)."""
    mappers = []
    for mcp in routes:
        oauth = mcp.oauth
        assert oauth is not None
        # jwt_authn refusing a token (a 401, or a 403 for another audience: MCP has any token not
        # good for the server answered 401, RFC 6750's invalid_token).
        on_route = f"xds.route_name.endsWith('/mcp/{mcp.name}') && response.code_details.startsWith('{JWT_DENIED}')"
        missing = f"response.code_details == '{JWT_DENIED}{{Jwt_is_missing}}'"
        about = (("resource_metadata", oauth.metadata_url), ("scope", " ".join(oauth.scopes)))
        unavailable = f"{on_route} && response.code_details == '{JWT_DENIED}{{Jwks_remote_fetch_is_failed}}'"
        mappers.append(
            hcm_pb2.ResponseMapper(
                # The issuer's keys could not be fetched: not the token's fault (a client told
                # invalid_token would throw a good one away and sign in again).
                filter=_cel_filter(unavailable),
                status_code=wrappers_pb2.UInt32Value(value=503),
                body_format_override=_json_rpc_error(
                    -32603, "the gateway cannot fetch the issuer's keys yet: try again"
                ),
                headers_to_add=[_set_header("Retry-After", "5")],
            )
        )
        for condition, challenge, message in (
            (f"{on_route} && {missing}", bearer.challenge(*about), "an access token is required"),
            (
                on_route,
                bearer.challenge(("error", "invalid_token"), ("error_description", bearer.INVALID_TOKEN), *about),
                "the access token is not valid here",
            ),
        ):
            mappers.append(
                hcm_pb2.ResponseMapper(
                    filter=_cel_filter(condition),
                    status_code=wrappers_pb2.UInt32Value(value=401),
                    body_format_override=_json_rpc_error(-32001, message),
                    headers_to_add=[_set_header("WWW-Authenticate", challenge)],
                )
            )
    return mappers


def _set_header(name: str, value: str) -> base_pb2.HeaderValueOption:
    """A header set over any other of its name, to `value` as it is (Envoy reads a header value to
    add as a format string: its percent signs are doubled)."""
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value.replace("%", "%%")),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def _local_replies(
    mcp: bool = False,
    oauth_routes: tuple[ir.McpRoute, ...] = (),
    pools: bool = False,
    ext_auth: bool = False,
    body_checked: tuple[str, ...] = (),
    client_jwt: bool = False,
    client_keys: bool = False,
    client_authorization: bool = False,
) -> hcm_pb2.LocalReplyConfig:
    """Envoy's own answers as errors in the shape of the client's API, chosen by the client's path
    as the translator chooses (contract.ANTHROPIC_PATH_PREFIX, COHERE_PATH_PREFIX, else OpenAI's).

    - The translator did not answer: ext_proc's reply (503, _ext_proc's status_on_error; 504 after
      a message timeout) has no body, and no translator is there to shape one.
    - An upstream failure (no healthy upstream, connect failure, timeout, a reset: the replies that
      carry a response flag) keeps Envoy's text as the message. The router phase, where it runs,
      passes an error already in the client's shape on; it does not run for some (a reset after
      the response started), which must be in that shape already.
    - `pools`: on a route to an InferencePool, the endpoint picker's refusals (its own replies, with
      no details and no content type: the translator's name theirs and are JSON) keep their status,
      with the picker's text as the message; and a processor that did not answer may be the picker
      as well as the translator.
    - `ext_auth`: an MCPRoute's external authorization service refusing a request: its answer as it
      gave it; the service not answering (ext_authz's statusOnError): a JSON-RPC error saying so;
      on the MCPRoutes `body_checked` names (their service is sent the body), a body larger than it
      may be sent too.
    - `client_jwt`: a SecurityPolicy's JWT refused (_jwt_refusals); `client_keys`: its client key
      (_key_refusals); `client_authorization`: its authorization rules (_authorization_refusals)."""
    translator_failed = _by_client_path(_TRANSLATOR_FAILED, _client_errors(_TRANSLATOR_FAILED_MESSAGE))
    if pools:
        picker_refused = _by_client_path(
            f"{_ON_POOL_ROUTE} && {_PICKER_REPLY}", _client_errors(_PICKER_REFUSED_MESSAGE)
        )
        either_failed = _by_client_path(
            f"{_TRANSLATOR_FAILED} && {_ON_POOL_ROUTE}", _client_errors(_PICKER_FAILED_MESSAGE)
        )
        translator_failed = picker_refused + either_failed + translator_failed
    flagged = accesslog_pb2.AccessLogFilter(response_flag_filter=accesslog_pb2.ResponseFlagFilter())
    upstream_failed = [
        hcm_pb2.ResponseMapper(
            filter=accesslog_pb2.AccessLogFilter(
                and_filter=accesslog_pb2.AndFilter(filters=[flagged, _cel_filter(_path_below(prefix))])
            )
            if prefix
            else flagged,
            body_format_override=_json_format(body),
        )
        for prefix, body in _client_errors("%LOCAL_REPLY_BODY%")
    ]
    # An MCPRoute's request Envoy answers itself (the MCP proxy not reached, its 30 minutes over):
    # a JSON-RPC error, what an MCP client reads. Its route named it in a request header.
    mcp_failed = [
        hcm_pb2.ResponseMapper(
            filter=_cel_filter(f"'{contract.MCP_ROUTE_HEADER}' in request.headers"),
            body_format_override=_json_rpc_error(-32603, "the gateway's MCP proxy did not answer: %LOCAL_REPLY_BODY%"),
        )
    ]
    return hcm_pb2.LocalReplyConfig(
        mappers=_oauth_challenges(oauth_routes)
        + (_jwt_refusals() if client_jwt else [])
        + (_key_refusals() if client_keys else [])
        + (_authorization_refusals() if client_authorization else [])
        + (_unverified_refusals() if client_jwt or client_keys else [])
        + (_ext_auth_replies(body_checked) if ext_auth else [])
        + (mcp_failed if mcp else [])
        + _model_not_found()
        + translator_failed
        + upstream_failed
    )


def _body_checked(mcp_routes: list[ir.McpRoute], services: list[ir.ExtAuth]) -> tuple[str, ...]:
    """The MCPRoutes (names) whose external authorization service is sent the body, if any is."""
    if not any(auth.max_request_bytes for auth in services):
        return ()
    return tuple(sorted({m.name for m in mcp_routes if m.ext_auth is not None and m.ext_auth.max_request_bytes}))


def _ext_auth_replies(body_checked: tuple[str, ...]) -> list[hcm_pb2.ResponseMapper]:
    """An MCPRoute's external authorization: a refusal as the service gave it; the service failing
    (statusOnError) and, on the routes `body_checked` names, a body over what it may be sent
    (bodyToExtAuth's 413) as JSON-RPC errors."""
    on_routes = " || ".join(f"xds.route_name.endsWith('/mcp/{name}')" for name in body_checked)
    too_large = [
        hcm_pb2.ResponseMapper(
            filter=_cel_filter(f"response.code_details == 'request_payload_too_large' && ({on_routes})"),
            body_format_override=_json_rpc_error(
                -32600, "the request is larger than the gateway's authorization service may be sent"
            ),
        )
    ]
    return [
        hcm_pb2.ResponseMapper(filter=_cel_filter("response.code_details == 'ext_authz_denied'")),
        hcm_pb2.ResponseMapper(
            filter=_cel_filter("response.code_details.startsWith('ext_authz_')"),
            body_format_override=_json_rpc_error(
                -32603,
                "the gateway's authorization service could not decide (unreachable, failing or too slow): try again",
            ),
        ),
        *(too_large if body_checked else []),
    ]


def _model_not_found() -> list[hcm_pb2.ResponseMapper]:
    """The 404 of a model no rule takes (a route-not-found route's direct response, which names
    none), naming the model asked for: a new user's trial met "the model specified in your
    request" without knowing which one the SDK had sent. The body's model as Envoy routed on it,
    else the x-ai-eg-model header's (a request routed on the header: `files.list()` with it)."""
    not_found = "response.code == 404 && response.code_details == 'direct_response'"
    in_body = f"'{contract.REQUEST_MODEL_KEY}' in metadata.filter_metadata['{contract.METADATA_NAMESPACE}']"
    # (Absent from the body: the namespace may be missing too, where `in_body` is an error, not false.)
    not_in_body = f"(!('{contract.METADATA_NAMESPACE}' in metadata.filter_metadata) || !({in_body}))"
    in_header = f"'{contract.MODEL_HEADER}' in request.headers"
    sources = (
        (f"{not_found} && {in_body}", f"{_metadata(contract.REQUEST_MODEL_KEY)[:-1]}:200%"),
        (f"{not_found} && {not_in_body} && {in_header}", f"%REQ({contract.MODEL_HEADER}):200%"),
    )
    prefixes = {"anthropic": contract.ANTHROPIC_PATH_PREFIX, "cohere": contract.COHERE_PATH_PREFIX, "openai": ""}
    mappers = []
    for wanted, model in sources:
        message = ROUTE_NOT_FOUND_MESSAGE.replace("in your request", f"in your request ('{model}')")
        shapes = _not_found_shapes(message, "model_not_found")
        mappers += _by_client_path(wanted, [(prefixes[api], body) for api, body in shapes.items()])
    return mappers


def _by_client_path(
    condition: str, bodies: Iterable[tuple[str, dict[str, Any]]], **reply: Any
) -> list[hcm_pb2.ResponseMapper]:
    """Mappers of the replies `condition` (CEL) takes to a body per client API, chosen by the
    prefix below which the client's path is ("": every other path, last); `reply`: the mappers'
    other fields (a status, headers)."""
    ordered = sorted(bodies, key=lambda pair: not pair[0])
    return [
        hcm_pb2.ResponseMapper(
            filter=_cel_filter(f"{condition} && {_path_below(prefix)}" if prefix else condition),
            body_format_override=_json_format(body),
            **reply,
        )
        for prefix, body in ordered
    ]


# An error's type in OpenAI's and in Anthropic's API: a server error, the client's credentials
# refused, not allowed.
SERVER_ERROR = ("server_error", "api_error")
AUTHENTICATION_ERROR = ("authentication_error", "authentication_error")
PERMISSION_ERROR = ("permission_error", "permission_error")


def _client_errors(
    message: str, code: str | None = None, types: tuple[str, str] = SERVER_ERROR
) -> tuple[tuple[str, dict[str, Any]], ...]:
    """An error saying `message` in each client API's shape (`code`: OpenAI's error code; `types`:
    its type in OpenAI's and Anthropic's), by the path prefix that chooses it ("": OpenAI's, for
    every other path)."""
    openai, anthropic = types
    return (
        (contract.ANTHROPIC_PATH_PREFIX, {"type": "error", "error": {"type": anthropic, "message": message}}),
        (contract.COHERE_PATH_PREFIX, {"message": message}),
        ("", {"error": {"message": message, "type": openai, "param": None, "code": code}}),
    )


def _key_refusals() -> list[hcm_pb2.ResponseMapper]:
    """A SecurityPolicy's apiKeyAuth: the translator's refusal as it gave it (in the client's API
    shape); the translator not answering, a 503 in that shape (not on an MCPRoute, whose external
    authorization service's failures are _ext_auth_replies')."""
    failed = f"response.code_details.startsWith('ext_authz_') && !xds.route_name.matches('{_MCP_ROUTE_NAME}')"
    message = "the gateway could not check the request's API key (its translator did not answer): try again later"
    return _marked_on_native(
        [
            hcm_pb2.ResponseMapper(filter=_cel_filter("response.code_details == 'ext_authz_denied'")),
            *_by_client_path(failed, _client_errors(message), status_code=wrappers_pb2.UInt32Value(value=503)),
        ]
    )


# The name of an MCPRoute's routes (_mcp_route): "<ns>/<gateway>/<host>/mcp/<ns>/<name>".
_MCP_ROUTE_NAME = "^[^/]+/[^/]+/[^/]+/mcp/"


def _jwt_refusals() -> list[hcm_pb2.ResponseMapper]:
    """A SecurityPolicy's jwt_authn refusing a request (after the MCPRoutes' own refusals), in the
    client's API shape: a 401 with a Bearer challenge (RFC 6750), a 403 (a token for another
    audience), or a 503 while the issuer's keys cannot be fetched (not the token's fault)."""
    denied = f"response.code_details.startsWith('{JWT_DENIED}')"
    unavailable = f"response.code_details == '{JWT_DENIED}{{Jwks_remote_fetch_is_failed}}'"
    missing = f"response.code_details == '{JWT_DENIED}{{Jwt_is_missing}}'"
    status = wrappers_pb2.UInt32Value
    # An MCPRoute of no policy of its own, under its Gateway's (an OAuth route's own refusals come
    # first, _oauth_challenges): a JSON-RPC error, what an MCP client reads, with the challenge.
    on_mcp = f"xds.route_name.matches('{_MCP_ROUTE_NAME}')"
    mcp = [
        hcm_pb2.ResponseMapper(
            filter=_cel_filter(f"{on_mcp} && {denied} && !({unavailable})"),
            body_format_override=_json_rpc_error(-32001, "the gateway's SecurityPolicy asks for a valid JWT"),
            headers_to_add=[_set_header("WWW-Authenticate", "Bearer")],
        )
    ]
    return mcp + _marked_on_native(
        [
            *_by_client_path(
                unavailable,
                _client_errors("the gateway cannot fetch the signing keys of the token's issuer yet: try again"),
                status_code=status(value=503),
                headers_to_add=[_set_header("Retry-After", "5")],
            ),
            *_by_client_path(
                missing,
                _client_errors(
                    "this request needs a JWT (a bearer token), and none was sent", types=AUTHENTICATION_ERROR
                ),
                headers_to_add=[_set_header("WWW-Authenticate", "Bearer")],
            ),
            *_by_client_path(
                f"{denied} && response.code == 403",
                _client_errors("the JWT is not for this service (its audience)", types=PERMISSION_ERROR),
            ),
            *(
                mapper
                for reason, message in (*_JWT_REASONS, ("", "the JWT is not valid here (%RESPONSE_CODE_DETAILS%)"))
                for mapper in _by_client_path(
                    f"response.code_details == '{JWT_DENIED}{{{reason}}}'" if reason else denied,
                    _client_errors(message, types=AUTHENTICATION_ERROR),
                    headers_to_add=[_set_header("WWW-Authenticate", bearer.challenge(("error", "invalid_token")))],
                )
            ),
        ]
    )


# Why jwt_authn refused a token (its reply's details, spaces as underscores), as a client reads it.
_JWT_REASONS = (
    ("Jwt_is_expired", "the JWT has expired"),
    ("Jwt_not_yet_valid", "the JWT is not valid yet"),
    ("Jwt_verification_fails", "the JWT's signature does not verify with its issuer's keys"),
    ("Jwt_issuer_is_not_configured", "the JWT's issuer is not one this gateway takes"),
    (
        "Jwt_is_not_in_the_form_of_Header.Payload.Signature_with_two_dots_and_3_sections",
        "the bearer token is not a JWT",
    ),
)


# A route Envoy serves alone (its rule's NATIVE routes, whose provider-errors script shapes a 401 as
# the provider's rejection of the gateway's key).
_ON_NATIVE_ROUTE = (
    f"'{contract.INTERNAL_METADATA_NAMESPACE}' in xds.route_metadata.filter_metadata && "
    f"'{contract.NATIVE_ROUTE_KEY}' in xds.route_metadata.filter_metadata['{contract.INTERNAL_METADATA_NAMESPACE}']"
)


def _marked_on_native(mappers: list[hcm_pb2.ResponseMapper]) -> list[hcm_pb2.ResponseMapper]:
    """Each of Envoy's refusals of a SecurityPolicy's checks twice: on a route Envoy serves alone,
    marked as the gateway's own (contract.REFUSED_HERE_HEADER: its provider-errors script passes it
    on as it is, and takes the mark off); then as it is (the router phase knows it by its details)."""
    out = []
    for mapper in mappers:
        marked = hcm_pb2.ResponseMapper()
        marked.CopyFrom(mapper)
        both = accesslog_pb2.AndFilter(filters=[mapper.filter, _cel_filter(_ON_NATIVE_ROUTE)])
        marked.filter.CopyFrom(accesslog_pb2.AccessLogFilter(and_filter=both))
        marked.headers_to_add.append(_set_header(contract.REFUSED_HERE_HEADER, "1"))
        out += [marked, mapper]
    return out


# A request the router phase routed again to a rule whose policy did not verify its credentials.
UNVERIFIED_MESSAGE = "this request needs the credentials (a JWT, an API key) that the route of its model takes"


# What a SecurityPolicy's authorization refusal says (Envoy Gateway's body is "RBAC: access denied").
AUTHORIZATION_REFUSED_MESSAGE = "RBAC: access denied: the gateway's authorization rules do not let this request by"


def _authorization_refusals() -> list[hcm_pb2.ResponseMapper]:
    """A SecurityPolicy's authorization rules refusing (client_checks' actions: RBAC's details name
    the rule): a 403 in the client's API shape; on an MCPRoute of no policy of its own, under its
    Gateway's, a JSON-RPC error, what an MCP client reads."""
    details = f"rbac_access_denied_matched_policy[{client_checks.AUTHORIZATION_ACTION_PREFIX}"
    refused = f"response.code_details.startsWith('{details}')"
    mcp = hcm_pb2.ResponseMapper(
        filter=_cel_filter(f"xds.route_name.matches('{_MCP_ROUTE_NAME}') && {refused}"),
        body_format_override=_json_rpc_error(-32001, AUTHORIZATION_REFUSED_MESSAGE),
    )
    shaped = _by_client_path(refused, _client_errors(AUTHORIZATION_REFUSED_MESSAGE, types=PERMISSION_ERROR))
    return [mcp, *_marked_on_native(shaped)]


def _unverified_refusals() -> list[hcm_pb2.ResponseMapper]:
    """client_checks.VERIFIED_FILTER's refusal: a 401 in the client's API shape."""
    return _marked_on_native(
        _by_client_path(
            "response.code_details.startsWith('rbac_access_denied')",
            _client_errors(UNVERIFIED_MESSAGE, types=AUTHENTICATION_ERROR),
            status_code=wrappers_pb2.UInt32Value(value=401),
            headers_to_add=[_set_header("WWW-Authenticate", bearer.challenge(("error", "invalid_token")))],
        )
    )


def _json_format(body: dict[str, Any]) -> sfs_pb2.SubstitutionFormatString:
    return sfs_pb2.SubstitutionFormatString(json_format=_struct(body))


def _json_rpc_error(code: int, message: str) -> sfs_pb2.SubstitutionFormatString:
    """An MCP client's reply of Envoy's own: a JSON-RPC error (its request's id unknown here)."""
    return _json_format({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}})


def _path_below(prefix: str) -> str:
    """CEL: the client's path has `prefix` as a segment (under any root prefix). The client's: the
    per-attempt phase rewrites :path for the backend it picked and keeps the client's in
    ORIGINAL_PATH_HEADER, so a translator gone during an attempt leaves the backend's path."""
    header = contract.ORIGINAL_PATH_HEADER
    path = f"('{header}' in request.headers ? request.headers['{header}'] : request.url_path)"
    return f"({path}.contains('{prefix}/') || {path}.endsWith('{prefix}'))"


def _cel_filter(expression: str) -> accesslog_pb2.AccessLogFilter:
    return accesslog_pb2.AccessLogFilter(
        extension_filter=accesslog_pb2.ExtensionFilter(
            name="envoy.access_loggers.extension_filters.cel",
            typed_config=_any(cel_filter_pb2.ExpressionFilter(expression=expression)),
        )
    )


def _to_metadata(
    key: str, kind: int = j2m_pb2.JsonToMetadata.STRING, **value: object
) -> j2m_pb2.JsonToMetadata.KeyValuePair:
    pair = j2m_pb2.JsonToMetadata.KeyValuePair(metadata_namespace=contract.METADATA_NAMESPACE, key=key, type=kind)
    if value:
        pair.value.CopyFrom(struct_pb2.Value(**value))  # type: ignore[arg-type]
    return pair


def _rule(path: str, on_present: j2m_pb2.JsonToMetadata.KeyValuePair) -> j2m_pb2.JsonToMetadata.Rule:
    return j2m_pb2.JsonToMetadata.Rule(
        selectors=[j2m_pb2.JsonToMetadata.Selector(key=k) for k in path.split(".")], on_present=on_present
    )


def _request_body_rules() -> j2m_pb2.JsonToMetadata:
    """The body's model and stream flag into metadata: Envoy holds the request until the body is
    read, then picks the route again on them. The model is also the override until the translator
    (where it runs) says otherwise."""
    return j2m_pb2.JsonToMetadata(
        request_rules=j2m_pb2.JsonToMetadata.MatchRules(
            rules=[
                # As sent (a number stays a number): routes match strings only, and a model that is
                # not one goes to the router phase, which answers the client's 400.
                _rule("model", _to_metadata(contract.REQUEST_MODEL_KEY, j2m_pb2.JsonToMetadata.PROTOBUF_VALUE)),
                _rule("model", _to_metadata(contract.MODEL_NAME_OVERRIDE_KEY)),
                _rule("stream", _to_metadata(contract.REQUEST_STREAM_KEY, j2m_pb2.JsonToMetadata.PROTOBUF_VALUE)),
            ],
            allow_content_types=list(contract.JSON_CONTENT_TYPES),
            allow_empty_content_type=True,
        )
    )


def _response_usage_rules(native_costs: dict[str, int]) -> j2m_pb2.JsonToMetadata:
    """Usage of an OpenAI-shaped JSON response into the translator's keys: what a route Envoy serves
    alone records, exactly as the translator would for it (from_openai): token counts, the
    fleet-wide token costs, the answering model, and that the figures are the provider's own."""
    number = j2m_pb2.JsonToMetadata.NUMBER
    rules = [
        _rule("usage.prompt_tokens", _to_metadata(contract.INPUT_TOKENS_KEY, number)),
        _rule("usage.completion_tokens", _to_metadata(contract.OUTPUT_TOKENS_KEY, number)),
        _rule("model", _to_metadata(contract.RESPONSE_MODEL_KEY)),
        _rule(
            "usage",
            _to_metadata(contract.USAGE_ESTIMATED_KEY, j2m_pb2.JsonToMetadata.PROTOBUF_VALUE, bool_value=False),
        ),
    ]
    for key, kind in sorted(native_costs.items()):
        rules.append(_rule(f"usage.{NATIVE_COST_FIELDS[kind]}", _to_metadata(key, number)))
    return j2m_pb2.JsonToMetadata(
        response_rules=j2m_pb2.JsonToMetadata.MatchRules(
            rules=rules, allow_content_types=list(contract.JSON_CONTENT_TYPES)
        )
    )


def _backend_of_host_or_cluster(ns: str, key: str) -> str:
    """The access-log operator of the backend that answered where a pool's pod may have: the pod
    (an ORIGINAL_DST host) has no metadata, its cluster names the pool's backend, once a pod was
    reached (a request refused before names none); every other cluster has no metadata of its own,
    and its endpoint names the backend."""
    return (
        f"%CEL('{ns}' in xds.cluster_metadata.filter_metadata ? "
        f"(upstream.address != '' ? xds.cluster_metadata.filter_metadata['{ns}']['{key}'] : '') : "
        f"xds.upstream_host_metadata.filter_metadata['{ns}']['{key}'])%"
    )


_BACKEND_OF_HOST_OR_CLUSTER = _backend_of_host_or_cluster(
    contract.INTERNAL_METADATA_NAMESPACE, contract.BACKEND_NAME_KEY
)


def _access_log(path: str, cost_keys: tuple[str, ...], pools: bool = False) -> accesslog_pb2.AccessLog:
    """JSON access log with the AI fields; every cost the fleet's routes define appears under its
    metadata key, read from the metadata the translator writes at the end of the response. `pools`:
    some of its routes send to InferencePools."""
    fields = dict(ACCESS_LOG_FORMAT)
    if pools:
        fields["gen_ai.provider.name"] = _BACKEND_OF_HOST_OR_CLUSTER
    for key in cost_keys:
        fields[key] = _metadata(key)
    fmt = _json_format(fields)
    fmt.formatters.add(name="envoy.formatter.req_without_query").typed_config.Pack(rwq_pb2.ReqWithoutQuery())
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
    body switched to STREAMED by the translator for SSE (FULL_DUPLEX_STREAMED on a route with a
    streamIdleTimeout, so it can end a stream whose backend went silent). Upstream level (per attempt, in the
    cluster): request only, plus the attributes naming the endpoint Envoy picked, plus the dynamic
    metadata `namespaces` the cluster's credentialOverride.fromDynamicMetadata read. Each level names
    itself in the stream's gRPC metadata; the translator refuses a stream that does not."""
    mode = processing_mode_pb2.ProcessingMode
    phase = contract.UPSTREAM_PHASE if upstream else contract.ROUTER_PHASE
    return ext_proc_pb2.ExternalProcessor(
        grpc_service=_translator_grpc_service(fleet, phase),
        # The translator unreachable or failed: unavailable, not Envoy's default 500 (_local_replies
        # gives it the client's error shape; a message timeout stays Envoy's 504).
        status_on_error=http_status_pb2.HttpStatus(code=http_status_pb2.ServiceUnavailable),
        processing_mode=mode(
            request_header_mode=mode.SEND,
            request_body_mode=mode.BUFFERED,
            request_trailer_mode=mode.SKIP,
            response_header_mode=mode.SKIP if upstream else mode.SEND,
            response_body_mode=mode.NONE if upstream else mode.BUFFERED,
            response_trailer_mode=mode.SKIP,
        ),
        # The client's address too: the per-attempt phase may have to admit a request against budgets
        # that select by it (budgets.py: a request the router phase could not admit).
        request_attributes=[*contract.UPSTREAM_ATTRIBUTES, contract.SOURCE_ADDRESS_ATTRIBUTE] if upstream else [],
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


def _route_configurations(
    listener: ir.Listener,
    plans: dict[Run[ir.Rule], tuple[RulePlan, ...]],
    root_prefix: str,
    translator: bool,
    scoped: bool,
) -> dict[str, list[bytes]]:
    """The listener's route configuration (named after it), or its scopes' (_scope_names), each
    as the parts it is joined from (_joined): its routes' bytes, which joined are the same bytes
    as serializing it whole, since each part comes in field-number order (name, then virtual hosts;
    in each host its name and domains, the routes, then the retry policy; then the headers to
    remove; then the port ignored in host matching)."""
    vhosts = listener.virtual_hosts or (ir.VirtualHost(f"{listener.name}/*", ("*",), ()),)
    names = _scope_names(listener.name) if scoped else {listener.name: None}
    scopes = list(names.values())
    keys_filter = translator and client_checks.ListenerNeeds.of(vhosts).keys
    hosts = [
        _virtual_host(vhost, plans, root_prefix, translator, scopes, listener.refusal, keys_filter) for vhost in vhosts
    ]
    removed = _RESPONSE_HEADERS_REMOVED_BUT_COOKIES if _makes_cookies(vhosts) else _RESPONSE_HEADERS_REMOVED
    out = {}
    for i, name in enumerate(names):
        parts = [route_pb2.RouteConfiguration(name=name).SerializeToString(deterministic=True)]
        for host in hosts:
            parts += [
                field_key(route_pb2.RouteConfiguration.VIRTUAL_HOSTS_FIELD_NUMBER, sum(map(len, host[i]))),
                *host[i],
            ]
        parts.append(removed)
        if scoped:
            parts.append(_SCOPE_HEADERS_REMOVED)
        client_ip = listener.client.client_ip
        parts.append(_client_headers_removed(client_ip.header if client_ip else ""))
        parts.append(_PORT_IGNORED_IN_HOST)
        out[name] = parts
    return out


# A virtual host's domains match a Host with any port (gateway.example.com:8443, as clients send
# it on any port but the scheme's), as Envoy Gateway renders route configurations: a new user's
# HTTPS listener with a hostname answered every such request 404.
_PORT_IGNORED_IN_HOST = route_pb2.RouteConfiguration(ignore_port_in_host_matching=True).SerializeToString(
    deterministic=True
)


# What a provider's response says of the gateway's account (its organization and project ids) and
# the cookies it sets (Cloudflare's, of the provider's domain) do not reach the gateway's clients.
_PROVIDER_ACCOUNT_HEADERS = ("openai-organization", "openai-project", "anthropic-organization-id")
_RESPONSE_HEADERS_REMOVED = route_pb2.RouteConfiguration(
    response_headers_to_remove=(*_PROVIDER_ACCOUNT_HEADERS, "set-cookie")
).SerializeToString(deterministic=True)
# Where a ConsistentHash load balancer makes its cookie, Envoy adds it before this removal (checked
# with Envoy 1.40): a provider's cookies then pass, beside it.
_RESPONSE_HEADERS_REMOVED_BUT_COOKIES = route_pb2.RouteConfiguration(
    response_headers_to_remove=_PROVIDER_ACCOUNT_HEADERS
).SerializeToString(deterministic=True)


# A client's own x-envoy-* headers, removed as its request arrives (before Envoy reads any: every
# client is an external one, whose retry and timeout headers Envoy drops; the others it would pass
# on to providers).
_CLIENT_ENVOY_HEADERS_REMOVED = extension_pb2.TypedExtensionConfig(
    name="envoy.http.early_header_mutation.header_mutation",
    typed_config=_any(
        early_pb2.HeaderMutation(
            mutations=[
                mutation_rules_pb2.HeaderMutation(
                    remove_on_match=mutation_rules_pb2.HeaderMutation.RemoveOnMatch(
                        key_matcher=string_pb2.StringMatcher(prefix="x-envoy-")
                    )
                )
            ]
        )
    ),
)


@lru_cache(maxsize=16)
def _client_headers_removed(address_header: str) -> bytes:
    """What a route configuration ends with: the headers that tell a client's address are not
    sent on (x-forwarded-for, whatever wrote it: the client, a proxy in front, or Envoy for a
    connection outside trusted CIDRs; x-envoy-external-address; a ClientTrafficPolicy's
    customHeader). Removed as the request leaves: Envoy read the client's address before."""
    removed = ("x-forwarded-for", "x-envoy-external-address", *((address_header,) if address_header else ()))
    part: bytes = route_pb2.RouteConfiguration(request_headers_to_remove=removed).SerializeToString(deterministic=True)
    return part


def _makes_cookies(vhosts: Iterable[ir.VirtualHost]) -> bool:
    """Whether a rule of these hosts hashes on a cookie Envoy makes (one with a ttl)."""
    return any(
        hashed.kind == "cookie" and hashed.cookie_ttl_s is not None
        for vhost in vhosts
        for run in vhost.runs
        for rule in run
        if rule.traffic is not None and rule.traffic.load_balancing is not None
        for hashed in rule.traffic.load_balancing.hash_on
    )


def _virtual_host(
    vhost: ir.VirtualHost,
    plans: dict[Run[ir.Rule], tuple[RulePlan, ...]],
    root_prefix: str,
    translator: bool,
    scopes: list[str | None],
    refusal: str = "",
    keys_filter: bool = False,
) -> list[list[bytes]]:
    """A VirtualHost serialized, in parts, once per scope (None: with all its routes): the rules'
    routes, most specific match first (a rule's own routes in _rule_routes order), then the routes
    for requests no rule took (with a `refusal`: routes answering every request with it, as a 500;
    and without a translator, on a host whose policies ask for client keys, which only it checks);
    `keys_filter`: the listener asks the translator for client keys;
    the retry policy most rule routes share is the host's (_common_retry_policy, the same in every
    scope). Made of the runs of its rules (_HostRun); `plans`: each run's rules' plans."""
    host = vhost.client_checks
    if host is not None and not translator:  # (no router phase routes a request again)
        host = replace(host, again=False)
        if any(c.api_keys for c in host.every_checks):
            refusal = refusal or NO_KEY_CHECK_REFUSAL
    runs = () if refusal else vhost.runs  # (a host refusing every request serves no rule)
    # (Most hosts' rules need nothing of their policies: the host's own is on the host.)
    rule_checks = host if host is not None and host.route_checks else None
    host_runs = [_host_run(run, plans[run], root_prefix, translator, rule_checks) for run in runs]
    counts: dict[bytes, int] = {}
    for host_run in host_runs:
        for key, count in host_run.retry_counts.items():
            counts[key] = counts.get(key, 0) + count
    common = _common_retry_policy(counts)
    header = route_components_pb2.VirtualHost(
        name=vhost.name,
        domains=vhost.domains,
        typed_per_filter_config=client_checks.host_config(host, keys_filter, _own_credentials(vhost)),
    )
    head = [header.SerializeToString(deterministic=True)]
    if translator:  # the MCP proxy is the translator's: without one, nothing answers them
        head += [_entry(_mcp_route(vhost.name, mcp, host)) for mcp in vhost.mcp_routes]
        head += [_entry(route) for route in _resource_metadata_routes(vhost.name, vhost.mcp_routes, host)]
        if client_checks.preflights(host):
            head.append(_entry(_preflight_route(vhost.name)))
        if host is not None and host.again and not refusal:
            # The model list names no rule: the host's own policy decides it, not the answers'
            # looser checks (which let by what some rule of the host takes).
            head.append(_entry(_model_list_route(vhost.name, root_prefix)))
    answers = _refusals(vhost, root_prefix, refusal) if refusal else _answers(vhost, root_prefix, translator)
    tail = [_entry(answer) for answer in answers]
    if common is not None:
        policy = route_components_pb2.RetryPolicy.FromString(common)
        tail.append(route_components_pb2.VirtualHost(retry_policy=policy).SerializeToString(deterministic=True))
    lengths = sorted({length for host_run in host_runs for length in host_run.routes}, reverse=True)
    by_scope = {scope: list(head) for scope in scopes}
    for length in lengths:
        for host_run in host_runs:
            if length not in host_run.routes:
                continue
            if None in by_scope:
                by_scope[None] += host_run.routes_of(length, common)
                continue
            own, every = host_run.scoped_routes_of(length, common)
            if every:  # routes for any model: in every scope
                for scope, parts in by_scope.items():
                    parts += own.get(scope, every)  # type: ignore[arg-type]  # scopes are named here
            else:  # only what each scope has of its own (most runs: a few of the scopes)
                for scope, routes in own.items():
                    by_scope[scope] += routes
    return [by_scope[scope] + tail for scope in scopes]


def _own_credentials(vhost: ir.VirtualHost) -> tuple[tuple[str, str], ...]:
    """Where the host's MCPRoutes of their own securityPolicy read their clients' keys."""
    return tuple(dict.fromkeys(c for mcp in vhost.mcp_routes if mcp.secured for c in mcp.own_credentials))


@lru_cache(maxsize=256)
def _model_list_route(vhost: str, root_prefix: str) -> route_components_pb2.Route:
    """GET of the model list (or one model of it), in OpenAI's or Anthropic's path: answered by the
    router phase, under the host's own checks (the virtual host's configuration)."""
    root = re.escape(contract.root_prefix(root_prefix))
    match = route_components_pb2.RouteMatch(
        safe_regex=regex_pb2.RegexMatcher(
            regex=f"^{root}({re.escape(contract.ANTHROPIC_PATH_PREFIX)})?/v1/models(/.*)?$"
        ),
        headers=[_GET],
    )
    return _direct_answer(f"{vhost}/model-list", [], extproc=True, match=match)


@lru_cache(maxsize=256)
def _preflight_route(vhost: str) -> route_components_pb2.Route:
    """A browser's preflight (OPTIONS, with Access-Control-Request-Method), which jwt_authn lets by
    and which carries no body, so no model: never a rule's (whatever body it has), answered by
    Envoy's CORS filter with the host's policy, on a route that sends somewhere (the filter skips a
    direct response): to the translator, which no preflight reaches (the filter answers every one,
    without CORS headers for an origin the policy does not allow), or one of a host without CORS
    (answered 400: a request body is required)."""
    return route_components_pb2.Route(
        name=f"{vhost}/cors-preflight",
        match=route_components_pb2.RouteMatch(
            prefix="/",
            headers=[
                route_components_pb2.HeaderMatcher(
                    name=":method", string_match=string_pb2.StringMatcher(exact="OPTIONS")
                ),
                route_components_pb2.HeaderMatcher(name="access-control-request-method", present_match=True),
            ],
        ),
        route=route_components_pb2.RouteAction(cluster=contract.TRANSLATOR_CLUSTER_NAME),
    )


# How long Envoy waits for the translator's answer about a client key (a lookup in memory).
KEY_CHECK_TIMEOUT_S = 2
# Every request of a host whose SecurityPolicies ask for client keys, served without a translator.
NO_KEY_CHECK_REFUSAL = (
    "The gateway's client checks (a SecurityPolicy's apiKeyAuth) need its translator, which this gateway "
    "runs without: no request is served."
)


# Route scopes. A route configuration holds every route of its listener, and every edit resends it
# whole to every Envoy of the fleet (1.5 MB at 10,000 rules). A listener with many rules that match
# models by name has its routes in ROUTE_SCOPES route configurations instead, one per bucket of the
# model (contract.route_scope): each holds the routes for its models and those for any model (a
# model matched by a regular expression, a rule without one, the answers for requests no rule
# took), in the listener's order, so that a request's first match is the one it has in the whole
# list. An edit of one rule resends one scope's routes. Envoy picks the scope by a key of two
# request headers, which a Lua filter sets once json_to_metadata has read the body's model (the
# header's, without one), and the router phase again when it finds the model itself.
_SCOPE_HEADERS = (contract.ROUTE_SCOPE_LISTENER_HEADER, contract.ROUTE_SCOPE_HEADER)
# What every scope's route configuration ends with: the scope's headers are not sent upstream.
_SCOPE_HEADERS_REMOVED = route_pb2.RouteConfiguration(request_headers_to_remove=_SCOPE_HEADERS).SerializeToString(
    deterministic=True
)
ROUTE_SCOPE_LUA = """
function envoy_on_request(handle)
  local model = nil
  local metadata = handle:streamInfo():dynamicMetadata():get("%(namespace)s")
  if metadata ~= nil then
    model = metadata["%(model_key)s"]
  end
  if type(model) ~= "string" then
    model = handle:headers():get("%(model_header)s") or ""
  end
  local h = 0
  for i = 1, math.min(#model, %(scope_bytes)d) do
    h = (h * 31 + string.byte(model, i)) %% 1000003
  end
  h = (h * 31 + #model) %% 1000003
  handle:headers():replace("%(listener_header)s", "%(listener)s")
  handle:headers():replace("%(scope_header)s", tostring(h %% %(scopes)d))
  handle:clearRouteCache()
end
"""


@lru_cache(maxsize=1 << 12)
def _model_matches(run: Run[ir.Rule]) -> tuple[int, int]:
    """How many of a run's rule matches name their model (exactly, not by a regular expression),
    and how many match any model (in every scope)."""
    named = sum(1 for rule in run for m in rule.matches if (model := _model_match(m)) is not None and not model.regex)
    return named, sum(max(1, len(rule.matches)) for rule in run) - named


def _scoped(listener: ir.Listener, settings: BuildSettings) -> bool:
    """Whether the listener's routes come in scopes: always when asked (route_scopes_from 0), else
    when its rules match enough models by name and few enough match any model. Those are in every
    scope: their copies may at most double the routes (1,000 rules on models and 1,000 on patterns
    would be 128,000 routes for Envoy)."""
    if not settings.translator_enabled:
        return False
    if settings.route_scopes_from == 0:
        return True
    counts = [_model_matches(run) for vhost in listener.virtual_hosts for run in vhost.runs]
    named, anything = sum(n for n, _ in counts), sum(a for _, a in counts)
    return named >= settings.route_scopes_from and anything * contract.ROUTE_SCOPES <= named


def _scope_names(listener: str) -> dict[str, str]:
    """The name of each scope's route configuration (and of the scope) -> the scope's key."""
    return {f"{listener}#{scope}": str(scope) for scope in range(contract.ROUTE_SCOPES)}


def _route_scopes(listener: str) -> dict[str, scoped_route_pb2.ScopedRouteConfiguration]:
    """The listener's scopes: each keyed by the listener's name and its bucket, naming its route
    configuration."""
    return {
        name: scoped_route_pb2.ScopedRouteConfiguration(
            name=name,
            route_configuration_name=name,
            key=scoped_route_pb2.ScopedRouteConfiguration.Key(
                fragments=[
                    scoped_route_pb2.ScopedRouteConfiguration.Key.Fragment(string_key=listener),
                    scoped_route_pb2.ScopedRouteConfiguration.Key.Fragment(string_key=scope),
                ]
            ),
        )
        for name, scope in _scope_names(listener).items()
    }


def _scoped_routes(listener: str) -> hcm_pb2.ScopedRoutes:
    """The connection manager's route scopes: SRDS over ADS, keyed by the scope headers."""
    extractor = hcm_pb2.ScopedRoutes.ScopeKeyBuilder.FragmentBuilder.HeaderValueExtractor
    fragments = [
        hcm_pb2.ScopedRoutes.ScopeKeyBuilder.FragmentBuilder(header_value_extractor=extractor(name=header, index=0))
        for header in _SCOPE_HEADERS
    ]
    return hcm_pb2.ScopedRoutes(
        name=listener,
        scope_key_builder=hcm_pb2.ScopedRoutes.ScopeKeyBuilder(fragments=fragments),
        rds_config_source=_ads(),
        scoped_rds=hcm_pb2.ScopedRds(scoped_rds_config_source=_ads()),
    )


def _route_scope_filter(listener: str) -> hcm_pb2.HttpFilter:
    """The Lua filter that sets a request's scope headers (ROUTE_SCOPE_LUA)."""
    if '"' in listener or "\\" in listener:  # a Kubernetes name and a port: never
        raise ValueError(f"listener name {listener!r} cannot be a Lua string")
    source = ROUTE_SCOPE_LUA % {
        "namespace": contract.METADATA_NAMESPACE,
        "model_key": contract.REQUEST_MODEL_KEY,
        "model_header": contract.MODEL_HEADER,
        "listener_header": contract.ROUTE_SCOPE_LISTENER_HEADER,
        "listener": listener,
        "scope_header": contract.ROUTE_SCOPE_HEADER,
        "scopes": contract.ROUTE_SCOPES,
        "scope_bytes": contract.ROUTE_SCOPE_BYTES,
    }
    lua = lua_pb2.Lua(default_source_code=base_pb2.DataSource(inline_string=source))
    return hcm_pb2.HttpFilter(name=ROUTE_SCOPE_FILTER_NAME, typed_config=_any(lua))


def _answers(vhost: ir.VirtualHost, root_prefix: str, translator: bool) -> list[route_components_pb2.Route]:
    """The routes after the rules': requests no rule took."""
    ordered = []
    # No model anywhere (no x-ai-eg-model header, none in the body as far as Envoy could read it):
    # the router phase still looks (a multipart form), then routes again with its header set.
    no_model = [_model_metadata(absent=True)] if translator else []
    for api, prefix in _api_prefixes(root_prefix):
        match = route_components_pb2.RouteMatch(headers=[_header_absent(contract.MODEL_HEADER)], **prefix)
        name = f"{vhost.name}/{api}-no-model" if api != "openai" else f"{vhost.name}/no-model"
        ordered.append(_direct_answer(name, list(no_model), True, match, NO_MODEL_BODIES[api]))
    if translator:
        # No model in the body Envoy could read (a multipart form, another content type, no body):
        # the router phase finds it, or answers itself (the model list, a malformed body), and routes
        # again on the x-ai-eg-model header it sets.
        ordered.append(_direct_answer(f"{vhost.name}/find-model", [_model_metadata(absent=True)], extproc=True))
        # A model no rule took that is not a usable one (not a string, empty, control characters):
        # the router phase answers the client's 400 in its schema.
        ordered.append(_direct_answer(f"{vhost.name}/check-model", _unusable_model(), extproc=True))
    # The router phase routes again from all these: a client's credentials checked as any rule of
    # the host would check them (client_checks).
    again = client_checks.routing_again_config(vhost.client_checks if translator else None)
    for answer in ordered:
        for name, config in again.items():
            answer.typed_per_filter_config[name].CopyFrom(config)
    # Requests of the Anthropic and Cohere APIs that no rule took get the 404 in their schema.
    for api, prefix in _api_prefixes(root_prefix):
        name = f"{vhost.name}/{api}-route-not-found" if api != "openai" else f"{vhost.name}/route-not-found"
        match = route_components_pb2.RouteMatch(**prefix)
        ordered.append(_direct_answer(name, [], not translator, match, ROUTE_NOT_FOUND_BODIES[api]))
    return ordered


def _refusals(vhost: ir.VirtualHost, root_prefix: str, refusal: str) -> list[route_components_pb2.Route]:
    """Every request answered with the listener's refusal, a 500 in the schema of the client's API."""
    bodies = {
        prefix.removeprefix("/") or "openai": json.dumps(body, separators=(",", ":"))
        for prefix, body in _client_errors(refusal, "gateway_misconfigured")
    }
    return [
        _direct_answer(
            f"{vhost.name}/{api}-refused", [], False, route_components_pb2.RouteMatch(**prefix), bodies[api], 500
        )
        for api, prefix in _api_prefixes(root_prefix)
    ]


@lru_cache(maxsize=256)
def _mcp_route(vhost: str, mcp: ir.McpRoute, host: ir.HostChecks | None = None) -> route_components_pb2.Route:
    """An MCPRoute's route: its path (and headers) to the MCP proxy, which learns the fleet and the
    route from headers set here over any the client sent. Before the rules' routes, in every scope.
    No retries (the virtual host's would apply: a tool called twice); 30 minutes for a request, as
    Envoy AI Gateway gives one (a tool call may run long); no translator, no body filter. A route
    whose external authorization service asks for it carries its resource in metadata. A route with a
    securityPolicy of its own takes none of its host's SecurityPolicy checks (`host`: as Envoy Gateway
    applies a route's policy, whole, in place of its Gateway's)."""
    metadata = None
    if mcp.ext_auth is not None and mcp.ext_auth.route_metadata:
        metadata = base_pb2.Metadata(
            filter_metadata={ext_authz.ROUTE_METADATA_NAMESPACE: ext_authz.route_metadata("MCPRoute", mcp.name)}
        )
    return route_components_pb2.Route(
        metadata=metadata,
        name=f"{vhost}/mcp/{mcp.name}",
        match=route_components_pb2.RouteMatch(path=mcp.path, headers=[_header_matcher(h) for h in mcp.headers]),
        route=route_components_pb2.RouteAction(
            cluster=contract.MCP_PROXY_CLUSTER_NAME,
            timeout=_duration(MCP_REQUEST_TIMEOUT_S),
            retry_policy=route_components_pb2.RetryPolicy(num_retries=wrappers_pb2.UInt32Value(value=0)),
        ),
        request_headers_to_add=[
            _set_header(name, value)
            for name, value in ((contract.MCP_FLEET_HEADER, mcp.fleet), (contract.MCP_ROUTE_HEADER, mcp.name))
        ],
        typed_per_filter_config=_MCP_FILTERS_OFF | _client_checks(mcp, host),
    )


def _client_checks(mcp: ir.McpRoute, host: ir.HostChecks | None = None) -> dict[str, any_pb2.Any]:
    """What an MCPRoute whose clients sign in asks of the listener's filters: jwt_authn its own
    provider's token (OAuth), its external authorization service's filter on (and the client's
    values of the headers the service sets removed), CORS its policy (_mcp_cors); nothing of an
    open route."""
    checks = client_checks.own_policy_config(host) if mcp.secured else {}
    if mcp.oauth is not None:
        checks[JWT_FILTER_NAME] = _any(jwt_pb2.PerRouteConfig(requirement_name=mcp.name))
    if mcp.ext_auth is not None:
        checks[ext_authz.filter_name(mcp.ext_auth)] = ext_authz.per_route(mcp.ext_auth)
        if ext_authz.stripped_client_headers(mcp.ext_auth):
            checks[ext_authz.CLIENT_HEADERS_FILTER] = ext_authz.client_headers_removed(mcp.ext_auth)
    if mcp.cors_headers is not None:
        checks[CORS_FILTER_NAME] = _mcp_cors(mcp.cors_headers)
    return checks


# The metadata's answer: JSON, readable by a page of any origin, its preflight (a request with the
# MCP-Protocol-Version header) answered the same (Envoy's CORS filter skips a direct response).
_METADATA_HEADERS = (
    ("Content-Type", "application/json"),
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET"),
    ("Access-Control-Allow-Headers", "mcp-protocol-version"),
    ("Access-Control-Max-Age", "86400"),
)
# The request headers a browser page may send any MCPRoute with CORS.
_MCP_CORS_HEADERS = (
    "authorization",
    "content-type",
    "accept",
    "mcp-protocol-version",
    "mcp-session-id",
    "last-event-id",
)


@lru_cache(maxsize=64)
def _mcp_cors(extra_headers: tuple[str, ...]) -> any_pb2.Any:
    """The CORS policy of an MCPRoute whose clients sign in: a client in a browser page of any origin
    may use it, as it must send its own token or key (never a cookie: no credentials), and it reads
    the challenge and the session id. An MCPRoute open to every client gets none (a web page would
    reach an MCP gateway on its visitor's network)."""
    return _any(
        cors_pb2.CorsPolicy(
            allow_origin_string_match=[string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".*"))],
            allow_methods="GET, POST, DELETE",
            allow_headers=", ".join(dict.fromkeys((*_MCP_CORS_HEADERS, *extra_headers))),
            expose_headers="mcp-session-id, www-authenticate",
            max_age="86400",
        )
    )


def _resource_metadata_routes(
    vhost: str, routes: tuple[ir.McpRoute, ...], host: ir.HostChecks | None = None
) -> list[route_components_pb2.Route]:
    """The protected resource metadata (RFC 9728) of the host's OAuth MCPRoutes, where each says it
    is (of two routes naming one place, the first's), answered by Envoy: public, for any origin."""
    served: dict[str, route_components_pb2.Route] = {}
    for mcp in routes:
        if mcp.oauth is None or mcp.oauth.metadata_path in served:
            continue
        served[mcp.oauth.metadata_path] = route_components_pb2.Route(
            name=f"{vhost}/mcp/{mcp.name}/metadata",
            match=route_components_pb2.RouteMatch(path=mcp.oauth.metadata_path),
            direct_response=route_components_pb2.DirectResponseAction(
                status=200, body=base_pb2.DataSource(inline_string=mcp.oauth.metadata)
            ),
            response_headers_to_add=[_set_header(name, value) for name, value in _METADATA_HEADERS],
            typed_per_filter_config=_MCP_FILTERS_OFF | client_checks.own_policy_config(host),
        )
    return list(served.values())


def _api_prefixes(root_prefix: str) -> list[tuple[str, dict[str, str]]]:
    """Each client API's paths as a RouteMatch's path fields, the catch-all (OpenAI's) last."""
    root = contract.root_prefix(root_prefix)
    apis = [(api, {"path_separated_prefix": f"{root}/{api}"}) for api in ("anthropic", "cohere")]
    return [*apis, ("openai", {"prefix": "/"})]


def _header_absent(name: str) -> route_components_pb2.HeaderMatcher:
    return route_components_pb2.HeaderMatcher(name=name, present_match=True, invert_match=True)


class _HostRun:
    """A run of a virtual host's rules (runs.py), their routes serialized: by match length (the
    host sorts longer matches first) the routes in rule order, and how many routes carry each retry
    policy. Kept (_host_run) while its rules and their plans are, and with it the routes of each
    length and common retry policy, in order: not joined, which would be a second copy of the
    route configuration (4 MB at 10,000 routes), but a list of the routes' own bytes, which the
    route configuration is joined from (an edit takes the lists of the runs it did not change)."""

    __slots__ = ("_parts", "_scoped", "retry_counts", "routes")

    def __init__(self, routes: dict[int, list[_EncodedRoute]]) -> None:
        self.routes = routes
        self.retry_counts: dict[bytes, int] = {}
        for r in chain.from_iterable(routes.values()):
            if r.retry_key is not None:
                self.retry_counts[r.retry_key] = self.retry_counts.get(r.retry_key, 0) + 1
        self._parts: dict[tuple[int, bytes | None], list[bytes]] = {}
        self._scoped: dict[tuple[int, bytes | None], tuple[dict[str, list[bytes]], list[bytes]]] = {}

    def routes_of(self, length: int, common: bytes | None) -> list[bytes]:
        """The routes of a match length, with `common` (the host's retry policy) left off them."""
        parts = self._parts.get((length, common))
        if parts is None:
            routes = self.routes[length]
            if common is None:
                parts = [r.data for r in routes]
            else:
                parts = [r.hoisted if r.retry_key in (None, common) else r.data for r in routes]
            self._parts[(length, common)] = parts
        return parts

    def scoped_routes_of(self, length: int, common: bytes | None) -> tuple[dict[str, list[bytes]], list[bytes]]:
        """routes_of, by scope (_by_scope)."""
        scoped = self._scoped.get((length, common))
        if scoped is None:
            scoped = self._scoped[(length, common)] = _by_scope(self.routes[length], self.routes_of(length, common))
        return scoped


def _by_scope(routes: list[_EncodedRoute], parts: list[bytes]) -> tuple[dict[str, list[bytes]], list[bytes]]:
    """`parts` (the routes' bytes) by scope, in order: the routes of each scope that has routes of
    its own, and those of a scope without (the routes for any model, which every scope holds)."""
    own: dict[str, list[bytes]] = {}
    every: list[bytes] = []
    for route, part in zip(routes, parts, strict=True):
        if route.scope is None:
            every.append(part)
            for kept in own.values():
                kept.append(part)
        elif route.scope in own:
            own[route.scope].append(part)
        else:
            own[route.scope] = [*every, part]
    return own, every


@lru_cache(maxsize=_RUNS_KEPT)
def _host_run(
    run: Run[ir.Rule],
    plans: tuple[RulePlan, ...],
    root_prefix: str,
    translator: bool,
    checks: ir.HostChecks | None = None,
) -> _HostRun:
    routes: dict[int, list[_EncodedRoute]] = {}
    for rule, plan in zip(run, plans, strict=True):
        for match_index, match in enumerate(rule.matches or ((),)):
            encoded = _rule_routes(rule, plan, match_index, root_prefix, translator, checks)
            routes.setdefault(len(match), []).extend(encoded)
    return _HostRun(routes)


def _common_retry_policy(counts: dict[bytes, int]) -> bytes | None:
    """The retry policy (serialized) most of a host's rule routes carry (`counts`: how many carry
    each), which goes on the virtual host once and off them: it is most of a route's size, and the
    route configuration is what every edit resends to every Envoy. A route-level policy replaces
    the host's (Envoy merges nothing), so a route that retries differently keeps its own, and one
    that must not retry gets an empty policy (no retry_on): _EncodedRoute.hoisted. None: no policy
    is shared by two routes."""
    if not counts:
        return None
    common = max(counts, key=lambda k: (counts[k], k))
    return common if counts[common] >= 2 else None


def _direct_answer(
    name: str,
    conditions: list[metadata_pb2.MetadataMatcher],
    extproc: bool,
    match: route_components_pb2.RouteMatch | None = None,
    body: str = ROUTE_NOT_FOUND_BODIES["openai"],
    status: int = 404,
) -> route_components_pb2.Route:
    """A JSON answer of Envoy's own, a 404 unless `status` says (`extproc`: the router phase runs
    first, and may route the request elsewhere)."""
    match = match or route_components_pb2.RouteMatch(prefix="/")
    match.dynamic_metadata.extend(conditions)
    route = route_components_pb2.Route(
        name=name,
        match=match,
        direct_response=route_components_pb2.DirectResponseAction(
            status=status, body=base_pb2.DataSource(inline_string=body)
        ),
        response_headers_to_add=[_set_header("content-type", "application/json")],
    )
    if not extproc:
        route.typed_per_filter_config[contract.EXT_PROC_FILTER_NAME].CopyFrom(_EXT_PROC_OFF)
    return route


def _header_matcher(header: ir.HeaderMatch) -> route_components_pb2.HeaderMatcher:
    return route_components_pb2.HeaderMatcher(name=header.name, string_match=_string_matcher(header))


def _string_matcher(header: ir.HeaderMatch) -> string_pb2.StringMatcher:
    if header.regex:
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=header.value))
    return string_pb2.StringMatcher(exact=header.value)


def _model_metadata(model: ir.HeaderMatch | None = None, absent: bool = False) -> metadata_pb2.MetadataMatcher:
    """A match on the body's model (json_to_metadata's), or on its absence."""
    matcher = metadata_pb2.MetadataMatcher(
        filter=contract.METADATA_NAMESPACE,
        path=[metadata_pb2.MetadataMatcher.PathSegment(key=contract.REQUEST_MODEL_KEY)],
    )
    if model is not None:
        matcher.value.string_match.CopyFrom(_string_matcher(model))
    else:
        matcher.value.present_match = True
        matcher.invert = absent
    return matcher


def _usable_model() -> metadata_pb2.MetadataMatcher:
    """The body's model is a non-empty string without control characters (what the translator
    accepts; anything else is its 400)."""
    usable = _model_metadata()
    usable.value.string_match.CopyFrom(
        string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=r"[^\x00-\x1f\x7f]+"))
    )
    return usable


def _unusable_model() -> list[metadata_pb2.MetadataMatcher]:
    usable = _usable_model()
    usable.invert = True
    return [_model_metadata(), usable]


def _stream_flag(absent: bool) -> metadata_pb2.MetadataMatcher:
    """The body's `stream` is absent, or is the boolean false. Any other value (true, "true", 1)
    is not for the routes Envoy serves alone: the translator streams it, or answers its 400."""
    matcher = metadata_pb2.MetadataMatcher(
        filter=contract.METADATA_NAMESPACE,
        path=[metadata_pb2.MetadataMatcher.PathSegment(key=contract.REQUEST_STREAM_KEY)],
    )
    if absent:
        matcher.value.present_match = True
        matcher.invert = True
    else:
        matcher.value.bool_match = False
    return matcher


_EXT_PROC_OFF = _any(ext_proc_pb2.ExtProcPerRoute(disabled=True))
# Another of the listener's filters off on a route.
_FILTER_OFF = _any(route_components_pb2.FilterConfig(disabled=True))

# An MCPRoute's routes: no translator, and nothing to read in a JSON-RPC body (not buffered for a
# model or usage it does not hold).
_MCP_FILTERS_OFF = {
    contract.EXT_PROC_FILTER_NAME: _EXT_PROC_OFF,
    REQUEST_BODY_FILTER_NAME: _FILTER_OFF,
    RESPONSE_USAGE_FILTER_NAME: _FILTER_OFF,
}
# How long an MCP request may last (Envoy AI Gateway's request timeout of its MCP routes).
MCP_REQUEST_TIMEOUT_S = 1800
# What the OpenAI API creates with: other methods on the same paths (a GET lists stored
# completions) take the translator's way.
_POST = route_components_pb2.HeaderMatcher(name=":method", string_match=string_pb2.StringMatcher(exact="POST"))
_GET = route_components_pb2.HeaderMatcher(name=":method", string_match=string_pb2.StringMatcher(exact="GET"))
_ORIGINAL_PATH = base_pb2.HeaderValueOption(
    header=base_pb2.HeaderValue(key=contract.ORIGINAL_PATH_HEADER, value="%REQ(:PATH)%"),
    append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
)
# The model a provider is told of on the routes Envoy serves alone: the body's, which routed the
# request, as Envoy AI Gateway sets it (never a client's own x-ai-eg-model, which may name another).
_ROUTED_MODEL = base_pb2.HeaderValueOption(
    header=base_pb2.HeaderValue(key=contract.MODEL_HEADER, value=_metadata(contract.REQUEST_MODEL_KEY)),
    append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
)


# Provider errors on the routes Envoy serves alone, shaped as the translator would: a rejected
# credential (401, 403) never comes back as the provider wrote it (a provider may echo the key it
# was sent), and an error that is not JSON (a proxy's HTML page) becomes an OpenAI-shaped one. Other
# JSON errors pass as the provider sent them (OpenAI's shape already). A success that is not JSON
# (those routes serve only whole chat and completions answers) is a 502, as the translator makes
# it: an SDK would take a proxy's page answered with 200 for a completion.
NATIVE_ERRORS_LUA = """
function envoy_on_response(handle)
  if handle:headers():get("REFUSED_HERE_HEADER") ~= nil then
    -- the gateway's own refusal (a SecurityPolicy's), in the client's shape already
    handle:headers():remove("REFUSED_HERE_HEADER")
    return
  end
  local status = tonumber(handle:headers():get(":status"))
  if status == nil or status < 200 or (status >= 300 and status < 400) then
    return
  end
  local content_type = handle:headers():get("content-type") or ""
  local json = string.find(content_type, "application/json", 1, true) == 1
  local message, kind = "the provider answered status " .. status, "server_error"
  if status < 300 then
    if json or content_type == "" then
      return
    end
    message = "the backend response could not be translated"
    handle:headers():replace(":status", "502")
  elseif status == 401 then
    message = "the provider rejected the gateway's credential for this backend (status 401)"
    kind = "authentication_error"
  elseif status == 403 then
    message = "the provider refused the request (status 403): the gateway's credential may not use this model "
      .. "or endpoint, or is not allowed from here"
    kind = "permission_error"
  elseif json then
    return
  end
  handle:headers():replace("content-type", "application/json")
  handle:headers():remove("content-length")
  local body = '{"error":{"message":"' .. message .. '","type":"' .. kind .. '","param":null,"code":null}}'
  handle:body():setBytes(body)
end
""".replace("REFUSED_HERE_HEADER", contract.REFUSED_HERE_HEADER)
NATIVE_ERRORS_SOURCE = "native_provider_errors"
_NATIVE_PROVIDER_ERRORS = _any(lua_pb2.LuaPerRoute(name=NATIVE_ERRORS_SOURCE))


def _translate_on_one_stream(backend: str, rule: ir.Rule) -> any_pb2.Any:
    """The router phase does the whole translation for `backend`'s configuration, and learns which
    endpoint answered from the response attributes (and whether Envoy refused the request for a
    SecurityPolicy: these replace the listener's list, which a rule's routes cannot know)."""
    return _any(
        ext_proc_pb2.ExtProcPerRoute(
            overrides=ext_proc_pb2.ExtProcOverrides(
                grpc_initial_metadata=[
                    base_pb2.HeaderValue(key=contract.ROUTE_BACKEND_METADATA_KEY, value=backend),
                    *_rule_stream_metadata(rule),
                ],
                response_attributes=[contract.UPSTREAM_HOST_METADATA_ATTRIBUTE, contract.RESPONSE_DETAILS_ATTRIBUTE],
            )
        )
    )


def _attempt_override(rule: ir.Rule, priorities: tuple[tuple[str, ...], ...] = ()) -> any_pb2.Any | None:
    """The per-route ext_proc override of a route translated per attempt: the rule's
    streamIdleTimeout and rate limits (_rule_stream_metadata) with its first backend, and the
    backends of each priority of a rule whose quotas the router phase routes around
    (RulePlan.priorities); None when it has none of these."""
    metadata = _rule_stream_metadata(rule)
    if rule.rate_limit_ids and rule.backends:
        first = min(rule.backends, key=lambda target: target.priority).name
        metadata.append(base_pb2.HeaderValue(key=contract.FIRST_BACKEND_METADATA_KEY, value=first))
    if priorities:
        groups = ";".join(",".join(group) for group in priorities)
        metadata.append(base_pb2.HeaderValue(key=contract.PRIORITY_BACKENDS_METADATA_KEY, value=groups))
    if not metadata:
        return None
    return _any(ext_proc_pb2.ExtProcPerRoute(overrides=ext_proc_pb2.ExtProcOverrides(grpc_initial_metadata=metadata)))


def _rule_stream_metadata(rule: ir.Rule) -> list[base_pb2.HeaderValue]:
    """What the router phase's stream learns of its rule: the streamIdleTimeout and the ids of the
    budgets that apply (the router phase admits and charges them)."""
    out = _stream_idle_metadata(rule.idle_timeout_s)
    if rule.rate_limit_ids:
        out.append(base_pb2.HeaderValue(key=contract.RATE_LIMITS_METADATA_KEY, value=",".join(rule.rate_limit_ids)))
    return out


def _first_address(address: str) -> str:
    """The first entry of a translator address setting (translator_addresses)."""
    return next((a.strip() for a in address.split(",") if a.strip()), address)


def _stream_idle_metadata(idle_timeout_s: float | None) -> list[base_pb2.HeaderValue]:
    """A rule's streamIdleTimeout for the router phase (which ends a stream silent for nearly that
    long with an error event in the client's schema); nothing without one."""
    if not idle_timeout_s:
        return []
    millis = str(max(1, round(idle_timeout_s * 1000)))
    return [base_pb2.HeaderValue(key=contract.STREAM_IDLE_TIMEOUT_METADATA_KEY, value=millis)]


@dataclass(frozen=True, slots=True)
class _EncodedRoute:
    """One of a rule's routes, serialized as a VirtualHost's `routes` entry (its field key and length
    first): bytes are what the route configuration is joined from, and they take a tenth of the
    memory of the message. It is kept in one form, the one its host most likely takes, and made
    in the other when a host needs that (parsed and serialized again: the same bytes as before)."""

    # A route with a retry policy: without it (the host holds it, _common_retry_policy). Without
    # one: as it is.
    kept: bytes
    retry_key: bytes | None  # its serialized retry policy (None: it has none)
    scope: str | None = None  # the route scope of the model it matches by name (None: any model's)

    @property
    def data(self) -> bytes:
        """As it is: with its own retry policy, if it has one."""
        return self.kept if self.retry_key is None else _with_retry_policy(self.kept, self.retry_key)

    @property
    def hoisted(self) -> bytes:
        """Under a host that holds the common retry policy: without its own policy (it is the
        host's), or with an empty one when it has none (no retries, not the host's)."""
        return self.kept if self.retry_key is not None else _with_retry_policy(self.kept, b"")


_VIRTUAL_HOST_ROUTES = route_components_pb2.VirtualHost.ROUTES_FIELD_NUMBER


def _entry(route: route_components_pb2.Route) -> bytes:
    data: bytes = route.SerializeToString(deterministic=True)
    return field_key(_VIRTUAL_HOST_ROUTES, len(data)) + data


def _with_retry_policy(entry: bytes, policy: bytes) -> bytes:
    """The route of a `routes` entry, with `policy` (serialized; empty: an empty one) as its retry
    policy, as an entry again."""
    start = 1  # the field key (field 3, one byte), then the length's varint
    while entry[start] & 0x80:
        start += 1
    route = route_components_pb2.Route.FromString(entry[start + 1 :])
    route.route.retry_policy.MergeFromString(policy)
    route.route.retry_policy.SetInParent()
    return _entry(route)


def _encoded(route: route_components_pb2.Route, scope: str | None = None) -> _EncodedRoute:
    """Serializes `route` (and changes it: it is not used after)."""
    if not route.route.HasField("retry_policy"):
        return _EncodedRoute(_entry(route), None, scope)
    key = _retry_key(route.route.retry_policy.SerializeToString(deterministic=True))
    route.route.ClearField("retry_policy")
    return _EncodedRoute(_entry(route), key, scope)


_RETRY_KEYS: dict[bytes, bytes] = {}


def _retry_key(policy: bytes) -> bytes:
    """One object for each distinct retry policy: 20,000 routes carry a handful, of about 380 bytes
    each, and every route keeps its policy's (as _EncodedRoute.retry_key)."""
    if len(_RETRY_KEYS) >= 4096:
        _RETRY_KEYS.clear()
    return _RETRY_KEYS.setdefault(policy, policy)


@lru_cache(maxsize=1 << 16)
def _rule_routes(
    rule: ir.Rule,
    plan: RulePlan,
    match_index: int,
    root_prefix: str,
    translator: bool,
    checks: ir.HostChecks | None = None,
) -> tuple[_EncodedRoute, ...]:
    """A rule's routes for one of its matches (none: the one match of a rule without any), in order:
    NATIVE requests (exact paths, not streaming), the rule's other requests on the body's model
    (ROUTE or ATTEMPT class), and requests routed on the x-ai-eg-model header alone (ATTEMPT),
    serialized. Memoized on the (immutable) rule, so an edit rebuilds only the routes and clusters
    it changed. `checks`: the SecurityPolicies of routes of the host (client_checks.rule_config)."""
    match = rule.matches[match_index] if rule.matches else ()
    metadata = base_pb2.Metadata()
    ours = metadata.filter_metadata[contract.INTERNAL_METADATA_NAMESPACE].fields
    ours[contract.ROUTE_NAME_KEY].string_value = rule.route
    filters = client_checks.rule_config(checks, rule.route, any_model=_model_match(match) is None)
    if rule.picker is not None:  # every route of the rule asks the pool's picker
        ours[POOL_KEY].string_value = rule.picker.pool
        filters[PICKER_FILTER_NAME] = picker_per_route(rule.picker)
    name = f"{rule.cluster}/match/{match_index}"

    def route(
        suffix: str, match: route_components_pb2.RouteMatch, action: route_components_pb2.RouteAction
    ) -> route_components_pb2.Route:
        return route_components_pb2.Route(
            name=name + suffix, match=match, route=action, metadata=metadata, typed_per_filter_config=filters
        )

    if not translator:
        headers = [_header_matcher(h) for h in match]
        only = route("", route_components_pb2.RouteMatch(prefix="/", headers=headers), _route_action(rule))
        return (_encoded(only),)
    model = _model_match(match)
    headers = [_header_matcher(h) for h in match if h is not model]
    on_model = [_model_metadata(model)] if model is not None else []
    out = []
    if plan.native is not None:
        native_action = _route_action(rule, streams=False)
        if plan.native.path_rewrite is not None:
            pattern, substitution = plan.native.path_rewrite
            native_action.regex_rewrite.CopyFrom(
                regex_pb2.RegexMatchAndSubstitute(
                    pattern=regex_pb2.RegexMatcher(regex=pattern), substitution=substitution
                )
            )
        for suffix, absent in (("/native", True), ("/native-not-streaming", False)):
            native = route(
                suffix,
                route_components_pb2.RouteMatch(
                    safe_regex=regex_pb2.RegexMatcher(regex=native_path_regex(root_prefix)),
                    headers=[*headers, _POST],
                    # Envoy read the body and its model is one the translator would accept; it
                    # does not stream (no `stream`, or false).
                    dynamic_metadata=[*(on_model or [_usable_model()]), _stream_flag(absent)],
                ),
                native_action,
            )
            native.metadata.filter_metadata[contract.INTERNAL_METADATA_NAMESPACE].fields[
                contract.NATIVE_ROUTE_KEY
            ].bool_value = True
            native.request_headers_to_remove.extend(plan.native.strip_headers)
            # The client's own path for the access log (a client cannot set it), taken before the
            # route rewrites :path.
            native.request_headers_to_add.extend((_ORIGINAL_PATH, _ROUTED_MODEL))
            native.typed_per_filter_config[PROVIDER_ERRORS_FILTER_NAME].CopyFrom(_NATIVE_PROVIDER_ERRORS)
            native.typed_per_filter_config[contract.EXT_PROC_FILTER_NAME].CopyFrom(_EXT_PROC_OFF)
            native.typed_per_filter_config[contract.UPSTREAM_EXT_PROC_FILTER_NAME].CopyFrom(_EXT_PROC_OFF)
            out.append(native)
    action = _route_action(rule)  # each route takes a copy
    # A rule of any model translated on one stream takes the requests whose model Envoy read; the
    # others (a multipart form) take its /unread route below, where the translator routes them again
    # by the model it finds (one stream would send them to this rule's backend, whatever their model).
    one_stream_of_any = model is None and plan.translated is RouteClass.ROUTE
    read = [_model_metadata()] if one_stream_of_any else on_model
    translated = route("", route_components_pb2.RouteMatch(prefix="/", headers=headers, dynamic_metadata=read), action)
    if plan.translated is RouteClass.ROUTE:
        translated.typed_per_filter_config[contract.EXT_PROC_FILTER_NAME].CopyFrom(
            _translate_on_one_stream(plan.backend, rule)
        )
        translated.typed_per_filter_config[contract.UPSTREAM_EXT_PROC_FILTER_NAME].CopyFrom(_EXT_PROC_OFF)
    elif (override := _attempt_override(rule, plan.priorities)) is not None:
        translated.typed_per_filter_config[contract.EXT_PROC_FILTER_NAME].CopyFrom(override)
    out.extend(_floor_routes(translated, rule, plan))
    out.append(translated)
    if model is not None:
        by_header = route(
            "/header",
            route_components_pb2.RouteMatch(
                prefix="/",
                headers=[*headers, _header_matcher(model)],
                dynamic_metadata=[_model_metadata(absent=True)],
            ),
            action,
        )
        # Translated per attempt (ATTEMPT) and may stream: the same watchdog and budgets as the
        # body's route.
        if (override := _attempt_override(rule, plan.priorities)) is not None:
            by_header.typed_per_filter_config[contract.EXT_PROC_FILTER_NAME].CopyFrom(override)
        out.extend(_floor_routes(by_header, rule, plan))
        out.append(by_header)
    elif one_stream_of_any:
        # Translated per attempt, as every request whose model only the translator reads.
        unread = route(
            "/unread",
            route_components_pb2.RouteMatch(
                prefix="/", headers=headers, dynamic_metadata=[_model_metadata(absent=True)]
            ),
            action,
        )
        if (override := _attempt_override(rule)) is not None:
            unread.typed_per_filter_config[contract.EXT_PROC_FILTER_NAME].CopyFrom(override)
        out.append(unread)
    # Authorization rules where the host's rules ask for other checks than it does: before the router
    # phase and after it on the routes Envoy picked on the body's model (Envoy's alone, one stream's,
    # where it rewrites the request), after it on the others (client_checks.authorization_configs).
    settled, routed = client_checks.authorization_configs(checks, rule.route)
    if settled or routed:
        one_stream = translated if plan.translated is RouteClass.ROUTE else None
        for entry in out:
            # (a membership test: reading a Struct's field by key would add it)
            internal = entry.metadata.filter_metadata[contract.INTERNAL_METADATA_NAMESPACE]
            native_route = contract.NATIVE_ROUTE_KEY in internal.fields
            for name, config in (settled if native_route or entry is one_stream else routed).items():
                entry.typed_per_filter_config[name].CopyFrom(config)
    # Every route of the match is for the model it names (on the body's model or the header's), or
    # for any: in that model's scope, or in all of them.
    scope = contract.route_scope(model.value) if model is not None and not model.regex else None
    return tuple(_encoded(r, scope) for r in out)


def _floor_routes(base: route_components_pb2.Route, rule: ir.Rule, plan: RulePlan) -> list[route_components_pb2.Route]:
    """For a rule whose quotas the router phase routes around: `base` once per count of skipped
    priorities, matched on the header the router phase sets (x-aigw-priority-floor) and sent to the
    cluster of the remaining priorities (route_classes.floor_rule), with their retries. The router
    phase always sets or removes the header, so a client cannot pick a priority. Its value names the
    first backend of the first remaining priority, not a count: the request may route again to
    another rule than the one whose quotas were read (a client's x-ai-eg-model names one rule, the
    body's model another), and that rule's floors must not match it."""
    out = []
    for skipped in range(1, len(plan.priorities)):
        floor = route_components_pb2.Route()
        floor.CopyFrom(base)
        floor.name = f"{base.name}/from/{skipped}"
        floor.match.headers.append(
            route_components_pb2.HeaderMatcher(
                name=contract.PRIORITY_FLOOR_HEADER,
                string_match=string_pb2.StringMatcher(exact=plan.priorities[skipped][0]),
            )
        )
        floor.route.CopyFrom(_route_action(floor_rule(rule, skipped)))
        out.append(floor)
    return out


def _route_action(rule: ir.Rule, streams: bool = True) -> route_components_pb2.RouteAction:
    """The rule's cluster, timeouts and retries. `streams`: the route can carry a streamed answer
    (every entry but the NATIVE ones, which match non-streaming requests only)."""
    retry = _retry_policy(rule, streams)
    action = route_components_pb2.RouteAction(
        cluster=rule.cluster,
        # The default timeout does not cap a response that can stream or fail over: it is the retry
        # policy's per-try idle timeout (which starts with the attempt, so the translator's request
        # processing never counts against it). A NATIVE entry with nothing to retry gets the plain
        # cap: its answer arrives whole, and no retry state copies its body.
        timeout=_duration(rule.timeout_s if rule.timeout_caps_response or retry is None else 0),
        # A pool's pods are addressed as the client addressed the gateway (Envoy AI Gateway's way).
        auto_host_rewrite=wrappers_pb2.BoolValue(value=rule.picker is None),
    )
    if retry is not None:
        action.retry_policy.CopyFrom(retry)
    balancing = rule.traffic.load_balancing if rule.traffic is not None else None
    if balancing is not None and balancing.hash_on:
        action.hash_policy.extend(_hash_policies(balancing.hash_on))
    return action


@lru_cache(maxsize=256)
def _hash_policies(inputs: tuple[ir.HashInput, ...]) -> tuple[route_components_pb2.RouteAction.HashPolicy, ...]:
    """What a ConsistentHash load balancer hashes of a request (Envoy Gateway's rendering). Shared:
    callers copy them."""
    HashPolicy = route_components_pb2.RouteAction.HashPolicy
    out = []
    for hashed in inputs:
        if hashed.kind == "source_ip":
            out.append(HashPolicy(connection_properties=HashPolicy.ConnectionProperties(source_ip=True)))
        elif hashed.kind == "header":
            out.append(HashPolicy(header=HashPolicy.Header(header_name=hashed.name)))
        elif hashed.kind == "query_parameter":
            out.append(HashPolicy(query_parameter=HashPolicy.QueryParameter(name=hashed.name)))
        else:
            cookie = HashPolicy.Cookie(name=hashed.name)
            if hashed.cookie_ttl_s is not None:
                cookie.ttl.CopyFrom(_duration(hashed.cookie_ttl_s))
            for name, value in hashed.cookie_attributes:
                cookie.attributes.add(name=name, value=value)
            out.append(HashPolicy(cookie=cookie))
    return tuple(out)


def _idle_timeout_s(rule: ir.Rule) -> float | None:
    """How long a backend may stay silent in an attempt: the rule's streamIdleTimeout, else the
    default request timeout when nothing caps the response (ir.Rule.timeout_caps_response)."""
    if rule.idle_timeout_s is None and not rule.timeout_caps_response:
        return rule.timeout_s
    return rule.idle_timeout_s


def _retry_policy(rule: ir.Rule, streams: bool = True) -> route_components_pb2.RetryPolicy | None:
    """The rule's BackendTrafficPolicy retry; without one, failover to the next priority when a rule
    has several; else, on entries that can stream, a policy of no retries that only carries the
    per-try idle timeout (_idle_timeout_s); None on NATIVE entries with nothing to retry. Shared:
    callers copy it."""
    retry = rule.traffic.retry if rule.traffic is not None else None
    return _retry_policy_of(retry, rule.priorities, _idle_timeout_s(rule), streams)


@lru_cache(maxsize=1024)
def _retry_policy_of(
    retry: ir.Retry | None, priorities: int, idle: float | None, streams: bool
) -> route_components_pb2.RetryPolicy | None:
    if retry is not None:
        policy = _policy_retry(retry)
    elif priorities >= 2:
        policy = route_components_pb2.RetryPolicy(retry_on="5xx,reset,connect-failure,retriable-status-codes")
        policy.retriable_status_codes.extend(RETRIABLE_STATUS_CODES)
        policy.num_retries.value = priorities - 1
        policy.retry_priority.CopyFrom(_previous_priorities(1))
        _avoid_previous_hosts(policy)
    elif idle is not None and streams:
        # A per-try idle timeout needs a retry policy; no retry (Envoy's default is one).
        policy = route_components_pb2.RetryPolicy(retry_on="reset")
        policy.num_retries.value = 0
    else:
        return None
    if idle:
        policy.per_try_idle_timeout.CopyFrom(_duration(idle))
    return policy


def _policy_retry(retry: ir.Retry) -> route_components_pb2.RetryPolicy:
    """A BackendTrafficPolicy's retry, rendered as Envoy Gateway renders it."""
    policy = route_components_pb2.RetryPolicy(
        retry_on=",".join(retry.retry_on), retriable_status_codes=list(retry.retriable_status_codes)
    )
    policy.num_retries.value = retry.num_retries
    if retry.attempts_per_priority:
        policy.retry_priority.CopyFrom(_previous_priorities(retry.attempts_per_priority))
    if retry.per_try_timeout_s is not None:
        policy.per_try_timeout.CopyFrom(_duration(retry.per_try_timeout_s))
    if retry.backoff_base_s is not None:
        policy.retry_back_off.base_interval.CopyFrom(_duration(retry.backoff_base_s))
        if retry.backoff_max_s is not None:
            policy.retry_back_off.max_interval.CopyFrom(_duration(retry.backoff_max_s))
    _avoid_previous_hosts(policy)
    return policy


def _previous_priorities(update_frequency: int) -> route_components_pb2.RetryPolicy.RetryPriority:
    """After `update_frequency` attempts at a priority, the next attempts go to the next one."""
    return route_components_pb2.RetryPolicy.RetryPriority(
        name="envoy.retry_priorities.previous_priorities",
        typed_config=_any(previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=update_frequency)),
    )


def _avoid_previous_hosts(policy: route_components_pb2.RetryPolicy) -> None:
    """A retry picks another endpoint than the ones already tried, where the priority has one."""
    policy.retry_host_predicate.append(
        route_components_pb2.RetryPolicy.RetryHostPredicate(
            name="envoy.retry_host_predicates.previous_hosts",
            typed_config=_any(previous_hosts_pb2.PreviousHostsPredicate()),
        )
    )
    policy.host_selection_retry_max_attempts = 5


# --------------------------------------------------------------------------------------------
# Clusters and endpoints


def _cluster(
    rule: ir.Rule,
    fleet: str,
    settings: BuildSettings,
    override_namespaces: tuple[str, ...] = (),
    credential_header: str = "",
    *,
    strip_prefixes: tuple[str, ...] = (),
) -> tuple[Serialized, Serialized | None]:
    """The rule's cluster and (over EDS) its assignment. Backends reached by IP or socket path are
    served over EDS (a NATIVE rule's cluster is STATIC with its endpoints inline); a cluster with any
    FQDN endpoint is STRICT_DNS with its endpoints inline, since Envoy resolves names only for DNS
    clusters.
    `override_namespaces`: the dynamic metadata namespaces its backends' credential overrides read,
    forwarded to the per-attempt phase (every rule has routes that run it: on the x-ai-eg-model
    header, or of a model Envoy did not read); `credential_header`: the header a credential_injector
    sets from the rule's SDS secret (_credential_secret_name) for the routes Envoy serves alone, and
    `strip_prefixes` the prefixes of the client headers removed on them (NATIVE_STRIP_PREFIXES). The cluster and its
    assignment are kept serialized: as messages, 10,000 of them held 80 MB."""
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=rule.cluster)
    check = rule.traffic.active_health_check if rule.traffic is not None else None
    check_hosts = check is not None and check.kind == "HTTP" and not check.host
    for target in rule.backends:
        assignment.endpoints.append(_locality(target, check_hosts))
    uses_dns = any(e.kind == "fqdn" for t in rule.backends for e in t.endpoints)
    proxied = any(t.proxy is not None for t in rule.backends)
    # A NATIVE rule's cluster carries its endpoints itself, so they change together with the
    # credential it injects (_credential_secret_name). Kubernetes Service targets too: over EDS,
    # a repointed backend's new endpoints would reach the cluster that still injects the old key
    # (both watch one assignment name) before the new cluster replaces it; an assignment named
    # after the credential would avoid that, but a cluster change alone must then resend it, and
    # the streams resend assignments by cluster name only (measured: Envoy 1.40 then keeps the
    # changed cluster warming for the 15 s initial fetch timeout). Scaling a Service (its name is the
    # credential's identity, not its pods) changes only this cluster, never the secret or routes.
    inline = uses_dns or bool(credential_header)
    # A rule whose cluster injects its own credential has a shape of its own: not kept.
    shaped = _cluster_shape.__wrapped__ if credential_header else _cluster_shape
    shape = shaped(
        rule.traffic or ir.TrafficPolicy(name=""),
        uses_dns,
        inline,
        frozenset(t.tls for t in rule.backends if t.tls is not None),
        fleet,
        settings,
        override_namespaces,
        _credential_secret_name(rule) if credential_header else "",
        credential_header,
        strip_prefixes,
        proxied,
    )
    cluster = cluster_pb2.Cluster()
    cluster.CopyFrom(shape)
    cluster.name = rule.cluster
    if "." in rule.cluster:  # Envoy's tag extractor takes a cluster's name up to its first dot
        cluster.alt_stat_name = rule.cluster.replace(".", "_")
    if rule.picker is not None:
        pool_cluster(cluster, rule)
        return Serialized.of(cluster), None
    if inline:
        cluster.load_assignment.CopyFrom(assignment)
    return Serialized.of(cluster), (None if inline else Serialized.of(assignment))


@lru_cache(maxsize=1 << 12)
def _cluster_shape(
    traffic: ir.TrafficPolicy,
    uses_dns: bool,
    inline: bool,
    tls_targets: frozenset[ir.UpstreamTLS],
    fleet: str,
    settings: BuildSettings,
    override_namespaces: tuple[str, ...],
    credential_secret: str,
    credential_header: str,
    strip_prefixes: tuple[str, ...],
    proxied: bool,
) -> cluster_pb2.Cluster:
    """All of a cluster but its name and inline endpoints: the same for every rule of one shape
    (10,000 rules over plain backends have one), so built once. Shared: callers copy it.
    `proxied`: some of its backends are reached through a forward proxy."""
    cluster = cluster_pb2.Cluster(
        connect_timeout=_duration(traffic.connect_timeout_s or 10),
        per_connection_buffer_limit_bytes=wrappers_pb2.UInt32Value(value=contract.BUFFER_LIMIT_BYTES),
        common_lb_config=cluster_pb2.Cluster.CommonLbConfig(
            locality_weighted_lb_config=cluster_pb2.Cluster.CommonLbConfig.LocalityWeightedLbConfig()
        ),
    )
    cluster.circuit_breakers.CopyFrom(_circuit_breakers(traffic.circuit_breaker or ir.CircuitBreaker()))
    if traffic.load_balancing is not None:
        cluster.common_lb_config.ClearField("locality_weighted_lb_config")  # the policy's own, below
        cluster.load_balancing_policy.CopyFrom(_load_balancing_policy(traffic.load_balancing))
    if traffic.panic_threshold is not None:
        cluster.common_lb_config.healthy_panic_threshold.CopyFrom(percent_pb2.Percent(value=traffic.panic_threshold))
    if traffic.outlier_detection is not None:
        cluster.outlier_detection.CopyFrom(_outlier_detection(traffic.outlier_detection))
    if traffic.active_health_check is not None:
        cluster.health_checks.append(_health_check(traffic.active_health_check))
        # A host DNS or EDS removed goes, healthy or not (else it stays while it passes its checks:
        # a provider's rotated addresses would stay in rotation), as Envoy Gateway sets it.
        cluster.ignore_health_on_host_removal = True
    if uses_dns:
        cluster.type = cluster_pb2.Cluster.STRICT_DNS
        cluster.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
    elif inline:
        cluster.type = cluster_pb2.Cluster.STATIC
    else:
        cluster.type = cluster_pb2.Cluster.EDS
        cluster.eds_cluster_config.CopyFrom(cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads()))
    _tls_socket_matches(cluster, tls_targets, settings.system_ca_bundle)
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http_protocol_options=protocol_pb2.Http1ProtocolOptions()
        ),
    )
    common = _connection_options(traffic)
    if common.ListFields():
        options.common_http_protocol_options.CopyFrom(common)
    if settings.translator_enabled:
        options.http_filters.extend(
            _upstream_filters(fleet, override_namespaces, credential_secret, credential_header, strip_prefixes)
        )
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Pack(options, deterministic=True)
    if proxied:
        tunnel_sockets(cluster)
    return cluster


@lru_cache(maxsize=256)
def _circuit_breakers(breaker: ir.CircuitBreaker) -> circuit_breaker_pb2.CircuitBreakers:
    """Every cluster's thresholds for the default routing priority: a BackendTrafficPolicy's
    circuitBreaker, each threshold it leaves out (or all, without one) at Envoy Gateway's default,
    1024. Always written: Envoy's own default for parallel retries is 3, so a fourth failover in
    flight at once (a 429 storm) would overflow and the client would get the error unretried.
    Shared: callers copy it."""
    thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds()
    for name, value in (
        ("max_connections", breaker.max_connections),
        ("max_pending_requests", breaker.max_pending_requests),
        ("max_requests", breaker.max_parallel_requests),
        ("max_retries", breaker.max_parallel_retries),
    ):
        getattr(thresholds, name).value = DEFAULT_CIRCUIT_THRESHOLD if value is None else value
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[thresholds])


def _load_balancing_policy(balancing: ir.LoadBalancing) -> cluster_pb2.LoadBalancingPolicy:
    """A BackendTrafficPolicy's loadBalancer, each policy weighting the backendRefs' localities as
    the cluster's default does."""
    weighted = lb_common_pb2.LocalityLbConfig(
        locality_weighted_lb_config=lb_common_pb2.LocalityLbConfig.LocalityWeightedLbConfig()
    )
    slow_start = None
    if balancing.slow_start_window_s is not None:
        slow_start = lb_common_pb2.SlowStartConfig(slow_start_window=_duration(balancing.slow_start_window_s))
    policy: Message
    if balancing.policy == "RoundRobin":
        name = "round_robin"
        policy = round_robin_pb2.RoundRobin(locality_lb_config=weighted, slow_start_config=slow_start)
    elif balancing.policy == "LeastRequest":
        name = "least_request"
        policy = least_request_pb2.LeastRequest(locality_lb_config=weighted, slow_start_config=slow_start)
    elif balancing.policy == "Random":
        name = "random"
        policy = random_pb2.Random(locality_lb_config=weighted)
    else:
        name = "maglev"
        maglev = maglev_pb2.Maglev(locality_weighted_lb_config=weighted.locality_weighted_lb_config)
        if balancing.table_size is not None:
            maglev.table_size.value = balancing.table_size
        policy = maglev
    config = extension_pb2.TypedExtensionConfig(name=f"envoy.load_balancing_policies.{name}", typed_config=_any(policy))
    return cluster_pb2.LoadBalancingPolicy(
        policies=[cluster_pb2.LoadBalancingPolicy.Policy(typed_extension_config=config)]
    )


def _outlier_detection(passive: ir.OutlierDetection) -> outlier_detection_pb2.OutlierDetection:
    """A BackendTrafficPolicy's healthCheck.passive, rendered as Envoy Gateway renders it."""
    detection = outlier_detection_pb2.OutlierDetection(
        interval=_duration(passive.interval_s),
        base_ejection_time=_duration(passive.base_ejection_time_s),
        split_external_local_origin_errors=passive.split_external_local_origin_errors,
    )
    detection.consecutive_5xx.value = passive.consecutive_5xx
    detection.consecutive_local_origin_failure.value = passive.consecutive_local_origin_failures
    if passive.max_ejection_percent > 0:
        detection.max_ejection_percent.value = passive.max_ejection_percent
    if passive.consecutive_gateway_errors is not None:
        detection.consecutive_gateway_failure.value = passive.consecutive_gateway_errors
        detection.enforcing_consecutive_gateway_failure.value = 100
    if passive.failure_percentage_threshold is not None:
        detection.failure_percentage_threshold.value = passive.failure_percentage_threshold
        detection.enforcing_failure_percentage.value = 100
    if passive.always_eject_one:
        detection.always_eject_one_host.value = True
    return detection


def _health_check(active: ir.ActiveHealthCheck) -> health_check_pb2.HealthCheck:
    """A BackendTrafficPolicy's healthCheck.active. Its interval is also the no-traffic interval:
    Envoy's default checks a cluster that has not carried a request yet once a minute (Envoy Gateway
    leaves it), so a rule's backend that died before its first request, or that comes back while
    its rule had none, would be seen up to a minute late."""
    interval = _duration(active.interval_s)
    check = health_check_pb2.HealthCheck(
        timeout=_duration(active.timeout_s), interval=interval, no_traffic_interval=interval
    )
    check.unhealthy_threshold.value = active.unhealthy_threshold
    check.healthy_threshold.value = active.healthy_threshold
    if active.initial_jitter_s is not None:
        check.initial_jitter.CopyFrom(_duration(active.initial_jitter_s))
    send = health_check_pb2.HealthCheck.Payload(text=active.send.hex()) if active.send else None
    receive = [health_check_pb2.HealthCheck.Payload(text=active.receive.hex())] if active.receive else []
    if active.kind == "HTTP":
        http = health_check_pb2.HealthCheck.HttpHealthCheck(
            path=active.path, host=active.host, send=send, receive=receive
        )
        if active.method:
            http.method = base_pb2.RequestMethod.Value(active.method)
        http.expected_statuses.extend(_status_ranges(active.expected_statuses))
        http.retriable_statuses.extend(_status_ranges(active.retriable_statuses))
        check.http_health_check.CopyFrom(http)
    else:
        check.tcp_health_check.CopyFrom(health_check_pb2.HealthCheck.TcpHealthCheck(send=send, receive=receive))
    return check


def _status_ranges(statuses: tuple[int, ...]) -> list[range_pb2.Int64Range]:
    """Sorted distinct statuses as Envoy's half-open ranges, runs of consecutive ones joined."""
    ranges: list[range_pb2.Int64Range] = []
    for status in statuses:
        if ranges and ranges[-1].end == status:
            ranges[-1].end = status + 1
        else:
            ranges.append(range_pb2.Int64Range(start=status, end=status + 1))
    return ranges


def _connection_options(traffic: ir.TrafficPolicy) -> protocol_pb2.HttpProtocolOptions:
    """A BackendTrafficPolicy's upstream connection limits (timeout.http, circuitBreaker)."""
    options = protocol_pb2.HttpProtocolOptions()
    if traffic.connection_idle_timeout_s is not None:
        options.idle_timeout.CopyFrom(_duration(traffic.connection_idle_timeout_s))
    if traffic.max_connection_duration_s is not None:
        options.max_connection_duration.CopyFrom(_duration(traffic.max_connection_duration_s))
    if traffic.max_stream_duration_s is not None:
        options.max_stream_duration.CopyFrom(_duration(traffic.max_stream_duration_s))
    if traffic.circuit_breaker is not None and traffic.circuit_breaker.max_requests_per_connection is not None:
        options.max_requests_per_connection.value = traffic.circuit_breaker.max_requests_per_connection
    return options


def _tls_socket_matches(
    cluster: cluster_pb2.Cluster, tls_targets: Iterable[ir.UpstreamTLS], ca_bundle: str, alpn: tuple[str, ...] = ()
) -> None:
    """The cluster's TLS, one transport socket per target TLS (its endpoints name theirs: _locality),
    offering the `alpn` protocols."""
    for tls in sorted(tls_targets, key=lambda t: (t.sni, t.ca_pem or "")):
        context = tls_pb2.UpstreamTlsContext(sni=tls.sni)
        context.common_tls_context.validation_context.CopyFrom(_validation_context(tls, ca_bundle))
        context.common_tls_context.alpn_protocols.extend(alpn)
        socket = base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=_any(context))
        cluster.transport_socket_matches.append(
            cluster_pb2.Cluster.TransportSocketMatch(
                name=_tls_match_name(tls), match=_struct({"tls": _tls_match_name(tls)}), transport_socket=socket
            )
        )


def _tls_match_name(tls: ir.UpstreamTLS) -> str:
    digest = hashlib.sha256((tls.ca_pem or "system").encode()).hexdigest()[:12]
    return f"tls/{tls.sni}/{digest}"


def _validation_context(tls: ir.UpstreamTLS, system_ca_bundle: str) -> common_pb2.CertificateValidationContext:
    context = common_pb2.CertificateValidationContext(
        match_typed_subject_alt_names=[
            common_pb2.SubjectAltNameMatcher(
                san_type=common_pb2.SubjectAltNameMatcher.DNS, matcher=string_pb2.StringMatcher(exact=tls.sni)
            )
        ]
    )
    if tls.ca_pem is None:
        context.trusted_ca.filename = system_ca_bundle
    else:
        context.trusted_ca.inline_string = tls.ca_pem
    return context


def _locality(target: ir.BackendTarget, check_hosts: bool = False) -> endpoint_components_pb2.LocalityLbEndpoints:
    """A backend's endpoints, each with the metadata the upstream filters read: the backend's name
    and its upstream host (and its TLS transport socket's match); the locality names the forward
    proxy it is reached through, if any. `check_hosts`: an HTTP health
    check sends each endpoint its backend's host (Envoy's default is the cluster's name)."""
    locality = endpoint_components_pb2.LocalityLbEndpoints(
        locality=base_pb2.Locality(sub_zone=target.name),
        load_balancing_weight=wrappers_pb2.UInt32Value(value=target.weight),
        priority=target.priority,
    )
    if target.proxy is not None:
        name_proxy(locality, target.proxy)
    for endpoint in _endpoints(target.endpoints, target.upstream_host):
        lb_endpoint = locality.lb_endpoints.add()
        lb_endpoint.endpoint.CopyFrom(endpoint)
        if check_hosts:
            lb_endpoint.endpoint.health_check_config.hostname = target.upstream_host
        fields = lb_endpoint.metadata.filter_metadata[contract.INTERNAL_METADATA_NAMESPACE].fields
        fields[contract.BACKEND_NAME_KEY].string_value = target.name
        fields[contract.UPSTREAM_HOST_KEY].string_value = target.upstream_host
        if target.tls is not None:
            match = lb_endpoint.metadata.filter_metadata["envoy.transport_socket_match"].fields
            match["tls"].string_value = _tls_match_name(target.tls)
    return locality


@lru_cache(maxsize=1 << 12)
def _endpoints(endpoints: tuple[ir.Endpoint, ...], hostname: str) -> tuple[endpoint_components_pb2.Endpoint, ...]:
    """The Envoy endpoints of a backend's addresses (shared: callers copy them)."""
    out = []
    for endpoint in endpoints:
        if endpoint.kind == "unix":
            address = address_pb2.Address(pipe=address_pb2.Pipe(path=endpoint.address))
        else:
            address = address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=endpoint.address, port_value=endpoint.port)
            )
        out.append(endpoint_components_pb2.Endpoint(address=address, hostname=hostname))
    return tuple(out)


@lru_cache(maxsize=1 << 12)
def _upstream_filters(
    fleet: str, override_namespaces: tuple[str, ...], secret: str, header: str, strip_prefixes: tuple[str, ...]
) -> tuple[hcm_pb2.HttpFilter, ...]:
    """The upstream HTTP filters of a cluster (_upstream_filter_chain); shared: callers copy them."""
    return tuple(_upstream_filter_chain(fleet, override_namespaces, secret, header, strip_prefixes))


def _upstream_filter_chain(
    fleet: str, override_namespaces: tuple[str, ...], secret: str, header: str, strip_prefixes: tuple[str, ...]
) -> Iterable[hcm_pb2.HttpFilter]:
    """Per attempt, in order: the per-attempt phase (forwarding `override_namespaces`), a header
    mutation that removes every x-aigw-* header (the gateway's own names, credential overrides among
    them, never reach a provider, whichever class served the request) and puts back the
    content-length the per-attempt phase computed, the credential injector (secret "": none), and
    the codec. The mutation also removes the headers of `strip_prefixes` (a NATIVE rule's cluster:
    the client's x-amz-... headers, which the translator strips by prefix and a route by name only)."""
    mutations = [mutation_rules_pb2.HeaderMutation(remove_on_match=_GATEWAY_HEADERS)]
    mutations.extend(
        mutation_rules_pb2.HeaderMutation(
            remove_on_match=mutation_rules_pb2.HeaderMutation.RemoveOnMatch(
                key_matcher=string_pb2.StringMatcher(prefix=prefix)
            )
        )
        for prefix in strip_prefixes
    )
    yield hcm_pb2.HttpFilter(
        name=contract.UPSTREAM_EXT_PROC_FILTER_NAME,
        typed_config=_any(_ext_proc(fleet, upstream=True, namespaces=override_namespaces)),
    )
    mutations.append(
        mutation_rules_pb2.HeaderMutation(
            append=base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key="content-length", value=_metadata(contract.CONTENT_LENGTH_KEY)),
                append_action=base_pb2.HeaderValueOption.ADD_IF_ABSENT,
            )
        )
    )
    yield hcm_pb2.HttpFilter(
        name="envoy.filters.http.header_mutation",
        typed_config=_any(
            header_mutation_pb2.HeaderMutation(mutations=header_mutation_pb2.Mutations(request_mutations=mutations))
        ),
    )
    if secret:
        yield hcm_pb2.HttpFilter(
            name="envoy.filters.http.credential_injector",
            typed_config=_any(
                credential_injector_pb2.CredentialInjector(
                    overwrite=True,
                    credential=extension_pb2.TypedExtensionConfig(
                        name="envoy.http.injected_credentials.generic",
                        typed_config=_any(
                            generic_pb2.Generic(
                                header=header,
                                credential=secret_pb2.SdsSecretConfig(name=secret, sds_config=_ads()),
                            )
                        ),
                    ),
                )
            ),
        )
    yield hcm_pb2.HttpFilter(
        name="envoy.filters.http.upstream_codec", typed_config=_any(upstream_codec_pb2.UpstreamCodec())
    )


_GATEWAY_HEADERS = mutation_rules_pb2.HeaderMutation.RemoveOnMatch(
    key_matcher=string_pb2.StringMatcher(prefix=contract.OVERRIDE_HEADER_PREFIX)
)


def _every_ipv6_address(address: str) -> bool:
    """Whether `address` is IPv6's unspecified address (::, 0::0, ...)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.version == 6 and ip.is_unspecified


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


def _mcp_proxy_cluster(address: str) -> cluster_pb2.Cluster:
    """The translator's MCP proxy: HTTP/1.1 on loopback beside its gRPC server."""
    return cluster_pb2.Cluster(
        name=contract.MCP_PROXY_CLUSTER_NAME,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=_duration(10),
        load_assignment=_static_assignment(contract.MCP_PROXY_CLUSTER_NAME, address),
    )


def _static_assignment(cluster: str, address: str) -> endpoint_pb2.ClusterLoadAssignment:
    """A STATIC cluster's endpoints: the addresses of a translator address setting (translator_addresses)."""
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(address=a))
                    for a in translator_addresses(address)
                ]
            )
        ],
    )


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
        load_assignment=_static_assignment(contract.TRANSLATOR_CLUSTER_NAME, address),
    )
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Pack(options, deterministic=True)
    return cluster
