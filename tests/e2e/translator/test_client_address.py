"""The client's address through a real Envoy, as rate limits count it (a BackendTrafficPolicy's
rateLimit.global sourceCIDR, counted by the translator from Envoy's source address): the connection's,
whatever x-forwarded-for the client sends, unless a ClientTrafficPolicy trusts a load balancer in
front; and the gateway adds no client address to what the provider gets. Providers are the fakes,
the client the official OpenAI SDK."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import openai
import pytest

from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.providers import CHAT, Fakes
from tests.e2e.harness.resources import traffic_policy
from tests.resource_text import client_traffic_policy

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "hi"}]


def _per_address(cidr: str) -> str:
    """A budget of one request a minute for each address in `cidr`."""
    return traffic_policy(
        CHAT.name,
        f"""
rateLimit:
  global:
    rules:
      - clientSelectors: [{{sourceCIDR: {{value: {cidr}, type: Distinct}}}}]
        limit: {{requests: 1, unit: Minute}}
""",
    )


def _detection(detection: str) -> str:
    return client_traffic_policy(f"clientIPDetection: {detection}", name="behind")


Ask = Callable[[dict[str, str]], Awaitable[object]]


@asynccontextmanager
async def _asking(fakes: Fakes, *documents: str) -> AsyncIterator[Ask]:
    """The gateway of the fakes and `documents`, and a chat request to it with the headers given."""
    async with run_gateway(*fakes.resources(), *documents) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)

        async def ask(headers: dict[str, str]) -> object:
            return await client.chat.completions.create(model="gpt-test", messages=MESSAGES, extra_headers=headers)

        yield ask


async def test_a_client_cannot_take_another_address_by_sending_x_forwarded_for(fakes: Fakes) -> None:
    """Envoy takes the last x-forwarded-for address for the client's unless told to use the
    connection's (use_remote_address, as Envoy Gateway tells it): a client could otherwise choose
    the address it is counted under."""
    async with _asking(fakes, _per_address("127.0.0.0/8")) as ask:
        await ask({"x-forwarded-for": "203.0.113.7"})
        # Counted under the connection's address; and the provider is told no address, not even
        # the one the client wrote.
        assert [r.header("x-forwarded-for") for r in fakes.openai.requests] == [None]
        for spoofed in ("127.0.0.9", "10.1.2.3"):
            with pytest.raises(openai.RateLimitError):
                await ask({"x-forwarded-for": spoofed})


async def test_behind_a_trusted_proxy_the_client_is_the_address_it_forwarded(fakes: Fakes) -> None:
    """A ClientTrafficPolicy's clientIPDetection.xForwardedFor.numTrustedHops: 1 (a load balancer in
    front, which appends the address it saw): the last x-forwarded-for address is the client's."""
    behind = _detection("{xForwardedFor: {numTrustedHops: 1}}")
    async with _asking(fakes, behind, _per_address("10.0.0.0/8")) as ask:
        await ask({"x-forwarded-for": "10.0.0.1"})
        await ask({"x-forwarded-for": "10.0.0.2"})  # another client: its own budget
        with pytest.raises(openai.RateLimitError):  # what a client writes before the balancer's entry is not believed
            await ask({"x-forwarded-for": "10.9.9.9, 10.0.0.1"})


async def test_behind_trusted_cidrs_the_client_is_the_last_address_outside_them(fakes: Fakes) -> None:
    """trustedCIDRs (the connection's address among them, as a proxy in front is): the rightmost
    x-forwarded-for address outside them is the client's."""
    trusted = _detection("{xForwardedFor: {trustedCIDRs: [127.0.0.0/8, 192.168.0.0/16]}}")
    async with _asking(fakes, trusted, _per_address("10.0.0.0/8")) as ask:
        await ask({"x-forwarded-for": "10.0.0.1, 192.168.1.1"})
        await ask({"x-forwarded-for": "10.0.0.2, 192.168.1.1"})  # another client
        with pytest.raises(openai.RateLimitError):  # 10.0.0.1 again, whatever it claimed before
            await ask({"x-forwarded-for": "10.9.9.9, 10.0.0.1, 192.168.1.1"})
        # The provider is told no address: the chain is not sent on.
        assert {r.header("x-forwarded-for") for r in fakes.openai.requests} == {None}


async def test_a_header_a_proxy_in_front_sets_is_the_clients_address(fakes: Fakes) -> None:
    """customHeader: its value is the client's address; failClosed refuses a request without one."""
    header = _detection("{customHeader: {name: x-real-ip, failClosed: true}}")
    async with _asking(fakes, header, _per_address("10.0.0.0/8")) as ask:
        await ask({"x-real-ip": "10.0.0.1"})
        await ask({"x-real-ip": "10.0.0.2"})
        with pytest.raises(openai.RateLimitError):
            await ask({"x-real-ip": "10.0.0.1"})
        with pytest.raises(openai.PermissionDeniedError):  # no address: refused (failClosed)
            await ask({})
        assert {r.header("x-real-ip") for r in fakes.openai.requests} == {None}  # not sent on


async def test_behind_a_proxy_protocol_balancer_the_client_is_the_headers_source(fakes: Fakes) -> None:
    """proxyProtocol: the source address of each connection's PROXY header (a load balancer's, such
    as AWS's NLB) is the client's; a connection without the header is closed unanswered."""
    behind = client_traffic_policy("proxyProtocol: {}", name="behind")
    body = b'{"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}'
    request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
    request += b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
    async with run_gateway(*fakes.resources(), behind, _per_address("203.0.113.0/24")) as gw:

        async def status(source: str | None) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            header = f"PROXY TCP4 {source} 127.0.0.1 40000 {gw.port}\r\n".encode() if source else b""
            writer.write(header + request)
            try:
                return (await reader.read())[:12]
            except ConnectionResetError:  # (closed with the request unread)
                return b""
            finally:
                writer.close()

        assert await status("203.0.113.7") == b"HTTP/1.1 200"
        assert await status("203.0.113.8") == b"HTTP/1.1 200"  # another client: its own budget
        assert await status("203.0.113.7") == b"HTTP/1.1 429"
        assert await status(None) == b""
        assert len(fakes.openai.requests) == 2
