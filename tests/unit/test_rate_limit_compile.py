"""Token rate limits and quotas, compile side: BackendTrafficPolicy rateLimit.global rules and
QuotaPolicy buckets -> the translator's RateLimit budgets (compile/traffic.py, compile/quota.py), the
budget ids each rule's router-phase stream carries and each backend's quota ids (xds/build.py), the
classes of rules under budgets (xds/route_classes.py), and bad input reported with file, resource
and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_xds.api.decode import decode_text
from aigw_xds.compile import compile_resources
from aigw_xds.compile.compiler import CompileResult
from aigw_xds.keys import ResourceKey
from aigw_xds.resources import build_resource_set
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import BuildSettings, build_fleet, rule_plans
from aigw_xds.xds.route_classes import RouteClass
from tests.resource_text import backend, gateway, resources, route

COMPAT = Path("/work/shared/compat/envoy-ai-gateway-examples/token_ratelimit_token_ratelimit.yaml")
EXAMPLE_POLICY = "default/envoy-ai-gateway-token-ratelimit-policy"
EXAMPLE_ROUTE = "default/envoy-ai-gateway-token-ratelimit"
COSTS = """  llmRequestCosts:
    - {metadataKey: llm_total_token, type: TotalToken}
    - {metadataKey: llm_input_token, type: InputToken}
"""
GATEWAY_TARGET = "{group: gateway.networking.k8s.io, kind: Gateway, name: gw}"


def compiled(text: str) -> CompileResult:
    return compile_resources(resources(text))


def base(extra: str = COSTS) -> str:
    return gateway() + route("r", {"m": "a"}, extra=extra) + backend("a", 9001)


def btp(body: str, name: str = "btp", target: str = GATEWAY_TARGET) -> str:
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


def quota_policy(body: str, name: str = "qp", target: str = "a") -> str:
    spec = "\n".join("  " + line for line in body.strip("\n").splitlines())
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: QuotaPolicy
metadata: {{name: {name}}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {target}}}]
{spec}
"""


def rate_limit(rule: str) -> str:
    return "rateLimit:\n  type: Global\n  global:\n    rules:\n" + "\n".join(
        "      " + line for line in rule.strip("\n").splitlines()
    )


TOKENS = """
- clientSelectors:
    - headers: [{name: X-Tenant, type: Distinct}]
  limit: {requests: 1000, unit: Hour}
  cost:
    request: {from: Number, number: 0}
    response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: llm_total_token}}
"""


def budgets(result: CompileResult, fleet: str = "default/gw") -> dict[str, config_pb2.RateLimit]:
    return {b.id: b for b in result.gateways[fleet].translator.rate_limits}


def router_overrides(result: CompileResult, fleet: str = "default/gw", settings: BuildSettings | None = None):
    """Route name -> the router-phase ext_proc override's gRPC metadata (key -> value)."""
    resources_ = build_fleet(result.gateways[fleet], settings or BuildSettings())
    out = {}
    for config in resources_.messages(type_urls.ROUTE).values():
        assert isinstance(config, route_pb2.RouteConfiguration)
        for vhost in config.virtual_hosts:
            for entry in vhost.routes:
                if not entry.route.cluster:
                    continue
                metadata: dict[str, str] = {}
                packed = entry.typed_per_filter_config.get(contract.EXT_PROC_FILTER_NAME)
                if packed is not None:
                    per_route = ext_proc_pb2.ExtProcPerRoute()
                    if packed.Unpack(per_route):
                        metadata = {h.key: h.value for h in per_route.overrides.grpc_initial_metadata}
                out[entry.name] = metadata
    return out


# ------------------------------------------------------------------------------------------------
# The published example


def test_the_token_ratelimit_example_compiles_to_five_token_budgets_on_its_route():
    path = str(COMPAT)
    result = compile_resources(build_resource_set(decode_text(COMPAT.read_text(), path)))
    assert result.errors == []
    about_policy = [d for d in result.diagnostics if d.resource and d.resource.kind == "BackendTrafficPolicy"]
    assert about_policy == [], [str(d) for d in about_policy]
    fleet = "default/envoy-ai-gateway-token-ratelimit"
    found = budgets(result, fleet)
    keys = [
        "llm_input_token",
        "llm_output_token",
        "llm_total_token",
        "llm_cached_input_token",
        "llm_cel_calculated_token",
    ]
    limits = [10, 100, 1000, 100, 1000]
    # The policy targets the Gateway: each route counts apart (Envoy Gateway's default, no `shared`).
    ids = [f"btp/{EXAMPLE_POLICY}/{i}/route/{EXAMPLE_ROUTE}" for i in range(5)]
    assert list(found) == ids
    for i, (budget_id, key, limit) in enumerate(zip(ids, keys, limits, strict=True)):
        budget = found[budget_id]
        assert budget.source == f"BackendTrafficPolicy {EXAMPLE_POLICY} spec.rateLimit.global.rules[{i}]"
        assert budget.response_cost_key == key and budget.response_cost_cel == ""
        assert budget.limit == limit
        assert budget.window == config_pb2.Window(seconds=3600)
        assert budget.request_cost == 0 and not budget.shadow
        [condition] = budget.conditions
        assert condition.header == config_pb2.HeaderCondition(
            name="x-tenant-id", match=config_pb2.HeaderCondition.DISTINCT
        )
    [rule] = result.gateways[fleet].rules
    assert rule.rate_limit_ids == tuple(ids)
    overrides = router_overrides(result, fleet)
    assert overrides, "the route has translated entries"
    for name, metadata in overrides.items():
        assert metadata.get(contract.RATE_LIMITS_METADATA_KEY) == ",".join(ids), name


# ------------------------------------------------------------------------------------------------
# BackendTrafficPolicy rateLimit


def test_selectors_units_costs_and_shadow_compile_as_written():
    rules = """
- clientSelectors:
    - headers:
        - {name: x-team, value: blue}
        - {name: x-org, type: RegularExpression, value: "acme-.*", invert: true}
      sourceCIDR: {type: Distinct, value: 10.0.0.0/8}
      methods: [{value: POST}, {value: GET, invert: true}]
      path: {type: Exact, value: /v1/chat/completions}
  limit: {requests: 5, unit: Month}
  shadowMode: true
- limit: {requests: 7, unit: Year}
  cost: {request: {from: Number, number: 3}, response: {from: Number, number: 2}}
  shared: true
- limit: {requests: 9, unit: Second}
"""
    result = compiled(base() + btp(rate_limit(rules)))
    assert result.errors == []
    found = budgets(result)
    first = found["btp/default/btp/0/route/default/r"]
    C, H, P = config_pb2.Condition, config_pb2.HeaderCondition, config_pb2.PathCondition
    assert list(first.conditions) == [
        C(header=H(name="x-team", match=H.EXACT, value="blue")),
        C(header=H(name="x-org", match=H.REGULAR_EXPRESSION, value="acme-.*", invert=True)),
        C(source=config_pb2.SourceCondition(cidr="10.0.0.0/8", distinct=True)),
        C(method=config_pb2.MethodCondition(methods=["POST"])),
        C(method=config_pb2.MethodCondition(methods=["GET"], invert=True)),
        C(path=P(match=P.EXACT, value="/v1/chat/completions")),
    ]
    assert first.window == config_pb2.Window(months=1) and first.limit == 5
    # No cost: a plain request rate limit (1 per request, nothing at the response).
    assert first.request_cost == 1 and first.response_cost_key == "" and first.shadow
    shared = found["btp/default/btp/1"]
    assert shared.window == config_pb2.Window(months=12)
    assert shared.request_cost == 3 and shared.response_cost_cel == "2" and not shared.shadow
    assert found["btp/default/btp/2/route/default/r"].window == config_pb2.Window(seconds=1)
    [rule] = result.gateways["default/gw"].rules
    assert rule.rate_limit_ids == (
        "btp/default/btp/0/route/default/r",
        "btp/default/btp/1",
        "btp/default/btp/2/route/default/r",
    )


def test_the_most_specific_policy_brings_its_rate_limits_whole_and_budgets_are_sorted_by_id():
    text = (
        gateway()
        + route("r", {"m": "a"}, extra=COSTS)
        + route("s", {"n": "a"}, extra=COSTS)
        + backend("a", 9001)
        + btp(rate_limit(TOKENS), name="gw-wide")
        + btp(
            rate_limit("- limit: {requests: 2, unit: Minute}"),
            name="for-r",
            target="{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}",
        )
    )
    result = compiled(text)
    assert result.errors == []
    rules = {rule.route: rule for rule in result.gateways["default/gw"].rules}
    assert rules["default/r"].rate_limit_ids == ("btp/default/for-r/0/route/default/r",)
    assert rules["default/s"].rate_limit_ids == ("btp/default/gw-wide/0/route/default/s",)
    assert list(budgets(result)) == ["btp/default/for-r/0/route/default/r", "btp/default/gw-wide/0/route/default/s"]


def test_a_global_cost_key_counts_as_known():
    config = """
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: GatewayConfig
metadata: {name: cfg}
spec:
  globalLLMRequestCosts: [{metadataKey: fleet_tokens, type: TotalToken}]
"""
    text = gateway(config="cfg") + config + route("r", {"m": "a"}) + backend("a", 9001)
    result = compiled(text + btp(rate_limit(TOKENS.replace("llm_total_token", "fleet_tokens"))))
    assert result.errors == []
    assert budgets(result)["btp/default/btp/0/route/default/r"].response_cost_key == "fleet_tokens"


ROUTE_TARGET = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}"


@pytest.mark.parametrize(("route_policy", "warned"), [("retry: {numRetries: 1}", True), (rate_limit(TOKENS), False)])
def test_a_gateway_budget_a_route_policy_overrides_is_warned(route_policy: str, warned: bool):
    """From a rate-limit review: a route's policy that sets only a retry applies whole (as in Envoy
    Gateway) and the Gateway's budget then counts nothing on that route, with no word said."""
    text = base() + btp(rate_limit(TOKENS), name="gw-budget") + btp(route_policy, name="route", target=ROUTE_TARGET)
    result = compiled(text)
    assert result.errors == []
    found = [d for d in result.diagnostics if d.resource == ResourceKey("BackendTrafficPolicy", "default", "gw-budget")]
    assert bool(found) is warned
    if warned:
        assert found[0].field == "spec.rateLimit"
        assert "default/route applies whole" in found[0].message and "has no rateLimit" in found[0].message
        assert not any(b.startswith("btp/default/gw-budget") for b in budgets(result))


LOCAL = """
rateLimit:
  local:
    rules:
      - clientSelectors: [{headers: [{name: x-user, type: Distinct}]}]
        limit: {requests: 5, unit: Minute}
      - limit: {requests: 100, unit: Second}
      - clientSelectors: [{methods: [{value: GET}]}]
        limit: {requests: 7, unit: Week}
        shared: true
"""


def test_local_rate_limits_are_budgets_counted_locally_with_the_selectorless_rule_as_default():
    """Each rule of each route counts apart (as Envoy Gateway's local buckets, one per route it
    generates): `shared` is not read there, and said so."""
    result = compiled(base() + btp(LOCAL))
    assert result.errors == []
    [said] = [d for d in result.diagnostics if d.field.startswith("spec.rateLimit")]
    assert (
        said.field == "spec.rateLimit.local.rules[2].shared" and "each rule of each route counts apart" in said.message
    )
    found = budgets(result)
    per_user, default, shared = (
        found["btp/default/btp/local/0/route/default/r/rule/0"],
        found["btp/default/btp/local/1/route/default/r/rule/0"],
        found["btp/default/btp/local/2/route/default/r/rule/0"],
    )
    assert all(b.local for b in found.values()) and len(found) == 3
    assert per_user.limit == 5 and per_user.window.seconds == 60 and per_user.request_cost == 1
    assert per_user.source == "BackendTrafficPolicy default/btp spec.rateLimit.local.rules[0]"
    assert shared.window.seconds == 7 * 86400
    # The default counts what the others do not (Envoy Gateway's default token bucket).
    assert list(default.unless) == [per_user.id, shared.id] and not per_user.unless and not shared.unless
    gateway_ir = result.gateways["default/gw"]
    [rule] = [r for v in gateway_ir.listeners[0].virtual_hosts for r in v.rules]
    assert set(rule.rate_limit_ids) == set(found)


def test_global_and_local_rules_of_one_policy_are_both_counted_and_keep_their_ids():
    both = (
        "rateLimit:\n  global:\n    rules:\n      - limit: {requests: 2, unit: Minute}\n"
        "  local:\n    rules:\n      - limit: {requests: 3, unit: Minute}"
    )
    found = budgets(compiled(base() + btp(both)))
    assert {k: (v.limit, v.local) for k, v in found.items()} == {
        "btp/default/btp/0/route/default/r": (2, False),
        "btp/default/btp/local/0/route/default/r/rule/0": (3, True),
    }
    # A default alone has nothing to defer to.
    assert not found["btp/default/btp/local/0/route/default/r/rule/0"].unless


@pytest.mark.parametrize(("kind", "counted"), [("Global", "btp/default/btp/0/route/default/r"), ("Local", None)])
def test_the_deprecated_type_counts_only_its_own_rules_as_in_envoy_gateway(kind: str, counted: str | None):
    both = (
        f"rateLimit:\n  type: {kind}\n  global:\n    rules:\n      - limit: {{requests: 2, unit: Minute}}\n"
        "  local:\n    rules:\n      - limit: {requests: 3, unit: Minute}"
    )
    result = compiled(base() + btp(both))
    [said] = [d for d in result.diagnostics if d.field == "spec.rateLimit.type"]
    other = "local" if kind == "Global" else "global"
    assert f"type {kind} counts only its own rules" in said.message and f"{other} is not counted" in said.message
    found = budgets(result)
    assert list(found) == [counted or "btp/default/btp/local/0/route/default/r/rule/0"]


def test_query_parameter_selectors_compile_to_query_conditions_named_as_written():
    rule = """
- clientSelectors: [{queryParams: [{name: Team, type: Distinct}, {name: mode, value: beta, invert: true}]}]
  limit: {requests: 5, unit: Minute}
"""
    result = compiled(base() + btp(rate_limit(rule)))
    assert result.errors == []
    [found] = budgets(result).values()
    queries = [(c.query.name, c.query.match, c.query.value, c.query.invert) for c in found.conditions]
    assert queries == [
        ("Team", config_pb2.HeaderCondition.DISTINCT, "", False),
        ("mode", config_pb2.HeaderCondition.EXACT, "beta", True),
    ]
    distinct_value = compiled(base() + btp(rate_limit(rule.replace("type: Distinct}", "type: Distinct, value: x}"))))
    [error] = [e for e in distinct_value.errors if e.resource == BTP]
    assert (
        error.field.endswith("clientSelectors[0].queryParams[0]") and "a Distinct match takes no value" in error.message
    )


def test_envoy_gateway_s_newer_inverted_source_and_rate_limit_headers_switch_compile():
    rule = """
- clientSelectors: [{sourceCIDR: {value: 10.0.0.0/8, invert: true}}]
  limit: {requests: 5, unit: Minute}
  xRateLimitHeaders: "Off"
"""
    result = compiled(base() + btp(rate_limit(rule)))
    assert result.errors == []
    [found] = budgets(result).values()
    assert found.headers_off and found.conditions[0].source.invert and found.conditions[0].source.cidr == "10.0.0.0/8"


def test_a_quota_bucket_rule_selects_by_headers_only():
    rule = "clientSelectors: [{queryParams: [{name: team, type: Distinct}]}]"
    result = compiled(
        quota_base()
        + quota_policy(QUOTAS.replace("clientSelectors: [{headers: [{name: x-user-tier, value: premium}]}]", rule))
    )
    assert any("select clients by headers only" in e.message for e in result.errors)


def test_a_second_local_rule_without_client_selectors_is_an_error_naming_both():
    two = "rateLimit:\n  type: Local\n  local:\n    rules:\n" + "".join(
        f"      - limit: {{requests: {n}, unit: Second}}\n" for n in (1, 2)
    )
    result = compiled(base() + btp(two))
    [err] = [d for d in result.errors if d.resource == ResourceKey("BackendTrafficPolicy", "default", "btp")]
    assert err.field == "spec.rateLimit.local.rules[1].clientSelectors"
    assert "rules[0] is one" in err.message
    assert "default/gw" not in result.gateways  # the Gateway keeps what it served
    # ... and its error, which points at "the errors above", comes after the policy's (a new user
    # read it first).
    [held] = [d for d in result.errors if d.resource == ResourceKey("Gateway", "default", "gw")]
    assert result.diagnostics.index(err) < result.diagnostics.index(held)


def test_a_fleet_with_local_budgets_goes_to_one_translator_process_even_with_shared_counters():
    two = "127.0.0.1:1063,127.0.0.1:1064"
    local = compiled(base() + btp(LOCAL))
    assert _translator_hosts(local, BuildSettings(translator_address=two, shared_counters=True)) == [1063]


# ------------------------------------------------------------------------------------------------
# Route classes and the build


def test_a_rule_under_rate_limits_is_never_native():
    without = compiled(base(extra=""))
    assert rule_plans(without.gateways["default/gw"], envoy_credentials=True)["default/r/rule/0"].native is not None
    result = compiled(base(extra="") + btp(rate_limit("- limit: {requests: 2, unit: Minute}")))
    plan = rule_plans(result.gateways["default/gw"], envoy_credentials=True)["default/r/rule/0"]
    assert plan.native is None and plan.translated is RouteClass.ROUTE
    for name, metadata in router_overrides(result).items():
        assert metadata[contract.RATE_LIMITS_METADATA_KEY] == "btp/default/btp/0/route/default/r", name
    assert not any(name.endswith(("/native", "/native-not-streaming")) for name in router_overrides(result))


def test_an_attempt_route_under_rate_limits_carries_the_ids_too():
    text = gateway() + route("r", {"m": [("a", 0, 1), ("b", 1, 1)]}, extra=COSTS)
    text += backend("a", 9001) + backend("b", 9002, schema="Anthropic") + btp(rate_limit(TOKENS))
    result = compiled(text)
    plan = rule_plans(result.gateways["default/gw"], envoy_credentials=True)["default/r/rule/0"]
    assert plan.translated is RouteClass.ATTEMPT
    overrides = router_overrides(result)
    assert len(overrides) == 2  # the body's model and the x-ai-eg-model header
    for metadata in overrides.values():
        assert metadata == {
            contract.RATE_LIMITS_METADATA_KEY: "btp/default/btp/0/route/default/r",
            # whose route's costs charge a request whose client left before any response
            contract.FIRST_BACKEND_METADATA_KEY: "default/a/route/r/rule/0/ref/0",
        }


def _router_ext_proc(result: CompileResult) -> ext_proc_pb2.ExternalProcessor:
    fleet = build_fleet(result.gateways["default/gw"], BuildSettings())
    [listener] = fleet.by_type[type_urls.LISTENER].values()
    assert isinstance(listener, listener_pb2.Listener)
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    [packed] = [f.typed_config for f in manager.http_filters if f.name == contract.EXT_PROC_FILTER_NAME]
    out = ext_proc_pb2.ExternalProcessor()
    packed.Unpack(out)
    return out


def test_the_router_phase_asks_for_the_client_address_only_when_a_budget_selects_by_cidr():
    by_header = compiled(base() + btp(rate_limit(TOKENS)))
    assert contract.SOURCE_ADDRESS_ATTRIBUTE not in _router_ext_proc(by_header).request_attributes
    cidr = "- clientSelectors: [{sourceCIDR: {value: 0.0.0.0/0, type: Distinct}}]\n  limit: {requests: 2, unit: Minute}"
    by_address = compiled(base() + btp(rate_limit(cidr)))
    assert contract.SOURCE_ADDRESS_ATTRIBUTE in _router_ext_proc(by_address).request_attributes


def _translator_hosts(result: CompileResult, settings: BuildSettings) -> list[int]:
    fleet = build_fleet(result.gateways["default/gw"], settings)
    cluster = fleet.by_type[type_urls.CLUSTER][contract.TRANSLATOR_CLUSTER_NAME]
    assert isinstance(cluster, cluster_pb2.Cluster)
    return [e.endpoint.address.socket_address.port_value for e in cluster.load_assignment.endpoints[0].lb_endpoints]


def test_in_memory_counters_send_a_fleet_with_budgets_to_one_translator_process():
    two = "127.0.0.1:1063,127.0.0.1:1064"
    limited = compiled(base() + btp(rate_limit(TOKENS)))
    assert _translator_hosts(limited, BuildSettings(translator_address=two)) == [1063]
    assert _translator_hosts(limited, BuildSettings(translator_address=two, shared_counters=True)) == [1063, 1064]
    unlimited = compiled(base())
    assert _translator_hosts(unlimited, BuildSettings(translator_address=two)) == [1063, 1064]


# ------------------------------------------------------------------------------------------------
# QuotaPolicy


def quota_base(override: str = "gpt-4o") -> str:
    ref = f"{{name: a, modelNameOverride: {override}}}" if override else "{name: a}"
    return (
        gateway()
        + f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: r}}
spec:
  parentRefs: [{{name: gw, kind: Gateway, group: gateway.networking.k8s.io}}]
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: m}}]}}]
      backendRefs: [{ref}]
"""
        + backend("a", 9001)
    )


QUOTAS = """
serviceQuota:
  quota: {limit: 100000, duration: 1mo}
perModelQuotas:
  - modelName: gpt-4o
    quota:
      costExpression: "input_tokens + output_tokens * 4u"
      defaultBucket: {limit: 1000, duration: 1w}
      bucketRules:
        - clientSelectors: [{headers: [{name: x-user-tier, value: premium}]}]
          quota: {limit: 5000, duration: 1h}
        - clientSelectors: [{headers: [{name: x-user, type: Distinct}]}]
          quota: {limit: 50, duration: 90s}
          shadowMode: true
  - modelName: other-model
    quota:
      defaultBucket: {limit: 7, duration: 1d}
"""


def test_quota_policy_buckets_default_bucket_and_service_quota():
    result = compiled(quota_base() + quota_policy(QUOTAS))
    assert result.errors == []
    found = budgets(result)
    group = "quota/default/qp/a/model/gpt-4o"
    # The model sent to the backend is gpt-4o (its override): other-model's quota does not apply.
    assert list(found) == [
        "quota/default/qp/a/model/gpt-4o/bucket/0",
        f"{group}/bucket/1",
        f"{group}/default",
        "quota/default/qp/a/service",
    ]
    service = found["quota/default/qp/a/service"]
    assert service.window == config_pb2.Window(months=1) and service.limit == 100000
    assert service.response_cost_cel == "total_tokens" and service.request_cost == 0
    assert service.bucket_group == "" and service.model == "" and not service.conditions
    H = config_pb2.HeaderCondition
    premium = found[f"{group}/bucket/0"]
    assert premium.window == config_pb2.Window(seconds=3600) and premium.limit == 5000
    assert [c.header for c in premium.conditions] == [H(name="x-user-tier", match=H.EXACT, value="premium")]
    assert premium.response_cost_cel == "input_tokens + output_tokens * 4u"
    assert premium.bucket_group == group and premium.model == "gpt-4o" and not premium.shadow
    per_user = found[f"{group}/bucket/1"]
    assert per_user.window == config_pb2.Window(seconds=90) and per_user.shadow
    assert [c.header for c in per_user.conditions] == [H(name="x-user", match=H.DISTINCT)]
    default = found[f"{group}/default"]
    assert default.window == config_pb2.Window(seconds=7 * 86400) and default.limit == 1000
    assert default.bucket_group == group and not default.conditions
    assert default.source == "QuotaPolicy default/qp spec.perModelQuotas[0].quota.defaultBucket"
    translator = result.gateways["default/gw"].translator
    [backend_config] = translator.backends
    assert list(backend_config.quota_ids) == list(found)
    # The configuration served with marked backends is the whole of it: models, seal key, budgets.
    assert [m.id for m in translator.models] and translator.seal_key and translator.rate_limits
    status = dict((c.type, c) for c in result.statuses[ResourceKey("QuotaPolicy", "default", "qp")])
    assert status["Accepted"].status
    assert not [d for d in result.diagnostics if d.resource and d.resource.kind == "QuotaPolicy"]


def test_each_backend_a_quota_policy_targets_counts_apart():
    """As in Envoy AI Gateway, whose quota descriptors start with the backend's name: a policy on two
    backends gives each its own budgets (one shared counter would halve each backend's quota)."""
    both = """
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: QuotaPolicy
metadata: {name: qp}
spec:
  targetRefs:
    - {group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: a}
    - {group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: b}
  serviceQuota: {quota: {limit: 10, duration: 1h}}
"""
    result = compiled(gateway() + route("r", {"m": "a", "n": "b"}) + backend("a", 9001) + backend("b", 9002) + both)
    assert result.errors == []
    assert list(budgets(result)) == ["quota/default/qp/a/service", "quota/default/qp/b/service"]
    quota_ids = {b.service_backend: list(b.quota_ids) for b in result.gateways["default/gw"].translator.backends}
    assert quota_ids == {"default/a": ["quota/default/qp/a/service"], "default/b": ["quota/default/qp/b/service"]}


def test_without_a_model_override_every_per_model_quota_applies_and_names_its_model():
    result = compiled(quota_base(override="") + quota_policy(QUOTAS))
    assert result.errors == []
    found = budgets(result)
    assert found["quota/default/qp/a/model/other-model/default"].model == "other-model"
    assert found["quota/default/qp/a/model/gpt-4o/bucket/0"].model == "gpt-4o"
    [backend_config] = result.gateways["default/gw"].translator.backends
    assert len(backend_config.quota_ids) == 5


def test_bucket_order_is_the_policy_order_past_ten_rules():
    rules = "\n".join(
        f"        - {{clientSelectors: [{{headers: [{{name: x-b, value: v{i}}}]}}], quota: {{limit: 1, duration: 1m}}}}"
        for i in range(12)
    )
    body = f"""
perModelQuotas:
  - modelName: gpt-4o
    quota:
      defaultBucket: {{limit: 1, duration: 1m}}
      bucketRules:
{rules}
"""
    result = compiled(quota_base() + quota_policy(body))
    assert result.errors == []
    group = "quota/default/qp/a/model/gpt-4o"
    assert list(budgets(result)) == [f"{group}/bucket/{i}" for i in range(12)] + [f"{group}/default"]


def test_a_rule_whose_backend_has_quotas_is_attempt():
    plain = compiled(quota_base())
    assert rule_plans(plain.gateways["default/gw"], True)["default/r/rule/0"].translated is RouteClass.ROUTE
    result = compiled(quota_base() + quota_policy("serviceQuota: {quota: {limit: 10, duration: 1h}}"))
    assert rule_plans(result.gateways["default/gw"], True)["default/r/rule/0"].translated is RouteClass.ATTEMPT


def two_priority_quota() -> str:
    """Rule 0 of route r: backend a (priority 0, under a service quota), then b (priority 1)."""
    return (
        quota_base().replace(
            "backendRefs: [{name: a, modelNameOverride: gpt-4o}]", "backendRefs: [{name: a}, {name: b, priority: 1}]"
        )
        + backend("b", 9002)
        + quota_policy("serviceQuota: {quota: {limit: 10, duration: 1h}}")
    )


def test_a_quota_rule_with_priorities_gets_a_route_and_cluster_per_skipped_priority():
    """The router phase skips spent priorities by setting x-aigw-priority-floor: each ATTEMPT entry
    of the rule has a twin matching it (first), sent to the cluster of the remaining priorities,
    renumbered from 0 and with their own retries; the router phase's stream learns the backends of
    each priority."""
    result = compiled(two_priority_quota())
    assert result.errors == []
    gw = result.gateways["default/gw"]
    plan = rule_plans(gw, True)["default/r/rule/0"]
    assert plan.priorities == (("default/a/route/r/rule/0/ref/0",), ("default/b/route/r/rule/0/ref/1",))
    fleet = build_fleet(gw, BuildSettings())
    clusters = fleet.messages(type_urls.CLUSTER)
    assert "default/r/rule/0/from/1" in clusters
    assignment = fleet.messages(type_urls.ENDPOINT)["default/r/rule/0/from/1"]
    assert isinstance(assignment, endpoint_pb2.ClusterLoadAssignment)
    assert [(e.priority, e.locality.sub_zone) for e in assignment.endpoints] == [(0, "default/b/route/r/rule/0/ref/1")]
    (config,) = fleet.messages(type_urls.ROUTE).values()
    assert isinstance(config, route_pb2.RouteConfiguration)
    entries = [e for vhost in config.virtual_hosts for e in vhost.routes if e.route.cluster]
    floors = [e for e in entries if e.route.cluster == "default/r/rule/0/from/1"]
    assert floors and all(
        any(
            h.name == contract.PRIORITY_FLOOR_HEADER and h.string_match.exact == "default/b/route/r/rule/0/ref/1"
            for h in e.match.headers
        )
        for e in floors
    )
    for floor in floors:  # each twin comes right before its entry
        index = entries.index(floor)
        assert entries[index + 1].name == floor.name.removesuffix("/from/1")
    metadata = router_overrides(result)
    groups = "default/a/route/r/rule/0/ref/0;default/b/route/r/rule/0/ref/1"
    assert all(metadata[e.name][contract.PRIORITY_BACKENDS_METADATA_KEY] == groups for e in floors)


def test_floors_stop_at_the_first_priority_with_a_backend_without_quotas():
    """A priority with a backend under no quota is never found spent: with the quota on priority 1
    only, nothing can be skipped (no floors, no priorities for the router phase to read); with three
    priorities and the quota on priority 0 only, one floor (skipping 0), none skipping 1."""
    lower = compiled(
        two_priority_quota().replace(
            quota_policy("serviceQuota: {quota: {limit: 10, duration: 1h}}"),
            quota_policy("serviceQuota: {quota: {limit: 10, duration: 1h}}", target="b"),
        )
    )
    assert lower.errors == []
    gw = lower.gateways["default/gw"]
    assert rule_plans(gw, True)["default/r/rule/0"].priorities == ()
    assert not [c for c in build_fleet(gw, BuildSettings()).by_type[type_urls.CLUSTER] if "/from/" in c]

    three = compiled(
        two_priority_quota().replace("{name: b, priority: 1}]", "{name: b, priority: 1}, {name: c, priority: 2}]")
        + backend("c", 9003)
    )
    assert three.errors == []
    gw = three.gateways["default/gw"]
    plan = rule_plans(gw, True)["default/r/rule/0"]
    assert plan.priorities == (("default/a/route/r/rule/0/ref/0",), ("default/b/route/r/rule/0/ref/1",))
    clusters = build_fleet(gw, BuildSettings()).messages(type_urls.CLUSTER)
    assert sorted(c for c in clusters if "/from/" in c) == ["default/r/rule/0/from/1"]


def test_a_quota_rule_with_one_priority_has_no_floors():
    result = compiled(quota_base() + quota_policy("serviceQuota: {quota: {limit: 10, duration: 1h}}"))
    assert rule_plans(result.gateways["default/gw"], True)["default/r/rule/0"].priorities == ()


# ------------------------------------------------------------------------------------------------
# Bad input: file, resource, field; everything else keeps serving


def _only_error(result: CompileResult, key: ResourceKey):
    errors = [e for e in result.errors if e.resource == key]
    assert errors, [str(e) for e in result.errors]
    assert len({(e.field, e.message) for e in errors}) == 1, [str(e) for e in errors]
    err = errors[0]
    assert err.origin is not None and err.origin.file == "test.yaml"
    return err


def _assert_holds_its_gateway(result: CompileResult, policy: ResourceKey) -> None:
    """A policy in error holds the Gateway it applies to (its last good configuration is served, in
    Kubernetes mode what it targets is left out): what it targets is never served without it."""
    assert "default/gw" in result.failed and "default/gw" not in result.gateways
    [held] = [e for e in result.errors if e.resource == ResourceKey("Gateway", "default", "gw")]
    assert f"{policy.kind} {policy.ref}" in held.message, held.message


BTP = ResourceKey("BackendTrafficPolicy", "default", "btp")
QP = ResourceKey("QuotaPolicy", "default", "qp")
RULE0 = "spec.rateLimit.global.rules[0]"


def test_a_rate_limit_without_rules_is_an_error():
    result = compiled(base() + btp("rateLimit: {type: Global}"))
    err = _only_error(result, BTP)
    assert err.field == "spec.rateLimit" and err.message == "type Global needs global.rules"
    result = compiled(base() + btp("rateLimit: {}"))
    err = _only_error(result, BTP)
    assert err.field == "spec.rateLimit" and "set global.rules" in err.message


@pytest.mark.parametrize(
    ("rule", "field", "message"),
    [
        (
            "- limit: {requests: 0, unit: Hour}",
            f"{RULE0}.limit.requests",
            "Input should be greater than 0",
        ),
        (
            "- limit: {requests: -5, unit: Hour}",
            f"{RULE0}.limit.requests",
            "Input should be greater than 0",
        ),
        (
            "- limit: {requests: 5, unit: Fortnight}",
            f"{RULE0}.limit.unit",
            "Input should be 'Second', 'Minute', 'Hour', 'Day', 'Week', 'Month' or 'Year'",
        ),
        (
            "- clientSelectors: [{headers: [{name: x-a, type: RegularExpression, value: 'a(b'}]}]\n"
            "  limit: {requests: 5, unit: Hour}",
            f"{RULE0}.clientSelectors[0].headers[0]",
            "invalid regular expression 'a(b' (RE2 syntax, as Envoy uses): missing ): a(b",
        ),
        (
            "- clientSelectors: [{path: {type: RegularExpression, value: '[z-a]'}}]\n"
            "  limit: {requests: 5, unit: Hour}",
            f"{RULE0}.clientSelectors[0].path",
            "invalid regular expression '[z-a]' (RE2 syntax, as Envoy uses): invalid character class range: z-a",
        ),
        (
            "- clientSelectors: [{sourceCIDR: {value: 10.0.0.300/8}}]\n  limit: {requests: 5, unit: Hour}",
            f"{RULE0}.clientSelectors[0].sourceCIDR.value",
            "invalid CIDR '10.0.0.300/8' (expected e.g. 192.168.0.0/24 or 2001:db8::/64)",
        ),
        (
            "- limit: {requests: 5, unit: Hour}\n  cost: {request: {from: Number, numbr: 1}}",
            f"{RULE0}.cost.request.numbr",
            "unknown field",
        ),
    ],
)
def test_bad_rate_limit_values_are_errors_naming_file_resource_and_field(rule: str, field: str, message: str):
    result = compiled(base() + btp(rate_limit(rule)))
    err = _only_error(result, BTP)
    assert err.field == field and message in err.message, str(err)
    # Found by review: the Gateway was served without the limit (the policy applied to nothing).
    _assert_holds_its_gateway(result, BTP)


COST = "- limit: {{requests: 5, unit: Hour}}\n  cost: {{{cost}}}"


@pytest.mark.parametrize(
    ("cost", "field", "message"),
    [
        (
            "response: {from: Metadata, metadata: {namespace: envoy.lb, key: llm_total_token}}",
            f"{RULE0}.cost.response.metadata.namespace",
            "response cost metadata namespace must be io.envoy.ai_gateway (where the request costs of "
            "llmRequestCosts are written), not envoy.lb",
        ),
        (
            "request: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: llm_total_token}}",
            f"{RULE0}.cost.request.from",
            "a request cost from metadata is not supported (no request-time metadata exists when the request is "
            "admitted): use from: Number",
        ),
    ],
)
def test_costs_that_cannot_be_counted_are_errors_naming_file_resource_and_field(cost: str, field: str, message: str):
    result = compiled(base() + btp(rate_limit(COST.format(cost=cost))))
    err = _only_error(result, BTP)
    assert (err.field, err.message) == (field, message)
    status = dict((c.type, c) for c in result.statuses[BTP])
    assert not status["Accepted"].status and status["Accepted"].message == f"{field}: {message}"
    # Wrong whatever the route: the Gateway is not served without the budget (it was, before).
    _assert_holds_its_gateway(result, BTP)


def test_a_policy_in_error_that_another_policy_beats_everywhere_holds_nothing():
    """Found by review: the newer of two policies on the same route is never applied (the oldest
    wins), yet its error held the Gateway (in Kubernetes mode, left its route out)."""
    route_target = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}"
    metadata_cost = COST.format(cost="request: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: k}}")
    older = btp(rate_limit(TOKENS), name="a-old", target=route_target)
    newer = btp(rate_limit(metadata_cost), name="z-new", target=route_target)
    result = compiled(base() + older + newer)
    assert [e.resource.name for e in result.errors if e.resource is not None] == ["z-new"]  # its own error only
    assert "default/gw" in result.gateways and budgets(result)  # served, under the older policy's budgets
    # Had it won (it is the older), it would hold the Gateway.
    assert "default/gw" in compiled(base() + newer.replace("z-new", "0-first") + older).failed


UNKNOWN_KEY = "response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: llm_nope}}"
UNKNOWN_KEY_MESSAGE = (
    "response cost 'llm_nope' is not a request cost of AIGatewayRoute default/r (its llmRequestCosts or "
    "the GatewayConfig's globalLLMRequestCosts; known: llm_input_token, llm_total_token)"
)


def test_a_response_cost_the_targeted_route_does_not_define_is_an_error_of_its_gateway():
    route = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}"
    result = compiled(base() + btp(rate_limit(COST.format(cost=UNKNOWN_KEY)), target=route))
    err = _only_error(result, BTP)
    assert (err.field, err.message) == (f"{RULE0}.cost.response.metadata.key", UNKNOWN_KEY_MESSAGE)
    assert "default/gw" in result.failed  # it keeps its last good configuration


def test_a_gateway_wide_budget_charges_nothing_on_a_route_without_the_cost_and_says_so():
    """One route of the Gateway without the cost must not hold every route back: a warning, and the
    budget applies there with nothing charged for the missing cost."""
    result = compiled(base() + btp(rate_limit(COST.format(cost=UNKNOWN_KEY))))
    assert not [e for e in result.errors if e.resource == BTP]
    warned = [d for d in result.diagnostics if not d.is_error and d.resource == BTP]
    assert [(w.field, w.message) for w in warned] == [
        (f"{RULE0}.cost.response.metadata.key", UNKNOWN_KEY_MESSAGE + ": its responses are charged nothing")
    ]
    assert "default/gw" in result.gateways and budgets(result)


def test_a_rate_limit_policy_targeting_a_missing_route_is_an_error_and_every_gateway_keeps_serving():
    missing = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: gone}"
    result = compiled(base() + btp(rate_limit(TOKENS), target=missing))
    err = _only_error(result, BTP)
    assert err.field == "spec.targetRefs[0].name"
    assert err.message == "the HTTPRoute generated for AIGatewayRoute default/gone not found"
    assert "default/gw" in result.gateways and budgets(result) == {}
    # A route that is there but does not validate is said to be invalid, not missing (a platform
    # team's trial: "not found (no AIGatewayRoute of that name)" beside the route's own error).
    invalid = base().replace("  rules:", "  rulez: []\n  rules:", 1)
    route_target = "{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: r}"
    result = compiled(invalid + btp(rate_limit(TOKENS), target=route_target))
    assert _only_error(result, BTP).message.endswith("is invalid (its own errors say why)")


def test_a_model_given_a_second_quota_is_warned_and_its_first_applies():
    """From a rate-limit review: the second entry was dropped without a word (its budgets' ids the
    first's). An error would take the backend out in Kubernetes mode, where the first applied."""
    body = (
        "perModelQuotas: [{modelName: gpt-4o, quota: {defaultBucket: {limit: 100, duration: 1h}}}, "
        "{modelName: other, quota: {defaultBucket: {limit: 1, duration: 1h}}}, "
        "{modelName: gpt-4o, quota: {defaultBucket: {limit: 5, duration: 1m}}}]"
    )
    result = compiled(quota_base() + quota_policy(body))
    assert not result.errors
    [warned] = [d for d in result.diagnostics if d.resource == QP]
    assert warned.field == "spec.perModelQuotas[2].modelName"
    assert warned.message.startswith("ignored: model gpt-4o has a quota already (spec.perModelQuotas[0])")
    # (The backendRef sends gpt-4o, its override: the other model's quota does not apply.)
    assert {b.id: b.limit for b in budgets(result).values()} == {"quota/default/qp/a/model/gpt-4o/default": 100}


def test_a_quota_cost_failing_for_some_usage_is_a_warning_and_the_policy_applies():
    """Found by review: the warning of an expression that fails for some responses made the whole
    policy apply to nothing (its budgets dropped, Accepted=False)."""
    body = "serviceQuota: {costExpression: 'output_tokens - input_tokens', quota: {limit: 100, duration: 1h}}"
    result = compiled(quota_base() + quota_policy(body))
    assert not result.errors
    [warned] = [d for d in result.diagnostics if d.resource == QP]
    assert warned.field == "spec.serviceQuota.costExpression" and "on a response with" in warned.message
    assert budgets(result) != {}
    assert {c.type: c.status for c in result.statuses[QP]}["Accepted"] is True


@pytest.mark.parametrize(
    ("body", "target", "field", "message"),
    [
        (
            "serviceQuota: {quota: {limit: 1, duration: 1h}}",
            "gone",
            "spec.targetRefs[0].name",
            "AIServiceBackend default/gone not found",
        ),
        (
            "serviceQuota: {costExpression: 'total_tokens +', quota: {limit: 1, duration: 1h}}",
            "a",
            "spec.serviceQuota.costExpression",
            "invalid CEL expression: does not compile: it ends after 'total_tokens +' where a value is expected",
        ),
        (
            "perModelQuotas: [{modelName: gpt-4o, quota: {costExpression: '1.5', "
            "defaultBucket: {limit: 1, duration: 1h}}}]",
            "a",
            "spec.perModelQuotas[0].quota.costExpression",
            "invalid CEL expression",
        ),
        (
            "serviceQuota: {quota: {limit: 0, duration: 1h}}",
            "a",
            "spec.serviceQuota.quota.limit",
            "Input should be greater than 0",
        ),
        (
            "serviceQuota: {quota: {limit: 1, duration: 1 fortnight}}",
            "a",
            "spec.serviceQuota.quota.duration",
            "invalid quota duration '1 fortnight' (expected <n>s, <n>m, <n>h, <n>d, <n>w or <n>mo, e.g. 1h, 1w, 1mo)",
        ),
        (
            "perModelQuotas: [{modelName: m, quota: {bucketRules: [{clientSelectors: "
            "[{sourceCIDR: {value: 10.0.0.0/8}}], quota: {limit: 1, duration: 1h}}]}}]",
            "a",
            "spec.perModelQuotas[0].quota.bucketRules[0].clientSelectors",
            "QuotaPolicy bucket rules select clients by headers only",
        ),
    ],
)
def test_bad_quota_policies_are_errors_naming_file_resource_and_field(body: str, target: str, field: str, message: str):
    result = compiled(quota_base() + quota_policy(body, target=target))
    err = _only_error(result, QP)
    assert err.field == field and message in err.message, str(err)
    status = dict((c.type, c) for c in result.statuses[QP])
    assert not status["Accepted"].status
    if field.startswith("spec.targetRefs"):  # a target that is not there: nothing is served without it
        assert "default/gw" in result.gateways and budgets(result) == {}
    else:
        # Whether it does not validate or the policy checks reject it (its cost expression), the
        # Gateway of the backend it targets is held, as for any object it is built from: the backend
        # is not served without its quota. (The checks' rejection was served without, before.)
        _assert_holds_its_gateway(result, QP)
