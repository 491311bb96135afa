"""Route classes through real Envoy and the official SDKs: what each request pays, counted from
Envoy's own ext_proc statistics, and that every class still does what the translator did.

- NATIVE: a rule with one OpenAI backend and an API key; non-streaming chat runs with no ext_proc
  stream at all (Envoy routes on the body, injects the key from SDS, reads usage).
- ROUTE: the same rule's streams, and a rule translating to Anthropic: one router-level stream, no
  per-attempt stream.
- ATTEMPT: a rule whose priorities mix schemas: one stream per level per attempt.

The OpenAI and Anthropic providers are the project's fakes (stand-ins that reject what the real
APIs reject: a wrong key, a malformed body)."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from tests.e2e.harness import resources
from tests.e2e.harness.gateway import Gateway, run_gateway
from tests.e2e.harness.processes import free_port
from tests.e2e.harness.providers import (
    CLASSES_ANTHROPIC_KEY,
    CLASSES_OPENAI_KEY,
    openai_and_anthropic,
)
from tests.e2e.harness.resources import Ref, Route, Rule

OPENAI_KEY, ANTHROPIC_KEY = CLASSES_OPENAI_KEY, CLASSES_ANTHROPIC_KEY
CHAT = [{"role": "user", "content": "hello there"}]
ROUTES = Route(
    "classes",
    [
        Rule(["gpt-native"], [Ref("openai")]),
        Rule(["claude"], [Ref("anthropic")]),
        Rule(["mixed"], [Ref("openai"), Ref("anthropic", priority=1)]),
    ],
)


def _streams(gw: Gateway) -> tuple[int, int]:
    """ext_proc streams Envoy opened so far: (router level, per attempt)."""
    stats = gw.envoy.stats("ext_proc")
    router = sum(v for k, v in stats.items() if k.startswith("http.") and k.endswith(".streams_started"))
    attempt = sum(v for k, v in stats.items() if k.startswith("cluster.") and k.endswith(".streams_started"))
    return router, attempt


def _docs(openai_port: int, anthropic_port: int) -> tuple[str, ...]:
    return openai_and_anthropic(ROUTES, openai_port, anthropic_port)


async def test_native_passthrough_runs_no_python_and_keeps_every_guarantee(keyed_providers) -> None:
    """Non-streaming chat on the NATIVE rule: no ext_proc stream; the provider sees the backend key
    (from SDS) and none of the client's credentials; usage, names and the model reach the access log
    under the translator's keys; Envoy's config dump never shows the key."""
    openai_fake, anthropic_fake = keyed_providers
    async with run_gateway(*_docs(openai_fake.port, anthropic_fake.port)) as gw:
        client = openai.AsyncOpenAI(
            base_url=gw.url + "/v1",
            api_key="client-own-key",
            max_retries=0,
            default_headers={"x-api-key": "client-x", "openai-organization": "org-client"},
        )
        before = _streams(gw)
        resp = await client.chat.completions.create(model="gpt-native", messages=CHAT)
        assert _streams(gw) == before
        assert resp.choices[0].message.content and resp.usage is not None
        [seen] = openai_fake.requests
        assert seen.header("authorization") == f"Bearer {OPENAI_KEY}"
        assert seen.header("x-api-key") is None and seen.header("openai-organization") is None
        [entry] = await gw.access_log.wait_for(1)
        assert entry["gen_ai.usage.input_tokens"] == resp.usage.prompt_tokens
        assert entry["gen_ai.usage.output_tokens"] == resp.usage.completion_tokens
        assert entry["usage_estimated"] is False
        assert entry["gen_ai.request.model"] == "gpt-native"
        assert entry["gen_ai.response.model"] == resp.model
        assert entry["gen_ai.provider.name"] == ROUTES.backend_name(0, 0)
        dump = json.dumps(gw.envoy.config_dump("dynamic_active_secrets"))
        assert "credential" in dump and OPENAI_KEY not in dump
        assert OPENAI_KEY not in json.dumps(gw.envoy.config_dump())


async def test_streams_and_translation_take_one_stream_mixed_priorities_take_two(keyed_providers) -> None:
    """A stream on the NATIVE rule and a translated request each open one router-level stream and no
    per-attempt stream; the mixed rule opens one of each; all are metered."""
    openai_fake, anthropic_fake = keyed_providers
    async with run_gateway(*_docs(openai_fake.port, anthropic_fake.port)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        before = _streams(gw)
        stream = await client.chat.completions.create(model="gpt-native", messages=CHAT, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text
        assert _streams(gw) == (before[0] + 1, before[1])
        [streamed] = openai_fake.requests
        assert streamed.body["stream_options"] == {"include_usage": True}

        resp = await client.chat.completions.create(model="claude", messages=CHAT)
        assert resp.choices[0].message.content
        assert _streams(gw) == (before[0] + 2, before[1])
        [translated] = anthropic_fake.requests
        assert translated.path == "/v1/messages" and translated.header("x-api-key") == ANTHROPIC_KEY
        assert translated.header("authorization") is None

        resp = await client.chat.completions.create(model="mixed", messages=CHAT)
        assert resp.choices[0].message.content
        assert _streams(gw) == (before[0] + 3, before[1] + 1)

        entries = await gw.access_log.wait_for(3)
        assert [e["gen_ai.request.model"] for e in entries] == ["gpt-native", "claude", "mixed"]
        assert [e["path"] for e in entries] == ["/v1/chat/completions"] * 3  # the client's, not the backend's
        assert all(isinstance(e["gen_ai.usage.output_tokens"], int) for e in entries)


async def test_anthropic_client_on_the_native_rule_is_translated(keyed_providers) -> None:
    """The NATIVE class covers OpenAI clients only: an Anthropic Messages request for the same model
    is translated on one stream."""
    openai_fake, anthropic_fake = keyed_providers
    async with run_gateway(*_docs(openai_fake.port, anthropic_fake.port)) as gw:
        client = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0)
        before = _streams(gw)
        message = await client.messages.create(
            model="gpt-native", max_tokens=20, messages=CHAT, stop_sequences=[" reply"]
        )
        # The stop sequence reached OpenAI as `stop` (the fake honours it as OpenAI does).
        assert message.content[0].type == "text" and message.content[0].text == "Fake gpt-native"
        assert _streams(gw) == (before[0] + 1, before[1])
        [seen] = openai_fake.requests
        assert seen.path == "/v1/chat/completions" and seen.header("authorization") == f"Bearer {OPENAI_KEY}"
        assert seen.body["stop"] == [" reply"]


async def test_native_upstream_failure_is_an_openai_error(keyed_providers) -> None:
    """With the provider down, Envoy's own 503 reaches an SDK as an OpenAI-shaped error."""
    _, anthropic_fake = keyed_providers
    async with run_gateway(*_docs(free_port(), anthropic_fake.port)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.InternalServerError) as failed:
            await client.chat.completions.create(model="gpt-native", messages=CHAT)
        assert failed.value.status_code == 503
        assert isinstance(failed.value.body, dict) and failed.value.body["type"] == "server_error"


async def test_native_metering_matches_the_translators(keyed_providers) -> None:
    """The same backend and request, once on the NATIVE rule and once on a rule the translator serves
    (its policy has a credential override, so it takes one stream): the access-log lines carry the
    same usage, costs and names."""
    openai_fake, anthropic_fake = keyed_providers
    twin = Route("twin", [Rule(["gpt-python"], [Ref("openai-py")])])
    docs = (
        *_docs(openai_fake.port, anthropic_fake.port),
        twin.yaml(),
        resources.backend("openai-py", openai_fake.port),
        resources.api_key("openai-py", OPENAI_KEY, override_header="x-byok"),
    )
    costs = [{"metadataKey": "llm_total", "type": "TotalToken"}, {"metadataKey": "llm_in", "type": "InputToken"}]
    async with run_gateway(*docs, global_costs=costs) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        before = _streams(gw)
        await client.chat.completions.create(model="gpt-native", messages=CHAT)
        assert _streams(gw) == before  # still NATIVE: token costs are written by Envoy
        await client.chat.completions.create(model="gpt-python", messages=CHAT)
        assert _streams(gw) == (before[0] + 1, before[1])
        native, python = await gw.access_log.wait_for(2)
    for key in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "usage_estimated", "llm_total", "llm_in"):
        assert native[key] == python[key] and native[key] is not None, key
    for entry, model in ((native, "gpt-native"), (python, "gpt-python")):
        # The fake answers with the model it was asked for.
        assert entry["gen_ai.request.model"] == entry["gen_ai.request.model_override"] == model
        assert entry["gen_ai.response.model"] == model
    assert native["gen_ai.provider.name"] == ROUTES.backend_name(0, 0)
    assert python["gen_ai.provider.name"] == twin.backend_name(0, 0)
