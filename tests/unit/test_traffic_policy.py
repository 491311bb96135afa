"""BackendTrafficPolicy: which policy applies to a rule, how it compiles (compile/traffic.py) and
how the build renders it on every route and the cluster of the rule; the default timeouts that
never cut a healthy stream; bad policies reported with file, resource and field."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2

import aigw_contract
from aigw_xds.compile import compile_resources
from aigw_xds.compile.compiler import CompileResult
from aigw_xds.keys import ResourceKey
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import BuildSettings, build_fleet
from tests.resource_text import api_key, backend, gateway, resources, route
from tests.unit.applied_routes import applied

GATEWAY_TARGET = "{group: gateway.networking.k8s.io, kind: Gateway, name: gw}"
RULE_TARGET = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, sectionName: fb}"
FALLBACK = {"fb": [("a", 0, 1), ("b", 1, 1)]}


def policy(
    body: str, name: str = "btp", target: str = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}"
) -> str:
    spec = "\n".join("  " + line for line in body.strip("\n").splitlines())
    return f"""
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: {name}}}
spec:
  targetRefs: [{target}]
{spec}
"""


RETRY = """
retry:
  numAttemptsPerPriority: 1
  numRetries: 5
  perRetry:
    backOff: {baseInterval: 100ms, maxInterval: 10s}
    timeout: 30s
  retryOn:
    httpStatusCodes: [500]
    triggers: [connect-failure, retriable-status-codes]
"""


def compiled(text: str) -> CompileResult:
    return compile_resources(resources(text))


def base(models: dict | None = None) -> str:
    return gateway() + route("r", models or FALLBACK) + backend("a", 9001) + backend("b", 9002)


def routes_of(result: CompileResult, settings: BuildSettings | None = None):
    fleet = build_fleet(result.gateways["default/gw"], settings or BuildSettings())
    (built,) = fleet.messages(type_urls.ROUTE).values()
    config = applied(built)
    return [r for vh in config.virtual_hosts for r in vh.routes if r.route.cluster.startswith("default/r/")]


def cluster_of(result: CompileResult, name: str = "default/r/rule/0"):
    return build_fleet(result.gateways["default/gw"], BuildSettings()).messages(type_urls.CLUSTER)[name]


def test_the_provider_fallback_retry_renders_as_envoy_gateway_renders_it_on_every_route_of_the_rule():
    result = compiled(base() + policy(RETRY))
    assert result.errors == []
    [rule] = result.gateways["default/gw"].rules
    assert rule.traffic is not None and rule.traffic.name == "default/btp"
    entries = routes_of(result)
    # The body-model route, the x-ai-eg-model header route: each carries the same policy.
    assert len(entries) >= 2
    for entry in entries:
        retry = entry.route.retry_policy
        assert retry.retry_on == "connect-failure,retriable-status-codes"
        assert list(retry.retriable_status_codes) == [500]
        assert retry.num_retries.value == 5
        assert retry.per_try_timeout.ToMilliseconds() == 30_000
        assert retry.retry_back_off.base_interval.ToMilliseconds() == 100
        assert retry.retry_back_off.max_interval.ToMilliseconds() == 10_000
        assert retry.retry_priority.name == "envoy.retry_priorities.previous_priorities"
        config = previous_priorities_config_pb2.PreviousPrioritiesConfig()
        retry.retry_priority.typed_config.Unpack(config)
        assert config.update_frequency == 1
        assert [p.name for p in retry.retry_host_predicate] == ["envoy.retry_host_predicates.previous_hosts"]
        assert retry.host_selection_retry_max_attempts == 5


@pytest.mark.parametrize("envoy_credentials", [False, True], ids=["route-attempt", "native"])
def test_native_route_and_attempt_routes_all_get_the_policy(envoy_credentials: bool):
    """A rule whose backends are alike and keyed: with Envoy holding keys its non-streaming chat
    requests take NATIVE routes; every route entry built for the rule carries the retry."""
    text = (
        gateway()
        + route("r", FALLBACK)
        + backend("a", 9001)
        + backend("b", 9002)
        + api_key("a", "sk-a")
        + api_key("b", "sk-a")
        + policy(RETRY)
    )
    result = compiled(text)
    assert result.errors == []
    entries = routes_of(result, BuildSettings(envoy_credentials=envoy_credentials))
    names = [e.name for e in entries]
    if envoy_credentials:
        assert any(n.endswith("/native") for n in names), names
    assert {e.route.retry_policy.num_retries.value for e in entries} == {5}
    assert {e.route.retry_policy.retry_on for e in entries} == {"connect-failure,retriable-status-codes"}


def test_retry_without_retry_on_takes_envoy_gateways_defaults():
    result = compiled(base() + policy("retry: {}"))
    [entry, *_] = routes_of(result)
    retry = entry.route.retry_policy
    assert retry.retry_on == "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    assert list(retry.retriable_status_codes) == [503] and retry.num_retries.value == 2
    assert not retry.HasField("retry_priority")  # no numAttemptsPerPriority: highest healthy priority


def test_status_codes_imply_the_retriable_status_codes_trigger():
    result = compiled(base() + policy("retry: {retryOn: {triggers: [reset], httpStatusCodes: [429, 503]}}"))
    [entry, *_] = routes_of(result)
    assert entry.route.retry_policy.retry_on == "reset,retriable-status-codes"
    assert list(entry.route.retry_policy.retriable_status_codes) == [429, 503]


def test_without_a_policy_several_priorities_keep_the_default_failover():
    [entry, *_] = routes_of(compiled(base()))
    retry = entry.route.retry_policy
    assert retry.retry_on == "5xx,reset,connect-failure,retriable-status-codes"
    assert retry.num_retries.value == 1
    assert retry.retry_priority.name == "envoy.retry_priorities.previous_priorities"
    assert [p.name for p in retry.retry_host_predicate] == ["envoy.retry_host_predicates.previous_hosts"]


def test_stream_idle_timeout_is_the_per_try_idle_timeout_beside_the_policy_retry():
    extra = "      streamIdleTimeout: 5s\n      timeouts: {request: 30s}\n"
    text = base().replace("      backendRefs:\n", extra + "      backendRefs:\n", 1) + policy(RETRY)
    result = compiled(text)
    for entry in routes_of(result):
        assert entry.route.timeout.ToSeconds() == 30  # the rule's explicit timeout caps the response
        assert entry.route.retry_policy.per_try_idle_timeout.ToSeconds() == 5
        assert entry.route.retry_policy.num_retries.value == 5


def test_default_timeout_is_an_idle_timeout_and_an_explicit_one_caps_the_response():
    entries = routes_of(compiled(base({"m": "a"}) + ""), BuildSettings(envoy_credentials=True))
    native = [e for e in entries if e.name.endswith(("/native", "/native-not-streaming"))]
    streaming = [e for e in entries if e not in native]
    assert len(native) == 2 and streaming
    for entry in streaming:
        assert entry.route.timeout.ToSeconds() == 0  # no cap: a healthy 90 s stream is not cut
        assert entry.route.retry_policy.per_try_idle_timeout.ToSeconds() == 60
        assert entry.route.retry_policy.num_retries.value == 0
    for entry in native:  # never streamed, nothing to retry: the plain cap, no retry state
        assert entry.route.timeout.ToSeconds() == 60 and not entry.route.HasField("retry_policy")
    # Several priorities: every entry, NATIVE included, fails over from a silent backend; a cap
    # would count every attempt (Envoy's route timeout includes the retries).
    failover_entries = routes_of(
        compiled(base({"m": [("a", 0, 1), ("b", 1, 1)]}) + ""), BuildSettings(envoy_credentials=True)
    )
    assert any(e.name.endswith("/native") for e in failover_entries)
    for entry in failover_entries:
        assert entry.route.timeout.ToSeconds() == 0
        assert entry.route.retry_policy.per_try_idle_timeout.ToSeconds() == 60
        assert entry.route.retry_policy.num_retries.value == 1

    with_policy = compiled(base({"m": "a"}) + policy("timeout: {http: {requestTimeout: 120s}}"))
    [entry, *_] = routes_of(with_policy)
    assert entry.route.timeout.ToSeconds() == 120
    assert not entry.route.HasField("retry_policy")


def test_the_rules_own_request_timeout_wins_over_the_policys_with_a_warning():
    text = base({"m": "a"}).replace("      backendRefs:\n", "      timeouts: {request: 10s}\n      backendRefs:\n", 1)
    result = compiled(text + policy("timeout: {http: {requestTimeout: 120s}}"))
    [entry, *_] = routes_of(result)
    assert entry.route.timeout.ToSeconds() == 10
    [warn] = [d for d in result.diagnostics if d.resource == ResourceKey("BackendTrafficPolicy", "default", "btp")]
    assert warn.field == "spec.timeout.http.requestTimeout" and "wins" in warn.message


def test_circuit_breaker_and_connection_timeouts_reach_the_cluster():
    body = """
circuitBreaker: {maxConnections: 10, maxPendingRequests: 20, maxParallelRequests: 30, maxParallelRetries: 4,
                 maxRequestsPerConnection: 100}
timeout:
  tcp: {connectTimeout: 2s}
  http: {connectionIdleTimeout: 30s, maxConnectionDuration: 5m}
"""
    cluster = cluster_of(compiled(base() + policy(body)))
    [thresholds] = cluster.circuit_breakers.thresholds
    assert thresholds.max_connections.value == 10 and thresholds.max_pending_requests.value == 20
    assert thresholds.max_requests.value == 30 and thresholds.max_retries.value == 4
    assert cluster.connect_timeout.ToSeconds() == 2
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

    options = http_protocol_options_pb2.HttpProtocolOptions()
    cluster.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(options)
    common = options.common_http_protocol_options
    assert common.idle_timeout.ToSeconds() == 30 and common.max_connection_duration.ToSeconds() == 300
    assert common.max_requests_per_connection.value == 100
    # Without a policy: the 10 s connect timeout.
    plain = cluster_of(compiled(base()))
    assert plain.connect_timeout.ToSeconds() == 10


def _thresholds(cluster) -> tuple[int, int, int, int]:
    [thresholds] = cluster.circuit_breakers.thresholds
    return (
        thresholds.max_connections.value,
        thresholds.max_pending_requests.value,
        thresholds.max_requests.value,
        thresholds.max_retries.value,
    )


@pytest.mark.parametrize(
    "body, expected",
    [
        # No policy, or one without circuitBreaker: Envoy Gateway's 1024 everywhere (not Envoy's
        # 3 parallel retries, which would stop failover past 3 at once).
        ("", (1024, 1024, 1024, 1024)),
        ("timeout: {tcp: {connectTimeout: 2s}}", (1024, 1024, 1024, 1024)),
        # A policy sets some thresholds: the rest keep 1024.
        ("circuitBreaker: {maxConnections: 7}", (7, 1024, 1024, 1024)),
        ("circuitBreaker: {maxParallelRetries: 5}", (1024, 1024, 1024, 5)),
        ("circuitBreaker: {maxRequestsPerConnection: 3}", (1024, 1024, 1024, 1024)),
    ],
)
def test_every_cluster_allows_envoy_gateways_1024_unless_the_policy_says_otherwise(body, expected):
    text = base() + (policy(body) if body else "")
    assert _thresholds(cluster_of(compiled(text))) == expected


def test_route_level_beats_gateway_level_and_rule_level_beats_route_level():
    named = base().replace("  rules:\n    - matches:", "  rules:\n    - name: fb\n      matches:", 1)
    gw_policy = policy(
        "retry: {numRetries: 1}", "gw-wide", "{group: gateway.networking.k8s.io, kind: Gateway, name: gw}"
    )
    route_policy = policy(
        "retry: {numRetries: 3}", "on-route", "{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: r}"
    )
    rule_policy = policy(
        "retry: {numRetries: 7}",
        "on-rule",
        "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, sectionName: fb}",
    )
    assert routes_of(compiled(named + gw_policy))[0].route.retry_policy.num_retries.value == 1
    assert routes_of(compiled(named + gw_policy + route_policy))[0].route.retry_policy.num_retries.value == 3
    both = compiled(named + gw_policy + route_policy + rule_policy)
    assert both.errors == []
    assert routes_of(both)[0].route.retry_policy.num_retries.value == 7


def test_two_policies_on_one_target_the_first_by_name_applies_and_the_other_is_reported():
    result = compiled(
        base() + policy("retry: {numRetries: 1}", "a-first") + policy("retry: {numRetries: 9}", "b-second")
    )
    assert routes_of(result)[0].route.retry_policy.num_retries.value == 1
    [warn] = [d for d in result.diagnostics if d.resource == ResourceKey("BackendTrafficPolicy", "default", "b-second")]
    assert "default/a-first applies" in warn.message


def test_fields_not_implemented_yet_are_warned_by_name_and_the_rest_applies():
    body = """
loadBalancer: {type: BackendUtilization, backendUtilization: {blackoutPeriod: 10s}}
healthCheck: {active: {type: TCP, tcp: {}, overrides: {port: 9090}}}
retry: {numRetries: 4}
"""
    result = compiled(base() + policy(body))
    assert result.errors == []
    warnings = {
        d.field: d.message for d in result.diagnostics if d.resource and d.resource.kind == "BackendTrafficPolicy"
    }
    # (rateLimit is counted by the translator: tests/unit/test_rate_limit_compile.py.)
    assert set(warnings) == {
        "spec.loadBalancer.type",
        "spec.loadBalancer.backendUtilization",
        "spec.healthCheck.active.overrides",
    }
    assert all("not supported yet" in m for m in warnings.values())
    assert warnings["spec.loadBalancer.type"].startswith("loadBalancer type BackendUtilization is not supported")
    assert routes_of(result)[0].route.retry_policy.num_retries.value == 4
    cluster = cluster_of(result)
    assert not cluster.HasField("load_balancing_policy")  # the default stays
    assert cluster.health_checks[0].HasField("tcp_health_check")  # the rest of healthCheck applies


def _policy_config(cluster, message):
    [policy] = cluster.load_balancing_policy.policies
    config = message()
    assert policy.typed_extension_config.typed_config.Unpack(config)
    return policy.typed_extension_config.name, config


@pytest.mark.parametrize(
    ("balancer", "expected"),
    [
        ("{type: RoundRobin, slowStart: {window: 30s}}", "round_robin"),
        ("{type: LeastRequest}", "least_request"),
        ("{type: Random}", "random"),
    ],
)
def test_a_load_balancer_type_becomes_the_cluster_policy_keeping_the_backend_ref_weights(balancer, expected):
    from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
    from envoy.extensions.load_balancing_policies.random.v3 import random_pb2
    from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2

    messages = {
        "round_robin": round_robin_pb2.RoundRobin,
        "least_request": least_request_pb2.LeastRequest,
        "random": random_pb2.Random,
    }
    result = compiled(base() + policy(f"loadBalancer: {balancer}"))
    assert result.errors == [] and not [d for d in result.diagnostics if d.resource.kind == "BackendTrafficPolicy"]
    cluster = cluster_of(result)
    name, config = _policy_config(cluster, messages[expected])
    assert name == f"envoy.load_balancing_policies.{expected}"
    # The backendRefs' weights (localities) still split the traffic, from the policy's own config.
    assert config.locality_lb_config.HasField("locality_weighted_lb_config")
    assert not cluster.common_lb_config.HasField("locality_weighted_lb_config")
    if expected == "round_robin":
        assert config.slow_start_config.slow_start_window.ToSeconds() == 30
    assert not routes_of(result)[0].route.hash_policy
    # Without a loadBalancer: the cluster's default, weighted by locality.
    plain = cluster_of(compiled(base()))
    assert not plain.HasField("load_balancing_policy")
    assert plain.common_lb_config.HasField("locality_weighted_lb_config")


@pytest.mark.parametrize(
    ("hashing", "check"),
    [
        ("{type: SourceIP}", lambda h: h.connection_properties.source_ip),
        ("{type: Header, header: {name: X-Session}}", lambda h: h.header.header_name == "x-session"),
        ("{type: Headers, headers: [{name: x-user}]}", lambda h: h.header.header_name == "x-user"),
        ("{type: QueryParams, queryParams: [{name: session}]}", lambda h: h.query_parameter.name == "session"),
        (
            "{type: Cookie, cookie: {name: aff, ttl: 1h, attributes: {SameSite: Strict}}}",
            lambda h: (
                (h.cookie.name, h.cookie.ttl.ToSeconds(), h.cookie.attributes[0].name) == ("aff", 3600, "SameSite")
            ),
        ),
    ],
)
def test_consistent_hash_is_maglev_on_the_cluster_and_a_hash_policy_on_every_route_of_the_rule(hashing, check):
    from envoy.extensions.load_balancing_policies.maglev.v3 import maglev_pb2

    result = compiled(base() + policy(f"loadBalancer: {{type: ConsistentHash, consistentHash: {hashing}}}"))
    assert result.errors == []
    name, config = _policy_config(cluster_of(result), maglev_pb2.Maglev)
    assert name == "envoy.load_balancing_policies.maglev" and config.HasField("locality_weighted_lb_config")
    routes = routes_of(result)
    assert routes and all(len(r.route.hash_policy) == 1 and check(r.route.hash_policy[0]) for r in routes)


@pytest.mark.parametrize(
    ("body", "field_path", "words"),
    [
        ("loadBalancer: {type: ConsistentHash}", "spec.loadBalancer", "type ConsistentHash needs consistentHash"),
        (
            "loadBalancer: {type: ConsistentHash, consistentHash: {type: Header}}",
            "spec.loadBalancer.consistentHash",
            "needs header",
        ),
        (
            "loadBalancer: {type: ConsistentHash, consistentHash: {type: SourceIP, tableSize: 1000}}",
            "spec.loadBalancer.consistentHash",
            "not a prime",
        ),
        ("loadBalancer: {type: Random, slowStart: {window: 5s}}", "spec.loadBalancer", "slowStart is for RoundRobin"),
        ("loadBalancer: {type: RoundRobbin}", "spec.loadBalancer.type", "RoundRobin"),
        ("healthCheck: {active: {type: HTTP}}", "spec.healthCheck.active", "type HTTP needs http"),
        ("healthCheck: {active: {type: TCP, http: {path: /}}}", "spec.healthCheck.active", "type TCP needs tcp"),
        ("healthCheck: {active: {type: GRPC, tcp: {}}}", "spec.healthCheck.active", "tcp is for type TCP, not GRPC"),
        (
            "healthCheck: {active: {type: HTTP, http: {path: /, requestBody: {type: Text, text: x}}}}",
            "spec.healthCheck.active.http",
            "POST or PUT",
        ),
        (
            "healthCheck: {active: {type: TCP, tcp: {send: {type: Binary, binary: '!!'}}}}",
            "spec.healthCheck.active.tcp.send",
            "base64",
        ),
        ("healthCheck: {passive: {maxEjectionPercent: 101}}", "spec.healthCheck.passive.maxEjectionPercent", "100"),
        ("healthCheck: {passive: {interval: 0s}}", "spec.healthCheck.passive.interval", "greater than zero"),
        (
            "healthCheck: {active: {type: HTTP, http: {path: /, method: CONNECT}}}",
            "spec.healthCheck.active.http.method",
            "GET",
        ),
        ("healthCheck: {panicThreshold: -1}", "spec.healthCheck.panicThreshold", "0"),
    ],
)
def test_a_load_balancer_or_health_check_envoy_would_refuse_is_named_by_field(body, field_path, words):
    result = compiled(base() + policy(body))
    [err] = [e for e in result.errors if e.resource == ResourceKey("BackendTrafficPolicy", "default", "btp")]
    assert err.field == field_path and words in err.message
    assert "default/gw" not in result.gateways  # its last good configuration keeps serving


def test_passive_health_check_is_outlier_detection_with_envoy_gateway_defaults():
    result = compiled(base() + policy("healthCheck: {passive: {}, panicThreshold: 0}"))
    assert result.errors == []
    cluster = cluster_of(result)
    detection = cluster.outlier_detection
    assert detection.interval.ToSeconds() == 3 and detection.base_ejection_time.ToSeconds() == 30
    assert detection.consecutive_5xx.value == 5 and detection.consecutive_local_origin_failure.value == 5
    assert detection.max_ejection_percent.value == 10 and not detection.split_external_local_origin_errors
    assert not detection.HasField("consecutive_gateway_failure")
    assert not detection.HasField("always_eject_one_host")
    assert cluster.common_lb_config.HasField("healthy_panic_threshold")
    assert cluster.common_lb_config.healthy_panic_threshold.value == 0
    body = """
healthCheck:
  passive: {consecutive5XxErrors: 2, consecutiveGatewayErrors: 1, interval: 1s, baseEjectionTime: 1m,
            maxEjectionPercent: 100, failurePercentageThreshold: 50, alwaysEjectOneEndpoint: true,
            splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 2}
"""
    detection = cluster_of(compiled(base() + policy(body))).outlier_detection
    assert detection.consecutive_5xx.value == 2 and detection.consecutive_gateway_failure.value == 1
    assert detection.enforcing_consecutive_gateway_failure.value == 100
    assert detection.failure_percentage_threshold.value == 50 and detection.enforcing_failure_percentage.value == 100
    assert detection.max_ejection_percent.value == 100 and detection.always_eject_one_host.value
    assert detection.split_external_local_origin_errors and detection.consecutive_local_origin_failure.value == 2
    assert detection.base_ejection_time.ToSeconds() == 60 and detection.interval.ToSeconds() == 1
    assert not cluster_of(compiled(base())).HasField("outlier_detection")


@pytest.mark.parametrize(
    ("passive", "warned"),
    [
        ("{}", True),
        ("{maxEjectionPercent: 49}", True),
        ("{maxEjectionPercent: 50}", False),
        ("{alwaysEjectOneEndpoint: true}", False),
        ("{maxEjectionPercent: 0}", True),  # unset: Envoy's 10
    ],
)
def test_a_passive_health_check_that_can_eject_no_endpoint_of_the_rule_is_warned(passive, warned):
    """Two endpoints: Envoy ejects one only when 50 % is within maxEjectionPercent (measured with a
    real Envoy: 49 ejects none, 50 one; tests/e2e/test_health_and_load_balancing.py)."""
    result = compiled(base() + policy(f"healthCheck: {{passive: {passive}}}"))
    found = [d for d in result.diagnostics if d.field == "spec.healthCheck.passive.maxEjectionPercent"]
    assert result.errors == [] and bool(found) == warned
    if warned:
        assert "has 2 endpoint(s): ejecting one is 50 %" in found[0].message
        assert "maxEjectionPercent (10)" in found[0].message or "(49)" in found[0].message
        assert "alwaysEjectOneEndpoint" in found[0].message


def test_active_http_health_check_sends_each_endpoint_its_backend_host():
    body = """
healthCheck:
  active:
    type: HTTP
    interval: 2s
    unhealthyThreshold: 2
    http: {path: /health, method: HEAD, expectedStatuses: [200, 201, 204]}
"""
    result = compiled(base() + policy(body))
    assert result.errors == []
    fleet = build_fleet(result.gateways["default/gw"], BuildSettings())
    [check] = fleet.messages(type_urls.CLUSTER)["default/r/rule/0"].health_checks
    assert check.interval.ToSeconds() == 2 and check.timeout.ToSeconds() == 1
    assert check.no_traffic_interval.ToSeconds() == 2  # not Envoy's minute for a rule without traffic yet
    assert check.unhealthy_threshold.value == 2 and check.healthy_threshold.value == 1
    http = check.http_health_check
    assert http.path == "/health" and http.host == "" and http.method == base_pb2.RequestMethod.Value("HEAD")
    assert [(r.start, r.end) for r in http.expected_statuses] == [(200, 202), (204, 205)]
    # Envoy's Host header would be the cluster's name: each endpoint names its backend's host.
    assignment = fleet.messages(type_urls.ENDPOINT)["default/r/rule/0"]
    hosts = [e.endpoint.health_check_config.hostname for loc in assignment.endpoints for e in loc.lb_endpoints]
    uphosts = [e.endpoint.hostname for loc in assignment.endpoints for e in loc.lb_endpoints]
    assert hosts == uphosts and all(hosts)
    # A hostname given is the Host of every check, and no endpoint overrides it.
    named = body.replace("path: /health,", "path: /health, hostname: probe.example.com,")
    fleet = build_fleet(compiled(base() + policy(named)).gateways["default/gw"], BuildSettings())
    assert fleet.messages(type_urls.CLUSTER)["default/r/rule/0"].health_checks[0].http_health_check.host == (
        "probe.example.com"
    )
    assignment = fleet.messages(type_urls.ENDPOINT)["default/r/rule/0"]
    assert not any(e.endpoint.HasField("health_check_config") for loc in assignment.endpoints for e in loc.lb_endpoints)


def test_active_tcp_health_checks_and_payloads_and_grpc_ones_left_out():
    payloads = "{send: {type: Text, text: ping}, receive: {type: Binary, binary: cG9uZw==}}"
    tcp = f"healthCheck: {{active: {{type: TCP, tcp: {payloads}}}}}"
    [check] = cluster_of(compiled(base() + policy(tcp))).health_checks
    assert check.tcp_health_check.send.text == b"ping".hex()
    assert [p.text for p in check.tcp_health_check.receive] == [b"pong".hex()]
    cluster = cluster_of(compiled(base() + policy(tcp)))
    assert cluster.ignore_health_on_host_removal  # a host DNS drops goes, as in Envoy Gateway
    # gRPC probes need an HTTP/2 cluster (Envoy refuses one of HTTP/1.1): warned, left out.
    grpc = "healthCheck: {active: {type: GRPC, grpc: {service: llm}}, passive: {}}"
    result = compiled(base() + policy(grpc))
    [warned] = [d for d in result.diagnostics if d.field == "spec.healthCheck.active.type"]
    assert "type GRPC" in warned.message and "not supported yet" in warned.message and not result.errors
    cluster = cluster_of(result)
    assert not cluster.health_checks and cluster.HasField("outlier_detection")


def test_a_policy_targeting_a_missing_route_is_an_error_and_every_gateway_keeps_serving():
    text = base() + policy(
        "retry: {numRetries: 4}", target="{group: gateway.networking.k8s.io, kind: HTTPRoute, name: gone}"
    )
    result = compiled(text)
    [err] = result.errors
    assert err.resource == ResourceKey("BackendTrafficPolicy", "default", "btp")
    assert err.field == "spec.targetRefs[0].name" and "default/gone not found" in err.message
    assert err.origin is not None and err.origin.file == "test.yaml"
    assert "default/gw" in result.gateways  # the gateway compiled, with its default failover
    status = {c.type: c for c in result.statuses[ResourceKey("BackendTrafficPolicy", "default", "btp")]}
    assert status["Accepted"].status is False


@pytest.mark.parametrize(
    ("target", "field", "words"),
    [
        ("{group: gateway.networking.k8s.io, kind: Service, name: r}", "spec.targetRefs[0].kind", "not Service"),
        ("{group: example.com, kind: HTTPRoute, name: r}", "spec.targetRefs[0].group", "not example.com"),
        ("{group: gateway.networking.k8s.io, kind: Gateway, name: nope}", "spec.targetRefs[0].name", "not found"),
        (
            "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, sectionName: nope}",
            "spec.targetRefs[0].sectionName",
            "no rule named nope",
        ),
    ],
)
def test_targets_that_cannot_attach_are_errors_naming_the_field(target: str, field: str, words: str):
    [err] = compiled(base() + policy("retry: {}", target=target)).errors
    assert err.field == field and words in err.message


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ("retry: {numRetries: -1}", "spec.retry.numRetries", "greater than or equal to 0"),
        ("retry: {perRetry: {timeout: 0s}}", "spec.retry.perRetry.timeout", "greater than zero"),
        ("retry: {perRetry: {timeout: soon}}", "spec.retry.perRetry.timeout", "invalid duration"),
        ("retry: {perRetry: {backOff: {baseInterval: -1s}}}", "spec.retry.perRetry.backOff.baseInterval", "invalid"),
        ("retry: {perRetry: {backOff: {baseInterval: 2s, maxInterval: 1s}}}", "spec.retry.perRetry.backOff", "shorter"),
        ("retry: {retryOn: {triggers: [on-a-whim]}}", "spec.retry.retryOn.triggers[0]", "5xx"),
        ("retry: {retryOn: {httpStatusCodes: [42]}}", "spec.retry.retryOn.httpStatusCodes[0]", "100"),
        ("circuitBreaker: {maxConnections: 0}", "spec.circuitBreaker.maxConnections", "greater than or equal to 1"),
        ("timeout: {http: {requestTimeout: 1.5s}}", "spec.timeout.http.requestTimeout", "invalid duration"),
        ("timeout: {tcp: {connectTimeout: 0s}}", "spec.timeout.tcp.connectTimeout", "greater than zero"),
        ("retyr: {numRetries: 1}", "spec.retyr", "unknown field (did you mean retry?)"),
    ],
)
def test_bad_values_are_errors_naming_file_resource_and_field(body: str, field: str, words: str):
    result = compiled(base() + policy(body))
    errors = [e for e in result.errors if e.resource == ResourceKey("BackendTrafficPolicy", "default", "btp")]
    assert errors, [str(e) for e in result.errors]
    [err] = errors
    assert err.field == field and words in err.message, str(err)
    assert err.origin is not None and err.origin.file == "test.yaml"
    # The Gateway it targets is held (its last good configuration is served; in Kubernetes mode what
    # it targets is left out), as for any object it is built from: not served without the policy, as
    # Envoy Gateway answers 500 on the routes of a policy that fails. (It was, before: the policy
    # applied to nothing.)
    assert "default/gw" in result.failed and "default/gw" not in result.gateways
    [held] = [e for e in result.errors if e.resource == ResourceKey("Gateway", "default", "gw")]
    assert "BackendTrafficPolicy default/btp" in held.message


def test_fields_of_newer_envoy_gateway_releases_are_warnings_and_a_misspelt_one_is_an_error():
    """Found by review: the spec is strict, so a field of a newer Envoy Gateway (compressor,
    routingType) made the policy fail validation, which now holds the Gateway it targets (and, in
    Kubernetes mode, whose API server keeps such fields, leaves its targets out). Such a field is a
    warning and the rest of the policy applies; in a file, one that looks like a typo of a field the
    policy has is still an error (a far one a warning saying what it may be), never in Kubernetes
    mode (the API server keeps only the installed CRD's fields)."""
    newer = RETRY + "compressor: [{type: Gzip}]\nroutingType: Service\nretries: {numRetries: 1}\n"
    result = compiled(base() + policy(newer))
    assert "default/gw" in result.gateways and not result.errors
    said = {
        d.field: d.message
        for d in result.diagnostics
        if d.field.split(".")[-1] in ("compressor", "routingType", "retries")
    }
    assert said == {
        "spec.compressor": "compressor is not a field aigw-xds reads: the rest of the policy applies without it",
        "spec.routingType": "routingType is not a field aigw-xds reads: the rest of the policy applies without it",
        "spec.retries": "retries is not a field aigw-xds reads (or is it retry, misspelt?): the rest of the policy "
        "applies without it",
    }
    typo = compiled(base() + policy(RETRY.replace("retry:", "retyr:")))
    [err] = [e for e in typo.errors if e.resource == ResourceKey("BackendTrafficPolicy", "default", "btp")]
    assert (err.field, err.message) == ("spec.retyr", "unknown field (did you mean retry?)")
    assert "default/gw" in typo.failed
    from_api = resources(base() + policy(RETRY.replace("retry:", "retyr:")), file="kubernetes:default/btp")
    assert not compile_resources(from_api).errors


def test_a_bad_edit_of_a_policy_in_use_keeps_the_last_good_configuration():
    """The policy's last good version stays in use (stale) and the gateway that uses it keeps its
    last good snapshot, as for every other kind."""
    from aigw_xds.api.decode import decode_text
    from aigw_xds.resources import build_resource_set

    good = resources(base() + policy(RETRY))
    bad_text = base() + policy(RETRY.replace("numRetries: 5", "numRetries: -5"))
    bad = build_resource_set(decode_text(bad_text, "test.yaml"), previous=good)
    result = compile_resources(bad)
    assert "default/gw" in result.failed and "default/gw" not in result.gateways
    assert any(e.field == "spec.retry.numRetries" for e in result.errors)


def test_a_policy_without_retry_keeps_the_default_failover_across_priorities():
    result = compiled(base() + policy("circuitBreaker: {maxConnections: 5}"))
    [entry, *_] = routes_of(result)
    assert entry.route.retry_policy.retry_on == "5xx,reset,connect-failure,retriable-status-codes"
    assert entry.route.retry_policy.num_retries.value == 1
    assert cluster_of(result).circuit_breakers.thresholds[0].max_connections.value == 5


@pytest.mark.parametrize(("schema_b", "route_class"), [("OpenAI", "route"), ("Anthropic", "attempt")])
def test_stream_idle_timeout_reaches_the_router_phase_of_the_translated_route(schema_b: str, route_class: str):
    """The router phase ends a silent stream itself just before Envoy's per-try idle timer: the
    rule's streamIdleTimeout reaches it in the stream's gRPC metadata, on the route of either
    translated class (ROUTE beside its backend, ATTEMPT alone); a rule without one sends none."""
    idle = "      streamIdleTimeout: 1500ms\n"
    text = gateway() + route("r", FALLBACK) + backend("a", 9001) + backend("b", 9002, schema_b)
    for fields, expected in ((idle, [("x-aigw-stream-idle-timeout-ms", "1500")]), ("", [])):
        result = compiled(text.replace("      backendRefs:\n", fields + "      backendRefs:\n", 1))
        assert result.errors == []
        [translated] = [e for e in routes_of(result) if e.name == "default/r/rule/0/match/0"]
        per_route = ext_proc_pb2.ExtProcPerRoute()
        config = translated.typed_per_filter_config.get(aigw_contract.EXT_PROC_FILTER_NAME)
        if config is not None:
            config.Unpack(per_route)
        sent = [(h.key, h.value) for h in per_route.overrides.grpc_initial_metadata]
        assert [h for h in sent if h[0] == aigw_contract.STREAM_IDLE_TIMEOUT_METADATA_KEY] == expected
        assert any(h[0] == aigw_contract.ROUTE_BACKEND_METADATA_KEY for h in sent) == (route_class == "route")


@pytest.mark.parametrize("envoy_credentials", [False, True], ids=["translated", "with-native"])
@pytest.mark.parametrize("schema_b", ["OpenAI", "Anthropic"], ids=["route-class", "attempt-class"])
def test_every_route_entry_that_can_stream_carries_the_stream_idle_timeout(schema_b: str, envoy_credentials: bool):
    """Each route entry of a rule with streamIdleTimeout that runs the router phase (the body's
    model route, and the route of requests named by the x-ai-eg-model header alone) hands it the
    timeout, so its watchdog ends a silent stream however the request was routed. Only the NATIVE
    routes, which never stream and run no ext_proc, go without."""
    idle = "      streamIdleTimeout: 1500ms\n"
    text = (
        gateway()
        + route("r", FALLBACK).replace("      backendRefs:\n", idle + "      backendRefs:\n", 1)
        + backend("a", 9001)
        + backend("b", 9002, schema_b)
        + api_key("a", "sk-a")
        + api_key("b", "sk-a")
    )
    result = compiled(text)
    assert result.errors == []
    entries = routes_of(result, BuildSettings(envoy_credentials=envoy_credentials))
    names = {e.name.removeprefix("default/r/rule/0/match/0") for e in entries}
    assert {"", "/header"} <= names
    for entry in entries:
        per_route = ext_proc_pb2.ExtProcPerRoute()
        config = entry.typed_per_filter_config.get(aigw_contract.EXT_PROC_FILTER_NAME)
        if config is not None:
            config.Unpack(per_route)
        if per_route.disabled:
            assert entry.name.endswith(("/native", "/native-not-streaming")), entry.name
            continue
        sent = [(h.key, h.value) for h in per_route.overrides.grpc_initial_metadata]
        assert (aigw_contract.STREAM_IDLE_TIMEOUT_METADATA_KEY, "1500") in sent, entry.name


TIMEOUT_TRIGGERS = {"5xx", "gateway-error", "reset"}  # what Envoy retries a timed-out attempt on
IDLE = "      streamIdleTimeout: 5s\n"


def with_idle(text: str) -> str:
    return text.replace("      backendRefs:\n", IDLE + "      backendRefs:\n", 1)


@pytest.mark.parametrize("fields", ["", IDLE], ids=["default-idle-timeout", "stream-idle-timeout"])
def test_the_default_failover_retries_a_timed_out_attempt(fields: str):
    """No policy on a rule with two priorities: every route's retry has a per-try idle timeout and
    a trigger Envoy retries it on, so a silent backend fails over."""
    text = base().replace("      backendRefs:\n", fields + "      backendRefs:\n", 1)
    result = compiled(text)
    assert list(result.diagnostics) == []
    for entry in routes_of(result):
        retry = entry.route.retry_policy
        assert TIMEOUT_TRIGGERS & set(retry.retry_on.split(",")), entry.name
        assert retry.per_try_idle_timeout.ToSeconds() == (5 if fields else 60)


SILENT = "a silent backend will not fail over"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        # Envoy Gateway's default triggers (retry without retryOn) cover no timeout.
        (with_idle(base()) + policy("retry: {numRetries: 2}"), "streamIdleTimeout 5s"),
        (with_idle(base()) + policy(RETRY), "streamIdleTimeout 5s and a per-try timeout 30s"),
        (base() + policy(RETRY), "per-try timeout 30s (retry.perRetry.timeout)"),
        (
            with_idle(base()) + policy("retry: {retryOn: {triggers: [connect-failure], httpStatusCodes: [429]}}"),
            "retry triggers (connect-failure, retriable-status-codes)",
        ),
    ],
    ids=["eg-default-triggers", "idle-and-per-try", "per-try-only", "status-codes-only"],
)
def test_a_policy_whose_triggers_do_not_retry_a_timeout_is_warned(text: str, words: str):
    result = compiled(text)
    assert result.errors == []
    [warn] = [d for d in result.diagnostics if SILENT in d.message]
    assert warn.resource == ResourceKey("BackendTrafficPolicy", "default", "btp")
    assert warn.field == "spec.retry.retryOn.triggers"
    assert words in warn.message and "rule 0 of AIGatewayRoute default/r" in warn.message


@pytest.mark.parametrize(
    "text",
    [
        # A trigger that retries a timeout.
        with_idle(base()) + policy("retry: {retryOn: {triggers: [reset], httpStatusCodes: [500]}}"),
        with_idle(base()) + policy("retry: {retryOn: {triggers: [5xx]}}"),
        with_idle(base()) + policy("retry: {retryOn: {triggers: [gateway-error]}}"),
        # No timeout the user set (the 60 s default idle timeout alone is not warned about).
        base() + policy("retry: {numRetries: 2}"),
        # One priority: nowhere to fail over to.
        with_idle(gateway() + route("r", {"m": "a"}) + backend("a", 9001)) + policy(RETRY),
        # A policy without retry keeps the default failover.
        with_idle(base()) + policy("circuitBreaker: {maxConnections: 5}"),
    ],
    ids=["reset", "5xx", "gateway-error", "no-user-timeout", "one-priority", "no-retry"],
)
def test_no_warning_where_a_timed_out_attempt_fails_over_or_cannot(text: str):
    result = compiled(text)
    assert result.errors == []
    assert [d for d in result.diagnostics if SILENT in d.message] == []


NO_FAILOVER = "the rule never fails over"


@pytest.mark.parametrize(
    ("text", "warned"),
    [
        # From a rate-limit review: a retry set only to retry more dropped the rule's failover.
        (base() + policy("retry: {numRetries: 3}"), True),
        (base() + policy(RETRY), False),  # numAttemptsPerPriority 1
        # Endpoints taken out by health: the next priority gets the load.
        (base() + policy("retry: {numRetries: 3}\nhealthCheck: {passive: {consecutive5XxErrors: 1}}"), False),
        # One priority: nowhere to fail over to.
        (gateway() + route("r", {"m": "a"}) + backend("a", 9001) + policy("retry: {numRetries: 3}"), False),
        # No retry at all: numAttemptsPerPriority would not help (from a diff review).
        (base() + policy("retry: {numRetries: 0}"), False),
    ],
    ids=["retry-only", "attempts-per-priority", "outlier-detection", "one-priority", "no-retries"],
)
def test_a_retry_that_keeps_a_rule_from_failing_over_is_warned(text: str, warned: bool):
    result = compiled(text)
    assert result.errors == []
    found = [d for d in result.diagnostics if NO_FAILOVER in d.message]
    assert bool(found) is warned
    if warned:
        assert found[0].field == "spec.retry.numAttemptsPerPriority"
        assert "rule 0 of AIGatewayRoute default/r has backends at 2 priorities" in found[0].message
