"""Envoy bootstrap for a node of a fleet, pointing its ADS at the control plane (pure)."""

from __future__ import annotations

import ipaddress
from typing import Any


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
    keepalive_interval_s: int = 30,
    max_connections: int = 50_000,
) -> dict[str, Any]:
    """A bootstrap whose ADS (GRPC or DELTA_GRPC) goes to xds_host:xds_port over HTTP/2 with
    keepalive, and whose node.cluster names the fleet ("<namespace>/<gateway>")."""
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
    return {
        "node": {"id": node_id, "cluster": fleet},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
            },
            "cds_config": {**ads, "initial_fetch_timeout": "0s"},
            "lds_config": {**ads, "initial_fetch_timeout": "0s"},
        },
        "static_resources": {"clusters": [xds_cluster]},
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


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
