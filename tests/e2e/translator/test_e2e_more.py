"""More end-to-end cases on the product path: Anthropic clients (to Anthropic, OpenAI and Azure
backends), embeddings, Azure with gzip, and two translator processes
behind one Envoy cluster."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections import Counter, defaultdict

import aiohttp
import anthropic
import openai
import pytest

from aigw_translator.extproc import headers_to_dict
from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.providers import (
    ANTHROPIC_BACKEND,
    ANTHROPIC_KEY,
    AZURE_BACKEND,
    AZURE_KEY,
    AZURE_VERSION,
    CACHE_READ,
    CACHE_WRITE,
    GLOBAL_COSTS,
    MODELS,
    OPENAI_KEY,
    Fakes,
)

pytestmark = pytest.mark.e2e

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


async def test_anthropic_passthrough_streaming_count_tokens_and_models(fakes: Fakes) -> None:
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        client = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="client-secret", max_retries=0)
        msg = await client.messages.create(
            model="claude", max_tokens=50, system="sys", messages=[{"role": "user", "content": "hi"}]
        )
        assert msg.content[0].text == "Fake claude-test reply to: hi"
        async with client.messages.stream(
            model="claude", max_tokens=50, system="sys", messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
        assert text == msg.content[0].text
        assert final.usage.cache_read_input_tokens == CACHE_READ
        seen = fakes.anthropic.requests[-1]
        assert seen.path == "/v1/messages"
        assert seen.header("x-api-key") == ANTHROPIC_KEY
        assert seen.header("authorization") is None
        # The SDK's own version is kept.
        assert seen.header("anthropic-version") == client.default_headers["anthropic-version"]
        assert seen.body["model"] == "claude-test"

        count = await client.messages.count_tokens(model="claude", messages=[{"role": "user", "content": "hi"}])
        assert count.input_tokens > CACHE_READ + CACHE_WRITE
        assert fakes.anthropic.requests[-1].path == "/v1/messages/count_tokens"

        models = await client.models.list()
        assert [m.id for m in models.data] == MODELS
        # Pages of two, as the SDK follows them (after_id = the last page's last_id).
        page = await client.models.list(limit=2)
        assert [m.id for m in page.data] == MODELS[:2] and page.has_more
        assert [m.id async for m in await client.models.list(limit=2)] == MODELS

        plain, streamed = (await gw.access_log.wait_for(4))[:2]  # then count_tokens and the model lists
        for entry, usage in ((plain, msg.usage), (streamed, final.usage)):
            assert entry["gen_ai.provider.name"] == ANTHROPIC_BACKEND
            # Usage counts Anthropic's input, cache reads and cache writes as input.
            total_input = usage.input_tokens + CACHE_READ + CACHE_WRITE
            assert entry["llm_total_token"] == total_input + usage.output_tokens
            assert entry["weighted"] == total_input + usage.output_tokens * 2
            assert entry["llm_output_token"] == usage.output_tokens


async def test_anthropic_client_to_openai_backend(fakes: Fakes) -> None:
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        client = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="client-secret", max_retries=0)
        msg = await client.messages.create(
            model="gpt-test", max_tokens=64, system="be brief", messages=[{"role": "user", "content": "hi"}]
        )
        assert msg.content[0].type == "text" and msg.stop_reason == "end_turn"
        assert msg.content[0].text == "Fake gpt-test reply to: hi"
        seen = fakes.openai.requests[-1]
        assert seen.path == "/v1/chat/completions"
        assert seen.header("authorization") == f"Bearer {OPENAI_KEY}"
        assert seen.body["messages"][0] == {"role": "system", "content": "be brief"}

        async with client.messages.stream(
            model="gpt-test",
            max_tokens=64,
            messages=[{"role": "user", "content": "weather in Paris?"}],
            tools=[{"name": "get_weather", "input_schema": WEATHER_SCHEMA}],
            tool_choice={"type": "any"},
        ) as stream:
            final = await stream.get_final_message()
        assert final.stop_reason == "tool_use"
        tool = next(b for b in final.content if b.type == "tool_use")
        assert tool.name == "get_weather" and set(tool.input) == {"city"}
        assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0

        plain, streamed = await gw.access_log.wait_for(2)
        for entry, usage in ((plain, msg.usage), (streamed, final.usage)):
            assert entry["llm_total_token"] == usage.input_tokens + usage.output_tokens
            assert entry["llm_output_token"] == usage.output_tokens


async def test_an_anthropic_clients_max_tokens_is_capped_to_what_a_known_openai_model_takes(fakes: Fakes) -> None:
    """Claude Code sends max_tokens 32000; gpt-4o-mini (the Azure deployment's model) takes at most
    16384 and the provider (its fake, as the API does) refuses more. A model of unknown name is sent
    the client's figure."""
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        client = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0)
        for model, fake in (("azure-gpt", fakes.azure), ("gpt-test", fakes.openai)):
            # Streamed, as Claude Code asks (the SDK refuses max_tokens this large unstreamed).
            async with client.messages.stream(
                model=model, max_tokens=32000, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                final = await stream.get_final_message()
            assert final.stop_reason == "end_turn"
            assert fake.requests[-1].body["max_completion_tokens"] == (16384 if model == "azure-gpt" else 32000)


async def test_an_openai_account_out_of_credit_is_a_billing_error_the_anthropic_sdk_does_not_retry(
    fakes: Fakes,
) -> None:
    """OpenAI answers 429 insufficient_quota for an account without credit; an Anthropic client had
    it as a rate limit (429 rate_limit_error), which the SDK retried and Claude Code waits on. It is
    Anthropic's 402 billing_error: the SDK (retries left at its default) asks once."""
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        client = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="k")
        asked = len(fakes.openai.requests)
        fakes.openai.out_of_credit = True
        try:
            with pytest.raises(anthropic.APIStatusError) as raised:
                await client.messages.create(
                    model="gpt-test", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
                )
        finally:
            fakes.openai.out_of_credit = False
        assert raised.value.status_code == 402
        error = raised.value.body["error"]  # type: ignore[index]
        assert error["type"] == "billing_error" and error["message"].startswith("You exceeded your current quota")
        assert len(fakes.openai.requests) == asked + 1


@pytest.mark.parametrize("model", ["gpt-test", "azure-gpt", "fallback"])
async def test_count_tokens_on_an_openai_shaped_backend_is_answered_with_an_estimate(fakes: Fakes, model: str) -> None:
    """OpenAI and Azure OpenAI count no tokens: the gateway answers Anthropic's count_tokens itself,
    on a rule Envoy serves on one stream (gpt-test, azure-gpt) and on one whose backends differ
    (fallback: the OpenAI backend first). Nothing reaches a provider; a malformed request gets the
    400 a Messages request would."""
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        client = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0)
        short = await client.messages.count_tokens(model=model, messages=[{"role": "user", "content": "hi"}])
        long = await client.messages.count_tokens(
            model=model,
            system="be brief",
            messages=[{"role": "user", "content": "word " * 400}],
            tools=[{"name": "get_weather", "input_schema": WEATHER_SCHEMA}],
        )
        assert 0 < short.input_tokens < long.input_tokens
        assert long.input_tokens >= 400 * len("word ") // 4
        assert not fakes.openai.requests and not fakes.azure.requests and not fakes.anthropic.requests
        with pytest.raises(anthropic.BadRequestError) as refused:
            await client.messages.count_tokens(model=model, messages=[])
        assert refused.value.body["error"]["type"] == "invalid_request_error"


async def test_the_responses_api_on_an_azure_version_that_has_none_is_refused_naming_it(fakes: Fakes) -> None:
    """The harness's Azure backend is sent 2024-10-21, which has no Responses API (Azure answers a
    bare 404): the gateway's 422 names the version, and nothing reaches the provider."""
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.UnprocessableEntityError) as refused:
            await client.responses.create(model="azure-gpt", input="hi")
        assert "needs api-version 2025-03-01-preview or later; this backend is sent 2024-10-21" in str(refused.value)
        assert not fakes.azure.requests


async def test_embeddings_base64_passthrough(fakes: Fakes) -> None:
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        resp = await client.embeddings.create(model="embed", input="hello")
        vector = resp.data[0].embedding
        assert len(vector) > 0
        assert fakes.openai.requests[-1].body["encoding_format"] == "base64"  # the SDK default, untouched
        raw = await client.embeddings.with_raw_response.create(model="embed", input="hello", encoding_format="base64")
        b64 = raw.http_response.json()["data"][0]["embedding"]
        decoded = struct.unpack(f"<{len(vector)}f", base64.b64decode(b64))
        assert list(decoded) == pytest.approx(vector)
        entries = await gw.access_log.wait_for(2)
        assert entries[0]["llm_total_token"] == resp.usage.total_tokens


async def test_azure_chat_and_embeddings_with_gzip(fakes: Fakes) -> None:
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        client = openai.AsyncOpenAI(
            base_url=gw.url + "/v1", api_key="client-secret", max_retries=0, default_headers={"x-fake-gzip": "1"}
        )
        resp = await client.chat.completions.create(model="azure-gpt", messages=[{"role": "user", "content": "hi"}])
        assert resp.choices[0].message.content == "Fake gpt-4o-mini-2024-07-18 reply to: hi"
        emb = await client.embeddings.create(model="azure-gpt", input="hello")
        assert len(emb.data[0].embedding) > 0
        chat, embeddings = fakes.azure.requests
        assert chat.path == "/openai/deployments/gpt-4o-mini/chat/completions"
        assert embeddings.path == "/openai/deployments/gpt-4o-mini/embeddings"
        assert chat.query == {"api-version": AZURE_VERSION}
        assert chat.header("api-key") == AZURE_KEY
        assert chat.header("authorization") is None
        # The Backend is reached by FQDN: the Host header is its hostname (auto_host_rewrite).
        assert chat.header("host") == "localhost"
        entries = await gw.access_log.wait_for(2)
        assert entries[0]["gen_ai.provider.name"] == AZURE_BACKEND
        assert entries[0]["llm_total_token"] == resp.usage.total_tokens


async def test_claude_code_style_client_against_azure(fakes: Fakes) -> None:
    async with run_gateway(*fakes.resources()) as gw:
        client = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="client-key", max_retries=0)
        async with client.messages.stream(
            model="azure-gpt",
            max_tokens=64,
            system=[{"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}]}],
            extra_query={"beta": "true"},
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
        assert text.startswith("Fake gpt-4o-mini-2024-07-18 reply to:")
        seen = fakes.azure.requests[-1]
        assert seen.path == "/openai/deployments/gpt-4o-mini/chat/completions"
        assert seen.query == {"api-version": AZURE_VERSION}
        assert seen.header("api-key") == AZURE_KEY
        assert seen.header("anthropic-version") is None


REQUESTS = 500
CONCURRENCY = 32
HI = [{"role": "user", "content": "hi"}]
# Request kinds of the load: (path, body, streamed, the answer the fakes give).
KINDS = (
    ("/v1/chat/completions", {"model": "claude", "messages": HI}, False, "Fake claude-test reply to: hi"),
    (
        "/v1/chat/completions",
        {"model": "claude", "messages": HI, "stream": True},
        True,
        "Fake claude-test reply to: hi",
    ),
    (
        "/anthropic/v1/messages",
        {"model": "gpt-test", "max_tokens": 64, "messages": HI},
        False,
        "Fake gpt-test reply to: hi",
    ),
    (
        "/v1/chat/completions",
        {"model": "azure-gpt", "messages": HI, "stream": True},
        True,
        "Fake gpt-4o-mini-2024-07-18 reply to: hi",
    ),
)


def _answer_text(body: bytes, streamed: bool) -> str:
    """The text of an OpenAI chat completion (plain or SSE) or an Anthropic message."""
    if not streamed:
        answer = json.loads(body)
        if "choices" in answer:
            return answer["choices"][0]["message"]["content"]
        return answer["content"][0]["text"]
    text = ""
    for line in body.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:])["choices"]:
                text += choice["delta"].get("content") or ""
    return text


async def _load(url: str) -> list[str | None]:
    """REQUESTS mixed requests, CONCURRENCY at a time, request i tagged `x-test-request: i`; the
    text of each answer (None for a failed one). A plain HTTP client: the official SDKs cost about
    5 ms of CPU per request here, in the process that also runs a translator and the fakes, and
    their compatibility is what the other tests prove."""
    gate = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession(headers={"authorization": "Bearer client-key"}) as session:

        async def one(i: int) -> str | None:
            path, body, streamed, _ = KINDS[i % len(KINDS)]
            async with gate, session.post(url + path, json=body, headers={"x-test-request": str(i)}) as resp:
                data = await resp.read()
                return _answer_text(data, streamed) if resp.status == 200 else None

        return await asyncio.gather(*(one(i) for i in range(REQUESTS)))


async def test_two_translator_processes_behind_one_cluster(fakes: Fakes) -> None:
    """The translator cluster the control plane emits has two endpoints: the control plane's
    in-process translator and a `python -m aigw_translator` process on the fleet's TranslatorConfig.
    Envoy spreads the ext_proc streams over both, so the router-level and the upstream-level stream
    of one request land on different processes: nothing may be shared in memory between the phases
    (DESIGN decision 6). 500 mixed requests (OpenAI chat completions and Anthropic messages, plain
    and streamed, to Anthropic, OpenAI and Azure backends, 32 at a time), none may fail."""
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS, extra_translators=1) as gw:
        # Which phases of which request the in-process translator served.
        phases: dict[str, set[str]] = defaultdict(set)
        processor = gw.translator.processor
        original = processor.handle

        def recording(phase, req):  # type: ignore[no-untyped-def]
            if req.WhichOneof("request") == "request_headers":
                request_id = headers_to_dict(req.request_headers).get("x-test-request")
                if request_id is not None:
                    phases[request_id].add(type(phase).__name__)
            return original(phase, req)

        processor.handle = recording  # type: ignore[method-assign]
        answers = await _load(gw.url)
        wrong = [(i, a) for i, a in enumerate(answers) if a != KINDS[i % len(KINDS)][3]]
        assert wrong == []

        served = sum(len(p) for p in phases.values())
        split = [i for i, p in phases.items() if len(p) == 1]
        # Of the 2 x 500 ext_proc streams the in-process translator served some and the other
        # process the rest, and requests had their two phases served by different processes.
        assert 0 < served < 2 * REQUESTS, served
        assert split, phases
        entries = await gw.access_log.wait_for(REQUESTS)
        assert Counter(e["response_code"] for e in entries) == Counter({200: REQUESTS})
        assert all(e["llm_total_token"] for e in entries)


IGNORES_STREAM = {"x-fake-stream-ignored": "1"}


@pytest.mark.parametrize("model", ["gpt-test", "claude"], ids=["openai", "anthropic"])
async def test_a_complete_answer_to_a_stream_request_reaches_the_sdk_as_a_stream(fakes: Fakes, model: str) -> None:
    """A backend that ignores `stream` and answers one JSON body (the fakes do so on request, as
    some OpenAI-compatible servers do): each SDK, asking for a stream, reads the whole answer from
    the stream's events, with its usage and finish reason, where it used to read no event at all;
    the answer is metered."""
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, default_headers=IGNORES_STREAM)
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "say something"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        text = "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices)
        assert text and {c.finish_reason for chunk in chunks for c in chunk.choices} >= {"stop"}
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
        anthropic_client = anthropic.AsyncAnthropic(
            base_url=gw.url + "/anthropic", api_key="k", max_retries=0, default_headers=IGNORES_STREAM
        )
        async with anthropic_client.messages.stream(
            model=model, max_tokens=64, messages=[{"role": "user", "content": "say something"}]
        ) as events:
            message = await events.get_final_message()
        assert message.content and message.content[0].type == "text" and message.content[0].text
        assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
        entries = await gw.access_log.wait_for(2)
        assert all(e["llm_total_token"] > 0 and e["usage_estimated"] is False for e in entries), entries


@pytest.mark.parametrize("model", ["gpt-test", "claude"], ids=["openai", "anthropic"])
async def test_anthropic_structured_output_comes_back_as_json_of_the_schema(fakes: Fakes, model: str) -> None:
    """The anthropic SDK's output_config.format (json_schema): Claude takes it as it is; an OpenAI
    backend gets it as a strict json_schema response_format. Either way the text is JSON of the
    schema (each fake answers so only when asked, as its provider does)."""
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        client = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0)
        message = await client.messages.create(
            model=model,
            max_tokens=128,
            messages=[{"role": "user", "content": "where to?"}],
            extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}}},
        )
    assert message.content[0].type == "text"
    assert isinstance(json.loads(message.content[0].text)["city"], str)


PARALLEL = {"x-fake-parallel-tool-calls": "1"}
TIME_SCHEMA = {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}


async def test_parallel_tool_calls_cross_the_translation_both_ways(fakes: Fakes) -> None:
    """A model that calls two tools at once (the fakes do on request): the openai SDK gets both
    calls from Claude, and the anthropic SDK both tool_use blocks from an OpenAI model, whole and
    streamed, each with its own id and arguments."""
    openai_tools = [
        {"type": "function", "function": {"name": name, "parameters": schema}}
        for name, schema in (("get_weather", WEATHER_SCHEMA), ("get_time", TIME_SCHEMA))
    ]
    anthropic_tools = [
        {"name": t["function"]["name"], "input_schema": t["function"]["parameters"]} for t in openai_tools
    ]
    ask = [{"role": "user", "content": "weather and time in Oslo?"}]
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, default_headers=PARALLEL)
        reply = await client.chat.completions.create(model="claude", messages=ask, tools=openai_tools)
        calls = reply.choices[0].message.tool_calls or []
        assert [c.function.name for c in calls] == ["get_weather", "get_time"]
        assert len({c.id for c in calls}) == 2 and reply.choices[0].finish_reason == "tool_calls"
        assert json.loads(calls[0].function.arguments).keys() == {"city"}
        async with client.chat.completions.stream(model="claude", messages=ask, tools=openai_tools) as stream:
            final = await stream.get_final_completion()
        streamed = final.choices[0].message.tool_calls or []
        assert [(c.function.name, json.loads(c.function.arguments).keys()) for c in streamed] == [
            ("get_weather", {"city"}),
            ("get_time", {"zone"}),
        ]
        anthropic_client = anthropic.AsyncAnthropic(
            base_url=gw.url + "/anthropic", api_key="k", max_retries=0, default_headers=PARALLEL
        )
        message = await anthropic_client.messages.create(
            model="gpt-test", max_tokens=128, messages=ask, tools=anthropic_tools
        )
        async with anthropic_client.messages.stream(
            model="gpt-test", max_tokens=128, messages=ask, tools=anthropic_tools
        ) as events:
            streamed_message = await events.get_final_message()
        for answer in (message, streamed_message):
            uses = [b for b in answer.content if b.type == "tool_use"]
            assert [(b.name, set(b.input)) for b in uses] == [("get_weather", {"city"}), ("get_time", {"zone"})]
            assert len({b.id for b in uses}) == 2 and answer.stop_reason == "tool_use"
