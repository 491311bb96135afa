"""Route scopes (build.py): a listener with many rules has its routes split by the model they match
into contract.ROUTE_SCOPES route configurations, so that an edit resends one scope's routes. What
must hold: a request for a model finds, in its scope, the routes it could take in the whole list,
in the same order; the listener picks scopes by the headers the Lua filter sets; one rule edited
changes one scope."""

from __future__ import annotations

import pytest
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

import aigw_contract as contract
from aigw_xds.compile import compile_resources
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import REQUEST_BODY_FILTER_NAME, ROUTE_SCOPE_FILTER_NAME, BuildSettings, build_fleet
from aigw_xds.xds.cache import check_consistency, make_snapshot
from tests.resource_text import api_key, backend, gateway, resources, route

LISTENERS = ("default/gw/8080", "default/gw/9090")
ALWAYS = BuildSettings(envoy_credentials=True, route_scopes_from=0)
NEVER = BuildSettings(envoy_credentials=True, route_scopes_from=10**9)


def _text(models: int = 40, edited: int = -1) -> str:
    """Rules of every kind a scope must place: one model each (some with failover, which gives the
    host its retry policy), a model matched by a regular expression, a rule on another header only
    (any model), a rule on a model and a tenant; a second listener, one route on a hostname."""
    text = gateway(extra_listeners="    - {name: api, protocol: HTTP, port: 9090, hostname: api.example.com}")
    text += backend("a", 9001) + backend("b", 9002) + api_key("a", "sk-a")
    for i in range(models):
        model = f"model-{i}-edited" if i == edited else f"model-{i}"
        text += route(f"r{i}", {model: [("a", 0, 1), ("b", 1, 1)]} if i % 3 else {model: "a"})
    text += route("pattern", {"llama-.*": "b"}).replace(
        "type: Exact, name: x-ai-eg-model", "type: RegularExpression, name: x-ai-eg-model"
    )
    text += route("tenant", {"t1": "b"}).replace("name: x-ai-eg-model, value: t1", "name: x-tenant, value: t1")
    text += route("both", {"model-3": "b"}).replace(
        "value: model-3}", "value: model-3}\n            - {type: Exact, name: x-tenant, value: t2}"
    )
    text += route("hosted", {"model-5": "b"}, extra="  hostnames: [api.example.com]\n")
    return text


def _built(text: str, settings: BuildSettings):
    return build_fleet(compile_resources(resources(text)).gateways["default/gw"], settings)


def _model(r: route_components_pb2.Route) -> str | None:
    """The model a route matches by name (the body's or the header's), or None: any model."""
    for m in r.match.dynamic_metadata:
        if [s.key for s in m.path] == [contract.REQUEST_MODEL_KEY] and m.value.string_match.exact:
            return str(m.value.string_match.exact)
    for h in r.match.headers:
        if h.name == contract.MODEL_HEADER and h.string_match.exact:
            return str(h.string_match.exact)
    return None


def test_each_scope_holds_the_routes_a_request_for_its_models_can_take_in_the_listeners_order():
    whole = _built(_text(), NEVER).by_type[type_urls.ROUTE]
    scoped = _built(_text(), ALWAYS).by_type[type_urls.ROUTE]
    assert set(scoped) == {f"{listener}#{s}" for listener in LISTENERS for s in range(contract.ROUTE_SCOPES)}
    placed = set()
    for listener in LISTENERS:
        config = whole[listener].parse()
        for s in map(str, range(contract.ROUTE_SCOPES)):
            scope = scoped[f"{listener}#{s}"].parse()
            assert list(scope.request_headers_to_remove) == [
                contract.ROUTE_SCOPE_LISTENER_HEADER,
                contract.ROUTE_SCOPE_HEADER,
                "x-forwarded-for",
                "x-envoy-external-address",
            ]
            assert [h.name for h in scope.virtual_hosts] == [h.name for h in config.virtual_hosts]
            for host, scope_host in zip(config.virtual_hosts, scope.virtual_hosts, strict=True):
                expected = [r for r in host.routes if (m := _model(r)) is None or contract.route_scope(m) == s]
                assert list(scope_host.routes) == expected
                assert scope_host.retry_policy == host.retry_policy
                placed |= {r.name for r in scope_host.routes}
            # What a provider says of the gateway's account, and its cookies, in every scope as in the whole.
            assert list(scope.response_headers_to_remove) == list(config.response_headers_to_remove)
            assert {"openai-organization", "set-cookie"} <= set(scope.response_headers_to_remove)
            # Assembled from parts: still the message's own serialization (its version's hash).
            assert scope.SerializeToString(deterministic=True) == scoped[f"{listener}#{s}"].data
        assert placed >= {r.name for h in config.virtual_hosts for r in h.routes}  # no route lost
    # The test's models fall in several scopes, and the regular expression's routes in all of them.
    buckets = {contract.route_scope(f"model-{i}") for i in range(40)}
    assert len(buckets) > 10
    pattern = [
        name
        for name in scoped
        if any(r.name.startswith("default/pattern") for h in scoped[name].parse().virtual_hosts for r in h.routes)
    ]
    assert len(pattern) == len(scoped)


def test_a_scoped_listener_picks_scopes_by_the_headers_its_lua_filter_sets():
    built = _built(_text(), ALWAYS)
    snapshot = make_snapshot("default/gw", built)
    check_consistency(snapshot)  # every scope's route configuration is there
    scopes = built.by_type[type_urls.SCOPED_ROUTE]
    for listener in LISTENERS:
        manager = hcm_pb2.HttpConnectionManager()
        built.by_type[type_urls.LISTENER][listener].filter_chains[0].filters[0].typed_config.Unpack(manager)
        assert not manager.HasField("rds")
        assert manager.scoped_routes.name == listener
        assert manager.scoped_routes.scoped_rds.scoped_rds_config_source.HasField("ads")
        headers = [f.header_value_extractor.name for f in manager.scoped_routes.scope_key_builder.fragments]
        assert headers == [contract.ROUTE_SCOPE_LISTENER_HEADER, contract.ROUTE_SCOPE_HEADER]
        names = [f.name for f in manager.http_filters]
        # After the body's model is read, before the router phase asks for its route.
        assert names.index(REQUEST_BODY_FILTER_NAME) + 1 == names.index(ROUTE_SCOPE_FILTER_NAME)
        assert names.index(ROUTE_SCOPE_FILTER_NAME) + 1 == names.index(contract.EXT_PROC_FILTER_NAME)
        lua = lua_pb2.Lua()
        manager.http_filters[names.index(ROUTE_SCOPE_FILTER_NAME)].typed_config.Unpack(lua)
        assert f'"{listener}"' in lua.default_source_code.inline_string
        assert f"% {contract.ROUTE_SCOPES}" in lua.default_source_code.inline_string
        for s in range(contract.ROUTE_SCOPES):
            scope = scopes[f"{listener}#{s}"]
            assert [f.string_key for f in scope.key.fragments] == [listener, str(s)]
            assert scope.route_configuration_name == f"{listener}#{s}"


def _sized(models: int, patterns: int) -> str:
    """One listener: `models` rules on a model by name, `patterns` on models by a pattern."""
    text = gateway() + backend("a", 9001) + api_key("a", "sk-a")
    text += route("named", {f"model-{i}": "a" for i in range(models)})
    pattern = route("pattern", {f"llama-{i}-.*": "a" for i in range(patterns)})
    return text + pattern.replace("type: Exact", "type: RegularExpression") if patterns else text


@pytest.mark.parametrize(
    ("models", "patterns", "settings", "scoped"),
    [
        (199, 0, BuildSettings(), False),  # below the default 200
        (200, 0, BuildSettings(), True),
        (300, 2, BuildSettings(), True),  # 2 x 128 copies of the patterns' routes: within 300
        (300, 3, BuildSettings(), False),  # 3 x 128: more than the named rules
        (5, 3, ALWAYS, True),  # 0: always
        (300, 0, BuildSettings(translator_enabled=False), False),  # no Lua filter, no router phase
    ],
)
def test_a_listener_has_scopes_when_its_rules_name_enough_models_and_few_match_any(
    models: int, patterns: int, settings: BuildSettings, scoped: bool
):
    """Counted per listener over its virtual hosts (what its route configuration holds). Rules on
    any model are in every scope: a listener of many of them stays one configuration (review: 1,000
    rules on models and 1,000 on patterns made 315 MB of scopes out of 4.9 MB)."""
    built = _built(_sized(models, patterns), settings)
    manager = hcm_pb2.HttpConnectionManager()
    built.by_type[type_urls.LISTENER]["default/gw/8080"].filter_chains[0].filters[0].typed_config.Unpack(manager)
    assert manager.HasField("scoped_routes") is scoped and manager.HasField("rds") is not scoped
    assert bool(built.by_type[type_urls.SCOPED_ROUTE]) is scoped


def test_one_rule_edited_changes_the_route_configuration_of_its_scopes_alone():
    before = make_snapshot("default/gw", _built(_text(), ALWAYS))
    after = make_snapshot("default/gw", _built(_text(edited=7), ALWAYS), previous=before)
    changed = {
        n for n, r in after.of_type(type_urls.ROUTE).items() if before.of_type(type_urls.ROUTE)[n].version != r.version
    }
    # The rule (on both listeners) left model-7's scope and joined model-7-edited's.
    expected = {
        f"{listener}#{contract.route_scope(m)}" for listener in LISTENERS for m in ("model-7", "model-7-edited")
    }
    assert changed == expected
    assert after.of_type(type_urls.SCOPED_ROUTE) is before.of_type(type_urls.SCOPED_ROUTE)
    assert after.of_type(type_urls.LISTENER) is before.of_type(type_urls.LISTENER)


def test_an_edit_joins_again_only_the_route_configurations_it_changed():
    """The next build of the fleet takes the previous one's route configuration object for a scope
    whose routes are the same: the snapshot then packs and hashes what the edit changed, and the
    process holds one copy of the others (4 MB at 10,000 routes, found in bench_compile)."""
    first = _built(_text(), ALWAYS)
    gateway = compile_resources(resources(_text(edited=7))).gateways["default/gw"]
    edited = build_fleet(gateway, ALWAYS, first)
    before, after = first.by_type[type_urls.ROUTE], edited.by_type[type_urls.ROUTE]
    assert before.keys() == after.keys()
    joined_again = {name for name in after if after[name] is not before[name]}
    assert joined_again == {
        f"{listener}#{contract.route_scope(m)}" for listener in LISTENERS for m in ("model-7", "model-7-edited")
    }
    assert edited.by_type == _built(_text(edited=7), ALWAYS).by_type  # what a build from scratch makes
