"""Several `aigw-xds serve --kubernetes` replicas (real processes) against one API server, with real
Envoys: one leader writes status, the other takes over when it dies or leaves; the replicas serve
byte-identical resources and versions; an Envoy whose replica is killed reconnects to the other
one, keeps serving and gets nothing resent; a Gateway is Programmed from the Envoys of every
replica.

The API server is EMULATED (fakes/aigw_fakes/kube, a stand-in: no kube-apiserver can run on these
machines). It implements what the replicas depend on as a real one does: list + watch from a
resourceVersion, the status subresource, Leases with optimistic concurrency (409 on a stale
resourceVersion), label selectors.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from aigw_fakes.kube_apiserver import KubeAPIServer
from aigw_xds.envoy.bootstrap import bootstrap
from aigw_xds.envoy.process import EnvoyProcess
from tests.kube_api import apply_yaml
from tests.resource_text import api_key, backend, gateway, route

from .harness.certs import CertificateAuthority
from .harness.control_plane import ControlPlaneProcess
from .harness.envoy import until_live
from .harness.processes import free_port, wait_for
from .harness.traffic import EchoUpstream, SteadyTraffic, post

pytestmark = pytest.mark.e2e

FLEET = "default/gw"
OURS = "gateway.envoyproxy.io/gatewayclass-controller"  # the controllerName of resource_text.gateway()
LEASE_NAMESPACE, LEASE_NAME = "aigw-system", "aigw-xds"
LEASE_S = 3.0  # --leader-election-timings 3,2,0.5: lease duration, renew deadline, retry period
TIMINGS = "3,2,0.5"
# A takeover after a kill waits one lease duration from the last renewal seen; allowed 3x that.
TAKEOVER_BOUND_S = 3 * LEASE_S


@pytest.fixture
def api(kube_api: KubeAPIServer) -> KubeAPIServer:
    return kube_api


@pytest.fixture
def upstream() -> Iterator[EchoUpstream]:
    echo = EchoUpstream("llm")
    yield echo
    echo.stop()


# The Envoys' ServiceAccount may read the Secret their configuration carries (the backend's key):
# without it, the replicas would not send them that configuration.
ENVOY_RBAC = """
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: envoy-secrets, namespace: default}
rules: [{apiGroups: [""], resources: [secrets], resourceNames: [llm-key], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: envoy-secrets, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: envoy-secrets}
subjects: [{kind: ServiceAccount, name: envoy, namespace: default}]
"""


def _configure(api: KubeAPIServer, listen: int, upstream_port: int, models: tuple[str, ...] = ("m1",)) -> None:
    apply_yaml(
        api,
        gateway(port=listen)
        + route("r", dict.fromkeys(models, "llm"))
        + backend("llm", upstream_port)
        + api_key("llm", "sk-backend")
        + ENVOY_RBAC,
    )


class Replicas:
    """The replicas of one test: started, killed and stopped by the test; all stopped at the end."""

    def __init__(self, api: KubeAPIServer, workdir: Path) -> None:
        self.kubeconfig = api.write_kubeconfig(workdir / "kubeconfig")
        self.workdir = workdir
        self.all: list[ControlPlaneProcess] = []
        # The Envoys prove their ServiceAccount with a client certificate carrying its SPIFFE ID.
        self.client_ca = CertificateAuthority("Envoy client CA")
        self.client_ca_file = workdir / "client-ca.crt"
        self.client_ca_file.write_text(self.client_ca.pem)

    def start(self, *extra: str) -> ControlPlaneProcess:
        """A replica: `aigw-xds serve --kubernetes` with fast leader election, serving xDS over TLS
        with the certificate the replicas keep in one Secret, issued for `localhost` (the name
        Envoy dials here), verifying client certificates against the test's CA; no translator in
        the process (--no-translator by default: Envoy routes on the x-ai-eg-model header)."""
        args = (
            "--kubernetes",
            "--kubeconfig",
            str(self.kubeconfig),
            "--controller-name",
            OURS,
            "--leader-election-namespace",
            LEASE_NAMESPACE,
            "--leader-election-timings",
            TIMINGS,
            "--tls-service-name",
            "localhost",
            "--tls-client-ca",
            str(self.client_ca_file),
            *(extra or ("--no-translator",)),
        )
        plane = ControlPlaneProcess(None, free_port(), self.workdir, extra=args)
        self.all.append(plane)
        plane.start()  # the port is bound before the first list of the API, served after it
        _until(lambda: _events(plane, "xds_server_listening"), "the replica serving")
        return plane

    def stop(self) -> None:
        for plane in self.all:
            plane.stop()


@pytest.fixture
def replicas(api: KubeAPIServer, tmp_path: Path) -> Iterator[Replicas]:
    group = Replicas(api, tmp_path)
    yield group
    group.stop()


def _events(plane: ControlPlaneProcess, event: str, **fields: Any) -> list[dict[str, Any]]:
    return [e for e in plane.events() if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())]


def _until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """check()'s first truthy value: the harness's wait_for, called as these tests read."""
    return wait_for(check, timeout=timeout, what=what)


def _holder(api: KubeAPIServer) -> str:
    lease = api.get("Lease", LEASE_NAMESPACE, LEASE_NAME) or {}
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def _identity(plane: ControlPlaneProcess) -> str:
    """The replica's candidate identity, as its leader_elected line names it ("" if it never led)."""
    elected = _events(plane, "leader_elected")
    return str(elected[-1]["identity"]) if elected else ""


def _status_writes(api: KubeAPIServer) -> int:
    """Successful writes of a status subresource the API server answered, from anyone."""
    return sum(
        1
        for r in api.request_log
        if r.verb == "patch" and (r.resource or "").endswith("/status") and r.status is not None and r.status < 300
    )


def _conditions(api: KubeAPIServer, kind: str, name: str) -> dict[str, dict[str, Any]]:
    obj = api.get(kind, "default", name) or {}
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def _xds_ca(api: KubeAPIServer, workdir: Path) -> Path:
    """The replicas' CA as Envoy pods get it: the ConfigMap aigw-xds-ca in the Gateway's namespace."""
    configmap = _until(lambda: api.get("ConfigMap", "default", "aigw-xds-ca"), "the CA ConfigMap published")
    path = workdir / "xds-ca.crt"
    path.write_text(configmap["data"]["ca.crt"])
    return path


def _envoy(replicas: Replicas, api: KubeAPIServer, ports: list[int], node_id: str) -> EnvoyProcess:
    """A delta-xDS Envoy of the fleet over mTLS (a client certificate naming the ServiceAccount
    default/envoy) whose xds_cluster has one endpoint per replica port, as a Kubernetes Service
    with that many ready endpoints gives it: it connects to one of them and fails over to another;
    started and LIVE."""
    workdir = replicas.workdir
    own = workdir / f"envoy-{node_id}"
    own.mkdir()
    identity = replicas.client_ca.issue(node_id, client=True, uris=("spiffe://cluster.local/ns/default/sa/envoy",))
    cert, key = identity.write(own, "client")
    admin = free_port()
    config = bootstrap(
        xds_host="localhost",
        xds_port=ports[0],
        fleet=FLEET,
        node_id=node_id,
        delta=True,
        admin_port=admin,
        tls_ca=str(_xds_ca(api, workdir)),
        tls_client_cert=str(cert),
        tls_client_key=str(key),
    )
    (xds_cluster,) = config["static_resources"]["clusters"]
    endpoints = xds_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    for port in ports[1:]:
        endpoints.append({"endpoint": {"address": {"socket_address": {"address": "localhost", "port_value": port}}}})
    envoy = EnvoyProcess(config, admin_port=admin, log_level="info", workdir=own)
    envoy.start()
    return until_live(envoy)


def _dynamic(envoy: EnvoyProcess) -> dict[str, Any]:
    """Everything Envoy got over xDS (clusters, endpoints, listeners, routes, secrets as Envoy shows
    them: redacted), with the versions it was told, without the times it applied them. (The static
    parts, the bootstrap's xds_cluster with the replica's port, differ by design.)"""
    dump = json.loads(envoy.admin("/config_dump?include_eds"))
    kept = {}
    for config in dump["configs"]:
        kind = config["@type"].rpartition(".")[2]
        kept[kind] = {
            k: _without_times(v) for k, v in config.items() if k.startswith("dynamic_") or k == "version_info"
        }
    return kept


def _without_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k != "last_updated"}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def _versions(envoy: EnvoyProcess) -> dict[str, str]:
    """(kind/name) -> version_info of every cluster, listener, route configuration and secret."""
    dump = _dynamic(envoy)
    out = {
        f"cluster/{c['cluster']['name']}": c["version_info"]
        for c in dump["ClustersConfigDump"]["dynamic_active_clusters"]
    }
    for listener in dump["ListenersConfigDump"]["dynamic_listeners"]:
        out[f"listener/{listener['name']}"] = listener["active_state"]["version_info"]
    for config in dump["RoutesConfigDump"]["dynamic_route_configs"]:
        out[f"route/{config['route_config']['name']}"] = config["version_info"]
    for secret in dump.get("SecretsConfigDump", {}).get("dynamic_active_secrets", []):
        out[f"secret/{secret['name']}"] = secret["version_info"]
    return out


def _last_updated(envoy: EnvoyProcess) -> dict[str, str]:
    """(kind/name) -> last_updated of every dynamic cluster, listener, route configuration and
    secret."""
    out: dict[str, str] = {}
    for config in envoy.config_dump()["configs"]:
        for entry in config.get("dynamic_active_clusters", []):
            out[f"cluster/{entry['cluster']['name']}"] = entry["last_updated"]
        for entry in config.get("dynamic_listeners", []):
            out[f"listener/{entry['name']}"] = entry["active_state"]["last_updated"]
        for entry in config.get("dynamic_route_configs", []):
            out[f"route/{entry['route_config']['name']}"] = entry["last_updated"]
        for entry in config.get("dynamic_active_secrets", []):
            out[f"secret/{entry['name']}"] = entry["last_updated"]
    return out


def _leader(api: KubeAPIServer, planes: tuple[ControlPlaneProcess, ...]) -> ControlPlaneProcess | None:
    """The replica the Lease names (None while it names none of them)."""
    holder = _holder(api)
    leaders = [p for p in planes if holder and _identity(p) == holder]
    return leaders[0] if leaders else None


def _edit_route(api: KubeAPIServer, models: tuple[str, ...]) -> int:
    """Replace the route's models; its new generation."""
    apply_yaml(api, route("r", dict.fromkeys(models, "llm")))
    return int(api.get("AIGatewayRoute", "default", "r")["metadata"]["generation"])


def _route_status_observed(api: KubeAPIServer, generation: int) -> bool:
    accepted = _conditions(api, "AIGatewayRoute", "r").get("Accepted") or {}
    return accepted.get("status") == "True" and accepted.get("observedGeneration") == generation


def _times(plane: ControlPlaneProcess, event: str) -> list[float]:
    """When the replica logged `event` (seconds since the epoch, its clock: the host's)."""
    return [datetime.fromisoformat(e["timestamp"]).timestamp() for e in _events(plane, event)]


def test_one_leader_writes_status_and_another_takes_over_when_it_dies_or_leaves(
    api: KubeAPIServer, replicas: Replicas, upstream: EchoUpstream
) -> None:
    """Who leads is read from the Lease and the replicas' logs; who wrote status from the API
    server's request log (every replica authenticates as the same ServiceAccount, so the counts of
    writes are matched against each replica's status_written lines)."""
    _configure(api, free_port(), upstream.port)
    a, b = replicas.start(), replicas.start()

    # Exactly one leads: the Lease names it, only its log says so, only it writes status.
    first = _until(lambda: _leader(api, (a, b)), "a leader named by the Lease")
    follower = b if first is a else a
    generation = _edit_route(api, ("m1", "m2"))
    _until(lambda: _route_status_observed(api, generation), "the edit's status written")
    _until(lambda: _status_writes(api) == len(_events(first, "status_written")), "writes logged by the leader")
    assert _events(follower, "leader_elected") == [] and _events(follower, "status_written") == []

    # kill -9: the follower takes the Lease over once it saw it unrenewed for a lease duration,
    # and writes the status of the next edit.
    killed_at = time.monotonic()
    first.kill()
    _until(lambda: _leader(api, (follower,)), "the follower leading", timeout=TAKEOVER_BOUND_S)
    took = time.monotonic() - killed_at
    assert _identity(follower) != _identity(first)
    # The writes before the follower's own: counted once it leads, a lease duration after the kill,
    # so that one the killed leader had on the way (the equality above can hold between two writes
    # of one edit) is among them (CI met one counted as the follower's).
    writes_before = _status_writes(api) - len(_events(follower, "status_written"))
    # A write the killed leader had on the way may have reached the API server unlogged (killed
    # between the answer and its log line): counted here, and never logged.
    unlogged = writes_before - len(_events(first, "status_written"))
    assert unlogged in (0, 1), unlogged
    generation = _edit_route(api, ("m1", "m2", "m3"))
    _until(lambda: _route_status_observed(api, generation), "the next edit's status written by the new leader")
    _until(
        lambda: _status_writes(api) - writes_before == len(_events(follower, "status_written")),
        "writes logged by the new leader",
    )
    assert len(_events(follower, "status_written")) > 0

    # A graceful stop releases the Lease: a third replica leads well before a lease duration.
    third = replicas.start()
    assert _leader(api, (follower, third)) is follower and _events(third, "leader_elected") == []
    follower.stop()  # SIGTERM, as the kubelet stops a pod
    _until(lambda: _leader(api, (third,)), "the third replica leading", timeout=TAKEOVER_BOUND_S)
    assert _events(follower, "leader_released"), "the stopped leader released the Lease"
    # From the release (the stopped replica's clock, the same host's) to the new leader's election:
    # one retry period or so, where a kill took a whole lease duration.
    released, elected = _times(follower, "leader_released")[0], _times(third, "leader_elected")[0]
    assert elected - released < LEASE_S, (
        f"taken over {elected - released:.1f} s after the release (a kill: {took:.1f} s)"
    )
    generation = _edit_route(api, ("m1",))
    _until(lambda: _route_status_observed(api, generation), "the third replica writing status")

    # At any time exactly one wrote: every write the API server answered is one its leader logged,
    # within that replica's leadership.
    planes = (first, follower, third)
    _until(
        lambda: _status_writes(api) - unlogged == sum(len(_events(p, "status_written")) for p in planes),
        "every write logged (but one the killed leader had on the way)",
    )
    assert all(_times(follower, "leader_elected")[0] <= t <= released for t in _times(follower, "status_written"))
    assert all(t >= elected for t in _times(third, "status_written"))
    assert all(t <= _times(follower, "leader_elected")[0] for t in _times(first, "status_written"))


def test_replicas_serve_byte_identical_resources_and_versions(
    api: KubeAPIServer, replicas: Replicas, upstream: EchoUpstream
) -> None:
    """One Envoy on each replica: everything they were sent, with its version, is the same. The
    translator runs as a sidecar (--translator-listen ""), so the ext_proc filters are in it too."""
    listen = free_port()
    _configure(api, listen, upstream.port)
    a = replicas.start("--translator-listen", "")
    b = replicas.start("--translator-listen", "")
    envoys = [
        _envoy(replicas, api, [a.port], "envoy-a"),
        _envoy(replicas, api, [b.port], "envoy-b"),
    ]
    try:
        dumps = [_dynamic(envoy) for envoy in envoys]
        assert dumps[0] == dumps[1]
        versions = _versions(envoys[0])
        assert {k.split("/")[0] for k in versions} >= {"cluster", "listener", "route", "secret"}, versions
        assert all(versions.values()) and versions == _versions(envoys[1])
        published = [{e["fleet"]: e["version"] for e in _events(p, "snapshot_published")} for p in (a, b)]
        assert published[0] == published[1] and FLEET in published[0]

        # After an edit, each replica read on its own watch: the same again.
        _edit_route(api, ("m1", "m2"))
        _until(lambda: all(_versions(e) != versions for e in envoys), "the edit on both Envoys")
        _until(lambda: _dynamic(envoys[0]) == _dynamic(envoys[1]), "the same edit on both")
        assert '"m2"' in json.dumps(_dynamic(envoys[0])["RoutesConfigDump"])
    finally:
        for envoy in envoys:
            envoy.stop()


def _xds_log_lines(envoy: EnvoyProcess, since: int) -> list[str]:
    return envoy.stderr_text()[since:].splitlines()


def test_failover_of_a_real_envoy_resends_nothing_and_serves_throughout(
    api: KubeAPIServer, replicas: Replicas, upstream: EchoUpstream
) -> None:
    """Envoy's xds_cluster lists both replicas (one Service, two endpoints). Killing the one it is
    connected to, it reconnects to the other, telling it the versions it has (Delta
    initial_resource_versions): they are the survivor's own, so nothing is sent again."""
    listen = free_port()
    _configure(api, listen, upstream.port)
    a, b = replicas.start(), replicas.start()
    envoy = _envoy(replicas, api, [a.port, b.port], "envoy-1")
    try:
        with SteadyTraffic(listen, "m1") as traffic:
            _until(lambda: traffic.results["llm"] > 20, "traffic through Envoy")
            (connected,) = [p for p in (a, b) if _events(p, "node_connected", node="envoy-1")]
            survivor = b if connected is a else a
            before = _last_updated(envoy)
            assert {k.split("/")[0] for k in before} >= {"cluster", "listener", "route"}, before
            events_seen, stderr_seen = len(survivor.events()), len(envoy.stderr_text())

            connected.kill()
            _until(lambda: _events(survivor, "node_connected", node="envoy-1"), "Envoy reconnected to the survivor")
            served = traffic.total()
            _until(lambda: traffic.total() > served + 20, "traffic after the reconnect")
            time.sleep(1.0)  # anything the survivor would send has been sent by now

            # Nothing resent: Envoy applied nothing new, and was answered only the empty replies
            # that the wildcard types (clusters, listeners) get on a new stream.
            assert _last_updated(envoy) == before
            sent = [e["type"] for e in survivor.events()[events_seen:] if e.get("event") == "response_sent"]
            assert set(sent) <= {"CDS", "LDS"}, sent
            lines = _xds_log_lines(envoy, stderr_seen)
            cds = [
                m.groups()
                for line in lines
                if (m := re.search(r"cds: response indicates (\d+) added/updated cluster\(s\), (\d+) removed", line))
            ]
            assert cds and all(groups == ("0", "0") for groups in cds), lines
            assert not [line for line in lines if "lds: add/update listener" in line], lines
            assert not traffic.failures, traffic.failures[:3]

            # An edit after the failover reaches Envoy.
            _edit_route(api, ("m1", "m2"))
            _until(lambda: post(listen, "m2")[0] == 200, "the edit served by Envoy")
            assert not traffic.failures, traffic.failures[:3]
            assert traffic.results["llm"] == traffic.total()
    finally:
        envoy.stop()


def _ack_reports(api: KubeAPIServer) -> dict[str, dict[str, Any]]:
    """Replica identity -> its report (the Leases aigw-xds-acks-*: per fleet, what its Envoys applied)."""
    return {
        lease["spec"]["holderIdentity"]: json.loads(lease["metadata"]["annotations"]["aigw-xds.io/fleets"])
        for lease in api.objects("Lease", LEASE_NAMESPACE)
        if lease["metadata"]["name"].startswith("aigw-xds-acks-")
    }


def _programmed(api: KubeAPIServer, envoys: int) -> dict[str, Any] | None:
    """The Gateway's Programmed condition if it is True with `envoys` Envoys applied."""
    condition = _conditions(api, "Gateway", "gw").get("Programmed") or {}
    plural = "" if envoys == 1 else "s"
    if condition.get("status") == "True" and condition["message"].startswith(f"{envoys} Envoy{plural} applied"):
        return condition
    return None


def test_programmed_counts_the_envoys_of_every_replica(
    api: KubeAPIServer, replicas: Replicas, upstream: EchoUpstream
) -> None:
    """Two Envoys of one Gateway, one on each replica: the leader's Programmed counts both (the
    follower reports its own in its Lease aigw-xds-acks-*), and one less once the follower's stops.
    A follower stopped gracefully deletes its report."""
    _configure(api, free_port(), upstream.port)
    a, b = replicas.start(), replicas.start()
    leader = _until(lambda: _leader(api, (a, b)), "a leader")
    follower = b if leader is a else a
    on_leader = _envoy(replicas, api, [leader.port], "envoy-on-leader")
    on_follower = _envoy(replicas, api, [follower.port], "envoy-on-follower")
    try:
        condition = _until(
            lambda: _programmed(api, 2),
            "Programmed by 2 Envoys",
            # The follower's report is rewritten on its 10 s heartbeat (an ACK does not wake it),
            # the leader reads the reports every 5 s.
            timeout=30.0,
        )
        assert condition["observedGeneration"] == api.get("Gateway", "default", "gw")["metadata"]["generation"]
        fleets = _ack_reports(api)
        assert _identity(leader) in fleets and len(fleets) == 2, fleets
        assert all(f[FLEET]["connected"] == 1 and f[FLEET]["applied"] == 1 for f in fleets.values()), fleets
        assert _events(follower, "status_written") == []

        on_follower.stop()
        _until(
            lambda: _programmed(api, 1),
            "Programmed by 1 Envoy once the follower's left",
            timeout=15.0,
        )
        assert _events(follower, "status_written") == []

        # A replica stopped gracefully deletes its report (the leader need not wait for it to expire).
        (follower_identity,) = set(fleets) - {_identity(leader)}
        follower.stop()
        assert set(_ack_reports(api)) == {_identity(leader)}, follower_identity
    finally:
        on_leader.stop()
        on_follower.stop()
