"""The translator sidecar fed over xDS, with per-node authorization: `aigw-xds serve` gives each
translator (`aigw-xds translator --xds`, real processes) only the fleets its identity may have. The
identities are client certificates with SPIFFE IDs (mTLS) and ServiceAccount tokens; the token
review is a stand-in function in these tests (the emulated API server's TokenReview is tested with
Kubernetes mode)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from aigw_xds.control_plane import ControlPlane
from aigw_xds.processes import stop_process
from aigw_xds.xds import type_urls
from aigw_xds.xds.authz import Authorizer
from aigw_xds.xds.server import TLSFiles
from tests.resource_text import api_key, backend, gateway, route

from .harness.certs import CertificateAuthority
from .harness.control_plane import ControlPlaneProcess
from .harness.processes import die_with_parent, free_port, json_lines

pytestmark = pytest.mark.e2e

KEY_A, KEY_B = "sk-namespace-a-key", "sk-namespace-b-key"
TRUST_DOMAIN = "cluster.local"


def _two_namespaces(directory: Path) -> None:
    """Gateway gw-a in namespace a and gw-b in namespace b, each with an OpenAI backend and its key."""
    directory.mkdir()
    for namespace, key in (("a", KEY_A), ("b", KEY_B)):
        text = gateway(f"gw-{namespace}", namespace=namespace, port=free_port())
        if namespace == "b":
            text = text.split("---", 1)[1]  # one GatewayClass
        text += route("r", {"m": "b"}, gateway_name=f"gw-{namespace}", namespace=namespace)
        text += backend("b", 9999, namespace=namespace) + api_key("b", key, namespace=namespace)
        (directory / f"{namespace}.yaml").write_text(text)


_TRANSLATOR = (sys.executable, "-m", "aigw_xds", "translator")


class Translator:
    """`aigw-xds translator --xds ...` as a subprocess; its JSON log lines."""

    def __init__(self, workdir: Path, name: str, xds_port: int, *flags: str) -> None:
        self.log = workdir / f"translator-{name}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [*_TRANSLATOR, "--xds", f"127.0.0.1:{xds_port}", "--listen", "127.0.0.1:0", *flags],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )

    def events(self, name: str) -> list[dict]:
        return [e for e in json_lines(self.log) if e.get("event") == name]

    def fleets(self) -> list[str] | None:
        """The fleets of the latest configuration applied (None: none yet)."""
        applied = self.events("xds_config_applied")
        return applied[-1]["fleets"] if applied else None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture
def translators() -> Iterator[list[Translator]]:
    started: list[Translator] = []
    yield started
    for translator in started:
        translator.stop()


def _until(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


def test_mtls_sidecars_get_only_the_fleets_of_their_service_account_and_grants(tmp_path: Path, translators):
    ca = CertificateAuthority()
    (tmp_path / "ca.crt").write_text(ca.pem)
    server_cert, server_key = ca.issue("aigw-xds").write(tmp_path, "server")

    def identity(stem: str, common_name: str, spiffe: str = "") -> tuple[str, ...]:
        uris = (spiffe,) if spiffe else ()
        cert, key = ca.issue(common_name, client=True, uris=uris).write(tmp_path, stem)
        return ("--xds-ca", str(tmp_path / "ca.crt"), "--xds-cert", str(cert), "--xds-key", str(key))

    sidecar_a = identity("a", "translator", f"spiffe://{TRUST_DOMAIN}/ns/a/sa/translator")
    ops_a = identity("ops", "ops", f"spiffe://{TRUST_DOMAIN}/ns/a/sa/ops")
    stranger = identity("stranger", "stranger")  # a certificate without a SPIFFE ID
    _two_namespaces(tmp_path / "config")
    xds_port = free_port()
    tls = ("--tls-cert", str(server_cert), "--tls-key", str(server_key), "--tls-client-ca", str(tmp_path / "ca.crt"))
    plane = ControlPlaneProcess(
        tmp_path / "config",
        xds_port,
        tmp_path,
        extra=("--translator-listen", "", *tls, "--authorize", "serviceaccount:a/ops=b/gw-b"),
    )
    plane.start()
    try:
        own = Translator(tmp_path, "own", xds_port, *sidecar_a, "--fleet", "a/gw-a")
        other = Translator(tmp_path, "other", xds_port, *sidecar_a, "--fleet", "b/gw-b")
        wildcard = Translator(tmp_path, "wildcard", xds_port, *sidecar_a)
        granted = Translator(tmp_path, "granted", xds_port, *ops_a)
        nameless = Translator(tmp_path, "nameless", xds_port, *stranger)
        no_cert = Translator(tmp_path, "no-cert", xds_port, "--xds-ca", str(tmp_path / "ca.crt"))
        translators.extend([own, other, wildcard, granted, nameless, no_cert])

        assert _until(own.fleets, "the sidecar of namespace a gets its fleet") == ["a/gw-a"]
        assert _until(wildcard.fleets, "a wildcard gets the allowed fleets") == ["a/gw-a"]
        assert _until(granted.fleets, "a grant adds a fleet") == ["a/gw-a", "b/gw-b"]

        [refusal] = _until(lambda: other.events("xds_refused"), "b/gw-b refused to namespace a's sidecar")
        assert refusal["code"] == "PERMISSION_DENIED"
        assert (
            "serviceaccount:a/translator may not receive the translator configuration of b/gw-b" in refusal["details"]
        )
        assert "serve --authorize serviceaccount:a/translator=b/gw-b" in refusal["details"]
        [refusal] = _until(lambda: nameless.events("xds_refused"), "a certificate with no name the rule knows")
        assert "cn:stranger may not receive any translator configuration" in refusal["details"]
        _until(lambda: no_cert.events("xds_stream_failed"), "a TLS client without a certificate refused")

        time.sleep(2.0)  # retried with back-off (0.5 s, 1 s...), the refusal logged once
        assert other.process.poll() is None and nameless.process.poll() is None
        assert len(other.events("xds_refused")) == 1
        assert len(nameless.events("xds_refused")) == 1
        for refused in (other, nameless, no_cert):
            assert refused.fleets() is None
        refused_events = [e for e in plane.events() if e.get("event") == "translator_fleet_refused"]
        assert {(e["identity"], e["fleet"]) for e in refused_events} == {
            ("serviceaccount:a/translator", "b/gw-b"),
            ("cn:stranger", "*"),
        }
        logs = plane.log.read_text() + "".join(t.text() for t in translators)
        assert KEY_A not in logs and KEY_B not in logs
    finally:
        plane.stop()


def test_envoy_and_proxy_status_reach_an_mtls_control_plane_with_the_documented_flags(tmp_path: Path, translators):
    """`bootstrap --xds-ca --xds-cert --xds-key` makes a real Envoy present its certificate to `serve
    --tls-client-ca` (without a certificate the handshake fails: found by review, the command had no
    flags for it), and `proxy-status` takes the same flags (it spoke plaintext only, so it could not
    show the nodes of a TLS control plane)."""
    import json
    import os

    from aigw_xds.envoy.process import EnvoyProcess

    from .harness.envoy import until_live

    ca = CertificateAuthority()
    (tmp_path / "ca.crt").write_text(ca.pem)
    server_cert, server_key = ca.issue("aigw-xds").write(tmp_path, "server")
    envoy_cert, envoy_key = ca.issue("envoy", client=True, uris=(f"spiffe://{TRUST_DOMAIN}/ns/a/sa/envoy",)).write(
        tmp_path, "envoy"
    )
    _two_namespaces(tmp_path / "config")
    xds_port = free_port()
    tls = ("--tls-cert", str(server_cert), "--tls-key", str(server_key), "--tls-client-ca", str(tmp_path / "ca.crt"))
    plane = ControlPlaneProcess(tmp_path / "config", xds_port, tmp_path, extra=("--translator-listen", "", *tls))
    plane.start()
    cli = [sys.executable, "-m", "aigw_xds"]
    client = ["--xds-ca", str(tmp_path / "ca.crt"), "--xds-cert", str(envoy_cert), "--xds-key", str(envoy_key)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    envoy = None
    try:
        admin = free_port()
        bootstrap = [*cli, "bootstrap", "--server", f"127.0.0.1:{xds_port}", "--gateway", "a/gw-a"]
        bootstrap += ["--node-id", "envoy-a", "--admin-port", str(admin), "--delta", *client, "-o", "json"]
        made = subprocess.run(bootstrap, capture_output=True, text=True, timeout=60, env=env)
        assert made.returncode == 0, made.stderr
        envoy = EnvoyProcess(json.loads(made.stdout), admin_port=admin)
        envoy.start()
        until_live(envoy)
        assert (
            envoy.stats("cluster.xds_cluster.upstream_cx_connect_fail").get(
                "cluster.xds_cluster.upstream_cx_connect_fail", 0
            )
            == 0
        )

        def status(*flags: str) -> subprocess.CompletedProcess[str]:
            command = [*cli, "proxy-status", "--server", f"127.0.0.1:{xds_port}", *flags]
            return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)

        shown = _until(lambda: (r := status(*client)).returncode == 0 and "envoy-a" in r.stdout and r, "a row")
        [row] = [line for line in shown.stdout.splitlines() if line.startswith("envoy-a")]
        assert row.split()[1] == "a/gw-a" and "SYNCED" in row, shown.stdout
        plaintext = status()
        assert plaintext.returncode == 1 and "cannot reach" in plaintext.stderr, plaintext
        # A plaintext client or one without a certificate sees "Socket closed": the hint names the flags.
        assert "(if it serves TLS, give --xds-ca, and for mTLS --xds-cert and --xds-key too)" in plaintext.stderr
        no_certificate = status("--xds-ca", str(tmp_path / "ca.crt"))
        assert no_certificate.returncode == 1, no_certificate
        assert "(if it asks for a client certificate (mTLS), give --xds-cert and --xds-key)" in no_certificate.stderr
        # Through a port-forward the address is not the certificate's name: --xds-server-name says it.
        assert "envoy-a" in status(*client, "--xds-server-name", "localhost").stdout
        wrong = status(*client, "--xds-server-name", "elsewhere.example")
        assert wrong.returncode == 1 and "cannot reach" in wrong.stderr, wrong
        half = status("--xds-ca", str(tmp_path / "ca.crt"), "--xds-cert", str(envoy_cert))
        assert half.returncode == 1 and "--xds-cert requires --xds-key" in half.stderr, half.stderr
    finally:
        if envoy is not None:
            envoy.stop()
        plane.stop()


# --------------------------------------------------------------------------------------------
# ServiceAccount tokens

TOKENS = {
    "token-of-a-translator": "system:serviceaccount:a:translator",
    "token-of-b-envoy": "system:serviceaccount:b:envoy",
}


def _review(token: str) -> tuple[bool, str, str]:
    """Stands in for the API server's TokenReview (audience aigw-xds): the two tokens above are
    authenticated as their ServiceAccounts; any other token is not, with the error a real API server
    gives for a token it cannot verify."""
    if token in TOKENS:
        return True, TOKENS[token], ""
    return False, "", "[invalid bearer token, square/go-jose: error in cryptographic primitive]"


async def _until_async(predicate, what: str, timeout: float = 20.0):
    """Poll without blocking the event loop: the control plane serves in this process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


async def _first_response(
    port: int, ca: str, node: base_pb2.Node, token: str, secrets: list[str]
) -> discovery_pb2.DiscoveryResponse:
    credentials = grpc.ssl_channel_credentials(ca.encode())
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
            iter([discovery_pb2.DiscoveryRequest(node=node, type_url=type_urls.SECRET, resource_names=secrets)]),
            metadata=(("authorization", f"Bearer {token}"),),
        )
        async for response in call:
            return response
    raise AssertionError("the stream ended without a response")


async def test_token_authenticated_sidecars_get_only_their_namespace(tmp_path: Path, translators):
    """Over TLS (the server's certificate only: the token is the client's identity). The peers are
    all on loopback, where a peer that presents a token is judged by it all the same."""
    _two_namespaces(tmp_path / "config")
    ca = CertificateAuthority()
    (tmp_path / "ca.crt").write_text(ca.pem)
    server_cert, server_key = ca.issue("aigw-xds").write(tmp_path, "server")
    plane = ControlPlane(
        tmp_path / "config",
        listen=f"127.0.0.1:{free_port()}",
        tls=TLSFiles(str(server_cert), str(server_key)),
        translator_listen=None,
        watch=False,
        authorizer=Authorizer(review=_review),
    )
    await plane.start()
    try:
        for name, token in (("a", "token-of-a-translator"), ("bad", "a-token-the-api-server-refuses")):
            (tmp_path / f"{name}.token").write_text(token + "\n")
        tls = ("--xds-ca", str(tmp_path / "ca.crt"))
        token_a = ("--xds-token-file", str(tmp_path / "a.token"))
        sidecar = Translator(tmp_path, "token-a", plane.port, "--fleet", "a/gw-a", *tls, *token_a)
        wildcard = Translator(tmp_path, "token-all", plane.port, *tls, *token_a)
        other = Translator(tmp_path, "token-b", plane.port, "--fleet", "b/gw-b", *tls, *token_a)
        impostor = Translator(tmp_path, "bad", plane.port, *tls, "--xds-token-file", str(tmp_path / "bad.token"))
        translators.extend([sidecar, wildcard, other, impostor])
        assert await _until_async(sidecar.fleets, "the token's namespace") == ["a/gw-a"]
        assert await _until_async(wildcard.fleets, "only the token's namespace") == ["a/gw-a"]
        [refusal] = await _until_async(lambda: other.events("xds_refused"), "another namespace refused")
        assert refusal["code"] == "PERMISSION_DENIED"
        [refusal] = await _until_async(lambda: impostor.events("xds_refused"), "a refused token")
        assert refusal["code"] == "UNAUTHENTICATED"
        assert "invalid bearer token" in refusal["details"]
        for translator in translators:
            assert "token-of-a-translator" not in translator.text()
            assert "a-token-the-api-server-refuses" not in translator.text()

        # An Envoy fleet whose snapshot holds credentials goes only to an identity that may have it.
        holding = plane.cache.get("a/gw-a")
        assert holding is not None and holding.holds_credentials
        node = base_pb2.Node(id="envoy-1", cluster="a/gw-a")
        secrets = sorted(holding.of_type(type_urls.SECRET))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _first_response(plane.port, ca.pem, node, "token-of-b-envoy", secrets)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert (
            "fleet a/gw-a holds credentials (backend keys or TLS private keys) and serviceaccount:b/envoy may not"
            in str(refused.value.details())
        )
        response = await _first_response(plane.port, ca.pem, node, "token-of-a-translator", secrets)
        assert len(response.resources) == len(secrets)
    finally:
        await plane.stop(0)
