"""BackendTrafficPolicy rateLimit.local: compiled to token buckets (compile/local_rate_limits.py) and
rendered as Envoy Gateway renders them for Envoy's local_ratelimit filter (xds/local_rate_limits.py):
on every route of the rules the policy applies to, the listener's filter only where some rule has
one, and the limited reply in the client's API shape; what a local bucket cannot do is said."""

from __future__ import annotations

from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from aigw_xds.compile import ir
from aigw_xds.keys import ResourceKey
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import BuildSettings, build_fleet
from aigw_xds.xds.local_rate_limits import LOCAL_RATE_LIMIT_FILTER_NAME
from tests.unit.test_traffic_policy import base, compiled, policy, routes_of

POLICY = ResourceKey("BackendTrafficPolicy", "default", "btp")
LOCAL = """
rateLimit:
  type: Local
  local:
    rules:
      - limit: {requests: 10, unit: Minute}
      - clientSelectors:
          - headers:
              - {name: X-User, value: alice}
              - {name: x-tier, type: RegularExpression, value: "gold|silver", invert: true}
            methods: [{value: POST}, {value: PUT}]
          - path: {type: PathPrefix, value: /v1/chat/}
        limit: {requests: 2, unit: Hour}
      - clientSelectors: [{headers: [{name: x-team, type: Distinct}], sourceCIDR: {value: 10.1.2.3/8, type: Distinct}}]
        limit: {requests: 3, unit: Day}
"""


def _manager(result) -> hcm_pb2.HttpConnectionManager:
    fleet = build_fleet(result.gateways["default/gw"], BuildSettings())
    [listener] = fleet.messages(type_urls.LISTENER).values()
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return manager


def _listener_config(result) -> local_rate_limit_pb2.LocalRateLimit:
    [limiting] = [f for f in _manager(result).http_filters if f.name == LOCAL_RATE_LIMIT_FILTER_NAME]
    config = local_rate_limit_pb2.LocalRateLimit()
    limiting.typed_config.Unpack(config)
    return config


def test_the_rules_compile_to_a_default_bucket_and_one_bucket_per_selected_rule():
    result = compiled(base() + policy(LOCAL))
    assert result.errors == []
    [warned] = [d for d in result.diagnostics if d.resource == POLICY]
    assert warned.field == "spec.rateLimit.local.rules[2].clientSelectors"
    assert warned.message.startswith("the requests this rule picks take a token of the default limit too")
    [rule] = result.gateways["default/gw"].rules
    assert rule.traffic is not None
    assert rule.traffic.local_rate_limit == ir.LocalRateLimit(
        default=(10, 60),
        rules=(
            ir.LimitRule(
                2,
                3600,
                headers=(
                    ir.LimitHeader("x-user", "Exact", "alice"),
                    ir.LimitHeader("x-tier", "RegularExpression", "gold|silver", invert=True),
                ),
                methods=((("POST", "PUT"), False),),
                paths=(ir.LimitPath("PathPrefix", "/v1/chat/"),),
            ),
            ir.LimitRule(3, 86400, headers=(ir.LimitHeader("x-team", "Distinct"),), sources=(("10.0.0.0/8", True),)),
        ),
    )


def test_every_route_of_a_match_makes_the_descriptors_of_the_buckets_the_listener_holds():
    """One bucket per rule of the policy and per match, shared by every route the match makes (each
    route class of the rule: a client cannot take more by switching class)."""
    result = compiled(base() + policy(LOCAL))
    routes = routes_of(result)
    assert len(routes) >= 2
    key = "default/r/rule/0/match/0"
    assert all(r.route.rate_limits == routes[0].route.rate_limits for r in routes)
    selected, distinct, default = routes[0].route.rate_limits
    config = _listener_config(result)
    assert (config.token_bucket.max_tokens, config.token_bucket.fill_interval.seconds) == (2**32 - 1, 1)
    assert not config.always_consume_default_token_bucket.value  # a request's matched buckets only
    assert config.filter_enforced.default_value.numerator == 100
    first, second, third = config.descriptors
    # The selected rule: its key, then a header_value_match per condition (an inverted one expects no match).
    kinds = [(a.WhichOneof("action_specifier"), a.header_value_match.expect_match.value) for a in selected.actions]
    assert (
        kinds
        == [("generic_key", False)]
        + [("header_value_match", True), ("header_value_match", False)]
        + [("header_value_match", True)] * 2
    )
    assert selected.actions[0].generic_key.descriptor_value == f"{key}#0"
    headers = [a.header_value_match.headers[0] for a in selected.actions[1:]]
    assert [h.name for h in headers] == ["x-user", "x-tier", ":method", ":path"]
    assert headers[2].string_match.safe_regex.regex == "^(POST|PUT)$"
    assert headers[3].string_match.safe_regex.regex == "^/v1/chat([/?].*)?$"  # whole segments, a query after
    assert [(e.key, e.value) for e in first.entries] == [("aigw_limit", f"{key}#0")] + [
        (a.header_value_match.descriptor_key,) * 2 for a in selected.actions[1:]
    ]
    assert (first.token_bucket.max_tokens, first.token_bucket.fill_interval.seconds) == (2, 3600)
    assert [a.WhichOneof("action_specifier") for a in distinct.actions] == [
        "generic_key",
        "request_headers",
        "masked_remote_address",
        "remote_address",
    ]
    assert distinct.actions[2].masked_remote_address.v4_prefix_mask_len.value == 8
    # No value: each team, and each address in 10.0.0.0/8, has a bucket of its own.
    assert [(e.key, e.value) for e in second.entries] == [
        ("aigw_limit", f"{key}#1"),
        (distinct.actions[1].request_headers.descriptor_key, ""),
        ("masked_remote_address", "10.0.0.0/8"),
        ("remote_address", ""),
    ]
    # The default: present when the first rule's conditions do not all hold (the second's sourceCIDR
    # cannot be told apart as a header: its requests take a default token too, warned).
    assert [a.WhichOneof("action_specifier") for a in default.actions] == ["generic_key", "header_value_match"]
    unpicked = default.actions[1].header_value_match
    assert not unpicked.expect_match.value and [h.name for h in unpicked.headers] == [
        "x-user",
        "x-tier",
        ":method",
        ":path",
    ]
    assert unpicked.headers[1].invert_match and unpicked.headers[1].treat_missing_header_as_empty
    assert [e.key for e in third.entries] == ["aigw_limit", unpicked.descriptor_key]
    assert (third.token_bucket.max_tokens, third.token_bucket.fill_interval.seconds) == (10, 60)


def test_the_listener_has_the_filter_before_the_translator_and_the_limited_reply_only_with_a_limit():
    limited = _manager(compiled(base() + policy(LOCAL)))
    names = [f.name for f in limited.http_filters]
    assert names.index(LOCAL_RATE_LIMIT_FILTER_NAME) < names.index("envoy.filters.http.ext_proc/aigateway")
    assert b"rate_limit_exceeded" in limited.local_reply_config.SerializeToString()
    plain = _manager(compiled(base() + policy("retry: {numRetries: 1}")))
    assert LOCAL_RATE_LIMIT_FILTER_NAME not in [f.name for f in plain.http_filters]
    assert b"rate_limit_exceeded" not in plain.local_reply_config.SerializeToString()


def test_without_a_default_rule_requests_no_rule_selects_are_not_limited():
    body = """
rateLimit:
  local:
    rules: [{clientSelectors: [{headers: [{name: x-user, value: bob}]}], limit: {requests: 1, unit: Second}}]
"""
    result = compiled(base() + policy(body))
    [only] = routes_of(result)[0].route.rate_limits
    assert only.actions[0].generic_key.descriptor_value.endswith("#0")  # no default bucket
    assert len(_listener_config(result).descriptors) == 1


def test_what_envoy_cannot_build_fails_the_policy_naming_the_field():
    body = """
rateLimit:
  local:
    rules:
      - limit: {requests: 10, unit: Hour}
      - limit: {requests: 5, unit: Hour}
      - clientSelectors: [{headers: [{name: x-user, value: bob}]}]
        limit: {requests: 1, unit: Minute}
"""
    result = compiled(base() + policy(body))
    errors = {d.field: d.message for d in result.errors if d.resource == POLICY}
    assert errors == {
        "spec.rateLimit.local.rules[1].clientSelectors": (
            "a second rule without clientSelectors (rules[0] is the default limit): give it clientSelectors, "
            "or keep one"
        ),
        "spec.rateLimit.local.rules[2].limit.unit": (
            "unit Minute is not a multiple of the default limit's (Hour), which Envoy's local rate limit needs"
        ),
    }
    assert "default/gw" in result.failed


def test_what_a_local_bucket_cannot_do_is_said_and_left_out():
    body = """
rateLimit:
  local:
    rules:
      - clientSelectors: [{headers: [{name: x-user, value: bob}]}]
        limit: {requests: 1, unit: Minute}
        cost: {request: {from: Number, number: 5}}
        shared: true
      - clientSelectors: [{headers: [{name: x-user, value: eve}]}]
        limit: {requests: 1, unit: Minute}
        shadowMode: true
"""
    result = compiled(base() + policy(body))
    assert result.errors == []
    warned = {d.field: d.message for d in result.diagnostics if d.resource == POLICY}
    assert warned == {
        "spec.rateLimit.local.rules[0].cost": (
            "cost is not used: a local rate limit counts requests: each takes one token"
        ),
        "spec.rateLimit.local.rules[0].shared": (
            "shared is not used: a local rate limit's buckets are each route match's own"
        ),
        "spec.rateLimit.local.rules[1].shadowMode": (
            "shadowMode is not supported for local rate limits: this rule is left out (it limits nothing)"
        ),
    }
    [rule] = result.gateways["default/gw"].rules
    assert rule.traffic is not None and rule.traffic.local_rate_limit is not None
    assert [r.headers[0].value for r in rule.traffic.local_rate_limit.rules] == ["bob"]


def test_the_clients_address_is_the_connections_unless_a_client_traffic_policy_trusts_proxies_in_front():
    """use_remote_address (a client's own x-forwarded-for is not believed), no client address added
    to what providers get; a ClientTrafficPolicy's numTrustedHops believes that many proxies."""
    manager = _manager(compiled(base()))
    assert manager.use_remote_address.value and manager.skip_xff_append and manager.xff_num_trusted_hops == 0
    trusting = """
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {name: lb, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  clientIPDetection: {xForwardedFor: {numTrustedHops: 2, trustedCIDRs: [10.0.0.0/8]}, customHeader: {name: x-real-ip}}
"""
    result = compiled(base() + trusting)
    assert _manager(result).xff_num_trusted_hops == 2
    warned = {d.field for d in result.diagnostics if d.resource == ResourceKey("ClientTrafficPolicy", "default", "lb")}
    assert warned == {"spec.clientIPDetection.xForwardedFor.trustedCIDRs", "spec.clientIPDetection.customHeader"}
