"""Credential fetches never run on the translator's event loop: a stream whose backend has no valid
credential yet waits for a fetch on a worker thread while every other stream is served, and still
succeeds once the fetch ends (no 503 right after start). Then token_cache's side of it: `get` on an
event loop never blocks (not even on a prefetch holding the key's fetch), concurrent waiters share
one fetch, the current configuration's keys stay fresh without use, other keys are forgotten when
unused, and timers back off during an outage."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import botocore.session
import pytest
import structlog
from botocore.credentials import ReadOnlyCredentials
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_translator import aws, azure_entra, server, token_cache
from aigw_translator.errors import CredentialsUnavailable
from aigw_translator.server import ExternalProcessor

from .extproc_helpers import (
    ROUTER_STREAM,
    drive,
    immediate_json,
    request_body,
    request_headers,
    set_headers,
    upstream_attributes,
)
from .test_token_cache import Clock, Timers

BEDROCK = "ns/bedrock/route/r/rule/0/ref/0"
AZURE = "ns/azure/route/r/rule/0/ref/1"
OPENAI = "ns/gpt/route/r/rule/0/ref/2"
BEDROCK_HOST = "bedrock-runtime.us-west-2.amazonaws.com"
ROLE = "arn:aws:iam::123456789012:role/aigw-test"
CHAT = {":method": "POST", ":path": "/v1/chat/completions", ":authority": "gw", "content-type": "application/json"}
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
# Generous: a slow 2-core machine still meets it; the tests never wait for it when all is well.
PATIENCE = 30.0


def config() -> config_pb2.TranslatorConfig:
    cfg = config_pb2.TranslatorConfig(name="ns/gw")
    b = cfg.backends.add(
        name=BEDROCK, route_name="ns/r", schema=config_pb2.Schema(name="AWSBedrock"), upstream_host=BEDROCK_HOST
    )
    b.auth.aws_credentials.region = "us-west-2"
    b.auth.aws_credentials.role_arn = ROLE
    b.auth.aws_credentials.oidc.issuer = "https://issuer.example"
    b.auth.aws_credentials.oidc.client_id = "client"
    z = cfg.backends.add(
        name=AZURE, route_name="ns/r", schema=config_pb2.Schema(name="AzureOpenAI", version="2024-10-21")
    )
    z.auth.azure_credentials.tenant_id = "tenant"
    z.auth.azure_credentials.client_id = "client"
    z.auth.azure_credentials.client_secret = "azure-secret"
    o = cfg.backends.add(name=OPENAI, route_name="ns/r", schema=config_pb2.Schema(name="OpenAI"))
    o.auth.api_key.key = "sk-openai"
    return cfg


class SlowEndpoint:
    """A credential endpoint that answers only when the test releases it, and says when a fetch
    started and ended (on the worker thread that runs it)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        self.calls = 0
        self.threads: list[threading.Thread] = []

    def answer(self, value: Any) -> Any:
        self.calls += 1
        self.threads.append(threading.current_thread())
        self.started.set()
        try:
            # Bounded: a translator that waited for this on its event loop fails the test, not hangs it.
            self.release.wait(PATIENCE)
            return value, 3600.0
        finally:
            self.finished.set()


@pytest.fixture
def slow(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowEndpoint]:
    """STS and Entra ID behind one SlowEndpoint, with fresh caches."""
    endpoint = SlowEndpoint()
    creds = ReadOnlyCredentials("ASIATEMPORARY", "temporary-secret", "session-token")
    monkeypatch.setattr(aws, "assume_role_with_web_identity", lambda backend, policy: endpoint.answer(creds))
    monkeypatch.setattr(
        azure_entra, "_cache", azure_entra.TokenCache(fetch=lambda tenant, client, secret: endpoint.answer("entra"))
    )
    aws.reset()
    yield endpoint
    endpoint.release.set()
    aws.reset()


async def _until(event: threading.Event) -> None:
    """Waits for a threading.Event without blocking the loop."""
    assert await asyncio.to_thread(event.wait, PATIENCE)


def _route_stream(backend: str) -> tuple[tuple[str, str], ...]:
    """A router-phase stream on a route that translates on one stream, for `backend`."""
    return (*ROUTER_STREAM, (contract.ROUTE_BACKEND_METADATA_KEY, backend))


async def _route_request(processor: ExternalProcessor, backend: str) -> list[ep.ProcessingResponse]:
    return await drive(processor, [request_headers(CHAT), request_body(BODY)], _route_stream(backend))


async def _attempt(processor: ExternalProcessor, backend: str) -> list[ep.ProcessingResponse]:
    routed = {**CHAT, contract.MODEL_HEADER: "m", contract.ORIGINAL_PATH_HEADER: "/v1/chat/completions"}
    attrs = upstream_attributes(host_backend=backend)
    return await drive(processor, [request_headers(routed, attributes=attrs), request_body(BODY)])


async def test_a_route_stream_waits_for_sts_off_the_loop_while_others_are_served(slow: SlowEndpoint) -> None:
    processor = ExternalProcessor(config())
    first = asyncio.create_task(_route_request(processor, BEDROCK))
    second = asyncio.create_task(_route_request(processor, BEDROCK))
    await _until(slow.started)
    # STS has not answered: a stream for an API-key backend is served meanwhile.
    other = await _route_request(processor, OPENAI)
    assert set_headers(other[1].request_body.response.header_mutation)["authorization"] == "Bearer sk-openai"
    assert not slow.finished.is_set() and not first.done() and not second.done()
    slow.release.set()
    for out in await asyncio.gather(first, second):
        sent = set_headers(out[1].request_body.response.header_mutation)
        assert sent["x-amz-security-token"] == "session-token"
        assert sent["authorization"].startswith("AWS4-HMAC-SHA256 Credential=ASIATEMPORARY/")
    assert slow.calls == 1  # the two waiting streams shared one fetch
    assert threading.current_thread() not in slow.threads


async def test_an_attempt_waits_for_entra_off_the_loop_while_others_are_served(slow: SlowEndpoint) -> None:
    processor = ExternalProcessor(config())
    first = asyncio.create_task(_attempt(processor, AZURE))
    await _until(slow.started)
    other = await _attempt(processor, OPENAI)
    assert set_headers(other[1].request_body.response.header_mutation)["authorization"] == "Bearer sk-openai"
    assert not slow.finished.is_set() and not first.done()
    slow.release.set()
    out = await first
    assert set_headers(out[1].request_body.response.header_mutation)["authorization"] == "Bearer entra"


async def test_a_credential_not_fetched_in_time_is_a_503_in_the_clients_schema(
    slow: SlowEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "CREDENTIAL_WAIT_S", 0.05)
    out = await _route_request(ExternalProcessor(config()), BEDROCK)
    status, body = immediate_json(out[1])
    assert status == 503 and body["error"]["type"] == "server_error"
    assert "no AWS credentials for this backend (it is being fetched)" in body["error"]["message"]
    slow.release.set()
    monkeypatch.setattr(server, "CREDENTIAL_WAIT_S", PATIENCE)
    out = await _route_request(ExternalProcessor(config()), BEDROCK)  # the same fetch's value
    assert "x-amz-security-token" in set_headers(out[1].request_body.response.header_mutation)
    assert slow.calls == 1


async def test_no_thread_for_the_fetch_is_a_503_in_the_clients_schema_and_one_log_line(
    slow: SlowEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    processor = ExternalProcessor(config())
    with structlog.testing.capture_logs() as logs:
        monkeypatch.setattr(threading.Thread, "start", no_thread)
        outs = [await _route_request(processor, BEDROCK), await _attempt(processor, AZURE)]
        outs.append(await _route_request(processor, BEDROCK))  # within the pause: at once, no new line
        monkeypatch.undo()
    for out, credential in zip(outs, ("AWS credentials", "Azure Entra ID token", "AWS credentials"), strict=True):
        status, body = immediate_json(out[1])
        assert status == 503 and body["error"]["type"] == "server_error"
        assert f"no {credential} for this backend (no thread to fetch it (RuntimeError))" in body["error"]["message"]
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["aws_credentials_unavailable", "azure_token_unavailable"]
    assert not any("exc_info" in e or "traceback" in str(e).lower() for e in logs)
    assert slow.calls == 0


def _azure_with_override() -> config_pb2.TranslatorConfig:
    """config() whose Azure backend takes the client's token when it sends one (else the configured)."""
    cfg = config()
    override = next(b for b in cfg.backends if b.name == AZURE).auth.credential_override
    override.from_request_headers.SetInParent()
    override.fallback_to_configured = True
    return cfg


@pytest.mark.parametrize("route", [True, False], ids=["route_stream", "attempt"])
async def test_a_request_carrying_its_own_token_never_waits_for_the_configured_one(
    slow: SlowEndpoint, monkeypatch: pytest.MonkeyPatch, route: bool
) -> None:
    monkeypatch.setattr(server, "CREDENTIAL_WAIT_S", PATIENCE)
    processor = ExternalProcessor(_azure_with_override())
    client = {**CHAT, contract.OVERRIDE_HEADER_DEFAULTS["azure_credentials"]: "Bearer client-token"}
    routed = {**client, contract.MODEL_HEADER: "m", contract.ORIGINAL_PATH_HEADER: "/v1/chat/completions"}
    if route:
        sending = drive(processor, [request_headers(client), request_body(BODY)], _route_stream(AZURE))
    else:
        attrs = upstream_attributes(host_backend=AZURE)
        sending = drive(processor, [request_headers(routed, attributes=attrs), request_body(BODY)])
    out = await asyncio.wait_for(sending, PATIENCE / 3)  # Entra ID never answers until released
    assert set_headers(out[1].request_body.response.header_mutation)["authorization"] == "Bearer client-token"
    assert slow.calls == 0
    # Without the header, the configured token is waited for.
    first = asyncio.create_task(_route_request(processor, AZURE) if route else _attempt(processor, AZURE))
    await _until(slow.started)
    assert not first.done()
    slow.release.set()
    assert set_headers((await first)[1].request_body.response.header_mutation)["authorization"] == "Bearer entra"


CHAIN = "ns/bedrock-chain/route/r/rule/0/ref/3"


@pytest.fixture
def slow_chain(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowEndpoint]:
    """The default credential chain (temporary keys in the environment) whose resolution by
    botocore's session waits for a SlowEndpoint, as IMDS, a container endpoint or IRSA's STS call can."""
    endpoint = SlowEndpoint()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIACHAIN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "chain-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "chain-token")
    resolve = botocore.session.Session.get_credentials

    def slow(session: botocore.session.Session) -> Any:
        return endpoint.answer(resolve(session))[0]

    monkeypatch.setattr(botocore.session.Session, "get_credentials", slow)
    aws.reset()
    yield endpoint
    endpoint.release.set()
    aws.reset()


async def test_a_default_chain_resolving_slowly_is_waited_for_off_the_loop(slow_chain: SlowEndpoint) -> None:
    cfg = config_pb2.TranslatorConfig(name="ns/gw")
    b = cfg.backends.add(
        name=CHAIN, route_name="ns/r", schema=config_pb2.Schema(name="AWSBedrock"), upstream_host=BEDROCK_HOST
    )
    b.auth.aws_credentials.region = "us-west-2"  # neither a credentials file nor OIDC: the default chain
    cfg.backends.add(name=OPENAI, route_name="ns/r", schema=config_pb2.Schema(name="OpenAI")).auth.api_key.key = "sk-o"
    processor = ExternalProcessor(cfg)
    first = asyncio.create_task(_route_request(processor, CHAIN))
    await _until(slow_chain.started)
    # The chain has not resolved: a stream for an API-key backend is served meanwhile.
    other = await _route_request(processor, OPENAI)
    assert set_headers(other[1].request_body.response.header_mutation)["authorization"] == "Bearer sk-o"
    assert not slow_chain.finished.is_set() and not first.done()
    slow_chain.release.set()
    sent = set_headers((await first)[1].request_body.response.header_mutation)
    assert sent["x-amz-security-token"] == "chain-token"
    assert sent["authorization"].startswith("AWS4-HMAC-SHA256 Credential=ASIACHAIN/")
    assert slow_chain.calls == 1 and threading.current_thread() not in slow_chain.threads


# ---- token_cache -------------------------------------------------------------------------------


def _answer(value: str, calls: list[str]) -> Callable[[], tuple[str, float]]:
    def fetch() -> tuple[str, float]:
        calls.append(threading.current_thread().name)
        return value, 3600.0

    return fetch


async def test_get_on_the_loop_never_fetches_there_and_waiters_share_one_fetch() -> None:
    cache: token_cache.TokenCache[str, str] = token_cache.TokenCache(credential="test token", event="test_token")
    release, calls = threading.Event(), list[str]()

    def fetch() -> tuple[str, float]:
        release.wait(PATIENCE)
        return _answer("v", calls)()

    with pytest.raises(token_cache.CredentialsPending) as first:
        cache.get("b", "k", fetch)
    with pytest.raises(token_cache.CredentialsPending) as second:
        cache.get("b", "k", fetch)
    assert first.value.ready is second.value.ready and not first.value.ready.done()
    assert first.value.status == 503
    release.set()
    await asyncio.wrap_future(first.value.ready)
    assert cache.get("b", "k", fetch) == "v"
    assert calls == ["credential-refresh"]
    cache.forget()


async def test_get_on_the_loop_does_not_wait_for_a_prefetch_under_way() -> None:
    """A prefetch thread holds the key's fetch: a request on the loop neither waits for it nor
    starts a second one; it is told when the prefetch's value is there."""
    cache: token_cache.TokenCache[str, str] = token_cache.TokenCache(credential="test token", event="test_token")
    started, release, calls = threading.Event(), threading.Event(), list[str]()

    def fetch() -> tuple[str, float]:
        started.set()
        release.wait(PATIENCE)
        return _answer("v", calls)()

    prefetch = threading.Thread(target=cache.get, args=("b", "k", fetch), daemon=True)
    prefetch.start()
    await _until(started)
    with pytest.raises(token_cache.CredentialsPending) as pending:
        cache.get("b", "k", fetch)  # returns at once: the prefetch has not answered
    assert not release.is_set()
    release.set()
    await asyncio.wrap_future(pending.value.ready)
    assert cache.get("b", "k", fetch) == "v" and len(calls) == 1
    prefetch.join(PATIENCE)
    cache.forget()


async def test_get_on_the_loop_during_an_outage_fails_at_once() -> None:
    cache: token_cache.TokenCache[str, str] = token_cache.TokenCache(
        credential="test token", event="test_token", schedule=None
    )

    def fetch() -> tuple[str, float]:
        raise token_cache.FetchError("down")

    with pytest.raises(token_cache.CredentialsPending) as pending:
        cache.get("b", "k", fetch)
    await asyncio.wrap_future(pending.value.ready)
    with pytest.raises(CredentialsUnavailable) as err:
        cache.get("b", "k", fetch)
    assert not isinstance(err.value, token_cache.CredentialsPending) and "(down)" in err.value.message


def _configured_cache(clock: Clock, timers: Timers) -> token_cache.TokenCache[str, str]:
    return token_cache.TokenCache(
        credential="test token", event="test_token", clock=clock, spawn=lambda run: run(), schedule=timers, keep_warm=5
    )


def _prefetch(monkeypatch: pytest.MonkeyPatch, fetch: Callable[[], object]) -> None:
    """A configuration arrives; its prefetch (on a `thread`, run inline here) calls `fetch`."""
    monkeypatch.setattr(token_cache, "thread", lambda run: run())

    def run() -> None:
        fetch()

    with token_cache.new_configuration():
        token_cache.thread(run)


def test_the_current_configurations_keys_stay_fresh_unused(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, timers, calls = Clock(), Timers(), list[str]()
    cache = _configured_cache(clock, timers)
    fetch = _answer("v", calls)
    _prefetch(monkeypatch, lambda: cache.get("b", "configured", fetch))
    for _ in range(3):  # unused far longer than keep_warm: still refreshed before each expiry
        clock.now += 3600
        timers.fire()
    assert len(calls) == 4 and timers.pending
    assert cache.get("b", "configured", fetch) == "v" and len(calls) == 4


def test_keys_of_an_earlier_configuration_are_forgotten_once_unused(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, timers, calls = Clock(), Timers(), list[str]()
    cache = _configured_cache(clock, timers)
    _prefetch(monkeypatch, lambda: cache.get("b", "old", _answer("v", calls)))
    _prefetch(monkeypatch, lambda: None)  # the next configuration needs it no more
    clock.now += 3600
    timers.fire()
    assert len(calls) == 1 and not timers.pending
    assert "old" not in cache._entries  # a later request fetches anew
    assert token_cache._prefetching.generation == 0  # the configuration's block left this thread as it was


def test_a_key_the_new_configuration_no_longer_has_is_forgotten_though_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rotated secret: the old key (which holds it) is never refreshed again once the
    configuration with the new one arrived, however recently a request used it."""
    clock, timers, fetched = Clock(), Timers(), list[str]()
    cache: token_cache.TokenCache[tuple[str, str], str] = token_cache.TokenCache(
        credential="test token", event="test_token", clock=clock, spawn=lambda run: run(), schedule=timers
    )
    old, new = ("client", "old-secret"), ("client", "new-secret")

    def fetch(key: tuple[str, str]) -> Callable[[], tuple[str, float]]:
        def answer() -> tuple[str, float]:
            fetched.append(key[1])
            return key[1], 3600.0

        return answer

    _prefetch(monkeypatch, lambda: cache.get("b", old, fetch(old)))
    clock.now += 60
    assert cache.get("b", old, fetch(old)) == "old-secret"  # a request just used it
    _prefetch(monkeypatch, lambda: cache.get("b", new, fetch(new)))
    assert old not in cache._entries and new in cache._entries
    clock.now += 3500
    for _ in range(len(timers.pending)):  # every timer armed so far, the old key's included
        timers.fire()
    assert fetched == ["old-secret", "new-secret", "new-secret"]


def test_the_sweep_waits_for_the_configurations_prefetches() -> None:
    """A key is forgotten only once the new configuration's prefetches (on their threads) ended:
    until then, one of them may still ask for it."""
    cache: token_cache.TokenCache[str, str] = token_cache.TokenCache(
        credential="test token", event="test_token", schedule=None
    )
    with token_cache.new_configuration():
        cache.get("b", "old", _answer("v", []))
    release = threading.Event()

    def slow() -> tuple[str, float]:
        release.wait(PATIENCE)
        return "v", 3600.0

    def prefetch() -> None:
        cache.get("b", "new", slow)

    with token_cache.new_configuration():
        token_cache.thread(prefetch)
    assert "old" in cache._entries
    release.set()
    for _ in range(int(PATIENCE / 0.01)):
        if "old" not in cache._entries:
            break
        threading.Event().wait(0.01)
    assert "old" not in cache._entries and "new" in cache._entries


def test_timers_back_off_during_an_outage() -> None:
    clock, timers = Clock(), Timers()
    cache: token_cache.TokenCache[str, str] = token_cache.TokenCache(
        credential="test token", event="test_token", clock=clock, spawn=lambda run: run(), schedule=timers
    )

    def fetch() -> tuple[str, float]:
        raise token_cache.FetchError("down")

    with pytest.raises(CredentialsUnavailable):
        cache.get("b", "k", fetch)
    delays = []
    for _ in range(7):
        clock.now += timers.pending[0][0]
        delays.append(timers.fire())
    assert delays == pytest.approx([2.05, 4.05, 8.05, 16.05, 32.05, 60.05, 60.05])
