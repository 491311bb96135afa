"""Token rate limits (BackendTrafficPolicy rateLimit.global and .local) and QuotaPolicy through a real Envoy,
with the official SDKs as clients. The providers are the bundled fakes (stand-ins that answer with
usage figures the way the real APIs do)."""

from __future__ import annotations

import asyncio

import aiohttp
import anthropic
import openai
import orjson
import pytest

from aigw_fakes import OpenAIFake
from tests.e2e.harness import resources
from tests.e2e.harness.gateway import Gateway, run_gateway
from tests.e2e.harness.resources import Ref, Route, Rule

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "hello there"}]
OPENAI_KEY = "sk-limits-openai"
ANTHROPIC_KEY = "sk-limits-anthropic"
COSTS = [
    {"metadataKey": "llm_total_token", "type": "TotalToken"},
    {"metadataKey": "llm_input_token", "type": "InputToken"},
]


def token_limit(
    target_kind: str,
    target: str,
    tokens: int,
    key: str = "llm_total_token",
    extra: str = "",
    per: str = "x-tenant-id",
) -> str:
    """A BackendTrafficPolicy: `tokens` per hour per value of the `per` header, charged the
    response's `key` cost."""
    return f"""
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: limits, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: {target_kind}, name: {target}}}]
  rateLimit:
    type: Global
    global:
      rules:
        - clientSelectors: [{{headers: [{{name: {per}, type: Distinct}}]}}]
          limit: {{requests: {tokens}, unit: Hour}}
          cost:
            request: {{from: Number, number: 0}}
            response: {{from: Metadata, metadata: {{namespace: io.envoy.ai_gateway, key: {key}}}}}
{extra}"""


def openai_route_with_budget(fake: OpenAIFake, tokens: int, fallback: bool = False) -> tuple[str, ...]:
    """Route "chat" to the fake OpenAI for gpt-test, with a budget of `tokens` total tokens an hour
    per tenant (x-tenant-id); with `fallback`, a second backend of another key at priority 1 (the
    rule is then translated per attempt)."""
    refs = [Ref("oai"), *([Ref("oai2", priority=1)] if fallback else [])]
    route = Route("chat", [Rule(["gpt-test"], refs)], costs=COSTS)
    second = (resources.backend("oai2", fake.port), resources.api_key("oai2", "sk-other")) if fallback else ()
    return (
        route.yaml(),
        resources.backend("oai", fake.port),
        resources.api_key("oai", OPENAI_KEY),
        *second,
        token_limit("HTTPRoute", "chat", tokens),
    )


def openai_client(gw: Gateway, tenant: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{gw.url}/v1", api_key="client-key", max_retries=0, default_headers={"x-tenant-id": tenant}
    )


def anthropic_client(gw: Gateway, tenant: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=f"{gw.url}/anthropic", api_key="client-key", max_retries=0, default_headers={"x-tenant-id": tenant}
    )


async def settled(gw: Gateway) -> None:
    """Until the charges of the responses so far are counted (they are added in the background once
    each response's ext_proc stream ends)."""
    await asyncio.sleep(0.05)
    await gw.translator.processor.budgets.drain()


async def test_token_budget_spent_by_plain_and_streamed_answers_then_429_in_each_schema() -> None:
    """A budget of 60 total tokens an hour per tenant on an OpenAI route: the fake answers about 20
    tokens a request, plain or streamed; once the tenant's budget is used up, the next request is a
    429 in OpenAI's shape with x-ratelimit-* and retry-after, while another tenant still passes; an
    Anthropic Messages client on the same route gets Anthropic's rate_limit_error."""
    async with OpenAIFake(api_key=OPENAI_KEY) as fake, run_gateway(*openai_route_with_budget(fake, 60)) as gw:
        client = openai_client(gw, "alice")
        spent = 0
        raw = await client.chat.completions.with_raw_response.create(model="gpt-test", messages=HI)
        reply = raw.parse()
        assert reply.usage is not None
        spent += reply.usage.total_tokens
        assert raw.headers["x-ratelimit-limit"] == "60, 60;w=3600"
        assert raw.headers["x-ratelimit-remaining"] == "60"  # as of admission: nothing spent before
        await settled(gw)
        stream = await client.chat.completions.create(
            model="gpt-test", messages=HI, stream=True, stream_options={"include_usage": True}
        )
        async for chunk in stream:
            if chunk.usage is not None:
                spent += chunk.usage.total_tokens
        await settled(gw)
        while spent < 60:
            reply = await client.chat.completions.create(model="gpt-test", messages=HI)
            assert reply.usage is not None
            spent += reply.usage.total_tokens
            await settled(gw)
        served = len(fake.requests)
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(model="gpt-test", messages=HI)
        assert len(fake.requests) == served  # refused before reaching the provider
        error = refused.value.response
        assert error.status_code == 429
        assert error.headers["x-ratelimit-remaining"] == "0"
        assert 0 < int(error.headers["retry-after"]) <= 3600
        assert error.headers["retry-after"] == error.headers["x-ratelimit-reset"]
        body = error.json()
        assert body["error"]["code"] == "rate_limit_exceeded" and "rate limit" in body["error"]["message"]

        # the access log names the budget that refused
        refused_line = [e for e in await gw.access_log.wait_for(len(fake.requests) + 1) if e["response_code"] == 429]
        assert (
            refused_line[0]["rate_limited_by"] == "BackendTrafficPolicy default/limits spec.rateLimit.global.rules[0]"
        )

        # another tenant has its own budget
        assert (await openai_client(gw, "bob").chat.completions.create(model="gpt-test", messages=HI)).usage

        with pytest.raises(anthropic.RateLimitError) as messages_refused:
            await anthropic_client(gw, "alice").messages.create(model="gpt-test", max_tokens=50, messages=HI)
        assert messages_refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


REQUEST_LIMIT = """
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: per-user, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: chat}]
  rateLimit:
    type: Global
    global:
      rules:
        - clientSelectors: [{headers: [{name: x-user, type: Distinct}]}]
          limit: {requests: 3, unit: Minute}
"""


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "application/x-www-form-urlencoded", "Application/Json"]
)
async def test_a_request_limit_holds_whatever_the_body_says_it_is(content_type: str) -> None:
    """3 requests a minute per x-user, whatever content type the client claims: a body Envoy cannot
    read as JSON takes the route on which the translator finds the model and Envoy routes again, and
    the per-attempt phase admits it against the rule's budgets (the router phase could not: its
    stream opened before the route was known). Before, such requests were never limited. The
    fourth request is a 429 in OpenAI's shape and never reaches the provider."""
    async with OpenAIFake(api_key=OPENAI_KEY) as fake:
        route = Route("chat", [Rule(["gpt-test"], [Ref("oai")])])
        documents = (route.yaml(), resources.backend("oai", fake.port), resources.api_key("oai", OPENAI_KEY))
        async with run_gateway(*documents, REQUEST_LIMIT) as gw, aiohttp.ClientSession() as http:
            body = orjson.dumps({"model": "gpt-test", "messages": HI})
            headers = {"content-type": content_type, "x-user": "mallory"}
            statuses = []
            for _ in range(5):
                async with http.post(f"{gw.url}/v1/chat/completions", data=body, headers=headers) as response:
                    statuses.append(response.status)
                    if response.status == 429:
                        refusal = await response.json()
                        assert refusal["error"]["code"] == "rate_limit_exceeded"
                        assert response.headers["retry-after"]
            assert statuses == [200, 200, 200, 429, 429]
            assert len(fake.requests) == 3
            # another user is not affected
            async with http.post(
                f"{gw.url}/v1/chat/completions", data=body, headers={**headers, "x-user": "bob"}
            ) as response:
                assert response.status == 200


LOCAL_LIMITS = resources.traffic_policy(
    "chat",
    """
rateLimit:
  local:
    rules:
      - clientSelectors: [{headers: [{name: x-tenant-id, type: Distinct}]}]
        limit: {requests: 2, unit: Day}
      - limit: {requests: 3, unit: Day}
""",
)


async def test_a_local_limit_counts_each_tenant_and_everyone_else_under_the_default_rule() -> None:
    """rateLimit.local: 2 requests a day per tenant, and a default of 3 a day for the requests without
    a tenant. A tenant's plain and streamed requests count alike (Envoy routes them apart); its third
    is a 429 in OpenAI's shape naming the local rule, an Anthropic client's in Anthropic's; the
    tenants' requests leave the default's 3 untouched, and the fourth without a tenant is refused."""
    async with OpenAIFake(api_key=OPENAI_KEY) as fake:
        route = Route("chat", [Rule(["gpt-test"], [Ref("oai")])])
        documents = (route.yaml(), resources.backend("oai", fake.port), resources.api_key("oai", OPENAI_KEY))
        async with run_gateway(*documents, LOCAL_LIMITS) as gw:
            alice = openai_client(gw, "alice")
            assert (await alice.chat.completions.create(model="gpt-test", messages=HI)).usage
            async for _ in await alice.chat.completions.create(model="gpt-test", messages=HI, stream=True):
                pass
            with pytest.raises(openai.RateLimitError) as refused:
                await alice.chat.completions.create(model="gpt-test", messages=HI, stream=True)
            assert refused.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
            assert refused.value.response.headers["x-ratelimit-limit"] == "2, 2;w=86400"
            with pytest.raises(anthropic.RateLimitError) as messages_refused:
                await anthropic_client(gw, "alice").messages.create(model="gpt-test", max_tokens=50, messages=HI)
            assert messages_refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
            assert (await openai_client(gw, "bob").chat.completions.create(model="gpt-test", messages=HI)).usage

            anyone = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="client-key", max_retries=0)
            for _ in range(3):
                assert (await anyone.chat.completions.create(model="gpt-test", messages=HI)).usage
            with pytest.raises(openai.RateLimitError):
                await anyone.chat.completions.create(model="gpt-test", messages=HI)
            assert len(fake.requests) == 2 + 1 + 3
            lines = await gw.access_log.wait_for(len(fake.requests) + 3)
            assert sorted(e["rate_limited_by"] for e in lines if e["response_code"] == 429) == [
                "BackendTrafficPolicy default/chat-traffic spec.rateLimit.local.rules[0]",
                "BackendTrafficPolicy default/chat-traffic spec.rateLimit.local.rules[0]",
                "BackendTrafficPolicy default/chat-traffic spec.rateLimit.local.rules[1]",
            ]


PER_TEAM_QUERY_LIMIT = resources.traffic_policy(
    "chat",
    """
rateLimit:
  global:
    rules:
      - clientSelectors: [{queryParams: [{name: team, type: Distinct}]}]
        limit: {requests: 2, unit: Day}
""",
)


async def test_a_limit_selects_clients_by_a_query_parameter_of_their_path() -> None:
    """queryParams (Envoy Gateway's newer selector): 2 requests a day per `?team=`, counted by the
    parameter's value (%XX decoded, as Envoy decodes it) as the translator sees the client's path
    through Envoy; a request without the parameter is not counted."""
    async with OpenAIFake(api_key=OPENAI_KEY) as fake:
        route = Route("chat", [Rule(["gpt-test"], [Ref("oai")])])
        documents = (route.yaml(), resources.backend("oai", fake.port), resources.api_key("oai", OPENAI_KEY))
        async with run_gateway(*documents, PER_TEAM_QUERY_LIMIT) as gw, aiohttp.ClientSession() as http:
            body = orjson.dumps({"model": "gpt-test", "messages": HI})
            headers = {"content-type": "application/json"}

            async def status(query: str) -> int:
                async with http.post(f"{gw.url}/v1/chat/completions{query}", data=body, headers=headers) as response:
                    return response.status

            assert [await status(q) for q in ("?team=a%20b", "?x=1&team=a%20b", "?team=a%20b")] == [200, 200, 429]
            # A `+` is not a space (as Envoy decodes a query): another team; no parameter, not counted.
            assert [await status(q) for q in ("?team=a+b", "?team=c", "", "", "")] == [200, 200, 200, 200, 200]


PER_MODEL_LIMIT = token_limit("HTTPRoute", "chat", 30, per="x-ai-eg-model")


async def test_a_per_model_budget_counts_the_body_model_not_a_header_the_client_sends() -> None:
    """A budget per x-ai-eg-model (Envoy AI Gateway's per-model limit: the gateway sets that header
    from the body's model before limits are checked). The OpenAI SDK sends no such header: the
    body's model is counted (found by review: such budgets were never enforced, since the router
    phase admitted at the client's headers), and a client naming another model in the header is
    still counted under the model it asked for; another model has its own budget."""
    async with OpenAIFake(api_key=OPENAI_KEY) as fake:
        route = Route("chat", [Rule(["gpt-test", "gpt-other"], [Ref("oai")])], costs=COSTS)
        documents = (route.yaml(), resources.backend("oai", fake.port), resources.api_key("oai", OPENAI_KEY))
        async with run_gateway(*documents, PER_MODEL_LIMIT) as gw:
            client = openai_client(gw, "alice")
            spent = 0
            while spent < 30:
                reply = await client.chat.completions.create(model="gpt-test", messages=HI)
                assert reply.usage is not None
                spent += reply.usage.total_tokens
                await settled(gw)
            served = len(fake.requests)
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(model="gpt-test", messages=HI)
            with pytest.raises(openai.RateLimitError):  # another model named in the header: still gpt-test's
                await client.chat.completions.create(
                    model="gpt-test", messages=HI, extra_headers={"x-ai-eg-model": "gpt-spoofed"}
                )
            assert len(fake.requests) == served
            assert (await client.chat.completions.create(model="gpt-other", messages=HI)).usage


@pytest.mark.parametrize(("stream", "fallback"), [(False, False), (True, False), (False, True)])
async def test_a_client_that_leaves_before_the_response_is_charged_its_prompt(stream: bool, fallback: bool) -> None:
    """From a rate-limit review: a client that hung up before the response began (a short timeout
    on a slow answer) was charged nothing, though the provider had read its prompt; ten such
    requests of 3,000 words spent no budget. It is charged the estimate of its prompt (about 4
    characters a token), on a rule translated on one stream and on one translated per attempt
    (whose router phase learns the backend that answered only from the response)."""
    async with (
        OpenAIFake(api_key=OPENAI_KEY) as fake,
        run_gateway(*openai_route_with_budget(fake, 100_000, fallback)) as gw,
    ):
        prompt = "word " * 3000
        body = {"model": "gpt-test", "messages": [{"role": "user", "content": prompt}], "stream": stream}
        headers = {"x-tenant-id": "leaver", "x-fake-delay-ms": "3000", "content-type": "application/json"}
        async with aiohttp.ClientSession() as session:
            with pytest.raises(asyncio.TimeoutError):
                async with session.post(
                    f"{gw.url}/v1/chat/completions",
                    data=orjson.dumps(body),
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=0.5),
                ):
                    pass
        await asyncio.sleep(0.5)  # Envoy ends the ext_proc stream once the client has gone
        await settled(gw)
        raw = await openai_client(gw, "leaver").chat.completions.with_raw_response.create(model="gpt-test", messages=HI)
        charged = 100_000 - int(raw.headers["x-ratelimit-remaining"])
        assert len(prompt) // 4 <= charged < len(prompt) // 4 + 100
