"""More end-to-end cases through a real Envoy: Anthropic passthrough, embeddings, Azure, model
listing, and two translator processes behind one Envoy cluster."""

from __future__ import annotations

import asyncio
import base64
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import anthropic
import grpc
import openai
import pytest
from google.protobuf import json_format

from aigw.translator.v1 import config_pb2

from .envoy_harness import Cluster, Endpoint, Route, free_port
from .fake_provider import FakeProvider
from .gateway import run_gateway
from .test_e2e_envoy import ANTHROPIC_BACKEND, OPENAI_BACKEND, ROUTE, make_config

pytestmark = pytest.mark.e2e

AZURE_BACKEND = "default/azure/route/chat/rule/0/ref/2"


def _config() -> config_pb2.TranslatorConfig:
    cfg = make_config()
    az = cfg.backends.add(
        name=AZURE_BACKEND,
        route_name=ROUTE,
        schema=config_pb2.Schema(name="AzureOpenAI", version="2024-10-21"),
        model_name_override="my-deployment",
    )
    az.auth.azure_api_key.key = "az-backend-key"
    az.upstream_host = "myres.openai.azure.example"
    cfg.models.add(id="claude", owned_by="anthropic", created=1700000000)
    return cfg


@pytest.fixture
async def provider():
    p = FakeProvider()
    await p.start()
    yield p
    await p.stop()


async def test_anthropic_passthrough_streaming_and_count_tokens(provider: FakeProvider) -> None:
    routes = [Route("claude", "anthropic", ROUTE)]
    clusters = [Cluster("anthropic", [Endpoint(provider.port, ANTHROPIC_BACKEND)])]
    async with run_gateway(_config(), routes, clusters) as gw:
        client = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="client-secret")
        async with client.messages.stream(
            model="claude", max_tokens=50, system="sys", messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
        assert text == "hello from claude"
        assert final.usage.output_tokens == 9
        seen = provider.requests[-1]
        assert seen.path == "/v1/messages"
        assert seen.headers["x-api-key"] == "sk-ant-backend"
        assert "authorization" not in seen.headers
        assert seen.headers["anthropic-version"] == "2026-10-21"  # the SDK's own version is kept
        assert seen.json()["model"] == "claude-test"

        count = await client.messages.count_tokens(model="claude", messages=[{"role": "user", "content": "hi"}])
        assert count.input_tokens == 7
        assert provider.requests[-1].path == "/v1/messages/count_tokens"

        models = await client.models.list()
        assert [m.id for m in models.data] == ["gpt-test", "claude"]

        entries = await gw.access_log.wait_for(2)
        md = entries[0]["aigw"]
        assert md["llm_total_token"] == 19  # 5 + 3 cache read + 2 cache write + 9 output


async def test_embeddings_base64_passthrough(provider: FakeProvider) -> None:
    routes = [Route("embed", "openai", ROUTE)]
    clusters = [Cluster("openai", [Endpoint(provider.port, OPENAI_BACKEND)])]
    async with run_gateway(_config(), routes, clusters) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k")
        resp = await client.embeddings.create(model="embed", input="hello")
        assert resp.data[0].embedding == [0.5, -1.0, 2.0]
        sent = provider.requests[-1].json()
        assert sent["encoding_format"] == "base64"  # the SDK default reaches the provider untouched
        raw = await client.embeddings.with_raw_response.create(model="embed", input="x", encoding_format="base64")
        b64 = raw.http_response.json()["data"][0]["embedding"]
        assert list(struct.unpack("<3f", base64.b64decode(b64))) == [0.5, -1.0, 2.0]
        entries = await gw.access_log.wait_for(2)
        assert entries[0]["aigw"]["llm_total_token"] == 4


async def test_azure_backend(provider: FakeProvider) -> None:
    routes = [Route("gpt-test", "azure", ROUTE)]
    clusters = [Cluster("azure", [Endpoint(provider.port, AZURE_BACKEND)])]
    async with run_gateway(_config(), routes, clusters) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-secret")
        resp = await client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
        assert resp.choices[0].message.content == "hello from openai"
        seen = provider.requests[-1]
        assert seen.path == "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21"
        assert seen.headers["api-key"] == "az-backend-key"
        assert seen.headers["host"] == "myres.openai.azure.example"
        assert "authorization" not in seen.headers


async def test_two_translator_processes_behind_one_cluster(provider: FakeProvider, tmp_path: Path) -> None:
    """Envoy round-robins ext_proc streams over two translator processes, so the router-level and
    the upstream-level stream of one request land on different processes: nothing may be shared
    in memory between the phases (DESIGN decision 6)."""
    cfg = _config()
    path = tmp_path / "translator.json"
    path.write_text(json_format.MessageToJson(cfg))
    port = free_port()
    other = subprocess.Popen(
        [sys.executable, "-m", "aigw_translator", "--config", str(path), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=60)
        routes = [Route("claude", "anthropic", ROUTE)]
        clusters = [Cluster("anthropic", [Endpoint(provider.port, ANTHROPIC_BACKEND)])]
        async with run_gateway(cfg, routes, clusters, extra_translator_ports=(port,)) as gw:
            seen: Counter[str] = Counter()
            processor = gw.translator.processor
            original = processor.handle

            def counting(phase, req):
                if req.WhichOneof("request") == "request_headers":
                    seen[type(phase).__name__] += 1
                return original(phase, req)

            processor.handle = counting  # type: ignore[method-assign]
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
            n = 6
            for i in range(n):
                if i % 2:
                    stream = await client.chat.completions.create(
                        model="claude", messages=[{"role": "user", "content": "hi"}], stream=True
                    )
                    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
                else:
                    resp = await client.chat.completions.create(
                        model="claude", messages=[{"role": "user", "content": "hi"}]
                    )
                    text = resp.choices[0].message.content
                assert text == "hello from claude"
            # 2n ext_proc streams in total; the in-process translator served only part of them.
            print("SEEN", dict(seen))
            assert 0 < sum(seen.values()) < 2 * n, seen
    finally:
        other.terminate()
        other.wait(timeout=30)


async def test_envoy_local_replies_reach_the_client_in_its_schema(provider: FakeProvider) -> None:
    """Envoy's own replies (413 over the buffer limit, the 404 direct response for an unknown
    model) pass through the router-level ext_proc and are rendered in the client's schema."""
    import aiohttp

    routes = [Route("gpt-test", "openai", ROUTE)]
    clusters = [Cluster("openai", [Endpoint(provider.port, OPENAI_BACKEND)])]
    async with run_gateway(_config(), routes, clusters, buffer_limit_bytes=65536) as gw:
        async with aiohttp.ClientSession() as s:
            big = {"model": "gpt-test", "messages": [{"role": "user", "content": "x" * 200_000}]}
            async with s.post(gw.url + "/v1/chat/completions", json=big) as r:
                assert r.status == 413
                assert (await r.json())["error"]["message"] == "Payload Too Large"
            unknown = {"model": "nope", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
            async with s.post(gw.url + "/anthropic/v1/messages", json=unknown) as r:
                assert r.status == 404
                assert await r.json() == {
                    "type": "error",
                    "error": {"type": "not_found_error", "message": "no route for model"},
                }
        assert provider.requests == []


async def test_untranslatable_backend_answer_becomes_502(provider: FakeProvider) -> None:
    """The router phase rewrites :status in the buffered body response (headers are still held)."""
    provider.canned = (200, "application/json", b'{"content": 5}')
    routes = [Route("claude", "anthropic", ROUTE)]
    clusters = [Cluster("anthropic", [Endpoint(provider.port, ANTHROPIC_BACKEND)])]
    async with run_gateway(_config(), routes, clusters) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.APIStatusError) as err:
            await client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
        assert err.value.status_code == 502
        assert err.value.body["type"] == "server_error"
        # An upstream error body in Anthropic's shape reaches the OpenAI client in OpenAI's shape.
        provider.canned = (
            429,
            "application/json",
            b'{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}',
        )
        with pytest.raises(openai.RateLimitError) as rl:
            await client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
        assert rl.value.body == {"message": "slow", "type": "rate_limit_error", "param": None, "code": None}
