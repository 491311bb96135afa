"""A SecurityPolicy aigw-xds cannot enforce (here oidc, not supported yet) naming a Gateway, a
listener of it, a Gateway by its labels, or a route of it (by its kind or as the HTTPRoute Envoy AI
Gateway makes) fails the Gateway, which is not served open to every client. One about anything else
is not aigw-xds's business. (The policies it enforces: tests/unit/test_client_checks.py.)"""

from __future__ import annotations

import pytest

from aigw_xds.compile import compile_resources
from aigw_xds.keys import ResourceKey
from tests.resource_text import backend, gateway, resources, route
from tests.resource_text import security_policy as policy_text
from tests.unit.test_mcp_compile import MCP_BACKENDS, mcp_route

POLICY = ResourceKey("SecurityPolicy", "default", "auth")
BASE = gateway() + route("r", {"m": "x"}) + backend("x", 1)


def security_policy(target: str, namespace: str = "default") -> str:
    """A SecurityPolicy `default/auth` of `target` whose oidc aigw-xds cannot enforce."""
    return policy_text(target, "oidc: {provider: {issuer: 'https://idp.example'}, clientID: gw}", namespace=namespace)


@pytest.mark.parametrize(
    ("target", "named"),
    [
        (
            "targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]",
            "Gateway default/gw",
        ),
        ("targetRef: {kind: Gateway, name: gw, sectionName: http}", "listener http of Gateway"),
        (
            "targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]",
            "AIGatewayRoute default/r of Gateway default/gw",
        ),
        (
            "targetRefs: [{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: r}]",
            "AIGatewayRoute default/r",
        ),
        ("targetSelectors: [{kind: Gateway, matchLabels: {team: a}}]", "Gateway default/gw"),
    ],
)
def test_a_security_policy_on_what_the_gateway_serves_fails_it(target: str, named: str) -> None:
    text = BASE.replace(
        "metadata: {name: gw, namespace: default}", "metadata: {name: gw, namespace: default, labels: {team: a}}"
    )
    result = compile_resources(resources(text + security_policy(target)))
    assert "default/gw" in result.failed and "default/gw" not in result.gateways
    [error] = [e for e in result.errors if e.resource == POLICY]
    assert error.field == "spec.oidc"
    assert error.message.startswith(
        f"SecurityPolicy oidc is not supported yet (jwt, apiKeyAuth, basicAuth, cors and authorization are): {named}"
    )
    assert "is served closed while this policy names it" in error.message
    accepted = {c.type: (c.status, c.reason) for c in result.statuses[POLICY]}["Accepted"]
    assert accepted == (False, "Invalid")


@pytest.mark.parametrize(
    "target",
    [
        "targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: not-ours}]",
        "targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: other-gateway}]",
        "targetSelectors: [{kind: Gateway, matchLabels: {team: b}}]",
    ],
)
def test_a_security_policy_about_anything_else_is_not_the_gateways(target: str) -> None:
    result = compile_resources(resources(BASE + security_policy(target)))
    assert result.errors == [] and "default/gw" in result.gateways
    other_namespace = security_policy("targetRefs: [{kind: Gateway, name: gw}]", namespace="team")
    assert compile_resources(resources(BASE + other_namespace)).errors == []


def test_a_security_policy_on_an_mcp_route_fails_its_gateway() -> None:
    text = gateway() + mcp_route() + MCP_BACKENDS
    text += security_policy("targetRefs: [{group: aigateway.envoyproxy.io, kind: MCPRoute, name: tools}]")
    result = compile_resources(resources(text))
    assert "default/gw" in result.failed
    [error] = [e for e in result.errors if e.resource == POLICY]
    assert "MCPRoute default/tools of Gateway default/gw" in error.message


def test_a_security_policy_that_does_not_validate_still_fails_what_it_names() -> None:
    """A policy that does not read applies to nothing, and what it names is not served without it."""
    broken = security_policy("targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw, port: 1}]")
    result = compile_resources(resources(BASE + broken))
    assert "default/gw" in result.failed and "default/gw" not in result.gateways


def test_a_security_policy_naming_a_gateway_by_a_close_misspelling_fails_it() -> None:
    """A file's typo (quikstart) had left the Gateway served without a word (found by a new user)."""
    result = compile_resources(resources(BASE + security_policy("targetRefs: [{kind: Gateway, name: gww}]")))
    assert "default/gw" in result.failed
    [error] = [e for e in result.errors if e.resource == ResourceKey("Gateway", "default", "gw")][:1]
    assert "SecurityPolicy default/auth names Gateway default/gww" in error.message


@pytest.mark.parametrize(
    "target",
    [
        "targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]",
        "targetRefs: [{kind: AIGatewayRoute, name: r}]",  # (its group left out, in a file)
        "targetSelectors: [{kind: HTTPRoute, matchLabels: {tier: paid}}]",
        "targetSelectors: [{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, matchLabels: {}}]",
    ],
)
def test_a_security_policy_on_a_route_of_another_namespace_fails_the_gateway_it_attaches_to(target: str) -> None:
    """The shared Gateway of Envoy Gateway's setups: the Gateway in infra admits routes from all
    namespaces, the route and its policy are in team. Found by review: the policy was passed over
    when in another namespace than the Gateway, or when it took routes by their labels (which Envoy
    AI Gateway copies to the HTTPRoutes it makes)."""
    text = gateway(namespace="infra").replace("port: 8080}", "port: 8080, allowedRoutes: {namespaces: {from: All}}}")
    text += (
        route("r", {"m": "x"}, namespace="team")
        .replace("{name: gw, kind: Gateway", "{name: gw, namespace: infra, kind: Gateway")
        .replace("metadata: {name: r, namespace: team}", "metadata: {name: r, namespace: team, labels: {tier: paid}}")
    )
    text += backend("x", 1, namespace="team") + security_policy(target, namespace="team")
    result = compile_resources(resources(text))
    assert "infra/gw" in result.failed, result.errors
    [error] = [e for e in result.errors if e.resource == ResourceKey("SecurityPolicy", "team", "auth")]
    assert "AIGatewayRoute team/r of Gateway infra/gw is served closed" in error.message


def test_the_http_route_envoy_ai_gateway_makes_of_an_mcp_route_names_it() -> None:
    text = gateway() + mcp_route() + MCP_BACKENDS
    text += security_policy(
        "targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: ai-eg-mcp-main-tools}]"
    )
    result = compile_resources(resources(text))
    [error] = [e for e in result.errors if e.resource == POLICY]
    assert "MCPRoute default/tools of Gateway default/gw" in error.message
