"""xDS build: assertions on the generated Envoy protos, and version determinism across processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

import aigw_contract as contract
from aigw_xds.compile import compile_resources
from aigw_xds.compile.incremental import CompileMemo
from aigw_xds.sources.files import FileSource
from aigw_xds.wire import Serialized
from aigw_xds.xds import build as build_module
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import (
    HTTP_PROTOCOL_OPTIONS,
    NO_MODEL_BODIES,
    PROVIDER_ERRORS_FILTER_NAME,
    REQUEST_BODY_FILTER_NAME,
    RESPONSE_USAGE_FILTER_NAME,
    ROUTE_NOT_FOUND_MESSAGE,
    BuildSettings,
    build_fleet,
)
from aigw_xds.xds.cache import InconsistentSnapshot, Snapshot, check_consistency, make_snapshot
from tests.resource_text import any_model_route, api_key, backend, gateway, resources, route
from tests.unit.applied_routes import applied

TEXT = (
    gateway()
    + route("r", {"m1": "a", "m2": [("a", 0, 1), ("b", 1, 1)]})
    + backend("a", 9001)
    + backend("b", 9002)
    + api_key("a", "sk-never-in-envoy")
)


def fleet(text: str = TEXT, settings: BuildSettings | None = None):
    ir = compile_resources(resources(text)).gateways["default/gw"]
    # A control plane whose xDS clients are trusted (loopback or mTLS): keys may reach Envoy.
    return build_fleet(ir, settings or BuildSettings(envoy_credentials=True))


@pytest.mark.parametrize(
    ("address", "compat"), [("0.0.0.0", False), ("127.0.0.1", False), ("::", True), ("0::0", True), ("::1", False)]
)
def test_a_listener_on_every_ipv6_address_takes_ipv4_too(address: str, compat: bool):
    """`::` means every address (run --listen-address ::, whose URL says localhost): Envoy binds it
    IPv6-only unless told ipv4_compat."""
    settings = BuildSettings(envoy_credentials=True, listener_address=address)
    socket_address = fleet(settings=settings).by_type[type_urls.LISTENER]["default/gw/8080"].address.socket_address
    assert (socket_address.address, socket_address.ipv4_compat) == (address, compat)


def test_listener_hcm_and_router_level_ext_proc():
    listener = fleet().by_type[type_urls.LISTENER]["default/gw/8080"]
    assert listener.address.socket_address.port_value == 8080
    assert listener.per_connection_buffer_limit_bytes.value == 50 * 1024 * 1024
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    assert manager.rds.route_config_name == "default/gw/8080" and manager.rds.config_source.HasField("ads")
    assert [f.name for f in manager.http_filters] == [
        REQUEST_BODY_FILTER_NAME,
        contract.EXT_PROC_FILTER_NAME,
        RESPONSE_USAGE_FILTER_NAME,
        PROVIDER_ERRORS_FILTER_NAME,
        "envoy.filters.http.router",
    ]
    ext = ext_proc_pb2.ExternalProcessor()
    manager.http_filters[1].typed_config.Unpack(ext)
    assert ext.grpc_service.envoy_grpc.cluster_name == contract.TRANSLATOR_CLUSTER_NAME
    assert ext.processing_mode.request_body_mode == ext.processing_mode.BUFFERED
    assert ext.allow_mode_override and not ext.failure_mode_allow
    assert list(ext.metadata_options.receiving_namespaces.untyped) == [contract.METADATA_NAMESPACE]


def test_the_stat_names_of_a_gateway_and_route_named_with_dots_have_none():
    """Envoy's tag extractors take `http.<prefix>.` and `cluster.<name>.` up to the first dot: a
    Gateway named ai.example, a route named chat.v1, would otherwise turn into part of every
    metric's name (Prometheus: a name per Gateway, per rule)."""
    text = gateway(name="ai.example", namespace="team-a") + route("chat.v1", {"m1": "a"}, gateway_name="ai.example")
    text = text.replace("namespace: default}", "namespace: team-a}") + backend("a", 9001).replace(
        "namespace: default", "namespace: team-a"
    )
    ir = compile_resources(resources(text)).gateways["team-a/ai.example"]
    listener = build_fleet(ir, BuildSettings()).by_type[type_urls.LISTENER]["team-a/ai.example/8080"]
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    assert manager.stat_prefix == "team-a_ai_example_8080"
    clusters = build_fleet(ir, BuildSettings()).by_type[type_urls.CLUSTER]
    rule = next(c for name, c in clusters.items() if name.startswith("team-a/chat.v1/"))
    rule = rule.parse() if isinstance(rule, Serialized) else rule
    assert rule.alt_stat_name == rule.name.replace(".", "_") and "." not in rule.alt_stat_name


def _per_filter(route, name: str) -> ext_proc_pb2.ExtProcPerRoute | None:
    if name not in route.typed_per_filter_config:
        return None
    config = ext_proc_pb2.ExtProcPerRoute()
    route.typed_per_filter_config[name].Unpack(config)
    return config


def test_routes_match_the_body_model_by_class_then_the_header_then_the_fallbacks():
    """Rule 0 (one OpenAI backend with a key) is NATIVE for non-streaming chat and ROUTE otherwise;
    rule 1 (two backends treated differently) is ATTEMPT. Each rule also routes on x-ai-eg-model
    when the body names no model; then come the router phase's model finder and the JSON 404s."""
    config = applied(fleet().messages(type_urls.ROUTE)["default/gw/8080"])
    [vhost] = config.virtual_hosts
    assert list(vhost.domains) == ["*"]
    names = [r.name for r in vhost.routes]
    assert names == [
        "default/r/rule/0/match/0/native",
        "default/r/rule/0/match/0/native-not-streaming",
        "default/r/rule/0/match/0",
        "default/r/rule/0/match/0/header",
        "default/r/rule/1/match/0",
        "default/r/rule/1/match/0/header",
        "default/gw/*/anthropic-no-model",
        "default/gw/*/cohere-no-model",
        "default/gw/*/no-model",
        "default/gw/*/find-model",
        "default/gw/*/check-model",
        "default/gw/*/anthropic-route-not-found",
        "default/gw/*/cohere-route-not-found",
        "default/gw/*/route-not-found",
    ]
    (
        native,
        native_false,
        routed,
        header,
        attempt,
        attempt_header,
        *no_model,
        find,
        check,
        anthropic,
        cohere,
        catch_all,
    ) = vhost.routes
    assert native_false.match.dynamic_metadata[1].value.bool_match is False
    assert not native_false.match.dynamic_metadata[1].invert

    model = native.match.dynamic_metadata[0]
    assert model.filter == contract.METADATA_NAMESPACE and model.path[0].key == contract.REQUEST_MODEL_KEY
    assert model.value.string_match.exact == "m1"
    assert native.match.dynamic_metadata[1].invert and native.match.dynamic_metadata[1].value.present_match
    assert native.match.safe_regex.regex == "^(/v1/chat/completions|/v1/completions)$"
    assert {"authorization", "x-api-key", "api-key", "accept-encoding"} <= set(native.request_headers_to_remove)
    assert _per_filter(native, contract.EXT_PROC_FILTER_NAME).disabled
    assert _per_filter(native, contract.UPSTREAM_EXT_PROC_FILTER_NAME).disabled

    assert routed.match.prefix == "/" and routed.match.dynamic_metadata[0].value.string_match.exact == "m1"
    assert routed.route.cluster == "default/r/rule/0"
    # The default 60 s is an idle timeout per attempt, not a cap on the whole (streamed) response.
    assert routed.route.HasField("timeout") and routed.route.timeout.ToSeconds() == 0
    assert routed.route.auto_host_rewrite.value
    assert routed.metadata.filter_metadata[contract.INTERNAL_METADATA_NAMESPACE][contract.ROUTE_NAME_KEY] == "default/r"
    # One priority, no policy: a retry policy of no retries carries the per-try idle timeout (it
    # starts with the attempt, so the translator's processing never counts against it).
    assert routed.route.retry_policy.per_try_idle_timeout.seconds == 60
    assert routed.route.retry_policy.num_retries.value == 0 and not routed.route.HasField("idle_timeout")
    assert routed.route.retry_policy.num_retries.value == 0
    one_stream = _per_filter(routed, contract.EXT_PROC_FILTER_NAME).overrides
    assert {(h.key, h.value) for h in one_stream.grpc_initial_metadata} == {
        (contract.ROUTE_BACKEND_METADATA_KEY, "default/a/route/r/rule/0/ref/0")
    }
    assert _per_filter(routed, contract.UPSTREAM_EXT_PROC_FILTER_NAME).disabled

    assert header.match.headers[0].name == "x-ai-eg-model" and header.match.headers[0].string_match.exact == "m1"
    assert header.match.dynamic_metadata[0].invert and header.match.dynamic_metadata[0].value.present_match
    assert not header.typed_per_filter_config  # both phases: the per-attempt way

    assert not attempt.typed_per_filter_config and not attempt_header.typed_per_filter_config
    retry = attempt.route.retry_policy
    assert retry.retry_priority.name == "envoy.retry_priorities.previous_priorities" and retry.num_retries.value == 1

    assert not find.typed_per_filter_config and not check.typed_per_filter_config  # the router phase runs
    assert find.direct_response.status == check.direct_response.status == 404
    assert json.loads(anthropic.direct_response.body.inline_string)["error"]["type"] == "not_found_error"
    assert anthropic.match.path_separated_prefix == "/anthropic"
    assert json.loads(cohere.direct_response.body.inline_string) == {"message": ROUTE_NOT_FOUND_MESSAGE}
    # A request naming no model (no header; the router phase runs first, and may find one in a
    # form) is told so, in its API's shape, not sent to look for a typo in a model it never gave.
    for answer, prefix, body in zip(
        no_model,
        ("/anthropic", "/cohere", None),
        [NO_MODEL_BODIES[api] for api in ("anthropic", "cohere", "openai")],
        strict=True,
    ):
        assert answer.match.path_separated_prefix == prefix if prefix else answer.match.prefix == "/"
        [absent] = answer.match.headers
        assert absent.name == "x-ai-eg-model" and absent.present_match and absent.invert_match
        assert answer.match.dynamic_metadata[0].invert and not answer.typed_per_filter_config
        assert answer.direct_response.body.inline_string == body and "names no model" in body
    assert cohere.match.path_separated_prefix == "/cohere"
    assert _per_filter(cohere, contract.EXT_PROC_FILTER_NAME).disabled
    assert catch_all.direct_response.status == 404
    assert json.loads(catch_all.direct_response.body.inline_string)["error"]["code"] == "model_not_found"
    assert _per_filter(catch_all, contract.EXT_PROC_FILTER_NAME).disabled


def test_a_rule_of_any_model_on_one_stream_leaves_the_requests_of_an_unread_model_to_the_router_phase():
    """A rule of any model whose backends are translated alike takes, on one stream, the requests
    whose model Envoy read; a request of a model Envoy did not read (a multipart form) takes its
    /unread route, per attempt, where the router phase routes it again by the model it finds (a
    rule of that model, listed before, takes it)."""
    text = gateway() + route("r", {"whisper-1": "a"}) + any_model_route("any", "name: b") + backend("a", 9001)
    config = applied(
        fleet(text + backend("b", 9002) + api_key("b", "sk-b")).messages(type_urls.ROUTE)["default/gw/8080"]
    )
    routes = {r.name: r for r in config.virtual_hosts[0].routes if r.name.startswith("default/any/")}
    assert [name.removeprefix("default/any/rule/0/match/0") for name in routes] == [
        "/native",
        "/native-not-streaming",
        "",
        "/unread",
    ]
    one_stream, unread = routes["default/any/rule/0/match/0"], routes["default/any/rule/0/match/0/unread"]
    [read] = one_stream.match.dynamic_metadata
    assert read.value.present_match and not read.invert
    assert _per_filter(one_stream, contract.EXT_PROC_FILTER_NAME).overrides.grpc_initial_metadata
    [unread_model] = unread.match.dynamic_metadata
    assert unread_model.value.present_match and unread_model.invert
    assert not unread.typed_per_filter_config  # both phases: the per-attempt way
    assert unread.route.cluster == one_stream.route.cluster


def test_cluster_per_rule_with_priorities_weights_and_endpoint_metadata():
    resources_ = fleet()
    cluster = resources_.messages(type_urls.CLUSTER)["default/r/rule/1"]
    assert cluster.type == cluster_pb2.Cluster.EDS
    assert cluster.per_connection_buffer_limit_bytes.value == 50 * 1024 * 1024
    options = http_protocol_options_pb2.HttpProtocolOptions()
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Unpack(options)
    assert [f.name for f in options.http_filters] == [
        contract.UPSTREAM_EXT_PROC_FILTER_NAME,
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.upstream_codec",
    ]
    mutation = header_mutation_pb2.HeaderMutation()
    options.http_filters[1].typed_config.Unpack(mutation)
    [strip_gateway_headers, content_length] = mutation.mutations.request_mutations
    assert strip_gateway_headers.remove_on_match.key_matcher.prefix == "x-aigw-"
    assert content_length.append.header.key == "content-length"
    upstream = ext_proc_pb2.ExternalProcessor()
    options.http_filters[0].typed_config.Unpack(upstream)
    assert list(upstream.request_attributes) == [*contract.UPSTREAM_ATTRIBUTES, contract.SOURCE_ADDRESS_ATTRIBUTE]
    assignment = resources_.messages(type_urls.ENDPOINT)["default/r/rule/1"]
    assert [(loc.priority, loc.load_balancing_weight.value) for loc in assignment.endpoints] == [(0, 1), (1, 1)]
    metadata = assignment.endpoints[1].lb_endpoints[0].metadata.filter_metadata[contract.INTERNAL_METADATA_NAMESPACE]
    assert metadata[contract.BACKEND_NAME_KEY] == "default/b/route/r/rule/1/ref/1"
    assert metadata[contract.UPSTREAM_HOST_KEY] == "127.0.0.1"


def test_fqdn_backends_use_strict_dns_and_tls_with_sni():
    text = (
        TEXT.replace("- ip: {address: 127.0.0.1, port: 9001}", "- fqdn: {hostname: api.example.com, port: 443}")
        + """
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: a-tls}
spec:
  targetRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: a}]
  validation: {wellKnownCACertificates: System, hostname: api.example.com}
"""
    )
    resources_ = fleet(text)
    cluster = resources_.messages(type_urls.CLUSTER)["default/r/rule/0"]
    assert cluster.type == cluster_pb2.Cluster.STRICT_DNS
    assert "default/r/rule/0" not in resources_.by_type[type_urls.ENDPOINT]
    [match] = cluster.transport_socket_matches
    assert match.match.fields["tls"].string_value.startswith("tls/api.example.com/")
    endpoint = cluster.load_assignment.endpoints[0].lb_endpoints[0]
    assert endpoint.metadata.filter_metadata["envoy.transport_socket_match"]["tls"] == match.name
    assert endpoint.endpoint.hostname == "api.example.com"


def test_translator_switch_removes_every_ext_proc_filter():
    resources_ = fleet(settings=BuildSettings(translator_enabled=False))
    assert contract.TRANSLATOR_CLUSTER_NAME not in resources_.by_type[type_urls.CLUSTER]
    dump = b"".join(m.SerializeToString() for t in resources_.by_type for m in resources_.messages(t).values())
    assert contract.EXT_PROC_FILTER_NAME.encode() not in dump


def test_secrets_reach_envoy_only_as_sds_secrets():
    """A NATIVE rule's key is an SDS secret that the cluster's credential_injector names; it is in
    no listener, route, cluster or endpoint resource."""
    resources_ = fleet()
    dump = b"".join(
        m.SerializeToString()
        for t in resources_.by_type
        if t != type_urls.SECRET
        for m in resources_.messages(t).values()
    )
    assert b"sk-never-in-envoy" not in dump
    [secret] = resources_.by_type[type_urls.SECRET].values()
    assert secret.generic_secret.secret.inline_string == "Bearer sk-never-in-envoy"
    options = http_protocol_options_pb2.HttpProtocolOptions()
    cluster = resources_.messages(type_urls.CLUSTER)["default/r/rule/0"]
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Unpack(options)
    assert [f.name for f in options.http_filters][-2:] == [
        "envoy.filters.http.credential_injector",
        "envoy.filters.http.upstream_codec",
    ]
    assert secret.name.encode() in options.http_filters[-2].typed_config.value and secret.name.startswith("credential/")


def test_keys_stay_out_of_envoy_when_its_xds_clients_are_not_trusted():
    """Without envoy_credentials (xDS on a non-loopback address without mTLS), no SDS credential:
    the rule is translated on one stream and the key stays in the translator."""
    resources_ = fleet(settings=BuildSettings())
    assert resources_.by_type[type_urls.SECRET] == {}
    dump = b"".join(m.SerializeToString() for t in resources_.by_type for m in resources_.messages(t).values())
    assert b"sk-never-in-envoy" not in dump and b"credential_injector" not in dump
    names = [r.name for r in resources_.messages(type_urls.ROUTE)["default/gw/8080"].virtual_hosts[0].routes]
    assert "default/r/rule/0/match/0/native" not in names


def test_snapshot_consistency_check_catches_missing_references():
    resources_ = fleet()
    snapshot = make_snapshot("default/gw", resources_)
    check_consistency(snapshot)
    del resources_.by_type[type_urls.ENDPOINT]["default/r/rule/1"]
    with pytest.raises(InconsistentSnapshot, match="ClusterLoadAssignment default/r/rule/1"):
        check_consistency(make_snapshot("default/gw", resources_))


def test_what_a_resource_names_is_read_once_per_resource_not_on_every_publish(monkeypatch):
    """Every publish checks that what listeners and clusters name is in the snapshot; clusters are
    kept serialized, so each is parsed for it once, and a snapshot that keeps an unchanged Resource
    keeps what was read."""
    from aigw_xds.xds import cache as cache_module

    read: list[str] = []
    cluster_needs = cache_module._cluster_needs
    monkeypatch.setattr(cache_module, "_cluster_needs", lambda c: read.append(c.name) or cluster_needs(c))
    first = make_snapshot("default/gw", fleet())
    check_consistency(first)
    assert sorted(read) == sorted(first.of_type(type_urls.CLUSTER)) and read
    read.clear()
    check_consistency(make_snapshot("default/gw", fleet(), previous=first))
    assert read == []


def test_versions_change_only_for_changed_resources():
    one = make_snapshot("default/gw", fleet())
    two = make_snapshot("default/gw", fleet(TEXT.replace("port: 9002", "port: 9003")))
    changed = {
        (t, n)
        for t in type_urls.ORDER
        for n, r in two.of_type(t).items()
        if one.of_type(t).get(n, r).version != r.version
    }
    assert changed == {(type_urls.ENDPOINT, "default/r/rule/1")}


_PRINT_VERSIONS = """
import json, sys
from aigw_xds.compile import compile_resources
from aigw_xds.xds.build import BuildSettings, build_fleet
from aigw_xds.xds.cache import make_snapshot
from aigw_xds.sources.files import FileSource
result = compile_resources(FileSource(sys.argv[1]).load())
out = {}
for fleet, ir in result.gateways.items():
    snap = make_snapshot(fleet, build_fleet(ir, BuildSettings(envoy_credentials=True)))
    out[fleet] = {t + "|" + n: r.version for t, by in snap.resources.items() for n, r in by.items()}
print(json.dumps(out, sort_keys=True))
"""


def test_versions_are_identical_across_processes(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text(TEXT)
    runs = [
        subprocess.run(
            [sys.executable, "-c", _PRINT_VERSIONS, str(config)],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed), "PATH": ""},
        ).stdout
        for seed in (1, 2)
    ]
    assert runs[0] == runs[1]
    # 3 clusters, the assignment of the EDS one (the NATIVE rule's cluster carries its endpoints), a
    # listener, its routes, the NATIVE rule's credential
    assert len(json.loads(runs[0])["default/gw"]) == 7


def test_access_log_carries_ai_fields_and_every_cost_key():
    costs = "  llmRequestCosts:\n    - {metadataKey: llm_total_token, type: TotalToken}\n"
    text = gateway() + route("r", {"m": "a"}, extra=costs) + backend("a", 1)
    listener = fleet(text, BuildSettings(access_log_path="/tmp/access.log")).by_type[type_urls.LISTENER][
        "default/gw/8080"
    ]
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    [log] = manager.access_log
    from envoy.extensions.access_loggers.file.v3 import file_pb2

    config = file_pb2.FileAccessLog()
    log.typed_config.Unpack(config)
    fields = config.log_format.json_format.fields
    assert config.path == "/tmp/access.log"
    assert fields["llm_total_token"].string_value == "%DYNAMIC_METADATA(io.envoy.ai_gateway:llm_total_token)%"
    assert fields["gen_ai.request.model"].string_value == "%DYNAMIC_METADATA(io.envoy.ai_gateway:model)%"


def test_several_translator_processes_share_one_cluster():
    resources_ = fleet(settings=BuildSettings(translator_address="127.0.0.1:1063, 127.0.0.1:1064,unix:/run/t.sock"))
    cluster = resources_.by_type[type_urls.CLUSTER][contract.TRANSLATOR_CLUSTER_NAME]
    addresses = [e.endpoint.address for e in cluster.load_assignment.endpoints[0].lb_endpoints]
    assert [a.socket_address.port_value for a in addresses[:2]] == [1063, 1064]
    assert addresses[2].pipe.path == "/run/t.sock"
    with pytest.raises(ValueError, match="not host:port"):
        fleet(settings=BuildSettings(translator_address="nonsense"))


def test_run_shows_access_records_in_one_short_line():
    from aigw_xds.console import access_line

    record = (
        '{"method":"POST","path":"/v1/chat/completions","response_code":200,"duration_ms":8,'
        '"gen_ai.request.model":"m","gen_ai.provider.name":"default/a/route/r/rule/0/ref/0","llm_total_token":19,'
        '"gen_ai.response.model":null}'
    )
    assert access_line(record) == ("access: POST /v1/chat/completions 200 model=m backend=a 8ms llm_total_token=19")


def test_the_retry_policy_most_routes_share_is_sent_once_on_the_virtual_host(monkeypatch):
    """The route configuration is what every edit resends to every Envoy, and a failover retry
    policy is most of a route's size: the one most routes share goes on the virtual host. Envoy
    applies a route's own policy instead of the host's, so routes that retry otherwise keep theirs
    and routes that must not retry get an empty one: what Envoy applies is what it was before."""
    many = gateway() + backend("a", 9001) + backend("b", 9002)
    many += "".join(route(f"r{i}", {f"m{i}": [("a", 0, 1), ("b", 1, 1)]}) for i in range(5))
    many += route("single", {"solo": "a"})  # one priority: its own policy (no retries, idle timeout)
    hoisted = fleet(many).messages(type_urls.ROUTE)["default/gw/8080"]
    monkeypatch.setattr(build_module, "_common_retry_policy", lambda counts: None)
    flat = fleet(many).messages(type_urls.ROUTE)["default/gw/8080"]
    [host] = hoisted.virtual_hosts
    assert host.retry_policy.num_retries.value == 1 and host.retry_policy.retry_priority.name
    failover = [r for r in host.routes if r.route.cluster.startswith("default/r")]
    assert failover and not any(r.route.HasField("retry_policy") for r in failover)
    solo = [r for r in host.routes if r.route.cluster.startswith("default/single")]
    assert solo and all(r.route.retry_policy.num_retries.value == 0 for r in solo)
    assert applied(hoisted) == flat
    assert hoisted.ByteSize() < 0.8 * flat.ByteSize()


@pytest.mark.parametrize("settings", [BuildSettings(), BuildSettings(translator_enabled=False)])
def test_the_route_configuration_is_joined_from_its_routes_as_its_own_serialization(settings):
    """A route configuration is joined from each route's bytes (a virtual host of 20,000 routes is
    never one message): what comes out must be the message's own deterministic serialization, byte
    for byte, since its hash is the resource's version on every replica. Two hosts (one with
    hostnames), the hoisted retry policy, routes that keep their own or an empty one."""
    text = gateway(extra_listeners="    - {name: api, protocol: HTTP, port: 8080, hostname: api.example.com}")
    text += backend("a", 9001) + backend("b", 9002) + route("single", {"solo": "a"})
    text += "".join(route(f"r{i}", {f"m{i}": [("a", 0, 1), ("b", 1, 1)]}) for i in range(3))
    text += route("hosted", {"h": "b"}, extra="  hostnames: [api.example.com]\n")
    content = fleet(text, settings).by_type[type_urls.ROUTE]["default/gw/8080"]
    assert isinstance(content, Serialized)
    config = content.parse()
    assert [len(h.routes) > 4 for h in config.virtual_hosts] == [True, True]
    assert any(h.HasField("retry_policy") for h in config.virtual_hosts)
    assert config.SerializeToString(deterministic=True) == content.data


def _varied_routes(count: int, edited: int = -1) -> str:
    """Routes enough for many runs of rules, of every kind the virtual host orders: one and two
    header matches, failover (a retry policy most share) and single backends (their own)."""
    text = gateway() + backend("a", 9001) + backend("b", 9002) + api_key("a", "sk-a")
    for i in range(count):
        model = f"m{i}-edited" if i == edited else f"m{i}"
        text += route(f"r{i}", {model: [("a", 0, 1), ("b", 1, 1)]} if i % 3 else {model: "a"})
        if i % 7 == 0:  # a rule on two headers: more specific, so before all one-header routes
            text += route(f"t{i}", {model: "b"}).replace(
                f"value: {model}}}", f"value: {model}}}\n            - {{type: Exact, name: x-tenant, value: t{i}}}"
            )
    return text


def _snapshot_bytes(text: str, memo: CompileMemo | None = None, directory: Path | None = None) -> dict:
    """Every resource's bytes, compiled from `text` (with `memo`: from a file in `directory`, as a
    control plane reads it, so unchanged routes stay the same objects and their runs are kept)."""
    if directory is None:
        loaded = resources(text)
    else:
        # The routes apart from the Secrets (a file's Secrets are read again on every load).
        split = text.index("kind: AIGatewayRoute")
        split = text.rindex("---", 0, split)
        (directory / "base.yaml").write_text(text[:split])
        (directory / "routes.yaml").write_text(text[split:])
        loaded = _SOURCES.setdefault(directory, FileSource(directory)).load()
    ir = compile_resources(loaded, memo=memo).gateways["default/gw"]
    snapshot = make_snapshot("default/gw", build_fleet(ir, BuildSettings(envoy_credentials=True)))
    return {t: {n: r.packed for n, r in by.items()} for t, by in snapshot.resources.items()}


_SOURCES: dict[Path, FileSource] = {}


def _clear_build_caches() -> None:
    for value in vars(build_module).values():
        if hasattr(value, "cache_clear"):
            value.cache_clear()


@pytest.mark.parametrize("length", [1, 2, 5, 10**9])
def test_rules_built_in_runs_build_what_they_would_in_one(tmp_path, length):
    """The compile hands its routes' rules to the build in runs (runs.py), and the build keeps what
    it makes of each; however the rules fall into runs, every resource comes out byte for byte the
    same as from one run of all (a compile without a memo)."""
    _clear_build_caches()
    whole = _snapshot_bytes(_varied_routes(60))
    _clear_build_caches()
    assert _snapshot_bytes(_varied_routes(60), CompileMemo(run_length=length), tmp_path) == whole


def test_an_edit_built_on_kept_runs_equals_a_build_from_nothing(tmp_path):
    memo = CompileMemo(run_length=4)
    _snapshot_bytes(_varied_routes(60), memo, tmp_path)
    edits = [_snapshot_bytes(_varied_routes(60, edited=i), memo, tmp_path) for i in (5, 21, 42)]
    assert memo.reused > 50  # the other routes' units, and their runs, were kept
    _clear_build_caches()
    assert edits == [_snapshot_bytes(_varied_routes(60, edited=i)) for i in (5, 21, 42)]
    assert edits[0] != edits[1]


def test_routes_of_more_specific_matches_come_first_in_the_virtual_host():
    """Envoy takes the first route that matches: a rule matching two headers goes before every rule
    matching one, wherever it stands among the rules (t-routes sort after r-routes by name)."""
    [host] = fleet(_varied_routes(30)).messages(type_urls.ROUTE)["default/gw/8080"].virtual_hosts
    rule_routes = [r.name.split("/")[1] for r in host.routes if r.name.startswith("default/")]
    two_headers = [i for i, name in enumerate(rule_routes) if name.startswith("t")]
    assert two_headers == list(range(len(two_headers))) and len(two_headers) < len(rule_routes)
    # And in rule order among themselves.
    assert [n for n in dict.fromkeys(rule_routes) if n.startswith("t")] == ["t0", "t14", "t21", "t28", "t7"]


def _random_fleet_text(port: int, routes: dict[int, str]) -> str:
    """`routes`: route number -> its shape; `port`: backend a's (its rules' assignments change)."""
    text = gateway() + backend("a", port) + backend("b", 9002) + api_key("a", "sk-a")
    for i, shape in sorted(routes.items()):
        model = f"m{i}-{shape}"
        shapes = {"failover": [("a", 0, 1), ("b", 1, 1)], "spread": [("a", 0, 1), ("b", 0, 3)]}
        text += route(f"r{i}", {model: shapes.get(shape, shape)})
    return text


@pytest.mark.parametrize("seed", range(6))
def test_a_build_and_snapshot_on_the_previous_ones_equal_those_made_from_nothing(tmp_path, seed):
    """build_fleet with the fleet's previous build patches its maps where runs changed, make_snapshot
    with the previous snapshot packs only messages it did not pack, and the publish check looks only
    at what changed: random edits (a model, a rule's backends, a route added or removed, a backend's
    port) give the resources, their order and versions, of a build and snapshot from nothing."""
    import random

    rng = random.Random(seed)
    shapes = ["a", "b", "failover", "spread"]  # a, failover, spread: the same secret, other endpoints
    routes = {i: rng.choice(shapes) for i in range(40)}
    memo, settings = CompileMemo(run_length=3), BuildSettings(envoy_credentials=True)
    built = snapshot = None
    port = 9001
    patched = 0
    for _ in range(16):
        (tmp_path / "config.yaml").write_text(_random_fleet_text(port, routes))
        ir = compile_resources(_SOURCES.setdefault(tmp_path, FileSource(tmp_path)).load(), memo=memo).gateways[
            "default/gw"
        ]
        built = build_fleet(ir, settings, built)
        cold = build_fleet(ir, settings)
        assert built.by_type == cold.by_type
        assert {t: list(m) for t, m in built.by_type.items()} == {t: list(m) for t, m in cold.by_type.items()}
        patched += built.assembly is not None and built.assembly.base is not None
        fresh = make_snapshot("default/gw", cold)
        check_consistency(after := make_snapshot("default/gw", built, previous=snapshot), snapshot)
        assert after.version == fresh.version
        for t in type_urls.ORDER:
            assert [(n, r.version) for n, r in after.of_type(t).items()] == [
                (n, r.version) for n, r in fresh.of_type(t).items()
            ]
        snapshot = after
        edit = rng.random()
        number = rng.randrange(45)
        if edit < 0.6 and number in routes:
            routes[number] = rng.choice(shapes)
        elif edit < 0.8:
            routes.pop(number, None) if number in routes else routes.update({number: "a"})
        elif edit < 0.9:
            port = 9001 + 9011 - port
    assert patched  # some builds patched the previous maps


def test_the_publish_check_sees_a_name_gone_that_an_unchanged_cluster_needs():
    first = make_snapshot("default/gw", fleet())
    check_consistency(first)
    endpoints = dict(first.of_type(type_urls.ENDPOINT))
    del endpoints["default/r/rule/1"]
    second = Snapshot("default/gw", {**first.resources, type_urls.ENDPOINT: endpoints}, "v2")
    assert second.of_type(type_urls.CLUSTER) is first.of_type(type_urls.CLUSTER)  # nothing else changed
    with pytest.raises(InconsistentSnapshot, match="ClusterLoadAssignment default/r/rule/1"):
        check_consistency(second, first)


@pytest.mark.parametrize("name_length", [5, 200])  # a one-byte and a two-byte length varint
def test_a_route_kept_in_one_form_gives_the_other_as_serializing_it_would(name_length: int):
    """A rule's route is kept serialized once, in the form its host most likely takes; the other
    (with its own retry policy, or with an empty one under a host holding the common policy) is
    made from it when a host needs it, and must be what serializing the route that way gives."""
    from envoy.config.route.v3 import route_components_pb2 as rc

    def route(policy: rc.RetryPolicy | None) -> rc.Route:
        built = rc.Route(name="r" * name_length, match=rc.RouteMatch(prefix="/"))
        built.route.cluster = "c"
        built.route.timeout.seconds = 60
        if policy is not None:
            built.route.retry_policy.CopyFrom(policy)
        return built

    policy = rc.RetryPolicy(retry_on="5xx,reset", num_retries={"value": 2}, retriable_status_codes=[429, 503])
    with_policy = build_module._encoded(route(policy))
    assert with_policy.retry_key == policy.SerializeToString(deterministic=True)
    assert with_policy.data == build_module._entry(route(policy))
    assert with_policy.hoisted == build_module._entry(route(None))
    without = build_module._encoded(route(None))
    assert without.retry_key is None and without.data == build_module._entry(route(None))
    assert without.hoisted == build_module._entry(route(rc.RetryPolicy()))
    assert rc.Route.FromString(without.hoisted[2 + (name_length > 100) :]).route.HasField("retry_policy")
