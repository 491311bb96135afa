"""Processes of the end-to-end tests: free ports, waiting for a condition, a subprocess with its
output in a log file, JSON-line logs, and die-with-parent for children of the test process."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aigw_xds import processes


class PortTaken(Exception):
    """A port picked by free_port() was taken by someone else before it was bound (other test
    sessions share this host): what needed it is started again on fresh ports."""


def die_with_parent() -> None:
    """In a child before exec: get SIGKILL when the test process goes away (Linux), so a failed
    test never leaves a control plane behind."""
    processes.set_parent_death_signal(signal.SIGKILL)


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


class Exited(RuntimeError):
    """The process being waited for has exited: wait_for stops at once instead of timing out."""


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exited:
            raise
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s (last: {last!r})")


async def until(check: Callable[[], Any], what: str, timeout: float = 20.0, interval: float = 0.05) -> Any:
    """check()'s first truthy value, polled without blocking the event loop; AssertionError naming
    `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)
    return value


def launch(
    args: list[str], log: Path, env: Mapping[str, str], cwd: Path | None = None, terminal: bool = False
) -> subprocess.Popen:
    """A command whose output (stdout and stderr) goes to log, unbuffered. `terminal`: in a process
    group of its own, as a shell starts a command, so that interrupt() reaches what a terminal's
    Ctrl-C reaches."""
    with log.open("wb") as out:
        return subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env={**env, "PYTHONUNBUFFERED": "1"},
            start_new_session=terminal,
            preexec_fn=die_with_parent,  # a killed pytest leaves nothing holding ports
        )


def accepting(port: int, host: str = "127.0.0.1") -> bool:
    """Something listens on host:port (a connection is accepted)."""
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def interrupt(process: subprocess.Popen) -> None:
    """Ctrl-C in the terminal of a command launched with `terminal`: SIGINT to its whole group."""
    os.killpg(process.pid, signal.SIGINT)


def json_lines(path: Path) -> list[dict]:
    """The JSON objects of a log, one a line; other lines (and a partly written last one) skipped."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
