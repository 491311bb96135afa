"""Kubernetes mode end to end: `aigw-xds serve --kubernetes` (a real process) reads the resources
from an API server, a real Envoy serves them to the official `openai` SDK, and status is written
back.

The API server is EMULATED (fakes/aigw_fakes/kube, a stand-in: no kube-apiserver can run on these
machines). It implements what the official client and our controller depend on as a real one does:
one global resourceVersion, list + watch from a version with bookmarks, 410 Gone for a compacted
version, the status subresource with generation/observedGeneration, condition validation, Leases,
TokenReview, and SubjectAccessReview decided by the Roles and RoleBindings stored in it.

Every Envoy here proves its ServiceAccount as one in a cluster does (`aigw-xds bootstrap
--xds-token-file`: a token the API server issued, sent over the self-provisioned TLS); Kubernetes
mode serves no fleet to an unauthenticated peer, and a Gateway's credentials only to a
ServiceAccount that RBAC lets get its Secrets.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx2
import openai
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from aigw_fakes import ExtAuthzFake, OpenAIFake
from aigw_fakes.endpoint_picker import FakeEndpointPicker
from aigw_fakes.ext_authz import ACCESS_HEADER, USER_HEADER
from aigw_fakes.kube_apiserver import KubeAPIServer
from aigw_xds.envoy.bootstrap import bootstrap
from aigw_xds.envoy.process import EnvoyProcess
from aigw_xds.xds import type_urls
from tests.e2e.translator.test_mcp_envoy import mcp_route
from tests.e2e.translator.test_mcp_ext_auth_envoy import whoami_server
from tests.e2e.translator.test_mcp_security_envoy import HELLO
from tests.kube_api import apply_yaml, grant_secrets
from tests.resource_text import (
    api_key,
    backend,
    client_traffic_policy,
    gateway,
    inference_pool,
    pool_route,
    route,
    security_policy,
)
from tests.translator.mcp.servers import served

from .harness.certs import CertificateAuthority
from .harness.control_plane import ControlPlaneProcess
from .harness.envoy import until_live
from .harness.processes import free_port, until
from .harness.service_pods import (
    AI_SERVICE_BACKEND,
    PODS,
    SERVICE,
    answered_by,
    cluster_state,
    endpoint_slice,
    envoy_endpoints,
    pods,
    update_counters,
)

pytestmark = pytest.mark.e2e

OURS = "gateway.envoyproxy.io/gatewayclass-controller"  # the examples' controllerName, taken over here
KEY = "sk-backend"

FOREIGN = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/another-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: foreign, namespace: default}
spec:
  gatewayClassName: other
  listeners: [{name: http, protocol: HTTP, port: 8080}]
"""


@pytest.fixture
def api(kube_api: KubeAPIServer) -> KubeAPIServer:
    return kube_api


def _plane(api: KubeAPIServer, workdir: Path, *extra: str) -> tuple[ControlPlaneProcess, int]:
    kubeconfig = workdir / "kubeconfig"
    api.write_kubeconfig(kubeconfig)
    health = free_port()
    args = (
        "--kubernetes",
        "--kubeconfig",
        str(kubeconfig),
        "--controller-name",
        OURS,
        "--health-listen",
        f"127.0.0.1:{health}",
        "--leader-election-namespace",
        "aigw-system",
        "--leader-election-timings",
        "3,2,0.5",
        "--translator-listen",
        f"127.0.0.1:{free_port()}",
        "--translator-workers",
        "1",
        "--tls-service-name",  # the self-provisioned xDS certificate names localhost (dialled below)
        "localhost",
        *extra,
    )
    return ControlPlaneProcess(None, free_port(), workdir, extra=args), health


def _ready(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return int(answer.status)
    except OSError as exc:
        return int(getattr(exc, "code", 0) or 0)


def _ancestors(api: KubeAPIServer, kind: str, name: str) -> list[dict]:
    """A policy's status.ancestors in the API (empty: none yet)."""
    return ((api.get(kind, "default", name) or {}).get("status") or {}).get("ancestors") or []


def _conditions(api: KubeAPIServer, kind: str, name: str, namespace: str | None = "default") -> dict[str, dict]:
    obj = api.get(kind, namespace, name) or {}
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


async def _envoy(
    api: KubeAPIServer, plane: ControlPlaneProcess, workdir: Path, node_id: str = "node-1", account: str = "envoy"
) -> EnvoyProcess:
    """An Envoy of ServiceAccount default/<account> as the example Deployment runs it: it trusts the
    CA the control plane published in the Gateway's namespace and sends a projected token (here one
    the emulated API server issued for audience aigw-xds) on the xDS stream."""
    ca = await until(lambda: (api.get("ConfigMap", "default", "aigw-xds-ca") or {}).get("data"), "the CA")
    (workdir / "ca.crt").write_text(ca["ca.crt"])
    token = workdir / f"token-{node_id}"
    token.write_text(api.issue_token("default", account))
    admin = free_port()
    config = bootstrap(
        xds_host="localhost", xds_port=plane.port, fleet="default/gw", node_id=node_id, delta=True, admin_port=admin,
        tls_ca=str(workdir / "ca.crt"), token_file=str(token),
    )  # fmt: skip
    envoy = EnvoyProcess(config, admin_port=admin)
    envoy.start()
    return until_live(envoy)


async def _chat(client: openai.AsyncOpenAI, model: str) -> str:
    answer = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}])
    return answer.choices[0].message.content or ""


async def _serves(client: openai.AsyncOpenAI, model: str) -> bool:
    try:
        return bool(await _chat(client, model))
    except openai.APIStatusError:
        return False


async def test_resources_from_the_api_reach_envoy_and_status_is_written_back(
    api: KubeAPIServer, tmp_path: Path
) -> None:
    fake = await OpenAIFake(api_key=KEY, name="llm").start()
    listen = free_port()
    apply_yaml(
        api,
        gateway(port=listen).replace("gateway.envoyproxy.io/gatewayclass-controller", OURS)
        + route("r", {"gpt-a": "llm"})
        + backend("llm", fake.port)
        + api_key("llm", KEY)
        + "---\n"
        + FOREIGN,
    )
    plane, health = _plane(api, tmp_path)
    envoy = None
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{listen}/v1", api_key="client", max_retries=0)
    try:
        plane.start()
        await until(lambda: _ready(health) == 200, "/readyz")
        # xDS is TLS by default: Envoy trusts the CA the control plane published in the Gateway's
        # namespace and proves its ServiceAccount, which RBAC lets get the backend's key.
        grant_secrets(api, "default", "envoy", ["llm-key"])
        envoy = await _envoy(api, plane, tmp_path)
        assert await _chat(client, "gpt-a")

        # Status: written by the leader once Envoy ACKed, with the object's generation.
        gw = await until(
            lambda: (c := _conditions(api, "Gateway", "gw")) and c.get("Programmed", {}).get("status") == "True" and c,
            "Gateway Programmed=True",
        )
        generation = api.get("Gateway", "default", "gw")["metadata"]["generation"]
        assert gw["Accepted"]["status"] == "True" and gw["Programmed"]["observedGeneration"] == generation
        assert "1 Envoy applied" in gw["Programmed"]["message"]
        assert _conditions(api, "AIGatewayRoute", "r")["Accepted"]["status"] == "True"
        # Written in the same pass as the Gateway's, after it (patches go out in key order).
        await until(
            lambda: _conditions(api, "GatewayClass", "aigw", None).get("Accepted", {}).get("status") == "True",
            "GatewayClass Accepted=True",
        )
        # An Envoy Gateway policy gets the Gateway API's PolicyStatus: an entry of ours per Gateway.
        on_gateway = "targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]"
        apply_yaml(api, security_policy(on_gateway, "cors: {allowOrigins: ['https://app.example.com']}"))
        [entry] = await until(lambda: _ancestors(api, "SecurityPolicy", "auth"), "the SecurityPolicy's status")
        assert entry["controllerName"] == OURS and entry["ancestorRef"]["name"] == "gw"
        accepted = {c["type"]: c for c in entry["conditions"]}["Accepted"]
        assert (accepted["status"], accepted["reason"]) == ("True", "Accepted")
        assert await _chat(client, "gpt-a")
        # Another controller's Gateway is not ours: its status stays what the API server defaulted.
        assert _conditions(api, "Gateway", "foreign")["Accepted"]["reason"] == "Pending"

        # An edit reaches Envoy.
        apply_yaml(api, route("r", {"gpt-a": "llm", "gpt-b": "llm"}))
        assert await _wait_serves(client, "gpt-b")

        # A bad edit: Accepted=False with the message validate prints; the routes using the backend
        # are left out until it is fixed (every replica, whenever started, serves the same).
        broken = backend("llm", fake.port).replace("name: OpenAI", "name: NotASchema")
        apply_yaml(api, broken)
        conditions = await until(
            lambda: (c := _conditions(api, "AIServiceBackend", "llm")) and c["Accepted"]["status"] == "False" and c,
            "AIServiceBackend Accepted=False",
        )
        assert "spec.schema.name" in conditions["Accepted"]["message"]
        assert await _wait_serves(client, "gpt-a", serves=False)
        # Its rules stay, without it: a 503 in the client's shape, not a 404 saying the model is
        # not configured (the route's other rules and backends are served: test_excluding).
        with pytest.raises(openai.InternalServerError) as unserved:
            await _chat(client, "gpt-a")
        assert unserved.value.status_code == 503 and isinstance(unserved.value.body, dict), unserved.value.body
        apply_yaml(api, backend("llm", fake.port))
        await until(
            lambda: _conditions(api, "AIServiceBackend", "llm")["Accepted"]["status"] == "True", "the fix accepted"
        )
        assert await _wait_serves(client, "gpt-a") and await _chat(client, "gpt-b")

        # A compacted history: the watch gets 410 Gone, the source lists again, nothing is dropped.
        api.compact()
        api.drop_watches()
        apply_yaml(api, route("r", {"gpt-a": "llm", "gpt-b": "llm", "gpt-c": "llm"}))
        assert await _wait_serves(client, "gpt-c")
        assert await _chat(client, "gpt-a")

        # The API server goes away: Envoy keeps serving; when it is back, edits flow again.
        api.stop()
        assert await _chat(client, "gpt-a")
        await asyncio.sleep(1.0)
        assert await _chat(client, "gpt-c")
        api.start()
        apply_yaml(api, route("r", {"gpt-a": "llm", "gpt-d": "llm"}))
        assert await _wait_serves(client, "gpt-d", timeout=40.0)
        assert not await _serves(client, "gpt-b")

        # The backend's Secret is deleted: the policy that used it says so, and its backend, with the
        # routes that use it, is left out at once (as Envoy Gateway does; a replica started now
        # serves the same), not served on with the deleted key; recreated, all is well.
        api.delete("Secret", "default", "llm-key")
        policy = await until(
            lambda: (
                (c := _conditions(api, "BackendSecurityPolicy", "llm-key")).get("ResolvedRefs", {}).get("status")
                == "False"
                and c
            ),
            "the policy's ResolvedRefs=False",
        )
        assert policy["ResolvedRefs"]["reason"] == "SecretNotFound"
        assert "Secret default/llm-key not found" in policy["ResolvedRefs"]["message"]
        assert await _wait_serves(client, "gpt-a", serves=False)
        apply_yaml(api, api_key("llm", KEY))
        assert await _wait_serves(client, "gpt-d")
        await until(
            lambda: _conditions(api, "BackendSecurityPolicy", "llm-key")["ResolvedRefs"]["status"] == "True",
            "the policy's ResolvedRefs=True again",
        )
        await until(lambda: _conditions(api, "Gateway", "gw")["Programmed"]["status"] == "True", "Programmed")

        # A route naming a backend that does not exist, then the control plane restarted (a rollout):
        # it starts without any last good configuration and serves the Gateway's valid routes, so
        # the Envoy that reconnects keeps its listener (found by review: it was sent nothing).
        apply_yaml(api, route("x", {"gpt-x": "nowhere"}))
        x = await until(
            lambda: (
                (c := _conditions(api, "AIGatewayRoute", "x")).get("ResolvedRefs", {}).get("status") == "False" and c
            ),
            "x's ResolvedRefs=False",
        )
        assert x["Accepted"]["status"] == "True"  # served without the backendRef (its rule answers 503)
        plane.stop()
        plane.start()
        await until(lambda: _ready(health) == 200, "/readyz after the restart")
        await asyncio.sleep(1.0)  # the Envoy reconnected meanwhile (its first retry is within a second)
        assert await _chat(client, "gpt-d") and not await _serves(client, "gpt-x")

        # A route refused from its creation (its regular expression is not RE2, which the CRD schema
        # cannot check) is told why in its status (left alone before: its parents were not read).
        apply_yaml(api, BAD_REGEX_ROUTE)
        refused = await until(
            lambda: _conditions(api, "AIGatewayRoute", "regex").get("Accepted"), "the refused route's status"
        )
        assert refused["status"] == "False" and "invalid regular expression" in refused["message"], refused
        assert await _chat(client, "gpt-d")

        # A ClientTrafficPolicy that does not compile (a window Envoy would refuse): the Gateway is
        # served without its routes, and every request gets a 500 in the client's schema saying so
        # (a 404 had said the model was not configured); deleted, the routes are back.
        apply_yaml(api, client_traffic_policy("http2: {initialStreamWindowSize: 1Ki}"))

        deadline, refusal = time.monotonic() + 20, None
        while refusal is None and time.monotonic() < deadline:
            try:
                await _chat(client, "gpt-d")
                await asyncio.sleep(0.1)
            except openai.InternalServerError as exc:
                refusal = exc
        assert refusal is not None, "the Gateway's requests were not refused"
        assert refusal.status_code == 500 and "ClientTrafficPolicy" in str(refusal.body), refusal.body
        # Its status (the Gateway API's PolicyStatus): our entry for the Gateway says why.
        [entry] = await until(lambda: _ancestors(api, "ClientTrafficPolicy", "ctp"), "the policy's status")
        assert entry["controllerName"] == OURS and entry["ancestorRef"]["name"] == "gw"
        accepted = {c["type"]: c for c in entry["conditions"]}["Accepted"]
        assert accepted["status"] == "False" and "initialStreamWindowSize" in accepted["message"], accepted
        api.delete("ClientTrafficPolicy", "default", "ctp")
        assert await _wait_serves(client, "gpt-d")

        # The Gateway moved to a class no controller has (a typo): it is no longer served, and its
        # status no longer says it is (left alone before: our Programmed=True stayed), but is the
        # Gateway API's initial one, which the controller of the class it names will replace.
        apply_yaml(api, gateway(port=listen).replace("gatewayClassName: aigw", "gatewayClassName: aigw-typo"))
        released = await until(
            lambda: (c := _conditions(api, "Gateway", "gw")) and c["Accepted"]["status"] == "Unknown" and c,
            "the released Gateway's initial status",
        )
        assert {t: (c["status"], c["reason"], c["message"]) for t, c in released.items()} == {
            "Accepted": ("Unknown", "Pending", "Waiting for controller"),
            "Programmed": ("Unknown", "Pending", "Waiting for controller"),
        }
        assert "listeners" not in api.get("Gateway", "default", "gw")["status"]
    finally:
        await client.close()
        if envoy is not None:
            envoy.stop()
        plane.stop()
        await fake.stop()


BAD_REGEX_ROUTE = """
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: regex, namespace: default}
spec:
  parentRefs: [{name: gw, kind: Gateway, group: gateway.networking.k8s.io}]
  rules:
    - matches: [{headers: [{type: RegularExpression, name: x-ai-eg-model, value: "gpt-(?=lookahead)"}]}]
      backendRefs: [{name: llm}]
"""


async def _wait_serves(client: openai.AsyncOpenAI, model: str, timeout: float = 20.0, serves: bool = True) -> bool:
    """Whether the model is served (or, with serves=False, no longer served) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await _serves(client, model) == serves:
            return True
        await asyncio.sleep(0.2)
    return False


async def test_a_services_endpoints_follow_its_endpointslices_in_the_api_by_eds_only(
    api: KubeAPIServer, tmp_path: Path
) -> None:
    """An AIServiceBackend referencing a Service whose EndpointSlice (in the API) scales 1 -> 3 -> 0
    -> 1: Envoy's endpoints follow, each change as an EDS update only (the cluster's version and the
    CDS/LDS/RDS counters unchanged), and requests reach exactly the ready pods."""
    async with pods() as (pod_port, _):
        listen = free_port()
        text = gateway(port=listen).replace("gateway.envoyproxy.io/gatewayclass-controller", OURS)
        apply_yaml(api, text + route("r", {"gpt-test": "llm"}) + "---\n" + AI_SERVICE_BACKEND + "---\n" + SERVICE)
        apply_yaml(api, endpoint_slice(["127.0.0.1"], pod_port))
        async with _served(api, tmp_path, listen) as (envoy, client):
            await until(lambda: envoy_endpoints(envoy) == ["127.0.0.1"], "the first pod in Envoy")
            assert await answered_by(client, 3) == {"pod-127.0.0.1"}
            cluster_before, counters_before = cluster_state(envoy), update_counters(envoy)
            for addresses in (list(PODS), [], ["127.0.0.3"]):
                apply_yaml(api, endpoint_slice(addresses, pod_port))
                await until(lambda a=addresses: envoy_endpoints(envoy) == a, f"Envoy to have endpoints {addresses}")
                if addresses:
                    assert await answered_by(client, 4 * len(addresses)) == {f"pod-{a}" for a in addresses}
                else:
                    with pytest.raises(openai.APIStatusError) as caught:
                        await _chat(client, "gpt-test")
                    assert caught.value.status_code == 503
                assert cluster_state(envoy) == cluster_before
                assert update_counters(envoy) == counters_before


@asynccontextmanager
async def _served(
    api: KubeAPIServer, tmp_path: Path, listen: int
) -> AsyncIterator[tuple[EnvoyProcess, openai.AsyncOpenAI]]:
    """The control plane on the API's objects (ready), an Envoy of default/gw and an OpenAI client of
    its listener on `listen`; all stopped after."""
    plane, health = _plane(api, tmp_path)
    envoy = None
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{listen}/v1", api_key="client", max_retries=0)
    try:
        plane.start()
        await until(lambda: _ready(health) == 200, "/readyz")
        envoy = await _envoy(api, plane, tmp_path)
        yield envoy, client
    finally:
        await client.close()
        if envoy is not None:
            envoy.stop()
        plane.stop()


async def test_a_route_to_an_inference_pool_asks_the_picker_its_service_points_at(
    api: KubeAPIServer, tmp_path: Path
) -> None:
    """An AIGatewayRoute to an InferencePool (in the API): each request reaches the pod the pool's
    endpoint picker (aigw_fakes.endpoint_picker, a stand-in for the Inference Extension's EPP) picked;
    when the picker Service's EndpointSlice points at another picker (a new EPP pod), requests ask
    that one: the control plane keeps the picker's Service and follows its slices."""
    async with pods() as (pod_port, _):
        every_pod = [f"{a}:{pod_port}" for a in PODS]
        first = await FakeEndpointPicker(every_pod[:1], server_name="llama-epp.default.svc").start()
        second = await FakeEndpointPicker(every_pod[2:], server_name="llama-epp.default.svc").start()
        listen = free_port()
        text = gateway(port=listen).replace("gateway.envoyproxy.io/gatewayclass-controller", OURS)
        apply_yaml(api, text + pool_route("r", "llama", "llama") + inference_pool("llama", first.port))
        try:
            async with _served(api, tmp_path, listen) as (_, client):
                assert await _wait_serves(client, "llama"), "the pool's model not served"
                assert await answered_by(client, 3, "llama") == {"pod-127.0.0.1"}
                assert first.picks and all(p.model == "llama" for p in first.picks)
                # The pool's status: an entry for our Gateway, in the Inference Extension's shape.
                parents = await until(lambda: _pool_parents(api), "the pool's status")
                assert [p["parentRef"]["name"] for p in parents] == ["gw"]
                assert {c["type"]: c["status"] for c in parents[0]["conditions"]} == {
                    "Accepted": "True",
                    "ResolvedRefs": "True",
                }
                apply_yaml(api, inference_pool("llama", second.port).split("---", 2)[2])  # the Service and its slice
                assert await _wait_answered_by_second(client, second), "no request asked the new picker"
                assert await answered_by(client, 3, "llama") == {"pod-127.0.0.3"}
                # The route gone, no Gateway of ours uses the pool: our entry is removed.
                api.delete("AIGatewayRoute", "default", "r")
                await until(lambda: _pool_parents(api) == [], "the pool's parents emptied")
        finally:
            await first.stop()
            await second.stop()


def _pool_parents(api: KubeAPIServer) -> Any:
    """The status.parents of the InferencePool default/llama in the API (None: none yet)."""
    return ((api.get("InferencePool", "default", "llama") or {}).get("status") or {}).get("parents")


async def _wait_answered_by_second(client: openai.AsyncOpenAI, second: FakeEndpointPicker) -> bool:
    """Whether a request asks the second picker within 20 seconds."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not second.picks:
        await _serves(client, "llama")
        await asyncio.sleep(0.2)
    return bool(second.picks)


async def test_an_envoy_that_rejects_the_configuration_shows_in_the_gateways_programmed_condition(
    api: KubeAPIServer, tmp_path: Path
) -> None:
    """Envoy NACKs a listener it cannot bind (its port is taken): the Gateway's Programmed turns
    False, reason Invalid, naming the node, the listener (LDS) and Envoy's error; a fix makes it True."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    apply_yaml(api, gateway(port=port).replace("gateway.envoyproxy.io/gatewayclass-controller", OURS))
    apply_yaml(api, route("r", {"gpt-a": "llm"}) + backend("llm", 9))
    plane, health = _plane(api, tmp_path)
    envoy = None
    try:
        plane.start()
        await until(lambda: _ready(health) == 200, "/readyz")
        envoy = await _envoy(api, plane, tmp_path, node_id="edge-7")
        programmed = await until(
            lambda: (c := _conditions(api, "Gateway", "gw").get("Programmed", {})).get("reason") == "Invalid" and c,
            "Programmed=False for the rejected listener",
        )
        assert programmed["status"] == "False"
        assert programmed["message"].startswith(f"Envoy edge-7 rejected LDS default/gw/{port}: "), programmed
        assert "Address already in use" in programmed["message"]
        taken.close()
        free = free_port()
        apply_yaml(api, gateway(port=free).replace("gateway.envoyproxy.io/gatewayclass-controller", OURS))
        await until(lambda: _conditions(api, "Gateway", "gw")["Programmed"]["status"] == "True", "Programmed again")
    finally:
        taken.close()
        if envoy is not None:
            envoy.stop()
        plane.stop()


def _ads_refusal(port: int, ca: str, fleet: str, token: str | None = None) -> tuple[grpc.StatusCode, str]:
    """What the control plane answers a raw ADS client over its TLS (verified against the published
    CA), with or without a ServiceAccount token: the status code and details of the refusal."""
    node = base_pb2.Node(id="intruder", cluster=fleet)
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.secure_channel(f"localhost:{port}", grpc.ssl_channel_credentials(ca.encode())) as channel:
        stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
            iter([discovery_pb2.DiscoveryRequest(node=node, type_url=type_urls.SECRET)]), timeout=5, metadata=metadata
        )
        with pytest.raises(grpc.RpcError) as refused:
            for response in stream:
                raise AssertionError(f"sent {len(response.resources)} {response.type_url} resources")
    return refused.value.code(), refused.value.details() or ""


async def test_an_https_gateways_key_goes_only_to_an_envoy_whose_service_account_may_get_its_secrets(
    api: KubeAPIServer, tmp_path: Path
) -> None:
    """An HTTPS Gateway (its listener's certificate and private key, a backend key: SDS secrets):
    an Envoy that proves ServiceAccount default/envoy, which a Role lets get both Secrets, gets the
    fleet and serves the openai SDK over TLS; a peer without a token (an anonymous TLS client dialling
    loopback, as a `kubectl port-forward` arrives) and a token of default/nobody (no RBAC on the
    Secrets) are refused before anything is sent; CSDS tells an anonymous peer nothing."""
    fake = await OpenAIFake(api_key=KEY, name="llm").start()
    gateway_ca = CertificateAuthority()
    leaf = gateway_ca.issue("gateway", dns=("localhost",))
    https = free_port()
    listener = f"    - {{name: https, protocol: HTTPS, port: {https}, tls: {{certificateRefs: [{{name: gw-cert}}]}}}}"
    text = gateway(port=free_port(), extra_listeners=listener).replace(
        "gateway.envoyproxy.io/gatewayclass-controller", OURS
    )
    certificate = {"tls.crt": leaf.cert, "tls.key": leaf.key}
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "stringData": certificate}
    apply_yaml(api, text + route("r", {"gpt-a": "llm"}) + backend("llm", fake.port) + api_key("llm", KEY))
    api.apply({**secret, "metadata": {"name": "gw-cert", "namespace": "default"}})
    grant_secrets(api, "default", "envoy", ["gw-cert", "llm-key"])
    plane, health = _plane(api, tmp_path)
    envoy = None
    verify = ssl.create_default_context(cadata=gateway_ca.pem)
    client = openai.AsyncOpenAI(
        base_url=f"https://localhost:{https}/v1",
        api_key="client",
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(verify=verify),
    )
    try:
        plane.start()
        await until(lambda: _ready(health) == 200, "/readyz")
        envoy = await _envoy(api, plane, tmp_path)
        assert await _chat(client, "gpt-a")
        xds_ca = (tmp_path / "ca.crt").read_text()

        code, details = await asyncio.to_thread(_ads_refusal, plane.port, xds_ca, "default/gw")
        assert code == grpc.StatusCode.PERMISSION_DENIED, details
        assert "anonymous may not receive it" in details
        nobody = api.issue_token("default", "nobody")
        code, details = await asyncio.to_thread(_ads_refusal, plane.port, xds_ca, "default/gw", nobody)
        assert code == grpc.StatusCode.PERMISSION_DENIED, details
        assert "give ServiceAccount default/nobody RBAC `get` on the Secrets of Gateway default/gw" in details
        with grpc.secure_channel(f"localhost:{plane.port}", grpc.ssl_channel_credentials(xds_ca.encode())) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel).FetchClientStatus(
                    csds_pb2.ClientStatusRequest(), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert await _chat(client, "gpt-a")  # the refusals touched nothing of the authorized Envoy's
        log = plane.log.read_text()
        assert "PRIVATE KEY" not in log and KEY not in log and nobody not in log
        assert "BEGIN PRIVATE KEY" not in json.dumps(envoy.config_dump())
    finally:
        await client.close()
        if envoy is not None:
            envoy.stop()
        plane.stop()
        await fake.stop()


async def test_an_mcproutes_external_authorization_service_is_its_services_pods(
    api: KubeAPIServer, tmp_path: Path
) -> None:
    """An MCPRoute whose extAuth names a Service without a kind (Gateway API's default): the control
    plane holds that Service and its EndpointSlice (the authorization service's pod, ExtAuthzFake, a
    stand-in), and Envoy asks it before the MCP proxy; the official mcp SDK's client calls a tool."""
    authz = await ExtAuthzFake().start()
    try:
        async with served(whoami_server().streamable_http_app(json_response=True)) as url:
            mcp_port = int(url.rsplit(":", 1)[1].split("/")[0])
            listen = free_port()
            text = gateway(port=listen).replace("gateway.envoyproxy.io/gatewayclass-controller", OURS)
            ext_auth = "\n    extAuth:\n      grpc: {backendRef: {name: authz, port: 9191}}"  # a Service: no kind
            service = _AUTHZ_SERVICE.format(auth_port=authz.port)
            apply_yaml(api, text + mcp_route(mcp_port, "notes", ext_auth, service, (USER_HEADER,)))
            async with _served(api, tmp_path, listen):
                mcp_url = f"http://127.0.0.1:{listen}/mcp"
                statuses = []
                for _ in range(200):  # the route reaches Envoy: refused (403) by the service, not a 404
                    statuses.append(await _initialize_status(mcp_url))
                    if statuses[-1] == 403:
                        break
                    await asyncio.sleep(0.1)
                assert statuses[-1] == 403 and authz.checks, statuses[-5:]
                async with (
                    httpx2.AsyncClient(timeout=30, headers={ACCESS_HEADER: "letmein"}) as http,
                    streamable_http_client(mcp_url, http_client=http) as (read, write),
                    ClientSession(read, write) as session,
                ):
                    await session.initialize()
                    result = await session.call_tool("notes__whoami", {})
                assert result.content[0].text == "letmein"  # type: ignore[union-attr]
                assert authz.checks and authz.checks[-1].path == "/mcp"
    finally:
        await authz.stop()


async def _initialize_status(url: str) -> int:
    """The status of an initialize without the access header (0: no answer)."""
    try:
        async with httpx2.AsyncClient(timeout=5) as http:
            answer = await http.post(
                url,
                json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": HELLO},
                headers={"accept": "application/json, text/event-stream"},
            )
    except httpx2.HTTPError:
        return 0
    return answer.status_code


# The authorization service's Service and the EndpointSlice of its one pod.
_AUTHZ_SERVICE = """---
apiVersion: v1
kind: Service
metadata: {{name: authz, namespace: default}}
spec: {{ports: [{{name: grpc, port: 9191, protocol: TCP}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: authz-x1, namespace: default, labels: {{kubernetes.io/service-name: authz}}}}
addressType: IPv4
ports: [{{name: grpc, port: {auth_port}, protocol: TCP}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
"""
