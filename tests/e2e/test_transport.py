"""Transport concerns with a real Envoy: xDS over TLS and mTLS, keepalive pings on an idle stream,
and HTTPS listeners whose certificates arrive over SDS."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest

from aigw_xds.envoy.bootstrap import bootstrap
from aigw_xds.envoy.process import EnvoyProcess
from tests.resource_text import backend, gateway, route

from .harness.certs import CertificateAuthority
from .harness.control_plane import ControlPlaneProcess
from .harness.processes import free_port, wait_for
from .harness.traffic import EchoUpstream, post

pytestmark = pytest.mark.e2e


@pytest.fixture
def upstream():
    u = EchoUpstream("a")
    yield u
    u.stop()


def _envoy(xds_port: int, **kwargs) -> EnvoyProcess:
    admin = free_port()
    envoy = EnvoyProcess(
        bootstrap(
            xds_host="127.0.0.1", xds_port=xds_port, fleet="default/gw", node_id="n1", admin_port=admin, **kwargs
        ),
        admin_port=admin,
        log_level="info",
    )
    envoy.start()
    return envoy


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
def test_xds_over_tls(tmp_path: Path, upstream, mutual: bool):
    ca = CertificateAuthority()
    (tmp_path / "ca.crt").write_text(ca.pem)
    server_cert, server_key = ca.issue("aigw-xds").write(tmp_path, "server")
    client_cert, client_key = ca.issue("envoy", client=True).write(tmp_path, "client")
    port = free_port()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "gw.yaml").write_text(
        gateway(port=port) + route("r", {"m": "a"}) + backend("a", upstream.port)
    )
    xds_port = free_port()
    tls_flags = ("--tls-cert", str(server_cert), "--tls-key", str(server_key))
    if mutual:
        tls_flags += ("--tls-client-ca", str(tmp_path / "ca.crt"))
    plane = ControlPlaneProcess(tmp_path / "config", xds_port, tmp_path, extra=("--no-translator", *tls_flags))
    plane.start()
    envoys = []
    try:
        if mutual:
            # Without a client certificate the server refuses the stream: Envoy never gets config.
            anonymous = _envoy(xds_port, tls_ca=str(tmp_path / "ca.crt"))
            envoys.append(anonymous)
            wait_for(lambda: anonymous.stats("control_plane").get("control_plane.connected_state") == 0, what="state")
            time.sleep(1)
            assert anonymous.admin("/ready").strip() != "LIVE"
        envoy = _envoy(
            xds_port, tls_ca=str(tmp_path / "ca.crt"), tls_client_cert=str(client_cert), tls_client_key=str(client_key)
        )
        envoys.append(envoy)
        envoy.wait_ready()
        wait_for(lambda: post(port, "m")[0] == 200, what="routed over TLS-delivered config")
    finally:
        for e in envoys:
            e.stop()
        plane.stop()


def _served_certificate(port: int, ca: Path) -> bytes:
    """The DER certificate the xDS port presents (gRPC speaks h2 over TLS)."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.getpeercert(binary_form=True) or b""


def test_tls_files_renewed_in_place_are_served_after_sighup(tmp_path: Path):
    """A platform team's trial replaced --tls-cert/--tls-key (as cert-manager renews them) and sent
    SIGHUP: the old certificate was served until a restart (and a client's failed handshake put
    gRPC's own line in the JSON log). Now new connections get the new one;
    a renewal that is not a usable pair (the key of another certificate) is refused in the log and
    the one served so far stays."""
    ca = CertificateAuthority()
    (tmp_path / "ca.crt").write_text(ca.pem)
    cert, key = ca.issue("aigw-xds").write(tmp_path, "server")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "gw.yaml").write_text(gateway(port=free_port()) + route("r", {"m": "a"}) + backend("a", 1))
    xds_port = free_port()
    flags = ("--no-translator", "--tls-cert", str(cert), "--tls-key", str(key))
    plane = ControlPlaneProcess(tmp_path / "config", xds_port, tmp_path, extra=flags)
    plane.start()
    try:
        with socket.create_connection(("127.0.0.1", xds_port), timeout=5) as junk:  # a failed handshake
            junk.sendall(b"GET / HTTP/1.1\r\n\r\n")
        first = _served_certificate(xds_port, tmp_path / "ca.crt")
        renewed = ca.issue("aigw-xds")
        cert.write_text(renewed.cert)
        key.write_text(renewed.key)
        assert plane.process is not None
        plane.process.send_signal(signal.SIGHUP)
        wait_for(lambda: _served_certificate(xds_port, tmp_path / "ca.crt") != first, what="the renewed certificate")
        second = _served_certificate(xds_port, tmp_path / "ca.crt")
        cert.write_text(ca.issue("aigw-xds").cert)  # its key not written: not a pair
        plane.process.send_signal(signal.SIGHUP)
        wait_for(lambda: any(e.get("event") == "tls_files_unusable" for e in plane.events()), what="the refusal")
        assert _served_certificate(xds_port, tmp_path / "ca.crt") == second
    finally:
        plane.stop()
    # gRPC's own lines (the failed handshake's "I1206 ... Handshake failed") stay out of the JSON log.
    assert [line for line in plane.log.read_text().splitlines() if not line.startswith("{")] == []


def test_keepalive_pings_on_an_idle_stream_are_tolerated(tmp_path: Path, upstream):
    port = free_port()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "gw.yaml").write_text(
        gateway(port=port) + route("r", {"m": "a"}) + backend("a", upstream.port)
    )
    xds_port = free_port()
    plane = ControlPlaneProcess(tmp_path / "config", xds_port, tmp_path)
    plane.start()
    # Pings every second: gRPC's defaults would answer the third one with GOAWAY (too_many_pings).
    envoy = _envoy(xds_port, keepalive_interval_s=1)
    try:
        envoy.wait_ready()
        time.sleep(6)
        stats = envoy.stats("cluster.xds_cluster")
        assert stats["cluster.xds_cluster.upstream_cx_total"] == 1
        assert envoy.stats("control_plane")["control_plane.connected_state"] == 1
        assert len([e for e in plane.events() if e.get("event") == "node_connected"]) == 1
    finally:
        envoy.stop()
        plane.stop()


def test_https_listener_with_certificates_over_sds(tmp_path: Path, upstream):
    ca = CertificateAuthority()
    leaf = ca.issue("gateway", dns=("localhost", "gw.example.com"))
    port = free_port()
    listeners = (
        f"    - {{name: https, protocol: HTTPS, port: {port}, hostname: gw.example.com, "
        "tls: {certificateRefs: [{name: gw-cert}]}}"
    )
    text = gateway(port=free_port(), extra_listeners=listeners) + route("r", {"m": "a"}) + backend("a", upstream.port)
    text += f"""
---
apiVersion: v1
kind: Secret
metadata: {{name: gw-cert, namespace: default}}
type: kubernetes.io/tls
stringData:
  tls.crt: {json.dumps(leaf.cert)}
  tls.key: {json.dumps(leaf.key)}
"""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "gw.yaml").write_text(text)
    xds_port = free_port()
    plane = ControlPlaneProcess(tmp_path / "config", xds_port, tmp_path)
    plane.start()
    envoy = _envoy(xds_port)
    try:
        envoy.wait_ready()
        context = ssl.create_default_context(cadata=ca.pem)

        def request() -> int:
            connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
            connection._http_vsn_str = "HTTP/1.1"
            try:
                connection.request(
                    "POST", "/v1/chat/completions", body=b"{}", headers={"host": "gw.example.com", "x-ai-eg-model": "m"}
                )
                response = connection.getresponse()
                response.read()
                return response.status
            finally:
                connection.close()

        wait_for(lambda: request() == 200, what="HTTPS request served")
        dump = json.dumps(envoy.config_dump())
        assert "BEGIN PRIVATE KEY" not in dump  # Envoy redacts the key in its own dump
    finally:
        envoy.stop()
        plane.stop()
