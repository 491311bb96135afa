"""A real Redis for tests: Debian's `redis-server` on a free loopback port, without persistence (no RDB
snapshots, no AOF), which a test can kill (SIGKILL: an outage) and start again on the same port.

`.ci/run` installs redis-server; a machine without it fails the tests that need it (they never skip).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import pytest
import redis

from tests.e2e.harness.processes import die_with_parent, free_port

MISSING = "redis-server is not installed (not on PATH): `.ci/run` installs it (apt-get install -y -q redis-server)"


def redis_server_binary() -> str:
    """The redis-server executable, or the test fails saying how to get it."""
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail(MISSING, pytrace=False)
    return found


class RedisServer:
    """One redis-server process on 127.0.0.1:`port` (a free one unless given), its log in `workdir`."""

    def __init__(self, workdir: Path, password: str | None = None, port: int | None = None) -> None:
        self.binary = redis_server_binary()
        self.workdir = workdir
        self.password = password
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.workdir / f"redis-{self.port}.log"

    def client(self) -> redis.Redis:
        """A synchronous client, for a test to look at what the server holds."""
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2)

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Starts the server (again, on the same port after kill()) and waits until it answers PING."""
        if self.running:
            return self
        args = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", "",
            "--daemonize", "no",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent
            )
        deadline = time.monotonic() + timeout
        with self.client() as probe:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}: {self._log_tail()}")
                try:
                    if probe.ping():
                        return self
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise TimeoutError(f"redis-server did not answer PING within {timeout}s: {self._log_tail()}")
                time.sleep(0.02)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: Redis goes away at once, as in a crash (nothing is saved anyway)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> RedisServer:
        """Starts it again on the same port (empty: it keeps nothing)."""
        self.kill()
        return self.start()

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
