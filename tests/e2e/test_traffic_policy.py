"""BackendTrafficPolicy and stream idle timeouts through a real Envoy, with the official SDKs.

Retries with numAttemptsPerPriority (attempts counted at the fakes); streamIdleTimeout with a
backend that never answers (fails over before the first byte), one that answers and then goes
silent (the translator ends the stream with an error event in the client's schema), and a healthy
slow stream (never cut); and Envoy AI Gateway's published provider_fallback and stream_idle_timeout
examples, unchanged but for their provider Backends pointed at loopback stand-ins (aigw_fakes.rewrite).

The silent and half-silent backends are the raw TCP stand-ins the stream_idle_timeout example
itself deploys (a socket that accepts and holds the connection, optionally after a first write).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anthropic
import openai
import orjson
import pytest

import aigw_contract
from aigw_fakes import AnthropicFake, BedrockFake, OpenAIFake
from tests.e2e.harness import resources
from tests.e2e.harness.compat import run_compat
from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.resources import Ref, Route, Rule

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "hello there"}]
OPENAI_KEY = "sk-traffic-openai"
ANTHROPIC_KEY = "sk-traffic-anthropic"
# One OpenAI chat chunk: what a half-silent backend sends before it goes quiet.
FIRST_CHUNK = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-test",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}\n\n'
)


# --------------------------------------------------------------------------------------------
# Stand-ins and resources


class HoldingServer:
    """Accepts connections, optionally writes `first_bytes` once, then holds each connection open
    without another byte until the peer gives up (the example's silent / semi-silent upstream)."""

    def __init__(self, first_bytes: bytes = b"") -> None:
        self.first_bytes = first_bytes
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.first_bytes:
            writer.write(self.first_bytes)
            await writer.drain()
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):  # until the peer closes
                pass
        writer.close()

    async def __aenter__(self) -> HoldingServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


def chunked_sse_head(body: bytes) -> bytes:
    """An HTTP/1.1 200 SSE response head plus one chunk: the stream has begun and is not over."""
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n"
    )


def with_rule_fields(route_yaml: str, fields: str) -> str:
    """The route's (first) rule with extra fields, e.g. streamIdleTimeout."""
    return route_yaml.replace("      backendRefs:\n", f"      {fields}\n      backendRefs:\n", 1)


def openai_client(url: str, **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="client-key", max_retries=0, default_headers=headers)


def anthropic_client(url: str, **headers: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=f"{url}/anthropic", api_key="client-key", max_retries=0, default_headers=headers
    )


@asynccontextmanager
async def two_priorities(
    primary_port: int, secondary: OpenAIFake | AnthropicFake, extra: str = "", rule_fields: str = ""
) -> AsyncIterator[object]:
    """Route "tp": model "m" to backend "primary" (OpenAI schema, priority 0, at primary_port), then
    "secondary" (priority 1, the fake's schema); `extra`: more documents (a policy)."""
    schema = "Anthropic" if isinstance(secondary, AnthropicFake) else "OpenAI"
    key_kind = "AnthropicAPIKey" if schema == "Anthropic" else "APIKey"
    override = "claude-test" if schema == "Anthropic" else None
    route = Route("tp", [Rule(["m"], [Ref("primary"), Ref("secondary", priority=1, model_name_override=override)])])
    route_yaml = with_rule_fields(route.yaml(), rule_fields) if rule_fields else route.yaml()
    documents = (
        route_yaml,
        resources.backend("primary", primary_port),
        resources.api_key("primary", OPENAI_KEY),
        resources.backend("secondary", secondary.port, schema),
        resources.api_key("secondary", ANTHROPIC_KEY if schema == "Anthropic" else OPENAI_KEY, key_kind),
        extra,
    )
    async with run_gateway(*documents) as gw:
        yield gw


# --------------------------------------------------------------------------------------------
# Retries


RETRY_PER_PRIORITY = """
retry:
  numAttemptsPerPriority: 1
  numRetries: 5
  perRetry:
    backOff: {baseInterval: 10ms, maxInterval: 100ms}
  retryOn:
    httpStatusCodes: [500]
    triggers: [retriable-status-codes]
"""


async def test_num_attempts_per_priority_moves_to_the_next_priority_after_one_attempt() -> None:
    """Priority 0 (OpenAI) always answers 500, priority 1 (Anthropic, another schema) once: with
    numAttemptsPerPriority 1 each retry moves on to the next priority (back to the first when all
    were tried), so the fourth attempt, at priority 1, answers: two attempts at each. (The default
    failover, one retry, would have given up after the second.)"""
    async with (
        OpenAIFake(api_key=OPENAI_KEY) as primary,
        AnthropicFake(api_key=ANTHROPIC_KEY) as secondary,
    ):
        primary.always_fail(500)
        secondary.fail_next(1, 500)
        async with two_priorities(primary.port, secondary, resources.traffic_policy("tp", RETRY_PER_PRIORITY)) as gw:
            reply = await openai_client(gw.url).chat.completions.create(model="m", messages=HI)
            assert reply.model == "claude-test"
            assert reply.choices[0].message.content == "Fake claude-test reply to: hello there"
            assert len(primary.requests) == 2 and len(secondary.requests) == 2


async def test_without_num_attempts_per_priority_every_retry_stays_on_the_healthy_priority() -> None:
    """The same failing priority 0 without numAttemptsPerPriority: Envoy keeps to the highest
    healthy priority, so numRetries 2 means three attempts there, and the client gets the 500 in
    its schema (status kept)."""
    policy = "retry: {numRetries: 2, retryOn: {httpStatusCodes: [500], triggers: [retriable-status-codes]}}"
    async with (
        OpenAIFake(api_key=OPENAI_KEY) as primary,
        OpenAIFake(api_key=OPENAI_KEY) as secondary,
    ):
        primary.always_fail(500)
        async with two_priorities(primary.port, secondary, resources.traffic_policy("tp", policy)) as gw:
            with pytest.raises(openai.InternalServerError) as raised:
                await openai_client(gw.url).chat.completions.create(model="m", messages=HI)
            assert raised.value.status_code == 500
            assert len(primary.requests) == 3 and len(secondary.requests) == 0


async def test_concurrent_failovers_all_reach_the_next_priority() -> None:
    """A 429 storm: priority 0 answers every request 429 and 12 clients ask at once, each answer
    taking 300 ms, so 12 failovers are in flight together. Envoy allows 3 parallel retries per
    cluster unless told otherwise (circuit_breakers max_retries); past that a retry overflows and
    the client gets the 429 with no failover. Every cluster allows 1024 (Envoy Gateway's default),
    so all 12 are answered by priority 1."""
    async with (
        OpenAIFake(api_key=OPENAI_KEY) as primary,
        OpenAIFake(api_key=OPENAI_KEY) as secondary,
    ):
        primary.always_fail(429)
        async with two_priorities(primary.port, secondary) as gw:
            client = openai_client(gw.url, **{"x-fake-delay-ms": "300"})
            replies = await asyncio.gather(
                *(client.chat.completions.create(model="m", messages=HI) for _ in range(12)),
                return_exceptions=True,
            )
            failed = [r for r in replies if isinstance(r, BaseException)]
            assert not failed, failed
            assert all(r.choices[0].message.content == "Fake m reply to: hello there" for r in replies)  # type: ignore[union-attr]
            assert len(primary.requests) == 12 and len(secondary.requests) == 12


# --------------------------------------------------------------------------------------------
# Stream idle timeouts (scaled down: 1-2 s)


async def test_a_silent_backend_fails_over_before_the_first_byte() -> None:
    async with (
        HoldingServer() as silent,
        OpenAIFake(api_key=OPENAI_KEY) as healthy,
        two_priorities(silent.port, healthy, rule_fields="streamIdleTimeout: 1s") as gw,
    ):
        started = time.monotonic()
        stream = await openai_client(gw.url).chat.completions.create(model="m", messages=HI, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "Fake m reply to: hello there"
        assert time.monotonic() - started >= 1.0  # it waited for the idle timeout first
        assert silent.connections == 1 and len(healthy.requests) == 1


@pytest.mark.parametrize("other_schema", ["OpenAI", "Anthropic"], ids=["route-class", "attempt-class"])
async def test_a_backend_silent_mid_stream_ends_with_an_error_event_for_an_openai_client(other_schema: str) -> None:
    """The first chunk reached the client, then the backend went silent. The response has begun, so
    there is no failover; Envoy's idle timer could only reset the client's stream, so the translator
    ends it first (streamIdleTimeout 2 s, its watchdog at 1.5 s) with an error event in the client's
    schema: the SDK raises it, with what went wrong, after the text it got. The same whether the
    rule translates on one stream (both backends OpenAI) or per attempt (the other is Anthropic)."""
    fake = OpenAIFake(api_key=OPENAI_KEY) if other_schema == "OpenAI" else AnthropicFake(api_key=ANTHROPIC_KEY)
    async with (
        HoldingServer(chunked_sse_head(FIRST_CHUNK)) as half_silent,
        fake as healthy,
        two_priorities(half_silent.port, healthy, rule_fields="streamIdleTimeout: 2s") as gw,
    ):
        received: list[str] = []
        started = time.monotonic()
        stopped = r"stopped sending before the response was complete \(the route's streamIdleTimeout is 2s\)"
        with pytest.raises(openai.APIError, match=stopped):
            stream = await openai_client(gw.url).chat.completions.create(model="m", messages=HI, stream=True)
            async for chunk in stream:
                received.extend(c.delta.content or "" for c in chunk.choices)
        assert received == ["Hel"]
        assert 1.0 <= time.monotonic() - started < 10
        assert half_silent.connections == 1 and len(healthy.requests) == 0


async def test_a_backend_silent_mid_stream_ends_with_an_error_event_for_an_anthropic_client() -> None:
    """The same for the anthropic SDK (its client speaks Messages, the backend OpenAI chat): an
    `event: error` in Anthropic's schema, raised as an APIError with the message."""
    async with (
        HoldingServer(chunked_sse_head(FIRST_CHUNK)) as half_silent,
        OpenAIFake(api_key=OPENAI_KEY) as healthy,
        two_priorities(half_silent.port, healthy, rule_fields="streamIdleTimeout: 2s") as gw,
    ):
        received: list[str] = []
        with pytest.raises(anthropic.APIError, match="the backend stopped sending before the response") as raised:
            async with anthropic_client(gw.url).messages.stream(model="m", max_tokens=32, messages=HI) as stream:
                async for text in stream.text_stream:
                    received.append(text)
        message = "the backend stopped sending before the response was complete (the route's streamIdleTimeout is 2s)"
        assert raised.value.body == {"type": "error", "error": {"type": "api_error", "message": message}}
        assert received == ["Hel"]
        assert len(healthy.requests) == 0


async def test_a_backend_silent_after_its_headers_is_cut_by_envoys_idle_timer() -> None:
    """Headers and not one byte of body: Envoy 1.40 takes a body response from the translator only
    after it has sent it a chunk (before, it is a "spurious message" and the stream is reset), so
    the translator's watchdog never starts and Envoy's idle timer cuts the stream at 2 s, not 1.5."""
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    async with (
        HoldingServer(head) as half_silent,
        OpenAIFake(api_key=OPENAI_KEY) as healthy,
        two_priorities(half_silent.port, healthy, rule_fields="streamIdleTimeout: 2s") as gw,
    ):
        started = time.monotonic()
        with pytest.raises(openai.APIConnectionError):
            stream = await openai_client(gw.url).chat.completions.create(model="m", messages=HI, stream=True)
            async for _ in stream:
                raise AssertionError("no chunk was sent")
        assert time.monotonic() - started >= 2.0
        assert "Spurious" not in gw.envoy_log()  # type: ignore[attr-defined]
        assert len(healthy.requests) == 0


async def test_a_healthy_stream_slower_than_the_idle_timeout_in_total_is_not_cut() -> None:
    """Events every 0.4 s for about 2 s, streamIdleTimeout 1 s and no request timeout: the stream
    is never idle for 1 s, so it is delivered whole (the default timeouts work the same way at
    60 s). With timeouts.request 1s the same stream is cut: an explicit request timeout caps the
    whole response."""
    async with HoldingServer() as unused, OpenAIFake(api_key=OPENAI_KEY) as healthy:
        slow = {"x-fake-stream-interval-ms": "400"}
        async with two_priorities(healthy.port, healthy, rule_fields="streamIdleTimeout: 1s") as gw:
            started = time.monotonic()
            stream = await openai_client(gw.url, **slow).chat.completions.create(model="m", messages=HI, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == "Fake m reply to: hello there"
            assert time.monotonic() - started > 1.5
        capped = "streamIdleTimeout: 1s\n      timeouts: {request: 1s}"
        async with two_priorities(healthy.port, healthy, rule_fields=capped) as gw:
            with pytest.raises(openai.APIConnectionError):  # begun, then cut at 1 s
                stream = await openai_client(gw.url, **slow).chat.completions.create(
                    model="m", messages=HI, stream=True
                )
                async for _ in stream:
                    pass
        assert unused.connections == 0


async def test_the_default_timeout_never_cuts_a_healthy_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default request timeout (60 s, scaled down to 1 s here) with no timeouts.request and no
    streamIdleTimeout: a healthy stream of about 2 s is delivered whole, since the default applies
    as an idle timeout per attempt; a backend that sends nothing for that long still fails over."""
    monkeypatch.setattr(aigw_contract, "DEFAULT_REQUEST_TIMEOUT_S", 1.0)  # read by the in-process compile
    async with HoldingServer() as silent, OpenAIFake(api_key=OPENAI_KEY) as healthy:
        slow = {"x-fake-stream-interval-ms": "400"}
        async with two_priorities(healthy.port, healthy) as gw:
            started = time.monotonic()
            stream = await openai_client(gw.url, **slow).chat.completions.create(model="m", messages=HI, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == "Fake m reply to: hello there"
            assert time.monotonic() - started > 1.5
        async with two_priorities(silent.port, healthy) as gw:
            started = time.monotonic()
            reply = await openai_client(gw.url).chat.completions.create(model="m", messages=HI)
            assert reply.choices[0].message.content == "Fake m reply to: hello there"
            assert 1.0 <= time.monotonic() - started < 10 and silent.connections == 1


async def test_one_priority_a_healthy_slow_stream_is_whole_and_a_silent_backend_is_a_504(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rule with one priority and no policy: the default (60 s, scaled down to 1 s here) is a
    per-try idle timeout on its streaming entries and a cap on its NATIVE ones. A healthy slow stream
    is delivered whole; a silent backend is a 504 in OpenAI's error shape."""
    monkeypatch.setattr(aigw_contract, "DEFAULT_REQUEST_TIMEOUT_S", 1.0)  # read by the in-process compile

    def one_backend(port: int) -> tuple[str, ...]:
        route = Route("one", [Rule(["m"], [Ref("only")])])
        return (route.yaml(), resources.backend("only", port), resources.api_key("only", OPENAI_KEY))

    async with HoldingServer() as silent, OpenAIFake(api_key=OPENAI_KEY) as healthy:
        slow = {"x-fake-stream-interval-ms": "400"}
        async with run_gateway(*one_backend(healthy.port)) as gw:
            stream = await openai_client(gw.url, **slow).chat.completions.create(model="m", messages=HI, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == "Fake m reply to: hello there"
        async with run_gateway(*one_backend(silent.port)) as gw:
            started = time.monotonic()
            with pytest.raises(openai.APIStatusError) as failed:
                await openai_client(gw.url).chat.completions.create(model="m", messages=HI)
            assert failed.value.status_code == 504
            assert isinstance(failed.value.body, dict) and failed.value.body.get("type") == "server_error"
            assert 1.0 <= time.monotonic() - started < 10 and silent.connections == 1


# --------------------------------------------------------------------------------------------
# Envoy AI Gateway's published examples


async def test_compat_provider_fallback(tmp_path: Path) -> None:
    """provider_fallback (base.yaml + fallback.yaml): priority 0 always fails with 500, the
    BackendTrafficPolicy (numAttemptsPerPriority 1, retry on 500) moves to priority 1, Bedrock, signed
    with the credentials file of the example's Secret."""
    async with (
        OpenAIFake(api_key="unused") as failing,
        BedrockFake(access_key_id="AWS_ACCESS_KEY_ID", secret_access_key="AWS_SECRET_ACCESS_KEY") as aws,
    ):
        failing.always_fail(500)
        ports = {"provider-fallback-always-failing-upstream": failing.port, "provider-fallback-aws": aws.port}
        files = ["provider_fallback_base.yaml", "provider_fallback_fallback.yaml"]
        with run_compat(files, tmp_path, ports, {}) as url:
            client = openai_client(url)
            for attempt in range(1, 4):
                reply = await client.chat.completions.create(model="us.amazon.nova-micro-v1:0", messages=HI)
                assert reply.choices[0].message.content
                assert len(failing.requests) == attempt and len(aws.requests) == attempt
            assert "/model/us.amazon.nova-micro-v1:0/converse" in aws.last_request.path


async def test_compat_stream_idle_timeout(tmp_path: Path) -> None:
    """stream_idle_timeout (base.yaml + backends.yaml, streamIdleTimeout 5s) as its README says:
    the silent backend fails over to the healthy one after about 5 s; the semi-silent one (a 200
    and `data: hello`, then nothing) is ended just before 5 s, with an error event in the client's
    schema after what it had sent (Envoy alone could only cut the connection at 5 s)."""
    semi = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: hello\n\n"  # the example's bytes
    async with (
        HoldingServer() as silent,
        HoldingServer(semi) as semi_silent,
        OpenAIFake(api_key=None) as healthy,  # the example's testupstream takes no key
    ):
        ports = {
            "stream-idle-timeout-silent": silent.port,
            "stream-idle-timeout-semi-silent": semi_silent.port,
            "stream-idle-timeout-healthy": healthy.port,
        }
        files = ["stream_idle_timeout_base.yaml", "stream_idle_timeout_backends.yaml"]
        with run_compat(files, tmp_path, ports, {}) as url:
            started = time.monotonic()
            model = "stream-idle-timeout-silent-demo"
            stream = await openai_client(url).chat.completions.create(model=model, messages=HI, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == f"Fake {model} reply to: hello there"
            assert 5 <= time.monotonic() - started < 15
            assert silent.connections == 1 and len(healthy.requests) == 1

            body = b""
            started = time.monotonic()
            request = {"model": "stream-idle-timeout-semi-silent-demo", "stream": True, "messages": HI}
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
                http.post(f"{url}/v1/chat/completions", json=request) as response,
            ):
                assert response.status == 200
                async for piece in response.content.iter_any():
                    body += piece
            assert 3.5 <= time.monotonic() - started < 15  # the watchdog: 5 s less a 1 s margin
            assert semi_silent.connections == 1 and len(healthy.requests) == 1
            assert body.startswith(b"data: hello\n\n") and b"[DONE]" not in body
            error = orjson.loads(body.rsplit(b"data: ", 1)[1])["error"]
            assert error["message"].endswith("before the response was complete (the route's streamIdleTimeout is 5s)")
