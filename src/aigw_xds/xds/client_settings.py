"""What a Gateway's ClientTrafficPolicy (ir.ClientTraffic) sets on its Envoy listeners, as Envoy
Gateway renders it: the HTTP connection manager's timeouts, client address, protocol, header and
request-id settings, the early header changes, the connection limit filter, keepalive socket
options, the PROXY protocol's listener filter, the health check filter, and the downstream TLS
context (versions, suites, ALPN, client certificate validation, session resumption)."""

from __future__ import annotations

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, extension_pb2, protocol_pb2, socket_option_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.health_check.v3 import health_check_pb2
from envoy.extensions.filters.listener.proxy_protocol.v3 import proxy_protocol_pb2
from envoy.extensions.filters.network.connection_limit.v3 import connection_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import header_mutation_pb2 as early_pb2
from envoy.extensions.http.header_formatters.preserve_case.v3 import preserve_case_pb2
from envoy.extensions.http.original_ip_detection.custom_header.v3 import custom_header_pb2
from envoy.extensions.http.original_ip_detection.xff.v3 import xff_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import wrappers_pb2

from ..compile import ir
from .messages import ads, duration, packed

_UNDERSCORES = {
    "Allow": protocol_pb2.HttpProtocolOptions.ALLOW,
    "RejectRequest": protocol_pb2.HttpProtocolOptions.REJECT_REQUEST,
    "DropHeader": protocol_pb2.HttpProtocolOptions.DROP_HEADER,
}
_ESCAPED_SLASHES = {
    "KeepUnchanged": hcm_pb2.HttpConnectionManager.KEEP_UNCHANGED,
    "RejectRequest": hcm_pb2.HttpConnectionManager.REJECT_REQUEST,
    "UnescapeAndRedirect": hcm_pb2.HttpConnectionManager.UNESCAPE_AND_REDIRECT,
    "UnescapeAndForward": hcm_pb2.HttpConnectionManager.UNESCAPE_AND_FORWARD,
}
# requestID: (generate_request_id, preserve_external_request_id).
_REQUEST_ID = {
    "PreserveOrGenerate": (True, True),
    "Preserve": (False, True),
    "Generate": (True, False),
    "Disable": (False, False),
}
_CLIENT_CERT_MODES = {
    "Sanitize": hcm_pb2.HttpConnectionManager.SANITIZE,
    "ForwardOnly": hcm_pb2.HttpConnectionManager.FORWARD_ONLY,
    "AppendForward": hcm_pb2.HttpConnectionManager.APPEND_FORWARD,
    "SanitizeSet": hcm_pb2.HttpConnectionManager.SANITIZE_SET,
    "AlwaysForwardOnly": hcm_pb2.HttpConnectionManager.ALWAYS_FORWARD_ONLY,
}
_CLIENT_CERT_DETAILS = {"Cert": "cert", "Chain": "chain", "DNS": "dns", "URI": "uri"}


def client_protocol(manager: hcm_pb2.HttpConnectionManager, client: ir.ClientTraffic) -> None:
    """The client's address, and a ClientTrafficPolicy's timeouts, header, path, request-id,
    client-certificate-header, connection and HTTP/1 and HTTP/2 settings, where it has them (after
    the client address's settings: requestID overrides their keeping of the client's x-request-id)."""
    # Streams of LLM responses run long: unless a ClientTrafficPolicy says otherwise, no idle
    # cut-off below the route timeouts.
    manager.stream_idle_timeout.CopyFrom(duration(client.stream_idle_s))
    manager.request_timeout.CopyFrom(duration(client.request_received_s))
    if client.request_headers_received_s:
        manager.request_headers_timeout.CopyFrom(duration(client.request_headers_received_s))
    common = manager.common_http_protocol_options
    if client.idle_s is not None:
        common.idle_timeout.CopyFrom(duration(client.idle_s))
    _client_address(manager, client.client_ip)
    if client.headers_with_underscores is not None:
        common.headers_with_underscores_action = _UNDERSCORES[client.headers_with_underscores]
    if client.max_connection_s is not None:
        common.max_connection_duration.CopyFrom(duration(client.max_connection_s))
        manager.http1_safe_max_connection_duration = True  # (Envoy Gateway's: drained, not cut mid-request)
    if client.max_requests_per_connection is not None:
        common.max_requests_per_connection.value = client.max_requests_per_connection
    if client.max_stream_s is not None:
        common.max_stream_duration.CopyFrom(duration(client.max_stream_s))
    if client.escaped_slashes is not None:
        manager.path_with_escaped_slashes_action = _ESCAPED_SLASHES[client.escaped_slashes]
    if client.merge_slashes is not None:
        manager.merge_slashes = client.merge_slashes
    if client.request_id is not None:
        generate, preserve = _REQUEST_ID[client.request_id]
        manager.generate_request_id.value = generate
        manager.preserve_external_request_id = preserve
    if client.client_cert_mode is not None:
        manager.forward_client_cert_details = _CLIENT_CERT_MODES[client.client_cert_mode]
        details = manager.set_current_client_cert_details
        for detail in client.client_cert_details:
            if detail == "Subject":
                details.subject.value = True  # (a BoolValue; the others are plain bools)
            else:
                setattr(details, _CLIENT_CERT_DETAILS[detail], True)
    if client.http1 is not None:
        _http1(manager.http_protocol_options, client.http1)
    if client.http2 is not None:
        _http2(manager, client.http2)


def _client_address(manager: hcm_pb2.HttpConnectionManager, client_ip: ir.ClientIP | None) -> None:
    """Where the client's address (what sourceCIDR rate limits count) comes from. The connection's
    (use_remote_address: without it, Envoy takes the last address of the client's own
    x-forwarded-for, and a client could choose the address it is counted under), else that many
    trusted proxies' x-forwarded-for entries from its end (xff_num_trusted_hops: the same address
    as Envoy Gateway's xff extension with N-1 gives). Trusted CIDRs or a header are Envoy's
    original IP detection extensions, which it takes only without use_remote_address, as Envoy
    Gateway renders them. The headers that tell a client's address are not sent on
    (build._client_headers_removed): a provider learns none from the gateway; and a client's
    x-request-id stays its own."""
    manager.preserve_external_request_id = True
    if client_ip is not None and (client_ip.trusted_cidrs or client_ip.header):
        if client_ip.header:
            extension = custom_header_pb2.CustomHeaderConfig(header_name=client_ip.header)
            if client_ip.fail_closed:
                extension.reject_with_status.code = http_status_pb2.Forbidden
            name = "envoy.http.original_ip_detection.custom_header"
        else:
            cidrs = [_cidr_range(cidr) for cidr in client_ip.trusted_cidrs]
            extension = xff_pb2.XffConfig(xff_trusted_cidrs=xff_pb2.XffTrustedCidrs(cidrs=cidrs))
            name = "envoy.http.original_ip_detection.xff"
        manager.original_ip_detection_extensions.append(
            extension_pb2.TypedExtensionConfig(name=name, typed_config=packed(extension))
        )
        return
    manager.use_remote_address.value = True
    manager.skip_xff_append = True
    manager.xff_num_trusted_hops = client_ip.trusted_hops if client_ip is not None else 0


def _cidr_range(cidr: str) -> address_pb2.CidrRange:
    network, length = cidr.split("/")
    return address_pb2.CidrRange(address_prefix=network, prefix_len=wrappers_pb2.UInt32Value(value=int(length)))


def _http1(options: protocol_pb2.Http1ProtocolOptions, http1: ir.Http1Settings) -> None:
    if http1.trailers:
        options.enable_trailers = True
    if http1.preserve_case:
        options.header_key_format.stateful_formatter.CopyFrom(
            extension_pb2.TypedExtensionConfig(
                name="preserve_case", typed_config=packed(preserve_case_pb2.PreserveCaseFormatterConfig())
            )
        )
    if http1.http10:
        options.accept_http_10 = True
        options.default_host_for_http_10 = http1.default_host


def _http2(manager: hcm_pb2.HttpConnectionManager, http2: ir.Http2Settings) -> None:
    options = manager.http2_protocol_options
    if http2.initial_stream_window is not None:
        options.initial_stream_window_size.value = http2.initial_stream_window
    if http2.initial_connection_window is not None:
        options.initial_connection_window_size.value = http2.initial_connection_window
    if http2.max_concurrent_streams is not None:
        options.max_concurrent_streams.value = http2.max_concurrent_streams
    if http2.terminate_stream_on_invalid_message is not None:
        options.override_stream_error_on_invalid_http_message.value = http2.terminate_stream_on_invalid_message
    if not options.ListFields():
        manager.ClearField("http2_protocol_options")


def early_header_changes(early: ir.EarlyHeaders) -> extension_pb2.TypedExtensionConfig:
    """earlyRequestHeaders: changes made as a request arrives, before any filter or route reads it."""
    action = base_pb2.HeaderValueOption
    mutations = [
        mutation_rules_pb2.HeaderMutation(
            append=base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=name, value=value), append_action=append, keep_empty_value=not value
            )
        )
        for pairs, append in (
            (early.add, action.APPEND_IF_EXISTS_OR_ADD),
            (early.set, action.OVERWRITE_IF_EXISTS_OR_ADD),
            (early.add_if_absent, action.ADD_IF_ABSENT),
        )
        for name, value in pairs
    ]
    mutations += [mutation_rules_pb2.HeaderMutation(remove=name) for name in early.remove]
    return extension_pb2.TypedExtensionConfig(
        name="envoy.http.early_header_mutation.header_mutation",
        typed_config=packed(early_pb2.HeaderMutation(mutations=mutations)),
    )


def connection_limit_filter(stat_prefix: str, client: ir.ClientTraffic) -> listener_components_pb2.Filter | None:
    """connectionLimit.value: the listener's filter chain holds that many connections at most (an
    excess one is closed, after closeDelay); before the HTTP connection manager."""
    if client.connection_limit is None:
        return None
    limit = connection_limit_pb2.ConnectionLimit(stat_prefix=stat_prefix)
    limit.max_connections.value = client.connection_limit
    if client.connection_close_delay_s is not None:
        limit.delay.CopyFrom(duration(client.connection_close_delay_s))
    return listener_components_pb2.Filter(name="envoy.filters.network.connection_limit", typed_config=packed(limit))


# Linux's socket option numbers (Envoy takes them as numbers): SOL_SOCKET's SO_KEEPALIVE, and
# IPPROTO_TCP's TCP_KEEPCNT, TCP_KEEPIDLE and TCP_KEEPINTVL.
_SOL_SOCKET, _SO_KEEPALIVE = 1, 9
_IPPROTO_TCP, _TCP_KEEPCNT, _TCP_KEEPIDLE, _TCP_KEEPINTVL = 6, 6, 4, 5


PROXY_PROTOCOL_FILTER_NAME = "envoy.filters.listener.proxy_protocol"


def listener_settings(listener: listener_pb2.Listener, client: ir.ClientTraffic) -> None:
    """tcpKeepalive (the listening socket's options, which its connections inherit),
    maxAcceptPerSocketEvent and proxyProtocol (the first listener filter: the header comes first)."""
    if client.proxy_protocol is not None:
        reader = proxy_protocol_pb2.ProxyProtocol(allow_requests_without_proxy_protocol=client.proxy_protocol.optional)
        first = listener_components_pb2.ListenerFilter(name=PROXY_PROTOCOL_FILTER_NAME, typed_config=packed(reader))
        listener.listener_filters.insert(0, first)
    keepalive = client.tcp_keepalive
    if keepalive is not None:
        options = [(_SOL_SOCKET, _SO_KEEPALIVE, 1, "keepalive")]
        for name, value, said in (
            (_TCP_KEEPCNT, keepalive.probes, "keepalive probes"),
            (_TCP_KEEPIDLE, keepalive.idle_s, "keepalive idle time"),
            (_TCP_KEEPINTVL, keepalive.interval_s, "keepalive interval"),
        ):
            if value is not None:
                options.append((_IPPROTO_TCP, name, value, said))
        listener.socket_options.extend(
            socket_option_pb2.SocketOption(description=said, level=level, name=name, int_value=value)
            for level, name, value, said in options
        )
    if client.max_accept_per_socket_event:  # (0: Envoy's unlimited, as unset)
        listener.max_connections_to_accept_per_socket_event.value = client.max_accept_per_socket_event


# What Envoy's health check answer names: its node's cluster, the Gateway's name.
_HEALTH_CHECKED = mutation_rules_pb2.HeaderMutation(remove="x-envoy-upstream-healthchecked-cluster")
_HEALTH_ANSWER_HEADERS = hcm_pb2.HttpFilter(
    name="aigw.health_check_answer",
    typed_config=packed(
        header_mutation_pb2.HeaderMutation(
            mutations=header_mutation_pb2.Mutations(response_mutations=[_HEALTH_CHECKED])
        )
    ),
)


def health_check_filters(client: ir.ClientTraffic) -> list[hcm_pb2.HttpFilter]:
    """healthCheck: Envoy answers its path itself (200, or 503 while it drains), before any other
    filter reads the request; the filter before it takes the Gateway's name off the answer (Envoy's
    own x-envoy-* headers are off: the router's, and a client's)."""
    if client.health_check_path is None:
        return []
    check = health_check_pb2.HealthCheck(
        pass_through_mode=wrappers_pb2.BoolValue(value=False),
        headers=[
            route_components_pb2.HeaderMatcher(
                name=":path", string_match=string_pb2.StringMatcher(exact=client.health_check_path)
            )
        ],
    )
    return [
        _HEALTH_ANSWER_HEADERS,
        hcm_pb2.HttpFilter(name="envoy.filters.http.health_check", typed_config=packed(check)),
    ]


_TLS_VERSIONS = {
    "Auto": common_pb2.TlsParameters.TLS_AUTO,
    "1.0": common_pb2.TlsParameters.TLSv1_0,
    "1.1": common_pb2.TlsParameters.TLSv1_1,
    "1.2": common_pb2.TlsParameters.TLSv1_2,
    "1.3": common_pb2.TlsParameters.TLSv1_3,
}
_NO_POLICY = ir.ClientTls()  # Envoy's versions, suites and ALPN; resumption off, as Envoy Gateway


def downstream_tls(certificates: list[str], tls: ir.ClientTls | None) -> base_pb2.TransportSocket:
    """An HTTPS listener's TLS: its certificates (SDS secrets of these names) and the policy's tls."""
    tls = tls or _NO_POLICY
    context = tls_pb2.DownstreamTlsContext(
        disable_stateless_session_resumption=not tls.stateless_resumption,
        disable_stateful_session_resumption=not tls.stateful_resumption,
    )
    common = context.common_tls_context
    common.tls_certificate_sds_secret_configs.extend(
        secret_pb2.SdsSecretConfig(name=name, sds_config=ads()) for name in certificates
    )
    common.alpn_protocols.extend(tls.alpn if tls.alpn is not None else ("h2", "http/1.1"))
    params = common.tls_params
    if tls.min_version is not None:
        params.tls_minimum_protocol_version = _TLS_VERSIONS[tls.min_version]
    if tls.max_version is not None:
        params.tls_maximum_protocol_version = _TLS_VERSIONS[tls.max_version]
    params.cipher_suites.extend(tls.ciphers)
    params.ecdh_curves.extend(tls.ecdh_curves)
    params.signature_algorithms.extend(tls.signature_algorithms)
    if not params.ListFields():
        common.ClearField("tls_params")
    if tls.client_ca is not None:  # (every mode names its CAs: Envoy asks for a certificate only then)
        context.require_client_certificate.value = tls.require_client_certificate
        checks = common_pb2.CertificateValidationContext(
            verify_certificate_spki=tls.spki_hashes,
            verify_certificate_hash=tls.certificate_hashes,
            match_typed_subject_alt_names=[_san_matcher(m) for m in tls.subject_alt_names],
            allow_expired_certificate=tls.allow_expired,
        )
        if tls.accept_untrusted:  # (modes Request and RequireAny: any certificate)
            checks.trust_chain_verification = common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED
        ca = secret_pb2.SdsSecretConfig(name=tls.client_ca.name, sds_config=ads())
        if checks.ListFields():
            common.combined_validation_context.CopyFrom(
                tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
                    default_validation_context=checks, validation_context_sds_secret_config=ca
                )
            )
        else:
            common.validation_context_sds_secret_config.CopyFrom(ca)
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=packed(context))


_SAN_TYPES = {
    "DNS": common_pb2.SubjectAltNameMatcher.DNS,
    "EMAIL": common_pb2.SubjectAltNameMatcher.EMAIL,
    "IP_ADDRESS": common_pb2.SubjectAltNameMatcher.IP_ADDRESS,
    "URI": common_pb2.SubjectAltNameMatcher.URI,
    "OTHER_NAME": common_pb2.SubjectAltNameMatcher.OTHER_NAME,
}


def _san_matcher(san: ir.SanMatch) -> common_pb2.SubjectAltNameMatcher:
    matcher = string_pb2.StringMatcher()
    if san.match == "Exact":
        matcher.exact = san.value
    elif san.match == "Prefix":
        matcher.prefix = san.value
    elif san.match == "Suffix":
        matcher.suffix = san.value
    else:
        matcher.safe_regex.regex = san.value
    return common_pb2.SubjectAltNameMatcher(san_type=_SAN_TYPES[san.kind], matcher=matcher, oid=san.oid)


def client_ca_secret(ca: ir.TLSValidation) -> secret_pb2.Secret:
    """The CAs client certificates are verified against (and the revocation lists checked), as the
    SDS secret the listener names."""
    validation = common_pb2.CertificateValidationContext(trusted_ca=base_pb2.DataSource(inline_string=ca.ca_pem))
    if ca.crl_pem:
        validation.crl.inline_string = ca.crl_pem
        validation.only_verify_leaf_cert_crl = ca.crl_leaf_only
    return secret_pb2.Secret(name=ca.name, validation_context=validation)
