"""The forward proxy stand-in refuses what a CONNECT proxy such as squid refuses, and tunnels the rest."""

from __future__ import annotations

import asyncio

import pytest

from aigw_fakes.forward_proxy import FakeForwardProxy


async def _echo_server() -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def _ask(proxy: FakeForwardProxy, head: str, then: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(head.encode() + then)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def test_a_connect_is_tunnelled_and_recorded():
    server = await _echo_server()
    port = server.sockets[0].getsockname()[1]
    async with server:
        proxy = await FakeForwardProxy().start()
        try:
            answer = await _ask(proxy, f"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n", b"hello")
            assert answer == b"HTTP/1.1 200 Connection established\r\n\r\nhello"
            assert proxy.connects == [f"localhost:{port}"]
        finally:
            await proxy.stop()


@pytest.mark.parametrize(
    ("head", "status"),
    [
        ("GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n", b"400"),  # origin form: not proxying
        ("GET http://api.openai.com/v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n", b"405"),
        ("CONNECT api.openai.com HTTP/1.1\r\n\r\n", b"400"),  # no port
    ],
)
async def test_what_is_not_a_connect_is_refused(head: str, status: bytes):
    proxy = await FakeForwardProxy().start()
    try:
        answer = await _ask(proxy, head)
        assert answer.split(b" ")[1] == status
        assert proxy.refused == [head.split("\r\n")[0]] and proxy.connects == []
    finally:
        await proxy.stop()


async def test_denied_targets_ports_outside_the_allowed_and_unreachable_ones_are_refused():
    proxy = await FakeForwardProxy(allowed_ports={443, 9}, denied_hosts={"blocked.example"}).start()
    try:
        assert (await _ask(proxy, "CONNECT blocked.example:443 HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 403")
        assert (await _ask(proxy, "CONNECT 127.0.0.1:8080 HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 403")
        assert (await _ask(proxy, "CONNECT 127.0.0.1:9 HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 502")
        assert proxy.connects == ["blocked.example:443", "127.0.0.1:8080", "127.0.0.1:9"]
    finally:
        await proxy.stop()
