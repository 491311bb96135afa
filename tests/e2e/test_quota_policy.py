"""QuotaPolicy (per-model buckets by header, default bucket, shadow mode), quota failover, a stream the
client abandons, and Envoy AI Gateway's token_ratelimit example, through a real Envoy with the
official SDKs as clients.

The providers are the bundled fakes: stand-ins for OpenAI and Anthropic (not the real services) that
answer with usage figures the way the real APIs do, so every charge below is what a real answer of
that size would cost. Counters are read from the in-process translator's store
(`gw.translator.processor.budgets.counters`) where a test needs the exact figure; everything else is
what a client sees.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anthropic
import openai
import pytest
import structlog
from openai.types.chat import ChatCompletionMessageParam

from aigw_fakes import AnthropicFake, OpenAIFake
from aigw_translator.counters import window_bounds
from aigw_translator.limits import counter_key
from tests.e2e.harness import resources
from tests.e2e.harness.compat import run_compat
from tests.e2e.harness.gateway import Gateway, run_gateway
from tests.e2e.harness.resources import Ref, Route, Rule
from tests.e2e.test_token_rate_limits import settled, token_limit

pytestmark = pytest.mark.e2e

HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
OPENAI_KEY = "sk-quota-openai"
ANTHROPIC_KEY = "sk-quota-anthropic"
MODEL = "gpt-test"


def quota_policy(name: str, target: str, body: str) -> str:
    spec = "\n".join("  " + line for line in body.strip("\n").splitlines())
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: QuotaPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {target}}}]
{spec}
"""


def openai_client(url: str, **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="client-key", max_retries=0, default_headers=headers)


async def counter(gw: Gateway, budget_id: str, *values: str) -> int:
    """The current window's counter of one budget (by id) and distinct values, as the translator
    holds it."""
    budget = gw.translator.processor.runtime.rate_limits[budget_id]
    start, _ = window_bounds(budget.window, time.time())
    used = await gw.translator.processor.budgets.counters.read([counter_key(budget, values, start)])
    assert used is not None
    return used[0]


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


async def spend(gw: Gateway, client: openai.AsyncOpenAI, limit: int) -> tuple[int, int]:
    """Plain chats until the tokens they used reach `limit` (each is admitted while the counter is
    below it); (tokens used, requests answered)."""
    spent = answered = 0
    while spent < limit:
        reply = await client.chat.completions.create(model=MODEL, messages=HI)
        assert reply.usage is not None
        spent += reply.usage.total_tokens
        answered += 1
        await settled(gw)
    return spent, answered


async def refused(client: openai.AsyncOpenAI, model: str = MODEL) -> openai.RateLimitError:
    with pytest.raises(openai.RateLimitError) as raised:
        await client.chat.completions.create(model=model, messages=HI)
    return raised.value


def assert_openai_429(error: openai.RateLimitError, limit: int) -> None:
    response = error.response
    assert response.status_code == 429
    assert response.headers["x-ratelimit-limit"] == f"{limit}, {limit};w=3600"
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert 0 < int(response.headers["retry-after"]) <= 3600
    assert response.headers["retry-after"] == response.headers["x-ratelimit-reset"]
    body = response.json()
    assert body["error"]["code"] == "rate_limit_exceeded" and body["error"]["type"] == "rate_limit_error"
    assert f"rate limit exceeded: {limit} per hour used up" in body["error"]["message"]


# --------------------------------------------------------------------------------------------
# 1. Buckets by header


BUCKETS = f"""
perModelQuotas:
  - modelName: {MODEL}
    quota:
      defaultBucket: {{limit: 20, duration: 1h}}
      bucketRules:
        - clientSelectors: [{{headers: [{{name: x-team, value: a}}]}}]
          quota: {{limit: 40, duration: 1h}}
        - clientSelectors: [{{headers: [{{name: x-user, type: Distinct}}]}}]
          quota: {{limit: 30, duration: 1h}}
"""
GROUP = f"quota/default/qp/oai/model/{MODEL}"


def one_backend_under(fake: OpenAIFake, quotas: str) -> tuple[str, ...]:
    """Route "chat": MODEL to backend "oai" (the fake) under QuotaPolicy "qp" with `quotas`."""
    route = Route("chat", [Rule([MODEL], [Ref("oai")])])
    backend = (resources.backend("oai", fake.port), resources.api_key("oai", OPENAI_KEY))
    return (route.yaml(), *backend, quota_policy("qp", "oai", quotas))


async def test_quota_buckets_by_header_are_counted_apart_and_the_default_takes_the_rest() -> None:
    """An AIServiceBackend under a QuotaPolicy for the request's model (no modelNameOverride): x-team
    a has 40 tokens an hour, each distinct x-user 30, everyone else (the default bucket) 20. Each
    bucket admits requests while its own counter is below its limit and is charged only its own
    requests' tokens; once spent, the next request is a 429 in OpenAI's shape with x-ratelimit-* and
    retry-after, refused before the provider, while the other buckets still pass."""
    async with OpenAIFake(api_key=OPENAI_KEY) as fake, run_gateway(*one_backend_under(fake, BUCKETS)) as gw:
        url = gw.url
        # The default bucket (no x-team: a, no x-user) is spent first ...
        default_spent, _ = await spend(gw, openai_client(url), 20)
        assert await counter(gw, f"{GROUP}/default") == default_spent
        served = len(fake.requests)
        assert_openai_429(await refused(openai_client(url)), 20)
        assert_openai_429(await refused(openai_client(url, **{"x-team": "b"})), 20)  # x-team b: no rule
        assert len(fake.requests) == served  # refused before the provider

        # ... and the team's and each user's buckets are untouched by it.
        assert await counter(gw, f"{GROUP}/bucket/0") == 0
        team_spent, team_answered = await spend(gw, openai_client(url, **{"x-team": "a"}), 40)
        assert team_answered >= 2  # more than the default bucket's 20 tokens allowed
        assert await counter(gw, f"{GROUP}/bucket/0") == team_spent
        assert_openai_429(await refused(openai_client(url, **{"x-team": "a"})), 40)
        # The first rule that matches is the bucket: x-team a with an x-user is still the team's.
        assert_openai_429(await refused(openai_client(url, **{"x-team": "a", "x-user": "u1"})), 40)

        u1_spent, _ = await spend(gw, openai_client(url, **{"x-user": "u1"}), 30)
        assert await counter(gw, f"{GROUP}/bucket/1", "u1") == u1_spent
        assert_openai_429(await refused(openai_client(url, **{"x-user": "u1", "x-team": "b"})), 30)
        # Distinct: another user has a counter of its own.
        assert await counter(gw, f"{GROUP}/bucket/1", "u2") == 0
        reply = await openai_client(url, **{"x-user": "u2"}).chat.completions.create(model=MODEL, messages=HI)
        assert reply.usage is not None
        await settled(gw)
        assert await counter(gw, f"{GROUP}/bucket/1", "u2") == reply.usage.total_tokens
        # Nothing of the users' or team's spending reached the default bucket.
        assert await counter(gw, f"{GROUP}/default") == default_spent


# --------------------------------------------------------------------------------------------
# 2. Failover when a quota is spent


def two_priorities(primary: OpenAIFake, secondary: AnthropicFake) -> tuple[str, ...]:
    """Route "fo": model "m" to "primary" (OpenAI, priority 0, modelNameOverride gpt-test, a
    QuotaPolicy of 30 tokens an hour for that model) then "secondary" (Anthropic, priority 1,
    claude-test, a serviceQuota of 60 tokens an hour); route "direct": model "d" to "secondary"
    alone (the same backend, so the same quota counter)."""
    route = Route(
        "fo",
        [
            Rule(
                ["m"],
                [
                    Ref("primary", model_name_override=MODEL),
                    Ref("secondary", priority=1, model_name_override="claude-test"),
                ],
            )
        ],
    )
    direct = Route("direct", [Rule(["d"], [Ref("secondary", model_name_override="claude-test")])])
    primary_quota = f"perModelQuotas: [{{modelName: {MODEL}, quota: {{defaultBucket: {{limit: 30, duration: 1h}}}}}}]"
    return (
        route.yaml(),
        direct.yaml(),
        resources.backend("primary", primary.port),
        resources.api_key("primary", OPENAI_KEY),
        resources.backend("secondary", secondary.port, "Anthropic"),
        resources.api_key("secondary", ANTHROPIC_KEY, "AnthropicAPIKey"),
        quota_policy("primary-quota", "primary", primary_quota),
        quota_policy("secondary-quota", "secondary", "serviceQuota: {quota: {limit: 60, duration: 1h}}"),
    )


PRIMARY_QUOTA = f"quota/default/primary-quota/primary/model/{MODEL}/default"
SECONDARY_QUOTA = "quota/default/secondary-quota/secondary/service"


async def spend_at(gw: Gateway, client: openai.AsyncOpenAI, model: str, limit: int, answered_by: str) -> int:
    """Plain chats to `model` until `limit` tokens are used, each answered with `answered_by`."""
    spent = 0
    while spent < limit:
        reply = await client.chat.completions.create(model=model, messages=HI)
        assert reply.model == answered_by and reply.usage is not None
        spent += reply.usage.total_tokens
        await settled(gw)
    return spent


async def test_a_spent_quota_fails_over_to_the_next_priority() -> None:
    """Priority 0 answers until its quota is spent; then the router phase, which reads the quotas of
    the rule's priorities before Envoy routes the request again, sends it to the cluster of the
    remaining priority (Anthropic, another schema), which answers every request from then on in the
    OpenAI client's shape; priority 0 is never asked again. (A refusal by the per-attempt phase could
    not fail over: Envoy 1.40 sends an upstream filter's local reply straight to the client.)"""
    async with (
        OpenAIFake(api_key=OPENAI_KEY) as primary,
        AnthropicFake(api_key=ANTHROPIC_KEY) as secondary,
        run_gateway(*two_priorities(primary, secondary)) as gw,
    ):
        client = openai_client(gw.url)
        # a client cannot pick a priority itself: the header it sends is removed, also on a request
        # whose model the translator has to find (a body Envoy does not read as JSON)
        spent = 0
        for content_type in ("application/json", "text/plain"):
            forged = await client.chat.completions.create(
                model="m", messages=HI, extra_headers={"x-aigw-priority-floor": "1", "content-type": content_type}
            )
            assert forged.model != "claude-test" and len(secondary.requests) == 0
            assert forged.usage is not None
            spent += forged.usage.total_tokens
            await settled(gw)
        assert len(primary.requests) == 2
        spent += await spend_at(gw, client, "m", 30 - spent, MODEL)
        at_primary = len(primary.requests)
        assert at_primary >= 2 and len(secondary.requests) == 0
        assert await counter(gw, PRIMARY_QUOTA) == spent
        for answered in range(1, 4):
            reply = await client.chat.completions.create(model="m", messages=HI)
            assert reply.model == "claude-test"
            assert reply.choices[0].message.content == "Fake claude-test reply to: hello there"
            await settled(gw)
            assert len(primary.requests) == at_primary  # skipped, never sent
            assert len(secondary.requests) == answered
        # An endpoint the remaining priority cannot serve (Anthropic has no embeddings) is not sent
        # there: the client meets the spent quota's 429, which it may retry, not a 422 saying the
        # request can never succeed.
        with pytest.raises(openai.RateLimitError):
            await client.embeddings.create(model="m", input="hello there")
        assert (len(primary.requests), len(secondary.requests)) == (at_primary, 3)


async def test_a_skip_decided_for_one_rule_never_skips_another_rules_priority() -> None:
    """The router phase reads the quotas of the rule its stream opened on; a client can make that
    another rule than the one the request routes to at last (x-ai-eg-model names rule "m", whose
    priority 0 is spent; a text/plain body names model "y"). The skip it decided for "m" must not
    send the request past y's priority 0, whose quota has room: the floor header names m's backend,
    which none of y's floor routes matches."""
    async with (
        OpenAIFake(api_key=OPENAI_KEY) as primary,
        AnthropicFake(api_key=ANTHROPIC_KEY) as secondary,
        OpenAIFake(api_key=OPENAI_KEY) as other,
    ):
        refs = [Ref("y0", model_name_override="gpt-y0"), Ref("y1", priority=1, model_name_override="gpt-y1")]
        y_rule = Route("y", [Rule(["y"], refs)])
        documents = (
            *two_priorities(primary, secondary),
            y_rule.yaml(),
            resources.backend("y0", other.port),
            resources.api_key("y0", OPENAI_KEY),
            resources.backend("y1", other.port),
            resources.api_key("y1", OPENAI_KEY),
            quota_policy("y0-quota", "y0", "serviceQuota: {quota: {limit: 100000, duration: 1h}}"),
        )
        async with run_gateway(*documents) as gw:
            client = openai_client(gw.url)
            await spend_at(gw, client, "m", 30, MODEL)
            assert (await client.chat.completions.create(model="m", messages=HI)).model == "claude-test"
            await settled(gw)
            crossed = await client.chat.completions.create(
                model="y", messages=HI, extra_headers={"x-ai-eg-model": "m", "content-type": "text/plain"}
            )
            assert crossed.model == "gpt-y0"


async def test_every_priority_spent_is_a_429_in_the_clients_shape() -> None:
    """Priority 0's quota spent through the failover route, priority 1's through a route of its own
    (one backend, one quota): a request to the failover route is a 429 in the client's schema
    (OpenAI's error with x-ratelimit-* and retry-after, Anthropic's rate_limit_error), and neither
    provider is asked."""
    async with (
        OpenAIFake(api_key=OPENAI_KEY) as primary,
        AnthropicFake(api_key=ANTHROPIC_KEY) as secondary,
        run_gateway(*two_priorities(primary, secondary)) as gw,
    ):
        client = openai_client(gw.url)
        primary_spent = await spend_at(gw, client, "m", 30, MODEL)
        secondary_spent = await spend_at(gw, client, "d", 60, "claude-test")
        assert await counter(gw, PRIMARY_QUOTA) == primary_spent
        assert await counter(gw, SECONDARY_QUOTA) == secondary_spent
        served = len(primary.requests), len(secondary.requests)

        error = (await refused(client, "m")).response
        assert error.status_code == 429
        assert error.headers["x-ratelimit-remaining"] == "0"
        assert 0 < int(error.headers["retry-after"]) <= 3600
        body = error.json()
        assert body["error"]["code"] == "rate_limit_exceeded" and body["error"]["type"] == "rate_limit_error"
        assert_openai_429(await refused(client, "d"), 60)

        messages = anthropic.AsyncAnthropic(base_url=f"{gw.url}/anthropic", api_key="client-key", max_retries=0)
        with pytest.raises(anthropic.RateLimitError) as raised:
            await messages.messages.create(model="m", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
        assert raised.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert int(raised.value.response.headers["retry-after"]) > 0
        assert (len(primary.requests), len(secondary.requests)) == served


# --------------------------------------------------------------------------------------------
# 3. Shadow mode


SHADOW_WINDOW_S = 4
SHADOW = f"""
perModelQuotas:
  - modelName: {MODEL}
    quota:
      defaultBucket: {{limit: 100000, duration: 1h}}
      bucketRules:
        - clientSelectors: [{{headers: [{{name: x-user, type: Distinct}}]}}]
          quota: {{limit: 10, duration: {SHADOW_WINDOW_S}s}}
          shadowMode: true
"""


async def _start_of_a_window(seconds: int) -> None:
    """Until just after a window of `seconds` begins (windows are aligned on the epoch)."""
    await asyncio.sleep(seconds - time.time() % seconds + 0.05)


async def test_a_shadow_bucket_over_its_limit_passes_and_logs_once_per_counter_and_window() -> None:
    """A shadow bucket (10 tokens per x-user per 4 s; one answer uses about 17): every request
    passes, however far over, and the translator logs rate_limit_shadow_exceeded once for each
    counter over its limit: once for u1 and once for u2 in one window, once more for u1 in the next."""
    async with OpenAIFake(api_key=OPENAI_KEY) as fake, run_gateway(*one_backend_under(fake, SHADOW)) as gw:
        u1, u2 = openai_client(gw.url, **{"x-user": "u1"}), openai_client(gw.url, **{"x-user": "u2"})

        async def chat(client: openai.AsyncOpenAI) -> None:
            reply = await client.chat.completions.create(model=MODEL, messages=HI)
            assert reply.choices[0].message.content == f"Fake {MODEL} reply to: hello there"
            await settled(gw)

        with structlog.testing.capture_logs() as logs:
            await _start_of_a_window(SHADOW_WINDOW_S)
            window = int(time.time()) // SHADOW_WINDOW_S
            for _ in range(4):
                await chat(u1)
            for _ in range(3):
                await chat(u2)
            assert int(time.time()) // SHADOW_WINDOW_S == window, "the test was too slow for its window"
            assert await counter(gw, f"{GROUP}/bucket/0", "u1") > 3 * 10  # far over, still served
            first_window = [e for e in logs if e["event"] == "rate_limit_shadow_exceeded"]
            assert len(first_window) == 2  # u1's counter, u2's counter
            source = "QuotaPolicy default/qp spec.perModelQuotas[0].quota.bucketRules[0]"
            assert all(e["budget"] == source and e["limit"] == 10 for e in first_window)

            await _start_of_a_window(SHADOW_WINDOW_S)
            for _ in range(3):
                await chat(u1)
            shadow = [e for e in logs if e["event"] == "rate_limit_shadow_exceeded"]
            assert len(shadow) == 3  # u1 again, in its new window
        assert len(fake.requests) == 10
        # The default bucket (not shadow) is not where these requests were counted.
        assert await counter(gw, f"{GROUP}/default") == 0


# --------------------------------------------------------------------------------------------
# 4. A stream the client abandons is charged


@pytest.mark.parametrize("schema", ["OpenAI", "Anthropic"])
async def test_a_stream_the_client_abandons_is_charged_what_it_used(schema: str) -> None:
    """A streamed chat (an event every 300 ms) that the client closes after its first two content
    chunks: the router phase charges, when Envoy ends its stream, the usage seen so far: the route's
    token budget (a BackendTrafficPolicy per x-tenant-id) and the backend's quota both grow. An
    Anthropic backend reports the prompt's tokens in message_start, so at least those are charged;
    an OpenAI stream reports usage only at its end, so the translator charges its estimate (the
    prompt's text at ~4 characters a token, a token per event sent)."""
    fake = OpenAIFake(api_key=OPENAI_KEY) if schema == "OpenAI" else AnthropicFake(api_key=ANTHROPIC_KEY)
    async with fake:
        override = None if schema == "OpenAI" else "claude-test"
        costs = [{"metadataKey": "llm_total_token", "type": "TotalToken"}]
        route = Route("chat", [Rule([MODEL], [Ref("up", model_name_override=override)])], costs=costs)
        service_quota = "quota/default/qp/up/service"
        key_kind = "APIKey" if schema == "OpenAI" else "AnthropicAPIKey"
        documents = (
            route.yaml(),
            resources.backend("up", fake.port, schema),
            resources.api_key("up", OPENAI_KEY if schema == "OpenAI" else ANTHROPIC_KEY, key_kind),
            token_limit("HTTPRoute", "chat", 100000),
            quota_policy("qp", "up", "serviceQuota: {quota: {limit: 100000, duration: 1h}}"),
        )
        async with run_gateway(*documents) as gw:
            [budget_id] = [i for i in gw.translator.processor.runtime.rate_limits if i.startswith("btp/")]
            client = openai_client(gw.url, **{"x-tenant-id": "alice", "x-fake-stream-interval-ms": "300"})
            stream = await client.chat.completions.create(model=MODEL, messages=HI, stream=True)
            received: list[str] = []
            async for chunk in stream:
                received.extend(c.delta.content for c in chunk.choices if c.delta.content)
                if len(received) >= 2:
                    break
            await stream.close()
            assert len(fake.requests) == 1

            async def charged() -> bool:
                await settled(gw)
                return await counter(gw, budget_id, "alice") > 0 and await counter(gw, service_quota) > 0

            await eventually(charged, "the abandoned stream charged")
            route_used = await counter(gw, budget_id, "alice")
            assert route_used == await counter(gw, service_quota)  # both total tokens
            if schema == "Anthropic":
                # What a whole answer to the same prompt reports as its input tokens.
                whole = await openai_client(gw.url, **{"x-tenant-id": "bob"}).chat.completions.create(
                    model=MODEL, messages=HI
                )
                assert whole.usage is not None
                assert route_used >= whole.usage.prompt_tokens + len(received)  # a token per event sent
            # The next request of the tenant sees the charge in its x-ratelimit-remaining.
            raw = await openai_client(gw.url, **{"x-tenant-id": "alice"}).chat.completions.with_raw_response.create(
                model=MODEL, messages=HI
            )
            assert raw.headers["x-ratelimit-remaining"] == str(100000 - route_used)


# --------------------------------------------------------------------------------------------
# 5. Envoy AI Gateway's token_ratelimit example, unchanged


EXAMPLE_BACKEND = "envoy-ai-gateway-token-ratelimit-testupstream"
EXAMPLE_MODEL = "rate-limit-funky-model"
# Three input tokens at the fake (one word a token): the CEL cost of the example is 100000000 for
# exactly that, 0 for anything else.
THREE_TOKENS = "one two three"


async def test_compat_token_ratelimit(tmp_path: Path) -> None:
    """token_ratelimit_token_ratelimit.yaml under `aigw-xds run` (counting in its own process), its
    test upstream the OpenAI fake. Five budgets per x-tenant-id: input tokens 10, output 100, total
    1000, cached input 100, and the CEL cost `input_tokens == uint(3) ? 100000000 : 0` 1000 an hour.
    A tenant's request is charged its input tokens (the next one sees 10 - 8 = 2 remaining), and a
    third is refused by the input budget. One completion of exactly three input tokens blows the
    CEL budget: that tenant's next request is a 429 from the 1000 budget, while a prompt of four
    tokens costs it nothing and another tenant, or a request without x-tenant-id, still passes."""
    async with OpenAIFake(api_key=None) as fake:  # the example's test upstream takes no key
        with run_compat(["token_ratelimit_token_ratelimit.yaml"], tmp_path, {EXAMPLE_BACKEND: fake.port}, {}) as url:

            def tenant(name: str) -> openai.AsyncOpenAI:
                return openai_client(url, **{"x-tenant-id": name})

            async def remaining_once_charged(client: openai.AsyncOpenAI, expected: str) -> None:
                """Until the tenant's budgets show `expected` remaining at admission (charges are
                added when each response's stream ends): probed with a request the fake rejects
                (no messages), which uses no tokens."""
                seen: list[str] = []

                async def probe() -> bool:
                    with pytest.raises(openai.APIStatusError) as raised:
                        await client.chat.completions.create(model=EXAMPLE_MODEL, messages=[])
                    seen.append(raised.value.response.headers.get("x-ratelimit-remaining", ""))
                    return seen[-1] == expected

                await eventually(probe, f"x-ratelimit-remaining {expected} (seen {seen[-3:]})")

            # Charged: "hello there" is 8 input tokens at the fake (3 + 3 a message + 2 words).
            raw = await tenant("t1").chat.completions.with_raw_response.create(model=EXAMPLE_MODEL, messages=HI)
            reply = raw.parse()
            assert reply.usage is not None and reply.usage.prompt_tokens == 8
            assert raw.headers["x-ratelimit-remaining"] == "10"  # the input budget is the tightest
            await remaining_once_charged(tenant("t1"), "2")
            await tenant("t1").chat.completions.create(model=EXAMPLE_MODEL, messages=HI)  # 8 < 10: admitted
            await remaining_once_charged(tenant("t1"), "0")
            error = await refused(tenant("t1"), EXAMPLE_MODEL)
            assert error.response.headers["x-ratelimit-limit"] == "10, 10;w=3600"

            # Four input tokens: the CEL cost is 0, and the tenant goes on.
            four = await tenant("t2").completions.create(model=EXAMPLE_MODEL, prompt=THREE_TOKENS + " four")
            assert four.usage is not None and four.usage.prompt_tokens == 4
            await remaining_once_charged(tenant("t2"), str(10 - 4))
            # Exactly three: 100000000 against a budget of 1000.
            three = await tenant("t2").completions.create(model=EXAMPLE_MODEL, prompt=THREE_TOKENS)
            assert three.usage is not None and three.usage.prompt_tokens == 3
            assert three.usage.total_tokens + four.usage.total_tokens < 100  # nowhere near the total budget

            async def blown() -> bool:
                try:
                    await tenant("t2").chat.completions.create(model=EXAMPLE_MODEL, messages=[])
                except openai.RateLimitError as exc:
                    assert exc.response.headers["x-ratelimit-limit"] == "1000, 1000;w=3600"
                    assert exc.response.json()["error"]["code"] == "rate_limit_exceeded"
                    assert int(exc.response.headers["retry-after"]) > 0
                    return True
                except openai.BadRequestError:
                    return False  # admitted: the charge is not counted yet
                raise AssertionError("the fake answered a request without messages")

            await eventually(blown, "the CEL budget blown by one request")
            served = len(fake.requests)
            error = await refused(tenant("t2"), EXAMPLE_MODEL)
            assert error.response.headers["x-ratelimit-limit"] == "1000, 1000;w=3600"
            assert len(fake.requests) == served  # refused before the upstream

            # Another tenant, and a request naming none (the budgets select by a Distinct header),
            # are not limited by t2's budget.
            assert (await tenant("t3").completions.create(model=EXAMPLE_MODEL, prompt=THREE_TOKENS)).usage
            anonymous = openai_client(url)
            for _ in range(2):
                assert (await anonymous.completions.create(model=EXAMPLE_MODEL, prompt=THREE_TOKENS)).usage


LOCAL_PER_USER = resources.traffic_policy(
    "chat",
    """
rateLimit:
  local:
    rules:
      - clientSelectors: [{headers: [{name: x-user, type: Distinct}]}]
        limit: {requests: 3, unit: Day}
""",
)


async def test_a_request_a_spent_quota_refuses_after_routing_spends_no_local_room() -> None:
    """A new user's trial: requests the per-attempt phase refused (the backend's quota spent) had
    spent the user's local rate limit, so the user was shut out once the quota came back. The
    router phase sees the refusal on its way to the client and takes the local charges back."""
    async with OpenAIFake(api_key=OPENAI_KEY) as fake:
        route = Route("chat", [Rule([MODEL], [Ref("oai")])])
        documents = (
            route.yaml(),
            resources.backend("oai", fake.port),
            resources.api_key("oai", OPENAI_KEY),
            quota_policy("oai-quota", "oai", "serviceQuota: {quota: {limit: 30, duration: 1h}}"),
            LOCAL_PER_USER,
        )
        async with run_gateway(*documents) as gw:
            await spend_at(gw, openai_client(gw.url, **{"x-user": "spender"}), MODEL, 30, MODEL)
            jo = openai_client(gw.url, **{"x-user": "jo"})
            for _ in range(4):  # more than jo's 3 a day: each refused by the quota, not by the local rule
                error = await refused(jo)
                assert "x-aigw-refused-here" not in error.response.headers
                assert error.response.headers["x-ratelimit-limit"] == "30, 30;w=3600"
            await settled(gw)
            budget = gw.translator.processor.runtime.rate_limits[
                "btp/default/chat-traffic/local/0/route/default/chat/rule/0"
            ]
            start, _ = window_bounds(budget.window, time.time())
            assert await gw.translator.processor.budgets.local.read([counter_key(budget, ["jo"], start)]) == [0]
