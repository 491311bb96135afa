"""The translator behind a real Envoy against the project's realistic provider fakes
(aigw_xds.fakes), which validate requests the way the real providers do."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from aigw.translator.v1 import config_pb2
from aigw_xds.fakes import AnthropicFake, AzureOpenAIFake, OpenAIFake

from .envoy_harness import Cluster, Endpoint, Route
from .gateway import run_gateway

pytestmark = pytest.mark.e2e

OPENAI = "ns/openai/route/r/rule/0/ref/0"
ANTHROPIC = "ns/anthropic/route/r/rule/0/ref/1"
AZURE = "ns/azure/route/r/rule/0/ref/2"
ROUTE = "ns/r"

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def config() -> config_pb2.TranslatorConfig:
    cfg = config_pb2.TranslatorConfig(name="ns/gw")
    o = cfg.backends.add(
        name=OPENAI, route_name=ROUTE, service_backend="ns/openai", schema=config_pb2.Schema(name="OpenAI")
    )
    o.auth.api_key.key = "sk-openai-backend"
    a = cfg.backends.add(
        name=ANTHROPIC,
        route_name=ROUTE,
        service_backend="ns/anthropic",
        schema=config_pb2.Schema(name="Anthropic"),
        model_name_override="claude-sonnet-4-5",
    )
    a.auth.anthropic_api_key.key = "sk-ant-backend"
    z = cfg.backends.add(
        name=AZURE,
        route_name=ROUTE,
        service_backend="ns/azure",
        schema=config_pb2.Schema(name="AzureOpenAI", version="2024-10-21"),
        model_name_override="gpt-4o-mini",
    )
    z.auth.azure_api_key.key = "az-backend-key"
    cfg.global_costs.add(metadata_key="llm_total_token", type=config_pb2.LLMRequestCost.TOTAL_TOKEN)
    return cfg


@pytest.fixture
async def fakes():
    o = await OpenAIFake(api_key="sk-openai-backend").start()
    a = await AnthropicFake(api_key="sk-ant-backend", cache_read_input_tokens=4).start()
    z = await AzureOpenAIFake(api_key="az-backend-key").start()
    yield o, a, z
    for f in (o, a, z):
        await f.stop()


def _one(model: str, port: int, backend: str) -> tuple[list[Route], list[Cluster]]:
    return [Route(model, "c", ROUTE)], [Cluster("c", [Endpoint(port, backend)])]


async def test_openai_client_against_anthropic_fake(fakes) -> None:
    _, a, _ = fakes
    routes, clusters = _one("claude", a.port, ANTHROPIC)
    async with run_gateway(config(), routes, clusters) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)
        resp = await client.chat.completions.create(
            model="claude",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
            temperature=0.5,
            stop=["END"],
        )
        assert "hello there" in (resp.choices[0].message.content or "")
        assert resp.usage.prompt_tokens_details.cached_tokens == 4

        resp = await client.chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "weather in Paris?"}],
            tools=[TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
        call = resp.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather"
        args = json.loads(call.function.arguments)

        # The tool result goes back in the next turn.
        follow = await client.chat.completions.create(
            model="claude",
            messages=[
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp": 21, **args})},
            ],
            tools=[TOOL],
        )
        assert follow.choices[0].finish_reason in ("stop", "tool_calls")

        stream = await client.chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "weather in Paris?"}],
            tools=[TOOL],
            tool_choice="required",
            stream=True,
            stream_options={"include_usage": True},
        )
        arguments, usage = "", None
        async for chunk in stream:
            usage = chunk.usage or usage
            for c in chunk.choices:
                for tc in c.delta.tool_calls or []:
                    arguments += tc.function.arguments or ""
        assert isinstance(json.loads(arguments), dict)
        assert usage is not None and usage.total_tokens > 0
        assert all(r.header("authorization") is None for r in a.requests)


async def test_stream_cut_by_provider_writes_no_usage(fakes) -> None:
    _, a, _ = fakes
    routes, clusters = _one("claude", a.port, ANTHROPIC)
    async with run_gateway(config(), routes, clusters) as gw:
        client = openai.AsyncOpenAI(
            base_url=gw.url + "/v1",
            api_key="k",
            max_retries=0,
            default_headers={"x-fake-stream-abort-after": "3"},
        )
        with pytest.raises(Exception):  # noqa: B017 - the SDK surfaces the cut connection its own way
            stream = await client.chat.completions.create(
                model="claude", messages=[{"role": "user", "content": "tell me a long story"}], stream=True
            )
            async for _ in stream:
                pass
        entries = await gw.access_log.wait_for(1)
        assert "llm_total_token" not in (entries[0]["aigw"] or {})


async def test_anthropic_client_against_openai_fake(fakes) -> None:
    o, _, _ = fakes
    routes, clusters = _one("gpt-4o-mini", o.port, OPENAI)
    async with run_gateway(config(), routes, clusters) as gw:
        client = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="client-key", max_retries=0)
        msg = await client.messages.create(
            model="gpt-4o-mini", max_tokens=64, system="be brief", messages=[{"role": "user", "content": "hi"}]
        )
        assert msg.content[0].type == "text" and msg.stop_reason == "end_turn"
        async with client.messages.stream(
            model="gpt-4o-mini",
            max_tokens=64,
            messages=[{"role": "user", "content": "weather in Paris?"}],
            tools=[{"name": "get_weather", "input_schema": TOOL["function"]["parameters"]}],
            tool_choice={"type": "any"},
        ) as stream:
            final = await stream.get_final_message()
        assert final.stop_reason == "tool_use"
        assert any(b.type == "tool_use" and b.name == "get_weather" for b in final.content)
        assert final.usage.input_tokens > 0


async def test_failover_openai_fake_503_to_anthropic_fake(fakes) -> None:
    o, a, _ = fakes
    o.always_fail(503)
    routes = [Route("gpt-4o-mini", "pool", ROUTE)]
    clusters = [Cluster("pool", [Endpoint(o.port, OPENAI, priority=0), Endpoint(a.port, ANTHROPIC, priority=1)])]
    async with run_gateway(config(), routes, clusters) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert "claude-sonnet-4-5" in text  # the Anthropic fake answered
        assert len(o.requests) >= 1 and len(a.requests) == 1
        entries = await gw.access_log.wait_for(1)
        assert entries[0]["aigw"]["backend_name"] == ANTHROPIC


async def test_azure_fake_chat_and_embeddings_with_gzip(fakes) -> None:
    _, _, z = fakes
    routes, clusters = _one("gpt-4o-mini", z.port, AZURE)
    async with run_gateway(config(), routes, clusters) as gw:
        client = openai.AsyncOpenAI(
            base_url=gw.url + "/v1", api_key="k", max_retries=0, default_headers={"x-fake-gzip": "1"}
        )
        resp = await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert resp.choices[0].message.content
        emb = await client.embeddings.create(model="gpt-4o-mini", input="hello")
        assert len(emb.data[0].embedding) > 0
        paths = [r.path for r in z.requests]
        assert paths[0] == "/openai/deployments/gpt-4o-mini/chat/completions"
        assert z.requests[0].query == {"api-version": "2024-10-21"}
        entries = await gw.access_log.wait_for(2)
        assert entries[0]["aigw"]["llm_total_token"] == resp.usage.total_tokens


async def test_claude_code_style_client_against_azure_fake(fakes) -> None:
    _, _, z = fakes
    routes, clusters = _one("claude-sonnet", z.port, AZURE)
    async with run_gateway(config(), routes, clusters) as gw:
        client = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="client-key", max_retries=0)
        async with client.messages.stream(
            model="claude-sonnet",
            max_tokens=64,
            system=[{"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}]}],
            extra_query={"beta": "true"},
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
        assert text
        seen = z.requests[-1]
        assert seen.path == "/openai/deployments/gpt-4o-mini/chat/completions"
        assert seen.query == {"api-version": "2024-10-21"}
        assert seen.header("api-key") == "az-backend-key"
        assert seen.header("anthropic-version") is None
