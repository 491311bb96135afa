"""Every request is metered, as the official SDKs really use the gateway.

The openai SDK closes the connection as soon as it has read `[DONE]`; when the provider's end of
stream comes a moment later (as it does over a real network; the fakes linger 20 ms), Envoy never
hands the final body chunk to the translator, and usage written only at end of stream was lost.
These tests send 100 requests per case through the real Envoy with the official SDKs and require
the provider's usage in every access-log line. The providers are the bundled fakes (stand-ins for
OpenAI and Anthropic that answer with realistic usage).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anthropic
import openai
import pytest

from tests.e2e.harness import resources
from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.providers import (
    ANTHROPIC_BACKEND,
    FALLBACK_SECONDARY,
    GLOBAL_COSTS,
    OPENAI_BACKEND,
    OPENAI_KEY,
    Fakes,
)
from tests.e2e.harness.resources import Ref, Route, Rule

pytestmark = pytest.mark.e2e

REQUESTS = 100
CONCURRENCY = 8
MESSAGES = [{"role": "user", "content": "count my tokens"}]
LINGER = {"x-fake-stream-linger-ms": "20"}


async def _openai_stream(client: openai.AsyncOpenAI, model: str) -> None:
    stream = await client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
    async for _ in stream:  # the SDK stops reading (and closes) at [DONE]
        pass


async def _openai_plain(client: openai.AsyncOpenAI, model: str) -> None:
    await client.chat.completions.create(model=model, messages=MESSAGES)


async def _anthropic_stream(client: anthropic.AsyncAnthropic, model: str) -> None:
    async with client.messages.stream(model=model, max_tokens=32, messages=MESSAGES) as stream:
        async for _ in stream.text_stream:
            pass


async def _anthropic_plain(client: anthropic.AsyncAnthropic, model: str) -> None:
    await client.messages.create(model=model, max_tokens=32, messages=MESSAGES)


async def _reported_total(client: openai.AsyncOpenAI | anthropic.AsyncAnthropic, model: str) -> int:
    """The provider's total usage for MESSAGES as the client sees it (the same for every call)."""
    if isinstance(client, openai.AsyncOpenAI):
        reply = await client.chat.completions.create(model=model, messages=MESSAGES)
        assert reply.usage is not None
        return reply.usage.total_tokens
    msg = await client.messages.create(model=model, max_tokens=32, messages=MESSAGES)
    return (
        msg.usage.input_tokens
        + (msg.usage.cache_read_input_tokens or 0)
        + (msg.usage.cache_creation_input_tokens or 0)
        + msg.usage.output_tokens
    )


async def _run(n: int, call: Callable[[], Awaitable[None]]) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with gate:
            await call()

    await asyncio.gather(*(one() for _ in range(n)))


CASES = {
    # case -> (client SDK, model, call, the backend that answers)
    "openai sdk -> anthropic, stream": ("openai", "claude", _openai_stream, ANTHROPIC_BACKEND),
    "openai sdk -> anthropic, plain": ("openai", "claude", _openai_plain, ANTHROPIC_BACKEND),
    "openai sdk -> openai, stream": ("openai", "gpt-test", _openai_stream, OPENAI_BACKEND),
    "anthropic sdk -> openai, stream": ("anthropic", "gpt-test", _anthropic_stream, OPENAI_BACKEND),
    "anthropic sdk -> openai, plain": ("anthropic", "gpt-test", _anthropic_plain, OPENAI_BACKEND),
    "anthropic sdk -> anthropic, stream": ("anthropic", "claude", _anthropic_stream, ANTHROPIC_BACKEND),
}


async def test_every_sdk_request_is_metered(fakes: Fakes) -> None:
    """100 requests per case: every access line carries the provider's own usage (not an
    estimate: the same total the provider reports to a non-streaming client)."""
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        openai_client = openai.AsyncOpenAI(
            base_url=gw.url + "/v1", api_key="client-key", max_retries=0, default_headers=LINGER
        )
        anthropic_client = anthropic.AsyncAnthropic(
            base_url=gw.url + "/anthropic", api_key="client-key", max_retries=0, default_headers=LINGER
        )
        logged = 0
        for case, (sdk, model, call, backend) in CASES.items():
            client = openai_client if sdk == "openai" else anthropic_client
            expected = await _reported_total(client, model)
            await _run(REQUESTS, lambda client=client, call=call, model=model: call(client, model))
            logged += REQUESTS + 1
            entries = await gw.access_log.wait_for(logged)
            batch = entries[logged - REQUESTS : logged]
            unmetered = [e for e in batch if e.get("llm_total_token") != expected]
            assert not unmetered, f"{case}: {len(unmetered)} of {REQUESTS} not metered as {expected}: {unmetered[0]}"
            assert {e["gen_ai.provider.name"] for e in batch} == {backend}, case
            assert all(e["weighted"] > e["llm_total_token"] for e in batch), case
            assert {e["usage_estimated"] for e in batch} == {False}, case
            # The token counts are in every line, costs configured or not.
            assert all(e["gen_ai.usage.input_tokens"] + e["gen_ai.usage.output_tokens"] == expected for e in batch)


async def test_stream_cut_by_the_provider_is_an_error_and_charges_what_was_reported(fakes: Fakes) -> None:
    """The Anthropic fake reports input tokens in message_start, a few events later the connection is
    cut: the client gets an error (no [DONE]) and the input tokens it was sent are charged."""
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        faults = {"x-fake-stream-abort-after": "3", "x-fake-stream-interval-ms": "50"}
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, default_headers=faults)
        with pytest.raises(Exception):  # noqa: B017 - the SDK surfaces the cut connection its own way
            stream = await client.chat.completions.create(
                model="claude", messages=[{"role": "user", "content": "tell me a long story"}], stream=True
            )
            async for _ in stream:
                pass
        (entry,) = await gw.access_log.wait_for(1)
        assert entry["gen_ai.provider.name"] == ANTHROPIC_BACKEND
        assert entry["llm_total_token"] > 0


@pytest.mark.parametrize("model", ["gpt-test", "claude"])
async def test_a_cut_stream_reaches_an_anthropic_client_in_its_api_shape(fakes: Fakes, model: str) -> None:
    """A provider that cuts the connection right after its stream's headers: Envoy has not sent the
    response on yet and answers the client itself (a 502 the router phase never sees). For the
    anthropic SDK that answer is an error in Anthropic's shape, not OpenAI's."""
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        faults = {"x-fake-stream-abort-after": "0"}
        client = anthropic.AsyncAnthropic(
            base_url=gw.url + "/anthropic", api_key="k", max_retries=0, default_headers=faults
        )
        with pytest.raises(anthropic.APIStatusError) as caught:
            async with client.messages.stream(model=model, max_tokens=64, messages=MESSAGES) as stream:
                async for _ in stream:
                    pass
        body = caught.value.body
        assert isinstance(body, dict) and body.get("type") == "error", body
        assert body["error"]["type"] in ("api_error", "overloaded_error"), body


@pytest.mark.parametrize(
    ("model", "backend"), [("claude", ANTHROPIC_BACKEND), ("gpt-test", OPENAI_BACKEND)], ids=["anthropic", "openai"]
)
async def test_stream_ended_early_by_the_provider_ends_with_an_error_event(
    fakes: Fakes, model: str, backend: str
) -> None:
    """A provider that closes its stream cleanly but before its final events: the openai SDK must
    raise (an error event), not return a truncated answer as if it were complete."""
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        client = openai.AsyncOpenAI(
            base_url=gw.url + "/v1", api_key="k", max_retries=0, default_headers={"x-fake-stream-end-after": "2"}
        )
        received: list[str] = []
        with pytest.raises(openai.APIError, match="before the response was complete"):
            stream = await client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
            async for chunk in stream:
                received.extend(c.delta.content or "" for c in chunk.choices)
        (entry,) = await gw.access_log.wait_for(1)
        assert entry["gen_ai.provider.name"] == backend


async def test_anthropic_stream_ended_early_ends_with_an_error_event(fakes: Fakes) -> None:
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        client = anthropic.AsyncAnthropic(
            base_url=gw.url + "/anthropic",
            api_key="k",
            max_retries=0,
            default_headers={"x-fake-stream-end-after": "2"},
        )
        with pytest.raises(anthropic.APIError, match="before the response was complete"):
            async with client.messages.stream(model="gpt-test", max_tokens=32, messages=MESSAGES) as stream:
                async for _ in stream.text_stream:
                    pass


async def test_streamed_failover_access_line_names_the_models_and_is_metered(fakes: Fakes) -> None:
    """Priority 0 (OpenAI) fails with 503, the retry streams from priority 1 (Anthropic): the access
    line names the requested and answering models and the backend that answered, with usage."""
    fakes.openai.always_fail(503)
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        stream = await client.chat.completions.create(model="fallback", messages=MESSAGES, stream=True)
        async for _ in stream:
            pass
        (entry,) = await gw.access_log.wait_for(1)
        assert entry["gen_ai.provider.name"] == FALLBACK_SECONDARY
        assert entry["gen_ai.request.model"] == "fallback"
        assert entry["gen_ai.request.model_override"] == "claude-test"
        assert entry["gen_ai.response.model"] == "claude-test"
        assert entry["llm_total_token"] > 0


@pytest.mark.parametrize("model", ["gpt-test", "claude"])
async def test_client_that_hangs_up_mid_stream_is_charged_for_what_it_was_sent(fakes: Fakes, model: str) -> None:
    """The client reads two chunks and closes the connection. The OpenAI fake reports usage only at
    the end, so the charge is the provisional estimate; the Anthropic fake reported its input tokens
    at message_start. Either way the access line carries a cost."""
    async with run_gateway(*fakes.resources(), global_costs=GLOBAL_COSTS) as gw:
        slow = {"x-fake-stream-interval-ms": "30"}
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, default_headers=slow)
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "tell me a long story " * 20}], stream=True
        )
        received = 0
        async for _ in stream:
            received += 1
            if received == 2:
                break
        await stream.close()
        (entry,) = await gw.access_log.wait_for(1)
        assert entry["response_flags"] == "DC"  # the client hung up
        assert entry["llm_total_token"] >= received
        assert entry["usage_estimated"] is True


MEDIA = Route("media", [Rule(["gpt-image-1", "gpt-4o-mini-tts", "gpt-4o-transcribe"], [Ref("openai")])])


async def test_streamed_images_speech_and_transcriptions_are_streamed_and_metered(fakes: Fakes) -> None:
    """Image generation (`stream`), speech (`stream_format: sse`) and transcription (form field
    `stream`) streams, through the official SDK: each event reaches the client as the provider
    sends it, and the usage in the last event is charged (they were held back whole and charged
    nothing, a way around token budgets)."""
    documents = (MEDIA.yaml(), resources.backend("openai", fakes.openai.port), resources.api_key("openai", OPENAI_KEY))
    async with run_gateway(*documents, global_costs=GLOBAL_COSTS) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)
        images = await client.images.generate(model="gpt-image-1", prompt="a red square", stream=True, partial_images=2)
        kinds = [event.type async for event in images]
        assert kinds == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
        speech = await client.audio.speech.create(
            model="gpt-4o-mini-tts", voice="alloy", input="say this slowly", stream_format="sse"
        )
        assert [line for line in (await speech.aread()).split(b"\n") if line.startswith(b"data:")][-1].startswith(
            b'data: {"type":"speech.audio.done"'
        )
        transcript = await client.audio.transcriptions.create(
            model="gpt-4o-transcribe", file=("hello.wav", b"RIFF" + bytes(400)), stream=True
        )
        done = [event async for event in transcript][-1]
        assert done.type == "transcript.text.done"
        entries = await gw.access_log.wait_for(3)
        by_path = {e["path"]: e for e in entries}
        for path in ("/v1/images/generations", "/v1/audio/speech", "/v1/audio/transcriptions"):
            entry = by_path[path]
            assert entry["llm_total_token"] > 0 and entry["usage_estimated"] is False, entry
        assert by_path["/v1/audio/transcriptions"]["llm_total_token"] == done.usage.total_tokens


async def test_speech_audio_reaches_the_client_as_the_provider_makes_it(fakes: Fakes) -> None:
    """The provider sends the first part of the audio and holds the rest until the client has it:
    buffered whole (as it was), the client would wait forever."""
    documents = (MEDIA.yaml(), resources.backend("openai", fakes.openai.port), resources.api_key("openai", OPENAI_KEY))
    fakes.openai.speech_gate = gate = asyncio.Event()
    try:
        async with run_gateway(*documents) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)
            async with client.audio.speech.with_streaming_response.create(
                model="gpt-4o-mini-tts", voice="alloy", input="a long sentence to read", response_format="mp3"
            ) as response:
                chunks = response.iter_bytes()
                first = await asyncio.wait_for(chunks.__anext__(), timeout=20)
                assert first.startswith(b"ID3")
                gate.set()
                rest = b"".join([chunk async for chunk in chunks])
            assert len(first + rest) == 10 + 32 * 8  # the fake's whole audio
            (entry,) = await gw.access_log.wait_for(1)
            assert entry["response_code"] == 200 and entry["gen_ai.provider.name"] == MEDIA.backend_name(0, 0)
    finally:
        fakes.openai.speech_gate = None
