"""AIGatewayRoute backendRefs to an InferencePool: compile resolves the pool's endpoint picker (its
Service's ready endpoints) and gives the translator an OpenAI-schema Backend for the pool (with the
BackendSecurityPolicy that targets the pool); the build sends the rule to an ORIGINAL_DST cluster
on the picker's header, asks the picker on each of the rule's routes, and removes a client's own
destination header before anything reads the request."""

from __future__ import annotations

import json
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2, processing_mode_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format

import aigw_contract as contract
from aigw_xds.compile import compile_resources
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import BuildSettings, build_fleet
from aigw_xds.xds.cache import check_consistency, make_snapshot
from aigw_xds.xds.endpoint_pickers import DESTINATION_HEADER, FILTER_NAME
from tests.resource_text import backend, gateway, inference_pool, pool_route, resources, route

MODEL = "llama"


def _warnings(result: Any) -> list[Any]:
    return [d for d in result.diagnostics if not d.is_error]


def _compiled(text: str) -> Any:
    return compile_resources(resources(text))


def _parsed(content: Any) -> Any:
    return content.parse() if hasattr(content, "parse") else content


def test_a_pool_rule_asks_its_picker_and_connects_where_it_answers() -> None:
    text = gateway() + pool_route("r", MODEL, "llama") + inference_pool("llama", 9002)
    result = _compiled(text)
    assert not result.errors and not _warnings(result), [str(d) for d in result.diagnostics]
    gateway_ir = result.gateways["default/gw"]
    rule = gateway_ir.listeners[0].virtual_hosts[0].rules[0]
    assert rule.picker is not None
    assert rule.picker.pool == "default/llama"
    assert [(e.address, e.port) for e in rule.picker.endpoints] == [("127.0.0.1", 9002)]
    assert rule.picker.sni == "llama-epp.default.svc"
    # The translator's backend for the pool: the OpenAI schema, no credential, the client's host.
    (pool_backend,) = gateway_ir.translator.backends
    assert pool_backend.service_backend == "default/llama"
    assert pool_backend.schema.name == "OpenAI" and pool_backend.schema.prefix == contract.DEFAULT_SCHEMA_PREFIX
    assert not pool_backend.upstream_host and not pool_backend.auth.WhichOneof("kind")
    assert [m.id for m in gateway_ir.translator.models] == [MODEL]

    snapshot = make_snapshot("default/gw", build_fleet(gateway_ir, BuildSettings()))
    check_consistency(snapshot)
    clusters = {n: _parsed(c) for n, c in snapshot.contents[type_urls.CLUSTER].items()}
    cluster = clusters[rule.cluster]
    assert cluster.type == cluster_pb2.Cluster.ORIGINAL_DST
    assert cluster.lb_policy == cluster_pb2.Cluster.CLUSTER_PROVIDED
    assert cluster.original_dst_lb_config.use_http_header
    assert cluster.original_dst_lb_config.http_header_name == DESTINATION_HEADER
    assert not cluster.HasField("load_assignment") and rule.cluster not in snapshot.contents[type_urls.ENDPOINT]
    names = cluster.metadata.filter_metadata[contract.INTERNAL_METADATA_NAMESPACE]
    assert names.fields[contract.BACKEND_NAME_KEY].string_value == pool_backend.name
    picker = clusters["aigw-epp/default/llama"]
    assert picker.transport_socket.name == "envoy.transport_sockets.tls"  # not verified: self-signed
    assert picker.type == cluster_pb2.Cluster.EDS  # the picker's pods coming and going: an EDS update
    assignment = _parsed(snapshot.contents[type_urls.ENDPOINT]["aigw-epp/default/llama"])
    socket = assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (socket.address, socket.port_value) == ("127.0.0.1", 9002)

    listener = _parsed(snapshot.contents[type_urls.LISTENER]["default/gw/8080"])
    manager = _manager(listener)
    filters = [f.name for f in manager.http_filters]
    assert filters[-2:] == [FILTER_NAME, "envoy.filters.http.router"]
    assert filters.index(contract.EXT_PROC_FILTER_NAME) < filters.index(FILTER_NAME)
    picker_filter = next(f for f in manager.http_filters if f.name == FILTER_NAME)
    assert not picker_filter.disabled  # made for every request; a route switches its phases on
    processor = ext_proc_pb2.ExternalProcessor()
    picker_filter.typed_config.Unpack(processor)
    assert not processor.failure_mode_allow
    assert processor.processing_mode.request_header_mode == processing_mode_pb2.ProcessingMode.SKIP
    assert processor.processing_mode.request_body_mode == processing_mode_pb2.ProcessingMode.NONE
    early = json_format.MessageToDict(manager.early_header_mutation_extensions[-1])  # (after the client's x-envoy-*)
    assert early["typedConfig"]["mutations"] == [
        {"remove": DESTINATION_HEADER},
        {"remove": "x-gateway-model-name-rewrite"},
    ]

    routes = _parsed(snapshot.contents[type_urls.ROUTE]["default/gw/8080"])
    pool_routes = [r for vh in routes.virtual_hosts for r in vh.routes if r.route.cluster == rule.cluster]
    assert len(pool_routes) >= 3  # Envoy alone, the translator's router phase, the model header
    for pool_route_config in pool_routes:
        per_route = ext_proc_pb2.ExtProcPerRoute()
        pool_route_config.typed_per_filter_config[FILTER_NAME].Unpack(per_route)
        assert per_route.overrides.grpc_service.envoy_grpc.cluster_name == "aigw-epp/default/llama"
        mode = per_route.overrides.processing_mode
        streamed = processing_mode_pb2.ProcessingMode.FULL_DUPLEX_STREAMED
        assert (mode.request_body_mode, mode.response_body_mode) == (streamed, streamed)
        assert not pool_route_config.route.auto_host_rewrite.value
        metadata = pool_route_config.metadata.filter_metadata[contract.INTERNAL_METADATA_NAMESPACE]
        assert metadata.fields["inference_pool"].string_value == "default/llama"


def _manager(listener: listener_pb2.Listener) -> hcm_pb2.HttpConnectionManager:
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return manager


def _provider_field(manager: hcm_pb2.HttpConnectionManager) -> str:
    from envoy.extensions.access_loggers.stream.v3 import stream_pb2

    log = stream_pb2.StdoutAccessLog()
    manager.access_log[0].typed_config.Unpack(log)
    return log.log_format.json_format.fields["gen_ai.provider.name"].string_value


def test_the_access_log_names_the_pool_from_its_cluster_and_other_backends_from_their_endpoint() -> None:
    """A pod the picker chose has no metadata: a listener with pool rules reads the backend from the
    cluster where it names one (a pool's), else from the endpoint, as every other listener does."""
    pooled = _compiled(gateway() + pool_route("r", MODEL, "llama") + inference_pool("llama", 9002))
    plain = _compiled(gateway() + route("r", {"gpt": "b"}) + backend("b", 8000))
    fields = []
    for result in (pooled, plain):
        snapshot = make_snapshot("default/gw", build_fleet(result.gateways["default/gw"], BuildSettings()))
        fields.append(_provider_field(_manager(_parsed(snapshot.contents[type_urls.LISTENER]["default/gw/8080"]))))
    ns, key = contract.INTERNAL_METADATA_NAMESPACE, contract.BACKEND_NAME_KEY
    assert fields[1] == f"%UPSTREAM_METADATA({ns}:{key})%"
    assert fields[0].startswith(f"%CEL('{ns}' in xds.cluster_metadata.filter_metadata ? ")
    assert f"xds.upstream_host_metadata.filter_metadata['{ns}']['{key}']" in fields[0]


def test_a_gateway_without_pools_has_no_picker_pieces() -> None:
    """A fleet with no pool rule: no picker filter, no early mutation of its own, no picker cluster."""
    result = _compiled(gateway() + route("r", {"gpt": "b"}) + backend("b", 8000))
    snapshot = make_snapshot("default/gw", build_fleet(result.gateways["default/gw"], BuildSettings()))
    manager = _manager(_parsed(snapshot.contents[type_urls.LISTENER]["default/gw/8080"]))
    assert FILTER_NAME not in [f.name for f in manager.http_filters]
    [early] = [json_format.MessageToDict(e) for e in manager.early_header_mutation_extensions]
    assert early["typedConfig"]["mutations"] == [{"removeOnMatch": {"keyMatcher": {"prefix": "x-envoy-"}}}]
    assert not [n for n in snapshot.contents[type_urls.CLUSTER] if n.startswith("aigw-epp/")]


def test_two_routes_to_one_pool_share_its_picker_and_other_routes_do_not_ask_it() -> None:
    text = (
        gateway()
        + pool_route("a", "m1", "llama")
        + pool_route("b", "m2", "llama")
        + route("c", {"gpt": "plain"})
        + backend("plain", 8000)
        + inference_pool("llama", 9002)
    )
    result = _compiled(text)
    snapshot = make_snapshot("default/gw", build_fleet(result.gateways["default/gw"], BuildSettings()))
    assert [n for n in snapshot.contents[type_urls.CLUSTER] if n.startswith("aigw-epp/")] == ["aigw-epp/default/llama"]
    routes = _parsed(snapshot.contents[type_urls.ROUTE]["default/gw/8080"])
    for r in (r for vh in routes.virtual_hosts for r in vh.routes):
        asks = FILTER_NAME in r.typed_per_filter_config
        assert asks == r.route.cluster.startswith(("default/a/", "default/b/")), r.name


def test_without_the_translator_the_rule_still_asks_its_picker() -> None:
    text = gateway() + pool_route("r", MODEL, "llama") + inference_pool("llama", 9002)
    result = _compiled(text)
    settings = BuildSettings(translator_enabled=False)
    snapshot = make_snapshot("default/gw", build_fleet(result.gateways["default/gw"], settings))
    manager = _manager(_parsed(snapshot.contents[type_urls.LISTENER]["default/gw/8080"]))
    assert [f.name for f in manager.http_filters] == [FILTER_NAME, "envoy.filters.http.router"]
    routes = _parsed(snapshot.contents[type_urls.ROUTE]["default/gw/8080"])
    assert all(
        FILTER_NAME in r.typed_per_filter_config for vh in routes.virtual_hosts for r in vh.routes if r.route.cluster
    )


def test_a_security_policy_targeting_the_pool_gives_its_backend_the_credential() -> None:
    policy = """
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {name: pool-key, namespace: default}
spec:
  targetRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: llama}]
  type: APIKey
  apiKey: {secretRef: {name: pool-key}}
---
apiVersion: v1
kind: Secret
metadata: {name: pool-key, namespace: default}
stringData: {apiKey: sk-pool}
"""
    result = _compiled(gateway() + pool_route("r", MODEL, "llama") + inference_pool("llama", 9002) + policy)
    assert not result.errors, [str(e) for e in result.errors]
    (pool_backend,) = result.gateways["default/gw"].translator.backends
    assert pool_backend.auth.api_key.key == "sk-pool"
    # A policy naming a pool that is not there (a typo) applies to nothing: an error, as for an
    # AIServiceBackend, not a pool served without its credential.
    mistyped = _compiled(
        gateway()
        + pool_route("r", MODEL, "llama")
        + inference_pool("llama", 9002)
        + policy.replace("name: llama}]", "name: lama}]")
    )
    assert [(e.field, e.message) for e in mistyped.errors] == [
        (
            "spec.targetRefs[0].name",
            "InferencePool default/lama not found: this policy applies to nothing there",
        )
    ], [str(e) for e in mistyped.errors]


def _pool_key(pool: str, key: str) -> str:
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: {pool}-key, namespace: default}}
spec:
  targetRefs: [{{group: inference.networking.k8s.io, kind: InferencePool, name: {pool}}}]
  type: APIKey
  apiKey: {{secretRef: {{name: {pool}-key}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {pool}-key, namespace: default}}
stringData: {{apiKey: {key}}}
"""


def test_two_pools_with_keys_envoy_injects_each_get_their_own() -> None:
    """Where Envoy injects a key itself (trusted Envoys), each pool's rule names a secret of its own:
    one pool's key never reaches the other's pods."""
    text = gateway() + pool_route("a", "model-a", "poola") + pool_route("b", "model-b", "poolb")
    text += inference_pool("poola", 9002) + inference_pool("poolb", 9003)
    text += _pool_key("poola", "sk-AAA") + _pool_key("poolb", "sk-BBB")
    result = _compiled(text)
    assert not result.errors, [str(e) for e in result.errors]
    snapshot = make_snapshot(
        "default/gw", build_fleet(result.gateways["default/gw"], BuildSettings(envoy_credentials=True))
    )
    check_consistency(snapshot)
    secrets = {
        n: _parsed(c).generic_secret.secret.inline_string for n, c in snapshot.contents[type_urls.SECRET].items()
    }
    clusters = {n: json_format.MessageToJson(_parsed(c)) for n, c in snapshot.contents[type_urls.CLUSTER].items()}
    injected = {}
    for cluster in ("default/a/rule/0", "default/b/rule/0"):
        (name,) = [n for n in secrets if f'"{n}"' in clusters[cluster]]
        injected[cluster] = secrets[name]
    assert injected == {"default/a/rule/0": "Bearer sk-AAA", "default/b/rule/0": "Bearer sk-BBB"}


@pytest.mark.parametrize(
    ("extra", "where", "message"),
    [
        (inference_pool("other", 9002), "spec.rules[0].backendRefs[0].name", "InferencePool default/llama not found"),
        (inference_pool("llama", None), "spec.endpointPickerRef.name", "Service default/llama-epp not found"),
    ],
)
def test_what_a_pool_rule_needs_missing_is_an_error_naming_the_field(extra: str, where: str, message: str) -> None:
    result = _compiled(gateway() + pool_route("r", MODEL, "llama") + extra)
    assert [(e.field, e.message) for e in result.errors if e.field == where] == [(where, message)], [
        str(e) for e in result.errors
    ]
    assert "default/gw" not in result.gateways


def test_a_pool_in_another_namespace_needs_a_reference_grant() -> None:
    text = (
        gateway() + pool_route("r", MODEL, "llama", pool_namespace="models") + inference_pool("llama", 9002, "models")
    )
    result = _compiled(text)
    assert [e.field for e in result.errors] == ["spec.rules[0].backendRefs[0].namespace"]
    assert "ReferenceGrant" in result.errors[0].message
    grant = """
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: pools, namespace: models}
spec:
  from: [{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, namespace: default}]
  to: [{group: inference.networking.k8s.io, kind: InferencePool}]
"""
    result = _compiled(text + grant)
    assert not result.errors, [str(e) for e in result.errors]
    rule = result.gateways["default/gw"].listeners[0].virtual_hosts[0].rules[0]
    assert rule.picker is not None and rule.picker.pool == "models/llama"


def test_fail_open_is_served_closed_with_a_warning() -> None:
    result = _compiled(
        gateway() + pool_route("r", MODEL, "llama") + inference_pool("llama", 9002, failure_mode="FailOpen")
    )
    assert not result.errors
    (warning,) = _warnings(result)
    assert warning.field == "spec.endpointPickerRef.failureMode" and "FailClose" in warning.message


def test_a_traffic_policys_balancing_and_health_checks_on_a_pool_rule_are_warned_and_left_out() -> None:
    policy = """
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: t, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]
  loadBalancer: {type: LeastRequest}
  healthCheck: {passive: {consecutive5XxErrors: 3}}
  retry: {numRetries: 2}
"""
    result = _compiled(gateway() + pool_route("r", MODEL, "llama") + inference_pool("llama", 9002) + policy)
    assert not result.errors, [str(e) for e in result.errors]
    assert sorted(w.field for w in _warnings(result)) == ["spec.healthCheck", "spec.loadBalancer"], [
        str(w) for w in _warnings(result)
    ]
    assert all("InferencePool default/llama" in w.message for w in _warnings(result))
    snapshot = make_snapshot("default/gw", build_fleet(result.gateways["default/gw"], BuildSettings()))
    cluster = _parsed(snapshot.contents[type_urls.CLUSTER]["default/r/rule/0"])
    assert cluster.type == cluster_pb2.Cluster.ORIGINAL_DST
    assert not cluster.HasField("load_balancing_policy") and not cluster.HasField("outlier_detection")


def test_a_picker_that_is_not_a_service_is_an_error() -> None:
    text = gateway() + pool_route("r", MODEL, "llama") + inference_pool("llama", 9002)
    text = text.replace(
        "endpointPickerRef: {name: llama-epp,",
        "endpointPickerRef: {kind: Backend, group: gateway.envoyproxy.io, name: llama-epp,",
    )
    result = _compiled(text)
    assert [e.field for e in result.errors] == ["spec.endpointPickerRef.kind"]


def test_an_external_name_picker_service_is_an_error() -> None:
    """The Inference Extension allows no ExternalName Service as an endpoint picker."""
    text = gateway() + pool_route("r", MODEL, "llama") + inference_pool("llama", 9002)
    text = text.replace("  selector: {app: llama-epp}\n", "  type: ExternalName\n  externalName: epp.example.com\n")
    result = _compiled(text)
    assert [(e.field, "ExternalName" in e.message) for e in result.errors] == [("spec.endpointPickerRef.name", True)]


def test_the_picker_service_without_ready_endpoints_is_a_warning() -> None:
    text = gateway() + pool_route("r", MODEL, "llama") + inference_pool("llama", 9002)
    text = text.replace(
        "endpoints: [{addresses: [127.0.0.1]}]", "endpoints: [{addresses: [127.0.0.1], conditions: {ready: false}}]"
    )
    result = _compiled(text)
    assert not result.errors
    assert any("503" in w.message and w.field == "spec.endpointPickerRef" for w in _warnings(result)), [
        str(w) for w in _warnings(result)
    ]


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("{targetPorts: [{number: 8000}], selector: {matchLabels: {app: x}}, endpointPickerRef: {name: e}}", "port"),
        (
            "{targetPorts: [], selector: {matchLabels: {app: x}}, endpointPickerRef: {name: e, port: {number: 1}}}",
            "targetPorts",
        ),
        (
            "{targetPorts: [{number: 8000}], selector: {matchLabels: {}}, "
            "endpointPickerRef: {name: e, port: {number: 1}}}",
            "matchLabels",
        ),
        (
            "{targetPorts: [{number: 8000}], selector: {matchLabels: {app: x}}, "
            "endpointPickerRef: {name: e, port: {number: 1}, failureMode: Sometimes}}",
            "failureMode",
        ),
    ],
)
def test_an_invalid_pool_is_refused_when_read(spec: str, problem: str) -> None:
    text = f"""
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: p, namespace: default}}
spec: {spec}
"""
    loaded = resources(text)
    assert loaded.errors and problem in json.dumps([str(e) for e in loaded.errors]), [str(e) for e in loaded.errors]


def test_a_pool_added_leaves_the_listener_as_it_was() -> None:
    """The listener holds the picker filter, not which pools there are: a pool added (one whose name
    sorts first included) changes clusters and routes, not the listener (which Envoy would drain)."""
    base = gateway() + pool_route("r", MODEL, "llama") + inference_pool("llama", 9002)
    more = base + pool_route("s", "other", "alpha") + inference_pool("alpha", 9003)
    listeners = []
    for text in (base, more):
        result = _compiled(text)
        snapshot = make_snapshot("default/gw", build_fleet(result.gateways["default/gw"], BuildSettings()))
        listeners.append(snapshot.resources[type_urls.LISTENER]["default/gw/8080"].version)
    assert listeners[0] == listeners[1]


def test_a_quota_policy_of_an_ai_service_backend_of_the_pools_name_is_not_the_pools() -> None:
    """A pool and an AIServiceBackend of one name: the backend's QuotaPolicy budgets the backend's
    requests only (both are "<ns>/<name>" to the translator)."""
    quota = """
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: QuotaPolicy
metadata: {name: q, namespace: default}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: llama}]
  serviceQuota: {quota: {limit: 1000, duration: 1h}}
"""
    text = gateway() + pool_route("r", MODEL, "llama") + inference_pool("llama", 9002)
    text += route("s", {"gpt": "llama"}) + backend("llama", 8000) + quota
    result = _compiled(text)
    assert not result.errors, [str(e) for e in result.errors]
    by_route = {b.route_name: list(b.quota_ids) for b in result.gateways["default/gw"].translator.backends}
    assert by_route["default/r"] == [] and by_route["default/s"], by_route
