"""The compile stage: references, defaults, status conditions, errors that name their source."""

from __future__ import annotations

import pytest

from aigw.translator.v1 import config_pb2
from aigw_xds.compile import compile_resources
from aigw_xds.compile.incremental import CompileMemo
from aigw_xds.keys import ResourceKey
from tests.resource_text import api_key, backend, gateway, key_pair, resources, route, tls_secret


def compiled(text: str):
    return compile_resources(resources(text))


def test_rules_backends_and_defaults():
    result = compiled(
        gateway() + route("r", {"m1": "a", "m2": [("a", 0, 3), ("b", 1, 1)]}) + backend("a", 9001) + backend("b", 9002)
    )
    assert result.errors == []
    ir = result.gateways["default/gw"]
    rule0, rule1 = ir.rules
    assert rule0.cluster == "default/r/rule/0" and rule0.timeout_s == 60.0
    assert rule0.matches[0][0].name == "x-ai-eg-model" and rule0.matches[0][0].value == "m1"
    assert [(b.name, b.priority, b.weight) for b in rule1.backends] == [
        ("default/a/route/r/rule/1/ref/0", 0, 3),
        ("default/b/route/r/rule/1/ref/1", 1, 1),
    ]
    assert rule1.backends[0].endpoints[0].address == "127.0.0.1" and rule1.backends[0].endpoints[0].port == 9001
    assert ir.listeners[0].client.buffer_limit == 50 * 1024 * 1024
    schemas = {b.name: (b.schema.name, b.schema.prefix) for b in ir.translator.backends}
    assert schemas["default/a/route/r/rule/0/ref/0"] == ("OpenAI", "v1")
    assert [m.id for m in ir.translator.models] == ["m1", "m2"]
    assert ir.translator.models[0].owned_by == "Envoy AI Gateway"


def test_dangling_backend_reference_fails_the_gateway_with_a_precise_error():
    result = compiled(gateway() + route("r", {"m": "missing"}))
    assert "default/gw" in result.failed and "default/gw" not in result.gateways
    [err] = result.errors
    assert err.resource == ResourceKey("AIGatewayRoute", "default", "r")
    assert err.field == "spec.rules[0].backendRefs[0].name"
    assert "AIServiceBackend default/missing not found" in err.message
    assert dict((c.type, c.status) for c in result.statuses[err.resource])["ResolvedRefs"] is False


def test_other_gateways_keep_compiling_when_one_fails():
    text = (
        gateway("good", port=8080)
        + route("r1", {"m": "b"}, gateway_name="good")
        + backend("b", 9000)
        + gateway("bad", port=8081).split("---", 1)[1].join(["---", ""])
        + route("r2", {"m": "nope"}, gateway_name="bad")
    )
    result = compiled(text)
    assert list(result.gateways) == ["default/good"]
    assert list(result.failed) == ["default/bad"]


def test_secret_is_resolved_into_translator_config_only():
    result = compiled(gateway() + route("r", {"m": "b"}) + backend("b", 9000) + api_key("b", "sk-live-123"))
    [b] = result.gateways["default/gw"].translator.backends
    assert b.auth.api_key.key == "sk-live-123"


def test_no_secret_in_the_repr_of_a_compile_result():
    https = "    - {name: https, protocol: HTTPS, port: 8443, tls: {certificateRefs: [{name: cert}]}}"
    cert, key = key_pair()
    text = gateway(extra_listeners=https) + route("r", {"m": "b"}) + backend("b", 9000) + api_key("b", "sk-live-123")
    result = compiled(text + tls_secret())
    gateway_ir = result.gateways["default/gw"]
    assert gateway_ir.listeners[1].certificates[0].key_pem == key
    shown = repr(result)
    assert repr(cert) in shown and "default/r/rule/0" in shown
    assert key.splitlines()[1] not in shown and "sk-live-123" not in shown
    assert gateway_ir.translator.seal_key.hex() not in shown


def test_missing_secret_and_missing_key():
    text = gateway() + route("r", {"m": "b"}) + backend("b", 9000) + api_key("b").replace("apiKey: sk-test", "other: x")
    [err] = compiled(text).errors
    assert err.resource == ResourceKey("BackendSecurityPolicy", "default", "b-key")
    assert err.field == "spec.apiKey.secretRef.name" and "has no key 'apiKey'" in err.message


TLS_POLICY = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: b-tls}
spec:
  targetRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: bb}]
  validation: {wellKnownCACertificates: System, hostname: api.example.com}
"""


@pytest.mark.parametrize(
    ("policy", "key", "missing"),
    [
        (api_key("b").replace("name: b}", "name: bb}"), ("BackendSecurityPolicy", "b-key"), "AIServiceBackend"),
        (TLS_POLICY, ("BackendTLSPolicy", "b-tls"), "Backend"),
    ],
)
def test_a_backend_policy_naming_a_target_not_there_is_an_error_on_that_field(policy, key, missing):
    """From a platform review: such a policy applied to nothing without a word, and the backend it
    was meant for went without its credential (or its TLS). It still compiles the rest (the policy
    applies to its other targets); the serving side keeps what was built with it (controller)."""
    result = compiled(gateway() + route("r", {"m": "b"}) + backend("b", 9000) + policy)
    [err] = result.errors
    assert err.resource == ResourceKey(key[0], "default", key[1])
    assert err.field == "spec.targetRefs[0].name" and f"{missing} default/bb not found" in err.message
    assert "default/gw" in result.gateways and result.mistargeted == {err.resource}
    assert {c.type: c.reason for c in result.statuses[err.resource]}["Accepted"] == "TargetNotFound"


@pytest.mark.parametrize("value", ['""', "'  '"])
def test_an_empty_key_is_an_error_as_a_missing_one_is(value):
    """A provider refuses every request with an empty key: refused here, naming it."""
    text = gateway() + route("r", {"m": "b"}) + backend("b", 9000) + api_key("b").replace("sk-test", value)
    [err] = compiled(text).errors
    assert err.resource == ResourceKey("BackendSecurityPolicy", "default", "b-key")
    assert err.field == "spec.apiKey.secretRef.name" and "key 'apiKey' is empty" in err.message


def test_a_gateway_none_of_whose_listeners_can_be_served_is_an_error_not_an_empty_gateway():
    """Only a UDP listener: served, the Gateway's Envoys would lose every listener while its status
    said Accepted. It is an error (the last good configuration keeps serving), Accepted False with
    the Gateway API's ListenersNotValid; a skipped listener beside a served one stays a warning."""
    text = gateway().replace("protocol: HTTP", "protocol: UDP") + route("r", {"m": "b"}) + backend("b", 9000)
    result = compiled(text + api_key("b"))
    errors = [e for e in result.errors if e.field == "spec.listeners"]
    assert errors and "no listener is HTTP or HTTPS" in errors[0].message
    assert "default/gw" not in result.gateways
    both = gateway(extra_listeners="    - {name: udp, protocol: UDP, port: 9999}")
    served = compiled(both + route("r", {"m": "b"}) + backend("b", 9000) + api_key("b"))
    assert served.errors == [] and "default/gw" in served.gateways


def test_two_security_policies_on_one_backend_is_an_error():
    second = api_key("b").replace("name: b-key,", "name: b-key2,", 1)
    result = compiled(gateway() + route("r", {"m": "b"}) + backend("b", 9000) + api_key("b") + second)
    assert any("more than one BackendSecurityPolicy" in e.message for e in result.errors)
    assert "default/gw" in result.failed


def test_cross_namespace_reference_needs_a_reference_grant():
    base = (
        gateway()
        + route("r", {"m": "b"}).replace("- {name: b,", "- {name: b, namespace: other,")
        + backend("b", 9000, namespace="other")
    )
    denied = compiled(base)
    assert any("needs a ReferenceGrant in namespace other" in e.message for e in denied.errors)
    # Gateway API's reason (found by review: it had been overwritten with BackendNotUsable).
    resolved = {c.type: c for c in denied.statuses[ResourceKey("AIGatewayRoute", "default", "r")]}["ResolvedRefs"]
    assert (resolved.status, resolved.reason) == (False, "RefNotPermitted") and "ReferenceGrant" in resolved.message
    grant = """
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow, namespace: other}
spec:
  from: [{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, namespace: default}]
  to: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend}]
"""
    allowed = compiled(base + grant)
    assert allowed.errors == [] and "default/gw" in allowed.gateways


def test_route_in_another_namespace_needs_allowed_routes():
    text = (
        gateway()
        + route("r", {"m": "b"}, namespace="team").replace("- {name: gw,", "- {name: gw, namespace: default,")
        + backend("b", 9000, namespace="team")
    )
    result = compiled(text)
    assert result.gateways["default/gw"].rules == ()
    assert (
        dict((c.type, c.reason) for c in result.statuses[ResourceKey("AIGatewayRoute", "team", "r")])["Accepted"]
        == "NotAllowedByListeners"
    )
    opened = compiled(text.replace("port: 8080}", "port: 8080, allowedRoutes: {namespaces: {from: All}}}"))
    assert len(opened.gateways["default/gw"].rules) == 1


def test_listener_port_conflict():
    extra = "    - {name: https, protocol: HTTPS, port: 8080, tls: {certificateRefs: [{name: cert}]}}"
    result = compiled(gateway(extra_listeners=extra))
    assert any(e.field == "spec.listeners[1].port" and "both HTTP and HTTPS" in e.message for e in result.errors)


def test_unattached_route_is_a_warning_with_status():
    result = compiled(gateway() + route("r", {"m": "b"}, gateway_name="elsewhere") + backend("b", 1))
    assert result.errors == []
    key = ResourceKey("AIGatewayRoute", "default", "r")
    assert any(d.resource == key and "not attached" in d.message for d in result.diagnostics)
    assert dict((c.type, c.status) for c in result.statuses[key])["Accepted"] is False


def test_what_validate_passes_but_serves_nothing_is_warned_about():
    """From a new-user trial: a parentRef naming a Gateway that does not exist (a typo) and a rule
    whose every backendRef has weight 0 served nothing, and validate said little or nothing."""
    typo = compiled(gateway() + route("r", {"m": "b"}, gateway_name="gww") + backend("b", 1))
    [warned] = [d for d in typo.diagnostics if d.resource == ResourceKey("AIGatewayRoute", "default", "r")]
    assert warned.message == "not attached to any Gateway (parentRefs: default/gww; did you mean default/gw?)"
    weightless = compiled(gateway() + route("r", {"m": [("b", 0, 0)]}) + backend("b", 1))
    [warned] = [d for d in weightless.diagnostics if d.field == "spec.rules[0].backendRefs"]
    assert not warned.is_error and "every backendRef has weight 0" in warned.message and "503" in warned.message


def test_costs_and_cel_validation():
    costs = """  llmRequestCosts:
    - {metadataKey: llm_total_token, type: TotalToken}
    - {metadataKey: weighted, type: CEL, cel: "input_tokens * uint(2) + output_tokens"}
"""
    result = compiled(gateway() + route("r", {"m": "b"}, extra=costs) + backend("b", 1))
    [route_costs] = result.gateways["default/gw"].translator.route_costs
    assert route_costs.route_name == "default/r"
    assert [(c.metadata_key, c.type) for c in route_costs.costs] == [
        ("llm_total_token", config_pb2.LLMRequestCost.TOTAL_TOKEN),
        ("weighted", config_pb2.LLMRequestCost.CEL),
    ]
    bad = compiled(gateway() + route("r", {"m": "b"}, extra=costs.replace("uint(2)", "nonsense(")) + backend("b", 1))
    [err] = bad.errors
    assert err.field == "spec.llmRequestCosts[1].cel" and "invalid CEL" in err.message


def test_timeouts_priorities_and_stream_idle_timeout():
    text = (
        gateway()
        + """
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules:
    - timeouts: {request: 30s}
      streamIdleTimeout: 5s
      backendRefs: [{name: a, priority: 0}, {name: b, priority: 1}, {name: c, weight: 0}]
"""
        + backend("a", 1)
        + backend("b", 2)
        + backend("c", 3)
    )
    [rule] = compiled(text).gateways["default/gw"].rules
    assert rule.timeout_s == 30 and rule.idle_timeout_s == 5 and rule.priorities == 2
    assert [b.name.split("/")[1] for b in rule.backends] == ["a", "b"]  # weight 0 is left out


def test_client_traffic_policy_sets_the_buffer_limit_and_gateway_config_costs():
    text = (
        gateway()
        + route("r", {"m": "b"})
        + backend("b", 1)
        + """
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {name: buf}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  connection: {bufferLimit: 1Mi}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: GatewayConfig
metadata: {name: cfg}
spec:
  globalLLMRequestCosts: [{metadataKey: llm_input_token, type: InputToken}]
"""
    )
    text = text.replace(
        "metadata: {name: gw, namespace: default}",
        "metadata: {name: gw, namespace: default, annotations: {aigateway.envoyproxy.io/gateway-config: cfg}}",
    )
    ir = compiled(text).gateways["default/gw"]
    assert ir.listeners[0].client.buffer_limit == 1024 * 1024
    assert [c.metadata_key for c in ir.translator.global_costs] == ["llm_input_token"]


def test_hostnames_make_virtual_hosts():
    text = (
        gateway()
        + route("r", {"m": "b"}, extra="  hostnames: [api.example.com]\n")
        + route("all", {"n": "b"})
        + backend("b", 1)
    )
    listener = compiled(text).gateways["default/gw"].listeners[0]
    vhosts = {v.domains: [r.route for r in v.rules] for v in listener.virtual_hosts}
    assert vhosts == {("api.example.com",): ["default/all", "default/r"], ("*",): ["default/all"]}


@pytest.mark.parametrize("run_length", [None, 1, 10**9])
def test_a_route_is_in_the_virtual_hosts_of_the_listeners_it_attaches_to_only(run_length):
    """Two ports, routes naming one listener each (sectionName), some alike: each port's virtual
    host holds the routes attached to it, whether routes are merged in runs of one, of all, or
    compiled without a memo."""
    text = gateway(extra_listeners="    - {name: other, protocol: HTTP, port: 8081}\n")
    for i in range(6):
        section = "http" if i % 3 else "other"
        text += route(f"r{i}", {f"m{i}": "b"}).replace(
            "group: gateway.networking.k8s.io}", f"group: gateway.networking.k8s.io, sectionName: {section}}}"
        )
    text += backend("b", 1)
    memo = CompileMemo(run_length=run_length) if run_length else None
    gw = compile_resources(resources(text), memo=memo).gateways["default/gw"]
    routes = {listener.port: [r.route for v in listener.virtual_hosts for r in v.rules] for listener in gw.listeners}
    assert routes == {
        8080: ["default/r1", "default/r2", "default/r4", "default/r5"],
        8081: ["default/r0", "default/r3"],
    }


@pytest.mark.parametrize("run_length", [None, 1, 10**9])
def test_listeners_sharing_a_port_hold_their_own_routes_by_hostname(run_length):
    """Gateway API's rule: a request is the listener's with the most specific hostname covering its
    host. On one port, a route attached to the listener of b.example.com is not reached through
    another host, nor one attached to the listener of no hostname through b.example.com (before, a
    route without hostnames was in every virtual host of its port)."""
    listeners = (
        "    - {name: b, protocol: HTTP, port: 8080, hostname: b.example.com}\n"
        "    - {name: wild, protocol: HTTP, port: 8080, hostname: '*.example.com'}\n"
    )
    text = gateway(extra_listeners=listeners)
    for name, section in (("on-any", "http"), ("on-b", "b"), ("on-wild", "wild"), ("everywhere", "")):
        sectioned = f", sectionName: {section}}}" if section else "}"
        text += route(name, {f"m-{name}": "x"}).replace(
            "group: gateway.networking.k8s.io}", f"group: gateway.networking.k8s.io{sectioned}"
        )
    text += backend("x", 1)
    memo = CompileMemo(run_length=run_length) if run_length else None
    [listener] = compile_resources(resources(text), memo=memo).gateways["default/gw"].listeners
    vhosts = {v.domains[0]: sorted({r.route for r in v.rules}) for v in listener.virtual_hosts}
    assert vhosts == {
        "b.example.com": ["default/everywhere", "default/on-b"],
        "*.example.com": ["default/everywhere", "default/on-wild"],
        "*": ["default/everywhere", "default/on-any"],
    }
    # /v1/models lists a route's models on the hosts of its listeners when each has one.
    gw = compile_resources(resources(text)).gateways["default/gw"]
    hosts = {m.id: list(m.hosts) for m in gw.translator.models}
    assert hosts == {"m-on-any": [], "m-on-b": ["b.example.com"], "m-on-wild": ["*.example.com"], "m-everywhere": []}


def test_a_route_hostname_broader_than_its_listeners_is_served_at_the_listeners_alone():
    """Gateway API intersects them: no virtual host for what the listener does not take."""
    text = gateway().replace(
        "{name: http, protocol: HTTP, port: 8080}", "{name: http, protocol: HTTP, port: 8080, hostname: gw.example.com}"
    )
    text += route("r", {"m": "x"}, extra="  hostnames: ['*.example.com']\n") + backend("x", 1)
    [listener] = compile_resources(resources(text)).gateways["default/gw"].listeners
    assert {v.domains[0]: [r.route for r in v.rules] for v in listener.virtual_hosts} == {
        "gw.example.com": ["default/r"]
    }


def test_compile_is_deterministic():
    text = gateway() + route("r", {"m1": "a", "m2": "b"}) + backend("a", 1) + backend("b", 2) + api_key("a")
    one, two = compiled(text).gateways["default/gw"], compiled(text).gateways["default/gw"]
    assert one == two
    assert one.translator.SerializeToString(deterministic=True) == two.translator.SerializeToString(deterministic=True)


def test_schema_prefix_at_the_root_is_kept():
    """`prefix: /` (an OpenAI-compatible API at the root) must not fall back to the default v1."""
    text = gateway() + route("r", {"m1": "a", "m2": "b", "m3": "c"})
    for name, prefix in (("a", "/"), ("b", ""), ("c", "/openai/v1/")):
        text += backend(name, 9001).replace("schema: {name: OpenAI}", f'schema: {{name: OpenAI, prefix: "{prefix}"}}')
    result = compiled(text)
    assert result.errors == []
    prefixes = {b.name.split("/")[1]: b.schema.prefix for b in result.gateways["default/gw"].translator.backends}
    assert prefixes == {"a": "/", "b": "/", "c": "openai/v1"}


def test_seal_key_follows_the_credentials_only():
    """Retry attempts seal records with this key: an edit that touches no credential keeps it (a
    request retried across a hot reload still unseals), a rotated key changes it."""

    def seal_key(models: dict[str, str], key: str) -> bytes:
        result = compiled(gateway() + route("r", models) + backend("a", 9001) + api_key("a", key))
        assert result.errors == []
        return result.gateways["default/gw"].translator.seal_key

    first = seal_key({"m1": "a"}, "sk-1")
    assert len(first) == 32
    assert seal_key({"m1": "a"}, "sk-1") == first
    assert seal_key({"m1": "a", "m2": "a"}, "sk-1") == first
    assert seal_key({"m1": "a"}, "sk-2") != first
    assert b"sk-1" not in first


def test_seal_key_of_a_fleet_without_credentials_needs_the_process_secret():
    """Overrides only: the records hold client credentials, and the config holds nothing secret, so
    the key must depend on the control plane's secret, not on names anyone can read."""
    text = gateway() + route("r", {"m1": "a"}) + backend("a", 9001)
    key_one = compile_resources(resources(text), seal_secret=b"1" * 32).gateways["default/gw"].translator.seal_key
    key_two = compile_resources(resources(text), seal_secret=b"2" * 32).gateways["default/gw"].translator.seal_key
    assert key_one != key_two
    with_key = gateway() + route("r", {"m1": "a"}) + backend("a", 9001) + api_key("a", "sk-1")
    one = compile_resources(resources(with_key), seal_secret=b"1" * 32).gateways["default/gw"].translator.seal_key
    two = compile_resources(resources(with_key), seal_secret=b"2" * 32).gateways["default/gw"].translator.seal_key
    assert one == two  # credentials make it secret, and the same on every replica


@pytest.mark.parametrize(("name", "warned"), [("x-ai-eg-modle", True), ("x-ai-gw-model", True), ("x-tenant", False)])
def test_a_header_match_named_almost_as_the_model_header_is_warned(name, warned):
    """A misspelt model header makes a rule no request can match (run's table showed it as taking
    any model); a header of another name is a match like any other."""
    text = gateway() + route("r", {"m": "b"}).replace("name: x-ai-eg-model", f"name: {name}") + backend("b", 9000)
    result = compiled(text + api_key("b"))
    found = [d for d in result.diagnostics if d.field == "spec.rules[0].matches[0].headers[0].name"]
    assert result.errors == [] and bool(found) == warned
    if warned:
        assert "is not the model header x-ai-eg-model (misspelt?)" in found[0].message


def test_a_gateway_whose_own_edit_is_invalid_says_so_and_not_that_it_concerns_another(tmp_path):
    """A new-user trial read "(they concern ..., Gateway default/basic, ...)" on that very Gateway."""
    from aigw_xds.compile import compile_resources as compile_all
    from aigw_xds.sources.files import FileSource

    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "b"}) + backend("b", 9000) + api_key("b"))
    source = FileSource(tmp_path)
    assert compile_all(source.load()).errors == []
    (tmp_path / "gw.yaml").write_text(
        gateway().replace("port: 8080", "port: eighty") + route("r", {"m": "b"}) + backend("b", 9000) + api_key("b")
    )
    [message] = [d.message for d in compile_all(source.load()).errors if "not served" in d.message]
    assert "(they concern Gateway default/gw itself)" in message
