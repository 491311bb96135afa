"""End to end on the product path, OpenAI clients: YAML resources -> control plane (compile, xDS,
ADS, translator fed its TranslatorConfig) -> real Envoy (both ext_proc phases) -> provider fakes."""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp
import anthropic
import openai
import pytest

from aigw_fakes.anthropic import RETRY_AFTER_S
from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.providers import (
    ANTHROPIC_KEY,
    CACHE_READ,
    CACHE_WRITE,
    CHAT,
    FALLBACK_SECONDARY,
    GLOBAL_COSTS,
    MODELS,
    OPENAI_BACKEND,
    OPENAI_KEY,
    CannedProvider,
    Fakes,
    start_fakes,
    stop_fakes,
)

pytestmark = pytest.mark.e2e

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _costs_match(entry: dict, input_tokens: int, output_tokens: int) -> None:
    """The global and route costs of the access log entry are those of this usage."""
    assert entry["llm_total_token"] == input_tokens + output_tokens
    assert entry["weighted"] == input_tokens + output_tokens * 2
    assert entry["llm_output_token"] == output_tokens


async def test_openai_passthrough_with_api_key(fakes: Fakes) -> None:
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-secret", max_retries=0)
        resp = await client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
        assert resp.choices[0].message.content == "Fake gpt-test reply to: hi"
        assert resp.usage is not None and resp.usage.total_tokens > 0

        seen = fakes.openai.requests[-1]
        assert seen.path == "/v1/chat/completions"
        # The fake rejects any other key: the client's own Authorization never reaches it.
        assert seen.header("authorization") == f"Bearer {OPENAI_KEY}"
        assert seen.header("x-team") == "blue"  # the backendRef's headerMutation
        assert seen.body["user"] == "team-blue"  # and its bodyMutation
        assert seen.body["model"] == "gpt-test"

        models = await client.models.list()
        assert [m.id for m in models.data] == MODELS

        entry, models_entry = await gw.access_log.wait_for(2)
        assert models_entry["path"] == "/v1/models"
        assert entry["gen_ai.provider.name"] == OPENAI_BACKEND
        assert entry["gen_ai.request.model"] == "gpt-test"
        assert entry["upstream_cluster"] == f"{CHAT.ref}/rule/0"
        _costs_match(entry, resp.usage.prompt_tokens, resp.usage.completion_tokens)
        assert "client-secret" not in gw.access_log.path.read_text() + gw.envoy_log()


async def test_openai_client_to_anthropic_backend_with_tools(fakes: Fakes) -> None:
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-secret", max_retries=0)
        resp = await client.chat.completions.create(
            model="claude",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "weather in Paris?"}],
            tools=[WEATHER_TOOL],
            tool_choice="auto",
            temperature=0.5,
            stop=["END"],
        )
        choice = resp.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content  # Claude's short preamble before the tool call
        call = choice.message.tool_calls[0]
        assert call.function.name == "get_weather"
        assert set(json.loads(call.function.arguments)) == {"city"}
        assert resp.usage.prompt_tokens_details.cached_tokens == CACHE_READ

        seen = fakes.anthropic.requests[-1]
        assert seen.path == "/v1/messages"
        assert seen.header("x-api-key") == ANTHROPIC_KEY
        assert seen.header("authorization") is None
        assert seen.header("anthropic-version") == "2023-06-01"
        assert seen.body["model"] == "claude-test"
        assert seen.body["system"] == "be brief"
        assert seen.body["max_tokens"] == 4096
        assert seen.body["stop_sequences"] == ["END"]
        assert seen.body["tools"][0]["input_schema"]["required"] == ["city"]

        # The tool result goes back in the next turn.
        follow = await client.chat.completions.create(
            model="claude",
            messages=[
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp": 21})},
            ],
            tools=[WEATHER_TOOL],
        )
        assert follow.choices[0].finish_reason == "stop"
        assert follow.choices[0].message.content

        # Streaming, with a tool call whose arguments arrive in fragments.
        stream = await client.chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "weather in Paris?"}],
            tools=[WEATHER_TOOL],
            tool_choice="required",
            stream=True,
            stream_options={"include_usage": True},
        )
        args, finish, usage = "", None, None
        async for chunk in stream:
            usage = chunk.usage or usage
            for c in chunk.choices:
                for tc in c.delta.tool_calls or []:
                    args += tc.function.arguments or ""
                finish = c.finish_reason or finish
        assert set(json.loads(args)) == {"city"}
        assert finish == "tool_calls"
        assert usage is not None and usage.prompt_tokens_details.cached_tokens == CACHE_READ

        entries = await gw.access_log.wait_for(3)
        streamed = entries[2]
        assert streamed["gen_ai.request.model_override"] == "claude-test"
        assert streamed["gen_ai.response.model"] == "claude-test"
        # Anthropic's input excludes the cache; the gateway's usage counts all of it.
        assert usage.prompt_tokens > CACHE_READ + CACHE_WRITE
        _costs_match(streamed, usage.prompt_tokens, usage.completion_tokens)
        assert all(r.header("authorization") is None for r in fakes.anthropic.requests)


async def test_streaming_without_include_usage_hides_forced_usage_chunk(fakes: Fakes) -> None:
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        messages = [{"role": "user", "content": "tell me something"}]
        plain = await client.chat.completions.create(model="gpt-test", messages=messages)
        stream = await client.chat.completions.create(model="gpt-test", messages=messages, stream=True)
        chunks = [c async for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == plain.choices[0].message.content
        assert all(c.usage is None for c in chunks)
        # The gateway forced include_usage upstream because costs are configured.
        assert fakes.openai.requests[-1].body["stream_options"] == {"include_usage": True}
        _, streamed = await gw.access_log.wait_for(2)
        _costs_match(streamed, plain.usage.prompt_tokens, plain.usage.completion_tokens)


async def test_failover_from_openai_503_to_anthropic(fakes: Fakes) -> None:
    """The rule has two priorities: the control plane's retry policy (previous_priorities) sends the
    retry to the priority-1 Anthropic backend, and the client still gets an OpenAI answer."""
    fakes.openai.always_fail(503)
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-secret", max_retries=0)
        resp = await client.chat.completions.create(model="fallback", messages=[{"role": "user", "content": "hi"}])
        assert resp.choices[0].message.content == "Fake claude-test reply to: hi"
        assert resp.object == "chat.completion"

        stream = await client.chat.completions.create(
            model="fallback",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Fake claude-test reply to: hi"
        usage = chunks[-1].usage

        first, second = fakes.openai.requests[-1], fakes.anthropic.requests[-1]
        assert len(fakes.openai.requests) == len(fakes.anthropic.requests) == 2
        assert first.path == "/v1/chat/completions"
        assert first.header("authorization") == f"Bearer {OPENAI_KEY}"
        # The retry was translated from the original request, not from attempt 1's leftovers.
        assert second.path == "/v1/messages"
        assert second.header("authorization") is None
        assert second.header("x-api-key") == ANTHROPIC_KEY
        assert second.body["model"] == "claude-test"

        entries = await gw.access_log.wait_for(2)
        assert [e["gen_ai.provider.name"] for e in entries] == [FALLBACK_SECONDARY] * 2
        _costs_match(entries[0], resp.usage.prompt_tokens, resp.usage.completion_tokens)
        _costs_match(entries[1], usage.prompt_tokens, usage.completion_tokens)


async def test_credential_override_survives_failover() -> None:
    """Attempt 1 strips the override header from Envoy's shared header map; attempt 2 restores it
    from the sealed dynamic metadata attempt 1 wrote."""
    fakes = await start_fakes(openai_key="byok-1", anthropic_key="byok-1")
    fakes.openai.always_fail(503)
    try:
        async with run_gateway(*fakes.resources(override_header="x-user-key")) as gw:
            client = openai.AsyncOpenAI(
                base_url=gw.url + "/v1", api_key="unused", max_retries=0, default_headers={"x-user-key": "byok-1"}
            )
            resp = await client.chat.completions.create(model="fallback", messages=[{"role": "user", "content": "hi"}])
            assert resp.choices[0].message.content == "Fake claude-test reply to: hi"
            failed, served = fakes.openai.requests[-1], fakes.anthropic.requests[-1]
            assert failed.header("authorization") == "Bearer byok-1"
            assert served.header("x-api-key") == "byok-1"
            for seen in (failed, served):
                assert seen.header("x-user-key") is None
            entries = await gw.access_log.wait_for(1)
            assert "byok-1" not in json.dumps(entries)
    finally:
        await stop_fakes(fakes)


@pytest.mark.parametrize("model", ["gpt-test", "claude"])
async def test_first_token_is_not_held_back(fakes: Fakes, stream_gate: asyncio.Event, model: str) -> None:
    """The provider pauses after its first event until the client has seen it: if anything in the
    path buffered the stream to the end, this would never complete."""
    async with run_gateway(*fakes.resources()) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        iterator = stream.__aiter__()
        first = await asyncio.wait_for(iterator.__anext__(), timeout=30)
        assert first.choices[0].delta.role == "assistant"
        stream_gate.set()
        rest = [c async for c in iterator]
        assert "".join(c.choices[0].delta.content or "" for c in rest if c.choices).startswith("Fake ")


async def test_malformed_json_unknown_path_unknown_model_and_too_large(fakes: Fakes) -> None:
    """The translator's own errors (400, 404) and Envoy's local replies (413 over the Gateway's
    ClientTrafficPolicy buffer limit, the route-not-found 404) reach the client in its schema."""
    async with run_gateway(*fakes.resources(), buffer_limit="64Ki") as gw, aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/v1/chat/completions", data=b"{nope") as r:
            assert r.status == 400
            assert (await r.json())["error"]["type"] == "invalid_request_error"
        async with s.post(gw.url + "/anthropic/v1/nothing", data=b"{}") as r:
            assert r.status == 404
            assert (await r.json())["type"] == "error"
        big = {"model": "gpt-test", "messages": [{"role": "user", "content": "x" * 200_000}]}
        async with s.post(gw.url + "/v1/chat/completions", json=big) as r:
            assert r.status == 413
            assert (await r.json())["error"]["message"] == "Payload Too Large"
        # The model no rule takes is named (a new user's trial: "the model specified" named none),
        # escaped as JSON and cut at 200 characters.
        for model, named in (("nope", "nope"), ('a"b\\c', 'a"b\\c'), ("x" * 300, "x" * 200)):
            unknown = {"model": model, "messages": [{"role": "user", "content": "x"}]}
            async with s.post(gw.url + "/v1/chat/completions", json=unknown) as r:
                assert r.status == 404
                error = (await r.json())["error"]
                assert error["code"] == "model_not_found"
                assert f"the model specified in your request ('{named}') is not configured" in error["message"]
        # ... and one the x-ai-eg-model header names (a request with no model of its own).
        async with s.get(gw.url + "/v1/files", headers={"x-ai-eg-model": "nope-hdr"}) as r:
            assert r.status == 404
            assert "in your request ('nope-hdr') is not configured" in (await r.json())["error"]["message"]
        unknown = {"model": "nope", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
        async with s.post(gw.url + "/anthropic/v1/messages", json=unknown) as r:
            assert r.status == 404
            body = await r.json()
            assert body["type"] == "error"
            assert body["error"]["type"] == "not_found_error"
            assert body["error"]["message"].startswith("No matching route found.")
            assert "('nope')" in body["error"]["message"]
        # A request that names no model at all (`files.list()`) is told that, not "the model specified".
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.NotFoundError) as missing:
            await client.files.list()
        assert missing.value.body["code"] == "model_missing"
        assert "names no model" in missing.value.body["message"]
        # Only OpenAI's own /v1 paths pass through with the gateway's key (a new user's review sent
        # /foo/bar and /V1/organization/... to the provider, key and all); a base URL without its
        # /v1 (or an Anthropic one without /anthropic) is told the path meant.
        rootless = openai.AsyncOpenAI(base_url=gw.url, api_key="k", max_retries=0)
        with pytest.raises(openai.NotFoundError) as lost:
            await rootless.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
        assert "the base URL ends in /v1, /v1/chat/completions" in lost.value.message
        claude_code = anthropic.AsyncAnthropic(base_url=gw.url, api_key="k", max_retries=0)
        with pytest.raises(anthropic.NotFoundError) as lost_anthropic:
            await claude_code.messages.create(model="claude", max_tokens=8, messages=[{"role": "user", "content": "x"}])
        assert "/anthropic/v1/messages" in lost_anthropic.value.message
        for path in ("/foo/bar", "/V1/organization/users"):
            async with s.post(gw.url + path, json={"model": "gpt-test", "messages": []}) as r:
                assert r.status == 404 and "unsupported path" in (await r.json())["error"]["message"]
    assert fakes.openai.requests == fakes.anthropic.requests == []


async def test_untranslatable_backend_answer_becomes_502(fakes: Fakes) -> None:
    """The router phase rewrites :status in the buffered body response (headers are still held)."""
    canned = await CannedProvider(200, "application/json", b'{"content": 5}').start()
    try:
        # The Anthropic backend answers a body that is not an Anthropic message.
        async with run_gateway(*fakes.resources(anthropic_port=canned.port)) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
            with pytest.raises(openai.APIStatusError) as err:
                await client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
            assert err.value.status_code == 502
            assert err.value.body["type"] == "server_error"
    finally:
        await canned.stop()


async def test_anthropic_error_reaches_openai_client_in_openai_shape(fakes: Fakes) -> None:
    async with run_gateway(*fakes.resources()) as gw:
        client = openai.AsyncOpenAI(
            base_url=gw.url + "/v1", api_key="k", max_retries=0, default_headers={"x-fake-status": "429"}
        )
        with pytest.raises(openai.RateLimitError) as rl:
            await client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
        assert set(rl.value.body) == {"message", "type", "param", "code"}
        assert rl.value.body["type"] == "rate_limit_error"
        assert rl.value.body["message"]
        # When to try again reaches the client (the SDKs wait that long before retrying).
        assert rl.value.response.headers["retry-after"] == str(RETRY_AFTER_S)


async def test_openai_file_parts_reach_anthropic_as_document_blocks(fakes: Fakes) -> None:
    """Found by review: an OpenAI `file` part (a PDF) was refused (422) for Claude, which reads PDF
    documents (and Anthropic's own clients' documents already reached OpenAI as file parts). A PDF is
    a base64 document, any text a plain text document (the fake refuses other media types, as
    Anthropic does), and what Anthropic cannot read is a 422 naming it."""
    pdf = base64.b64encode(b"%PDF-1.4 stand-in").decode()
    text = base64.b64encode("plain words, é".encode()).decode()
    content = [
        {"type": "text", "text": "summarise"},
        {"type": "file", "file": {"filename": "report.pdf", "file_data": f"data:application/pdf;base64,{pdf}"}},
        {"type": "file", "file": {"filename": "notes.txt", "file_data": f"data:text/plain;base64,{text}"}},
    ]
    async with run_gateway(*fakes.resources()) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        reply = await client.chat.completions.create(model="claude", messages=[{"role": "user", "content": content}])
        assert reply.choices[0].message.content
        sent = fakes.anthropic.requests[-1].body["messages"][0]["content"]
        assert sent[1] == {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": pdf},
            "title": "report.pdf",
        }
        assert sent[2]["source"] == {"type": "text", "media_type": "text/plain", "data": "plain words, é"}
        archive = {"type": "file", "file": {"file_data": f"data:application/zip;base64,{text}"}}
        with pytest.raises(openai.UnprocessableEntityError) as refused:
            await client.chat.completions.create(model="claude", messages=[{"role": "user", "content": [archive]}])
        assert "'application/zip' cannot be sent to an Anthropic backend" in refused.value.message
