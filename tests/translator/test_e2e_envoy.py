"""End to end through a real Envoy: official SDKs -> Envoy (both ext_proc phases) -> fake provider."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from aigw.translator.v1 import config_pb2

from .envoy_harness import Cluster, Endpoint, Route
from .fake_provider import FakeProvider
from .gateway import run_gateway

pytestmark = pytest.mark.e2e

OPENAI_BACKEND = "default/openai/route/chat/rule/0/ref/0"
ANTHROPIC_BACKEND = "default/anthropic/route/chat/rule/0/ref/1"
ROUTE = "default/chat"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def make_config() -> config_pb2.TranslatorConfig:
    cfg = config_pb2.TranslatorConfig(name="default/gw")
    openai_backend = cfg.backends.add(
        name=OPENAI_BACKEND, service_backend="default/openai", route_name=ROUTE, schema=config_pb2.Schema(name="OpenAI")
    )
    openai_backend.auth.api_key.key = "sk-openai-backend"
    anthropic_backend = cfg.backends.add(
        name=ANTHROPIC_BACKEND,
        service_backend="default/anthropic",
        route_name=ROUTE,
        schema=config_pb2.Schema(name="Anthropic"),
        model_name_override="claude-test",
    )
    anthropic_backend.auth.anthropic_api_key.key = "sk-ant-backend"
    cfg.global_costs.add(metadata_key="llm_total_token", type=config_pb2.LLMRequestCost.TOTAL_TOKEN)
    cfg.global_costs.add(
        metadata_key="weighted", type=config_pb2.LLMRequestCost.CEL, cel="input_tokens + output_tokens * 2"
    )
    cfg.models.add(id="gpt-test", owned_by="openai")
    return cfg


async def _providers(*fail: int | None) -> list[FakeProvider]:
    out = []
    for status in fail:
        p = FakeProvider(fail_status=status)
        await p.start()
        out.append(p)
    return out


def _metadata(entry: dict) -> dict:
    aigw = entry.get("aigw")
    return aigw if isinstance(aigw, dict) else json.loads(aigw or "{}")


async def test_openai_passthrough_with_api_key() -> None:
    (upstream,) = await _providers(None)
    try:
        routes = [Route("gpt-test", "openai", ROUTE)]
        clusters = [Cluster("openai", [Endpoint(upstream.port, OPENAI_BACKEND)])]
        async with run_gateway(make_config(), routes, clusters) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-secret")
            resp = await client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
            assert resp.choices[0].message.content == "hello from openai"
            assert resp.usage is not None and resp.usage.total_tokens == 18

            seen = upstream.requests[-1]
            assert seen.path == "/v1/chat/completions"
            assert seen.headers["authorization"] == "Bearer sk-openai-backend"
            assert seen.json()["model"] == "gpt-test"

            models = await client.models.list()
            assert [m.id for m in models.data] == ["gpt-test"]

            entries = await gw.access_log.wait_for(1)
            md = _metadata(entries[0])
            assert md["backend_name"] == OPENAI_BACKEND
            assert md["route_name"] == ROUTE
            assert md["llm_total_token"] == 18
            assert md["weighted"] == 11 + 7 * 2
            assert "client-secret" not in gw.envoy.log_path.read_text()
    finally:
        await upstream.stop()


async def test_openai_client_to_anthropic_backend_with_tools() -> None:
    (upstream,) = await _providers(None)
    try:
        routes = [Route("claude", "anthropic", ROUTE)]
        clusters = [Cluster("anthropic", [Endpoint(upstream.port, ANTHROPIC_BACKEND)])]
        async with run_gateway(make_config(), routes, clusters) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-secret")
            resp = await client.chat.completions.create(
                model="claude",
                messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "weather?"}],
                tools=[WEATHER_TOOL],
                tool_choice="auto",
            )
            choice = resp.choices[0]
            assert choice.finish_reason == "tool_calls"
            assert choice.message.content == "hello from claude"
            call = choice.message.tool_calls[0]
            assert call.function.name == "get_weather"
            assert json.loads(call.function.arguments) == {"city": "Paris"}
            assert resp.usage.prompt_tokens == 10 and resp.usage.completion_tokens == 9
            assert resp.usage.prompt_tokens_details.cached_tokens == 3

            seen = upstream.requests[-1]
            assert seen.path == "/v1/messages"
            assert seen.headers["x-api-key"] == "sk-ant-backend"
            assert seen.headers["anthropic-version"] == "2023-06-01"
            body = seen.json()
            assert body["model"] == "claude-test"
            assert body["system"] == "be brief"
            assert body["max_tokens"] == 4096
            assert body["tools"][0]["input_schema"]["required"] == ["city"]

            # Streaming, with a tool call whose arguments arrive split across chunks.
            stream = await client.chat.completions.create(
                model="claude",
                messages=[{"role": "user", "content": "weather?"}],
                tools=[WEATHER_TOOL],
                stream=True,
                stream_options={"include_usage": True},
            )
            text, args, finish, usage = "", "", None, None
            async for chunk in stream:
                if chunk.usage:
                    usage = chunk.usage
                for c in chunk.choices:
                    text += c.delta.content or ""
                    for tc in c.delta.tool_calls or []:
                        args += tc.function.arguments or ""
                    finish = c.finish_reason or finish
            assert text == "hello from claude"
            assert json.loads(args) == {"city": "Paris"}
            assert finish == "tool_calls"
            assert usage is not None and usage.total_tokens == 19

            entries = await gw.access_log.wait_for(2)
            md = _metadata(entries[1])
            assert md["llm_total_token"] == 19
            assert md["model_name_override"] == "claude-test"
            assert md["response_model"] == "claude-test"
    finally:
        await upstream.stop()


async def test_streaming_without_include_usage_hides_forced_usage_chunk() -> None:
    (upstream,) = await _providers(None)
    try:
        routes = [Route("gpt-test", "openai", ROUTE)]
        clusters = [Cluster("openai", [Endpoint(upstream.port, OPENAI_BACKEND)])]
        async with run_gateway(make_config(), routes, clusters) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k")
            stream = await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            chunks = [c async for c in stream]
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello from openai"
            assert all(c.usage is None for c in chunks)
            # The gateway forced include_usage upstream because costs are configured.
            assert upstream.requests[-1].json()["stream_options"] == {"include_usage": True}
            entries = await gw.access_log.wait_for(1)
            assert _metadata(entries[0])["llm_total_token"] == 18
    finally:
        await upstream.stop()


async def test_failover_from_openai_503_to_anthropic() -> None:
    failing, healthy = await _providers(503, None)
    try:
        routes = [Route("gpt-test", "pool", ROUTE)]
        clusters = [
            Cluster(
                "pool",
                [
                    Endpoint(failing.port, OPENAI_BACKEND, priority=0),
                    Endpoint(healthy.port, ANTHROPIC_BACKEND, priority=1),
                ],
            )
        ]
        async with run_gateway(make_config(), routes, clusters) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-secret", max_retries=0)
            resp = await client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
            assert resp.choices[0].message.content == "hello from claude"
            assert resp.usage.total_tokens == 19

            first, second = failing.requests[-1], healthy.requests[-1]
            assert first.path == "/v1/chat/completions"
            assert first.headers["authorization"] == "Bearer sk-openai-backend"
            # The retry was translated from the original request, not from attempt 1's leftovers.
            assert second.path == "/v1/messages"
            assert "authorization" not in second.headers
            assert second.headers["x-api-key"] == "sk-ant-backend"
            assert second.json()["model"] == "claude-test"

            entries = await gw.access_log.wait_for(1)
            md = _metadata(entries[0])
            assert md["backend_name"] == ANTHROPIC_BACKEND
            assert md["llm_total_token"] == 19
    finally:
        await failing.stop()
        await healthy.stop()


async def test_anthropic_client_to_openai_backend_streaming() -> None:
    (upstream,) = await _providers(None)
    try:
        routes = [Route("gpt-test", "openai", ROUTE)]
        clusters = [Cluster("openai", [Endpoint(upstream.port, OPENAI_BACKEND)])]
        async with run_gateway(make_config(), routes, clusters) as gw:
            client = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="client-secret")
            msg = await client.messages.create(
                model="gpt-test", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
            )
            assert msg.content[0].text == "hello from openai"
            assert msg.usage.input_tokens == 11 and msg.usage.output_tokens == 7
            assert upstream.requests[-1].path == "/v1/chat/completions"
            assert upstream.requests[-1].headers["authorization"] == "Bearer sk-openai-backend"

            async with client.messages.stream(
                model="gpt-test",
                max_tokens=100,
                messages=[{"role": "user", "content": "weather?"}],
                tools=[{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}],
            ) as stream:
                final = await stream.get_final_message()
            assert final.stop_reason == "tool_use"
            tool = next(b for b in final.content if b.type == "tool_use")
            assert tool.input == {"city": "Paris"}
            assert final.usage.output_tokens == 7
    finally:
        await upstream.stop()


async def test_malformed_json_and_unknown_path() -> None:
    (upstream,) = await _providers(None)
    try:
        routes = [Route("gpt-test", "openai", ROUTE)]
        clusters = [Cluster("openai", [Endpoint(upstream.port, OPENAI_BACKEND)])]
        async with run_gateway(make_config(), routes, clusters) as gw:
            import aiohttp

            async with aiohttp.ClientSession() as s:
                async with s.post(gw.url + "/v1/chat/completions", data=b"{nope") as r:
                    assert r.status == 400
                    assert (await r.json())["error"]["type"] == "invalid_request_error"
                async with s.post(gw.url + "/anthropic/v1/nothing", data=b"{}") as r:
                    assert r.status == 404
                    assert (await r.json())["type"] == "error"
            assert upstream.requests == []
    finally:
        await upstream.stop()


def _byok_config() -> config_pb2.TranslatorConfig:
    cfg = config_pb2.TranslatorConfig(name="default/gw")
    for name, schema in ((OPENAI_BACKEND, "OpenAI"), (ANTHROPIC_BACKEND, "Anthropic")):
        b = cfg.backends.add(name=name, route_name=ROUTE, schema=config_pb2.Schema(name=schema))
        if schema == "OpenAI":
            b.auth.api_key.SetInParent()
        else:
            b.auth.anthropic_api_key.SetInParent()
        b.auth.credential_override.from_request_headers.header = "x-user-key"
    return cfg


async def test_credential_override_survives_failover() -> None:
    """Attempt 1 strips the override header from Envoy's shared header map; attempt 2 restores it
    from the sealed dynamic metadata attempt 1 wrote."""
    failing, healthy = await _providers(503, None)
    try:
        routes = [Route("gpt-test", "pool", ROUTE)]
        clusters = [
            Cluster(
                "pool",
                [
                    Endpoint(failing.port, OPENAI_BACKEND, priority=0),
                    Endpoint(healthy.port, ANTHROPIC_BACKEND, priority=1),
                ],
            )
        ]
        async with run_gateway(_byok_config(), routes, clusters) as gw:
            client = openai.AsyncOpenAI(
                base_url=gw.url + "/v1", api_key="unused", max_retries=0, default_headers={"x-user-key": "byok-1"}
            )
            resp = await client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
            assert resp.choices[0].message.content == "hello from claude"
            assert failing.requests[-1].headers["authorization"] == "Bearer byok-1"
            assert healthy.requests[-1].headers["x-api-key"] == "byok-1"
            for seen in (failing.requests[-1], healthy.requests[-1]):
                assert "x-user-key" not in seen.headers
            entries = await gw.access_log.wait_for(1)
            assert "byok-1" not in json.dumps(entries)
    finally:
        await failing.stop()
        await healthy.stop()


@pytest.mark.parametrize(("backend", "cluster_name"), [(OPENAI_BACKEND, "openai"), (ANTHROPIC_BACKEND, "anthropic")])
async def test_first_token_is_not_held_back(backend: str, cluster_name: str) -> None:
    """The provider pauses after its first event until the client has seen it: if anything in the
    path buffered the stream to the end, this would never complete."""
    import asyncio

    (upstream,) = await _providers(None)
    upstream.gate = asyncio.Event()
    try:
        routes = [Route("m", cluster_name, ROUTE)]
        clusters = [Cluster(cluster_name, [Endpoint(upstream.port, backend)])]
        async with run_gateway(make_config(), routes, clusters) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            iterator = stream.__aiter__()
            first = await asyncio.wait_for(iterator.__anext__(), timeout=30)
            assert first.choices[0].delta.role == "assistant"
            upstream.gate.set()
            rest = [c async for c in iterator]
            assert "".join(c.choices[0].delta.content or "" for c in rest if c.choices).startswith("hello from")
    finally:
        await upstream.stop()
