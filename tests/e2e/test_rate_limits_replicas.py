"""Token budgets shared by control-plane replicas through one real Redis.

Every part is real except the provider: `aigw-xds serve` processes (each with its translator in
process, counting in a real redis-server with `--rate-limit-redis`), one real Envoy per replica,
and the official `openai` SDK as the client. The provider is the bundled OpenAI fake, a stand-in
that answers with usage figures the way the real API does (deterministic: the same request always
uses the same number of tokens).

Two Envoys of one Gateway on one host would share its listener port (Envoy binds it with
SO_REUSEPORT and the kernel picks which one takes a connection), so here each replica's Envoy serves
a Gateway of its own (gw-0, gw-1, on two ports) and the route has both as parents. The budget is the
route's (its counter is named after the policy and the route, never the Gateway), so both replicas
count the same counter, as two replicas of one Gateway on two hosts do.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from aigw_fakes import OpenAIFake
from aigw_xds.envoy.process import EnvoyProcess
from aigw_xds.processes import stop_process
from tests.e2e.harness import resources
from tests.e2e.harness.envoy import launch_envoy, listener_active
from tests.e2e.harness.processes import PortTaken, die_with_parent, free_port, json_lines
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

PROVIDER_KEY = "sk-replicas-openai"
LIMITED = "gpt-test"  # the model of the route under the budget
FREE = "gpt-free"  # the model of a route without one
TENANT = "tenant-a"
DAY = 86400
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def gateway_documents(ports: list[int]) -> str:
    """A GatewayClass and one Gateway per port: gw-0, gw-1, ..."""
    documents = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: aigw}
spec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}
"""
    for index, port in enumerate(ports):
        documents += f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw-{index}, namespace: {resources.NAMESPACE}}}
spec:
  gatewayClassName: aigw
  listeners:
    - {{name: http, protocol: HTTP, port: {port}}}
"""
    return documents


def route_document(name: str, model: str, gateways: int) -> str:
    """An AIGatewayRoute of every Gateway sending `model` to the OpenAI fake, with the total-token cost."""
    parents = "\n".join(
        f"    - {{name: gw-{i}, kind: Gateway, group: gateway.networking.k8s.io}}" for i in range(gateways)
    )
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: {name}, namespace: {resources.NAMESPACE}}}
spec:
  parentRefs:
{parents}
  llmRequestCosts: [{{metadataKey: llm_total_token, type: TotalToken}}]
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {model}}}]}}]
      backendRefs: [{{name: oai}}]
"""


def daily_token_budget(tokens: int, local: str = "") -> str:
    """A BackendTrafficPolicy on the route `chat`: `tokens` total tokens a day per x-tenant-id, and
    `local` (its rateLimit.local rules, YAML indented for their place)."""
    return f"""
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: tokens, namespace: {resources.NAMESPACE}}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: chat}}]
  rateLimit:
    global:
      rules:
        - clientSelectors: [{{headers: [{{name: x-tenant-id, type: Distinct}}]}}]
          limit: {{requests: {tokens}, unit: Day}}
          cost:
            request: {{from: Number, number: 0}}
            response: {{from: Metadata, metadata: {{namespace: io.envoy.ai_gateway, key: llm_total_token}}}}
{local}"""


async def clear_of_window_end(margin: float = 180.0) -> None:
    """The budgets count in fixed UTC days: a test that ran across midnight would see its counter start
    again from zero. Within `margin` seconds of midnight, wait for the new day (rarely: 0.2 % of runs)."""
    left = DAY - time.time() % DAY
    if left < margin:
        await asyncio.sleep(left + 1)


class Replica:
    """One `aigw-xds serve` process (translator in process, one worker) with a JSON log of its own."""

    def __init__(self, index: int, config: Path, workdir: Path, redis_url: str, fail_mode: str) -> None:
        self.index = index
        self.xds_port = free_port()
        self.translator_port = free_port()
        self.log = workdir / f"replica-{index}.log"
        # --log-level info: the translator logs each request at debug, which costs more CPU than the
        # request; the rate-limit store's lines are warnings and infos.
        self.args = [
            sys.executable, "-m", "aigw_xds", "--log-format", "json", "--log-level", "info",
            "serve",
            "--config", str(config),
            "--listen", f"127.0.0.1:{self.xds_port}",
            "--translator-listen", f"127.0.0.1:{self.translator_port}",
            "--translator-address", f"127.0.0.1:{self.translator_port}",
            "--translator-workers", "1",
            "--rate-limit-redis", redis_url,
            "--rate-limit-fail-mode", fail_mode,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent
            )

    def ready(self) -> bool:
        """Its xDS and translator ports both accept connections (an error with its log if it exited)."""
        assert self.process is not None
        if self.process.poll() is not None:
            text = self.log.read_text(errors="replace")
            kind = PortTaken if "address already in use" in text else RuntimeError
            raise kind(f"replica {self.index} exited: {text[-3000:]}")
        for port in (self.xds_port, self.translator_port):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) != 0:
                    return False
        return True

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in json_lines(self.log) if e.get("event") == name]

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@dataclass
class Deployment:
    """`replicas` control planes on one configuration directory in `workdir`, all counting in one Redis,
    each with an Envoy of its own Gateway."""

    workdir: Path
    replicas: list[Replica]
    ports: list[int]  # listener port of each replica's Envoy (its Gateway's)
    envoys: list[EnvoyProcess] = field(default_factory=list)
    clients: list[openai.AsyncOpenAI] = field(default_factory=list)

    @classmethod
    def write(
        cls,
        workdir: Path,
        provider_port: int,
        redis: RedisServer,
        budget: int,
        replicas: int,
        fail_mode: str,
        local: str = "",
    ) -> Deployment:
        config = workdir / "config"
        config.mkdir(parents=True)
        ports = [free_port() for _ in range(replicas)]
        (config / "gateways.yaml").write_text(gateway_documents(ports))
        routes = route_document("chat", LIMITED, replicas) + route_document("free", FREE, replicas)
        (config / "routes.yaml").write_text(routes + daily_token_budget(budget, local))
        (config / "backend.yaml").write_text(
            resources.backend("oai", provider_port) + resources.api_key("oai", PROVIDER_KEY)
        )
        return cls(workdir, [Replica(i, config, workdir, redis.url, fail_mode) for i in range(replicas)], ports)

    async def start(self) -> None:
        """Until a first request through each Envoy is answered (PortTaken: a port picked for it was
        taken meanwhile by another test session)."""
        for replica in self.replicas:
            replica.start()
        for replica in self.replicas:
            await until(replica.ready, timeout=60, what=f"replica {replica.index} listening")
        for replica in self.replicas:
            workdir = self.workdir / f"envoy-{replica.index}"
            workdir.mkdir()
            fleet = f"{resources.NAMESPACE}/gw-{replica.index}"
            self.envoys.append(
                launch_envoy(
                    replica.xds_port, fleet, node_id=f"replica-{replica.index}", log_level="warning", workdir=workdir
                )
            )
        for envoy in self.envoys:
            try:
                await asyncio.to_thread(envoy.wait_ready)
            except RuntimeError as exc:  # it exited: its admin port was taken
                raise PortTaken(str(exc)) from exc
            await asyncio.to_thread(listener_active, envoy)
        for index in range(len(self.replicas)):  # without x-tenant-id: under no budget, counted nowhere
            await until(partial(served, self.client(index, tenant=None)), timeout=30, what=f"Envoy {index} serving")

    async def stop(self) -> None:
        for client in self.clients:
            await client.close()
        for envoy in self.envoys:
            envoy.stop()
        for replica in self.replicas:
            replica.stop()

    def client(self, index: int, tenant: str | None = TENANT) -> openai.AsyncOpenAI:
        """The official SDK pointed at replica `index`'s Envoy; with an x-tenant-id (budgets select by it)."""
        client = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{self.ports[index]}/v1",
            api_key="client-key",
            max_retries=0,
            default_headers={"x-tenant-id": tenant} if tenant else None,
        )
        self.clients.append(client)
        return client

    def events(self, name: str) -> list[list[dict[str, Any]]]:
        """Each replica's log lines of one event."""
        return [replica.events(name) for replica in self.replicas]


@contextlib.asynccontextmanager
async def deployment(
    workdir: Path,
    provider_port: int,
    redis: RedisServer,
    budget: int,
    replicas: int = 2,
    fail_mode: str = "open",
    local: str = "",
) -> AsyncIterator[Deployment]:
    """A Deployment (see there) under `budget` tokens a day per tenant on the route `chat` (and the
    policy's `local` rules), ready to serve."""
    for attempt in range(3):
        workdir_ = workdir / f"attempt-{attempt}"
        gw = Deployment.write(workdir_, provider_port, redis, budget, replicas, fail_mode, local)
        try:
            await gw.start()
            break
        except PortTaken:
            await gw.stop()
            if attempt == 2:
                raise
        except BaseException:
            await gw.stop()
            raise
    try:
        yield gw
    finally:
        await gw.stop()


async def served(client: openai.AsyncOpenAI) -> bool:
    try:
        await client.chat.completions.create(model=LIMITED, messages=HELLO)
    except (openai.APIConnectionError, openai.APIStatusError):
        return False
    return True


async def until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Polls `check` (a function, or one returning an awaitable) until it returns something true."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)


@dataclass(frozen=True)
class Outcome:
    """One request as the client saw it."""

    index: int
    envoy: int
    started: float  # time.monotonic()
    ended: float
    status: int
    tokens: int  # usage.total_tokens of an answer, 0 for an error
    body: Any = None  # the error body, for an error


async def ask(client: openai.AsyncOpenAI, index: int, envoy: int) -> Outcome:
    """One chat completion; max_tokens varies with the index (the fake truncates to it), so requests
    use different numbers of tokens and a counter cannot match the sum by counting requests."""
    started = time.monotonic()
    try:
        reply = await client.chat.completions.create(model=LIMITED, messages=HELLO, max_tokens=1 + index % 4)
    except openai.APIStatusError as error:
        return Outcome(index, envoy, started, time.monotonic(), error.status_code, 0, error.body)
    assert reply.usage is not None and reply.usage.total_tokens > 0
    return Outcome(index, envoy, started, time.monotonic(), 200, reply.usage.total_tokens)


async def traffic(
    clients: list[openai.AsyncOpenAI], indices: Iterator[int], concurrency: int, outcomes: list[Outcome]
) -> None:
    """`concurrency` workers sending request i to Envoy i % len(clients) (alternating) until `indices`
    runs out; each outcome appended as it comes."""

    async def worker() -> None:
        for index in indices:
            envoy = index % len(clients)
            outcomes.append(await ask(clients[envoy], index, envoy))

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())


def counters(redis: RedisServer) -> dict[str, int]:
    """The budget counters Redis holds (keys aigw:rl:*)."""
    with redis.client() as client:
        keys = sorted(client.keys("aigw:rl:*"))
        return {k.decode(): int(v) for k, v in zip(keys, client.mget(keys), strict=True)} if keys else {}


def counted(redis: RedisServer) -> int:
    return sum(counters(redis).values())


async def test_two_replicas_hold_a_shared_token_budget_within_one_percent(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """1,000 requests of one tenant alternating over two Envoys, each with its own replica, four at a
    time, under 8,000 total tokens a day: the tokens of the admitted answers reach the limit and pass
    it by at most 1 %; once one request was refused, every later one is (on both Envoys); Redis holds
    exactly the tokens the admitted answers used. The provider is the OpenAI fake, a stand-in."""
    limit = 8000  # the 1,000 requests would use about 8,700 tokens: 1 % is about 9 requests
    await clear_of_window_end()
    with OpenAIFake(api_key=PROVIDER_KEY) as fake:
        async with deployment(tmp_path, fake.port, redis_server, budget=limit) as gw:
            before = len(fake.requests)  # the warm-up requests, under no budget
            clients = [gw.client(0), gw.client(1)]
            outcomes: list[Outcome] = []
            await traffic(clients, iter(range(1000)), concurrency=4, outcomes=outcomes)

            assert {o.status for o in outcomes} == {200, 429}, sorted({o.status for o in outcomes})
            admitted = [o for o in outcomes if o.status == 200]
            refused = [o for o in outcomes if o.status == 429]
            spent = sum(o.tokens for o in admitted)
            assert limit <= spent <= limit * 1.01, f"{spent} tokens admitted under a limit of {limit}"
            assert len(fake.requests) - before == len(admitted)  # refused before the provider
            # The counters only grow within the window: once a refusal reached the client, no request
            # sent after it can be admitted, whichever Envoy it goes through.
            first_refusal = min(o.ended for o in refused)
            late = [o for o in admitted if o.started > first_refusal]
            assert not late, f"{len(late)} requests admitted after a refusal, e.g. {late[0]}"
            for envoy in (0, 1):
                assert any(o.envoy == envoy for o in admitted) and any(o.envoy == envoy for o in refused)
            assert all(o.body["code"] == "rate_limit_exceeded" for o in refused), refused[0].body

            # Charges land in the background once each answer's stream ends: wait for them, then Redis
            # holds one counter (one tenant, one day), the exact sum of the admitted answers' tokens.
            await until(lambda: counted(redis_server) >= spent, timeout=20, what=f"{spent} tokens counted")
            held = counters(redis_server)
            assert list(held.values()) == [spent], held


LOCAL_PER_TENANT = """    local:
      rules:
        - clientSelectors: [{headers: [{name: x-tenant-id, type: Distinct}]}]
          limit: {requests: 2, unit: Day}
"""


async def test_a_local_limit_counts_in_each_replica_and_never_in_the_shared_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two replicas sharing Redis for a policy's global token budget, whose local rule allows a tenant
    2 requests a day: each replica counts the local rule alone (2 through each Envoy, then 429 in
    OpenAI's shape naming the local rule), the global budget's tokens land in Redis, and Redis holds
    no local counter; with Redis killed, the local rule still refuses. The provider is the OpenAI fake,
    a stand-in."""
    await clear_of_window_end()
    with OpenAIFake(api_key=PROVIDER_KEY) as fake:
        async with deployment(tmp_path, fake.port, redis_server, budget=1_000_000, local=LOCAL_PER_TENANT) as gw:
            for index in (0, 1):
                client = gw.client(index)
                for _ in range(2):
                    assert (await client.chat.completions.create(model=LIMITED, messages=HELLO)).usage
                with pytest.raises(openai.RateLimitError) as refused:
                    await client.chat.completions.create(model=LIMITED, messages=HELLO)
                assert refused.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
                assert refused.value.response.headers["x-ratelimit-limit"] == "2, 2;w=86400"
            assert (await gw.client(0, tenant="tenant-b").chat.completions.create(model=LIMITED, messages=HELLO)).usage
            await until(lambda: counted(redis_server) > 0, timeout=20, what="the global budget's tokens counted")
            with redis_server.client() as redis:
                assert redis.keys("aigw:rl-local*") == []
                assert all(b"/local/" not in key for key in redis.keys("*"))
            # Redis gone (fail open): the global budget admits uncounted, the local rule still holds.
            redis_server.kill()
            client = gw.client(0, tenant="tenant-c")
            for _ in range(2):
                assert (await client.chat.completions.create(model=LIMITED, messages=HELLO)).usage
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(model=LIMITED, messages=HELLO)


async def test_redis_killed_mid_run_fails_open_then_counting_resumes(tmp_path: Path, redis_server: RedisServer) -> None:
    """Two replicas under a budget far from exhausted; Redis is killed (SIGKILL) while traffic runs over
    both Envoys, then started again on the same port. Every request is served throughout (fail open:
    no 5xx, no 429); each replica logs one `rate_limit_store_unreachable` line for the outage and one
    `rate_limit_store_recovered` line when Redis is back; the charges made during the outage are
    flushed into the new Redis and counting resumes. The provider is the OpenAI fake, a stand-in."""
    await clear_of_window_end()
    with OpenAIFake(api_key=PROVIDER_KEY) as fake:
        async with deployment(tmp_path, fake.port, redis_server, budget=10_000_000) as gw:
            clients = [gw.client(0), gw.client(1)]
            outcomes: list[Outcome] = []
            stop = False

            def indices() -> Iterator[int]:
                for index in itertools.count():
                    if stop:
                        return
                    yield index

            def completed_since(moment: float) -> int:
                return sum(o.started >= moment for o in outcomes)

            running = asyncio.create_task(traffic(clients, indices(), concurrency=4, outcomes=outcomes))
            try:
                await until(lambda: len(outcomes) >= 100 or running.done(), timeout=30, what="traffic flowing")
                # What the old Redis counted just before it dies (it keeps nothing: started without
                # persistence, it comes back empty).
                counted_before_kill = counted(redis_server)
                redis_server.kill()
                killed = time.monotonic()
                await until(
                    lambda: all(gw.events("rate_limit_store_unreachable")) or running.done(),
                    timeout=30,
                    what="each replica logging the outage",
                )
                await until(lambda: completed_since(killed) >= 50 or running.done(), timeout=30, what="outage traffic")
                redis_server.start()
                await until(
                    lambda: all(gw.events("rate_limit_store_recovered")) or running.done(),
                    timeout=30,
                    what="each replica logging the recovery",
                )
                recovered = time.monotonic()
                counted_at_recovery = counted(redis_server)
                await until(
                    lambda: completed_since(recovered) >= 50 or running.done(), timeout=30, what="traffic after"
                )
            finally:
                stop = True
                await running  # raises what a worker met (a connection error...)

            statuses = {o.status for o in outcomes}
            assert statuses == {200}, f"not all served while failing open: {sorted(statuses)}"
            assert completed_since(killed) - completed_since(recovered) >= 50  # some were served during the outage
            for name in ("rate_limit_store_unreachable", "rate_limit_store_recovered"):
                lines = gw.events(name)
                assert [len(replica) for replica in lines] == [1, 1], f"{name}: {lines}"
            for line in gw.events("rate_limit_store_recovered"):
                assert line[0]["charges_dropped"] == 0 and line[0]["charges_flushed"] >= 1, line

            # The restarted Redis is empty, so it counts what was charged from the kill on:
            # - every request that started after the kill, exactly once: charged into the new Redis
            #   directly, or kept by its replica while Redis was down and flushed on recovery;
            # - of the requests that started before it, those whose charge had not landed when the old
            #   counter was read (answers in flight at the kill, and charges still on their way), each
            #   at most once: either it reached the old Redis before it died (and is lost with it) or it
            #   failed and was kept and flushed. Those requests used sum(before) - counted_before_kill.
            after = sum(o.tokens for o in outcomes if o.started >= killed)
            in_flight_at_kill = sum(o.tokens for o in outcomes if o.started < killed) - counted_before_kill
            assert in_flight_at_kill >= 0
            await until(lambda: counted(redis_server) >= after, timeout=20, what=f"at least {after} tokens counted")
            final = counted(redis_server)
            assert after <= final <= after + in_flight_at_kill, (after, final, in_flight_at_kill)
            assert final > counted_at_recovery  # counting resumed after the recovery
            assert len(counters(redis_server)) == 1
            assert fake.requests  # the provider answered every one of them


async def test_fail_closed_refuses_budgeted_requests_while_redis_is_down(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """One replica with `--rate-limit-fail-mode closed`: while Redis is down, a request under a budget
    is refused with 503 in OpenAI's shape (it cannot be counted), a route without a budget still
    serves, and once Redis is back requests under the budget pass again. The provider is the OpenAI
    fake, a stand-in."""
    await clear_of_window_end()
    with OpenAIFake(api_key=PROVIDER_KEY) as fake:
        closed = deployment(tmp_path, fake.port, redis_server, budget=10_000_000, replicas=1, fail_mode="closed")
        async with closed as gw:
            client = gw.client(0)
            assert (await client.chat.completions.create(model=LIMITED, messages=HELLO)).usage

            redis_server.kill()
            served_before = len(fake.requests)
            with pytest.raises(openai.InternalServerError) as refused:
                await client.chat.completions.create(model=LIMITED, messages=HELLO)
            assert refused.value.status_code == 503
            assert refused.value.response.headers["retry-after"] == "1"
            error = refused.value.body
            assert isinstance(error, dict) and error["type"] == "server_error", error
            assert "rate limit store is unavailable" in error["message"]
            assert len(fake.requests) == served_before  # refused before the provider
            reply = await client.chat.completions.create(model=FREE, messages=HELLO)
            assert reply.usage is not None and reply.usage.total_tokens > 0

            redis_server.start()

            async def passes() -> bool:
                try:
                    await client.chat.completions.create(model=LIMITED, messages=HELLO)
                except openai.InternalServerError as exc:
                    assert exc.status_code == 503
                    return False
                return True

            await until(passes, timeout=30, what="requests under the budget admitted again", interval=0.1)
            assert [len(replica) for replica in gw.events("rate_limit_store_unreachable")] == [1]
            await until(lambda: gw.events("rate_limit_store_recovered")[0], timeout=10, what="recovery line")
            # Counting resumed: the request admitted after the recovery is charged in the new Redis.
            await until(lambda: counted(redis_server) > 0, timeout=10, what="the charge counted")
