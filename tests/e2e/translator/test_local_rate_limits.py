"""BackendTrafficPolicy rateLimit.local through a real Envoy (and the client address both kinds of rate
limit count under): its local_ratelimit filter's token
buckets limit the route's requests before the translator sees them, and a limited client gets a 429
in its API's shape (the SDKs' RateLimitError) with the x-ratelimit headers. The providers are the
usual fakes; the clients the official OpenAI and Anthropic SDKs."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.e2e.harness.gateway import Gateway, run_gateway
from tests.e2e.harness.providers import CHAT, Fakes, openai_and_anthropic
from tests.e2e.harness.resources import Ref, Route, Rule, traffic_policy

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "hi"}]
LIMITS = """
rateLimit:
  type: Local
  local:
    rules:
      - limit: {requests: 3, unit: Minute}
      - clientSelectors: [{headers: [{name: x-user, type: Distinct}]}]
        limit: {requests: 1, unit: Minute}
"""


async def test_the_default_bucket_limits_each_rule_whatever_route_class_its_requests_take(fakes: Fakes) -> None:
    """Plain and streamed requests of one rule take different routes (Envoy alone, the translator's
    stream): they share the rule's bucket. Another rule of the route has its own."""
    async with run_gateway(*fakes.resources(), traffic_policy(CHAT.name, LIMITS)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        stream = await client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
        assert [chunk async for chunk in stream]
        await client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=False)
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        assert limited.value.status_code == 429
        assert isinstance(limited.value.body, dict)
        assert limited.value.body["code"] == "rate_limit_exceeded" and limited.value.body["type"] == "rate_limit_error"
        assert "local rate limit" in limited.value.body["message"]
        assert limited.value.response.headers["x-ratelimit-limit"] == "3"
        assert limited.value.response.headers["x-ratelimit-remaining"] == "0"
        with pytest.raises(openai.RateLimitError):  # streamed: the same bucket
            await client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
        assert len([r for r in fakes.openai.requests if r.path == "/v1/chat/completions"]) == 3
        # The route's Anthropic rule has buckets of its own; its limited client gets Anthropic's error.
        messages = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0)
        for _ in range(3):
            await messages.messages.create(model="claude", max_tokens=10, messages=MESSAGES)
        with pytest.raises(anthropic.RateLimitError) as refused:
            await messages.messages.create(model="claude", max_tokens=10, messages=MESSAGES)
        assert isinstance(refused.value.body, dict) and refused.value.body["error"]["type"] == "rate_limit_error"
        # Listing models is no rule's route: not limited.
        assert [m.id async for m in client.models.list()]


async def test_a_distinct_header_gives_each_value_a_bucket_and_takes_no_token_of_the_default(fakes: Fakes) -> None:
    async with run_gateway(*fakes.resources(), traffic_policy(CHAT.name, LIMITS)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)

        async def ask(user: str | None) -> None:
            headers = {"x-user": user} if user else {}
            await client.chat.completions.create(model="gpt-test", messages=MESSAGES, extra_headers=headers)

        await ask("alice")
        with pytest.raises(openai.RateLimitError):
            await ask("alice")
        await ask("bob")  # a bucket of bob's own
        for _ in range(3):  # the default bucket is whole: alice's and bob's took none of its tokens
            await ask(None)
        with pytest.raises(openai.RateLimitError):
            await ask(None)


async def test_a_client_a_rule_picks_is_not_held_to_the_default(fakes: Fakes) -> None:
    """Envoy Gateway's meaning: a client with a more generous rule of its own (a VIP) is held to that
    rule, not to the default, which the others share."""
    vip = """
rateLimit:
  local:
    rules:
      - limit: {requests: 1, unit: Minute}
      - clientSelectors: [{headers: [{name: x-tier, value: vip}]}]
        limit: {requests: 4, unit: Minute}
"""
    async with run_gateway(*fakes.resources(), traffic_policy(CHAT.name, vip)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        for _ in range(4):
            await client.chat.completions.create(model="gpt-test", messages=MESSAGES, extra_headers={"x-tier": "vip"})
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="gpt-test", messages=MESSAGES, extra_headers={"x-tier": "vip"})


async def test_a_rules_routes_of_every_class_share_its_bucket(keyed_providers) -> None:
    """A rule Envoy serves alone (NATIVE) for plain requests takes a stream on the translator's route:
    two routes, one bucket (else a client would take twice the limit by switching)."""
    openai_fake, anthropic_fake = keyed_providers
    native = Route("native", [Rule(["gpt-native"], [Ref("openai")])])
    documents = openai_and_anthropic(native, openai_fake.port, anthropic_fake.port)
    async with run_gateway(*documents, traffic_policy("native", LIMITS)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        await client.chat.completions.create(model="gpt-native", messages=MESSAGES)
        assert _translator_streams(gw) == 0  # Envoy alone: the NATIVE route
        for _ in range(2):
            stream = await client.chat.completions.create(model="gpt-native", messages=MESSAGES, stream=True)
            assert [chunk async for chunk in stream]
        assert _translator_streams(gw) == 2  # the translator's route
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="gpt-native", messages=MESSAGES)


def _translator_streams(gw: Gateway) -> int:
    """The router-level ext_proc streams Envoy opened so far."""
    stats = gw.envoy.stats("ext_proc")
    return sum(v for k, v in stats.items() if k.startswith("http.") and k.endswith(".streams_started"))


@pytest.mark.parametrize("kind", ["local", "global"])
async def test_a_client_cannot_take_another_address_by_sending_x_forwarded_for(fakes: Fakes, kind: str) -> None:
    """Each address its own bucket (or budget, counted by the translator): the address is the
    connection's, not one the client writes in x-forwarded-for (Envoy takes that header's last
    address for the client's unless told to use the connection's, use_remote_address, as Envoy
    Gateway tells it)."""
    per_address = f"""
rateLimit:
  {kind}:
    rules:
      - clientSelectors: [{{sourceCIDR: {{value: 127.0.0.0/8, type: Distinct}}}}]
        limit: {{requests: 1, unit: Minute}}
"""
    async with run_gateway(*fakes.resources(), traffic_policy(CHAT.name, per_address)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        # Nor does the gateway tell the provider the client's address.
        assert fakes.openai.requests[-1].header("x-forwarded-for") is None
        for spoofed in ("127.0.0.9", "10.1.2.3"):
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(
                    model="gpt-test", messages=MESSAGES, extra_headers={"x-forwarded-for": spoofed}
                )


async def test_behind_a_trusted_proxy_the_client_is_the_address_it_forwarded(fakes: Fakes) -> None:
    """A ClientTrafficPolicy's clientIPDetection.xForwardedFor.numTrustedHops: 1 (a load balancer in
    front, which appends the address it saw): the last x-forwarded-for address is the client's."""
    behind = """
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {name: behind-lb, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  clientIPDetection: {xForwardedFor: {numTrustedHops: 1}}
"""
    per_address = """
rateLimit:
  local:
    rules:
      - clientSelectors: [{sourceCIDR: {value: 10.0.0.0/8, type: Distinct}}]
        limit: {requests: 1, unit: Minute}
"""
    async with run_gateway(*fakes.resources(), behind, traffic_policy(CHAT.name, per_address)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)

        async def via_balancer(seen_by_it: str, claimed: str = "") -> None:
            forwarded = f"{claimed}, {seen_by_it}" if claimed else seen_by_it
            headers = {"x-forwarded-for": forwarded}
            await client.chat.completions.create(model="gpt-test", messages=MESSAGES, extra_headers=headers)

        await via_balancer("10.0.0.1")
        await via_balancer("10.0.0.2")  # another client: its own bucket
        with pytest.raises(openai.RateLimitError):  # what a client writes before the balancer's entry is not believed
            await via_balancer("10.0.0.1", claimed="10.9.9.9")
