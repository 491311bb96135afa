"""A Gateway's ClientTrafficPolicy (Envoy Gateway's) as its listeners get it: HTTP timeouts, the
router's own x-envoy-* headers, and a warning for each field aigw-xds does not implement (the rest
applies). Its buffer limit and client address: test_compile.py, test_client_address.py."""

from __future__ import annotations

from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from aigw_xds.keys import ResourceKey
from tests.resource_text import client_traffic_policy, gateway
from tests.unit.test_client_address import _manager
from tests.unit.test_traffic_policy import base, compiled

POLICY = ResourceKey("ClientTrafficPolicy", "default", "ctp")


def _router(manager) -> router_pb2.Router:
    router = router_pb2.Router()
    manager.http_filters[-1].typed_config.Unpack(router)
    return router


def test_without_a_policy_no_request_or_stream_is_cut_short_and_envoy_adds_no_headers_of_its_own():
    """LLM answers stream for minutes: no request or stream idle timeout below the routes'; the
    router's x-envoy-* headers off, as Envoy Gateway's default (a provider is not told the gateway's
    host: x-envoy-original-host)."""
    manager = _manager(compiled(base()))
    assert manager.request_timeout.ToSeconds() == 0 and manager.stream_idle_timeout.ToSeconds() == 0
    assert not manager.HasField("request_headers_timeout")
    assert not manager.common_http_protocol_options.HasField("idle_timeout")  # Envoy's hour
    assert manager.http_filters[-1].name == "envoy.filters.http.router"
    assert _router(manager).suppress_envoy_headers


def test_the_http_timeouts_and_envoy_headers_of_a_policy():
    timeouts = (
        "timeout: {http: {requestReceivedTimeout: 30s, requestHeadersReceivedTimeout: 5s, "
        "idleTimeout: 15m, streamIdleTimeout: 1m30s}}\n  headers: {enableEnvoyHeaders: true}"
    )
    result = compiled(base() + client_traffic_policy(timeouts))
    assert result.errors == [] and [d for d in result.diagnostics if d.resource == POLICY] == []
    manager = _manager(result)
    assert manager.request_timeout.ToSeconds() == 30
    assert manager.request_headers_timeout.ToSeconds() == 5
    assert manager.common_http_protocol_options.idle_timeout.ToSeconds() == 900
    assert manager.stream_idle_timeout.ToMilliseconds() == 90_000
    assert not _router(manager).suppress_envoy_headers


def test_a_zero_timeout_is_none():
    zero = client_traffic_policy("timeout: {http: {streamIdleTimeout: 0s, idleTimeout: 0s}}")
    manager = _manager(compiled(base() + zero))
    assert manager.stream_idle_timeout.ToSeconds() == 0
    assert manager.common_http_protocol_options.HasField("idle_timeout")  # Envoy's 0: no idle limit
    assert manager.common_http_protocol_options.idle_timeout.ToSeconds() == 0


def test_a_malformed_duration_is_an_error_naming_the_field():
    result = compiled(base() + client_traffic_policy("timeout: {http: {idleTimeout: 15 minutes}}"))
    [error] = [e for e in result.errors if e.resource == POLICY]
    assert error.field == "spec.timeout.http.idleTimeout" and "invalid duration '15 minutes'" in error.message


def test_each_field_not_implemented_is_warned_about_and_the_rest_applies():
    """Envoy Gateway's ClientTrafficPolicy has more fields than aigw-xds implements (HTTP/3,
    proxy protocol, health checks, TCP listeners' timeouts...): none is ignored without a word."""
    spec = (
        "timeout: {tcp: {idleTimeout: 1h}, http: {idleTimeout: 10m}}\n"
        "  headers: {earlyRequestHeaders: {removeOnMatch: [{prefix: x-debug-}]}}\n"
        "  connection: {bufferLimit: 1Mi, socketBufferLimit: 1Mi}\n"
        "  clientIPDetection: {xForwardedFor: {numTrustedHops: 1, disableXForwardedForAppend: true}}\n"
        "  http3: {}\n"  # (Envoy Gateway's, not a typo of http2)
        "  http1: {enableTrailers: true}"
    )
    result = compiled(base() + client_traffic_policy(spec))
    assert result.errors == []
    warned = {d.field: d.message for d in result.diagnostics if d.resource == POLICY}
    assert set(warned) == {
        "spec.timeout.tcp",
        "spec.headers.earlyRequestHeaders.removeOnMatch",
        "spec.connection.socketBufferLimit",
        "spec.clientIPDetection.xForwardedFor.disableXForwardedForAppend",
        "spec.http3",
    }, warned
    assert warned["spec.http3"] == "http3 is not supported yet; the rest of the policy applies without it"
    manager = _manager(result)
    assert manager.common_http_protocol_options.idle_timeout.ToSeconds() == 600 and manager.xff_num_trusted_hops == 1
    assert manager.http_protocol_options.enable_trailers
    assert result.gateways["default/gw"].listeners[0].client.buffer_limit == 1024 * 1024


def test_a_misspelt_field_is_an_error_said_once_and_the_gateway_is_not_served_without_it():
    """A misspelt ClientTrafficPolicy field is said once (not also "not supported yet", as if it were
    a field of Envoy Gateway's: a new user's finding), and as an error: `clientValidaton` would serve
    the HTTPS listeners without the client certificates asked for (a new user's trial met it, live).
    What the policy targets is not served without it; an invalid value likewise."""
    for spec, field, says in (
        (
            "timeout: {http: {requestRecievedTimeout: 30s}}",
            "spec.timeout.http.requestRecievedTimeout",
            "did you mean requestReceivedTimeout?",
        ),
        ("tls: {clientValidaton: {mode: RequireAny}}", "spec.tls.clientValidaton", "did you mean clientValidation?"),
        ("tls: {minVersion: 1.3}", "spec.tls.minVersion", "YAML read 1.3 as a float (quote it)"),
    ):
        result = compiled(base() + client_traffic_policy(spec))
        [said] = [d for d in result.diagnostics if d.resource == POLICY]
        assert said.is_error and said.field == field and says in said.message, (spec, said)
        assert "default/gw" not in result.gateways and "default/gw" in result.failed, spec


def test_a_policy_naming_a_gateway_that_is_not_there_is_an_error_on_its_target():
    """`secur` for `secure`: the policy applies to nothing, and the Gateway it was meant for would
    be served without it (a new user's trial met it: mTLS off, live, without a word)."""
    result = compiled(base() + client_traffic_policy("tls: {minVersion: '1.3'}", gateway_name="gx"))
    [error] = [e for e in result.errors if e.resource == POLICY]
    assert error.field == "spec.targetRefs[0].name"
    assert error.message == "Gateway default/gx not found: this policy applies to nothing there"
    assert POLICY in result.mistargeted


def test_header_path_and_http2_settings_of_a_policy():
    spec = (
        "headers: {withUnderscoresAction: DropHeader}\n"
        "  path: {escapedSlashesAction: RejectRequest}\n"
        "  http2: {initialStreamWindowSize: 256Ki, initialConnectionWindowSize: 2Mi, maxConcurrentStreams: 50, "
        "onInvalidMessage: TerminateStream}"
    )
    result = compiled(base() + client_traffic_policy(spec))
    assert result.errors == [] and [d for d in result.diagnostics if d.resource == POLICY] == []
    manager = _manager(result)
    assert manager.common_http_protocol_options.headers_with_underscores_action == 2  # DROP_HEADER
    assert manager.path_with_escaped_slashes_action == hcm_pb2.HttpConnectionManager.REJECT_REQUEST
    assert manager.merge_slashes  # Envoy Gateway merges them unless disableMergeSlashes
    http2 = manager.http2_protocol_options
    assert http2.initial_stream_window_size.value == 256 * 1024
    assert http2.initial_connection_window_size.value == 2 * 1024 * 1024
    assert http2.max_concurrent_streams.value == 50 and http2.override_stream_error_on_invalid_http_message.value
    default = _manager(compiled(base()))
    assert not default.merge_slashes and not default.HasField("http2_protocol_options")
    assert default.path_with_escaped_slashes_action == hcm_pb2.HttpConnectionManager.IMPLEMENTATION_SPECIFIC_DEFAULT
    kept = _manager(compiled(base() + client_traffic_policy("path: {disableMergeSlashes: true}")))
    assert not kept.merge_slashes


def test_an_http2_window_envoy_would_refuse_is_an_error_naming_the_field():
    """(Envoy refuses the whole listener: the Gateway would keep its last configuration anyway.)"""
    result = compiled(base() + client_traffic_policy("http2: {initialStreamWindowSize: 1Ki}"))
    [error] = [e for e in result.errors if e.resource == POLICY]
    assert error.field == "spec.http2.initialStreamWindowSize" and "not a window Envoy takes" in error.message


def test_validate_status_says_which_policy_applies_which_another_beats_and_which_is_invalid():
    """Each ClientTrafficPolicy a Gateway takes has its Accepted condition (`validate --status`, a new
    user's trial found none): True where it applies, Conflicted where an older one beats it, Invalid
    with its first error where it does not validate."""
    older = client_traffic_policy("timeout: {http: {idleTimeout: 15m}}", name="a-older")
    newer = client_traffic_policy("timeout: {http: {idleTimeout: 5m}}", name="b-newer")
    statuses = compiled(base() + older + newer).statuses
    [applied] = statuses[ResourceKey("ClientTrafficPolicy", "default", "a-older")]
    assert (applied.type, applied.status, applied.message) == (
        "Accepted",
        True,
        "applies to listener http of Gateway default/gw",
    )
    [beaten] = statuses[ResourceKey("ClientTrafficPolicy", "default", "b-newer")]
    assert (beaten.status, beaten.reason) == (False, "Conflicted") and "default/a-older" in beaten.message
    invalid = compiled(base() + client_traffic_policy("http2: {initialStreamWindowSize: 1Ki}")).statuses
    [condition] = invalid[POLICY]
    assert (condition.status, condition.reason) == (False, "Invalid")
    assert condition.message.startswith("spec.http2.initialStreamWindowSize")


def test_a_gateway_policy_that_listener_policies_override_says_where_and_is_warned_when_it_applies_nowhere():
    """As Envoy Gateway's Overridden condition: a new user's Gateway policy was silently left out
    where a listener's policy took its one listener."""
    gateway_wide = client_traffic_policy("connection: {connectionLimit: {value: 1000}}", name="aa-limits")
    listener = client_traffic_policy("timeout: {http: {idleTimeout: 5m}}", name="zz-http", section="http")
    result = compiled(base() + gateway_wide + listener)
    wide = {c.type: c for c in result.statuses[ResourceKey("ClientTrafficPolicy", "default", "aa-limits")]}
    assert wide["Overridden"].status and "naming listeners http of Gateway default/gw" in wide["Overridden"].message
    assert wide["Accepted"].message == "applies to no listener of Gateway default/gw"
    [warned] = [
        d for d in result.diagnostics if d.resource == ResourceKey("ClientTrafficPolicy", "default", "aa-limits")
    ]
    assert warned.field == "spec.targetRefs" and warned.message.startswith("this policy applies to no listener")
    [named] = result.statuses[ResourceKey("ClientTrafficPolicy", "default", "zz-http")]
    assert named.message == "applies to listener http of Gateway default/gw"


def test_a_policy_naming_a_listener_that_is_not_there_is_invalid_in_its_status_too():
    result = compiled(base() + client_traffic_policy("timeout: {http: {idleTimeout: 5m}}", section="nosuch"))
    [condition] = result.statuses[POLICY]
    assert (condition.status, condition.reason) == (False, "Invalid") and "has no listener nosuch" in condition.message


def test_a_gateway_policy_overridden_on_one_gateway_but_applying_to_another_is_not_said_to_apply_nowhere():
    """Found by review: a policy naming two Gateways, overridden on one, was warned to apply to none."""
    other = "---" + gateway(name="other", port=8081).split("---", 1)[1]  # (one GatewayClass)
    two = client_traffic_policy("timeout: {http: {idleTimeout: 15m}}", name="aa-both").replace(
        "name: gw}]", "name: gw}, {group: gateway.networking.k8s.io, kind: Gateway, name: other}]"
    )
    listener = client_traffic_policy("timeout: {http: {idleTimeout: 5m}}", name="zz-http", section="http")
    result = compiled(base() + other + two + listener)
    key = ResourceKey("ClientTrafficPolicy", "default", "aa-both")
    assert not [d for d in result.diagnostics if d.resource == key]
    conditions = {c.type: c for c in result.statuses[key]}
    assert conditions["Accepted"].message == "applies to listener http of Gateway default/other"
