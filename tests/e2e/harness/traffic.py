"""Traffic of the end-to-end tests: echo upstreams that answer with JSON naming themselves, a plain
HTTP client for the gateway's listener, and steady traffic that counts answers and failures."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EchoUpstream:
    """An HTTP server that answers every request with JSON naming itself and echoing the request."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: list[dict] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                record = {
                    "upstream": upstream.name,
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body.decode(errors="replace"),
                }
                upstream.requests.append(record)
                payload = json.dumps(record).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def post(port: int, model: str | None, path: str = "/v1/chat/completions", body: bytes = b"{}") -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"content-type": "application/json"}
    if model is not None:
        headers["x-ai-eg-model"] = model
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, {"raw": data.decode(errors="replace")}
    finally:
        connection.close()


class SteadyTraffic:
    """A client sending one request after another until stopped; counts answers by upstream/status.
    The model goes in the x-ai-eg-model header, or with `in_body` in the JSON body (where Envoy reads
    it itself), as SDKs send it."""

    def __init__(self, port: int, model: str, in_body: bool = False) -> None:
        self.port = port
        self.model = model
        self.in_body = in_body
        self.results: Counter = Counter()
        self.failures: list[tuple[int, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.in_body:
                    status, body = post(self.port, None, body=json.dumps({"model": self.model}).encode())
                else:
                    status, body = post(self.port, self.model)
            except OSError as exc:
                status, body = 0, {"error": str(exc)}
            if status == 200:
                self.results[body["upstream"]] += 1
            else:
                self.results[f"status {status}"] += 1
                self.failures.append((status, body))

    def __enter__(self) -> SteadyTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def total(self) -> int:
        return sum(self.results.values())


async def send_without_a_failure(
    requests: Callable[[], Sequence[Awaitable[object]]], seconds: float, pause: float = 0.05
) -> int:
    """Sends the batch `requests()` makes, again and again for `seconds` (each batch concurrently,
    `pause` between batches), failing the test at the first request that raises; returns how many
    were sent. For rotation tests: traffic across credential refreshes must not see one."""
    deadline = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < deadline:
        results = await asyncio.gather(*requests(), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures
        sent += len(results)
        await asyncio.sleep(pause)
    return sent
