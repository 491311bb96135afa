"""Kubernetes mode secure by default: `aigw-xds serve --kubernetes` (real processes) provisions its
own TLS Secret, publishes its CA as the ConfigMap aigw-xds-ca in the namespaces of its Gateways,
and a translator sidecar (`aigw-xds translator`, a real process) that trusts that published CA and
proves its ServiceAccount with a token the API server issued gets its namespace's fleet over TLS; a
plaintext client is refused.

The API server is EMULATED (fakes/aigw_fakes/kube_apiserver.py, a stand-in: no kube-apiserver runs
on these machines); its TokenReview authenticates the tokens it issued (issue_token), as a real
one does.

The Service's DNS names (aigw-xds.aigw-system.svc...) do not resolve here, so the control plane is
told its Service is called `localhost` (--tls-service-name): its certificate then names localhost,
which the sidecar dials and verifies, as a sidecar in a cluster dials and verifies the Service's
name."""

from __future__ import annotations

import base64
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from aigw_fakes.kube_apiserver import KubeAPIServer
from aigw_xds.processes import stop_process
from aigw_xds.xds import type_urls
from tests.kube_api import apply_yaml, grant_secrets
from tests.resource_text import api_key, backend, gateway, route

from .harness.certs import presented_certificate
from .harness.control_plane import ControlPlaneProcess
from .harness.processes import die_with_parent, free_port, json_lines, wait_for

pytestmark = pytest.mark.e2e

OURS = "gateway.envoyproxy.io/gatewayclass-controller"  # tests/resource_text's GatewayClass
SECRET_NS, SECRET_NAME = "aigw-system", "aigw-xds-tls"  # the default of --tls-secret


@pytest.fixture
def api(kube_api: KubeAPIServer) -> KubeAPIServer:
    for namespace in ("a", "b"):
        text = gateway(f"gw-{namespace}", namespace=namespace, port=free_port())
        text += route("r", {"m": "b"}, gateway_name=f"gw-{namespace}", namespace=namespace)
        text += backend("b", 9999, namespace=namespace) + api_key("b", f"sk-{namespace}", namespace=namespace)
        apply_yaml(kube_api, text)
    return kube_api


class Replica(ControlPlaneProcess):
    """`aigw-xds serve --kubernetes`; launch() returns at once (so several replicas start together),
    _serving() waits until it serves: its port is bound before the first list of the API, and
    served after it."""

    def launch(self) -> None:
        self._launching = True
        try:
            self.start()
        finally:
            self._launching = False

    def _listening(self) -> bool:
        return getattr(self, "_launching", False) or super()._listening()


def _replica(api: KubeAPIServer, workdir: Path, *extra: str) -> Replica:
    kubeconfig = api.write_kubeconfig(workdir / "kubeconfig")
    args = (
        "--kubernetes",
        "--kubeconfig",
        str(kubeconfig),
        "--controller-name",
        OURS,
        "--leader-election-namespace",
        "aigw-system",
        "--translator-listen",
        "",
        "--tls-service-name",
        "localhost",
        *extra,
    )
    return Replica(None, free_port(), workdir, extra=args)


def _end(replica: Replica) -> None:
    """SIGKILL (a graceful stop takes seconds: the Kubernetes source's watches wind down, not what
    these tests are about), then the log closed."""
    replica.kill()
    replica.stop()


def _serving(replica: Replica) -> None:
    _until(lambda: any(e.get("event") == "xds_server_listening" for e in replica.events()), "serving")


def _start(replica: Replica) -> None:
    replica.launch()
    _serving(replica)


def _until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """check()'s first truthy value: the harness's wait_for, called as these tests read."""
    return wait_for(check, timeout=timeout, what=what)


class Sidecar:
    """`aigw-xds translator --xds localhost:PORT ...` as a subprocess; its JSON log lines."""

    def __init__(self, workdir: Path, name: str, xds_port: int, *flags: str) -> None:
        self.log = workdir / f"translator-{name}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aigw_xds",
                    "translator",
                    "--xds",
                    f"localhost:{xds_port}",
                    "--listen",
                    "127.0.0.1:0",
                    *flags,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in json_lines(self.log) if e.get("event") == name]

    def fleets(self) -> list[str] | None:
        applied = self.events("xds_config_applied")
        return applied[-1]["fleets"] if applied else None

    def stop(self) -> None:
        stop_process(self.process)


def test_replicas_provision_one_certificate_publish_its_ca_and_serve_sidecars_over_tls(
    api: KubeAPIServer, tmp_path: Path
):
    # Two replicas start at once against a cluster without the Secret: one creates it, the other
    # loses the race (409) and serves the same certificate.
    replicas = [_replica(api, tmp_path), _replica(api, tmp_path)]
    sidecars: list[Sidecar] = []
    try:
        for replica in replicas:  # launched together, awaited after
            replica.launch()
        for replica in replicas:
            _serving(replica)
        secret = api.get("Secret", SECRET_NS, SECRET_NAME)
        assert secret is not None and secret["type"] == "kubernetes.io/tls"
        data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
        served = {presented_certificate(replica.port) for replica in replicas}
        assert len(served) == 1
        assert ssl.DER_cert_to_PEM_cert(served.pop()).encode().strip() == data["tls.crt"].strip()
        statuses = [r.status for r in api.request_log if r.verb == "create" and r.resource == "secrets"]
        assert statuses.count(201) == 1 and set(statuses) <= {201, 409}, statuses

        # The CA, public, where the Gateways are.
        def published(namespace: str) -> str | None:
            configmap = api.get("ConfigMap", namespace, "aigw-xds-ca")
            return configmap["data"]["ca.crt"] if configmap else None

        assert _until(lambda: published("a"), "aigw-xds-ca in a") == data["ca.crt"].decode()
        assert _until(lambda: published("b"), "aigw-xds-ca in b") == data["ca.crt"].decode()
        assert published("aigw-system") is None  # no Gateway there
        ca_file = tmp_path / "ca.crt"
        ca_file.write_text(published("a") or "")

        # A sidecar of namespace a: the published CA, a token the API server issued, and RBAC that
        # lets its ServiceAccount get the Secret its Gateway's configuration carries (the key).
        token_file = tmp_path / "token"
        token_file.write_text(api.issue_token("a", "envoy-gw-a"))
        grant_secrets(api, "a", "envoy-gw-a", ["b-key"])
        auth = ("--xds-ca", str(ca_file), "--xds-token-file", str(token_file))
        port = replicas[1].port
        own = Sidecar(tmp_path, "own", port, *auth, "--fleet", "a/gw-a")
        every = Sidecar(tmp_path, "every", port, *auth)
        sidecars += [own, every]
        assert _until(own.fleets, "the sidecar of a gets its fleet over TLS") == ["a/gw-a"]
        assert _until(every.fleets, "only its namespace's fleets") == ["a/gw-a"]

        # Plaintext is refused: the translator without --xds-ca, and a raw gRPC client.
        plain = Sidecar(tmp_path, "plain", port, "--xds-token-file", str(token_file), "--fleet", "a/gw-a")
        sidecars.append(plain)
        _until(lambda: plain.events("xds_stream_failed"), "a plaintext sidecar refused")
        assert plain.fleets() is None
        node = base_pb2.Node(id="n", cluster="a/gw-a")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
                iter([discovery_pb2.DiscoveryRequest(node=node, type_url=type_urls.LISTENER)]),
                timeout=5,
            )
            with pytest.raises(grpc.RpcError) as refused:
                next(stream)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        # Nothing secret in the control plane's log.
        logs = "".join(replica.log.read_text() for replica in replicas)
        assert "PRIVATE KEY" not in logs
        for key in (data["tls.key"], data["ca.key"]):
            assert base64.b64encode(key).decode() not in logs
        events = [e["event"] for r in replicas for e in r.events() if str(e.get("event", "")).startswith("xds_tls")]
        assert "xds_tls_secret_created" in events
    finally:
        for sidecar in sidecars:
            sidecar.stop()
        for replica in replicas:
            _end(replica)


def test_a_restart_serves_the_same_certificate_and_plaintext_is_one_warning(api: KubeAPIServer, tmp_path: Path):
    first = _replica(api, tmp_path)
    _start(first)
    try:
        certificate = presented_certificate(first.port)
    finally:
        _end(first)
    api.clear_request_log()
    again = _replica(api, tmp_path)
    _start(again)
    try:
        assert presented_certificate(again.port) == certificate
        assert not [r for r in api.request_log if r.resource == "secrets" and r.verb in ("create", "update")]
    finally:
        _end(again)

    plain = _replica(api, tmp_path, "--tls-secret", "")
    _start(plain)
    try:
        with pytest.raises(ssl.SSLError):
            presented_certificate(plain.port)
        warnings = [line for line in plain.log.read_text().splitlines() if "warning: --tls-secret" in line]
        assert warnings == [
            'aigw-xds: warning: --tls-secret "": xDS is served in plaintext; ServiceAccount tokens and the '
            "backends' credentials cross the pod network unencrypted"
        ]
    finally:
        _end(plain)
