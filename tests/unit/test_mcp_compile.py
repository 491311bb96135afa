"""MCPRoute compiled: the Envoy route to the MCP proxy, the translator's entry for its backends, and
the errors and warnings that name what is wrong."""

from __future__ import annotations

import json

import pytest

from aigw.translator.v1 import config_pb2
from aigw_xds.compile import CompileResult, compile_resources
from aigw_xds.diagnostics import Diagnostic
from aigw_xds.keys import ResourceKey
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import BuildSettings, build_fleet
from tests.resource_text import gateway, resources

MCP_BACKENDS = """
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: one, namespace: default}
spec: {endpoints: [{ip: {address: 127.0.0.1, port: 19090}}]}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: two, namespace: default}
spec: {endpoints: [{fqdn: {hostname: mcp.example.com, port: 443}}]}
---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: BackendTLSPolicy
metadata: {name: two-tls, namespace: default}
spec:
  targetRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: two}]
  validation: {wellKnownCACertificates: System, hostname: mcp.example.com}
---
apiVersion: v1
kind: Secret
metadata: {name: two-key, namespace: default}
stringData: {apiKey: sk-two-secret}
"""


def mcp_route(name: str = "tools", spec_extra: str = "", backends: str = "", section: str = "") -> str:
    """An MCPRoute of the Gateway default/gw (on its listener `section`, if given)."""
    parent = f"{{name: gw, sectionName: {section}}}" if section else "{name: gw}"
    backends = (
        backends
        or """
    - name: one
      kind: Backend
      group: gateway.envoyproxy.io
      toolSelector: {include: [echo], excludeRegex: ["^danger.*"]}
      securityPolicy: {apiKey: {inline: sk-one-inline}}
      forwardHeaders: [{name: x-tenant, backendHeader: x-team}]
    - name: two
      kind: Backend
      group: gateway.envoyproxy.io
      path: /
      securityPolicy: {apiKey: {secretRef: {name: two-key}, header: x-api-key}}
"""
    )
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: MCPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{parent}]{spec_extra}
  backendRefs:{backends}"""


def test_an_mcp_route_becomes_a_route_to_the_proxy_and_the_translators_backends():
    result = compile_resources(resources(gateway() + mcp_route() + MCP_BACKENDS))
    assert result.errors == [] and [d for d in result.diagnostics if d.resource and d.resource.kind == "MCPRoute"] == []
    gw = result.gateways["default/gw"]
    [entry] = gw.translator.mcp_routes
    one, two = entry.backends
    assert entry.name == "default/tools"
    assert (one.name, one.url, one.HasField("tls")) == ("one", "http://127.0.0.1:19090/mcp", False)
    assert list(one.tool_selector.include) == ["echo"] and list(one.tool_selector.exclude_regex) == ["^danger.*"]
    assert (one.api_key.key, one.api_key.header) == ("sk-one-inline", "Authorization")
    assert [(h.name, h.backend_header) for h in one.forward_headers] == [("x-tenant", "x-team")]
    assert (two.url, two.tls.sni, two.tls.ca_pem) == ("https://mcp.example.com:443/", "mcp.example.com", "")
    assert (two.api_key.key, two.api_key.header) == ("sk-two-secret", "x-api-key")
    statuses = dict((c.type, c.status) for c in result.statuses[ResourceKey("MCPRoute", "default", "tools")])
    assert statuses["Accepted"] is True


def test_the_envoy_route_names_fleet_and_route_over_the_clients_and_carries_no_key():
    result = compile_resources(resources(gateway() + mcp_route() + MCP_BACKENDS))
    built = build_fleet(result.gateways["default/gw"], BuildSettings(mcp_address="127.0.0.1:9999"))
    [routes] = built.messages(type_urls.ROUTE).values()
    first = routes.virtual_hosts[0].routes[0]
    assert first.match.path == "/mcp" and first.route.cluster == "aigw-mcp-proxy"
    assert first.route.retry_policy.num_retries.value == 0 and first.route.timeout.ToSeconds() == 1800
    added = {h.header.key: h.header.value for h in first.request_headers_to_add}
    assert added == {"x-aigw-mcp-fleet": "default/gw", "x-aigw-mcp-route": "default/tools"}
    assert all(h.append_action == h.OVERWRITE_IF_EXISTS_OR_ADD for h in first.request_headers_to_add)
    assert set(first.typed_per_filter_config) == {
        "envoy.filters.http.ext_proc/aigateway",
        "aigw.request_body",
        "aigw.response_usage",
    }
    proxy = built.messages(type_urls.CLUSTER)["aigw-mcp-proxy"]
    address = proxy.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (address.address, address.port_value) == ("127.0.0.1", 9999)
    everything = b"".join(m.SerializeToString() for t in built.by_type for m in built.messages(t).values())
    assert b"sk-one-inline" not in everything and b"sk-two-secret" not in everything


def test_a_fleet_without_mcp_routes_has_no_proxy_cluster():
    result = compile_resources(resources(gateway()))
    built = build_fleet(result.gateways["default/gw"], BuildSettings())
    assert "aigw-mcp-proxy" not in built.by_type[type_urls.CLUSTER]


def test_mcp_route_hostnames_put_it_in_their_virtual_hosts_only():
    text = gateway() + mcp_route(spec_extra="\n  hostnames: [tools.example.com]") + MCP_BACKENDS
    gw = compile_resources(resources(text)).gateways["default/gw"]
    hosts = {v.domains: [m.name for m in v.mcp_routes] for v in gw.listeners[0].virtual_hosts}
    assert hosts == {("tools.example.com",): ["default/tools"], ("*",): []}


def test_a_missing_backend_or_secret_is_an_error_on_its_field_and_the_gateway_is_held():
    result = compile_resources(resources(gateway() + mcp_route() + MCP_BACKENDS.replace("name: two-key", "name: x")))
    assert "default/gw" in result.failed
    [err] = result.errors[:1]
    assert err.resource == ResourceKey("MCPRoute", "default", "tools")
    assert err.field == "spec.backendRefs[1].securityPolicy.apiKey.secretRef.name"
    result = compile_resources(resources(gateway() + mcp_route() + MCP_BACKENDS.replace("name: one,", "name: onee,")))
    assert "default/gw" in result.failed
    first = result.errors[0]
    assert first.field == "spec.backendRefs[0].name" and "Backend default/one not found" in first.message
    assert first.message.endswith("; did you mean onee?")


def test_a_backend_selector_is_the_proxys_rules_of_cel_alone():
    """Envoy AI Gateway's defaults: a rule allows, the default denies."""
    selector = """
  backendSelector:
    rules:
      - cel: 'request.mcp.backend in request.auth.jwt.claims.backends'
      - {cel: 'request.headers["x-tier"] == "free"', action: Deny}
      - {}"""
    result = compile_resources(resources(gateway() + mcp_route(spec_extra=selector) + MCP_BACKENDS))
    assert result.errors == [] and _route_diagnostics(result) == []
    [entry] = result.gateways["default/gw"].translator.mcp_routes
    assert entry.backend_selector == config_pb2.MCPAuthorization(
        rules=[
            config_pb2.MCPAuthorizationRule(cel="request.mcp.backend in request.auth.jwt.claims.backends"),
            config_pb2.MCPAuthorizationRule(cel='request.headers["x-tier"] == "free"', deny=True),
            config_pb2.MCPAuthorizationRule(),
        ]
    )
    allowing = "\n  backendSelector: {defaultAction: Allow}"
    result = compile_resources(resources(gateway() + mcp_route(spec_extra=allowing) + MCP_BACKENDS))
    [entry] = result.gateways["default/gw"].translator.mcp_routes
    assert entry.backend_selector == config_pb2.MCPAuthorization(default_allow=True)
    result = compile_resources(resources(gateway() + mcp_route() + MCP_BACKENDS))
    [entry] = result.gateways["default/gw"].translator.mcp_routes
    assert not entry.HasField("backend_selector")


@pytest.mark.parametrize(
    ("cel", "said"),
    [
        ("request.mcp.backendd == 'a'", "has no field 'backendd'"),
        ("request.mcp.backend ==", "it does not parse"),
    ],
)
def test_a_selector_rule_that_is_no_rule_is_an_error_on_its_field(cel: str, said: str):
    selector = f"\n  backendSelector:\n    rules:\n      - cel: {json.dumps(cel)}\n      - action: Deny"
    result = compile_resources(resources(gateway() + mcp_route(spec_extra=selector) + MCP_BACKENDS))
    assert "default/gw" in result.failed
    [err] = result.errors
    assert err.resource == ResourceKey("MCPRoute", "default", "tools")
    assert err.field == "spec.backendSelector.rules[0].cel" and said in err.message, err.message


@pytest.mark.parametrize(
    ("cel", "read"),
    [
        ('request.mcp.tool == "echo"', "request.mcp.tool"),
        ("has(request.mcp.params.arguments)", "request.mcp.params"),
        ('request.mcp.method == "initialize"', "request.mcp.method"),
    ],
)
def test_a_selector_rule_reading_what_a_sessions_start_has_not_is_warned_and_served(cel: str, read: str):
    """Such a rule never sees a tool, a method or arguments (Envoy AI Gateway takes it, its values empty
    too): served as written, with a warning."""
    selector = f"\n  backendSelector:\n    rules:\n      - cel: {json.dumps(cel)}"
    result = compile_resources(resources(gateway() + mcp_route(spec_extra=selector) + MCP_BACKENDS))
    assert result.errors == []
    [warned] = _route_diagnostics(result)
    assert warned.field == "spec.backendSelector.rules[0].cel"
    assert warned.message.startswith(f"{read} is empty when backends are selected"), warned.message
    [entry] = result.gateways["default/gw"].translator.mcp_routes
    assert entry.backend_selector.rules[0].cel == cel


def test_a_selector_that_allows_no_backend_is_warned_about():
    for selector, field in (
        ("{rules: [{action: Deny}]}", "spec.backendSelector.rules"),
        ("{}", "spec.backendSelector.defaultAction"),
    ):
        text = gateway() + mcp_route(spec_extra=f"\n  backendSelector: {selector}") + MCP_BACKENDS
        result = compile_resources(resources(text))
        assert result.errors == []
        [warned] = _route_diagnostics(result)
        assert warned.field == field and "every client's initialize is refused" in warned.message
        assert len(result.gateways["default/gw"].translator.mcp_routes) == 1  # served as written


def _route_diagnostics(result: CompileResult) -> list[Diagnostic]:
    return [d for d in result.diagnostics if d.resource == ResourceKey("MCPRoute", "default", "tools")]


def test_a_route_whose_parent_is_not_there_is_warned_about():
    text = gateway() + mcp_route().replace("parentRefs: [{name: gw}]", "parentRefs: [{name: gw2}]") + MCP_BACKENDS
    result = compile_resources(resources(text))
    [warned] = [d for d in result.diagnostics if d.resource == ResourceKey("MCPRoute", "default", "tools")]
    assert warned.field == "spec.parentRefs" and "did you mean default/gw" in warned.message
    assert ResourceKey("MCPRoute", "default", "tools") in result.orphaned


def test_api_key_needs_exactly_one_source_and_one_place():
    both = mcp_route(
        backends="""
    - name: one
      kind: Backend
      group: gateway.envoyproxy.io
      securityPolicy: {apiKey: {inline: k, secretRef: {name: two-key}}}
"""
    )
    rs = resources(gateway() + both + MCP_BACKENDS)
    assert any("exactly one of secretRef, inline" in d.message for d in rs.diagnostics if d.is_error)
    twice = both.replace("inline: k, secretRef: {name: two-key}", "inline: k, header: a, queryParam: b")
    rs = resources(gateway() + twice + MCP_BACKENDS)
    assert any("at most one of header, queryParam" in d.message for d in rs.diagnostics if d.is_error)


def test_backends_of_another_namespace_or_kind_are_errors():
    other_ns = mcp_route(
        backends="""
    - name: one
      namespace: prod
      kind: Backend
      group: gateway.envoyproxy.io
"""
    )
    result = compile_resources(resources(gateway() + other_ns + MCP_BACKENDS))
    assert [e.field for e in result.errors][:1] == ["spec.backendRefs[0].namespace"]
    other_kind = other_ns.replace("namespace: prod\n      kind: Backend", "kind: AIServiceBackend").replace(
        "group: gateway.envoyproxy.io", "group: aigateway.envoyproxy.io"
    )
    result = compile_resources(resources(gateway() + other_kind + MCP_BACKENDS))
    assert [e.field for e in result.errors][:1] == ["spec.backendRefs[0].kind"]


def test_sessions_are_sealed_with_a_key_of_the_control_planes_secret_not_of_any_credential():
    """A key derived from the MCP servers' keys could be made by anyone holding one (an inline key
    is in the MCPRoute), and rotating one would end every session."""
    text = gateway() + mcp_route() + MCP_BACKENDS
    gw = compile_resources(resources(text), seal_secret=b"process-secret").gateways["default/gw"]
    head = config_pb2.TranslatorConfig.FromString(gw.translator_served[0].data)
    assert [r.name for r in head.mcp_routes] == ["default/tools"] and len(head.mcp_session_key) == 32
    rotated = compile_resources(
        resources(text.replace("sk-two-secret", "sk-two-rotated")), seal_secret=b"process-secret"
    ).gateways["default/gw"]
    assert rotated.translator.mcp_session_key == gw.translator.mcp_session_key
    other = compile_resources(resources(text), seal_secret=b"another-process").gateways["default/gw"]
    assert other.translator.mcp_session_key != gw.translator.mcp_session_key
    # No MCP key changes the fleet's seal key: a fleet without AI credentials keeps its process secret.
    no_mcp = compile_resources(resources(gateway()), seal_secret=b"process-secret").gateways["default/gw"]
    assert gw.translator.seal_key == no_mcp.translator.seal_key
    assert not compile_resources(resources(text)).gateways["default/gw"].translator.mcp_session_key


def test_a_service_backend_is_reached_by_its_cluster_name_and_needs_its_port():
    service = """
---
apiVersion: v1
kind: Service
metadata: {name: search, namespace: default}
spec:
  selector: {app: search}
  ports: [{port: 8080}]
"""
    ref = """
    - name: search
      port: 8080
      path: /api/mcp
"""
    gw = compile_resources(resources(gateway() + mcp_route(backends=ref) + service)).gateways["default/gw"]
    [backend] = gw.translator.mcp_routes[0].backends
    assert backend.url == "http://search.default.svc:8080/api/mcp" and not backend.HasField("tls")
    portless = mcp_route(backends=ref.replace("      port: 8080\n", ""))
    result = compile_resources(resources(gateway() + portless + service))
    assert [(e.field, e.message) for e in result.errors][:1] == [
        ("spec.backendRefs[0].port", "a Service backendRef needs its port")
    ]


def test_a_backend_ref_without_kind_is_a_service_and_the_error_says_how_to_name_a_backend():
    ref = """
    - name: one
"""
    result = compile_resources(resources(gateway() + mcp_route(backends=ref) + MCP_BACKENDS))
    [first] = result.errors[:1]
    assert first.field == "spec.backendRefs[0].name"
    assert "Service default/one not found" in first.message
    assert "set kind: Backend and group: gateway.envoyproxy.io" in first.message


def test_a_path_that_is_not_absolute_is_an_error_naming_the_field():
    """Envoy takes `path: mcp` and matches nothing with it: every client would get a 404."""
    rs = resources(gateway() + mcp_route(spec_extra="\n  path: mcp") + MCP_BACKENDS)
    [err] = [d for d in rs.diagnostics if d.is_error]
    assert err.field == "spec.path" and "begin it with / (/mcp)" in err.message
    ref = "\n    - name: one\n      kind: Backend\n      group: gateway.envoyproxy.io\n      path: api\n"
    rs = resources(gateway() + mcp_route(backends=ref) + MCP_BACKENDS)
    assert [d.field for d in rs.diagnostics if d.is_error] == ["spec.backendRefs[0].path"]


def test_a_route_of_another_namespace_attaches_to_no_gateway():
    """Envoy AI Gateway's rule, whatever the listener admits: another namespace's route on the same
    path (a header matching every request in front) would take the endpoint, and with forwardHeaders
    its clients' credentials."""
    gateway_all = gateway().replace("port: 8080}", "port: 8080, allowedRoutes: {namespaces: {from: All}}}")
    steal = (
        mcp_route("steal")
        .replace("namespace: default}", "namespace: attacker}", 1)
        .replace("parentRefs: [{name: gw}]", "parentRefs: [{name: gw, namespace: default}]")
        .replace("backendRefs:", "headers: [{name: accept, type: RegularExpression, value: '.*'}]\n  backendRefs:")
    )
    attacker_backends = MCP_BACKENDS.replace("namespace: default", "namespace: attacker")
    result = compile_resources(resources(gateway_all + mcp_route() + MCP_BACKENDS + steal + attacker_backends))
    gw = result.gateways["default/gw"]
    assert [r.name for r in gw.translator.mcp_routes] == ["default/tools"]
    key = ResourceKey("MCPRoute", "attacker", "steal")
    [warned] = [d for d in result.diagnostics if d.resource == key]
    assert warned.field == "spec.parentRefs[0].namespace" and "of its own namespace only" in warned.message
    assert dict((c.type, (c.status, c.reason)) for c in result.statuses[key])["Accepted"] == (
        False,
        "NotAllowedByListeners",
    )


def test_of_routes_matching_the_same_requests_the_oldest_is_served():
    older = mcp_route("tools").replace(
        "metadata: {name: tools, namespace: default}",
        "metadata: {name: tools, namespace: default, creationTimestamp: '2026-01-01T00:00:00Z'}",
    )
    newer = mcp_route("atools").replace(
        "namespace: default}", "namespace: default, creationTimestamp: '2026-06-01T00:00:00Z'}", 1
    )
    result = compile_resources(resources(gateway() + older + MCP_BACKENDS + newer))
    gw = result.gateways["default/gw"]
    assert [r.name for r in gw.translator.mcp_routes] == ["default/tools"]  # older, though last by name
    [warned] = [d for d in result.diagnostics if d.resource == ResourceKey("MCPRoute", "default", "atools")]
    assert warned.field == "spec.path" and "MCPRoute default/tools matches the same requests" in warned.message
    statuses = dict(
        (c.type, (c.status, c.reason)) for c in result.statuses[ResourceKey("MCPRoute", "default", "atools")]
    )
    assert statuses["Accepted"] == (False, "Conflicted")
    # Another path, or a header that tells them apart: both served, the more specific first.
    headed = newer.replace("backendRefs:", "headers: [{name: x-team, value: a}]\n  backendRefs:")
    gw = compile_resources(resources(gateway() + older + MCP_BACKENDS + headed)).gateways["default/gw"]
    assert [m.name for m in gw.listeners[0].virtual_hosts[0].mcp_routes] == ["default/atools", "default/tools"]


def test_forwarded_headers_may_not_be_the_transports_own():
    """What reaches the server (backendHeader, else name) may not be a header the proxy sets (a
    forwarded Content-Length or Content-Encoding would corrupt its request); what the client sends
    may be renamed from any."""

    def errors(forward: str) -> list[tuple[str, str]]:
        ref = f"""
    - name: one
      kind: Backend
      group: gateway.envoyproxy.io
      forwardHeaders: [{forward}]
"""
        rs = resources(gateway() + mcp_route(backends=ref) + MCP_BACKENDS)
        return [(d.field, d.message) for d in rs.diagnostics if d.is_error]

    for name in ("Content-Length", "Transfer-Encoding", "content-encoding", "Mcp-Session-Id", "host"):
        [(field, message)] = errors(f"{{name: x-tenant, backendHeader: {name}}}")
        assert field == "spec.backendRefs[0].forwardHeaders[0].backendHeader" and f"{name} is the MCP" in message
    [(field, message)] = errors("{name: Content-Length}")
    assert field == "spec.backendRefs[0].forwardHeaders[0]"
    assert "name Content-Length is the MCP transport's own header" in message
    assert errors("{name: Host, backendHeader: x-forwarded-host}") == []
    [(field, _)] = errors("{name: 'content-length '}")  # not a header name (a space)
    assert field == "spec.backendRefs[0].forwardHeaders[0].name"


def test_a_route_on_an_ai_endpoints_path_is_not_served():
    text = gateway() + mcp_route(spec_extra="\n  path: /v1/chat/completions") + MCP_BACKENDS
    result = compile_resources(resources(text))
    assert list(result.gateways["default/gw"].translator.mcp_routes) == []
    [warned] = [d for d in result.diagnostics if d.resource == ResourceKey("MCPRoute", "default", "tools")]
    assert warned.field == "spec.path" and "is an AI endpoint of the Gateway" in warned.message
    # A path of OpenAI's API the gateway only passes through is not one of its endpoints.
    text = gateway() + mcp_route(spec_extra="\n  path: /v1/mcp") + MCP_BACKENDS
    assert [r.name for r in compile_resources(resources(text)).gateways["default/gw"].translator.mcp_routes] == [
        "default/tools"
    ]


def test_an_empty_tool_selector_is_an_error_as_envoy_ai_gateway_has_it():
    ref = "\n    - name: one\n      kind: Backend\n      group: gateway.envoyproxy.io\n      toolSelector: {}\n"
    rs = resources(gateway() + mcp_route(backends=ref) + MCP_BACKENDS)
    assert [d.field for d in rs.diagnostics if d.is_error] == ["spec.backendRefs[0].toolSelector"]


def test_without_the_translator_its_mcp_routes_are_left_out_and_said_so(tmp_path, capsys):
    from aigw_xds.cli import main

    (tmp_path / "mcp.yaml").write_text(gateway() + mcp_route() + MCP_BACKENDS)
    assert main(["translate", str(tmp_path), "--no-translator"]) == 0
    printed = capsys.readouterr()
    assert "warning: MCPRoute default/tools is not served: --no-translator" in printed.err
    assert "aigw-mcp-proxy" not in printed.out and "/mcp" not in printed.out


def test_in_kubernetes_mode_an_invalid_mcp_route_is_left_out_and_the_gateway_served():
    """As an invalid AIGatewayRoute is: replicas serve the same thing, the rest of the Gateway with it."""
    from aigw_xds.controller import Controller
    from aigw_xds.xds.cache import SnapshotCache
    from tests.resource_text import backend, route

    good = gateway() + route("r", {"m": "a"}) + backend("a", 9001)
    broken = mcp_route(backends="\n    - {name: nowhere, kind: Backend, group: gateway.envoyproxy.io}\n")
    cache = SnapshotCache()
    controller = Controller(cache, BuildSettings(), b"s" * 32, exclude_invalid=True)
    report = controller.apply(resources(good + broken))
    assert report.published == ["default/gw"]
    served = controller.last_good["default/gw"]
    assert [r.cluster for r in served.rules] == ["default/r/rule/0"] and list(served.translator.mcp_routes) == []
    assert any(d.is_error and d.resource == ResourceKey("MCPRoute", "default", "tools") for d in report.diagnostics)


def test_serves_mcp_proxy_goes_beside_its_translator():
    """Two serves on one host, each with a translator port of its own, must not both take the MCP
    proxy's default port (the second would not start)."""
    from aigw_xds.cli import _mcp_listen, _settings, parser

    def chosen(*flags: str) -> tuple[str | None, str]:
        args = parser().parse_args(["serve", "config", *flags])
        return _mcp_listen(args), _settings(args).mcp_address

    assert chosen() == ("127.0.0.1:9856", "127.0.0.1:9856")
    assert chosen("--translator-listen", "127.0.0.1:0") == ("127.0.0.1:0", "127.0.0.1:0")  # filled in at start
    assert chosen("--translator-listen", "127.0.0.1:21063") == ("127.0.0.1:0", "127.0.0.1:0")
    assert chosen("--translator-listen", "unix:/run/t.sock") == ("127.0.0.1:0", "127.0.0.1:0")
    assert chosen("--translator-listen", "") == (None, "127.0.0.1:9856")  # a sidecar's, by default
    assert chosen("--mcp-listen", "127.0.0.1:7000") == ("127.0.0.1:7000", "127.0.0.1:7000")
    assert chosen("--mcp-listen", "") == (None, "127.0.0.1:9856")
    assert chosen("--translator-listen", "", "--mcp-address", "127.0.0.1:7001")[1] == "127.0.0.1:7001"
    # A name is the address Envoy is told (a name for two addresses would be two ports 0).
    assert chosen("--translator-listen", "localhost:21063") == ("127.0.0.1:0", "127.0.0.1:0")
    assert chosen("--translator-listen", "[::1]:21063") == ("[::1]:0", "[::1]:0")
    # Translators elsewhere (sidecars): their MCP proxies' default address.
    assert chosen("--translator-listen", "127.0.0.1:0", "--translator-address", "unix:/s.sock")[1] == "127.0.0.1:9856"


def test_kubernetes_status_counts_mcp_routes_attached_and_writes_their_conditions():
    from aigw_xds.kubernetes.status import Current, status_updates
    from aigw_xds.kubernetes.status_writer import FleetSync

    rs = resources(gateway() + mcp_route() + MCP_BACKENDS)
    updates = status_updates(
        compile_resources(rs),
        rs,
        lambda fleet: FleetSync("v1", 1, 1),
        lambda key: Current(1, {}),
        "2026-12-07T00:00:00Z",
    )
    by_name = {f"{k.kind}/{k.name}": v for k, v in updates.items()}
    (listener,) = by_name["Gateway/gw"]["listeners"]
    assert listener["attachedRoutes"] == 1
    conditions = {c["type"]: c["status"] for c in by_name["MCPRoute/tools"]["conditions"]}
    assert conditions == {"Accepted": "True", "ResolvedRefs": "True"}


def test_help_says_where_envoy_looks_for_the_mcp_proxy(capsys):
    from aigw_xds.cli import parser

    for command in ("translate", "serve"):
        with pytest.raises(SystemExit):
            parser().parse_args([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert 'MCP proxy (MCPRoutes): "host:port" (default:' in text and "127.0.0.1:9856" in text, command
        assert "(default: 127.0.0.1:1063)" not in text.split("--mcp-address")[-1], command
