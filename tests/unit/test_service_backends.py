"""A Kubernetes Service as an AIServiceBackend's backend: its ready EndpointSlice endpoints become
the target's endpoints (compile), served over EDS so that pods coming and going change only the
ClusterLoadAssignment (build)."""

from __future__ import annotations

import itertools
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

import aigw_contract as contract
from aigw_xds.api import kinds
from aigw_xds.api.decode import decode_text
from aigw_xds.compile import compile_resources
from aigw_xds.compile.backends import ready_endpoints
from aigw_xds.compile.ir import Endpoint
from aigw_xds.keys import ResourceKey
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import BuildSettings, build_fleet
from aigw_xds.xds.cache import check_consistency, make_snapshot
from tests.resource_text import api_key, backend, gateway, resources, route

AISB = ResourceKey("AIServiceBackend", "default", "llm")


def service_backend(
    name: str = "llm", service: str = "llm", port: int | None = 8000, namespace: str = "default", svc_ns: str = ""
) -> str:
    fields = [f"name: {service}", "kind: Service", 'group: ""']
    if port is not None:
        fields.append(f"port: {port}")
    if svc_ns:
        fields.append(f"namespace: {svc_ns}")
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{{", ".join(fields)}}}
"""


def service(name: str = "llm", ports: str = "[{name: http, port: 8000, targetPort: http}]", ns: str = "default") -> str:
    return f"""
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{app: {name}}}
  ports: {ports}
"""


def endpoint_slice(
    name: str,
    endpoints: list[tuple[str, Any]],
    ports: str = "[{name: http, port: 8080, protocol: TCP}]",
    service_name: str = "llm",
    address_type: str = "IPv4",
    ns: str = "default",
) -> str:
    """endpoints: (address, ready) with ready True, False, None (unset) or "terminating"."""
    lines = []
    for address, ready in endpoints:
        if ready == "terminating":
            conditions = "{ready: false, serving: true, terminating: true}"
        elif ready is None:
            conditions = "{}"
        else:
            conditions = f"{{ready: {str(ready).lower()}}}"
        lines.append(f"  - {{addresses: [{address!r}], conditions: {conditions}, nodeName: node-1}}")
    body = "\n".join(lines) if lines else "  []"
    return f"""
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}
  namespace: {ns}
  labels: {{kubernetes.io/service-name: {service_name}, endpointslice.kubernetes.io/managed-by: x}}
addressType: {address_type}
ports: {ports}
endpoints:
{body}
"""


BASE = gateway() + route("r", {"m": "llm"}) + service_backend() + service()


def compiled(text: str):
    return compile_resources(resources(text))


def target_of(result: Any):
    [rule] = result.gateways["default/gw"].rules
    [target] = rule.backends
    return target


# ---------------------------------------------------------------------------------------------
# Compile


def test_ready_endpoints_at_the_slice_port_named_like_the_service_port():
    text = BASE + endpoint_slice(
        "llm-a",
        [("10.0.0.2", True), ("10.0.0.1", None), ("10.0.0.3", False), ("10.0.0.4", "terminating")],
        ports="[{name: metrics, port: 9090}, {name: http, port: 8080}]",
    )
    result = compiled(text)
    assert result.errors == []
    target = target_of(result)
    # Ready unset counts as ready; not-ready and serving-but-terminating endpoints are left out.
    assert target.endpoints == (Endpoint("ip", "10.0.0.1", 8080), Endpoint("ip", "10.0.0.2", 8080))
    assert target.service == "default/llm:8000"
    assert target.upstream_host == "llm.default.svc"
    [translator_backend] = result.gateways["default/gw"].translator.backends
    assert translator_backend.upstream_host == "llm.default.svc"
    # The slices are part of what the Gateway is built from.
    assert ResourceKey("EndpointSlice", "default", "llm-a") in result.gateways["default/gw"].closure


def test_the_service_port_is_chosen_by_the_backend_refs_number_and_matched_by_name():
    two_ports = "[{name: grpc, port: 9000}, {name: http, port: 8000, targetPort: 8080}]"
    slices = endpoint_slice("s", [("10.0.0.1", True)], ports="[{name: grpc, port: 50051}, {name: http, port: 8080}]")
    by_http = target_of(
        compiled(gateway() + route("r", {"m": "llm"}) + service_backend() + service(ports=two_ports) + slices)
    )
    by_grpc = target_of(
        compiled(gateway() + route("r", {"m": "llm"}) + service_backend(port=9000) + service(ports=two_ports) + slices)
    )
    assert by_http.endpoints == (Endpoint("ip", "10.0.0.1", 8080),)
    assert by_grpc.endpoints == (Endpoint("ip", "10.0.0.1", 50051),)


def test_an_unnamed_single_port_service_matches_the_slices_unnamed_port():
    text = (
        gateway()
        + route("r", {"m": "llm"})
        + service_backend(port=80)
        + service(ports="[{port: 80, targetPort: 8080}]")
        + endpoint_slice("s", [("10.0.0.9", True)], ports="[{port: 8080, protocol: TCP}]")
    )
    assert target_of(compiled(text)).endpoints == (Endpoint("ip", "10.0.0.9", 8080),)


def test_several_slices_are_merged_and_deduplicated_and_ipv6_is_kept():
    text = (
        BASE
        + endpoint_slice("llm-a", [("10.0.0.1", True), ("10.0.0.2", True)])
        + endpoint_slice("llm-b", [("10.0.0.2", True), ("10.0.0.3", True)], ports="[{name: http, port: 8081}]")
        + endpoint_slice("llm-v6", [("fd00::1", True)], address_type="IPv6")
        + endpoint_slice("other", [("10.9.9.9", True)], service_name="other")
    )
    assert target_of(compiled(text)).endpoints == (
        Endpoint("ip", "10.0.0.1", 8080),
        Endpoint("ip", "10.0.0.2", 8080),
        Endpoint("ip", "10.0.0.2", 8081),
        Endpoint("ip", "10.0.0.3", 8081),
        Endpoint("ip", "fd00::1", 8080),
    )


def test_fqdn_slices_are_skipped_with_a_warning():
    text = (
        BASE
        + endpoint_slice("llm-a", [("10.0.0.1", True)])
        + endpoint_slice("llm-dns", [("pod.example.internal", True)], address_type="FQDN")
    )
    result = compiled(text)
    assert result.errors == []
    assert target_of(result).endpoints == (Endpoint("ip", "10.0.0.1", 8080),)
    [warning] = [d for d in result.diagnostics if "FQDN" in d.message]
    assert warning.resource == AISB and "llm-dns" in warning.message


def test_external_name_service_is_one_fqdn_endpoint_addressed_by_its_name():
    external = """
---
apiVersion: v1
kind: Service
metadata: {name: llm, namespace: default}
spec: {type: ExternalName, externalName: api.openai.example}
"""
    result = compiled(gateway() + route("r", {"m": "llm"}) + service_backend(port=443) + external)
    assert result.errors == []
    target = target_of(result)
    assert target.endpoints == (Endpoint("fqdn", "api.openai.example", 443),)
    assert target.upstream_host == "api.openai.example"


def test_external_name_service_without_its_name_is_a_validation_error():
    rs = resources("""
apiVersion: v1
kind: Service
metadata: {name: llm, namespace: default}
spec: {type: ExternalName}
""")
    [err] = rs.errors
    assert err.resource == ResourceKey("Service", "default", "llm") and "externalName" in err.message


def test_no_endpoint_slices_is_a_warning_and_a_target_without_endpoints():
    result = compiled(BASE + endpoint_slice("llm-a", [("10.0.0.1", False)]))
    assert result.errors == [] and "default/gw" in result.gateways
    assert target_of(result).endpoints == ()
    [warning] = [d for d in result.diagnostics if "no ready endpoints" in d.message]
    assert warning.resource == AISB and warning.field == "spec.backendRef" and not warning.is_error
    snapshot = make_snapshot("default/gw", build_fleet(result.gateways["default/gw"], BuildSettings()))
    check_consistency(snapshot)
    assignment = snapshot.of_type(type_urls.ENDPOINT)["default/r/rule/0"].message
    assert isinstance(assignment, endpoint_pb2.ClusterLoadAssignment)
    [locality] = assignment.endpoints
    assert list(locality.lb_endpoints) == [] and locality.locality.sub_zone == "default/llm/route/r/rule/0/ref/0"


def test_missing_service_is_an_error_with_its_field_path():
    result = compiled(gateway() + route("r", {"m": "llm"}) + service_backend())
    assert "default/gw" in result.failed
    [err] = result.errors
    assert (err.resource, err.field) == (AISB, "spec.backendRef.name")
    assert err.message == "Service default/llm not found"
    assert dict((c.type, c.status) for c in result.statuses[AISB])["ResolvedRefs"] is False


def test_service_without_the_referenced_port_is_an_error_naming_its_ports():
    result = compiled(BASE.replace("port: 8000}", "port: 8001}"))
    [err] = result.errors
    assert (err.resource, err.field) == (AISB, "spec.backendRef.port")
    assert err.message == "Service default/llm has no port 8001 (its ports: 8000)"


def test_cross_namespace_service_needs_a_reference_grant():
    base = gateway() + route("r", {"m": "llm"}) + service_backend(svc_ns="models") + service(ns="models")
    base += endpoint_slice("s", [("10.0.0.1", True)], ns="models")
    result = compiled(base)
    [err] = result.errors
    assert (err.resource, err.field) == (AISB, "spec.backendRef.namespace")
    assert "Service models/llm in another namespace needs a ReferenceGrant in namespace models" in err.message
    grant = """
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow, namespace: models}
spec:
  from: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, namespace: default}]
  to: [{group: "", kind: Service}]
"""
    granted = compiled(base + grant)
    assert granted.errors == []
    assert target_of(granted).upstream_host == "llm.models.svc"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (
            '{name: llm, kind: Service, group: ""}',
            "backendRef.port is required for a Service (the Service port to send to)",
        ),
        (
            "{name: llm, kind: Service, group: core}",
            "backendRef.port is required for a Service (the Service port to send to)",
        ),
        (
            "{name: llm, kind: Pod, group: ''}",
            "backendRef must be a gateway.envoyproxy.io Backend or a core Service "
            "(group \"\" or \"core\", kind Service, with a port); got group '(unset)', kind 'Pod'",
        ),
        (
            "{name: llm, kind: Service, group: apps, port: 80}",
            "backendRef must be a gateway.envoyproxy.io Backend or a core Service "
            "(group \"\" or \"core\", kind Service, with a port); got group 'apps', kind 'Service'",
        ),
    ],
)
def test_backend_ref_kinds_that_are_not_accepted_say_what_is(ref: str, message: str):
    rs = resources(f"""
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: llm, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {ref}
""")
    [err] = rs.errors
    assert (err.field, err.message) == ("spec.backendRef", message)


def test_a_service_nobody_references_is_read_quietly():
    decoded = decode_text(service("web").lstrip("-\n"), "svc.yaml")
    assert [d.diagnostics for d in decoded] == [()]
    result = compiled(gateway() + route("r", {"m": "b"}) + backend("b", 9000) + service("web"))
    assert result.errors == [] and [d for d in result.diagnostics if "web" in str(d)] == []


def test_ready_endpoints_is_a_pure_function_of_the_slices():
    text = endpoint_slice("s", [("10.0.0.1", True)], ports="[{name: other, port: 1}]").lstrip("-\n")
    [decoded] = decode_text(text, "s.yaml")
    assert isinstance(decoded.resource, kinds.EndpointSlice)
    assert ready_endpoints([decoded.resource], "http") == ((), [])
    assert ready_endpoints([decoded.resource], "other") == ((Endpoint("ip", "10.0.0.1", 1),), [])


# ---------------------------------------------------------------------------------------------
# Build


def _snapshot(addresses: list[str], text: str = BASE, settings: BuildSettings | None = None):
    slices = endpoint_slice("llm-a", [(a, True) for a in addresses])
    result = compiled(text + slices)
    assert result.errors == [], [str(e) for e in result.errors]
    snapshot = make_snapshot("default/gw", build_fleet(result.gateways["default/gw"], settings or BuildSettings()))
    check_consistency(snapshot)
    return snapshot


def _versions(snapshot: Any) -> dict[tuple[str, str], str]:
    return {(t, n): r.version for t in type_urls.ORDER for n, r in snapshot.of_type(t).items()}


def test_scaling_1_to_3_to_0_changes_only_the_eds_resource():
    snapshots = [_snapshot(a) for a in (["10.0.0.1"], ["10.0.0.1", "10.0.0.2", "10.0.0.3"], [], ["10.0.0.4"])]
    cluster = snapshots[0].of_type(type_urls.CLUSTER)["default/r/rule/0"].message
    assert isinstance(cluster, cluster_pb2.Cluster) and cluster.type == cluster_pb2.Cluster.EDS
    counts = []
    for before, after in itertools.pairwise(snapshots):
        one, two = _versions(before), _versions(after)
        assert one.keys() == two.keys()
        assert {k for k in one if one[k] != two[k]} == {(type_urls.ENDPOINT, "default/r/rule/0")}
    for snapshot in snapshots:
        assignment = snapshot.of_type(type_urls.ENDPOINT)["default/r/rule/0"].message
        counts.append([e.endpoint.address.socket_address.address for e in assignment.endpoints[0].lb_endpoints])
    assert counts == [["10.0.0.1"], ["10.0.0.1", "10.0.0.2", "10.0.0.3"], [], ["10.0.0.4"]]


def test_each_endpoint_carries_the_backend_metadata_and_the_service_host():
    assignment = _snapshot(["10.0.0.1", "fd00::2"]).of_type(type_urls.ENDPOINT)["default/r/rule/0"].message
    [locality] = assignment.endpoints
    assert [e.endpoint.address.socket_address.address for e in locality.lb_endpoints] == ["10.0.0.1", "fd00::2"]
    for lb_endpoint in locality.lb_endpoints:
        assert lb_endpoint.endpoint.hostname == "llm.default.svc"
        fields = lb_endpoint.metadata.filter_metadata[contract.INTERNAL_METADATA_NAMESPACE].fields
        assert fields[contract.BACKEND_NAME_KEY].string_value == "default/llm/route/r/rule/0/ref/0"
        assert fields[contract.UPSTREAM_HOST_KEY].string_value == "llm.default.svc"


def test_weights_and_priorities_of_a_service_and_a_backend_in_one_rule():
    text = (
        gateway() + route("r", {"m": [("llm", 0, 3), ("b", 1, 1)]}) + service_backend() + service() + backend("b", 9000)
    )
    assignment = _snapshot(["10.0.0.1", "10.0.0.2"], text).of_type(type_urls.ENDPOINT)["default/r/rule/0"].message
    assert [(loc.priority, loc.load_balancing_weight.value, len(loc.lb_endpoints)) for loc in assignment.endpoints] == [
        (0, 3, 2),
        (1, 1, 1),
    ]


def test_a_native_rule_with_a_key_keeps_its_secret_name_when_pods_scale():
    """A NATIVE rule that injects a key carries its endpoints inline (build._cluster says why); a
    Service's pods coming and going change that cluster only, never the secret or the routes."""
    text = BASE + api_key("llm", "sk-service")
    settings = BuildSettings(envoy_credentials=True)
    one, three = (
        _snapshot(["10.0.0.1"], text, settings),
        _snapshot(["10.0.0.1", "10.0.0.2", "10.0.0.3"], text, settings),
    )
    cluster = three.of_type(type_urls.CLUSTER)["default/r/rule/0"].message
    assert cluster.type == cluster_pb2.Cluster.STATIC and len(cluster.load_assignment.endpoints[0].lb_endpoints) == 3
    assert (
        [n for n in one.of_type(type_urls.SECRET) if n.startswith("credential/")]
        == [n for n in three.of_type(type_urls.SECRET) if n.startswith("credential/")]
        != []
    )
    a, b = _versions(one), _versions(three)
    assert {k for k in a if a[k] != b.get(k)} == {(type_urls.CLUSTER, "default/r/rule/0")}
    # Repointed to another Service, the secret is renamed in the same cluster update.
    other = _snapshot(
        ["10.0.0.1"],
        text.replace("backendRef: {name: llm,", "backendRef: {name: llm2,")
        + service("llm2")
        + endpoint_slice("llm2-a", [("10.0.0.1", True)], service_name="llm2"),
        settings,
    )
    assert {n for n in other.of_type(type_urls.SECRET)} != {n for n in one.of_type(type_urls.SECRET)}


def test_a_backend_tls_policy_targeting_the_service_sets_sni_and_host():
    policy = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: llm-tls, namespace: default}
spec:
  targetRefs: [{group: "", kind: Service, name: llm}]
  validation: {hostname: llm.internal.example, wellKnownCACertificates: System}
"""
    result = compiled(BASE + endpoint_slice("s", [("10.0.0.1", True)]) + policy)
    assert result.errors == []
    target = target_of(result)
    assert target.tls is not None and target.tls.sni == "llm.internal.example"
    assert target.upstream_host == "llm.internal.example"


# ---------------------------------------------------------------------------------------------
# docs/service-backends.md

DOC = Path(__file__).resolve().parents[2] / "docs" / "service-backends.md"


def _yaml_blocks(text: str) -> list[str]:
    return [textwrap.dedent(block) for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S)]


def test_the_documented_snippets_load_and_compile_as_the_doc_says():
    snippet, grant = _yaml_blocks(DOC.read_text())
    decoded = decode_text(snippet, "doc.yaml")
    assert [d.diagnostics for d in decoded] == [(), (), ()]
    result = compiled(gateway() + route("r", {"m": "vllm"}) + "---\n" + snippet)
    assert result.errors == []
    target = target_of(result)
    # The not-ready endpoint is left out; the pod port comes from the slice.
    assert target.endpoints == (Endpoint("ip", "10.244.1.17", 8000),)
    assert target.upstream_host == "vllm.default.svc"
    moved = snippet.replace("namespace: default}\nspec:\n  selector", "namespace: models}\nspec:\n  selector")
    moved = moved.replace("  namespace: default\n  labels", "  namespace: models\n  labels")
    moved = moved.replace("name: vllm, port: 80}", "name: vllm, namespace: models, port: 80}")
    base = gateway() + route("r", {"m": "vllm"}) + "---\n" + moved
    assert [e.field for e in compiled(base).errors] == ["spec.backendRef.namespace"]
    granted = compiled(base + "---\n" + grant)
    assert granted.errors == [] and target_of(granted).upstream_host == "vllm.models.svc"


# As the API server returns them (kubectl get -o json): many more fields, an unnamed port as "",
# an EndpointSlice without endpoints as null.
API_SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "name": "llm",
        "namespace": "default",
        "uid": "6f0c1c52-1d7e-4f37-9d5b-0c0d4f1b2a11",
        "resourceVersion": "48213",
        "creationTimestamp": "2026-11-30T09:12:44Z",
        "labels": {"app": "llm"},
        "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1"}],
    },
    "spec": {
        "clusterIP": "10.96.120.7",
        "clusterIPs": ["10.96.120.7"],
        "internalTrafficPolicy": "Cluster",
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "ports": [{"port": 8000, "protocol": "TCP", "targetPort": 8000}],
        "selector": {"app": "llm"},
        "sessionAffinity": "None",
        "type": "ClusterIP",
    },
    "status": {"loadBalancer": {}},
}
API_SLICE: dict[str, Any] = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "metadata": {
        "name": "llm-7wq9d",
        "namespace": "default",
        "generateName": "llm-",
        "labels": {
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            "kubernetes.io/service-name": "llm",
        },
        "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "llm", "uid": "6f0c1c52"}],
    },
    "addressType": "IPv4",
    "endpoints": [
        {
            "addresses": ["10.244.0.12"],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "nodeName": "kind-control-plane",
            "targetRef": {"kind": "Pod", "name": "llm-5d8f7c9b4-x2lqp", "namespace": "default", "uid": "a1"},
            "zone": "zone-a",
        }
    ],
    "ports": [{"name": "", "port": 8000, "protocol": "TCP"}],
}


def test_objects_as_the_api_server_returns_them_compile():
    empty = {**API_SLICE, "metadata": {**API_SLICE["metadata"], "name": "llm-empty"}, "endpoints": None}
    text = gateway() + route("r", {"m": "llm"}) + service_backend()
    docs = "".join(f"\n---\n{json.dumps(doc)}\n" for doc in (API_SERVICE, API_SLICE, empty))
    result = compiled(text + docs)
    assert result.errors == [], [str(e) for e in result.errors]
    assert target_of(result).endpoints == (Endpoint("ip", "10.244.0.12", 8000),)
