"""The Kubernetes source and the leader election against the EMULATED API server
(fakes/aigw_fakes/kube_apiserver.py, a stand-in: no kube-apiserver can run on these machines; it
implements list/watch, resourceVersions, 410 Gone, RBAC refusals and Leases as a real one does)."""

from __future__ import annotations

import asyncio
import functools
import time

import pytest
import structlog

from aigw_fakes.kube_apiserver import KubeAPIServer
from aigw_xds.keys import ResourceKey
from aigw_xds.kubernetes.api import KubeAPI
from aigw_xds.kubernetes.leader import LeaderElector
from aigw_xds.resources import ResourceSet
from aigw_xds.sources.kubernetes import KubernetesSource, references
from tests.e2e.harness.processes import until as _until
from tests.kube_api import apply_yaml
from tests.resource_text import api_key, backend, gateway, route

until = functools.partial(_until, timeout=10.0)  # what the API server does is quick to show

CONTROLLER = "gateway.envoyproxy.io/gatewayclass-controller"  # what tests/resource_text's GatewayClass names


@pytest.fixture
def server(kube_api: KubeAPIServer) -> KubeAPIServer:
    return kube_api


def secret(name: str, value: str = "x") -> str:
    metadata = f"{{name: {name}, namespace: default}}"
    return f"---\napiVersion: v1\nkind: Secret\nmetadata: {metadata}\nstringData: {{k: {value}}}\n"


class Following:
    """A started source whose watch() keeps `latest` current."""

    def __init__(self, source: KubernetesSource) -> None:
        self.source = source
        self.latest: ResourceSet | None = None
        self.history: list[ResourceSet] = []  # every set watch() delivered
        self.stop = asyncio.Event()

    async def __aenter__(self) -> Following:
        await self.source.start()
        self.latest = self.source.load()

        async def changed(resources: ResourceSet) -> None:
            self.latest = resources
            self.history.append(resources)

        self.task = asyncio.create_task(self.source.watch(changed, debounce_ms=20, stop=self.stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        self.task.cancel()
        self.source.stop()

    def has(self, kind: str, name: str, namespace: str = "default") -> bool:
        return self.latest is not None and ResourceKey(kind, namespace, name) in self.latest.items


async def test_only_referenced_secrets_are_kept_and_a_new_reference_fetches_its_secret(
    server: KubeAPIServer, kube: KubeAPI
) -> None:
    apply_yaml(server, gateway() + route("r", {"m": "b"}) + backend("b", 8000) + api_key("b"))
    for i in range(30):
        apply_yaml(server, secret(f"unrelated-{i}"))
    async with Following(KubernetesSource(kube, controller_name=CONTROLLER)) as following:
        assert following.has("Secret", "b-key")
        assert not any(following.has("Secret", f"unrelated-{i}") for i in range(30))
        held = [k for k in following.source._objects if k.kind == "Secret" and following.source._objects[k].content]
        assert held == [ResourceKey("Secret", "default", "b-key")]
        # A policy that starts referencing one of them: it is fetched and compiled in.
        apply_yaml(server, backend("c", 8001) + api_key("c").replace("name: c-key}", "name: unrelated-7}"))
        await until(lambda: following.has("Secret", "unrelated-7"), "the newly referenced Secret")
        # A Secret nobody references any more is forgotten.
        server.delete("BackendSecurityPolicy", "default", "b-key")
        await until(lambda: not following.has("Secret", "b-key"), "the unreferenced Secret to go")


async def test_a_set_with_a_new_reference_to_an_existing_secret_is_delivered_only_with_that_secret(
    server: KubeAPIServer, kube: KubeAPI
) -> None:
    """The Secret is there, known by name only: the set that compiles the policy's new reference
    waits for its fetch. (Delivered before it, the reference compiled as not found, and Envoys were
    sent the configuration without the backend for the moment the fetch took: a burst of 503s.)"""
    spare_secret = secret("spare").replace("{k: x}", "{apiKey: sk-spare}")
    apply_yaml(server, gateway() + route("r", {"m": "b"}) + backend("b", 8000) + api_key("b") + spare_secret)
    async with Following(KubernetesSource(kube, controller_name=CONTROLLER)) as following:
        assert not following.has("Secret", "spare")
        apply_yaml(server, api_key("b").replace("name: b-key}", "name: spare}"))
        await until(lambda: following.has("Secret", "spare"), "the newly referenced Secret")
        policy = ResourceKey("BackendSecurityPolicy", "default", "b-key")
        spare = ResourceKey("Secret", "default", "spare")
        for delivered in following.history:
            loaded = delivered.items.get(policy)
            if loaded is not None and loaded.resource.spec.apiKey.secretRef.name == "spare":
                assert spare in delivered.items


async def test_gateways_of_other_controllers_are_left_out(server: KubeAPIServer, kube: KubeAPI) -> None:
    theirs = gateway(name="theirs").replace("aigw", "other").replace(CONTROLLER, "example.com/other")
    apply_yaml(server, gateway() + "---\n" + theirs)
    async with Following(KubernetesSource(kube, controller_name=CONTROLLER)) as following:
        assert following.has("Gateway", "gw") and following.has("GatewayClass", "aigw")
        assert not following.has("Gateway", "theirs") and not following.has("GatewayClass", "other")


async def test_a_status_write_does_not_recompile_and_a_compacted_watch_relists_without_losing_anything(
    server: KubeAPIServer, kube: KubeAPI
) -> None:
    apply_yaml(server, gateway() + route("r", {"m": "b"}) + backend("b", 8000))
    async with Following(KubernetesSource(kube, controller_name=CONTROLLER)) as following:
        first = following.latest
        server.set_status("AIGatewayRoute", "default", "r", {"conditions": []})
        await asyncio.sleep(0.5)
        assert following.latest is first, "a status-only change must not produce a new resource set"
        # The API server goes away; meanwhile objects change and its history is compacted, so the
        # source's watches resume from a version that is gone: 410, then a new list.
        server.stop()
        apply_yaml(server, route("r2", {"m2": "b"}))
        server.delete("AIGatewayRoute", "default", "r")
        server.compact()
        server.clear_request_log()
        server.start()
        await until(lambda: following.has("AIGatewayRoute", "r2"), "the route created while away", timeout=20)
        await until(lambda: not following.has("AIGatewayRoute", "r"), "the route deleted while away")
        assert following.has("Gateway", "gw") and following.has("AIServiceBackend", "b")

        def requests() -> list[tuple[str, int]]:
            return [(e.verb, e.status) for e in server.request_log if e.resource == "aigatewayroutes"]

        # Polled: on a loaded machine the new watch may be logged after the events it brought.
        await until(lambda: {("watch", 200), ("list", 200)} <= set(requests()), "a list and a new watch")


async def test_a_forbidden_kind_is_one_line_naming_it_and_the_rest_is_served(
    server: KubeAPIServer, kube: KubeAPI
) -> None:
    server.forbid("list", "", "secrets")
    apply_yaml(server, gateway() + route("r", {"m": "b"}) + backend("b", 8000))
    with structlog.testing.capture_logs() as logs:
        async with Following(KubernetesSource(kube, controller_name=CONTROLLER)) as following:
            assert following.has("AIGatewayRoute", "r")
            await asyncio.sleep(0.3)
    missing = [e for e in logs if e["event"] == "kubernetes_permission_missing"]
    assert len(missing) == 1 and missing[0]["kind"] == "Secret"
    assert 'cannot list resource "secrets"' in missing[0]["error"]


async def test_one_leader_at_a_time_and_a_released_lease_is_taken_at_once(kube: KubeAPI) -> None:
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    # A long lease: taking over well within it shows the release, with room for a slow machine.
    timings = {"lease_duration": 30.0, "renew_deadline": 1.5, "retry_period": 0.2}
    a = LeaderElector(kube, "aigw-system", identity="a", **timings)
    b = LeaderElector(kube, "aigw-system", identity="b", **timings)
    task_a = asyncio.create_task(a.run(stop_a))
    await until(lambda: a.is_leader, "a to lead")
    task_b = asyncio.create_task(b.run(stop_b))
    await asyncio.sleep(1.0)
    assert a.is_leader and not b.is_leader
    stop_a.set()
    await task_a  # releases the Lease
    started = time.monotonic()
    await until(lambda: b.is_leader, "b to take over")
    assert time.monotonic() - started < 15.0, "a released Lease is taken without waiting for it to expire"
    lease = kube.get("/apis/coordination.k8s.io/v1/namespaces/aigw-system/leases/aigw-xds")
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] >= 1
    stop_b.set()
    await task_b


async def test_a_leader_that_cannot_renew_stops_leading_before_another_may_take_over(
    server: KubeAPIServer, kube: KubeAPI
) -> None:
    stop = asyncio.Event()
    leader = LeaderElector(kube, "aigw-system", identity="a", lease_duration=30.0, renew_deadline=1.0, retry_period=0.2)
    task = asyncio.create_task(leader.run(stop))
    await until(lambda: leader.is_leader, "a to lead")
    with structlog.testing.capture_logs() as logs:
        server.stop()
        started = time.monotonic()
        await until(lambda: not leader.is_leader, "a to step down")
        assert time.monotonic() - started < 15.0, "it must step down well within the lease duration"
        await asyncio.sleep(1.0)  # five more retries while away
        server.start()
        await until(lambda: leader.is_leader, "a to lead again once the API is back")
    stop.set()
    await task
    # One line per outage, and one when it ends (a platform team's trial counted 38 in 20 s).
    said = [e["event"] for e in logs if e["event"].startswith("leader_election")]
    assert said == ["leader_election_failed", "leader_election_recovered"], said


async def test_watch_namespaces_reads_only_those_namespaces(server: KubeAPIServer, kube: KubeAPI) -> None:
    for namespace in ("team-a", "team-b", "team-c"):
        apply_yaml(server, gateway(f"gw-{namespace}", namespace=namespace) + route("r", {"m": "b"}, f"gw-{namespace}",
              namespace) + backend("b", 8000, namespace=namespace))  # fmt: skip
    server.clear_request_log()
    source = KubernetesSource(kube, namespaces=("team-a", "team-c"), controller_name=CONTROLLER)
    async with Following(source) as following:
        assert following.has("Gateway", "gw-team-a", "team-a") and following.has("Gateway", "gw-team-c", "team-c")
        assert not following.has("Gateway", "gw-team-b", "team-b")
        assert following.has("GatewayClass", "aigw")  # cluster-scoped: read whatever the namespaces
        apply_yaml(
            server, route("r2", {"m2": "b"}, "gw-team-b", "team-b") + route("r2", {"m2": "b"}, "gw-team-a", "team-a")
        )
        await until(lambda: following.has("AIGatewayRoute", "r2", "team-a"), "the new route in team-a")
        assert not following.has("AIGatewayRoute", "r2", "team-b")
    namespaced = {e.namespace for e in server.request_log if e.resource == "aigatewayroutes"}
    assert namespaced == {"team-a", "team-c"}, "no cluster-wide list or watch of a namespaced kind"


async def test_services_and_endpointslices_are_kept_only_for_referenced_services(
    server: KubeAPIServer, kube: KubeAPI
) -> None:
    """Pods churn EndpointSlices all day: those of Services no AIServiceBackend references neither
    stay in memory nor cause a recompile; a Service that becomes referenced brings its slices."""

    def service(name: str) -> str:
        return f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n" \
            "spec: {ports: [{name: http, port: 80}]}\n"  # fmt: skip

    def endpoint_slice(service_name: str, address: str) -> str:
        return f"""---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {service_name}-x, namespace: default, labels: {{kubernetes.io/service-name: {service_name}}}}}
addressType: IPv4
ports: [{{name: http, port: 8000}}]
endpoints: [{{addresses: ["{address}"], conditions: {{ready: true}}}}]
"""

    aisb = """---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: llm, namespace: default}
spec:
  schema: {name: OpenAI}
  backendRef: {group: "", kind: Service, name: NAME, port: 80}
"""
    apply_yaml(server, gateway() + route("r", {"m": "llm"}) + aisb.replace("NAME", "used"))
    apply_yaml(server, service("used") + endpoint_slice("used", "10.0.0.1"))
    apply_yaml(server, service("other") + endpoint_slice("other", "10.0.0.9"))
    async with Following(KubernetesSource(kube, controller_name=CONTROLLER)) as following:
        assert following.has("Service", "used") and following.has("EndpointSlice", "used-x")
        assert not following.has("Service", "other") and not following.has("EndpointSlice", "other-x")
        first = following.latest
        apply_yaml(server, endpoint_slice("other", "10.0.0.10"))  # churn nobody uses
        await asyncio.sleep(0.5)
        assert following.latest is first, "an unreferenced EndpointSlice changing must not recompile"
        apply_yaml(server, aisb.replace("NAME", "other"))  # now the backend points at the other Service
        await until(lambda: following.has("EndpointSlice", "other-x"), "the newly referenced Service's slice")
        assert following.has("Service", "other")
        await until(lambda: not following.has("EndpointSlice", "used-x"), "the unreferenced slice to go")


def test_an_mcproutes_services_are_referenced_without_a_kind_too():
    """An MCPRoute's backends and its extAuth service are Services unless their kind says otherwise
    (Gateway API's default): each is held, with its EndpointSlices, as an AIServiceBackend's is."""
    mcp_route = {
        "kind": "MCPRoute",
        "spec": {
            "backendRefs": [
                {"name": "notes", "port": 80},
                {"name": "wiki", "kind": "Service", "port": 80},
                {"name": "remote", "kind": "Backend", "group": "gateway.envoyproxy.io"},
            ],
            "securityPolicy": {
                "extAuth": {
                    "grpc": {"backendRef": {"name": "opa", "port": 9191}},
                    "contextExtensions": [
                        {
                            "name": "t",
                            "type": "ValueRef",
                            "valueRef": {"kind": "ConfigMap", "name": "tenancy", "key": "t"},
                        }
                    ],
                },
            },
        },
    }
    http = {"backendRefs": [{"name": "authz", "namespace": "security", "port": 80}]}
    assert references(mcp_route, "tools") == {
        ("Service", "tools", "notes"),
        ("Service", "tools", "wiki"),
        ("Service", "tools", "opa"),
        ("ConfigMap", "tools", "tenancy"),
    }
    mcp_route["spec"]["securityPolicy"]["extAuth"] = {"http": http}  # type: ignore[index]
    assert ("Service", "security", "authz") in references(mcp_route, "tools")


async def test_unreferenced_secrets_coming_and_going_do_not_recompile(server: KubeAPIServer, kube: KubeAPI) -> None:
    apply_yaml(server, gateway() + route("r", {"m": "b"}) + backend("b", 8000))
    async with Following(KubernetesSource(kube, controller_name=CONTROLLER)) as following:
        first = following.latest
        apply_yaml(server, secret("someone-elses"))
        await asyncio.sleep(0.4)
        server.delete("Secret", "default", "someone-elses")
        await asyncio.sleep(0.4)
        assert following.latest is first, "a Secret nobody references must not cost a recompile"


async def test_the_watch_outlives_a_reload_that_fails(server: KubeAPIServer, kube: KubeAPI) -> None:
    """A reload that raises (a defect, not a configuration error, which is a diagnostic) is logged
    and the watch goes on: it used to end the watch task silently, and no later change applied."""
    apply_yaml(server, gateway() + route("r", {"m": "b"}) + backend("b", 8000))
    source = KubernetesSource(kube, controller_name=CONTROLLER)
    await source.start()
    seen: list[ResourceSet] = []

    async def on_change(resources: ResourceSet) -> None:
        seen.append(resources)
        if len(seen) == 1:
            raise RuntimeError("a defect in applying the change")

    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(source.watch(on_change, debounce_ms=20, stop=stop))
        try:
            apply_yaml(server, backend("c", 8001))
            await until(lambda: seen, "the first change")
            apply_yaml(server, backend("d", 8002))
            await until(lambda: len(seen) == 2, "the change after the failed one")
            assert not task.done()
            assert ResourceKey("Backend", "default", "d") in seen[1].items
        finally:
            stop.set()
            task.cancel()
            source.stop()
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["configuration_reload_failed"]
