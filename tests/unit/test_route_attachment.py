"""Gateway API's rules between routes and listeners: a route attaches to the listeners its
parentRefs name whose allowedRoutes (namespaces, kinds) admit it, and is served through each at the
intersection of their hostnames (none: not accepted there, NoMatchingListenerHostname); a hostname
whose requests belong to a more specific listener of the same port is lost to it; a route is
Accepted when any of its parents takes it."""

from __future__ import annotations

import pytest

from aigw_xds.api import kinds
from aigw_xds.compile import compile_resources
from aigw_xds.compile.attachment import reach, shared, takers
from aigw_xds.keys import ResourceKey
from tests.resource_text import backend, gateway, resources, route
from tests.unit.test_mcp_compile import MCP_BACKENDS, mcp_route


def listener(name: str, hostname: str | None, port: int = 8080) -> kinds.GatewayListener:
    return kinds.GatewayListener(name=name, protocol="HTTP", port=port, hostname=hostname)


@pytest.mark.parametrize(
    ("route_hosts", "listener_host", "expected"),
    [
        ((), None, None),
        (("a.example.com",), None, ("a.example.com",)),
        ((), "gw.example.com", ("gw.example.com",)),
        (("gw.example.com",), "gw.example.com", ("gw.example.com",)),
        (("*.example.com",), "gw.example.com", ("gw.example.com",)),
        (("a.example.com",), "*.example.com", ("a.example.com",)),
        (("*.a.example.com",), "*.example.com", ("*.a.example.com",)),
        (("*.example.com",), "*.a.example.com", ("*.a.example.com",)),
        (("other.com", "a.example.com"), "*.example.com", ("a.example.com",)),
        (("example.com",), "*.example.com", ()),  # a wildcard does not cover its own parent
        (("other.com",), "gw.example.com", ()),
    ],
)
def test_a_route_is_served_through_a_listener_where_their_hostnames_meet(route_hosts, listener_host, expected):
    assert shared(route_hosts, listener_host) == expected


def test_a_request_is_the_most_specific_covering_listeners():
    port = [listener("any", None), listener("wild", "*.example.com"), listener("b", "b.example.com")]
    assert takers("b.example.com", port) == {"b"}
    assert takers("c.example.com", port) == {"wild"}
    assert takers("*.example.com", port) == {"wild"}
    assert takers("other.com", port) == {"any"}
    assert takers(None, port) == {"any"}


def test_a_hostname_a_more_specific_listener_takes_is_lost_unless_the_route_attaches_to_it():
    listeners = [
        listener("wild", "*.example.com"),
        listener("b", "b.example.com"),
        listener("b-elsewhere", "c.example.com", port=9090),
    ]
    wild, b = listeners[:2]
    got = reach(("b.example.com", "c.example.com"), [wild], listeners)
    assert got.hosts == ("c.example.com",)  # (c.example.com's listener is on another port)
    assert got.lost == (("b.example.com", frozenset({"b"})),)
    assert reach(("b.example.com",), [wild, b], listeners).hosts == ("b.example.com",)
    assert reach(("b.example.com",), [wild], listeners).hosts == ()
    assert reach((), [listener("any", None)], listeners).hosts is None


def statuses(result, kind: str, name: str, namespace: str = "default") -> dict[str, tuple[bool, str, str]]:
    return {c.type: (c.status, c.reason, c.message) for c in result.statuses[ResourceKey(kind, namespace, name)]}


def warnings_of(result, kind: str, name: str) -> list[str]:
    key = ResourceKey(kind, "default", name)
    return [d.message for d in result.diagnostics if d.resource == key and not d.is_error]


def with_hosts(text: str, *hostnames: str) -> str:
    return text.replace("  rules:", f"  hostnames: [{', '.join(hostnames)}]\n  rules:", 1)


def test_a_route_whose_hostnames_meet_no_listener_is_not_accepted():
    """Gateway API: Accepted False, NoMatchingListenerHostname; served nowhere, its models listed
    nowhere (before, it was Accepted and its models were listed)."""
    text = gateway().replace("port: 8080}", "port: 8080, hostname: gw.example.com}")
    text += with_hosts(route("r", {"m": "x"}), "api.other.com") + route("ok", {"n": "x"}) + backend("x", 1)
    result = compile_resources(resources(text))
    assert result.errors == []
    accepted, reason, message = statuses(result, "AIGatewayRoute", "r")["Accepted"]
    assert (accepted, reason) == (False, "NoMatchingListenerHostname")
    assert "Gateway default/gw it names (http: gw.example.com)" in message
    assert warnings_of(result, "AIGatewayRoute", "r")[0] == message
    gw = result.gateways["default/gw"]
    assert [r.route for r in gw.rules] == ["default/ok"]
    assert [m.id for m in gw.translator.models] == ["n"]


def test_a_route_is_attached_to_those_of_its_listeners_its_hostnames_meet():
    listeners = "    - {name: other, protocol: HTTP, port: 8081, hostname: other.example.com}\n"
    text = gateway(extra_listeners=listeners).replace("port: 8080}", "port: 8080, hostname: gw.example.com}")
    text += with_hosts(route("r", {"m": "x"}), "gw.example.com") + backend("x", 1)
    result = compile_resources(resources(text))
    assert statuses(result, "AIGatewayRoute", "r")["Accepted"][:2] == (True, "Accepted")
    assert warnings_of(result, "AIGatewayRoute", "r") == []
    listeners = result.gateways["default/gw"].listeners
    ports = {lis.port: [v.domains for v in lis.virtual_hosts if v.rules] for lis in listeners}
    assert ports == {8080: [("gw.example.com",)], 8081: []}


def test_a_hostname_taken_by_a_more_specific_listener_is_warned_about_and_its_models_not_listed_there():
    listeners = (
        "    - {name: wild, protocol: HTTP, port: 8080, hostname: '*.example.com'}\n"
        "    - {name: b, protocol: HTTP, port: 8080, hostname: b.example.com}\n"
    )
    text = gateway(extra_listeners=listeners)
    on_wild = "group: gateway.networking.k8s.io, sectionName: wild}"
    text += with_hosts(route("both", {"m-both": "x"}), "b.example.com", "c.example.com").replace(
        "group: gateway.networking.k8s.io}", on_wild
    )
    text += with_hosts(route("b-only", {"m-b": "x"}), "b.example.com").replace(
        "group: gateway.networking.k8s.io}", on_wild
    )
    text += backend("x", 1)
    result = compile_resources(resources(text))
    [lost_b] = warnings_of(result, "AIGatewayRoute", "both")
    assert lost_b.startswith("hostname b.example.com: its requests are for listener b of Gateway default/gw")
    assert "reaches no request" not in lost_b
    [nowhere] = warnings_of(result, "AIGatewayRoute", "b-only")
    assert nowhere.endswith("which this route does not attach to: this route reaches no request")
    assert statuses(result, "AIGatewayRoute", "b-only")["Accepted"][:2] == (True, "Accepted")
    models = {m.id: list(m.hosts) for m in result.gateways["default/gw"].translator.models}
    assert models == {"m-both": ["c.example.com"]}


def test_a_route_hostname_broader_than_its_listeners_lists_its_models_at_the_listeners():
    text = gateway().replace("port: 8080}", "port: 8080, hostname: gw.example.com}")
    text += with_hosts(route("r", {"m": "x"}), "'*.example.com'") + backend("x", 1)
    models = compile_resources(resources(text)).gateways["default/gw"].translator.models
    assert [(m.id, list(m.hosts)) for m in models] == [("m", ["gw.example.com"])]


def test_an_mcp_route_whose_hostnames_meet_no_listener_is_not_accepted():
    text = gateway().replace("port: 8080}", "port: 8080, hostname: gw.example.com}")
    text += mcp_route(spec_extra="\n  hostnames: [tools.other.com]") + MCP_BACKENDS
    result = compile_resources(resources(text))
    assert statuses(result, "MCPRoute", "tools")["Accepted"][:2] == (False, "NoMatchingListenerHostname")
    assert list(result.gateways["default/gw"].translator.mcp_routes) == []


def sectioned(text: str, section: str = "", port: int | None = None, gateway_name: str = "gw") -> str:
    """A route of `text` whose parentRef names Gateway `gateway_name` (its listener, its port)."""
    extra = (f", sectionName: {section}" if section else "") + (f", port: {port}" if port else "")
    return text.replace(
        "- {name: gw, kind: Gateway, group: gateway.networking.k8s.io}",
        f"- {{name: {gateway_name}, namespace: default, kind: Gateway, group: gateway.networking.k8s.io{extra}}}",
    )


def test_a_route_one_listener_refuses_and_another_takes_is_accepted():
    """Gateway API judges a parentRef by the listeners it selects: the route is refused only when
    none takes it (found by review: it was Accepted False while served)."""
    listeners = "    - {name: open, protocol: HTTP, port: 8081, allowedRoutes: {namespaces: {from: All}}}\n"
    text = gateway(extra_listeners=listeners) + sectioned(route("r", {"m": "x"}, namespace="apps"))
    text += backend("x", 1, namespace="apps")
    result = compile_resources(resources(text))
    assert statuses(result, "AIGatewayRoute", "r", "apps")["Accepted"][:2] == (True, "Accepted")
    assert [d.message for d in result.diagnostics if d.resource and d.resource.kind == "AIGatewayRoute"] == []
    ports = {
        lis.port: [r.route for v in lis.virtual_hosts for r in v.rules]
        for lis in result.gateways["default/gw"].listeners
    }
    assert ports == {8080: [], 8081: ["apps/r"]}


def test_a_route_one_gateway_refuses_and_another_takes_is_accepted():
    closed = gateway("closed", port=8081).split("---", 1)[1].join(["---", ""])
    opened = gateway(port=8080).replace("port: 8080}", "port: 8080, allowedRoutes: {namespaces: {from: All}}}")
    two_parents = sectioned(route("r", {"m": "x"}, namespace="apps")).replace(
        "  rules:", "    - {name: closed, namespace: default}\n  rules:", 1
    )
    result = compile_resources(resources(opened + closed + two_parents + backend("x", 1, namespace="apps")))
    assert statuses(result, "AIGatewayRoute", "r", "apps")["Accepted"][:2] == (True, "Accepted")
    alone = compile_resources(resources(closed + two_parents.replace("name: gw,", "name: nowhere,")))
    accepted, reason, message = statuses(alone, "AIGatewayRoute", "r", "apps")["Accepted"]
    assert (accepted, reason) == (False, "NotAllowedByListeners")
    assert (
        message == "listener http of Gateway default/closed allows routes from its own namespace only (allowedRoutes)"
    )


def test_a_listener_taking_other_route_kinds_refuses_ours():
    text = gateway().replace("port: 8080}", "port: 8080, allowedRoutes: {kinds: [{kind: GRPCRoute}]}}")
    result = compile_resources(resources(text + route("r", {"m": "x"}) + backend("x", 1)))
    accepted, reason, message = statuses(result, "AIGatewayRoute", "r")["Accepted"]
    assert (accepted, reason) == (False, "NotAllowedByListeners") and "takes GRPCRoute only" in message
    named = gateway().replace(
        "port: 8080}", "port: 8080, allowedRoutes: {kinds: [{group: aigateway.envoyproxy.io, kind: AIGatewayRoute}]}}"
    )
    taken = compile_resources(resources(named + route("r", {"m": "x"}) + backend("x", 1)))
    assert statuses(taken, "AIGatewayRoute", "r")["Accepted"][:2] == (True, "Accepted")


def test_a_listener_taking_http_routes_takes_ours():
    """Envoy Gateway checks the HTTPRoute Envoy AI Gateway makes of an AIGatewayRoute against a
    listener's kinds: `kinds: [HTTPRoute]` admits it (found by review: it had been refused)."""
    text = gateway().replace("port: 8080}", "port: 8080, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}")
    result = compile_resources(resources(text + route("r", {"m": "x"}) + backend("x", 1)))
    assert statuses(result, "AIGatewayRoute", "r")["Accepted"][:2] == (True, "Accepted")
