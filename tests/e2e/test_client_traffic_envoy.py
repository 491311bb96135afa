"""A ClientTrafficPolicy's TLS, client certificate, header, request-id, keepalive, connection limit
and HTTP/1 settings, taken by a real Envoy and seen from its clients: an HTTPS listener whose own
policy (sectionName) requires TLS 1.3 and a certificate its CA signed, tells the upstream the
client's certificate (x-forwarded-client-cert), sets a header early and keeps the client's
x-request-id; the plain listener, under the Gateway's policy, holding one connection at a time.
The upstream is an echo server (EchoUpstream), Envoy routes alone (--no-translator)."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from pathlib import Path

import pytest

from tests.resource_text import backend, client_traffic_policy, gateway, route

from .harness.certs import CertificateAuthority
from .harness.control_plane import ControlPlaneProcess
from .harness.processes import free_port, wait_for
from .harness.traffic import EchoUpstream
from .test_transport import _envoy

pytestmark = pytest.mark.e2e


def _secret(name: str, data: dict[str, str]) -> str:
    values = ", ".join(f"{key}: {json.dumps(value)}" for key, value in data.items())
    return f"""
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: default}}
stringData: {{{values}}}
"""


def _request(port: int, context: ssl.SSLContext | None, headers: dict[str, str]) -> tuple[int, dict]:
    """One POST on a new connection (HTTPS when `context`): its status and the echo's record."""
    connection = (
        http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
        if context is not None
        else http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    )
    try:
        connection.request("POST", "/v1/chat/completions", body=b"{}", headers={"x-ai-eg-model": "m", **headers})
        response = connection.getresponse()
        body = response.read()
        return response.status, json.loads(body) if response.status == 200 else {}
    finally:
        connection.close()


def test_an_https_listener_requires_tls_1_3_and_a_client_certificate_and_tells_the_upstream(tmp_path: Path):
    ca, clients_ca = CertificateAuthority(), CertificateAuthority("clients CA")
    server = ca.issue("gateway", dns=("localhost", "gw.example.com"))
    client_cert, client_key = clients_ca.issue("team-a", client=True, uris=("spiffe://example/team-a",)).write(
        tmp_path, "client"
    )
    stranger_cert, stranger_key = CertificateAuthority("other CA").issue("mallory", client=True).write(tmp_path, "x")
    # Signed by the clients' CA, but outside the SANs the policy takes, or revoked.
    outsider_cert, outsider_key = clients_ca.issue("o", client=True, uris=("spiffe://other/o",)).write(tmp_path, "o")
    revoked = clients_ca.issue("r", client=True, uris=("spiffe://example/r",))
    revoked_cert, revoked_key = revoked.write(tmp_path, "r")
    upstream = EchoUpstream("a")
    http_port, https_port = free_port(), free_port()
    listeners = (
        f"    - {{name: https, protocol: HTTPS, port: {https_port}, hostname: gw.example.com, "
        "tls: {certificateRefs: [{name: gw-cert}]}}"
    )
    policy = client_traffic_policy(
        "tls: {minVersion: '1.3', clientValidation: {caCertificateRefs: [{name: clients-ca}], "
        "subjectAltNames: {uris: [{type: Prefix, value: 'spiffe://example/'}]}, crl: {refs: [{name: clients-crl}]}}}\n"
        "  headers: {requestID: Preserve, xForwardedClientCert: {mode: SanitizeSet, certDetailsToAdd: [Subject, URI]},"
        " earlyRequestHeaders: {set: [{name: x-team-edge, value: gw}], remove: [x-debug]}}\n"
        "  tcpKeepalive: {probes: 3, idleTime: 60s, interval: 10s}\n"
        "  http1: {preserveHeaderCase: true, http10: {useDefaultHost: true}}",
        name="mtls",
        section="https",
    )
    # The Gateway's own policy: the ports no listener policy names (the plain one).
    policy += client_traffic_policy("connection: {connectionLimit: {value: 1}}", name="limits")
    text = gateway(port=http_port, extra_listeners=listeners) + route("r", {"m": "a"}) + backend("a", upstream.port)
    text += _secret("gw-cert", {"tls.crt": server.cert, "tls.key": server.key})
    text += _secret("clients-ca", {"ca.crt": clients_ca.pem}) + policy
    text += _secret("clients-crl", {"ca.crl": clients_ca.revocation_list(revoked.cert)})
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "gw.yaml").write_text(text)
    xds_port = free_port()
    plane = ControlPlaneProcess(tmp_path / "config", xds_port, tmp_path)
    plane.start()
    envoy = _envoy(xds_port)
    try:
        envoy.wait_ready()

        def context(cert: Path | None = None, key: Path | None = None, tls12: bool = False) -> ssl.SSLContext:
            made = ssl.create_default_context(cadata=ca.pem)
            made.check_hostname = False
            if cert is not None:
                made.load_cert_chain(cert, key)
            if tls12:
                made.maximum_version = ssl.TLSVersion.TLSv1_2
            return made

        headers = {"host": f"gw.example.com:{https_port}", "x-request-id": "client-chosen-id", "x-debug": "1"}
        mutual = context(client_cert, client_key)
        wait_for(lambda: _request(https_port, mutual, headers)[0] == 200, what="HTTPS with a client certificate")
        status, seen = _request(https_port, mutual, headers)
        assert status == 200
        sent = seen["headers"]
        assert sent["x-team-edge"] == "gw" and "x-debug" not in sent, sent
        assert sent["x-request-id"] == "client-chosen-id"
        xfcc = sent["x-forwarded-client-cert"]
        assert 'Subject="CN=team-a"' in xfcc and "URI=spiffe://example/team-a" in xfcc, xfcc
        # No certificate, another CA's, one outside the SANs, a revoked one, TLS 1.2: refused at the
        # handshake (or the first read).
        for refused in (
            context(),
            context(stranger_cert, stranger_key),
            context(outsider_cert, outsider_key),
            context(revoked_cert, revoked_key),
            context(client_cert, client_key, True),
        ):
            with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException, OSError)):
                _request(https_port, refused, headers)
        # The plain listener holds one connection at a time: a second is closed while the first is open.
        with socket.create_connection(("127.0.0.1", http_port), timeout=5) as held:
            held.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\nx-ai-eg-model: m\r\ncontent-length: 2\r\n\r\n{}"
            )
            assert held.recv(65536).startswith(b"HTTP/1.1 200")
            time.sleep(0.2)
            with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
                _request(http_port, None, {})
        wait_for(lambda: _request(http_port, None, {})[0] == 200, what="a connection once the first closed")
        stats = envoy.stats("connection_limit")
        assert any(name.endswith("limited_connections") and value >= 1 for name, value in stats.items()), stats
        # HTTP/1.0, which carries no host: answered (Envoy refuses it with a 426 unless told to take it).
        with (
            socket.create_connection(("127.0.0.1", https_port), timeout=5) as raw,
            mutual.wrap_socket(raw, server_hostname="gw.example.com") as tls,
        ):
            tls.sendall(b"POST /v1/chat/completions HTTP/1.0\r\nx-ai-eg-model: m\r\ncontent-length: 2\r\n\r\n{}")
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.0 200"), answer[:200]
        # The keepalive options are on the listeners Envoy took.
        dump = json.dumps(envoy.config_dump())
        assert dump.count('"description": "keepalive probes"') == 1, "the HTTPS listener's socket has them"
        # Each port took its own policy: the HTTPS one holds any number of connections.
        with socket.create_connection(("127.0.0.1", https_port), timeout=5) as raw, mutual.wrap_socket(raw) as held:
            held.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw.example.com\r\nx-ai-eg-model: m\r\n"
                b"content-length: 2\r\n\r\n{}"
            )
            assert held.recv(65536).startswith(b"HTTP/1.1 200")
            assert _request(https_port, mutual, headers)[0] == 200
        # A revocation list past its nextUpdate (compile warns): Envoy refuses every client, the
        # certificates it does not revoke too.
        expired = _secret("clients-crl", {"ca.crl": clients_ca.revocation_list(revoked.cert, expired=True)})
        (tmp_path / "config" / "gw.yaml").write_text(text[: text.rindex("\n---")] + expired)

        def refused() -> bool:
            try:
                _request(https_port, mutual, headers)
            except (ssl.SSLError, ConnectionError, http.client.HTTPException, OSError):
                return True
            return False

        wait_for(refused, what="the client refused under an expired revocation list")
    finally:
        envoy.stop()
        plane.stop()
        upstream.stop()


def _exchange(port: int, data: bytes) -> bytes:
    """What Envoy answers `data` sent on a new connection (b"" when it closes it unanswered)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(data)
        answer = b""
        try:
            while chunk := connection.recv(65536):  # (the requests ask to close the connection)
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def test_a_listener_behind_a_proxy_protocol_balancer_and_its_health_check(tmp_path: Path):
    """proxyProtocol: a connection without the PROXY header is closed, one with it is served
    (whose source is then the client's address: tests/e2e/translator/test_client_address.py);
    healthCheck: Envoy answers its path itself, nothing reaching an upstream. Made optional by an
    edit, a plain connection is served too."""
    upstream = EchoUpstream("a")
    port, xds_port = free_port(), free_port()
    policy = client_traffic_policy("proxyProtocol: {}\n  healthCheck: {path: /healthz}")
    text = gateway(port=port) + route("r", {"m": "a"}) + backend("a", upstream.port) + policy
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "gw.yaml").write_text(text)
    plane = ControlPlaneProcess(tmp_path / "config", xds_port, tmp_path)
    plane.start()
    envoy = _envoy(xds_port)
    proxied = f"PROXY TCP4 203.0.113.7 127.0.0.1 40000 {port}\r\n".encode()
    request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\nx-ai-eg-model: m\r\nconnection: close\r\n"
    request += b"content-length: 2\r\n\r\n{}"
    health = b"GET /healthz HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"
    try:
        envoy.wait_ready()
        wait_for(lambda: _exchange(port, proxied + request).startswith(b"HTTP/1.1 200"), what="a proxied request")
        assert _exchange(port, request) == b""  # no PROXY header: closed
        served = len(upstream.requests)
        checked = _exchange(port, proxied + health)
        assert checked.startswith(b"HTTP/1.1 200")
        assert b"x-envoy" not in checked.lower(), checked  # (its node's cluster, the Gateway's name, stays in)
        assert len(upstream.requests) == served
        optional = policy.replace("proxyProtocol: {}", "proxyProtocol: {optional: true}")
        (tmp_path / "config" / "gw.yaml").write_text(text.replace(policy, optional))
        wait_for(lambda: _exchange(port, request).startswith(b"HTTP/1.1 200"), what="a plain request, made optional")
        assert _exchange(port, proxied + request).startswith(b"HTTP/1.1 200")
    finally:
        envoy.stop()
        plane.stop()
        upstream.stop()
