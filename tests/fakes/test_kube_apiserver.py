"""The emulated Kubernetes API server (aigw_fakes.kube_apiserver), driven only with the official
`kubernetes` client as a controller drives a real one. The API server here is EMULATED: no real
kube-apiserver can run on these machines, so every Kubernetes-mode test stands on what these tests
prove about the stand-in (resourceVersions, list/watch, 410 Gone, bookmarks, the status subresource,
generation, validation, RBAC, TokenReview, Lease)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, dynamic, informer, watch
from kubernetes.client.exceptions import ApiException

from aigw_fakes.kube_apiserver import CONTROLLER_USER, KubeAPIServer
from tests.kube_api import KINDS

GW = "gateway.networking.k8s.io"
AIGW = "aigateway.envoyproxy.io"
CONDITION = {
    "type": "Accepted",
    "status": "True",
    "reason": "Accepted",
    "message": "ok",
    "lastTransitionTime": "2026-12-02T10:00:00Z",
    "observedGeneration": 1,
}


@pytest.fixture(scope="module")
def api() -> Iterator[KubeAPIServer]:
    with KubeAPIServer(KINDS, bookmark_interval=0.2).running() as server:
        yield server


@pytest.fixture
def fresh() -> Iterator[KubeAPIServer]:
    """A server of the test's own (for compaction, restarts: things that touch every watcher)."""
    with KubeAPIServer(KINDS, bookmark_interval=0.2).running() as server:
        yield server


@pytest.fixture(scope="module")
def admin(api: KubeAPIServer) -> Any:
    return api.admin_client()


@pytest.fixture(scope="module")
def controller(api: KubeAPIServer, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A client built the way the controller builds it: from the kubeconfig the server writes."""
    path = api.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")
    return config.new_client_from_config(config_file=str(path))


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:60].strip("-")


def gateway(name: str, ns: str, listeners: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": f"{GW}/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "gatewayClassName": "aigw",
            "listeners": [{"name": f"l{i}", "port": 8080 + i, "protocol": "HTTP"} for i in range(listeners)],
        },
    }


def slice_(name: str, ns: str, service: str) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"]}],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
    }


def status_of(exc: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.value.body or "{}")
    assert body["kind"] == "Status" and body["code"] == exc.value.status
    return body


def collect(stream: Iterator[dict[str, Any]], n: int, w: watch.Watch) -> list[dict[str, Any]]:
    """The first n events of a watch stream (then the watch is stopped)."""
    out = []
    for event in stream:
        out.append(event)
        if len(out) == n:
            w.stop()
            break
    return out


# The client's models type every field Optional; the tests read them as a controller does (Any).
def custom(api_client: Any) -> Any:
    return client.CustomObjectsApi(api_client)


def core_api(api_client: Any) -> Any:
    return client.CoreV1Api(api_client)


def discovery_api(api_client: Any) -> Any:
    return client.DiscoveryV1Api(api_client)


def coordination_api(api_client: Any) -> Any:
    return client.CoordinationV1Api(api_client)


def authentication_api(api_client: Any) -> Any:
    return client.AuthenticationV1Api(api_client)


# ----------------------------------------------------------------------------------- discovery


def test_discovery_answers_what_the_clients_discovery_reads(api: KubeAPIServer, admin: Any) -> None:
    """Emulated API server: /version, /api, /apis and the group versions, as the dynamic client reads them."""
    assert client.VersionApi(admin).get_code().git_version.startswith("v1.")
    assert client.CoreApi(admin).get_api_versions().versions == ["v1"]
    groups: dict[str, Any] = {g.name: g for g in client.ApisApi(admin).get_api_versions().groups}
    assert {v.version for v in groups[GW].versions} == {"v1", "v1beta1", "v1alpha3"}
    assert groups[GW].preferred_version.version == "v1"
    assert {v.version for v in groups[AIGW].versions} == {"v1beta1", "v1alpha1"}
    assert groups[AIGW].preferred_version.version == "v1beta1"
    assert {"coordination.k8s.io", "authentication.k8s.io", "discovery.k8s.io"} <= set(groups)
    core = {r.name: r for r in core_api(admin).get_api_resources().resources}
    assert core["secrets"].namespaced and core["secrets"].kind == "Secret" and "watch" in core["secrets"].verbs
    assert "secrets/status" not in core and "services/status" in core

    dyn = dynamic.DynamicClient(admin)
    gw = dyn.resources.get(api_version=f"{GW}/v1", kind="Gateway")
    assert gw.namespaced and "status" in gw.subresources
    assert sorted(gw.subresources["status"].verbs) == ["get", "patch", "update"]
    assert not dyn.resources.get(api_version=f"{GW}/v1", kind="GatewayClass").namespaced
    assert dyn.resources.get(api_version=f"{GW}/v1alpha3", kind="BackendTLSPolicy").namespaced
    assert dyn.resources.get(api_version=f"{AIGW}/v1alpha1", kind="AIGatewayRoute").namespaced
    assert dyn.resources.get(api_version="coordination.k8s.io/v1", kind="Lease").namespaced
    review = dyn.resources.get(api_version="authentication.k8s.io/v1", kind="TokenReview")
    assert review.verbs == ["create"] and not review.subresources
    # what is not served is 404, as on a real server: a cluster-scoped kind under a namespace, an
    # unserved version, a status subresource a kind does not have
    for call in (
        lambda: custom(admin).list_namespaced_custom_object(GW, "v1", "x", "gatewayclasses"),
        lambda: custom(admin).list_cluster_custom_object(GW, "v1alpha2", "gateways"),
        lambda: custom(admin).get_namespaced_custom_object_status("coordination.k8s.io", "v1", "x", "leases", "l"),
    ):
        with pytest.raises(ApiException) as exc:
            call()
        assert exc.value.status == 404


def test_requests_without_a_known_bearer_token_are_401(api: KubeAPIServer) -> None:
    """Emulated API server: no token, a wrong token, or a minted service-account token whose audience
    is not the API server's are all Unauthorized."""
    for token in (None, "not-a-token", api.issue_token("default", "sa")):
        cfg = client.Configuration(host=api.url)
        if token:
            cfg.api_key = {"BearerToken": token}
            cfg.api_key_prefix = {"BearerToken": "Bearer"}
        with pytest.raises(ApiException) as exc:
            core_api(client.ApiClient(cfg)).list_secret_for_all_namespaces()
        assert exc.value.status == 401
        assert status_of(exc)["reason"] == "Unauthorized"


# ---------------------------------------------------------------------------- objects, versions


def test_writes_take_increasing_resource_versions_and_lists_carry_the_current_one(
    api: KubeAPIServer, admin: Any, ns: str
) -> None:
    """Emulated API server: one global resourceVersion; objects get uid, creationTimestamp, generation."""
    a = custom(admin).create_namespaced_custom_object(GW, "v1", ns, "gateways", gateway("a", ns))
    secret = core_api(admin).create_namespaced_secret(
        ns, client.V1Secret(metadata=client.V1ObjectMeta(name="s"), string_data={"k": "v"})
    )
    b = custom(admin).create_namespaced_custom_object(GW, "v1", ns, "gateways", gateway("b", ns))
    rvs = [
        int(a["metadata"]["resourceVersion"]),
        int(secret.metadata.resource_version),
        int(b["metadata"]["resourceVersion"]),
    ]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    assert a["metadata"]["generation"] == 1 and a["metadata"]["uid"] != b["metadata"]["uid"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", a["metadata"]["creationTimestamp"])
    listed = custom(admin).list_namespaced_custom_object(GW, "v1", ns, "gateways")
    assert listed["kind"] == "GatewayList" and listed["apiVersion"] == f"{GW}/v1"
    assert int(listed["metadata"]["resourceVersion"]) == api.resource_version >= rvs[-1]
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a", "b"]
    everywhere = custom(admin).list_cluster_custom_object(GW, "v1", "gateways")
    assert {"a", "b"} <= {i["metadata"]["name"] for i in everywhere["items"]}

    with pytest.raises(ApiException) as exc:
        custom(admin).create_namespaced_custom_object(GW, "v1", ns, "gateways", gateway("a", ns))
    assert exc.value.status == 409
    assert status_of(exc)["reason"] == "AlreadyExists"
    assert status_of(exc)["message"] == f'gateways.{GW} "a" already exists'


def test_new_gateways_and_gateway_classes_get_the_crd_default_status(admin: Any, ns: str) -> None:
    """Emulated API server: the Gateway API CRDs default status to Unknown/Pending "Waiting for controller"."""
    gw = custom(admin).create_namespaced_custom_object(
        GW, "v1", ns, "gateways", {**gateway("g", ns), "status": {"conditions": [CONDITION]}}
    )
    pending = {"status": "Unknown", "reason": "Pending", "message": "Waiting for controller"}
    assert [c["type"] for c in gw["status"]["conditions"]] == ["Accepted", "Programmed"]
    for c in gw["status"]["conditions"]:
        assert c.items() >= {**pending, "lastTransitionTime": "1970-01-01T00:00:00Z"}.items()
    gc = custom(admin).create_cluster_custom_object(
        GW,
        "v1",
        "gatewayclasses",
        {"kind": "GatewayClass", "metadata": {"name": ns}, "spec": {"controllerName": "x/y"}},
    )
    assert "namespace" not in gc["metadata"]
    assert [(c["type"], c["status"], c["reason"]) for c in gc["status"]["conditions"]] == [
        ("Accepted", "Unknown", "Pending")
    ]


def test_generation_grows_only_when_spec_changes(admin: Any, ns: str) -> None:
    """Emulated API server: metadata.generation is bumped by spec changes only; a no-op write is no write."""
    api = custom(admin)
    gw = api.create_namespaced_custom_object(GW, "v1", ns, "gateways", gateway("g", ns))
    labelled = api.patch_namespaced_custom_object(GW, "v1", ns, "gateways", "g", {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 1
    assert int(labelled["metadata"]["resourceVersion"]) > int(gw["metadata"]["resourceVersion"])
    respec = api.patch_namespaced_custom_object(GW, "v1", ns, "gateways", "g", {"spec": {"gatewayClassName": "other"}})
    assert respec["metadata"]["generation"] == 2
    same = api.replace_namespaced_custom_object(GW, "v1", ns, "gateways", "g", respec)
    assert same["metadata"]["resourceVersion"] == respec["metadata"]["resourceVersion"]
    # objects without spec: anything but metadata and status counts
    core = core_api(admin)
    cm = core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"), data={"a": "1"})
    )
    assert cm.metadata.generation == 1
    cm = core.patch_namespaced_config_map("c", ns, {"metadata": {"annotations": {"x": "y"}}})
    assert cm.metadata.generation == 1
    cm = core.patch_namespaced_config_map("c", ns, {"data": {"a": "2"}})
    assert cm.metadata.generation == 2


def test_the_same_objects_answer_under_every_served_version(admin: Any, ns: str) -> None:
    """Emulated API server: aigateway kinds under v1beta1 and v1alpha1, BackendTLSPolicy under v1 and
    v1alpha3, one object each, apiVersion rewritten per request."""
    api = custom(admin)
    route = {
        "apiVersion": f"{AIGW}/v1beta1",
        "kind": "AIGatewayRoute",
        "metadata": {"name": "r"},
        "spec": {"rules": []},
    }
    created = api.create_namespaced_custom_object(AIGW, "v1beta1", ns, "aigatewayroutes", route)
    old = api.get_namespaced_custom_object(AIGW, "v1alpha1", ns, "aigatewayroutes", "r")
    assert old["apiVersion"] == f"{AIGW}/v1alpha1" and old["metadata"]["uid"] == created["metadata"]["uid"]
    listed = api.list_namespaced_custom_object(AIGW, "v1alpha1", ns, "aigatewayroutes")
    assert listed["apiVersion"] == f"{AIGW}/v1alpha1" and listed["items"][0]["apiVersion"] == f"{AIGW}/v1alpha1"
    tls = {"kind": "BackendTLSPolicy", "metadata": {"name": "t"}, "spec": {"targetRefs": []}}
    api.create_namespaced_custom_object(GW, "v1alpha3", ns, "backendtlspolicies", tls)
    assert api.get_namespaced_custom_object(GW, "v1", ns, "backendtlspolicies", "t")["apiVersion"] == f"{GW}/v1"


def test_built_in_types_are_stored_as_the_real_server_decodes_them(admin: Any, ns: str) -> None:
    """Emulated API server: Secret stringData becomes base64 data (data that is not base64 is 400);
    a Service gets type ClusterIP, a cluster IP it keeps across a replace, TCP and targetPort = port."""
    core = core_api(admin)
    secret = client.V1Secret(metadata=client.V1ObjectMeta(name="s"), data={"a": "YQ=="}, string_data={"b": "bee"})
    stored = core.create_namespaced_secret(ns, secret)
    assert stored.data == {"a": "YQ==", "b": "YmVl"} and not stored.string_data
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_secret(ns, {"metadata": {"name": "bad"}, "data": {"a": "not base64!"}})
    assert exc.value.status == 400
    svc: Any = client.V1Service(
        metadata=client.V1ObjectMeta(name="svc"),
        spec=client.V1ServiceSpec(ports=[client.V1ServicePort(name="http", port=80)]),
    )
    created = core.create_namespaced_service(ns, svc)
    assert created.spec.type == "ClusterIP" and re.fullmatch(
        r"10\.(9[6-9]|10\d|11[01])\.\d+\.\d+", created.spec.cluster_ip
    )
    assert (created.spec.ports[0].protocol, created.spec.ports[0].target_port) == ("TCP", 80)
    svc.metadata.resource_version = created.metadata.resource_version
    svc.spec.ports = [client.V1ServicePort(name="http", port=81, target_port="web")]
    replaced = core.replace_namespaced_service("svc", ns, svc)
    assert replaced.spec.cluster_ip == created.spec.cluster_ip and replaced.spec.ports[0].target_port == "web"


# ------------------------------------------------------------------------------ update, patch


def test_replace_needs_the_current_resource_version(admin: Any, ns: str) -> None:
    """Emulated API server: PUT of a custom resource without metadata.resourceVersion is 422, with a
    stale one 409 with the real message."""
    api = custom(admin)
    first = api.create_namespaced_custom_object(GW, "v1", ns, "gateways", gateway("g", ns))
    body = gateway("g", ns, listeners=2)
    with pytest.raises(ApiException) as exc:
        api.replace_namespaced_custom_object(GW, "v1", ns, "gateways", "g", body)
    assert exc.value.status == 422
    assert status_of(exc)["message"] == (
        f'Gateway.{GW} "g" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update'
    )
    body["metadata"]["resourceVersion"] = first["metadata"]["resourceVersion"]
    second = api.replace_namespaced_custom_object(GW, "v1", ns, "gateways", "g", body)
    assert second["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as exc:
        api.replace_namespaced_custom_object(GW, "v1", ns, "gateways", "g", body)  # the first rv again
    assert exc.value.status == 409
    assert status_of(exc)["reason"] == "Conflict"
    assert status_of(exc)["message"] == (
        f'Operation cannot be fulfilled on gateways.{GW} "g": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )


def test_patch_content_types(admin: Any, ns: str) -> None:
    """Emulated API server: merge patch (what the client sends for a custom object) and JSON patch work;
    strategic merge patch is 415 on a custom resource and accepted on a built-in one."""
    api = custom(admin)
    api.create_namespaced_custom_object(GW, "v1", ns, "gateways", gateway("g", ns))
    merged = api.patch_namespaced_custom_object(GW, "v1", ns, "gateways", "g", {"metadata": {"labels": {"x": "1"}}})
    assert merged["metadata"]["labels"] == {"x": "1"} and merged["spec"]["gatewayClassName"] == "aigw"
    with pytest.raises(ApiException) as exc:
        api.patch_namespaced_custom_object(
            GW, "v1", ns, "gateways", "g", {"spec": {}}, _content_type="application/strategic-merge-patch+json"
        )
    assert exc.value.status == 415
    assert status_of(exc)["reason"] == "UnsupportedMediaType"
    assert status_of(exc)["message"].startswith(
        "the body of the request was in an unknown format - accepted media types"
    )
    ops = [
        {"op": "replace", "path": "/spec/gatewayClassName", "value": "jp"},
        {"op": "remove", "path": "/metadata/labels/x"},
    ]
    patched = api.patch_namespaced_custom_object(
        GW, "v1", ns, "gateways", "g", ops, _content_type="application/json-patch+json"
    )
    assert patched["spec"]["gatewayClassName"] == "jp" and not patched["metadata"].get("labels")

    core = core_api(admin)
    core.create_namespaced_service(
        ns,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="svc"), spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)])
        ),
    )
    svc = core.patch_namespaced_service("svc", ns, {"metadata": {"labels": {"a": "b"}}})  # sent as strategic merge
    assert svc.metadata.labels == {"a": "b"}


def test_delete_answers_the_real_not_found_shape(admin: Any, ns: str) -> None:
    """Emulated API server: DELETE of a missing object is 404 `<plural>.<group> "<name>" not found`."""
    with pytest.raises(ApiException) as exc:
        custom(admin).delete_namespaced_custom_object(GW, "v1", ns, "gateways", "nope")
    body = status_of(exc)
    assert (exc.value.status, body["reason"]) == (404, "NotFound")
    assert body["message"] == f'gateways.{GW} "nope" not found'
    assert body["details"] == {"name": "nope", "group": GW, "kind": "gateways"}
    core = core_api(admin)
    with pytest.raises(ApiException) as exc:
        core.delete_namespaced_secret("nope", ns)
    assert status_of(exc)["message"] == 'secrets "nope" not found'
    core.create_namespaced_secret(ns, client.V1Secret(metadata=client.V1ObjectMeta(name="s")))
    assert core.delete_namespaced_secret("s", ns)["status"] == "Success"  # built-ins answer a Status
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_secret("s", ns)
    assert exc.value.status == 404


# ------------------------------------------------------------------------------------- status


def test_status_subresource_isolation(admin: Any, ns: str) -> None:
    """Emulated API server: writes to the object ignore status; writes to /status change only status
    (never spec or generation)."""
    api = custom(admin)
    api.create_namespaced_custom_object(GW, "v1", ns, "gateways", gateway("g", ns))
    ignored = api.patch_namespaced_custom_object(GW, "v1", ns, "gateways", "g", {"status": {"conditions": [CONDITION]}})
    assert ignored["status"]["conditions"][0]["status"] == "Unknown"
    body = api.get_namespaced_custom_object_status(GW, "v1", ns, "gateways", "g")
    body["spec"]["gatewayClassName"] = "changed-through-status"
    body["status"] = {"conditions": [CONDITION]}
    written = api.replace_namespaced_custom_object_status(GW, "v1", ns, "gateways", "g", body)
    assert written["status"]["conditions"] == [CONDITION]
    assert written["spec"]["gatewayClassName"] == "aigw" and written["metadata"]["generation"] == 1
    programmed = {**CONDITION, "type": "Programmed"}
    patched = api.patch_namespaced_custom_object_status(
        GW,
        "v1",
        ns,
        "gateways",
        "g",
        {"spec": {"gatewayClassName": "x"}, "status": {"conditions": [CONDITION, programmed]}},
    )
    assert [c["type"] for c in patched["status"]["conditions"]] == ["Accepted", "Programmed"]
    assert patched["spec"]["gatewayClassName"] == "aigw" and patched["metadata"]["generation"] == 1
    again = api.patch_namespaced_custom_object_status(GW, "v1", ns, "gateways", "g", {"status": patched["status"]})
    assert again["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]  # unchanged: no write


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (
            {"conditions": [{**CONDITION, "reason": "not valid"}]},
            'status.conditions[0].reason: Invalid value: "not valid"',
        ),
        ({"conditions": [{**CONDITION, "status": "Maybe"}]}, 'status.conditions[0].status: Unsupported value: "Maybe"'),
        (
            {"conditions": [{k: v for k, v in CONDITION.items() if k != "message"}]},
            "status.conditions[0].message: Required value",
        ),
        (
            {"conditions": [{**CONDITION, "lastTransitionTime": "yesterday"}]},
            "status.conditions[0].lastTransitionTime: Invalid value",
        ),
        (
            {"conditions": [{**CONDITION, "observedGeneration": -1}]},
            "status.conditions[0].observedGeneration: Invalid value: -1",
        ),
        ({"conditions": [CONDITION, CONDITION]}, "status.conditions[1]: Duplicate value"),
        (
            {"conditions": [{**CONDITION, "type": f"T{i}"} for i in range(9)]},
            "status.conditions: Too many: 9: must have at most 8",
        ),
        ({"conditions": [{**CONDITION, "message": "m" * 32769}]}, "status.conditions[0].message: Too long"),
        (
            {"listeners": [{"name": "l0", "supportedKinds": [{"kind": "AIGatewayRoute"}], "conditions": [CONDITION]}]},
            "status.listeners[0].attachedRoutes: Required value",
        ),
        (
            {
                "listeners": [
                    {
                        "name": "l0",
                        "supportedKinds": [],
                        "attachedRoutes": 1,
                        "conditions": [{**CONDITION, "reason": ""}],
                    }
                ]
            },
            "status.listeners[0].conditions[0].reason: Invalid value",
        ),
    ],
)
def test_invalid_status_conditions_are_422(admin: Any, ns: str, status: dict[str, Any], message: str) -> None:
    """Emulated API server: the CRDs' metav1.Condition schema, checked on status writes, 422 naming the field."""
    api = custom(admin)
    api.create_namespaced_custom_object(GW, "v1", ns, "gateways", gateway("g", ns))
    with pytest.raises(ApiException) as exc:
        api.patch_namespaced_custom_object_status(GW, "v1", ns, "gateways", "g", {"status": status})
    body = status_of(exc)
    assert (exc.value.status, body["reason"]) == (422, "Invalid")
    assert body["message"].startswith(f'Gateway.{GW} "g" is invalid: ')
    assert message in body["message"]
    assert body["details"]["causes"] and body["details"]["kind"] == "Gateway"
    unchanged = api.get_namespaced_custom_object(GW, "v1", ns, "gateways", "g")
    assert unchanged["status"]["conditions"][0]["reason"] == "Pending"


def test_valid_gateway_listener_status_is_accepted(admin: Any, ns: str) -> None:
    """Emulated API server: a complete listener status and an aigateway route's conditions are accepted."""
    api = custom(admin)
    api.create_namespaced_custom_object(GW, "v1", ns, "gateways", gateway("g", ns))
    listeners = [
        {
            "name": "l0",
            "supportedKinds": [{"group": AIGW, "kind": "AIGatewayRoute"}],
            "attachedRoutes": 2,
            "conditions": [CONDITION],
        }
    ]
    out = api.patch_namespaced_custom_object_status(GW, "v1", ns, "gateways", "g", {"status": {"listeners": listeners}})
    assert out["status"]["listeners"] == listeners
    api.create_namespaced_custom_object(
        AIGW, "v1beta1", ns, "aigatewayroutes", {"kind": "AIGatewayRoute", "metadata": {"name": "r"}, "spec": {}}
    )
    with pytest.raises(ApiException) as exc:
        api.patch_namespaced_custom_object_status(
            AIGW, "v1beta1", ns, "aigatewayroutes", "r", {"status": {"conditions": [{**CONDITION, "status": "yes"}]}}
        )
    assert exc.value.status == 422


# --------------------------------------------------------------------------------- list, watch


def test_selectors_and_consistent_pages(api: KubeAPIServer, admin: Any, ns: str) -> None:
    """Emulated API server: label/field selectors; limit/continue pages come from one snapshot."""
    disc = discovery_api(admin)
    for i in range(5):
        api.apply(slice_(f"s{i}", ns, "a" if i < 3 else "b"))
    selected = disc.list_namespaced_endpoint_slice(ns, label_selector="kubernetes.io/service-name=a")
    assert [s.metadata.name for s in selected.items] == ["s0", "s1", "s2"]
    assert len(disc.list_namespaced_endpoint_slice(ns, label_selector="kubernetes.io/service-name").items) == 5
    assert len(disc.list_namespaced_endpoint_slice(ns, label_selector="kubernetes.io/service-name!=a,!nope").items) == 2
    by_name = disc.list_endpoint_slice_for_all_namespaces(field_selector=f"metadata.name=s4,metadata.namespace={ns}")
    assert [s.metadata.name for s in by_name.items] == ["s4"]
    with pytest.raises(ApiException) as exc:
        disc.list_namespaced_endpoint_slice(ns, field_selector="spec.nodeName=x")
    assert exc.value.status == 400

    first = disc.list_namespaced_endpoint_slice(ns, limit=2)
    assert [s.metadata.name for s in first.items] == ["s0", "s1"] and first.metadata.remaining_item_count == 3
    api.delete("EndpointSlice", ns, "s3")
    api.apply(slice_("s9", ns, "a"))
    api.apply({**slice_("s2", ns, "a"), "endpoints": []})
    rest = disc.list_namespaced_endpoint_slice(ns, limit=10, _continue=first.metadata._continue)
    assert [s.metadata.name for s in rest.items] == ["s2", "s3", "s4"]  # as of the first page
    assert rest.items[0].endpoints and rest.metadata.resource_version == first.metadata.resource_version
    assert rest.metadata._continue is None


def test_expired_continue_is_410(fresh: KubeAPIServer, ns: str) -> None:
    """Emulated API server: a continue token older than the retained history is a plain HTTP 410 Expired."""
    core = core_api(fresh.admin_client())
    for i in range(3):
        fresh.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"s{i}", "namespace": ns}})
    first = core.list_namespaced_secret(ns, limit=1)
    fresh.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "late", "namespace": ns}})
    fresh.compact()
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_secret(ns, limit=1, _continue=first.metadata._continue)
    assert exc.value.status == 410
    assert status_of(exc)["reason"] == "Expired"


def test_watch_from_a_resource_version_sees_only_later_events_in_order(api: KubeAPIServer, admin: Any, ns: str) -> None:
    """Emulated API server: watch=true&resourceVersion=N streams the events after N, in order."""
    core = core_api(admin)
    core.create_namespaced_secret(ns, client.V1Secret(metadata=client.V1ObjectMeta(name="before")))
    rv = core.list_namespaced_secret(ns).metadata.resource_version
    core.create_namespaced_secret(ns, client.V1Secret(metadata=client.V1ObjectMeta(name="b")))
    core.patch_namespaced_secret("before", ns, {"metadata": {"labels": {"x": "y"}}})
    core.delete_namespaced_secret("b", ns)
    w = watch.Watch()
    events = collect(w.stream(core.list_namespaced_secret, ns, resource_version=rv, timeout_seconds=5), 3, w)
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", "b"),
        ("MODIFIED", "before"),
        ("DELETED", "b"),
    ]
    rvs = [int(e["object"].metadata.resource_version) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)


def test_watch_without_resource_version_starts_with_synthetic_added(api: KubeAPIServer, admin: Any, ns: str) -> None:
    """Emulated API server: a watch with no resourceVersion (or "0") first gets ADDED for every object."""
    for i in range(3):
        api.apply(gateway(f"g{i}", ns))
    for rv in (None, "0"):
        w = watch.Watch()
        kwargs: dict[str, Any] = {"timeout_seconds": 5} | ({"resource_version": rv} if rv else {})
        stream = w.stream(custom(admin).list_namespaced_custom_object, GW, "v1", ns, "gateways", **kwargs)
        events = collect(stream, 3, w)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", f"g{i}") for i in range(3)]
    w = watch.Watch()
    stream = w.stream(custom(admin).list_namespaced_custom_object, GW, "v1", ns, "gateways", timeout_seconds=5)
    threading.Timer(0.2, lambda: api.apply(gateway("late", ns))).start()
    events = collect(stream, 4, w)
    assert (events[3]["type"], events[3]["object"]["metadata"]["name"]) == ("ADDED", "late")


def test_watch_bookmarks_carry_the_current_resource_version(api: KubeAPIServer, admin: Any, ns: str) -> None:
    """Emulated API server: allowWatchBookmarks=true gives BOOKMARK events (apiVersion, kind,
    metadata.resourceVersion only) every bookmark_interval; the client's Watch tracks their rv."""
    core = core_api(admin)
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    api.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other", "namespace": "elsewhere-" + ns}})
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_config_map, ns, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=5
    )
    started = time.monotonic()
    (event,) = collect(stream, 1, w)
    assert event["type"] == "BOOKMARK" and time.monotonic() - started < 2
    assert event["raw_object"] == {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": str(api.resource_version)},
    }
    assert w.resource_version == str(api.resource_version) and int(w.resource_version) > int(rv)


def test_watch_timeout_seconds_ends_the_stream_cleanly(admin: Any, ns: str) -> None:
    """Emulated API server: timeoutSeconds ends a quiet watch, the client's loop simply ends."""
    started = time.monotonic()
    events = list(
        watch.Watch().stream(core_api(admin).list_namespaced_secret, ns, resource_version="1", timeout_seconds=1)
    )
    assert events == [] and 0.9 < time.monotonic() - started < 3


def test_watch_from_a_compacted_resource_version_is_410_the_way_a_real_server_sends_it(
    fresh: KubeAPIServer, ns: str
) -> None:
    """Emulated API server: a too-old resourceVersion is HTTP 200 + one ERROR event (Status 410 Expired);
    the client's Watch.stream retries once, then raises ApiException(410)."""
    admin = fresh.admin_client()
    fresh.apply(gateway("g", ns))
    old = str(fresh.resource_version)
    fresh.apply(gateway("h", ns))
    fresh.compact()
    api = custom(admin)
    resp = api.list_namespaced_custom_object(
        GW, "v1", ns, "gateways", watch=True, resource_version=old, _preload_content=False
    )
    assert resp.status == 200
    (line,) = [ln for ln in resp.data.decode().splitlines() if ln]
    event = json.loads(line)
    assert event["type"] == "ERROR"
    assert event["object"] | {"message": ""} == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "",
        "reason": "Expired",
        "code": 410,
    }
    assert event["object"]["message"] == f"too old resource version: {old} ({fresh.resource_version})"

    fresh.clear_request_log()
    with pytest.raises(ApiException) as exc:
        for _ in watch.Watch().stream(
            api.list_namespaced_custom_object, GW, "v1", ns, "gateways", resource_version=old
        ):
            pass
    assert exc.value.status == 410
    assert [r.verb for r in fresh.request_log] == ["watch", "watch"]


def test_watch_selection_turns_relabels_into_added_and_deleted(api: KubeAPIServer, admin: Any, ns: str) -> None:
    """Emulated API server: with a label selector, an object entering the selection is ADDED, leaving it DELETED."""
    disc = discovery_api(admin)
    rv = str(api.resource_version)
    api.apply(slice_("s", ns, "a"))
    api.apply(slice_("s", ns, "b"))
    api.apply(slice_("s", ns, "a"))
    w = watch.Watch()
    stream = w.stream(
        disc.list_namespaced_endpoint_slice,
        ns,
        label_selector="kubernetes.io/service-name=a",
        resource_version=rv,
        timeout_seconds=5,
    )
    events = collect(stream, 3, w)
    assert [e["type"] for e in events] == ["ADDED", "DELETED", "ADDED"]
    assert events[1]["object"].metadata.labels == {"kubernetes.io/service-name": "a"}


def test_drop_watches_ends_open_streams(fresh: KubeAPIServer, ns: str) -> None:
    """Emulated API server: drop_watches() ends every open watch, as an API server restart does."""
    core = core_api(fresh.admin_client())
    done = threading.Event()

    def run() -> None:
        list(watch.Watch().stream(core.list_namespaced_secret, ns, timeout_seconds=30))
        done.set()

    threading.Thread(target=run, daemon=True).start()
    deadline = time.monotonic() + 5
    while not any(r.verb == "watch" for r in fresh.request_log) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    fresh.drop_watches()
    assert done.wait(5)


# --------------------------------------------------------------------------- auth, rbac, lease


def test_forbidden_verbs_answer_the_real_403_message(api: KubeAPIServer, controller: Any, ns: str) -> None:
    """Emulated API server: forbid() denies the controller's identity a verb, with the real RBAC text."""
    core = core_api(controller)
    core.list_secret_for_all_namespaces()
    api.forbid("list", "", "secrets")
    try:
        with pytest.raises(ApiException) as exc:
            core.list_secret_for_all_namespaces()
        assert exc.value.status == 403
        assert status_of(exc)["message"] == (
            f'secrets is forbidden: User "{CONTROLLER_USER}" cannot list resource "secrets" '
            'in API group "" at the cluster scope'
        )
        with pytest.raises(ApiException) as exc:
            core.list_namespaced_secret(ns)
        assert status_of(exc)["message"].endswith(
            f'cannot list resource "secrets" in API group "" in the namespace "{ns}"'
        )
        core_api(api.admin_client()).list_secret_for_all_namespaces()  # the admin is not affected
    finally:
        api.allow("list", "", "secrets")
    core.list_namespaced_secret(ns)
    api.forbid("patch", GW, "gateways/status")
    try:
        api.apply(gateway("g", ns))
        with pytest.raises(ApiException) as exc:
            custom(controller).patch_namespaced_custom_object_status(GW, "v1", ns, "gateways", "g", {"status": {}})
        assert status_of(exc)["message"] == (
            f'gateways.{GW} "g" is forbidden: User "{CONTROLLER_USER}" cannot patch resource "gateways/status" '
            f'in API group "{GW}" in the namespace "{ns}"'
        )
    finally:
        api.allow("patch", GW, "gateways/status")
    denied = [r for r in api.request_log if r.status == 403 and r.user == CONTROLLER_USER]
    assert {(r.verb, r.resource) for r in denied} == {("list", "secrets"), ("patch", "gateways/status")}


def test_token_review(api: KubeAPIServer, controller: Any) -> None:
    """Emulated API server: TokenReview of minted service-account tokens (ok, wrong audience, revoked)."""
    auth = authentication_api(controller)

    def review(token: str, audiences: list[str]) -> Any:
        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=audiences))
        return auth.create_token_review(body).status

    token = api.issue_token("tenant-a", "envoy", audiences=("aigw-xds", "other"))
    ok = review(token, ["aigw-xds"])
    assert ok.authenticated and ok.user.username == "system:serviceaccount:tenant-a:envoy"
    assert ok.user.groups == ["system:serviceaccounts", "system:serviceaccounts:tenant-a", "system:authenticated"]
    assert ok.audiences == ["aigw-xds"]
    wrong = review(token, ["someone-else"])
    assert not wrong.authenticated and "is invalid for the target audiences" in wrong.error
    api.revoke_token(token)
    assert not review(token, ["aigw-xds"]).authenticated
    assert not review("garbage", ["aigw-xds"]).authenticated


def test_lease_updates_need_the_current_resource_version(admin: Any, ns: str) -> None:
    """Emulated API server: Leases behave like any object (PUT needs rv, 409 when stale): leader election."""
    coord = coordination_api(admin)
    now = datetime(2026, 12, 2, 11, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))  # sent as +01:00
    lease = coord.create_namespaced_lease(
        ns,
        client.V1Lease(
            metadata=client.V1ObjectMeta(name="aigw-xds-leader"),
            spec=client.V1LeaseSpec(
                holder_identity="a", lease_duration_seconds=15, acquire_time=now, renew_time=now, lease_transitions=0
            ),
        ),
    )
    raw = coord.read_namespaced_lease("aigw-xds-leader", ns, _preload_content=False)
    assert json.loads(raw.data)["spec"]["renewTime"] == "2026-12-02T10:00:00.123456Z"  # MicroTime, as stored
    taken = coord.replace_namespaced_lease(
        "aigw-xds-leader",
        ns,
        client.V1Lease(
            metadata=client.V1ObjectMeta(name="aigw-xds-leader", resource_version=lease.metadata.resource_version),
            spec=client.V1LeaseSpec(holder_identity="b", lease_duration_seconds=15, lease_transitions=1),
        ),
    )
    assert taken.spec.holder_identity == "b"
    with pytest.raises(ApiException) as exc:
        coord.replace_namespaced_lease(
            "aigw-xds-leader",
            ns,
            client.V1Lease(
                metadata=client.V1ObjectMeta(name="aigw-xds-leader", resource_version=lease.metadata.resource_version),
                spec=client.V1LeaseSpec(holder_identity="a"),
            ),
        )
    assert exc.value.status == 409
    with pytest.raises(ApiException) as exc:
        coord.replace_namespaced_lease(
            "aigw-xds-leader",
            ns,
            client.V1Lease(
                metadata=client.V1ObjectMeta(name="aigw-xds-leader"), spec=client.V1LeaseSpec(holder_identity="a")
            ),
        )
    assert exc.value.status == 422
    assert coord.read_namespaced_lease("aigw-xds-leader", ns).spec.holder_identity == "b"


# ------------------------------------------------------------------------- running, performance


def test_restart_on_the_same_port_keeps_the_objects(fresh: KubeAPIServer, ns: str) -> None:
    """Emulated API server: stop() then start() is an outage: same port, same objects, rv continues."""
    admin = fresh.admin_client()
    core = core_api(admin)
    core.create_namespaced_secret(ns, client.V1Secret(metadata=client.V1ObjectMeta(name="s")))
    port, rv = fresh.port, fresh.resource_version
    fresh.stop()
    with pytest.raises(Exception):  # noqa: B017 (urllib3's connection error, whatever its wrapping)
        core.read_namespaced_secret("s", ns, _request_timeout=2)
    fresh.start()
    assert fresh.port == port
    assert core.read_namespaced_secret("s", ns).metadata.resource_version == str(rv)
    core.create_namespaced_secret(ns, client.V1Secret(metadata=client.V1ObjectMeta(name="t")))
    assert fresh.resource_version == rv + 1


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_clients_informer_relists_after_an_outage_with_compaction(fresh: KubeAPIServer, ns: str) -> None:
    """Emulated API server under the official client's own SharedInformer: it lists, watches, and after an
    outage during which history was compacted gets 410 on its resumed watch and relists, ending with
    exactly the cluster's state (an object deleted during the outage is gone from its cache)."""
    core = core_api(fresh.admin_client())
    for name in ("a", "b"):
        fresh.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": {}})
    # No periodic resync: it lists again on its own every period, and a list that came first after
    # the outage would make the 410 path untested (it did once in CI, under load). The informer's
    # stop() joins its thread, which leaves a watch only when an event arrives or the server ends
    # it: the server is stopped first at the end.
    inf = informer.SharedInformer(core.list_namespaced_config_map, namespace=ns)
    errors_seen: list[Any] = []
    inf.add_event_handler(informer.ERROR, errors_seen.append)
    inf.start()
    try:
        wait_for(lambda: sorted(o.metadata.name for o in inf.cache.list()) == ["a", "b"], timeout=30)
        fresh.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": ns}, "data": {}})
        wait_for(lambda: len(inf.cache.list()) == 3, timeout=30)
        fresh.stop()
        fresh.delete("ConfigMap", ns, "a")
        fresh.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d", "namespace": ns}, "data": {}})
        fresh.compact()
        fresh.start()
        wait_for(lambda: sorted(o.metadata.name for o in inf.cache.list()) == ["b", "c", "d"], timeout=30)
        assert any(getattr(e, "status", None) == 410 for e in errors_seen)
    finally:
        fresh.stop()
        inf.stop()


def test_runs_as_a_process(tmp_path: Path, ns: str) -> None:
    """Emulated API server as its own process: prints the URL once bound, writes kubeconfig and admin token."""
    kinds = tmp_path / "kinds.json"
    kinds.write_text(json.dumps(KINDS))
    kubeconfig, token_file = tmp_path / "kubeconfig", tmp_path / "admin-token"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aigw_fakes.kube_apiserver",
            "--kinds-json",
            str(kinds),
            "--port",
            "0",
            "--kubeconfig",
            str(kubeconfig),
            "--admin-token-out",
            str(token_file),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        cfg = client.Configuration(host=match.group(1))
        cfg.api_key = {"BearerToken": token_file.read_text()}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
        custom(client.ApiClient(cfg)).create_namespaced_custom_object(GW, "v1", ns, "gateways", gateway("g", ns))
        controller = config.new_client_from_config(config_file=str(kubeconfig))
        listed = custom(controller).list_namespaced_custom_object(GW, "v1", ns, "gateways")
        assert [i["metadata"]["name"] for i in listed["items"]] == ["g"]
        assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_ten_thousand_secrets_list_fast_and_watches_fan_out(fresh: KubeAPIServer) -> None:
    """Emulated API server at the scale the Kubernetes-mode tests use: 10,000 Secrets list in well
    under a second of server time; every open watch sees every write."""
    started = time.monotonic()
    for i in range(10_000):
        fresh.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"s{i:05}", "namespace": f"ns{i % 10}"},
                "data": {"k": "dmFsdWU="},
            }
        )
    applied = time.monotonic() - started
    core = core_api(fresh.admin_client())
    started = time.monotonic()
    raw = core.list_secret_for_all_namespaces(_preload_content=False)
    listed = time.monotonic() - started
    assert len(json.loads(raw.data)["items"]) == 10_000
    assert applied < 5 and listed < 2, (applied, listed)

    rv = str(fresh.resource_version)
    results: list[list[Any]] = []

    def watch_all() -> None:
        w = watch.Watch()
        results.append(
            collect(
                w.stream(
                    core.list_secret_for_all_namespaces, resource_version=rv, timeout_seconds=10, deserialize=False
                ),
                500,
                w,
            )
        )

    threads = [threading.Thread(target=watch_all) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(500):
        fresh.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"s{i:05}", "namespace": f"ns{i % 10}"},
                "data": {"k": "Y2hhbmdlZA=="},
            }
        )
    for t in threads:
        t.join(15)
    assert [len(r) for r in results] == [500] * 4
    assert all(e["type"] == "MODIFIED" for r in results for e in r)


ANCESTOR = {
    "ancestorRef": {"group": GW, "kind": "Gateway", "namespace": "n", "name": "g"},
    "controllerName": "aigw-xds.io/gateway-controller",
    "conditions": [CONDITION],
}


@pytest.mark.parametrize(
    ("ancestors", "message"),
    [
        ([ANCESTOR], None),
        (
            [{k: v for k, v in ANCESTOR.items() if k != "controllerName"}],
            "status.ancestors[0].controllerName: Required",
        ),
        ([{**ANCESTOR, "controllerName": "no-domain"}], "status.ancestors[0].controllerName: Invalid value"),
        ([{**ANCESTOR, "ancestorRef": {"kind": "Gateway"}}], "status.ancestors[0].ancestorRef.name: Required"),
        ([{**ANCESTOR, "conditions": []}], "status.ancestors[0].conditions: Invalid value: 0"),
        ([ANCESTOR] * 17, "status.ancestors: Too many: 17: must have at most 16"),
    ],
)
def test_a_policy_status_is_the_gateway_apis_policy_status(
    admin: Any, ns: str, ancestors: list[dict[str, Any]], message: str | None
) -> None:
    """Emulated API server: an Envoy Gateway policy's status.ancestors (PolicyStatus) as its CRD
    checks it: an ancestorRef with a name, a domain-prefixed controllerName, 1 to 8 conditions, at
    most 16 entries; a 422 naming the field otherwise."""
    api = custom(admin)
    name = f"p-{uuid.uuid4().hex[:8]}"  # (the namespace is the module's)
    policy = {"kind": "SecurityPolicy", "metadata": {"name": name}, "spec": {}}
    api.create_namespaced_custom_object("gateway.envoyproxy.io", "v1alpha1", ns, "securitypolicies", policy)
    patch = {"status": {"ancestors": ancestors}}
    if message is None:
        out = api.patch_namespaced_custom_object_status(
            "gateway.envoyproxy.io", "v1alpha1", ns, "securitypolicies", name, patch
        )
        assert out["status"]["ancestors"] == ancestors
        return
    with pytest.raises(ApiException) as exc:
        api.patch_namespaced_custom_object_status(
            "gateway.envoyproxy.io", "v1alpha1", ns, "securitypolicies", name, patch
        )
    body = status_of(exc)
    assert (exc.value.status, body["reason"]) == (422, "Invalid")
    assert message in body["message"], body["message"]
