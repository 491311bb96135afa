"""The xDS server's own TLS in Kubernetes mode: the CA and serving certificate (serving_certs.py),
the Secret that holds them (tls_secret.py: created, reused, renewed, races read back), and the CA
published as ConfigMaps (ca_configmap.py), against the EMULATED API server
(fakes/aigw_fakes/kube_apiserver.py, a stand-in: no kube-apiserver runs on these machines; it
answers create/replace with the real 409s, AlreadyExists and Conflict on a stale resourceVersion)."""

from __future__ import annotations

import asyncio
import base64
import datetime
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from aigw_fakes.kube_apiserver import KubeAPIServer
from aigw_xds import cli
from aigw_xds.compile import CompileResult
from aigw_xds.compile.status import StatusBook
from aigw_xds.control_plane import ControlPlane, KubernetesOptions
from aigw_xds.kubernetes.api import KubeAPI
from aigw_xds.kubernetes.ca_configmap import CAPublisher, gateway_namespaces, publish
from aigw_xds.kubernetes.serving_certs import (
    CertificateError,
    from_secret_data,
    new_authority,
    reissue,
    renewal_reason,
    service_dns_names,
)
from aigw_xds.kubernetes.tls_secret import ensure_serving_tls, secret_manifest
from tests.e2e.harness.certs import presented_certificate
from tests.resource_text import gateway

NS, NAME = "aigw-system", "aigw-xds-tls"
NAMES = service_dns_names("aigw-xds", NS)
NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)


def at(moment: datetime.datetime) -> Callable[[], datetime.datetime]:
    return lambda: moment


@pytest.fixture
def server(kube_api: KubeAPIServer) -> KubeAPIServer:
    return kube_api


def writes(server: KubeAPIServer) -> list[tuple[str, str | None]]:
    return [(r.verb, r.resource) for r in server.request_log if r.verb in ("create", "update", "patch")]


def stored(server: KubeAPIServer) -> dict[str, bytes]:
    secret = server.get("Secret", NS, NAME)
    assert secret is not None
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


# ---------------------------------------------------------------------------------- certificates


def test_a_new_authority_is_a_p256_ca_of_ten_years_signing_a_one_year_serving_certificate():
    tls = new_authority(NOW, NAMES)
    ca, cert = x509.load_pem_x509_certificate(tls.ca), x509.load_pem_x509_certificate(tls.cert)
    for c in (ca, cert):
        key = c.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert ca.not_valid_after_utc - NOW == datetime.timedelta(days=3650)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.not_valid_after_utc - NOW == datetime.timedelta(days=365)
    assert cert.not_valid_before_utc <= NOW  # backdated a little for clocks behind ours
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "aigw-xds",
        "aigw-xds.aigw-system",
        "aigw-xds.aigw-system.svc",
        "aigw-xds.aigw-system.svc.cluster.local",
    ]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]  # never a client certificate
    cert.verify_directly_issued_by(ca)
    assert from_secret_data(tls.secret_data()) == tls


def test_reissue_keeps_the_ca_and_changes_the_key():
    tls = new_authority(NOW, NAMES)
    assert tls.ca_key is not None
    later = NOW + datetime.timedelta(days=340)
    again = reissue(tls.ca, tls.ca_key, later, NAMES)
    assert (again.ca, again.ca_key) == (tls.ca, tls.ca_key)
    assert again.key != tls.key
    x509.load_pem_x509_certificate(again.cert).verify_directly_issued_by(x509.load_pem_x509_certificate(tls.ca))
    assert again.not_after == later + datetime.timedelta(days=365)


def test_the_renewal_window_is_thirty_days():
    tls = new_authority(NOW, NAMES)
    assert renewal_reason(tls, NOW + datetime.timedelta(days=334), NAMES) is None  # 31 days left
    reason = renewal_reason(tls, NOW + datetime.timedelta(days=336), NAMES)
    assert reason == "the serving certificate expires in 29 days"
    other = service_dns_names("aigw-xds", "elsewhere")
    assert renewal_reason(tls, NOW, other) == (
        "the serving certificate does not name aigw-xds.elsewhere, aigw-xds.elsewhere.svc, "
        "aigw-xds.elsewhere.svc.cluster.local"
    )


def test_unusable_secret_data_is_refused_naming_the_key_not_its_content():
    tls = new_authority(NOW, NAMES)
    other = new_authority(NOW, NAMES)
    data = tls.secret_data()
    cases = {
        "no tls.key": {k: v for k, v in data.items() if k != "tls.key"},
        "tls.key is not the key of tls.crt": {**data, "tls.key": other.secret_data()["tls.key"]},
        "tls.crt is not signed by ca.crt": {
            **{k: v for k, v in data.items() if k != "ca.key"},
            "ca.crt": other.secret_data()["ca.crt"],
        },
        "ca.key is not the key of ca.crt": {**data, "ca.key": other.secret_data()["ca.key"]},
        "tls.crt is not a PEM certificate": {**data, "tls.crt": base64.b64encode(b"garbage").decode()},
    }
    for message, broken in cases.items():
        with pytest.raises(CertificateError) as raised:
            from_secret_data(broken)
        assert str(raised.value) == message
    assert "redacted" in repr(tls) and "PRIVATE" not in repr(tls)


# -------------------------------------------------------------------------------------- Secret


def test_a_missing_secret_is_created_and_then_reused(server: KubeAPIServer, kube: KubeAPI):
    with structlog.testing.capture_logs() as logs:
        tls = ensure_serving_tls(kube, NS, NAME, NAMES, at(NOW))
    secret = server.get("Secret", NS, NAME)
    assert secret is not None and secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "aigw-xds"
    assert stored(server) == {"tls.crt": tls.cert, "tls.key": tls.key, "ca.crt": tls.ca, "ca.key": tls.ca_key}
    assert writes(server) == [("create", "secrets")]

    server.clear_request_log()
    with structlog.testing.capture_logs() as more:
        again = ensure_serving_tls(kube, NS, NAME, NAMES, at(NOW + datetime.timedelta(days=100)))
    assert again == tls and writes(server) == []  # another replica, or a restart: the same certificate
    # What the log says: never a key.
    events = [e["event"] for e in logs + more]
    assert events == ["xds_tls_secret_created", "xds_tls_secret_read"]
    text = repr(logs + more)
    for secret_bytes in (tls.key, tls.ca_key or b""):
        assert secret_bytes.decode() not in text and base64.b64encode(secret_bytes).decode() not in text
    assert "PRIVATE KEY" not in text


def test_renewal_reissues_from_the_same_ca_with_a_guarded_update(server: KubeAPIServer, kube: KubeAPI):
    first = ensure_serving_tls(kube, NS, NAME, NAMES, at(NOW))
    annotated = server.get("Secret", NS, NAME)
    assert annotated is not None
    annotated["metadata"]["annotations"] = {"reflector.example/allowed": "true"}  # someone else's
    version = server.apply(annotated)["metadata"]["resourceVersion"]
    server.clear_request_log()
    later = NOW + datetime.timedelta(days=340)  # 25 days left
    renewed = ensure_serving_tls(kube, NS, NAME, NAMES, at(later))
    assert renewed.ca == first.ca and renewed.cert != first.cert
    assert renewed.not_after == later + datetime.timedelta(days=365)
    assert writes(server) == [("update", "secrets")]
    assert stored(server)["tls.crt"] == renewed.cert
    metadata = server.get("Secret", NS, NAME)["metadata"]
    assert metadata["resourceVersion"] != version
    assert metadata["annotations"] == {"reflector.example/allowed": "true"}  # kept
    assert metadata["labels"]["app.kubernetes.io/managed-by"] == "aigw-xds"


class _Racing(KubeAPI):
    """The controller's client; before its first write of `method`, another replica (`meanwhile`)
    writes the Secret first, so the API server answers that write with 409."""

    def __init__(self, base: KubeAPI, method: str, meanwhile: Callable[[], None]) -> None:
        super().__init__(base.client)
        self.method, self.meanwhile, self.raced = method, meanwhile, False

    def request(self, method: str, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if method == self.method and not self.raced:
            self.raced = True
            self.meanwhile()
        return super().request(method, path, *args, **kwargs)


def test_a_create_lost_to_another_replica_serves_the_winners_certificate(server: KubeAPIServer, kube: KubeAPI):
    winner = new_authority(NOW, NAMES)
    racing = _Racing(kube, "POST", lambda: server.apply(secret_manifest(NS, NAME, winner)))
    served = ensure_serving_tls(racing, NS, NAME, NAMES, at(NOW))
    assert racing.raced and served == winner
    assert [(r.verb, r.status) for r in server.request_log if r.verb != "get"][-1] == ("create", 409)
    assert stored(server)["tls.crt"] == winner.cert


def test_a_renewal_lost_to_another_replica_serves_the_winners_renewal(server: KubeAPIServer, kube: KubeAPI):
    first = ensure_serving_tls(kube, NS, NAME, NAMES, at(NOW))
    later = NOW + datetime.timedelta(days=340)
    assert first.ca_key is not None
    winner = reissue(first.ca, first.ca_key, later, NAMES)
    racing = _Racing(kube, "PUT", lambda: server.apply(secret_manifest(NS, NAME, winner)))
    served = ensure_serving_tls(racing, NS, NAME, NAMES, at(later))
    assert racing.raced and served == winner  # re-read: fresh, nothing more to write
    assert [(r.verb, r.status) for r in server.request_log if r.verb == "update"] == [("update", 409)]


def test_a_secret_managed_by_someone_else_is_served_as_it_is_and_never_written(server: KubeAPIServer, kube: KubeAPI):
    theirs = new_authority(NOW, NAMES)
    manifest = secret_manifest(NS, NAME, theirs)
    manifest["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "cert-manager"}
    manifest["data"].pop("ca.key")
    server.apply(manifest)
    server.clear_request_log()
    with structlog.testing.capture_logs() as logs:
        served = ensure_serving_tls(kube, NS, NAME, NAMES, at(NOW + datetime.timedelta(days=340)))
    assert served.cert == theirs.cert and writes(server) == []
    (warning,) = [e for e in logs if e["log_level"] == "warning"]
    assert warning["reason"] == "the serving certificate expires in 25 days"

    manifest["data"]["tls.key"] = new_authority(NOW, NAMES).secret_data()["tls.key"]
    server.apply(manifest)
    with pytest.raises(CertificateError) as raised:
        ensure_serving_tls(kube, NS, NAME, NAMES, at(NOW))
    assert str(raised.value) == (
        "the TLS Secret aigw-system/aigw-xds-tls (not managed by aigw-xds) cannot be used: "
        "tls.key is not the key of tls.crt"
    )
    assert writes(server) == []


def test_our_secret_when_unusable_starts_over_with_a_new_ca(server: KubeAPIServer, kube: KubeAPI):
    first = ensure_serving_tls(kube, NS, NAME, NAMES, at(NOW))
    broken = secret_manifest(NS, NAME, first)
    broken["data"]["tls.key"] = new_authority(NOW, NAMES).secret_data()["tls.key"]
    server.apply(broken)
    served = ensure_serving_tls(kube, NS, NAME, NAMES, at(NOW))
    assert served.ca != first.ca and stored(server)["ca.crt"] == served.ca


def test_an_rbac_refusal_is_raised_with_the_servers_message(server: KubeAPIServer, kube: KubeAPI):
    server.forbid("create", "", "secrets")
    with pytest.raises(Exception) as raised:
        ensure_serving_tls(kube, NS, NAME, NAMES, at(NOW))
    assert getattr(raised.value, "status", None) == 403
    assert 'cannot create resource "secrets"' in str(raised.value)


# ------------------------------------------------------------------------------- CA ConfigMaps


def test_the_ca_configmap_is_created_left_alone_and_corrected(server: KubeAPIServer, kube: KubeAPI):
    ca = new_authority(NOW, NAMES).ca.decode()
    assert publish(kube, "team-a", ca) == "created"
    configmap = server.get("ConfigMap", "team-a", "aigw-xds-ca")
    assert configmap is not None and configmap["data"] == {"ca.crt": ca}
    assert configmap["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "aigw-xds"
    assert publish(kube, "team-a", ca) == "unchanged"
    configmap["data"] = {"ca.crt": "edited"}
    configmap["metadata"]["annotations"] = {"note": "kept"}
    server.apply(configmap)
    assert publish(kube, "team-a", ca) == "updated"
    corrected = server.get("ConfigMap", "team-a", "aigw-xds-ca")
    assert corrected is not None and corrected["data"] == {"ca.crt": ca}
    assert corrected["metadata"]["annotations"] == {"note": "kept"}


def test_gateway_namespaces_of_a_compile_result():
    result = CompileResult(
        gateways={"a/one": None, "a/two": None, "b/gw": None},  # type: ignore[dict-item]
        failed={"c/broken": frozenset()},
        status=StatusBook(),
        diagnostics=(),
    )
    assert gateway_namespaces(result) == {"a", "b", "c"}


async def test_the_publisher_follows_the_namespaces_and_repairs_on_resync(server: KubeAPIServer, kube: KubeAPI):
    ca = new_authority(NOW, NAMES).ca
    publisher = CAPublisher(kube, ca, resync=0.5, retry=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(publisher.run(stop))

    async def until(check: Callable[[], Any]) -> None:
        deadline = time.monotonic() + 5
        while not check():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)

    def holds(ns: str) -> bool:
        configmap = server.get("ConfigMap", ns, "aigw-xds-ca")
        return configmap is not None and configmap["data"] == {"ca.crt": ca.decode()}

    try:
        publisher.want(frozenset({"a"}))
        await until(lambda: holds("a"))
        publisher.want(frozenset({"a", "b"}))  # a Gateway in a new namespace
        await until(lambda: holds("b"))
        assert publisher.writes == 2
        server.delete("ConfigMap", "a", "aigw-xds-ca")  # someone deleted it: the resync puts it back
        await until(lambda: holds("a"))
        server.forbid("create", "", "configmaps")
        publisher.want(frozenset({"a", "b", "c"}))
        await asyncio.sleep(0.3)
        assert publisher.pending == {"c"}  # refused: retried, with backoff
        server.allow("create", "", "configmaps")
        await until(lambda: holds("c"))
    finally:
        stop.set()
        await asyncio.wait_for(task, 1)  # a stop ends it at once (the control plane waits for it)


# ------------------------------------------------------------------------------------ command line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(*args: str) -> Any:
    return cli.parser().parse_args(["serve", *args])


def test_tls_secret_flag(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    assert cli._tls_secret(_serve("--kubernetes"), "aigw-system") == ("aigw-system", "aigw-xds-tls")
    assert cli._tls_secret(_serve("--kubernetes"), "ops") == ("ops", "aigw-xds-tls")  # $POD_NAMESPACE
    assert cli._tls_secret(_serve("--kubernetes", "--tls-secret", "x/my.tls"), "ops") == ("x", "my.tls")
    files = ("--tls-cert", "s.crt", "--tls-key", "s.key")
    assert cli._tls_secret(_serve("--kubernetes", *files), "ops") is None  # files win over the default
    assert cli._tls_secret(_serve("--config", "c"), "ops") is None
    assert capsys.readouterr().err == ""
    assert cli._tls_secret(_serve("--kubernetes", "--tls-secret", ""), "ops") is None
    assert capsys.readouterr().err.splitlines() == [
        'aigw-xds: warning: --tls-secret "": xDS is served in plaintext; ServiceAccount tokens and the '
        "backends' credentials cross the pod network unencrypted"
    ]
    refused = {
        ("--kubernetes", "--tls-secret", "no-namespace"): "--tls-secret 'no-namespace': expected NAMESPACE/NAME",
        ("--kubernetes", "--tls-secret", "A/b"): "--tls-secret 'A/b': expected NAMESPACE/NAME",
        ("--kubernetes", "--tls-secret", "a/b", *files): "--tls-secret and --tls-cert exclude each other",
        ("--config", "c", "--tls-secret", "a/b"): "--tls-secret needs --kubernetes",
    }
    for args, message in refused.items():
        with pytest.raises(cli.CliError) as raised:
            cli._tls_secret(_serve(*args), "ops")
        assert str(raised.value).startswith(message)


def test_serve_exits_with_one_line_when_the_secret_cannot_be_created(
    server: KubeAPIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    server.forbid("create", "", "secrets")
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    args = ["serve", "--kubernetes", "--kubeconfig", str(kubeconfig), "--listen", f"127.0.0.1:{_free_port()}"]
    assert cli.main([*args, "--translator-listen", ""]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("aigw-xds: error: the TLS Secret aigw-system/aigw-xds-tls: ")
    assert 'cannot create resource "secrets" in API group "" in the namespace "aigw-system"' in line


def test_the_bootstrap_verifies_the_name_dialled():
    """Envoy checks only the chain unless told a name: the xDS cluster requires the host it dials."""
    from aigw_xds.envoy.bootstrap import bootstrap

    def tls(host: str) -> dict[str, Any]:
        config = bootstrap(xds_host=host, xds_port=18000, fleet="a/gw", node_id="n", tls_ca="/ca.crt")
        context: dict[str, Any] = config["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
        return context

    by_name = tls("aigw-xds.aigw-system.svc.cluster.local")
    assert by_name["sni"] == "aigw-xds.aigw-system.svc.cluster.local"
    assert by_name["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "aigw-xds.aigw-system.svc.cluster.local"}}
    ]
    by_address = tls("10.0.0.7")
    assert "sni" not in by_address  # SNI cannot be an IP address
    assert by_address["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "IP_ADDRESS", "matcher": {"exact": "10.0.0.7"}}
    ]
    plain = bootstrap(xds_host="10.0.0.7", xds_port=18000, fleet="a/gw", node_id="n")
    assert "transport_socket" not in plain["static_resources"]["clusters"][0]


# ------------------------------------------------------------------------- renewal while serving


def _presented(port: int) -> bytes:
    """The PEM certificate a new TLS connection is shown (not verified: compared)."""
    return ssl.DER_cert_to_PEM_cert(presented_certificate(port)).encode().strip()


async def test_a_serving_control_plane_picks_up_a_renewed_or_restarted_secret(server: KubeAPIServer, tmp_path: Path):
    """serve --kubernetes looks at its Secret again while serving (every minute; here 0.1 s): a
    renewal by another replica (same CA) is served to new connections; a new CA is also published
    (a platform team's trial left a replica on the old CA for over nine minutes: it looked every
    12 h)."""
    for doc in yaml.safe_load_all(gateway("gw", namespace="a")):
        if doc:
            server.apply(doc)
    kubernetes = KubernetesOptions(
        kubeconfig=str(server.write_kubeconfig(tmp_path / "kubeconfig")),
        controller_name="gateway.envoyproxy.io/gatewayclass-controller",
        tls_secret=(NS, NAME),
        tls_service=(NS, "aigw-xds"),
        tls_recheck=0.1,
    )
    plane = ControlPlane(kubernetes=kubernetes, listen=f"127.0.0.1:{_free_port()}", translator_listen=None)
    await plane.start()

    async def until(check: Callable[[], Any]) -> None:
        deadline = time.monotonic() + 5
        while not await asyncio.to_thread(check):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)

    def published() -> str | None:
        configmap = server.get("ConfigMap", "a", "aigw-xds-ca")
        return configmap["data"]["ca.crt"] if configmap else None

    try:
        first = from_secret_data(server.get("Secret", NS, NAME)["data"])
        assert await asyncio.to_thread(_presented, plane.port) == first.cert.strip()
        await until(lambda: published() == first.ca.decode())
        assert first.ca_key is not None

        renewed = reissue(first.ca, first.ca_key, datetime.datetime.now(datetime.UTC), NAMES)
        server.apply(secret_manifest(NS, NAME, renewed))  # another replica renewed it
        await until(lambda: _presented(plane.port) == renewed.cert.strip())
        assert published() == first.ca.decode()

        restarted = new_authority(datetime.datetime.now(datetime.UTC), NAMES)
        server.apply(secret_manifest(NS, NAME, restarted))  # started over: a new CA
        await until(lambda: _presented(plane.port) == restarted.cert.strip())
        await until(lambda: published() == restarted.ca.decode())
    finally:
        await plane.stop(0)
