"""Route classes: which rules Envoy serves alone, which translate on one stream, which per attempt."""

from __future__ import annotations

import pytest

from aigw.translator.v1 import config_pb2
from aigw_xds.compile import ir
from aigw_xds.xds.route_classes import RouteClass, native_cost_keys, native_path_regex, plan_rule

Cost = config_pb2.LLMRequestCost


def _backend(name: str, schema: str = "OpenAI", key: str = "sk-1", **fields: object) -> config_pb2.Backend:
    backend = config_pb2.Backend(name=name, route_name="default/r", schema=config_pb2.Schema(name=schema))
    if key:
        kind = {"OpenAI": "api_key", "AzureOpenAI": "azure_api_key", "Anthropic": "anthropic_api_key"}[schema]
        getattr(backend.auth, kind).key = key
    for field, value in fields.items():
        if isinstance(value, str):
            setattr(backend, field, value)
        else:
            getattr(backend, field).CopyFrom(value)
    return backend


def _plan(*backends: config_pb2.Backend, config: config_pb2.TranslatorConfig | None = None):
    config = config or config_pb2.TranslatorConfig()
    config.backends.extend(backends)
    rule = ir.Rule(
        route="default/r",
        index=0,
        cluster="default/r/rule/0",
        matches=(),
        backends=tuple(
            ir.BackendTarget(b.name, (ir.Endpoint("ip", "127.0.0.1", 1),), "h", 1, i) for i, b in enumerate(backends)
        ),
        timeout_s=60,
    )
    return plan_rule(rule, config, {b.name: b for b in config.backends}, envoy_credentials=True)


def test_one_openai_backend_with_a_key_is_native_with_its_credential_and_stripped_headers() -> None:
    plan = _plan(_backend("a"))
    assert plan.translated is RouteClass.ROUTE and plan.backend == "a"
    assert plan.native is not None
    assert plan.native.credential == ("authorization", "Bearer sk-1")
    assert plan.native.path_rewrite is None
    assert {"authorization", "x-api-key", "api-key", "openai-organization", "accept-encoding"} <= set(
        plan.native.strip_headers
    )
    assert "sk-1" not in repr(plan)


def test_keys_go_to_envoy_only_when_its_xds_clients_are_trusted() -> None:
    rule_config = config_pb2.TranslatorConfig(backends=[_backend("a")])
    rule = ir.Rule("default/r", 0, "default/r/rule/0", (), (ir.BackendTarget("a", (), "h", 1, 0),), 60)
    untrusted = plan_rule(rule, rule_config, {"a": rule_config.backends[0]}, envoy_credentials=False)
    assert untrusted.translated is RouteClass.ROUTE and untrusted.native is None
    keyless = config_pb2.TranslatorConfig(backends=[_backend("a", key="")])
    assert plan_rule(rule, keyless, {"a": keyless.backends[0]}, envoy_credentials=False).native is not None


def test_an_azure_key_on_the_openai_schema_is_injected_as_api_key() -> None:
    backend = _backend("a", key="")
    backend.auth.azure_api_key.key = "az-1"
    plan = _plan(backend)
    assert plan.native is not None and plan.native.credential == ("api-key", "az-1")


def test_passed_client_headers_are_not_stripped_but_overrides_never_pass() -> None:
    backend = _backend("a")
    backend.auth.pass_client_headers.extend(["openai-organization", "x-aigw-api-key"])
    plan = _plan(backend)
    assert plan.native is not None
    assert "openai-organization" not in plan.native.strip_headers


def test_a_passed_header_under_a_stripped_prefix_keeps_the_rule_in_the_translator() -> None:
    """A NATIVE rule's cluster removes the provider-scoped prefixes whole (a route removes names
    only): a rule whose policy passes one name under them (x-goog-user-project) is translated,
    where that name passes and the rest of the prefix is stripped (a diff review: the prefix was
    left off the cluster's list, and x-goog-iam-authorization-token reached the provider)."""
    backend = _backend("a")
    backend.auth.pass_client_headers.append("x-goog-user-project")
    plan = _plan(backend)
    assert plan.native is None and plan.translated is RouteClass.ROUTE


@pytest.mark.parametrize(
    "backend",
    [
        _backend("a", "Anthropic"),
        _backend("a", "AzureOpenAI"),
        _backend("a", model_name_override="other"),
        _backend("a", header_mutation=config_pb2.HeaderMutation(remove=["x-team"])),
        _backend("a", body_mutation=config_pb2.BodyMutation(remove=["user"])),
        _backend(
            "a",
            auth=config_pb2.Auth(
                api_key=config_pb2.APIKey(key="k"),
                credential_override=config_pb2.CredentialOverride(
                    from_request_headers=config_pb2.FromRequestHeaders(header="x-byok")
                ),
            ),
        ),
    ],
    ids=["anthropic", "azure", "model-override", "header-mutation", "body-mutation", "credential-override"],
)
def test_features_only_the_translator_has_keep_the_rule_on_one_stream(backend: config_pb2.Backend) -> None:
    plan = _plan(backend)
    assert plan.translated is RouteClass.ROUTE and plan.native is None


def test_backends_translated_differently_need_the_per_attempt_phase() -> None:
    assert _plan(_backend("a"), _backend("b", "Anthropic")).translated is RouteClass.ATTEMPT
    assert _plan(_backend("a"), _backend("b", key="sk-2")).translated is RouteClass.ATTEMPT
    alike = _plan(_backend("a", upstream_host="x.example"), _backend("b", upstream_host="y.example"))
    assert alike.translated is RouteClass.ROUTE and alike.native is not None


def test_metadata_credential_overrides_stay_per_attempt() -> None:
    override = config_pb2.CredentialOverride(
        from_dynamic_metadata=config_pb2.FromDynamicMetadata(namespace="tenant.auth", key="k")
    )
    backend = _backend("a", auth=config_pb2.Auth(api_key=config_pb2.APIKey(key="k"), credential_override=override))
    assert _plan(backend).translated is RouteClass.ATTEMPT


def test_costs_envoy_cannot_compute_keep_the_rule_off_the_native_path() -> None:
    tokens = config_pb2.TranslatorConfig(global_costs=[Cost(metadata_key="total", type=Cost.TOTAL_TOKEN)])
    assert _plan(_backend("a"), config=tokens).native is not None
    assert native_cost_keys(tokens) == {"total": Cost.TOTAL_TOKEN}
    cel = config_pb2.TranslatorConfig(global_costs=[Cost(metadata_key="w", type=Cost.CEL, cel="input_tokens")])
    assert _plan(_backend("a"), config=cel).native is None
    cached = config_pb2.TranslatorConfig(global_costs=[Cost(metadata_key="c", type=Cost.CACHED_INPUT_TOKEN)])
    assert _plan(_backend("a"), config=cached).native is None
    own = config_pb2.TranslatorConfig(
        route_costs=[
            config_pb2.RouteCosts(route_name="default/r", costs=[Cost(metadata_key="o", type=Cost.OUTPUT_TOKEN)])
        ]
    )
    assert _plan(_backend("a"), config=own).native is None
    # A fleet-wide key that some route redefines is not written natively for anyone.
    redefined = config_pb2.TranslatorConfig(
        global_costs=[Cost(metadata_key="t", type=Cost.TOTAL_TOKEN)],
        route_costs=[config_pb2.RouteCosts(route_name="default/other", costs=[Cost(metadata_key="t", type=Cost.CEL)])],
    )
    assert native_cost_keys(redefined) == {}
    assert _plan(_backend("a"), config=redefined).native is None


@pytest.mark.parametrize(
    ("root", "prefix", "rewrite"),
    [
        ("", "", None),
        ("", "/", ("^/v1/", "/")),
        ("", "openai/v1", ("^/v1/", "/openai/v1/")),
        ("/ai", "", ("^/ai/v1/", "/v1/")),
        ("ai/", "v2", ("^/ai/v1/", "/v2/")),
    ],
)
def test_path_rewrite_follows_the_schema_prefix_and_root(
    root: str, prefix: str, rewrite: tuple[str, str] | None
) -> None:
    backend = _backend("a")
    backend.schema.prefix = prefix
    plan = _plan(backend, config=config_pb2.TranslatorConfig(root_prefix=root))
    assert plan.native is not None and plan.native.path_rewrite == rewrite


def test_native_paths_are_exact() -> None:
    import re

    pattern = re.compile(native_path_regex("/ai"))
    assert pattern.match("/ai/v1/chat/completions") and pattern.match("/ai/v1/completions")
    assert not pattern.match("/ai/v1/chat/completions/") and not pattern.match("/v1/chat/completions")
    assert not pattern.match("/ai/v1/embeddings")


def test_a_cohere_rule_translates_on_one_stream_and_is_never_native() -> None:
    """Cohere's answers carry usage under its own names (meta.tokens, usage.tokens, a stream's
    message-end), which Envoy's json_to_metadata cannot read as OpenAI's: the router phase serves
    the rule on one stream (path /<version>/<op>, the Bearer key, usage) and Envoy never alone."""
    cohere = config_pb2.Backend(
        name="co", route_name="default/r", schema=config_pb2.Schema(name="Cohere", version="v2")
    )
    cohere.auth.api_key.key = "co-key"
    plan = _plan(cohere)
    assert plan.translated is RouteClass.ROUTE and plan.backend == "co"
    assert plan.native is None
    # Mixed with an OpenAI backend (failover), each attempt is translated for its own backend.
    assert _plan(cohere, _backend("b")).translated is RouteClass.ATTEMPT
