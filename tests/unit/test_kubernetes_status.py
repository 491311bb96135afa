"""Kubernetes mode's pure parts: which Secrets a resource references, what a status-only write
changes, whose Gateways are ours, the status each object should get, and a fleet's ACK summary."""

from __future__ import annotations

import typing
from typing import Any

import yaml
from pydantic import BaseModel

from aigw_xds.api import kinds
from aigw_xds.api.base import SecretObjectReference
from aigw_xds.api.decode import Decoded, decode_document
from aigw_xds.compile import compile_resources
from aigw_xds.diagnostics import Origin
from aigw_xds.keys import ResourceKey
from aigw_xds.kubernetes.status import Current, status_updates
from aigw_xds.sources.kubernetes import REFERENCE_FIELDS, Stored, _foreign_route, _ours, references, stored_of
from aigw_xds.xds.acks import FleetSync, fleet_sync
from aigw_xds.xds.build import BuildSettings, build_fleet
from aigw_xds.xds.cache import make_snapshot
from aigw_xds.xds.streams import TypeState
from tests.resource_text import (
    api_key,
    backend,
    client_traffic_policy,
    gateway,
    inference_pool,
    pool_route,
    resources,
    route,
    security_policy,
)
from tests.unit.test_mcp_compile import MCP_BACKENDS, mcp_route

NOW = "2026-12-02T12:00:00Z"


def _reference_fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    """Every field of the model tree typed with a SecretObjectReference (or a list of them)."""
    found: set[str] = set()
    if model in seen:
        return found
    seen.add(model)
    for name, info in model.model_fields.items():
        for arg in _types(info.annotation):
            if arg is SecretObjectReference:
                found.add(info.alias or name)
            elif isinstance(arg, type) and issubclass(arg, BaseModel):
                found |= _reference_fields(arg, seen)
    return found


def _types(annotation: Any) -> list[Any]:
    args = typing.get_args(annotation)
    return [t for a in args for t in _types(a)] if args else [annotation]


def test_every_secret_reference_field_of_the_models_is_known_to_the_source() -> None:
    """A field added to a model that names a Secret must also keep that Secret in memory."""
    fields: set[str] = set()
    for model in vars(kinds).values():
        if isinstance(model, type) and issubclass(model, BaseModel):
            fields |= _reference_fields(model, set())
    assert fields and fields <= set(REFERENCE_FIELDS)


def test_references_name_secrets_and_configmaps_with_their_namespaces() -> None:
    bsp = {
        "spec": {
            "apiKey": {"secretRef": {"name": "key"}},
            "azureCredentials": {"clientSecretRef": {"name": "azure", "namespace": "other"}},
        }
    }
    tls = {"spec": {"validation": {"caCertificateRefs": [{"name": "ca", "kind": "ConfigMap", "group": ""}]}}}
    listener = {"spec": {"listeners": [{"tls": {"certificateRefs": [{"name": "cert"}]}}]}}
    assert references(bsp, "ns") == {("Secret", "ns", "key"), ("Secret", "other", "azure")}
    assert references(tls, "ns") == {("ConfigMap", "ns", "ca")}
    assert references(listener, "ns") == {("Secret", "ns", "cert")}
    assert references({"spec": {"apiKey": {"secretRef": "not-a-ref"}}}, "ns") == set()
    # A ClientTrafficPolicy's CAs and revocation lists are Secrets unless said (a review found the
    # CA looked for as a ConfigMap, and the lists not looked for: mTLS off in Kubernetes mode).
    validation = {
        "caCertificateRefs": [{"name": "ca"}],
        "crl": {"refs": [{"name": "crl"}, {"name": "m", "kind": "ConfigMap"}]},
    }
    ctp = {"kind": "ClientTrafficPolicy", "spec": {"tls": {"clientValidation": validation}}}
    assert references(ctp, "ns") == {("Secret", "ns", "ca"), ("Secret", "ns", "crl"), ("ConfigMap", "ns", "m")}
    # An InferencePool's endpoint picker: its Service (and through it, its EndpointSlices) is kept.
    pool = {"spec": {"endpointPickerRef": {"name": "llama-epp", "port": {"number": 9002}}}}
    assert references(pool, "ns") == {("Service", "ns", "llama-epp")}


def test_a_status_only_write_leaves_what_compile_reads_unchanged() -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "X",
        "metadata": {"name": "a", "resourceVersion": "5", "generation": 2, "managedFields": [{"x": 1}]},
        "spec": {"a": 1},
        "status": {"conditions": []},
    }
    after_status = {**obj, "metadata": {**obj["metadata"], "resourceVersion": "6"}, "status": {"conditions": [1]}}
    after_spec = {**obj, "spec": {"a": 2}}
    assert stored_of(obj).content == stored_of(after_status).content
    assert stored_of(obj).content != stored_of(after_spec).content
    assert stored_of(obj).generation == 2 and stored_of(after_status).status == {"conditions": [1]}
    assert b"managedFields" not in stored_of(obj).content
    assert stored_of(obj, keep=False).content == b""


def _stored(doc: dict[str, Any]) -> Stored:
    return stored_of(doc)


def test_gateways_of_other_controllers_are_not_ours() -> None:
    docs = {
        ResourceKey("GatewayClass", "default", "mine"): {"spec": {"controllerName": "me/ctl"}},
        ResourceKey("GatewayClass", "default", "theirs"): {"spec": {"controllerName": "gateway.envoyproxy.io/x"}},
        ResourceKey("Gateway", "a", "g1"): {"spec": {"gatewayClassName": "mine"}},
        ResourceKey("Gateway", "a", "g2"): {"spec": {"gatewayClassName": "theirs"}},
        ResourceKey("Gateway", "a", "g3"): {"spec": {"gatewayClassName": "missing"}},
        ResourceKey("AIGatewayRoute", "a", "r"): {"spec": {}},
        # Routes of another controller's Gateways are its own (found by review: a warning at every
        # compile that they attach to no Gateway); one with a parent of ours, or none found, stays.
        ResourceKey("AIGatewayRoute", "a", "theirs"): {"spec": {"parentRefs": [{"name": "g2"}, {"name": "g3"}]}},
        ResourceKey("AIGatewayRoute", "b", "theirs-too"): {"spec": {"parentRefs": [{"name": "g2", "namespace": "a"}]}},
        ResourceKey("AIGatewayRoute", "a", "shared"): {"spec": {"parentRefs": [{"name": "g2"}, {"name": "g1"}]}},
        ResourceKey("AIGatewayRoute", "a", "typo"): {"spec": {"parentRefs": [{"name": "gg"}]}},
    }
    # "theirs" validates (its parents are read from the model); the others do not (from the object).
    docs[ResourceKey("AIGatewayRoute", "a", "theirs")]["spec"]["rules"] = [{"backendRefs": [{"name": "b"}]}]
    objects = {key: _stored(doc) for key, doc in docs.items()}
    kept = _ours(objects, "me/ctl")
    foreign = {key for key in objects if key.kind == "Gateway"} - kept.keys()

    def decoded(key: ResourceKey) -> Decoded:
        api = "aigateway.envoyproxy.io/v1beta1" if key.kind == "AIGatewayRoute" else "gateway.networking.k8s.io/v1"
        document = {**docs[key], "apiVersion": api, "kind": key.kind}
        return decode_document({**document, "metadata": {"name": key.name, "namespace": key.namespace}}, Origin("t"))

    assert decoded(ResourceKey("AIGatewayRoute", "a", "theirs")).loaded is not None
    served = [k.name for k in sorted(kept) if not _foreign_route(decoded(k), foreign)]
    assert sorted(served) == ["g1", "mine", "r", "shared", "typo"]


def _compiled(text: str) -> tuple[Any, Any]:
    resource_set = resources(text)
    return compile_resources(resource_set), resource_set


def _current(generation: int = 1, status: dict[str, Any] | None = None) -> Any:
    return lambda key: Current(generation, status or {})


def _sync(programmed: bool) -> Any:
    return lambda fleet: FleetSync("v1", 1, 1 if programmed else 0)


def test_status_of_a_clean_gateway_and_what_it_is_built_from() -> None:
    text = gateway() + route("r", {"m": "b"}) + backend("b", 8000) + api_key("b")
    result, resource_set = _compiled(text)
    updates = status_updates(result, resource_set, _sync(True), _current(3), NOW)
    by_name = {f"{k.kind}/{k.name}": v for k, v in updates.items()}
    assert set(by_name) == {"GatewayClass/aigw", "Gateway/gw", "AIGatewayRoute/r", "AIServiceBackend/b",
                            "BackendSecurityPolicy/b-key"}  # fmt: skip
    gw = {c["type"]: c for c in by_name["Gateway/gw"]["conditions"]}
    assert gw["Programmed"]["status"] == "True" and gw["Accepted"]["status"] == "True"
    assert all(c["observedGeneration"] == 3 and c["lastTransitionTime"] == NOW for c in gw.values())
    (listener,) = by_name["Gateway/gw"]["listeners"]
    assert listener["name"] == "http" and listener["attachedRoutes"] == 1
    assert listener["supportedKinds"] == [
        {"group": "aigateway.envoyproxy.io", "kind": "AIGatewayRoute"},
        {"group": "aigateway.envoyproxy.io", "kind": "MCPRoute"},
    ]
    route_conditions = {c["type"]: c["status"] for c in by_name["AIGatewayRoute/r"]["conditions"]}
    assert route_conditions == {"Accepted": "True", "ResolvedRefs": "True"}


def test_programmed_waits_for_the_fleet_and_names_a_rejection() -> None:
    result, resource_set = _compiled(gateway() + route("r", {"m": "b"}) + backend("b", 8000))
    key = ResourceKey("Gateway", "default", "gw")

    def programmed(sync: FleetSync) -> dict[str, Any]:
        updates = status_updates(result, resource_set, lambda fleet: sync, _current(), NOW)
        return next(c for c in updates[key]["conditions"] if c["type"] == "Programmed")

    assert programmed(FleetSync("v", 0, 0))["reason"] == "Pending"
    waiting = programmed(FleetSync("v", 3, 2))
    assert (waiting["status"], waiting["message"]) == ("False", "2 of 3 Envoys applied the current configuration")
    from aigw_xds.xds.acks import Rejection

    rejected = programmed(FleetSync("v", 2, 1, (Rejection("node-1", "Cluster", ("c1",), "bad cluster"),)))
    assert rejected["reason"] == "Invalid" and "node-1 rejected Cluster c1: bad cluster" in rejected["message"]


def test_an_unchanged_status_is_not_written_again_and_transition_times_hold() -> None:
    result, resource_set = _compiled(gateway() + route("r", {"m": "b"}) + backend("b", 8000))
    first = status_updates(result, resource_set, _sync(True), _current(), NOW)
    written = {key: Current(1, status) for key, status in first.items()}
    again = status_updates(result, resource_set, _sync(True), written.get, "2026-12-02T13:00:00Z")
    assert again == {}
    flipped = status_updates(result, resource_set, _sync(False), written.get, "2026-12-02T13:00:00Z")
    assert list(flipped) == [ResourceKey("Gateway", "default", "gw")]
    times = {c["type"]: c["lastTransitionTime"] for c in flipped[ResourceKey("Gateway", "default", "gw")]["conditions"]}
    assert times == {"Accepted": NOW, "Programmed": "2026-12-02T13:00:00Z"}


def test_a_route_whose_backend_does_not_resolve_is_accepted_with_resolved_refs_false() -> None:
    """Gateway API: a backendRef that does not resolve is ResolvedRefs=False on an Accepted route
    (Kubernetes mode serves the route without it); found by review: it was Accepted=False while
    served. The message is the one validate prints."""
    text = gateway() + route("r", {"m": "missing"})
    result, resource_set = _compiled(text)
    updates = status_updates(result, resource_set, _sync(True), _current(), NOW)
    conditions = {c["type"]: c for c in updates[ResourceKey("AIGatewayRoute", "default", "r")]["conditions"]}
    error = next(d for d in result.errors if d.resource == ResourceKey("AIGatewayRoute", "default", "r"))
    assert conditions["Accepted"]["status"] == "True"
    assert conditions["ResolvedRefs"]["status"] == "False" and conditions["ResolvedRefs"]["reason"] == "BackendNotFound"
    assert conditions["ResolvedRefs"]["message"] == f"{error.field}: {error.message}"
    gateway_conditions = {c["type"]: c for c in updates[ResourceKey("Gateway", "default", "gw")]["conditions"]}
    assert gateway_conditions["Programmed"]["status"] == "False"


def test_a_route_that_never_validated_is_told_why_when_it_names_a_gateway_of_ours() -> None:
    """Left alone before: an AIGatewayRoute refused when first created got no status (its parentRefs
    were not read, so it was not known to be ours); `kubectl get` showed nothing. Its parents are read
    from its document now; one naming only another Gateway is still left alone."""
    bad = """---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: NAME}
spec:
  parentRefs: [{name: PARENT}]
  rules: [{backendRefs: [{name: b, weight: heavy}]}]
"""
    text = gateway() + route("r", {"m": "b"}) + backend("b", 8000)
    text += bad.replace("NAME", "mine").replace("PARENT", "gw") + bad.replace("NAME", "other").replace("PARENT", "x")
    result, resource_set = _compiled(text)
    mine = ResourceKey("AIGatewayRoute", "default", "mine")
    assert mine in resource_set.bad_keys and mine not in resource_set.items
    updates = status_updates(result, resource_set, _sync(True), _current(), NOW)
    [accepted] = updates[mine]["conditions"]
    assert accepted["type"] == "Accepted" and accepted["status"] == "False"
    assert accepted["message"].startswith("spec.rules[0].backendRefs[0].weight: "), accepted
    assert ResourceKey("AIGatewayRoute", "default", "other") not in updates


def test_objects_no_gateway_of_ours_uses_get_no_status() -> None:
    stray = yaml.safe_dump(
        {
            "apiVersion": "aigateway.envoyproxy.io/v1beta1",
            "kind": "AIServiceBackend",
            "metadata": {"name": "unused"},
            "spec": {"schema": {"name": "OpenAI"}, "backendRef": {"name": "x", "kind": "Backend",
                                                                   "group": "gateway.envoyproxy.io"}},
        }
    )  # fmt: skip
    result, resource_set = _compiled(gateway() + route("r", {"m": "b"}) + backend("b", 8000) + "---\n" + stray)
    updates = status_updates(result, resource_set, _sync(True), _current(), NOW)
    assert ResourceKey("AIServiceBackend", "default", "unused") not in updates


def test_an_object_refused_out_of_every_closure_is_told_so_over_the_status_it_had() -> None:
    """A platform trial: an AIServiceBackend made invalid while its route was invalid too kept
    Accepted=True from its last generation (no Gateway's closure held it any more)."""
    text = gateway() + route("r", {"m": "b"}).replace("spec:", "spec:\n  bogusField: 1", 1) + backend("b", 8000)
    text = text.replace("{name: OpenAI}", "{name: OpenAIX}")
    result, resource_set = _compiled(text + api_key("b"))
    backend_key = ResourceKey("AIServiceBackend", "default", "b")
    assert backend_key in resource_set.bad_keys
    accepted_before = {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}]}
    updates = status_updates(result, resource_set, _sync(True), _current(2, accepted_before), NOW)
    [accepted] = [c for c in updates[backend_key]["conditions"] if c["type"] == "Accepted"]
    assert accepted["status"] == "False" and "spec.schema.name" in accepted["message"]
    # One we never wrote a status on stays untouched.
    assert backend_key not in status_updates(result, resource_set, _sync(True), _current(2), NOW)


def test_fleet_sync_counts_nodes_that_acked_the_current_versions() -> None:
    result, _ = _compiled(gateway() + route("r", {"m": "b"}) + backend("b", 8000))
    snapshot = make_snapshot("default/gw", build_fleet(result.gateways["default/gw"], BuildSettings()))

    def node_state(ack: bool, nack: bool = False) -> dict[str, TypeState]:
        types = {}
        for type_url, by_name in snapshot.resources.items():
            state = TypeState(type_url, wildcard=True)
            state.record_sent("n1", {name: r.version for name, r in by_name.items()})
            if nack:
                state.nack("n1", "rejected")
            elif ack:
                state.ack("n1")
            types[type_url] = state
        return types

    synced = fleet_sync(snapshot, [("a", node_state(True)), ("b", node_state(True))])
    assert synced.programmed and (synced.connected, synced.applied) == (2, 2)
    pending = fleet_sync(snapshot, [("a", node_state(True)), ("b", node_state(False))])
    assert not pending.programmed and pending.applied == 1 and not pending.rejections
    rejected = fleet_sync(snapshot, [("a", node_state(False, nack=True))])
    assert rejected.rejections and rejected.rejections[0].node == "a" and rejected.rejections[0].error == "rejected"
    assert not fleet_sync(snapshot, []).programmed


def test_ack_reports_round_trip_and_merge_against_the_leaders_version() -> None:
    from aigw_xds.kubernetes.ack_reports import decode, encode, merge, report_name
    from aigw_xds.xds.acks import Rejection

    views = {
        "ns/gw": FleetSync("v2", 3, 2, (Rejection("n", "Cluster", ("c",), "bad"),)),
        "ns/other": FleetSync("", 0, 0),
    }
    assert decode(encode(views)) == views
    assert decode("not json") == {} and decode('{"ns/gw": {"version": 1}}') == {}
    own = FleetSync("v2", 1, 1)
    whole = merge(own, [FleetSync("v2", 2, 2), FleetSync("v1", 4, 4)])  # a replica still on v1
    assert (whole.connected, whole.applied, whole.programmed) == (7, 3, False)
    assert merge(own, [FleetSync("v2", 2, 2)]).programmed
    assert merge(own, [views["ns/gw"]]).rejections == views["ns/gw"].rejections
    assert report_name("Pod_ABC.1") == "aigw-xds-acks-pod-abc.1"


def test_listener_status_says_which_listener_is_broken_and_counts_only_accepted_routes() -> None:
    https = "    - {name: https, protocol: HTTPS, port: 8443, tls: {certificateRefs: [{name: missing-cert}]}}\n"
    text = gateway(extra_listeners=https) + route("r", {"m": "b"}) + backend("b", 8000)
    elsewhere = route("other-ns", {"m2": "b"}, namespace="elsewhere")
    text += elsewhere.replace("{name: gw, kind: Gateway", "{name: gw, namespace: default, kind: Gateway")  # refused
    result, resource_set = _compiled(text.replace("- {name: http, protocol: HTTP, port: 8080}",
        "- {name: http, protocol: HTTP, port: 8080, allowedRoutes: {namespaces: {from: Same}}}"))  # fmt: skip
    updates = status_updates(result, resource_set, _sync(True), _current(), NOW)
    listeners = {entry["name"]: entry for entry in updates[ResourceKey("Gateway", "default", "gw")]["listeners"]}
    http = {c["type"]: c for c in listeners["http"]["conditions"]}
    https_conditions = {c["type"]: c for c in listeners["https"]["conditions"]}
    assert http["ResolvedRefs"]["status"] == "True" and http["Accepted"]["status"] == "True"
    assert https_conditions["ResolvedRefs"]["status"] == "False"
    assert https_conditions["ResolvedRefs"]["reason"] == "InvalidCertificateRef"
    assert "missing-cert" in https_conditions["ResolvedRefs"]["message"]
    assert listeners["http"]["attachedRoutes"] == 1  # the route of another namespace is refused, not counted
    refused = {c["type"]: c for c in updates[ResourceKey("AIGatewayRoute", "elsewhere", "other-ns")]["conditions"]}
    assert refused["Accepted"]["status"] == "False" and refused["Accepted"]["reason"] == "NotAllowedByListeners"


def test_a_certificate_of_another_namespace_without_a_grant_is_ref_not_permitted() -> None:
    https = "    - {name: https, protocol: HTTPS, port: 8443, tls: {certificateRefs: [{name: c, namespace: other}]}}\n"
    found = _listener_status(gateway(extra_listeners=https) + route("r", {"m": "b"}) + backend("b", 8000))
    resolved = next(c for c in found["https"]["conditions"] if c["type"] == "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "RefNotPermitted")


def test_a_gateway_that_fails_on_something_it_uses_stays_accepted_and_says_why_it_is_not_programmed() -> None:
    result, resource_set = _compiled(gateway() + route("r", {"m": "missing"}))
    updates = status_updates(result, resource_set, _sync(True), _current(), NOW)
    conditions = {c["type"]: c for c in updates[ResourceKey("Gateway", "default", "gw")]["conditions"]}
    assert conditions["Accepted"]["status"] == "True"
    assert conditions["Programmed"]["reason"] == "Invalid"
    assert "AIGatewayRoute default/r" in conditions["Programmed"]["message"]


def test_observed_generation_is_the_compiled_one() -> None:
    text = gateway().replace(
        "metadata: {name: gw, namespace: default}", "metadata: {name: gw, namespace: default, generation: 4}"
    )
    result, resource_set = _compiled(text)
    updates = status_updates(result, resource_set, _sync(True), _current(generation=5), NOW)
    gw = updates[ResourceKey("Gateway", "default", "gw")]["conditions"]
    assert {c["observedGeneration"] for c in gw} == {4}, "the conditions are about generation 4, the one compiled"


def test_a_route_whose_backend_cannot_be_used_says_which_and_why() -> None:
    invalid_backend = backend("b", 8000).replace("name: OpenAI", "name: NotASchema")
    result, resource_set = _compiled(gateway() + route("r", {"m": "b"}) + invalid_backend)
    updates = status_updates(result, resource_set, _sync(True), _current(), NOW)
    resolved = {c["type"]: c for c in updates[ResourceKey("AIGatewayRoute", "default", "r")]["conditions"]}
    assert resolved["ResolvedRefs"]["status"] == "False"
    assert "AIServiceBackend default/b is invalid" in resolved["ResolvedRefs"]["message"]
    # The refused backend's own status is only its Accepted=False: nothing from an older version.
    own = updates[ResourceKey("AIServiceBackend", "default", "b")]["conditions"]
    assert [c["type"] for c in own] == ["Accepted"] and own[0]["status"] == "False"


def test_refused_envoys_do_not_look_absent() -> None:
    result, resource_set = _compiled(gateway() + route("r", {"m": "b"}) + backend("b", 8000))
    refused = FleetSync("v", 0, 0, (), ("edge-1: anonymous may not receive it: present a token",))
    updates = status_updates(result, resource_set, lambda fleet: refused, _current(), NOW)
    programmed = next(
        c for c in updates[ResourceKey("Gateway", "default", "gw")]["conditions"] if c["type"] == "Programmed"
    )
    assert programmed["reason"] == "Pending" and "were refused" in programmed["message"]
    assert "edge-1: anonymous may not receive it" in programmed["message"]


def test_a_refusal_is_remembered_for_a_minute_per_node() -> None:
    from aigw_xds.xds.server import Registry

    registry, changed = Registry(), []
    registry.watchers.append(changed.append)
    registry.refuse("default/gw", "edge-1", "no token")
    registry.refuse("default/gw", "edge-1", "still no token")
    assert registry.refused("default/gw") == ("edge-1: still no token",) and changed == ["default/gw"] * 2
    assert registry.refused("default/gw", within=0.0) == () and registry.refused("other/gw") == ()


def test_refusals_kept_per_fleet_are_bounded() -> None:
    from aigw_xds.xds.server import Registry

    registry = Registry()
    for i in range(1000):
        registry.refuse("default/gw", f"node-{i}-" + "x" * 500, "no token")
    kept = registry.refused("default/gw")
    assert len(kept) <= 16 and all(len(line.split(":")[0]) <= 64 for line in kept)


def test_a_gateway_no_longer_ours_is_released_unless_another_controller_wrote_its_status() -> None:
    """Our conditions on a Gateway whose class changed would go on saying it is served: they go back
    to the Gateway API's initial status, written over the version seen only, never over a status
    another controller wrote (its listeners' supportedKinds are not ours). Read from the objects
    (found by review: remembered, a failed write was never tried again, and a new leader knew none)."""
    from aigw_xds.kubernetes.status_writer import StatusWriter

    ours_then = {
        "conditions": [{"type": "Programmed", "status": "True"}],
        "listeners": [
            {"name": "http", "supportedKinds": [{"group": "aigateway.envoyproxy.io", "kind": "AIGatewayRoute"}]}
        ],
    }
    theirs = {
        **ours_then,
        "listeners": [
            {"name": "http", "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}]}
        ],
    }
    held = [
        (ResourceKey("Gateway", "default", "moved"), Stored(b"", "7", 4, ours_then, "v1")),
        (ResourceKey("Gateway", "default", "taken"), Stored(b"", "8", 2, theirs, "v1")),
        (ResourceKey("Gateway", "default", "gw"), Stored(b"", "9", 1, ours_then, "v1")),  # still ours
    ]

    class Source:
        def held(self, kind: str) -> list[tuple[ResourceKey, Stored]]:
            return held if kind == "Gateway" else []

    writer = StatusWriter(None, Source(), lambda fleet: None, lambda: True)  # type: ignore[arg-type]
    [(key, status, version)] = writer._released(resources(gateway()), NOW)
    assert (key.name, version) == ("moved", "7")
    assert status["listeners"] is None
    assert [(c["type"], c["status"], c["reason"], c["observedGeneration"]) for c in status["conditions"]] == [
        ("Accepted", "Unknown", "Pending", 4),
        ("Programmed", "Unknown", "Pending", 4),
    ]


def test_a_release_is_written_over_the_version_seen_and_a_conflict_is_no_failure() -> None:
    """Another controller writing first makes the API server answer 409 to the release: nothing is
    overwritten, nothing is logged as a failure, and the next round looks again."""
    import structlog

    from aigw_xds.kubernetes.api import KubeError
    from aigw_xds.kubernetes.status_writer import StatusWriter

    sent: list[dict[str, Any]] = []

    class API:
        def __init__(self, conflict: bool) -> None:
            self.conflict = conflict

        def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
            sent.append(patch)
            if self.conflict:
                raise KubeError(409, "Conflict", "the object has been modified")
            return {"status": patch["status"]}

    class Source:
        def record_status(self, key: ResourceKey, status: Any) -> None:
            pass

    key = ResourceKey("Gateway", "default", "moved")
    for conflict in (True, False):
        writer = StatusWriter(API(conflict), Source(), lambda fleet: None, lambda: True)  # type: ignore[arg-type]
        with structlog.testing.capture_logs() as logs:
            writer._write(key, {"conditions": []}, "7")
        assert sent[-1]["metadata"] == {"resourceVersion": "7"}
        assert not [e for e in logs if e["event"] == "status_write_failed"]
        assert writer.writes == (0 if conflict else 1)


def test_an_inference_pool_gets_a_parent_entry_per_gateway_of_ours_and_keeps_the_others() -> None:
    """The Inference Extension's status shape: status.parents, one entry per Gateway built from the
    pool, Accepted and ResolvedRefs; another controller's entry is left as it is; a picker Service
    that is not there is ResolvedRefs=False (InvalidExtensionRef), the pool still Accepted."""
    pool_key = ResourceKey("InferencePool", "default", "llama")
    other = {
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "x", "name": "theirs"},
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}],
    }
    text = gateway() + pool_route("r", "llama", "llama") + inference_pool("llama", 9002)
    result, resource_set = _compiled(text)
    updates = status_updates(result, resource_set, _sync(True), _current(2, {"parents": [other]}), NOW)
    kept, ours = updates[pool_key]["parents"]  # a new entry of ours goes last
    assert kept == other
    assert ours["parentRef"] == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "namespace": "default",
        "name": "gw",
    }
    conditions = {c["type"]: (c["status"], c["reason"], c["observedGeneration"]) for c in ours["conditions"]}
    assert conditions == {"Accepted": ("True", "Accepted", 2), "ResolvedRefs": ("True", "ResolvedRefs", 2)}
    assert "conditions" not in updates[pool_key]

    result, resource_set = _compiled(gateway() + pool_route("r", "llama", "llama") + inference_pool("llama", None))
    updates = status_updates(result, resource_set, _sync(True), _current(), NOW)
    (ours,) = updates[pool_key]["parents"]
    conditions = {c["type"]: c for c in ours["conditions"]}
    assert conditions["Accepted"]["status"] == "True"
    resolved = conditions["ResolvedRefs"]
    assert (resolved["status"], resolved["reason"]) == ("False", "InvalidExtensionRef")
    assert "Service default/llama-epp not found" in resolved["message"]


def _entry(name: str, message: str = "accepted by aigw-xds") -> dict[str, Any]:
    return {
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "default", "name": name},
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": message}],
    }


def test_our_pool_entries_go_when_no_gateway_of_ours_uses_the_pool_and_others_stay_in_place() -> None:
    """An entry of ours (its Accepted message says so) for a Gateway that no longer uses the pool,
    or is gone, is removed, as the Inference Extension asks; another controller's stays where it
    is; a status already right is not written again."""
    pool_key = ResourceKey("InferencePool", "default", "llama")
    theirs = _entry("theirs", "accepted by another controller")
    # No route sends to the pool any more: only the other controller's entry is left.
    result, resource_set = _compiled(
        gateway() + inference_pool("llama", 9002) + route("r", {"m": "b"}) + backend("b", 1)
    )
    status = {"parents": [_entry("gw"), theirs]}
    updates = status_updates(result, resource_set, _sync(True), _current(1, status), NOW, [pool_key])
    assert updates[pool_key] == {"parents": [theirs]}
    # A Gateway of ours gone (gw2), gw still using it: gw's entry kept in its place, gw2's removed.
    result, resource_set = _compiled(gateway() + pool_route("r", "llama", "llama") + inference_pool("llama", 9002))
    status = {"parents": [_entry("gw2"), theirs, _entry("gw")]}
    updates = status_updates(result, resource_set, _sync(True), _current(1, status), NOW, [pool_key])
    parents = updates[pool_key]["parents"]
    assert [p["parentRef"]["name"] for p in parents] == ["theirs", "gw"]
    assert parents[0] == theirs
    written = {"parents": parents}
    again = status_updates(result, resource_set, _sync(True), _current(1, written), NOW, [pool_key])
    assert pool_key not in again


def _listener_status(text: str) -> dict[str, dict[str, Any]]:
    result, resource_set = _compiled(text)
    updates = status_updates(result, resource_set, _sync(True), _current(), NOW)
    gateway_status = next(v for k, v in updates.items() if k.kind == "Gateway")
    return {entry["name"]: entry for entry in gateway_status["listeners"]}


def test_attached_routes_count_the_routes_each_listener_takes() -> None:
    """By the routes' parentRefs (sectionName, port), the listeners' allowedRoutes and hostnames, as
    Gateway API counts them (found by review: a route without sectionName was counted on every
    listener, its port and hostnames ignored, and a route not Accepted was left out)."""
    listeners = (
        "    - {name: b, protocol: HTTP, port: 8080, hostname: b.example.com}\n"
        "    - {name: c, protocol: HTTP, port: 8081}\n"
    )
    text = gateway(extra_listeners=listeners).replace("port: 8080}", "port: 8080, hostname: a.example.com}")
    text += route("r-a", {"m1": "x"}, extra="  hostnames: [a.example.com]\n")  # a and c
    text += route("r-port", {"m2": "x"}).replace("gateway.networking.k8s.io}", "gateway.networking.k8s.io, port: 8081}")
    text += route("r-b", {"m3": "missing"}).replace(  # b, its backend missing: not Accepted, still attached
        "gateway.networking.k8s.io}", "gateway.networking.k8s.io, sectionName: b}"
    )
    found = _listener_status(text + backend("x", 1))
    assert {name: entry["attachedRoutes"] for name, entry in found.items()} == {"http": 1, "b": 1, "c": 2}


def test_listeners_say_the_route_kinds_and_protocols_they_take() -> None:
    listeners = (
        "    - {name: grpc-only, protocol: HTTP, port: 8081, allowedRoutes: {kinds: [{kind: GRPCRoute}]}}\n"
        "    - {name: mcp-only, protocol: HTTP, port: 8082, allowedRoutes: {kinds: "
        "[{group: aigateway.envoyproxy.io, kind: MCPRoute}]}}\n"
        "    - {name: tcp, protocol: TCP, port: 9000}\n"
    )
    found = _listener_status(gateway(extra_listeners=listeners) + route("r", {"m": "x"}) + backend("x", 1))
    conditions = {name: {c["type"]: (c["status"], c["reason"]) for c in e["conditions"]} for name, e in found.items()}
    assert found["grpc-only"]["supportedKinds"] == [] and found["grpc-only"]["attachedRoutes"] == 0
    assert conditions["grpc-only"]["ResolvedRefs"] == ("False", "InvalidRouteKinds")
    assert found["mcp-only"]["supportedKinds"] == [{"group": "aigateway.envoyproxy.io", "kind": "MCPRoute"}]
    assert found["mcp-only"]["attachedRoutes"] == 0
    assert found["tcp"]["supportedKinds"] == [] and found["tcp"]["attachedRoutes"] == 0
    assert conditions["tcp"]["Accepted"] == ("False", "UnsupportedProtocol")
    assert found["http"]["attachedRoutes"] == 1 and conditions["http"]["Accepted"] == ("True", "Accepted")


def test_a_refused_mcp_route_is_told_why() -> None:
    """Its status is written as a refused AIGatewayRoute's is (found by review: it was not)."""
    text = gateway().replace("port: 8080}", "port: 8080, hostname: gw.example.com}")
    text += mcp_route(spec_extra="\n  hostnames: [tools.other.com]") + MCP_BACKENDS
    result, resource_set = _compiled(text)
    updates = status_updates(result, resource_set, _sync(True), _current(), NOW)
    [written] = [v for k, v in updates.items() if k.kind == "MCPRoute"]
    accepted = next(c for c in written["conditions"] if c["type"] == "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "NoMatchingListenerHostname")


def test_a_listener_naming_a_kind_not_served_says_so_beside_those_it_takes() -> None:
    """Gateway API: a kind that is not supported among allowedRoutes kinds makes ResolvedRefs False
    (InvalidRouteKinds), the supported ones listed still (found by review)."""
    kinds = "allowedRoutes: {kinds: [{kind: HTTPRoute}, {kind: GRPCRoute}]}"
    listeners = f"    - {{name: mixed, protocol: HTTP, port: 8081, {kinds}}}\n"
    found = _listener_status(gateway(extra_listeners=listeners) + route("r", {"m": "x"}) + backend("x", 1))
    mixed = found["mixed"]
    assert [k["kind"] for k in mixed["supportedKinds"]] == ["AIGatewayRoute", "MCPRoute"]
    resolved = next(c for c in mixed["conditions"] if c["type"] == "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "InvalidRouteKinds") and "GRPCRoute" in resolved[
        "message"
    ]
    assert mixed["attachedRoutes"] == 1


OURS = "aigw-xds.io/gateway-controller"


def _ancestor(name: str, controller: str = OURS, accepted: str = "True") -> dict[str, Any]:
    return {
        "ancestorRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "default", "name": name},
        "controllerName": controller,
        "conditions": [{"type": "Accepted", "status": accepted, "reason": "Accepted", "message": "m"}],
    }


def _policies_text() -> str:
    cors = "cors: {allowOrigins: ['https://app.example.com']}"
    on_gateway = "targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]"
    on_route = "targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]"
    return (
        gateway()
        + route("r", {"m": "b"})
        + backend("b", 8000)
        + api_key("b")
        + security_policy(on_gateway, cors, "whole")
        + security_policy(on_route, cors, "mine", created="2026-01-01T00:00:00Z")
        + security_policy(on_route, cors, "late", created="2026-06-01T00:00:00Z")
        + client_traffic_policy("timeout: {http: {requestReceivedTimeout: 5s}}")
    )


def test_envoy_gateway_policies_get_an_ancestor_entry_per_gateway_of_ours_as_envoy_gateway_writes_them() -> None:
    """SecurityPolicy, ClientTrafficPolicy (and BackendTrafficPolicy, BackendTLSPolicy): the Gateway
    API's PolicyStatus, status.ancestors, an entry per Gateway and controller. Ours names the
    Gateway built from the policy and our controllerName; the policy outranked at its target is
    Accepted=False (Conflicted), the Gateway's policy says where routes' own take over
    (Overridden); another controller's entry stays as it is; a status already right is not
    written again."""
    result, resource_set = _compiled(_policies_text())
    theirs = _ancestor("gw", controller="gateway.envoyproxy.io/gatewayclass-controller")
    updates = status_updates(result, resource_set, _sync(True), _current(4, {"ancestors": [theirs]}), NOW)

    def conditions(name: str, kind: str = "SecurityPolicy") -> dict[str, tuple[str, str, str]]:
        kept, ours = updates[ResourceKey(kind, "default", name)]["ancestors"]
        assert kept == theirs
        assert ours["ancestorRef"] == {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "namespace": "default",
            "name": "gw",
        }
        assert ours["controllerName"] == OURS
        assert {c["observedGeneration"] for c in ours["conditions"]} == {4}
        return {c["type"]: (c["status"], c["reason"], c["message"]) for c in ours["conditions"]}

    assert conditions("mine") == {"Accepted": ("True", "Accepted", "Policy has been accepted.")}
    late = conditions("late")
    assert late["Accepted"][:2] == ("False", "Conflicted") and "default/mine" in late["Accepted"][2]
    whole = conditions("whole")
    assert whole["Accepted"][:2] == ("True", "Accepted")
    assert whole["Overridden"][:2] == ("True", "Overridden") and "AIGatewayRoute default/r" in whole["Overridden"][2]
    ctp = conditions("ctp", "ClientTrafficPolicy")
    assert ctp["Accepted"] == ("True", "Accepted", "applies to listener http of Gateway default/gw")
    assert all("conditions" not in updates[ResourceKey("SecurityPolicy", "default", n)] for n in ("mine", "late"))
    key = ResourceKey("SecurityPolicy", "default", "mine")
    written = _current(4, updates[key])
    assert key not in status_updates(result, resource_set, _sync(True), written, "2026-12-02T13:00:00Z")


def test_our_policy_entries_go_with_the_gateways_and_a_refused_policy_is_told_so_where_it_was() -> None:
    """A policy no Gateway of ours is built from any more (it names another route) loses its entry
    of ours, and only ours; a policy made invalid is Accepted=False with the error, on the Gateway
    it names (withheld until it is fixed)."""
    key = ResourceKey("SecurityPolicy", "default", "mine")
    text = _policies_text().replace("kind: HTTPRoute, name: r}]", "kind: HTTPRoute, name: gone}]")
    result, resource_set = _compiled(text)
    theirs = _ancestor("gw", controller="gateway.envoyproxy.io/gatewayclass-controller")
    before = _current(1, {"ancestors": [_ancestor("gw"), theirs]})
    updates = status_updates(result, resource_set, _sync(True), before, NOW, [key])
    assert updates[key] == {"ancestors": [theirs]}

    result, resource_set = _compiled(
        _policies_text().replace("allowOrigins: ['https://app.example.com']", "allowOrigins: 5")
    )
    assert key in resource_set.bad_keys
    updates = status_updates(result, resource_set, _sync(True), _current(2, {"ancestors": [_ancestor("gw")]}), NOW)
    [ours] = updates[key]["ancestors"]
    [accepted] = [c for c in ours["conditions"] if c["type"] == "Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("False", "Invalid") and "allowOrigins" in accepted["message"]
    # (The Gateway it names is withheld until it is fixed: told so there even if never written on.)
    [ours] = status_updates(result, resource_set, _sync(True), _current(2), NOW)[key]["ancestors"]
    assert ours["ancestorRef"]["name"] == "gw"
    # A policy aigw-xds cannot enforce (a field Envoy Gateway does not have): its Gateway is served
    # closed, and the policy says why on it.
    result, resource_set = _compiled(_policies_text().replace("cors: {allowOrigins", "corz: {allowOrigins"))
    [ours] = status_updates(result, resource_set, _sync(True), _current(), NOW)[key]["ancestors"]
    [accepted] = [c for c in ours["conditions"] if c["type"] == "Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("False", "Invalid") and "corz" in accepted["message"]


def test_a_policys_ancestors_are_written_over_the_version_they_were_read_at() -> None:
    """From a review: the version was read again at write time, so another controller's entry that
    changed between the read and the write was put back as it had been, over the new version."""
    from aigw_xds.kubernetes.status_writer import StatusWriter

    key = ResourceKey("SecurityPolicy", "default", "auth")

    class Source:
        def __init__(self) -> None:
            self.version = "41"

        def status_of(self, asked: ResourceKey) -> Stored:
            return Stored(b"{}", self.version, 1, {}, "gateway.envoyproxy.io/v1alpha1")

    source = Source()
    writer = StatusWriter(None, source, lambda fleet: None, lambda: True)  # type: ignore[arg-type]
    assert writer._current(key) == Current(1, {})  # (the round's read)
    source.version = "42"  # (another controller wrote meanwhile)
    assert writer._shared_version(key) == "41"  # a 409, and the next round reads it again
    assert writer._shared_version(ResourceKey("AIGatewayRoute", "default", "r")) is None


def _btp(name: str, target: str, created: str) -> str:
    return f"""
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: {name}, namespace: default, creationTimestamp: "{created}"}}
spec:
  targetRefs: [{target}]
  retry: {{numRetries: 2}}
"""


def test_backend_traffic_policies_say_conflicted_and_overridden_as_envoy_gateway_does() -> None:
    """From a review: the newer of two BackendTrafficPolicies on one route (never applied) was
    Accepted, and the Gateway's, which the route's takes over from, said nothing."""
    on_route = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}"
    on_gateway = "{group: gateway.networking.k8s.io, kind: Gateway, name: gw}"
    text = gateway() + route("r", {"m": "b"}) + backend("b", 8000) + api_key("b")
    text += _btp("first", on_route, "2026-01-01T00:00:00Z") + _btp("second", on_route, "2026-02-01T00:00:00Z")
    text += _btp("whole", on_gateway, "2025-01-01T00:00:00Z")
    result, resource_set = _compiled(text)
    updates = status_updates(result, resource_set, _sync(True), _current(), NOW)

    def conditions(name: str) -> dict[str, tuple[str, str]]:
        [entry] = updates[ResourceKey("BackendTrafficPolicy", "default", name)]["ancestors"]
        return {c["type"]: (c["status"], c["reason"]) for c in entry["conditions"]}

    assert conditions("first") == {"Accepted": ("True", "Accepted")}
    assert conditions("second") == {"Accepted": ("False", "Conflicted")}
    assert conditions("whole") == {"Accepted": ("True", "Accepted"), "Overridden": ("True", "Overridden")}


def test_a_listeners_security_policy_is_overridden_only_by_the_routes_of_that_listener() -> None:
    """From a review: a listener's policy said routes attached to another listener overrode it."""
    two_listeners = gateway().replace(
        "    - {name: http, protocol: HTTP, port: 8080}\n",
        "    - {name: http, protocol: HTTP, port: 8080}\n    - {name: other, protocol: HTTP, port: 8081}\n",
    )
    assert two_listeners != gateway()
    on_http = route("r", {"m": "b"}).replace("kind: Gateway", "kind: Gateway, sectionName: http", 1)
    assert "sectionName: http" in on_http
    cors = "cors: {allowOrigins: ['https://app.example.com']}"
    other = "targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: other}]"
    http = "targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: http}]"
    own = "targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]"
    text = two_listeners + on_http + backend("b", 8000) + api_key("b")
    text += security_policy(other, cors, "lis") + security_policy(http, cors, "on-http")
    text += security_policy(own, cors, "own")
    result, _ = _compiled(text)
    statuses = {k.name: {c.type: c for c in v} for k, v in result.statuses.items() if k.kind == "SecurityPolicy"}
    assert "Overridden" not in statuses["lis"]
    assert "AIGatewayRoute default/r" in statuses["on-http"]["Overridden"].message
