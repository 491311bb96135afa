"""BackendTrafficPolicy healthCheck and loadBalancer through a real Envoy, with the official SDK.

Active HTTP health checks take a backend whose health endpoint fails out of the rotation before any
request reaches it (and back when it recovers), probing with the backend's own Host; passive ones
(outlier detection) eject a backend that keeps answering 5xx, so later requests go straight to the
next priority; a load balancer type keeps the backendRefs' weights, and a consistent hash sends one
session to one backend.

The providers are the bundled OpenAI fake (a stand-in for OpenAI's API), given a health endpoint
whose status the test sets (`/healthz`: a provider's own has no fixed path).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from aigw_fakes import OpenAIFake
from tests.e2e.harness import resources
from tests.e2e.harness.gateway import Gateway, run_gateway
from tests.e2e.harness.resources import Ref, Route, Rule

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "hello there"}]
KEY = "sk-health"


class CheckedFake(OpenAIFake):
    """The OpenAI fake with `GET /healthz` answering `health` (200 by default), recording the Host
    header of each probe."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(api_key=KEY, **kwargs)
        self.health = 200
        self.probe_hosts: list[str] = []

    @property
    def chats(self) -> int:
        """The chat requests it was sent (its probes are recorded too)."""
        return sum(r.path.endswith("/chat/completions") for r in self.requests)

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)
        app.router.add_get("/healthz", self._healthz)

    async def _healthz(self, request: web.Request) -> web.Response:
        self.probe_hosts.append(request.headers.get("host", ""))
        return web.Response(status=self.health, text="ok" if self.health == 200 else "down")


def documents(first: CheckedFake, second: CheckedFake, body: str, *, same_priority: bool = False) -> tuple[str, ...]:
    """Route "hc": model "m" to backend "first" (reached as localhost, priority 0), then "second"
    (priority 1, or 0 with `same_priority`: the two then share the traffic by weight)."""
    refs = [Ref("first"), Ref("second", priority=0 if same_priority else 1)]
    return (
        Route("hc", [Rule(["m"], refs)]).yaml(),
        resources.backend("first", first.port, hostname="localhost"),
        resources.api_key("first", KEY),
        resources.backend("second", second.port),
        resources.api_key("second", KEY),
        resources.traffic_policy("hc", body),
    )


async def host_health(gw: Gateway, port: int) -> list[str]:
    """Envoy's health flags of the rule's endpoint at `port` (admin /clusters)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{gw.envoy.admin_port}/clusters?format=json") as response,
    ):
        clusters = (await response.json())["cluster_statuses"]
    for cluster in clusters:
        if cluster["name"] != "default/hc/rule/0":
            continue
        for host in cluster.get("host_statuses", []):
            if host["address"]["socket_address"]["port_value"] == port:
                return [flag for flag, on in host["health_status"].items() if on is True] + [
                    host["health_status"].get("eds_health_status", "")
                ]
    return []


async def until(predicate: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def client(gw: Gateway, **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="client-key", max_retries=0, default_headers=headers)


ACTIVE = """
healthCheck:
  active:
    type: HTTP
    interval: 200ms
    timeout: 1s
    unhealthyThreshold: 1
    healthyThreshold: 1
    http: {path: /healthz}
"""


async def test_an_active_health_check_takes_a_failing_backend_out_before_a_request_reaches_it() -> None:
    """The first backend's health endpoint answers 503: Envoy marks it unhealthy and sends every
    request to the second priority, the first never getting one (no failed attempt, no retry).
    Healthy again, it gets the traffic back. Its probes carry its own host, not Envoy's default
    (the cluster's name, which no provider would answer)."""
    async with CheckedFake() as first, CheckedFake() as second:
        first.health = 503
        async with run_gateway(*documents(first, second, ACTIVE)) as gw:

            async def first_unhealthy() -> bool:
                return "failed_active_health_check" in await host_health(gw, first.port)

            await until(first_unhealthy, "the first backend marked unhealthy")
            for _ in range(3):
                reply = await client(gw).chat.completions.create(model="m", messages=HI)
                assert reply.choices[0].message.content == "Fake m reply to: hello there"
            assert first.chats == 0 and second.chats == 3
            first.health = 200

            async def first_healthy() -> bool:
                return "failed_active_health_check" not in await host_health(gw, first.port)

            await until(first_healthy, "the first backend healthy again")
            await client(gw).chat.completions.create(model="m", messages=HI)
            assert first.chats == 1 and second.chats == 3
        assert first.probe_hosts and set(first.probe_hosts) == {"localhost"}
        assert second.probe_hosts and set(second.probe_hosts) == {"127.0.0.1"}


@pytest.mark.parametrize("max_ejection", ["maxEjectionPercent: 100", "alwaysEjectOneEndpoint: true"])
async def test_a_passive_health_check_ejects_a_backend_that_keeps_failing(max_ejection: str) -> None:
    """The first backend answers 500 to every request: each request fails over to the second
    priority (the default failover) until two consecutive 5xx eject the first, after which requests
    go straight to the second. Envoy Gateway's default maxEjectionPercent (10) would eject none of
    two endpoints: the policy raises it, or asks for at least one to be ejected."""
    body = f"healthCheck: {{passive: {{consecutive5XxErrors: 2, baseEjectionTime: 60s, {max_ejection}}}}}"
    async with CheckedFake() as first, CheckedFake() as second:
        first.always_fail(500)
        async with run_gateway(*documents(first, second, body)) as gw:
            for _ in range(6):
                reply = await client(gw).chat.completions.create(model="m", messages=HI)
                assert reply.choices[0].message.content == "Fake m reply to: hello there"
            assert first.chats == 2 and second.chats == 6
            assert "failed_outlier_check" in await host_health(gw, first.port)


async def test_without_a_higher_max_ejection_percent_no_backend_of_two_is_ejected() -> None:
    """What the policy above avoids, as Envoy does it: with Envoy Gateway's default 10 %, ejecting
    one endpoint of two (50 %) is over the limit, so the failing backend keeps getting (and
    failing) the first attempt of every request (compile warns about it where a rule's endpoints
    are addresses; here one is a DNS name, whose addresses Envoy counts)."""
    body = "healthCheck: {passive: {consecutive5XxErrors: 2, baseEjectionTime: 60s}}"
    async with CheckedFake() as first, CheckedFake() as second:
        first.always_fail(500)
        async with run_gateway(*documents(first, second, body)) as gw:
            for _ in range(4):
                await client(gw).chat.completions.create(model="m", messages=HI)
            assert first.chats == 4 and second.chats == 4
            assert "failed_outlier_check" not in await host_health(gw, first.port)


async def test_a_load_balancer_type_keeps_the_weights_and_a_consistent_hash_keeps_a_session_on_one_backend() -> None:
    """Two backends of one priority, weight 1 each: under LeastRequest both take requests (the
    backendRefs' weights still split the traffic); under a ConsistentHash on `x-session`, each
    session's requests all reach one backend, and sessions spread over both."""
    async with CheckedFake() as first, CheckedFake() as second:
        async with run_gateway(
            *documents(first, second, "loadBalancer: {type: LeastRequest}", same_priority=True)
        ) as gw:
            for _ in range(20):
                await client(gw).chat.completions.create(model="m", messages=HI)
            assert first.chats + second.chats == 20
            assert first.chats >= 3 and second.chats >= 3
        first.reset()
        second.reset()
        hashing = "loadBalancer: {type: ConsistentHash, consistentHash: {type: Header, header: {name: x-session}}}"
        async with run_gateway(*documents(first, second, hashing, same_priority=True)) as gw:
            reached: dict[str, set[int]] = {}
            for session in range(16):
                for _ in range(3):
                    before = first.chats
                    await client(gw, **{"x-session": f"s{session}"}).chat.completions.create(model="m", messages=HI)
                    reached.setdefault(f"s{session}", set()).add(1 if first.chats > before else 2)
            assert all(len(backends) == 1 for backends in reached.values()), reached
            assert set().union(*reached.values()) == {1, 2}


class AccountHeadersFake(CheckedFake):
    """The fake, answering with the headers a provider sends about the gateway's account (OpenAI's
    organization and project, Anthropic's organization id) and a cookie of its own (Cloudflare's)."""

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)

        async def account_headers(_request: web.Request, response: web.StreamResponse) -> None:
            response.headers["openai-organization"] = "org-gateway-account"
            response.headers["openai-project"] = "proj_gateway"
            response.headers["anthropic-organization-id"] = "gateway-org-id"
            response.headers["set-cookie"] = "__cf_bm=provider-cookie; Path=/"

        app.on_response_prepare.append(account_headers)


async def test_what_a_provider_says_of_the_gateways_account_does_not_reach_the_client() -> None:
    """From a security review: the provider's organization and project ids and its cookies reached
    every client. They are removed from responses; where a ConsistentHash on a cookie makes one,
    Envoy's cookie reaches the client (Envoy adds it before the removal, so the provider's cookies
    then pass beside it)."""
    async with AccountHeadersFake() as first, AccountHeadersFake() as second:
        account = {"openai-organization", "openai-project", "anthropic-organization-id"}
        async with run_gateway(*documents(first, second, "loadBalancer: {type: RoundRobin}")) as gw:
            raw = await client(gw).chat.completions.with_raw_response.create(model="m", messages=HI)
            assert first.chats == 1 and raw.headers.get("x-request-id") is not None
            assert not account & set(raw.headers.keys()) and "set-cookie" not in raw.headers
        cookie = "{type: Cookie, cookie: {name: aigw-session, ttl: 1h}}"
        hashing = f"loadBalancer: {{type: ConsistentHash, consistentHash: {cookie}}}"
        async with run_gateway(*documents(first, second, hashing, same_priority=True)) as gw:
            raw = await client(gw).chat.completions.with_raw_response.create(model="m", messages=HI)
            assert not account & set(raw.headers.keys())
            cookies = raw.headers.get_list("set-cookie")
            assert any(c.startswith("aigw-session=") for c in cookies), cookies
