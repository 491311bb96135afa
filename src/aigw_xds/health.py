"""Health endpoints for the kubelet's probes: GET /healthz (the process answers) and GET /readyz
(the first configuration is loaded and the xDS server serves); and GET /metrics for Prometheus
(metrics.py). Plain HTTP on its own port, so probes and scrapes work whatever TLS the xDS port
requires."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from aigw_translator.arguments import bound_address

log = structlog.get_logger(__name__)


class HealthServer:
    def __init__(self, listen: str, ready: Callable[[], bool], metrics: Callable[[], str] | None = None) -> None:
        self.listen = listen
        self.ready = ready
        self.metrics = metrics
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        host, _, port = self.listen.rpartition(":")
        self._server = await asyncio.start_server(self._answer, host.strip("[]") or None, int(port))
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health_listening", address=bound_address(self.listen, self.port), port=self.port)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5.0)
            while (await asyncio.wait_for(reader.readline(), 5.0)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else ""
            if path == "/healthz":
                code, body = 200, "ok"
            elif path == "/readyz":
                code, body = (200, "ready") if self.ready() else (503, "not ready: loading the configuration")
            elif path == "/metrics" and self.metrics is not None:
                code, body = 200, self.metrics()
            else:
                code, body = 404, "not found"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[code]
            content_type = "text/plain; version=0.0.4" if path == "/metrics" else "text/plain"
            payload = body.encode()
            writer.write(
                f"HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
