"""Claude on AWS Bedrock through InvokeModel (schema AWSAnthropic) through real Envoy, with the
official openai SDK (chat completions, translated) and the anthropic SDK (/anthropic/v1/messages,
passed through) as clients: InvokeModel and InvokeModelWithResponseStream, SigV4 over the final
request, usage in the access log, errors in each client's shape.

The provider is aigw_fakes.BedrockFake: it recomputes every SigV4 signature with botocore from the
request as it arrived, takes InvokeModel bodies only with `anthropic_version: bedrock-2023-05-31`
and without `model` or `stream`, validates them with the Anthropic fake's rules, and streams real
event-stream `chunk` frames (base64 Anthropic events) written in pieces that cross frame boundaries."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from aigw_fakes import BedrockFake
from aigw_fakes.bedrock import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY
from tests.e2e.harness import resources
from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.resources import Ref, Route, Rule

from .test_bedrock import _aws_policy

pytestmark = pytest.mark.e2e

MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
ANSWER_MODEL = "claude-3-5-haiku-20241022"  # the `model` Bedrock's Anthropic answers name
CACHE_READ, CACHE_WRITE = 7, 4
ROUTES = Route("claude", [Rule([MODEL], [Ref("claude")])])
CHAT = [{"role": "user", "content": "hello there"}]
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather of a city", "parameters": WEATHER_SCHEMA},
}


def _docs(port: int) -> tuple[str, ...]:
    return (
        ROUTES.yaml(),
        resources.backend("claude", port, "AWSAnthropic"),
        _aws_policy("claude", TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY),
    )


@pytest.fixture
async def bedrock():
    fake = await BedrockFake(cache_read_input_tokens=CACHE_READ, cache_write_input_tokens=CACHE_WRITE).start()
    try:
        yield fake
    finally:
        await fake.stop()


def _check_invoke_calls(bedrock: BedrockFake, operations: list[str]) -> None:
    assert [c.operation for c in bedrock.calls] == operations
    for call, seen in zip(bedrock.calls, bedrock.requests, strict=True):
        assert call.model_id == MODEL
        assert call.raw_path.startswith("/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke")
        assert call.access_key_id == TEST_ACCESS_KEY_ID
        assert call.body["anthropic_version"] == "bedrock-2023-05-31"
        assert "model" not in call.body and "stream" not in call.body
        assert seen.header("anthropic-version") is None and seen.header("x-api-key") is None
        assert seen.header("authorization", "").startswith("AWS4-HMAC-SHA256 ")
        assert "client-key" not in json.dumps(seen.headers)


async def test_openai_sdk_invoke_model_and_stream(bedrock: BedrockFake) -> None:
    async with run_gateway(*_docs(bedrock.port)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)
        resp = await client.chat.completions.create(model=MODEL, messages=CHAT, max_completion_tokens=200)
        assert resp.choices[0].message.content == f"Fake {ANSWER_MODEL} reply to: hello there"
        assert resp.choices[0].finish_reason == "stop" and resp.model == ANSWER_MODEL
        assert resp.usage is not None
        assert resp.usage.prompt_tokens > CACHE_READ + CACHE_WRITE
        assert resp.usage.prompt_tokens_details and resp.usage.prompt_tokens_details.cached_tokens == CACHE_READ

        stream = await client.chat.completions.create(
            model=MODEL, messages=CHAT, tools=[WEATHER], stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        assert calls and calls[0].function and calls[0].function.name == "get_weather"
        arguments = "".join(tc.function.arguments or "" for tc in calls if tc.function)
        assert json.loads(arguments)["city"]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["tool_calls"]
        usage = chunks[-1].usage
        assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > CACHE_READ + CACHE_WRITE

        _check_invoke_calls(bedrock, ["InvokeModel", "InvokeModelWithResponseStream"])
        assert bedrock.calls[0].body["max_tokens"] == 200
        assert bedrock.calls[1].body["tools"][0]["name"] == "get_weather"

        entries = await gw.access_log.wait_for(2)
        for entry, reported in zip(entries, (resp.usage, usage), strict=True):
            assert entry["path"] == "/v1/chat/completions"
            assert entry["gen_ai.usage.input_tokens"] == reported.prompt_tokens
            assert entry["gen_ai.usage.output_tokens"] == reported.completion_tokens
            assert entry["gen_ai.response.model"] == ANSWER_MODEL
            assert entry["usage_estimated"] is False


async def test_anthropic_sdk_invoke_model_and_stream(bedrock: BedrockFake) -> None:
    async with run_gateway(*_docs(bedrock.port)) as gw:
        client = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="client-key", max_retries=0)
        msg = await client.messages.create(
            model=MODEL, max_tokens=64, system="be brief", messages=[{"role": "user", "content": "hi"}]
        )
        assert msg.content[0].type == "text" and msg.content[0].text == f"Fake {ANSWER_MODEL} reply to: hi"
        assert msg.stop_reason == "end_turn" and msg.model == ANSWER_MODEL
        assert (msg.usage.cache_read_input_tokens, msg.usage.cache_creation_input_tokens) == (CACHE_READ, CACHE_WRITE)

        async with client.messages.stream(
            model=MODEL,
            max_tokens=64,
            messages=[{"role": "user", "content": "weather in Paris?"}],
            tools=[{"name": "get_weather", "input_schema": WEATHER_SCHEMA}],
            tool_choice={"type": "any"},
        ) as stream:
            final = await stream.get_final_message()
        assert final.stop_reason == "tool_use"
        tool = next(b for b in final.content if b.type == "tool_use")
        assert tool.name == "get_weather" and set(tool.input) == {"city"}  # type: ignore[arg-type]
        assert final.usage.output_tokens > 0

        _check_invoke_calls(bedrock, ["InvokeModel", "InvokeModelWithResponseStream"])
        assert bedrock.calls[0].body["system"] == "be brief"
        assert bedrock.calls[1].body["tool_choice"] == {"type": "any"}

        entries = await gw.access_log.wait_for(2)
        for entry, usage in zip(entries, (msg.usage, final.usage), strict=True):
            assert entry["path"] == "/anthropic/v1/messages"
            # Anthropic's input excludes cache reads and writes: the log counts them as input.
            assert entry["gen_ai.usage.input_tokens"] == usage.input_tokens + CACHE_READ + CACHE_WRITE
            assert entry["gen_ai.usage.output_tokens"] == usage.output_tokens
            assert entry["gen_ai.response.model"] == ANSWER_MODEL
            assert entry["usage_estimated"] is False


async def test_errors_in_each_clients_shape(bedrock: BedrockFake) -> None:
    async with run_gateway(*_docs(bedrock.port)) as gw:
        oai = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        claude = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0)

        # An in-stream exception frame: each client's stream ends with its own error event.
        fault = {"x-fake-stream-error-after": "3", "x-fake-stream-error-type": "throttlingException"}
        stream = await oai.chat.completions.create(model=MODEL, messages=CHAT, stream=True, extra_headers=fault)
        with pytest.raises(openai.APIError) as oai_err:
            _ = [c async for c in stream]
        assert "Too many requests" in oai_err.value.message
        with pytest.raises(anthropic.APIStatusError) as claude_err:
            async with claude.messages.stream(
                model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}], extra_headers=fault
            ) as s:
                await s.get_final_message()
        assert "Too many requests" in str(claude_err.value)

        # A Bedrock error answer.
        bedrock.always_fail(429)
        with pytest.raises(openai.RateLimitError):
            await oai.chat.completions.create(model=MODEL, messages=CHAT)
        with pytest.raises(anthropic.RateLimitError) as limited:
            await claude.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
        assert isinstance(limited.value.body, dict) and limited.value.body["type"] == "error"

        entries = await gw.access_log.wait_for(4)
        assert [e["response_code"] for e in entries[2:]] == [429, 429]
