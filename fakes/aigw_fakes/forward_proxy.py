"""A stand-in for an HTTP CONNECT forward proxy (squid, a corporate egress proxy), the kind a
GatewayConfig's forwardProxy names. What it does is what such a proxy does with a client that
tunnels, as strictly:

- `CONNECT host:port HTTP/1.1` (the authority form, RFC 9110 9.3.6): it resolves the host itself,
  connects, answers `HTTP/1.1 200 Connection established` and then relays bytes both ways until
  either side closes. The client's TLS (or plaintext HTTP) runs inside the tunnel: the proxy sees
  neither the request nor its credentials.
- Any other request is refused: a request in origin form (`GET /path`, what a client that does not
  know it talks to a proxy sends) is a 400, as squid answers it ("Invalid URL"); absolute-form
  requests (`GET http://host/path`, plain forward proxying) are a 405 here, since this proxy only
  tunnels.
- A target outside `allowed_ports` (squid's default allows CONNECT to 443 only; here any port
  unless given), or named in `denied_hosts`, is a 403; a target it cannot reach is a 502.

Every CONNECT is recorded (`connects`: the target as asked, "host:port") and so is every refused
request line (`refused`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Collection

from .common import InThread

_names = itertools.count(1)
# The most of a request's head it reads (a client sending more is refused).
_MAX_HEAD = 16 * 1024


class FakeForwardProxy(InThread):
    def __init__(
        self,
        *,
        allowed_ports: Collection[int] | None = None,
        denied_hosts: Collection[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        name: str | None = None,
    ) -> None:
        self.name = name or f"forward-proxy-{next(_names)}"
        self.host = host
        self._want_port = port
        self.port = 0
        self.allowed_ports = None if allowed_ports is None else frozenset(allowed_ports)
        self.denied_hosts = frozenset(h.lower() for h in denied_hosts)
        self.connects: list[str] = []
        self.refused: list[str] = []
        self._server: asyncio.Server | None = None
        self._tunnels: set[asyncio.Task[None]] = set()

    async def start(self) -> FakeForwardProxy:
        if self._server is None:
            self._server = await asyncio.start_server(self._client, self.host, self._want_port)
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            for task in list(self._tunnels):
                task.cancel()
            await server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tunnels.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tunnels.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _MAX_HEAD:
            return await _answer(writer, 431, "Request Header Fields Too Large")
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, _, rest = line.partition(" ")
        target = rest.rpartition(" ")[0]
        if method != "CONNECT":
            self.refused.append(line)
            if target.startswith("/"):
                return await _answer(writer, 400, "Bad Request")
            return await _answer(writer, 405, "Method Not Allowed")
        host, sep, port_text = target.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port_text.isdigit():
            self.refused.append(line)
            return await _answer(writer, 400, "Bad Request")
        port = int(port_text)
        self.connects.append(target)
        if host.lower() in self.denied_hosts or (self.allowed_ports is not None and port not in self.allowed_ports):
            return await _answer(writer, 403, "Forbidden")
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            return await _answer(writer, 502, "Bad Gateway")
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            await asyncio.gather(_relay(reader, up_writer), _relay(up_reader, writer))
        finally:
            up_writer.close()


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


async def _answer(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    writer.write(f"HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
    await writer.drain()
