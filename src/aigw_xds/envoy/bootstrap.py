"""Envoy bootstrap for a node of a fleet, pointing its ADS at the control plane (pure)."""

from __future__ import annotations

import ipaddress
from typing import Any

import aigw_contract as contract

TOKEN_CREDENTIALS = "envoy.grpc_credentials.file_based_metadata"
# How soon an Envoy tries the control plane again (jittered exponential backoff; only Envoy's own
# gRPC client takes it: the Google gRPC one of the token path keeps Envoy's 0.5-30 s).
XDS_RETRY_POLICY = {"retry_back_off": {"base_interval": "0.5s", "max_interval": "4s"}}


def bootstrap(
    *,
    xds_host: str,
    xds_port: int,
    fleet: str,
    node_id: str,
    delta: bool = False,
    admin_port: int = 9901,
    tls_ca: str | None = None,
    tls_client_cert: str | None = None,
    tls_client_key: str | None = None,
    token_file: str | None = None,
    keepalive_interval_s: int = 30,
    max_connections: int = 50_000,
) -> dict[str, Any]:
    """A bootstrap whose ADS (GRPC or DELTA_GRPC) goes to xds_host:xds_port over HTTP/2 with
    keepalive, and whose node.cluster names the fleet ("<namespace>/<gateway>"). With token_file
    (TLS required: a bearer token is not sent in clear), Envoy proves its ServiceAccount: see
    _token_grpc_service."""
    if token_file is not None and not tls_ca:
        raise ValueError("a token is sent over TLS only: give the control plane's CA (--xds-ca) with --xds-token-file")
    xds_cluster: dict[str, Any] = {
        "name": "xds_cluster",
        "type": "STRICT_DNS",
        # IPv4 first: "localhost" or a Service name resolving to an unused IPv6 address too must
        # not leave Envoy dialling only that one.
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "xds_cluster",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": xds_host, "port_value": xds_port}}}}
                    ]
                }
            ],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": {"interval": f"{keepalive_interval_s}s", "timeout": "10s"},
                    }
                },
            }
        },
        "upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 60, "keepalive_interval": 10}},
    }
    if tls_ca:
        # The certificate must also name the host dialled (Envoy checks only the chain otherwise).
        san_type = "IP_ADDRESS" if _is_ip(xds_host) else "DNS"
        validation = {
            "trusted_ca": {"filename": tls_ca},
            "match_typed_subject_alt_names": [{"san_type": san_type, "matcher": {"exact": xds_host}}],
        }
        common: dict[str, Any] = {"validation_context": validation, "alpn_protocols": ["h2"]}
        if tls_client_cert and tls_client_key:
            common["tls_certificates"] = [
                {"certificate_chain": {"filename": tls_client_cert}, "private_key": {"filename": tls_client_key}}
            ]
        xds_cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                **({} if _is_ip(xds_host) else {"sni": xds_host}),
                "common_tls_context": common,
            },
        }
    ads = {"ads": {}, "resource_api_version": "V3"}
    if token_file is not None and tls_ca:
        service = _token_grpc_service(
            xds_host, xds_port, tls_ca, token_file, tls_client_cert, tls_client_key, keepalive_interval_s
        )
        static: dict[str, Any] = {}
    else:
        # Envoy's default backoff reaches 30 s between reconnects: after a control plane restart its
        # nodes came back over up to ~24 s. At most 4 s apart, they are back soon after it is.
        service = {"envoy_grpc": {"cluster_name": "xds_cluster", "retry_policy": XDS_RETRY_POLICY}}
        static = {"static_resources": {"clusters": [xds_cluster]}}
    return {
        "node": {"id": node_id, "cluster": fleet},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [service],
            },
            "cds_config": {**ads, "initial_fetch_timeout": "0s"},
            "lds_config": {**ads, "initial_fetch_timeout": "0s"},
        },
        **static,
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
                        "DownstreamConnectionsConfig",
                        "max_active_downstream_connections": max_connections,
                    },
                }
            ]
        },
    }


def _token_grpc_service(
    host: str,
    port: int,
    tls_ca: str,
    token_file: str,
    client_cert: str | None,
    client_key: str | None,
    keepalive_interval_s: int,
) -> dict[str, Any]:
    """ADS over Envoy's Google gRPC client, which alone can attach call credentials: the
    file_based_metadata plugin sends the file's content as `authorization: Bearer <token>`. Envoy
    reads the file each time it opens the stream (its GetMetadata reads the DataSource per call;
    checked with Envoy 1.40), so a token the kubelet rotated is the one sent on the next connection;
    an open stream is not re-authenticated. The file must hold the token alone (no trailing newline:
    the kubelet writes none; with one, gRPC rejects the header and the stream fails with INTERNAL).
    gRPC verifies the server's certificate against tls_ca and the host dialled."""
    ssl: dict[str, Any] = {"root_certs": {"filename": tls_ca}}
    if client_cert and client_key:
        ssl["cert_chain"] = {"filename": client_cert}
        ssl["private_key"] = {"filename": client_key}
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return {
        "google_grpc": {
            "target_uri": target,
            "stat_prefix": "xds",
            "channel_credentials": {"ssl_credentials": ssl},
            "credentials_factory_name": TOKEN_CREDENTIALS,
            "call_credentials": [
                {
                    "from_plugin": {
                        "name": TOKEN_CREDENTIALS,
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.config.grpc_credential.v3.FileBasedMetadataConfig",
                            "secret_data": {"filename": token_file},
                            "header_prefix": "Bearer ",
                        },
                    }
                }
            ],
            # The Google gRPC client's own limits: keepalive as the Envoy gRPC client's, responses
            # as large as the server may send (its default is 4 MiB), and its reconnect backoff
            # capped as XDS_RETRY_POLICY caps Envoy's (gRPC's own grows to 120 s: a platform trial
            # saw its Envoys back 46 s after the control plane).
            "channel_args": {
                "args": {
                    "grpc.keepalive_time_ms": {"int_value": keepalive_interval_s * 1000},
                    "grpc.keepalive_timeout_ms": {"int_value": 10_000},
                    "grpc.keepalive_permit_without_calls": {"int_value": 1},
                    "grpc.max_receive_message_length": {"int_value": contract.XDS_MAX_MESSAGE_BYTES},
                    "grpc.initial_reconnect_backoff_ms": {"int_value": 500},
                    "grpc.max_reconnect_backoff_ms": {"int_value": 4_000},
                }
            },
        }
    }


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
