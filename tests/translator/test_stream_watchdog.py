"""The router phase's stream idle watchdog (a route with a streamIdleTimeout), driven without Envoy:
the response body in FULL_DUPLEX_STREAMED mode, and a stream whose backend went silent ended by
the translator with an error event in the client's schema."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

import aigw_contract as contract
from aigw_translator.router_phase import watchdog_delay
from aigw_translator.server import ExternalProcessor
from aigw_translator.watchdog import with_deadline

from .extproc_helpers import (
    ROUTER_STREAM,
    StreamContext,
    drive,
    metadata,
    request_body,
    request_headers,
    response_body,
    response_headers,
)
from .test_server_router import ANTHROPIC, CHAT, MESSAGES, OPENAI, config

Mode = processing_mode_pb2.ProcessingMode
SSE = {":status": "200", "content-type": "text/event-stream"}
CHUNK = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}\n\n'
)
DONE = b"data: [DONE]\n\n"
# Generous next to the watchdog (0.3 s for a 0.4 s idle timeout): how long a test waits for it.
PATIENCE_S = 10.0


def idle_stream(millis: int) -> tuple[tuple[str, str], ...]:
    return (*ROUTER_STREAM, (contract.STREAM_IDLE_TIMEOUT_METADATA_KEY, str(millis)))


def streamed(resp: ep.ProcessingResponse) -> ep.StreamedBodyResponse:
    assert resp.WhichOneof("response") == "response_body", resp
    return resp.response_body.response.body_mutation.streamed_response


def opening(client_headers: dict[str, str] = CHAT, backend: str = OPENAI) -> list[ep.ProcessingRequest]:
    return [
        request_headers(client_headers),
        request_body({"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "stream": True}),
        response_headers(SSE, backend),
    ]


# ------------------------------------------------------------------ with_deadline


async def test_with_deadline_yields_none_when_the_deadline_passes_and_keeps_the_pending_read() -> None:
    release = asyncio.Event()

    async def source() -> AsyncIterator[int]:
        yield 1
        await release.wait()
        yield 2

    deadline = [0.0]
    seen: list[int | None] = []
    async for item in with_deadline(source(), lambda: deadline[0]):
        seen.append(item)
        if item == 1:
            deadline[0] = time.monotonic() + 0.05
        elif item is None:
            deadline[0] = 0.0
            release.set()  # the read that was waiting when the deadline passed delivers 2
    assert seen == [1, None, 2]


async def test_with_deadline_without_a_deadline_is_the_plain_stream() -> None:
    async def source() -> AsyncIterator[int]:
        for i in range(3):
            await asyncio.sleep(0.01)
            yield i

    assert [i async for i in with_deadline(source(), lambda: 0.0)] == [0, 1, 2]


async def test_with_deadline_passes_on_an_error_of_the_stream() -> None:
    async def source() -> AsyncIterator[int]:
        yield 1
        raise ConnectionResetError("the stream broke")

    seen: list[int | None] = []
    with pytest.raises(ConnectionResetError, match="the stream broke"):
        async for item in with_deadline(source(), lambda: time.monotonic() + 60):
            seen.append(item)
    assert seen == [1]


def test_the_watchdog_fires_a_margin_before_envoys_idle_timer() -> None:
    assert watchdog_delay(1.0) == pytest.approx(0.75)
    assert watchdog_delay(2.0) == pytest.approx(1.5)
    assert watchdog_delay(5.0) == pytest.approx(4.0)
    assert watchdog_delay(60.0) == pytest.approx(59.0)  # the margin is at most 1 s
    assert all(0 < watchdog_delay(s) < s for s in (0.1, 1, 5, 8, 9, 300))


# ------------------------------------------------------------------ the router phase


async def test_without_an_idle_timeout_the_body_stays_streamed() -> None:
    out = await drive(ExternalProcessor(config()), [*opening(), response_body(CHUNK + DONE)])
    assert out[2].mode_override.response_body_mode == Mode.STREAMED
    assert out[3].response_body.response.body_mutation.WhichOneof("mutation") != "streamed_response"


async def test_with_an_idle_timeout_every_chunk_is_answered_in_full_duplex_mode() -> None:
    out = await drive(
        ExternalProcessor(config()),
        [
            *opening(),
            response_body(CHUNK, end_of_stream=False),
            response_body(b"", end_of_stream=False),
            response_body(DONE, end_of_stream=True),
        ],
        idle_stream(60_000),
    )
    mode = out[2].mode_override
    assert mode.response_body_mode == Mode.FULL_DUPLEX_STREAMED
    assert mode.response_trailer_mode == Mode.SEND  # Envoy requires it in this mode
    bodies = [streamed(r) for r in out[3:]]
    assert [b.end_of_stream for b in bodies] == [False, False, True]
    assert b"".join(b.body for b in bodies) == CHUNK + DONE  # OpenAI to OpenAI: the bytes unchanged
    assert metadata(out[5])["backend_name"] == OPENAI


async def test_a_stream_that_ends_early_gets_its_error_event_in_full_duplex_mode_too() -> None:
    out = await drive(ExternalProcessor(config()), [*opening(), response_body(CHUNK)], idle_stream(60_000))
    last = streamed(out[3])
    assert last.end_of_stream and last.body.startswith(CHUNK)
    assert b"before the response was complete" in last.body


async def _silent_backend(
    client_headers: dict[str, str], backend: str, first: bytes, late: bytes = b""
) -> list[ep.ProcessingResponse]:
    """One chunk, then nothing until the translator ended the stream (then `late`, if any, as a
    backend waking up too late would send it)."""
    ended = asyncio.Event()

    async def source() -> AsyncIterator[ep.ProcessingRequest]:
        for req in opening(client_headers, backend):
            yield req
        yield response_body(first, end_of_stream=False)
        await asyncio.wait_for(ended.wait(), PATIENCE_S)
        if late:
            yield response_body(late, end_of_stream=False)

    out: list[ep.ProcessingResponse] = []
    processor = ExternalProcessor(config())
    async for resp in processor.Process(source(), StreamContext(idle_stream(400))):  # type: ignore[arg-type]
        out.append(resp)
        if resp.response_body.response.body_mutation.streamed_response.end_of_stream:
            ended.set()
    return out


async def test_a_backend_silent_mid_stream_is_ended_with_an_openai_error_event() -> None:
    out = await _silent_backend(CHAT, OPENAI, CHUNK, late=b"data: late\n\n")
    first, end, late = (streamed(r) for r in out[3:])
    assert first.body == CHUNK and not first.end_of_stream
    assert end.end_of_stream
    assert end.body.startswith(b"data: ") and end.body.endswith(b"\n\n")
    error = json.loads(end.body[len(b"data: ") :])["error"]
    assert error["message"] == (
        "the backend stopped sending before the response was complete (the route's streamIdleTimeout is 0.4s)"
    )
    assert late.body == b"" and not late.end_of_stream  # what comes too late never reaches the client
    # What was sent is charged as an estimate, with the final metadata.
    md = metadata(out[4])
    assert md["backend_name"] == OPENAI and md["usage_estimated"] is True


async def test_a_backend_silent_mid_stream_is_ended_with_an_anthropic_error_event() -> None:
    start = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message",'
        b'"role":"assistant","model":"claude-x","content":[],"usage":{"input_tokens":2,"output_tokens":0}}}\n\n'
    )
    out = await _silent_backend(MESSAGES, ANTHROPIC, start)
    end = streamed(out[4])
    assert end.end_of_stream
    assert end.body.startswith(b"event: error\ndata: ")
    body = json.loads(end.body.split(b"data: ", 1)[1])
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert body["error"]["message"].startswith("the backend stopped sending before the response was complete")


async def test_a_stream_already_complete_is_ended_without_an_error_event() -> None:
    """The backend sent the whole answer but not its end of stream: the client is told nothing
    went wrong (it has [DONE]); the translator only closes the stream."""
    out = await _silent_backend(CHAT, OPENAI, CHUNK + DONE)
    end = streamed(out[4])
    assert end.end_of_stream and end.body == b""


async def test_trailers_end_the_body_in_full_duplex_mode() -> None:
    """Trailers (an HTTP/2 backend) end the body; its last chunk had no end of stream, so the rest
    of the client's stream goes out before the trailers answer."""
    trailers = ep.ProcessingRequest(response_trailers=ep.HttpTrailers())
    out = await drive(
        ExternalProcessor(config()),
        [*opening(), response_body(CHUNK, end_of_stream=False), trailers],
        idle_stream(60_000),
    )
    last = streamed(out[4])
    assert not last.end_of_stream and b"before the response was complete" in last.body
    assert metadata(out[4])["backend_name"] == OPENAI
    assert out[5].WhichOneof("response") == "response_trailers"


async def test_a_stream_that_returns_early_cancels_its_reader_at_once() -> None:
    """A stream refused at its first message returns early: the watchdog's reader task is cancelled
    before Process ends, not whenever asyncio finalizes the abandoned generator."""
    waiting = asyncio.Event()

    async def source() -> AsyncIterator[ep.ProcessingRequest]:
        yield request_headers(CHAT)
        await waiting.wait()  # Envoy sends nothing more

    refused = ((contract.PHASE_METADATA_KEY, "bogus"), (contract.STREAM_IDLE_TIMEOUT_METADATA_KEY, "400"))
    processor = ExternalProcessor(config())
    out = [r async for r in processor.Process(source(), StreamContext(refused))]  # type: ignore[arg-type]
    assert out[0].immediate_response.status.code == 500
    readers = [t for t in asyncio.all_tasks() if "with_deadline.<locals>.pump" in repr(t.get_coro())]
    assert readers and all(t.cancelling() or t.done() for t in readers)
