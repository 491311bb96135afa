"""Kubernetes mode serves a Gateway whose objects include invalid ones from the others (as Envoy
Gateway does), where file mode holds it at its last good configuration: found by review, a replica
started while any object of a Gateway was invalid served nothing (its Envoys dropped their
listeners), and a revoked ReferenceGrant or a deleted Secret stayed in use."""

from __future__ import annotations

import json
from pathlib import Path

from aigw_xds.controller import Controller
from aigw_xds.keys import ResourceKey
from aigw_xds.resources import ResourceSet
from aigw_xds.sources.files import FileSource
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import BuildSettings
from aigw_xds.xds.cache import SnapshotCache
from tests.resource_text import api_key, backend, gateway, resources, route

SETTINGS = BuildSettings(translator_enabled=False)
SEAL = b"s" * 32  # as replicas share it in Kubernetes mode


def replica() -> tuple[SnapshotCache, Controller]:
    cache = SnapshotCache()
    return cache, Controller(cache, SETTINGS, SEAL, exclude_invalid=True)


def clusters(cache: SnapshotCache) -> list[str]:
    return sorted(cache.get("default/gw").of_type(type_urls.CLUSTER))


def unserved(cache: SnapshotCache) -> list[str]:
    """The clusters of rules left without a backend (their requests get a 503)."""
    assignments = cache.get("default/gw").of_type(type_urls.ENDPOINT).items()
    return sorted(name for name, r in assignments if not any(group.lb_endpoints for group in r.message.endpoints))


def gateway_warnings(report) -> str:
    return "\n".join(d.message for d in report.diagnostics if d.resource is not None and d.resource.kind == "Gateway")


def versions(cache: SnapshotCache) -> dict[str, str]:
    snapshot = cache.get("default/gw")
    return {t: snapshot.type_version(t) for t in type_urls.ORDER}


GOOD = gateway() + route("r", {"m": "a"}) + backend("a", 9001)
# Route x names a backend that does not exist.
BROKEN = GOOD + route("x", {"xm": "nowhere"})


def route_retry(name: str, retries: int) -> str:
    """A BackendTrafficPolicy giving route r `retries` retries."""
    return f"""
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}}]
  retry: {{numRetries: {retries}}}
"""


def test_a_replica_started_with_an_invalid_route_serves_the_others() -> None:
    cache, controller = replica()
    report = controller.apply(resources(BROKEN))
    assert report.published == ["default/gw"] and report.kept == []
    # x's rule stays, without the backendRef that failed: its requests get a 503.
    assert clusters(cache) == ["default/r/rule/0", "default/x/rule/0"] and unserved(cache) == ["default/x/rule/0"]
    assert any(d.is_error and str(d.resource) == "AIGatewayRoute default/x" for d in report.diagnostics)
    [said] = [d for d in report.diagnostics if d.resource is not None and d.resource.kind == "Gateway"]
    assert not said.is_error and "served AIGatewayRoute default/x without its spec.rules[0].backendRefs[0]" in (
        said.message
    ), said
    # File mode, from the same objects: nothing (no last good configuration to hold).
    file_mode = Controller(SnapshotCache(), SETTINGS, SEAL)
    assert file_mode.apply(resources(BROKEN)).published == []


def test_replicas_serve_the_same_versions_whatever_they_served_before() -> None:
    """One replica ran through the good configuration first, the other starts on the broken one:
    the same objects, the same versions (an Envoy moving between them gets nothing resent)."""
    long_running, first = replica()
    first.apply(resources(GOOD + route("x", {"xm": "a"})))
    first.apply(resources(BROKEN))
    started_later, second = replica()
    second.apply(resources(BROKEN))
    assert versions(long_running) == versions(started_later)


def test_a_revoked_reference_is_no_longer_served_and_other_edits_apply() -> None:
    """Route x used backend b; b deleted (as a revoked ReferenceGrant or a deleted Secret leaves a
    route invalid): x is left out at once, and a route added meanwhile is served."""
    cache, controller = replica()
    controller.apply(resources(GOOD + route("x", {"xm": "b"}) + backend("b", 9002)))
    assert clusters(cache) == ["default/r/rule/0", "default/x/rule/0"]
    controller.apply(resources(GOOD + route("x", {"xm": "b"}) + route("new", {"n": "a"})))
    assert clusters(cache) == ["default/new/rule/0", "default/r/rule/0", "default/x/rule/0"]
    assert unserved(cache) == ["default/x/rule/0"]


def test_one_bad_backend_leaves_its_route_s_other_rules_and_backends_served() -> None:
    """A platform team's trial: one AIServiceBackend with a typo in its schema took every model of
    its route offline (404s), healthy backends included; Envoy Gateway fails only the rule. Now
    the backendRef that failed is left out of its rule: the route's other rules are served, and a
    rule with another backend keeps that one (a fallback at priority 1 included)."""
    two_rules = route("r", {"m": "a", "n": [("b", 0, 1), ("a", 1, 1)], "o": "b"})
    broken = gateway() + two_rules + backend("a", 9001) + backend("b", 9002).replace("name: OpenAI", "name: OpenAl")
    cache, controller = replica()
    report = controller.apply(resources(broken))
    assert clusters(cache) == ["default/r/rule/0", "default/r/rule/1", "default/r/rule/2"]
    assert unserved(cache) == ["default/r/rule/2"]  # o: b was its only backend
    said = gateway_warnings(report)
    assert "served without AIServiceBackend default/b" in said
    assert "served AIGatewayRoute default/r without its spec.rules[1].backendRefs[0], spec.rules[2].backendRefs[0]" in (
        said
    )
    [rule] = [r for r in controller.last_result.gateways["default/gw"].rules if r.index == 1]
    assert [t.name.split("/route/")[0] for t in rule.backends] == ["default/a"]
    # The Gateway's status says it too (a platform trial found it in the log only).
    gateway_status = controller.last_result.statuses[ResourceKey("Gateway", "default", "gw")]
    [accepted] = [c for c in gateway_status if c.type == "Accepted"]
    assert accepted.status and "served without AIServiceBackend default/b" in accepted.message


def test_backend_refs_left_out_over_several_rounds_keep_their_place() -> None:
    """Found by review: a route trimmed in one round errs in the next by the index of what was
    compiled (the refs left out are gone from it), which was taken for the index as written: the
    healthy backend was left out, or nothing was, and the Gateway went unserved after eight rounds."""
    keyed = backend("b", 9002) + api_key("b")
    without_secret = keyed.split("---\napiVersion: v1\nkind: Secret")[0]
    for order in (["nowhere", "b", "a"], ["nowhere", "a", "b"]):
        refs = [(name, 0, 1) for name in order]
        cache, controller = replica()
        report = controller.apply(resources(GOOD + route("x", {"xm": refs}) + without_secret))
        assert report.published == ["default/gw"], order
        [rule] = [r for r in controller.last_result.gateways["default/gw"].rules if r.route == "default/x"]
        assert [t.name.split("/route/")[0] for t in rule.backends] == ["default/a"], order
        left = {order.index("nowhere"), order.index("b")}
        said = gateway_warnings(report)
        assert ", ".join(f"spec.rules[0].backendRefs[{j}]" for j in sorted(left)) in said, said


def test_a_policy_in_error_leaves_out_the_backend_it_applies_to_and_its_routes() -> None:
    """A BackendSecurityPolicy whose Secret is gone: the backend is not served without its key (it
    would reach the provider with none); the routes using it are left out, the others served."""
    keyed = route("x", {"xm": "b"}) + backend("b", 9002) + api_key("b")
    without_secret = keyed.split("---\napiVersion: v1\nkind: Secret")[0]
    cache, controller = replica()
    report = controller.apply(resources(GOOD + without_secret))
    assert unserved(cache) == ["default/x/rule/0"]
    said = gateway_warnings(report)
    assert "AIServiceBackend default/b" in said and "BackendSecurityPolicy default/b-key" in said
    # The backend has no error of its own: its status says why it is not served.
    backend_status = controller.last_result.statuses[ResourceKey("AIServiceBackend", "default", "b")]
    [accepted] = [c for c in backend_status if c.type == "Accepted"]
    assert not accepted.status and "relies on an object with errors" in accepted.message
    assert "default/gw" in controller.last_result.failed  # its closure stays ours for status


def test_an_invalid_gateway_is_not_served_without_itself() -> None:
    cache, controller = replica()
    report = controller.apply(resources(BROKEN.replace("port: 8080", "port: 99999")))
    assert report.published == [] and cache.get("default/gw") is None


def test_nothing_is_recompiled_while_every_gateway_compiles(monkeypatch) -> None:
    """Leaving objects out costs a compile per failed Gateway, and only then."""
    import aigw_xds.compile.excluding as excluding

    calls: list[ResourceSet] = []
    monkeypatch.setattr(excluding, "compile_resources", lambda view, **kw: calls.append(view) or 1 / 0)
    _cache, controller = replica()
    assert controller.apply(resources(GOOD)).published == ["default/gw"]
    assert calls == []


def test_an_object_edited_into_an_invalid_version_is_left_out_not_kept_stale(tmp_path: Path) -> None:
    """Its last good version is not served on (a replica started now would not have it): the
    routes using it are left out until it is fixed, and its status says so."""
    cache, controller = replica()
    source = FileSource(tmp_path)
    (tmp_path / "gw.yaml").write_text(GOOD + route("x", {"xm": "b"}) + backend("b", 9002))
    controller.apply(source.load())
    (tmp_path / "gw.yaml").write_text(
        GOOD + route("x", {"xm": "b"}) + backend("b", 9002).replace("name: OpenAI", "name: NotASchema")
    )
    report = controller.apply(source.load())
    assert unserved(cache) == ["default/x/rule/0"]
    assert not [d for d in report.diagnostics if "stays in use" in d.message]
    statuses = controller.last_result.statuses
    [accepted] = [c for c in statuses[ResourceKey("AIServiceBackend", "default", "b")] if c.type == "Accepted"]
    assert not accepted.status and accepted.message.endswith("; left out until it is fixed"), accepted
    (tmp_path / "gw.yaml").write_text(GOOD + route("x", {"xm": "b"}) + backend("b", 9002))
    controller.apply(source.load())
    assert clusters(cache) == ["default/r/rule/0", "default/x/rule/0"] and unserved(cache) == []


TLS_POLICY = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: b-tls, namespace: default}
spec:
  targetRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: b}]
  validation: {wellKnownCACertificates: System, hostname: api.example.com}
"""


def test_a_policy_that_never_validated_does_not_leave_its_backend_served_without_it() -> None:
    """Found by review: a BackendTLSPolicy invalid from its first version applied to nothing, so its
    backend on port 443 was served in plaintext, the key with it (file mode too), and replicas
    disagreed with one that had held an earlier version. Now its Gateway is held in file mode and, in
    Kubernetes mode, the backend and its routes are left out, the same on every replica."""
    on_443 = route("x", {"xm": "b"}) + backend("b", 443)
    broken = GOOD + on_443 + TLS_POLICY.replace("hostname: api.example.com", "hostname: [not, a, name]")
    file_mode = Controller(SnapshotCache(), SETTINGS, SEAL)
    assert file_mode.apply(resources(broken)).published == []
    cache, controller = replica()
    report = controller.apply(resources(broken))
    assert unserved(cache) == ["default/x/rule/0"]  # never to port 443 in plaintext
    assert "served without AIServiceBackend default/b," in gateway_warnings(report)
    assert {str(k) for k in controller.last_result.left_out["default/gw"]} == {
        "AIServiceBackend default/b",
        "Backend default/b",
        "BackendTLSPolicy default/b-tls",
    }
    long_running, first = replica()
    first.apply(resources(GOOD + on_443 + TLS_POLICY))
    assert clusters(long_running) == ["default/r/rule/0", "default/x/rule/0"]
    first.apply(resources(broken))
    assert versions(long_running) == versions(cache)


def test_kubernetes_mode_keeps_no_last_good_version_of_an_object_so_replicas_agree() -> None:
    """An object edited into an invalid version: Kubernetes mode's set holds nothing of it (file
    mode holds its last good version, stale), so a replica that saw the valid version and one
    started after the edit compile the same set (found by review: with a BackendTrafficPolicy the
    two served different routes)."""
    from aigw_xds.api.decode import decode_text
    from aigw_xds.resources import build_resource_set

    limited = GOOD + route_retry("btp", 2)
    broken = limited.replace("numRetries: 2", "numRetries: -2")
    seen = build_resource_set(decode_text(limited, "api"), keep_last_good=False)
    after = build_resource_set(decode_text(broken, "api"), previous=seen, keep_last_good=False)
    fresh = build_resource_set(decode_text(broken, "api"), keep_last_good=False)
    assert after.items.keys() == fresh.items.keys() and not after.stale_keys
    long_running, first = replica()
    first.apply(seen)
    first.apply(after)
    started_later, second = replica()
    second.apply(fresh)
    assert versions(long_running) == versions(started_later)
    kept = build_resource_set(decode_text(broken, "api"), previous=seen)  # file mode
    assert ResourceKey("BackendTrafficPolicy", "default", "btp") in kept.stale_keys


QUOTA_WITH_BAD_COST = """---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: QuotaPolicy
metadata: {name: q, namespace: default}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: b}]
  serviceQuota: {costExpression: 'total_tokens +', quota: {limit: 100, duration: 1h}}
"""

ROUTE_LIMIT_WITH_METADATA_REQUEST_COST = """---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: limit, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: x}]
  rateLimit:
    type: Global
    global:
      rules:
      - limit: {requests: 5, unit: Hour}
        cost: {request: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: llm_total_token}}}
"""


def test_policies_the_policy_checks_reject_leave_out_what_they_target() -> None:
    """Found by review: a QuotaPolicy whose cost expression does not compile, and a rate limit whose
    cost cannot be counted, applied to nothing, so their targets were served without any budget.
    Now they are left out, as a policy that does not validate leaves them out."""
    for policy, left_out in [
        (QUOTA_WITH_BAD_COST, "QuotaPolicy default/q"),
        (ROUTE_LIMIT_WITH_METADATA_REQUEST_COST, "BackendTrafficPolicy default/limit"),
    ]:
        cache, controller = replica()
        report = controller.apply(resources(GOOD + route("x", {"xm": "b"}) + backend("b", 9002) + policy))
        said = gateway_warnings(report)
        if policy is QUOTA_WITH_BAD_COST:  # on the backend: the route's rule stays, without it
            assert unserved(cache) == ["default/x/rule/0"], policy
        else:  # on the route: the route
            assert clusters(cache) == ["default/r/rule/0"], policy
        assert left_out in said and "AIGatewayRoute default/x" in said, said


GATEWAY_LIMIT_WITH_METADATA_REQUEST_COST = ROUTE_LIMIT_WITH_METADATA_REQUEST_COST.replace(
    "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: x}",
    "{group: gateway.networking.k8s.io, kind: Gateway, name: gw}",
)


def test_a_gateway_policy_in_error_leaves_out_the_routes_it_applies_to_and_replicas_agree() -> None:
    """Found by review: a Gateway-wide policy with one bad rule made the Gateway essential to leave
    out, so a replica started then served nothing (its Envoys dropped their listeners) while one
    that ran before kept its last good configuration. Now the routes it applies to are left out (a
    route under a policy of its own keeps that one): the listeners stay, and every replica agrees."""
    objects = GOOD + route("x", {"xm": "b"}) + backend("b", 9002) + route_retry("own", 1)
    long_running, first = replica()
    first.apply(resources(objects))
    report = first.apply(resources(objects + GATEWAY_LIMIT_WITH_METADATA_REQUEST_COST))
    started_later, second = replica()
    second.apply(resources(objects + GATEWAY_LIMIT_WITH_METADATA_REQUEST_COST))
    assert versions(long_running) == versions(started_later)
    assert clusters(started_later) == ["default/r/rule/0"]  # r has its own policy; x is left out
    assert started_later.get("default/gw").of_type(type_urls.LISTENER)  # the listener stays
    [said] = [d for d in report.diagnostics if d.resource is not None and d.resource.kind == "Gateway"]
    assert "AIGatewayRoute default/x" in said.message and "BackendTrafficPolicy default/limit" in said.message


def test_a_client_traffic_policy_that_does_not_apply_leaves_none_of_the_gateway_s_routes_served():
    """Kubernetes mode serves a Gateway without its invalid objects; a ClientTrafficPolicy that does
    not apply (its CA Secret not found: a review found it dropped, and the HTTPS listener taking
    clients without certificates) takes the Gateway's routes out with it (Envoy Gateway answers 500
    on every route of such a listener): no client reaches a provider without what it requires."""
    from tests.resource_text import client_traffic_policy, tls_secret

    https = "    - {name: https, protocol: HTTPS, port: 8443, tls: {certificateRefs: [{name: cert}]}}"
    policy = client_traffic_policy("tls: {clientValidation: {caCertificateRefs: [{name: not-there}]}}")
    cache, controller = replica()
    text = gateway(extra_listeners=https) + tls_secret() + route("r", {"m": "a"}) + backend("a", 9001)
    report = controller.apply(resources(text + policy))
    said = gateway_warnings(report)
    assert "every request answered a 500 (The gateway's listener settings (a ClientTrafficPolicy) are invalid" in said
    assert "left out: AIGatewayRoute default/r, ClientTrafficPolicy default/ctp" in said
    configs = cache.get("default/gw").of_type(type_urls.ROUTE).values()
    assert len(configs) == 2
    assert not any(r.route.cluster for c in configs for vh in c.message.virtual_hosts for r in vh.routes)
    # Every request is answered a 500 in its client's schema (a 404 had said its model was not
    # configured), naming no policy to the client.
    for config in configs:
        answers = [r for vh in config.message.virtual_hosts for r in vh.routes]
        assert {r.direct_response.status for r in answers} == {500}, [r.name for r in answers]
        bodies = {r.name.rsplit("/", 1)[1]: json.loads(r.direct_response.body.inline_string) for r in answers}
        assert sorted(bodies) == ["anthropic-refused", "cohere-refused", "openai-refused"]
        assert bodies["openai-refused"]["error"]["type"] == "server_error"
        assert bodies["anthropic-refused"]["error"]["type"] == "api_error"
        assert all(
            "ClientTrafficPolicy" in json.dumps(b) and "default/ctp" not in json.dumps(b) for b in bodies.values()
        )
