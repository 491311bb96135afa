"""Health endpoints for the kubelet's probes, of the control plane (`serve --health-listen`) and of
the translator sidecar (`translator --health-listen`): GET /healthz (the process's event loop
answers) and GET /readyz (it serves: the control plane's first configuration is loaded and its xDS
server listens; the translator has its configuration and listens for Envoy); and, for the control
plane, GET /metrics for Prometheus (aigw_xds.metrics). Plain HTTP on a port of its own, which
answers nothing secret, so probes and scrapes work whatever the served port requires (TLS, a unix
socket the kubelet cannot reach)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .arguments import bound_address
from .logs import get_logger

log = get_logger(__name__)


class HealthServer:
    def __init__(
        self,
        listen: str,
        ready: Callable[[], bool],
        metrics: Callable[[], str] | None = None,
        not_ready: str = "loading the configuration",
    ) -> None:
        self.listen = listen
        self.ready = ready
        self.metrics = metrics
        self.not_ready = not_ready
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
                code, body = (200, "ready") if self.ready() else (503, f"not ready: {self.not_ready}")
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
