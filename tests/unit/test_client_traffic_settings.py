"""A ClientTrafficPolicy's TLS, keepalive, connection limit, request-id, early header, client
certificate header, HTTP/1, PROXY protocol and health check settings as the Gateway's Envoy
listeners get them (Envoy Gateway's rendering of each), and the errors that name the field when
one cannot apply. Real Envoy takes them: tests/e2e/test_client_traffic_envoy.py."""

from __future__ import annotations

import json

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.health_check.v3 import health_check_pb2
from envoy.extensions.filters.listener.proxy_protocol.v3 import proxy_protocol_pb2
from envoy.extensions.filters.network.connection_limit.v3 import connection_limit_pb2
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import header_mutation_pb2 as early_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from aigw_xds.keys import ResourceKey
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import BuildSettings, build_fleet
from tests.e2e.harness.certs import CertificateAuthority
from tests.resource_text import backend, client_traffic_policy, gateway, key_pair, route, tls_secret
from tests.unit.test_client_address import _manager, manager_of
from tests.unit.test_traffic_policy import FALLBACK, base, compiled

POLICY = ResourceKey("ClientTrafficPolicy", "default", "ctp")
CLIENTS_CA, OTHER_CA = CertificateAuthority("clients"), CertificateAuthority("more clients")
CA_PEM = CLIENTS_CA.pem
HTTPS = (
    "    - {name: https, protocol: HTTPS, port: 8443, hostname: gw.example.com, tls: {certificateRefs: [{name: cert}]}}"
)


def https_base() -> str:
    return (
        gateway(extra_listeners=HTTPS) + tls_secret() + route("r", FALLBACK) + backend("a", 9001) + backend("b", 9002)
    )


def ca_secret(name: str = "clients-ca", key: str = "ca.crt", value: str = CA_PEM, kind: str = "Secret") -> str:
    data = "stringData" if kind == "Secret" else "data"
    return f"""
---
apiVersion: v1
kind: {kind}
metadata: {{name: {name}, namespace: default}}
{data}: {{{key}: {json.dumps(value)}}}
"""


def listeners(result) -> dict[str, listener_pb2.Listener]:
    return build_fleet(result.gateways["default/gw"], BuildSettings()).messages(type_urls.LISTENER)


def https_context(result) -> tls_pb2.DownstreamTlsContext:
    listener = listeners(result)["default/gw/8443"]
    context = tls_pb2.DownstreamTlsContext()
    listener.filter_chains[0].transport_socket.typed_config.Unpack(context)
    return context


def policy_said(result) -> dict[str, str]:
    return {d.field: d.message for d in result.diagnostics if d.resource == POLICY}


def test_without_a_policy_an_https_listener_offers_envoys_versions_and_no_session_resumption():
    """As Envoy Gateway renders an HTTPS listener without a ClientTrafficPolicy."""
    context = https_context(compiled(https_base()))
    assert not context.common_tls_context.HasField("tls_params")
    assert list(context.common_tls_context.alpn_protocols) == ["h2", "http/1.1"]
    assert context.disable_stateless_session_resumption and context.disable_stateful_session_resumption
    assert not context.HasField("require_client_certificate")


def test_tls_versions_suites_curves_alpn_and_resumption_of_a_policy():
    spec = (
        "tls: {minVersion: '1.2', maxVersion: '1.2', ciphers: [ECDHE-RSA-AES128-GCM-SHA256], "
        "ecdhCurves: [X25519], signatureAlgorithms: [ecdsa_secp256r1_sha256], alpnProtocols: [http/1.1], "
        "session: {resumption: {stateless: {}}}}"
    )
    result = compiled(https_base() + client_traffic_policy(spec))
    assert result.errors == [] and policy_said(result) == {}
    context = https_context(result)
    params = context.common_tls_context.tls_params
    assert params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLSv1_2
    assert params.tls_maximum_protocol_version == common_pb2.TlsParameters.TLSv1_2
    assert list(params.cipher_suites) == ["ECDHE-RSA-AES128-GCM-SHA256"]
    assert list(params.ecdh_curves) == ["X25519"]
    assert list(params.signature_algorithms) == ["ecdsa_secp256r1_sha256"]
    assert list(context.common_tls_context.alpn_protocols) == ["http/1.1"]
    assert not context.disable_stateless_session_resumption and context.disable_stateful_session_resumption
    # A policy without tls: Envoy Gateway's explicit 1.2 to 1.3.
    plain = https_context(compiled(https_base() + client_traffic_policy("headers: {enableEnvoyHeaders: true}")))
    assert plain.common_tls_context.tls_params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLSv1_2
    assert plain.common_tls_context.tls_params.tls_maximum_protocol_version == common_pb2.TlsParameters.TLSv1_3
    # An empty ALPN list offers none.
    none = https_context(compiled(https_base() + client_traffic_policy("tls: {alpnProtocols: []}")))
    assert list(none.common_tls_context.alpn_protocols) == []


def test_tls_on_a_gateway_without_https_listeners_is_said_to_apply_to_none():
    result = compiled(base() + client_traffic_policy("tls: {minVersion: '1.3'}"))
    assert result.errors == []
    assert policy_said(result) == {"spec.tls": "the policy applies to no HTTPS listener: tls applies to none"}


def test_version_rules_envoy_gateway_s_schema_enforces_are_errors_naming_the_field():
    for tls, says in (
        (
            "{minVersion: '1.3', ciphers: [ECDHE-RSA-AES128-GCM-SHA256]}",
            "ciphers have no effect when minVersion is 1.3",
        ),
        ("{minVersion: '1.3', maxVersion: '1.2'}", "maxVersion 1.2 is below minVersion 1.3"),
        ("{maxVersion: '1.1'}", "maxVersion 1.1 is below minVersion 1.2 (the default minVersion)"),
        ("{minVersion: '1.4'}", "Input should be 'Auto', '1.0', '1.1', '1.2' or '1.3'"),
    ):
        result = compiled(https_base() + client_traffic_policy(f"tls: {tls}"))
        [error] = [e for e in result.errors if e.resource == POLICY]
        assert error.field.startswith("spec.tls") and says in error.message, (tls, error)


def test_client_certificates_verified_against_a_secret_s_and_a_config_map_s_cas():
    """RequireAndVerify (the default mode): a certificate is required and verified against the CAs
    (an SDS secret named after the policy, Envoy Gateway's name), each bundle once."""
    spec = (
        "tls: {clientValidation: {caCertificateRefs: [{name: clients-ca}, {kind: ConfigMap, name: more-cas}, "
        "{name: clients-ca}]}}"
    )
    other = OTHER_CA.pem
    result = compiled(
        https_base()
        + ca_secret()
        + ca_secret("more-cas", key="bundle.pem", value=other, kind="ConfigMap")
        + client_traffic_policy(spec)
    )
    assert result.errors == [] and policy_said(result) == {}
    context = https_context(result)
    assert context.require_client_certificate.value
    sds = context.common_tls_context.validation_context_sds_secret_config
    assert sds.name == "default/ctp/ca.crt" and sds.sds_config.HasField("ads")
    secrets = build_fleet(result.gateways["default/gw"], BuildSettings()).messages(type_urls.SECRET)
    trusted = secrets["default/ctp/ca.crt"].validation_context.trusted_ca.inline_string
    assert trusted == CA_PEM + other


def test_client_validation_modes():
    """VerifyIfGiven (optional: true) asks for a certificate and verifies one given; Request and
    RequireAny accept any certificate (RequireAny requires one). Envoy asks for a certificate only
    given CAs (a review found RequireAny without them requiring none), and checks nothing of one in
    the modes that take any: either is an error."""
    verify_if_given = compiled(
        https_base()
        + ca_secret()
        + client_traffic_policy("tls: {clientValidation: {optional: true, caCertificateRefs: [{name: clients-ca}]}}")
    )
    context = https_context(verify_if_given)
    assert context.HasField("require_client_certificate") and not context.require_client_certificate.value
    assert context.common_tls_context.validation_context_sds_secret_config.name == "default/ctp/ca.crt"
    any_chain = common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED
    for mode, required in (("RequireAny", True), ("Request", False)):
        spec = f"tls: {{clientValidation: {{mode: {mode}, caCertificateRefs: [{{name: clients-ca}}]}}}}"
        context = https_context(compiled(https_base() + ca_secret() + client_traffic_policy(spec)))
        combined = context.common_tls_context.combined_validation_context
        assert combined.default_validation_context.trust_chain_verification == any_chain
        assert combined.validation_context_sds_secret_config.name == "default/ctp/ca.crt"
        assert context.require_client_certificate.value == required
    for spec, says in (
        ("{mode: RequireAny}", "mode RequireAny: Envoy asks for client certificates only given caCertificateRefs"),
        (
            "{mode: Request, caCertificateRefs: [{name: clients-ca}], subjectAltNames: {dnsNames: [{value: a}]}}",
            "subjectAltNames: mode Request takes any certificate, checking none of them",
        ),
    ):
        result = compiled(https_base() + ca_secret() + client_traffic_policy(f"tls: {{clientValidation: {spec}}}"))
        [error] = [e for e in result.errors if e.resource == POLICY]
        assert error.field == "spec.tls.clientValidation" and error.message == says


def test_a_client_ca_that_cannot_be_read_is_an_error_naming_the_field():
    for extra, spec, says in (
        ("", "{caCertificateRefs: [{name: clients-ca}]}", "Secret default/clients-ca not found"),
        (ca_secret(value="not a certificate"), "{caCertificateRefs: [{name: clients-ca}]}", "holds no PEM certificate"),
        (ca_secret(key="other"), "{caCertificateRefs: [{name: clients-ca}]}", None),  # its only key: taken
        ("", "{mode: RequireAndVerify}", "caCertificateRefs names the CAs to trust"),
        ("", "{caCertificateRefs: [{name: clients-ca, namespace: other}]}", "needs a ReferenceGrant"),
    ):
        result = compiled(https_base() + extra + client_traffic_policy(f"tls: {{clientValidation: {spec}}}"))
        errors = [e for e in result.errors if e.resource == POLICY]
        if says is None:
            assert errors == [], errors
            continue
        [error] = errors
        assert error.field.startswith("spec.tls.clientValidation") and says in error.message, (spec, error)


def test_keepalive_and_connection_settings():
    spec = (
        "tcpKeepalive: {probes: 3, idleTime: 5m, interval: 30s}\n"
        "  connection: {connectionLimit: {value: 100, closeDelay: 1s, maxConnectionDuration: 1h, "
        "maxRequestsPerConnection: 1000, maxStreamDuration: 10m}, maxAcceptPerSocketEvent: 4}"
    )
    result = compiled(base() + client_traffic_policy(spec))
    assert result.errors == [] and policy_said(result) == {}
    [listener] = listeners(result).values()
    options = {(o.level, o.name): o.int_value for o in listener.socket_options}
    assert options == {(1, 9): 1, (6, 6): 3, (6, 4): 300, (6, 5): 30}  # SO_KEEPALIVE, KEEPCNT, KEEPIDLE, KEEPINTVL
    assert listener.max_connections_to_accept_per_socket_event.value == 4
    first, hcm = listener.filter_chains[0].filters
    assert first.name == "envoy.filters.network.connection_limit"
    assert hcm.name == "envoy.filters.network.http_connection_manager"
    limit = connection_limit_pb2.ConnectionLimit()
    first.typed_config.Unpack(limit)
    assert limit.max_connections.value == 100 and limit.delay.ToSeconds() == 1 and limit.stat_prefix
    common = _manager(result).common_http_protocol_options
    assert common.max_connection_duration.ToSeconds() == 3600 and _manager(result).http1_safe_max_connection_duration
    assert common.max_requests_per_connection.value == 1000 and common.max_stream_duration.ToSeconds() == 600
    bare = listeners(compiled(base())).popitem()[1]
    assert not bare.socket_options and len(bare.filter_chains[0].filters) == 1


def test_connection_and_keepalive_values_envoy_gateway_refuses_are_errors():
    for spec, field in (
        ("connection: {connectionLimit: {closeDelay: 1s}}", "spec.connection.connectionLimit"),
        ("connection: {connectionLimit: {value: 0}}", "spec.connection.connectionLimit.value"),
        ("tcpKeepalive: {interval: 500ms}", "spec.tcpKeepalive.interval"),
    ):
        [error] = [e for e in compiled(base() + client_traffic_policy(spec)).errors if e.resource == POLICY]
        assert error.field == field, (spec, error)


def test_request_id_settings():
    """Without a policy the client's x-request-id is kept (else one is made); requestID says otherwise
    (preserveXRequestID: true, Envoy Gateway's older switch, is PreserveOrGenerate)."""
    default = _manager(compiled(base()))
    assert default.preserve_external_request_id and not default.HasField("generate_request_id")
    for setting, generate, preserve in (
        ("requestID: Generate", True, False),
        ("requestID: Preserve", False, True),
        ("requestID: Disable", False, False),
        ("preserveXRequestID: true", True, True),
    ):
        manager = _manager(compiled(base() + client_traffic_policy(f"headers: {{{setting}}}")))
        assert (manager.generate_request_id.value, manager.preserve_external_request_id) == (generate, preserve)
    both = compiled(base() + client_traffic_policy("headers: {requestID: Generate, preserveXRequestID: true}"))
    [error] = [e for e in both.errors if e.resource == POLICY]
    assert error.field == "spec.headers" and "not both" in error.message


def test_early_request_headers_come_after_the_gateway_s_own_removal_of_envoy_headers():
    """Each header once (add, then set, then addIfAbsent: its first mention), names lowercase; a
    policy's x-envoy-* header is set after the gateway dropped the client's."""
    spec = (
        "headers: {earlyRequestHeaders: {add: [{name: X-Team, value: a}], "
        "set: [{name: x-team, value: b}, {name: x-envoy-stage, value: edge}], "
        "addIfAbsent: [{name: x-tier, value: gold}], remove: [X-Debug, x-debug]}}"
    )
    result = compiled(base() + client_traffic_policy(spec))
    assert result.errors == [] and policy_said(result) == {}
    extensions = _manager(result).early_header_mutation_extensions
    assert [e.name for e in extensions] == ["envoy.http.early_header_mutation.header_mutation"] * 2
    ours, theirs = (early_pb2.HeaderMutation() for _ in range(2))
    extensions[0].typed_config.Unpack(ours)
    extensions[1].typed_config.Unpack(theirs)
    assert ours.mutations[0].remove_on_match.key_matcher.prefix == "x-envoy-"
    action = {
        m.append.header.key: (m.append.header.value, m.append.append_action)
        for m in theirs.mutations
        if m.append.header.key
    }
    assert action == {
        "x-team": ("a", 0),  # APPEND_IF_EXISTS_OR_ADD
        "x-envoy-stage": ("edge", 2),  # OVERWRITE_IF_EXISTS_OR_ADD
        "x-tier": ("gold", 1),  # ADD_IF_ABSENT
    }
    assert [m.remove for m in theirs.mutations if m.remove] == ["x-debug"]
    bad = compiled(base() + client_traffic_policy("headers: {earlyRequestHeaders: {set: [{name: ':path', value: /}]}}"))
    [error] = [e for e in bad.errors if e.resource == POLICY]
    assert error.field == "spec.headers.earlyRequestHeaders" and "':path' is not a header name" in error.message


def test_client_certificate_header_settings():
    spec = "headers: {xForwardedClientCert: {mode: SanitizeSet, certDetailsToAdd: [Subject, URI]}}"
    manager = _manager(compiled(base() + client_traffic_policy(spec)))
    assert manager.forward_client_cert_details == manager.SANITIZE_SET
    details = manager.set_current_client_cert_details
    assert details.subject.value and details.uri and not details.cert and not details.dns
    wrong = compiled(base() + client_traffic_policy("headers: {xForwardedClientCert: {certDetailsToAdd: [Cert]}}"))
    [error] = [e for e in wrong.errors if e.resource == POLICY]
    assert "only for mode AppendForward or SanitizeSet" in error.message


def test_http1_settings_and_http10_s_default_host():
    spec = "http1: {preserveHeaderCase: true, http10: {useDefaultHost: true}}"
    result = compiled(https_base() + client_traffic_policy(spec))
    assert result.errors == []
    for listener in listeners(result).values():
        manager = manager_of(listener)
        options = manager.http_protocol_options
        assert options.accept_http_10 and options.default_host_for_http_10 == "gw.example.com"
        assert options.header_key_format.stateful_formatter.name == "preserve_case"
    # A Gateway whose listeners name no host: HTTP/1.0 requests would have none.
    without = compiled(base() + client_traffic_policy(spec))
    [error] = [e for e in without.errors if e.resource == POLICY]
    assert error.field == "spec.http1.http10.useDefaultHost" and "no listener hostname" in error.message
    plain = _manager(compiled(base() + client_traffic_policy("http1: {http10: {}}"))).http_protocol_options
    assert plain.accept_http_10 and plain.default_host_for_http_10 == ""


def test_an_expired_revocation_list_is_warned_about_and_served_as_written():
    """Envoy refuses every client checked against a list past its nextUpdate (the e2e test shows it):
    compile says so, naming the issuer and when it expired; the list still goes to Envoy (refusing is
    what the operator asked for, failing closed)."""
    crl = CLIENTS_CA.revocation_list(expired=True)
    spec = "tls: {clientValidation: {caCertificateRefs: [{name: clients-ca}], crl: {refs: [{name: old}]}}}"
    result = compiled(
        https_base() + ca_secret() + ca_secret("old", key="ca.crl", value=crl) + client_traffic_policy(spec)
    )
    assert result.errors == []
    [(field, message)] = policy_said(result).items()
    assert field == "spec.tls.clientValidation.crl.refs"
    assert f"{CLIENTS_CA.cert.subject.rfc4514_string()}'s, expired " in message and "refuses every client" in message
    secret = build_fleet(result.gateways["default/gw"], BuildSettings()).messages(type_urls.SECRET)[
        "default/ctp/ca.crt"
    ]
    assert secret.validation_context.crl.inline_string == crl
    fresh = CLIENTS_CA.revocation_list()
    valid = compiled(
        https_base() + ca_secret() + ca_secret("old", key="ca.crl", value=fresh) + client_traffic_policy(spec)
    )
    assert policy_said(valid) == {}


def test_a_client_certificate_s_sans_hashes_and_revocation_are_checked_as_written():
    """Besides the CAs: SAN matchers, SPKI and certificate hashes and allowExpiredCertificate go in
    the listener's own validation context combined with the CAs' secret, which holds the CRLs."""
    crl = CLIENTS_CA.revocation_list(CLIENTS_CA.issue("revoked", client=True).cert)
    spki = "A" * 43 + "="
    spec = (
        "tls: {clientValidation: {caCertificateRefs: [{name: clients-ca}], allowExpiredCertificate: true, "
        f"spkiHashes: ['{spki}'], certificateHashes: ['{'ab' * 32}'], "
        "subjectAltNames: {dnsNames: [{value: a.example.com}], uris: [{type: Prefix, value: 'spiffe://x/'}], "
        "otherNames: [{oid: 1.3.6.1.4.1.311.20.2.3, type: Suffix, value: '@example.com'}]}, "
        "crl: {refs: [{name: revoked}], onlyVerifyLeafCertificate: true}}}"
    )
    result = compiled(
        https_base() + ca_secret() + ca_secret("revoked", key="ca.crl", value=crl) + client_traffic_policy(spec)
    )
    assert result.errors == [] and policy_said(result) == {}
    combined = https_context(result).common_tls_context.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "default/ctp/ca.crt"
    checks = combined.default_validation_context
    assert list(checks.verify_certificate_spki) == [spki] and list(checks.verify_certificate_hash) == ["ab" * 32]
    assert checks.allow_expired_certificate
    sans = [(m.san_type, m.matcher.WhichOneof("match_pattern"), m.oid) for m in checks.match_typed_subject_alt_names]
    assert sans == [
        (common_pb2.SubjectAltNameMatcher.DNS, "exact", ""),
        (common_pb2.SubjectAltNameMatcher.URI, "prefix", ""),
        (common_pb2.SubjectAltNameMatcher.OTHER_NAME, "suffix", "1.3.6.1.4.1.311.20.2.3"),
    ]
    secret = build_fleet(result.gateways["default/gw"], BuildSettings()).messages(type_urls.SECRET)[
        "default/ctp/ca.crt"
    ]
    assert secret.validation_context.crl.inline_string == crl and secret.validation_context.only_verify_leaf_cert_crl
    for bad, says in (
        (
            "{mode: Request, caCertificateRefs: [{name: clients-ca}], allowExpiredCertificate: true}",
            "allowExpiredCertificate: mode Request takes any certificate",
        ),
        ("{caCertificateRefs: [{name: clients-ca}], spkiHashes: [abc]}", "String should match pattern"),
        (
            "{caCertificateRefs: [{name: clients-ca}], crl: {refs: [{name: clients-ca}]}}",
            "holds no PEM revocation list",
        ),
    ):
        errors = [
            e
            for e in compiled(
                https_base() + ca_secret() + client_traffic_policy(f"tls: {{clientValidation: {bad}}}")
            ).errors
            if e.resource == POLICY
        ]
        assert len(errors) == 1 and says in errors[0].message, (bad, errors)


def test_a_certificate_or_key_envoy_could_not_load_is_an_error_naming_the_secret():
    """Envoy refuses a secret it cannot load, and with it the whole update of its kind: a new user's
    corrupt CA and mismatched key passed `validate`, and Envoy's refusal named no Secret."""
    cert, _ = key_pair()
    other_key = CertificateAuthority().issue("other").key
    corrupt = CA_PEM.replace(CA_PEM.splitlines()[2], "garbage")
    mismatched = tls_secret().replace(json.dumps(key_pair()[1]), json.dumps(other_key))
    listener = compiled(https_base().replace(tls_secret(), mismatched))
    [error] = [e for e in listener.errors if e.resource == ResourceKey("Gateway", "default", "gw")]
    assert error.field == "spec.listeners[1].tls.certificateRefs[0]"
    assert error.message == "Secret default/cert: tls.key is not the key of tls.crt's (first) certificate"
    bad_ca = compiled(
        https_base()
        + ca_secret(value=corrupt)
        + client_traffic_policy("tls: {clientValidation: {caCertificateRefs: [{name: clients-ca}]}}")
    )
    [error] = [e for e in bad_ca.errors if e.resource == POLICY]
    assert error.field == "spec.tls.clientValidation.caCertificateRefs[0]"
    assert "Secret default/clients-ca: ca.crt does not load as PEM certificates" in error.message
    assert "default/gw" not in bad_ca.gateways


def test_a_misspelt_field_is_said_before_the_error_it_leads_to():
    """`caCertificateRef` left the mode without its CAs: the new user read about a mode never written."""
    result = compiled(https_base() + client_traffic_policy("tls: {clientValidation: {caCertificateRef: [{name: a}]}}"))
    first, second = [d for d in result.diagnostics if d.resource == POLICY]
    assert (
        first.field == "spec.tls.clientValidation.caCertificateRef"
        and "did you mean caCertificateRefs?" in first.message
    )
    assert second.field == "spec.tls.clientValidation" and "caCertificateRefs names the CAs to trust" in second.message


def test_a_policy_naming_a_listener_governs_its_port_and_the_gateway_s_the_others():
    """As Envoy Gateway: the policy naming a listener (sectionName) first, then the Gateway's. A
    review found the section ignored: an older Gateway-wide policy won, and HTTPS took clients
    without the certificates the listener's policy required."""
    mtls = "tls: {clientValidation: {caCertificateRefs: [{name: clients-ca}]}}"
    text = https_base() + ca_secret() + client_traffic_policy("headers: {requestID: Generate}", name="a-defaults")
    result = compiled(text + client_traffic_policy(mtls, name="b-mtls", section="https"))
    assert result.errors == [] and [d for d in result.diagnostics if d.resource.kind == "ClientTrafficPolicy"] == []
    by_port = {listener.port: listener.client for listener in result.gateways["default/gw"].listeners}
    assert by_port[8443].tls.require_client_certificate and by_port[8443].request_id is None
    assert by_port[8080].request_id == "Generate" and by_port[8080].tls is None
    # A policy naming the plain listener alone leaves HTTPS as without a policy.
    only_http = compiled(
        https_base() + client_traffic_policy("connection: {connectionLimit: {value: 1}}", name="ctp", section="http")
    )
    by_port = {listener.port: listener.client for listener in only_http.gateways["default/gw"].listeners}
    assert by_port[8080].connection_limit == 1 and by_port[8443].connection_limit is None


def test_a_listener_a_policy_cannot_govern_alone_is_an_error():
    """A sectionName the Gateway does not have; a listener sharing its port with another (one
    filter chain serves the port's connections): the policy would not apply as written."""
    missing = compiled(https_base() + client_traffic_policy("tls: {minVersion: '1.3'}", name="ctp", section="htps"))
    [error] = [e for e in missing.errors if e.resource == POLICY]
    assert (
        error.field == "spec.targetRefs[0].sectionName" and error.message == "Gateway default/gw has no listener htps"
    )
    assert "default/gw" not in missing.gateways
    second = HTTPS.replace("name: https,", "name: https-b,").replace("gw.example.com", "b.example.com")
    shared = compiled(
        https_base().replace(HTTPS, HTTPS + "\n" + second)
        + client_traffic_policy("tls: {minVersion: '1.3'}", name="ctp", section="https")
    )
    [error] = [e for e in shared.errors if e.resource == POLICY]
    assert "listeners https, https-b of Gateway default/gw share port 8443" in error.message


def test_a_ca_bundle_reaches_envoy_as_its_certificates_alone():
    """A private key pasted into a CA bundle was served to Envoy, whose config dump shows CAs
    unredacted (a review found it there)."""
    pasted = CA_PEM + key_pair()[1]
    result = compiled(
        https_base()
        + ca_secret(value=pasted)
        + client_traffic_policy("tls: {clientValidation: {caCertificateRefs: [{name: clients-ca}]}}")
    )
    assert result.errors == []
    secrets = build_fleet(result.gateways["default/gw"], BuildSettings()).messages(type_urls.SECRET)
    served = secrets["default/ctp/ca.crt"].validation_context.trusted_ca.inline_string
    assert served == CA_PEM and "PRIVATE KEY" not in served


def test_names_envoy_would_refuse_are_errors_naming_the_field():
    """A cipher, curve or signature algorithm Envoy does not know made it refuse the listener, or
    the secret its TLS waited for (every HTTPS connection reset: a review's finding); a header value
    with a line break, or a certificate hash Envoy cannot read, made it refuse the listener."""
    for spec, field, says in (
        (
            "tls: {ciphers: [ECDHE-RSA-AES128-GCM-SHA256, NOT-A-CIPHER]}",
            "spec.tls.ciphers",
            "NOT-A-CIPHER is not a cipher suite",
        ),
        ("tls: {ecdhCurves: [X25519, P-999]}", "spec.tls.ecdhCurves", "P-999 is not a curve Envoy takes"),
        ("tls: {signatureAlgorithms: [bogus_sha1]}", "spec.tls.signatureAlgorithms", "bogus_sha1 is not a signature"),
        (
            'headers: {earlyRequestHeaders: {set: [{name: x-a, value: "a\\nb"}]}}',
            "spec.headers.earlyRequestHeaders",
            "the value of x-a holds a line break",
        ),
        (
            "tls: {clientValidation: {caCertificateRefs: [{name: clients-ca}], certificateHashes: ['1a:67:5e:46"
            + "00" * 30
            + "']}}",
            "spec.tls.clientValidation.certificateHashes[0]",
            "String should match pattern",
        ),
    ):
        result = compiled(https_base() + ca_secret() + client_traffic_policy(spec))
        [error] = [e for e in result.errors if e.resource == POLICY]
        assert error.field == field and says in error.message, (spec, error)
    fine = (
        "tls: {ciphers: ['[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]', "
        "TLS_RSA_WITH_AES_128_GCM_SHA256], ecdhCurves: [X25519MLKEM768, P-256], "
        "signatureAlgorithms: [RSA+SHA256, ed25519]}"
    )
    assert compiled(https_base() + client_traffic_policy(fine)).errors == []


def test_the_documented_mutual_tls_example_compiles_to_what_the_page_says(tmp_path):
    """docs/client-traffic.md's YAML, with its certificate files made: the HTTPS listener requires a
    certificate the clients' CA signed, with the SAN prefix; the plain listener is not affected."""
    from pathlib import Path

    from aigw_xds.compile import compile_resources
    from aigw_xds.sources.files import FileSource

    page = (Path(__file__).parents[2] / "docs" / "client-traffic.md").read_text()
    [example] = [block.split("\n", 1)[1] for block in page.split("```")[1::2] if block.startswith("yaml")]
    (tmp_path / "gateway.yaml").write_text(example)
    (tmp_path / "certs").mkdir()
    server_cert, server_key = key_pair()
    (tmp_path / "certs" / "server.crt").write_text(server_cert)
    (tmp_path / "certs" / "server.key").write_text(server_key)
    (tmp_path / "certs" / "clients-ca.crt").write_text(CA_PEM)
    result = compile_resources(FileSource(tmp_path).load())
    assert result.diagnostics == (), result.diagnostics
    gateway = result.gateways["default/secure"]
    built = build_fleet(gateway, BuildSettings()).messages(type_urls.LISTENER)
    context = tls_pb2.DownstreamTlsContext()
    built["default/secure/8443"].filter_chains[0].transport_socket.typed_config.Unpack(context)
    assert context.require_client_certificate.value
    checks = context.common_tls_context.combined_validation_context
    assert checks.validation_context_sds_secret_config.name == "default/mtls/ca.crt"
    assert checks.default_validation_context.match_typed_subject_alt_names[0].matcher.prefix.endswith("team-a/")
    assert context.common_tls_context.tls_params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLSv1_3
    plain = {listener.port: listener.client for listener in gateway.listeners}[1975]
    assert plain.tls is None and plain.connection_limit is None


def test_a_scalar_for_a_mapping_and_tls_on_a_plain_listener_are_said_plainly():
    """A new user's findings: `connectionLimit: 2` read "a valid dictionary or instance of
    ConnectionLimit" (a class name); an HTTP listener's tls went without a word (Gateway API's
    schema refuses it)."""
    scalar = compiled(base() + client_traffic_policy("connection: {connectionLimit: 2}"))
    [error] = [e for e in scalar.errors if e.resource == POLICY]
    assert error.field == "spec.connection.connectionLimit"
    assert error.message == "should be a mapping of its fields (key: value), not 2"
    plain_tls = base().replace("port: 8080}", "port: 8080, tls: {certificateRefs: [{name: cert}]}}")
    [error] = compiled(plain_tls).errors[:1]
    assert (error.field, error.message) == ("spec.listeners[0].tls", "tls is for HTTPS listeners, not HTTP ones")


def test_a_listener_needs_its_client_ca_secret_as_it_needs_its_certificates():
    """The snapshot's consistency check (and the order of sending) counts the CA secret the listener
    waits for, as its certificates'."""
    from aigw_xds.xds.cache import make_snapshot

    result = compiled(
        https_base()
        + ca_secret()
        + client_traffic_policy("tls: {clientValidation: {caCertificateRefs: [{name: clients-ca}]}}")
    )
    snapshot = make_snapshot("default/gw", build_fleet(result.gateways["default/gw"], BuildSettings()))
    needs = snapshot.of_type(type_urls.LISTENER)["default/gw/8443"].needs
    assert (type_urls.SECRET, "default/ctp/ca.crt") in needs and (type_urls.SECRET, "default/cert") in needs


def test_a_target_that_is_not_a_gateway_or_a_gateway_name_s_typo_keeps_the_gateway_from_being_served():
    """A new user's second trial: `kind: Gatway` was ignored without a word, and `run` started on a
    file whose policy named `secur` for `secure` served HTTPS taking clients without certificates."""
    mtls = "tls: {clientValidation: {caCertificateRefs: [{name: clients-ca}]}}"
    wrong_kind = client_traffic_policy(mtls).replace("kind: Gateway, name: gw", "kind: Gatway, name: gw")
    result = compiled(https_base() + ca_secret() + wrong_kind)
    [error] = [e for e in result.errors if e.resource == POLICY]
    assert "targetRefs[0] names a Gatway" in error.message and "default/gw" not in result.gateways
    typo = compiled(https_base() + ca_secret() + client_traffic_policy(mtls, gateway_name="gw1"))
    said = {(e.resource.kind, e.field): e.message for e in typo.errors}
    assert said[("ClientTrafficPolicy", "spec.targetRefs[0].name")].startswith("Gateway default/gw1 not found")
    assert said[("Gateway", "")].startswith(
        "ClientTrafficPolicy default/ctp names Gateway default/gw1 (spec.targetRefs[0]), which is not"
    )
    assert "default/gw" not in typo.gateways
    # A name close to none of the Gateways': the policy applies to nothing, and says so.
    far = compiled(https_base() + ca_secret() + client_traffic_policy(mtls, gateway_name="elsewhere"))
    assert "default/gw" in far.gateways and [e.resource.kind for e in far.errors] == ["ClientTrafficPolicy"]


def test_a_host_with_a_port_matches_its_virtual_host():
    """Clients send `Host: gw.example.com:8443` on any port but the scheme's; every route
    configuration matches hosts without their port, as Envoy Gateway's (a new user's HTTPS listener
    answered 404)."""
    from envoy.config.route.v3 import route_pb2

    fleet = build_fleet(compiled(https_base()).gateways["default/gw"], BuildSettings())
    for name, config in fleet.messages(type_urls.ROUTE).items():
        assert isinstance(config, route_pb2.RouteConfiguration) and config.ignore_port_in_host_matching, name


def test_a_policy_may_take_its_gateways_by_their_labels():
    """targetSelectors (Envoy Gateway's), for Gateways: a review found a policy selecting its
    Gateway by label applying to nothing, without a word, and HTTPS taking any client."""
    mtls = "tls: {clientValidation: {caCertificateRefs: [{name: clients-ca}]}}"

    def selecting(labels: str) -> str:
        policy = client_traffic_policy(mtls)
        selector = f"targetSelectors: [{{group: gateway.networking.k8s.io, kind: Gateway, matchLabels: {labels}}}]"
        return policy.replace(
            "  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]", "  " + selector
        )

    labelled = https_base().replace(
        "metadata: {name: gw, namespace: default}", "metadata: {name: gw, namespace: default, labels: {tier: edge}}"
    )
    chosen = compiled(labelled + ca_secret() + selecting("{tier: edge}"))
    assert chosen.errors == []
    assert https_context(chosen).require_client_certificate.value
    other = compiled(labelled + ca_secret() + selecting("{tier: core}"))
    assert all(listener.client.tls is None for listener in other.gateways["default/gw"].listeners)
    expressions = selecting("{tier: edge}").replace(
        "matchLabels: {tier: edge}", "matchExpressions: [{key: tier, operator: Exists}]"
    )
    [error] = [e for e in compiled(labelled + ca_secret() + expressions).errors if e.resource == POLICY]
    assert "matchExpressions" in error.field


def test_a_policy_selecting_gateways_by_label_that_does_not_validate_keeps_them_from_being_served():
    """Which Gateways an invalid policy's targetSelectors take is not read: each Gateway of its
    namespace is not served without it (a selector-only policy in error left HTTPS taking any client)."""
    selector = "  targetSelectors: [{group: gateway.networking.k8s.io, kind: Gateway, matchLabels: {tier: edge}}]"
    named = "  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]"
    broken = client_traffic_policy("tls: {minVersion: 1.3}").replace(named, selector)
    result = compiled(https_base() + broken)
    assert "default/gw" not in result.gateways and "default/gw" in result.failed
    # Kubernetes mode serves the Gateway without it: without its routes too.
    from aigw_xds.controller import Controller
    from aigw_xds.xds.cache import SnapshotCache
    from tests.resource_text import resources

    cache = SnapshotCache()
    Controller(cache, BuildSettings(translator_enabled=False), b"s" * 32, exclude_invalid=True).apply(
        resources(https_base() + broken)
    )
    configs = cache.get("default/gw").of_type(type_urls.ROUTE).values()
    assert not any(r.route.cluster for c in configs for vh in c.message.virtual_hosts for r in vh.routes)


def test_proxy_protocol_is_the_listeners_first_filter():
    """proxyProtocol (Envoy Gateway's rendering): the PROXY header read before anything else,
    required unless `optional`; enableProxyProtocol, its older switch, when proxyProtocol is not set.
    The listener ports of policies without it read none (they had been warned as unsupported)."""
    for spec, optional in (
        ("proxyProtocol: {}", False),
        ("proxyProtocol: {optional: true}", True),
        ("enableProxyProtocol: true", False),
        ("enableProxyProtocol: false\n  proxyProtocol: {optional: true}", True),
    ):
        result = compiled(base() + client_traffic_policy(spec))
        assert result.errors == [] and policy_said(result) == {}, spec
        [listener] = listeners(result).values()
        [reader] = listener.listener_filters
        assert reader.name == "envoy.filters.listener.proxy_protocol"
        settings = proxy_protocol_pb2.ProxyProtocol()
        reader.typed_config.Unpack(settings)
        assert settings.allow_requests_without_proxy_protocol is optional, spec
    for spec in ("enableProxyProtocol: false", "tcpKeepalive: {probes: 3}"):
        [listener] = listeners(compiled(base() + client_traffic_policy(spec))).values()
        assert not listener.listener_filters, spec


def test_health_check_is_answered_by_envoy_before_any_other_filter():
    result = compiled(base() + client_traffic_policy("healthCheck: {path: /healthz}"))
    assert result.errors == [] and policy_said(result) == {}
    filters = _manager(result).http_filters
    # (The first takes the Gateway's name, Envoy's x-envoy-upstream-healthchecked-cluster, off the answer.)
    assert [f.name for f in filters[:2]] == ["aigw.health_check_answer", "envoy.filters.http.health_check"]
    check = health_check_pb2.HealthCheck()
    filters[1].typed_config.Unpack(check)
    assert not check.pass_through_mode.value and check.HasField("pass_through_mode")
    [header] = check.headers
    assert (header.name, header.string_match.exact) == (":path", "/healthz")
    assert all(f.name != "envoy.filters.http.health_check" for f in _manager(compiled(base())).http_filters)
    [error, *_] = compiled(base() + client_traffic_policy("healthCheck: {path: healthz}")).errors
    assert error.resource == POLICY and error.field == "spec.healthCheck.path" and "is not a path" in error.message
    # A path of the AI APIs: Envoy would answer every request for it itself (found by a new user).
    for path in ("/v1/chat/completions", "/v1/models", "/anthropic/v1/messages"):
        [error, *_] = compiled(base() + client_traffic_policy(f"healthCheck: {{path: {path}}}")).errors
        assert error.field == "spec.healthCheck.path" and "is a path of the AI APIs the gateway serves" in error.message
