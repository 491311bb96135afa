"""Child processes of the control plane: the one copy of die-with-parent and free-port, and the
translator workers that follow the control plane over xDS. (A local Envoy: envoy/process.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

import structlog

from .logging_setup import log_format

if TYPE_CHECKING:
    from aigw_translator.budgets import BudgetOptions

log = structlog.get_logger(__name__)

# How long a translator worker may take to bind its port, then to serve (after its first configuration).
WORKER_TIMEOUT = 30.0


def default_translator_workers() -> int:
    """Translator processes when not told: half the cores this process may run on (at least one).
    The other half is Envoy's: on a request that needs Python, each side costs about the same CPU
    (docs/performance.md), and one translator process is the control plane's own."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


def _prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up in this process (a child between fork and exec must not load
    libraries while its parent's other threads held locks); None where there is none (not Linux)."""
    import ctypes

    try:
        return ctypes.CDLL(None).prctl
    except (AttributeError, OSError):
        return None


_PRCTL = _prctl()


def set_parent_death_signal(sig: int) -> None:
    """In a child before exec: get `sig` when the parent goes away (Linux, PR_SET_PDEATHSIG). It
    comes when the parent's *thread* that started the child ends: start children from threads that
    last as long as they must (every caller here starts them from the main thread)."""
    if _PRCTL is not None:
        _PRCTL(1, sig)  # PR_SET_PDEATHSIG


def dies_with_this_process(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A Popen preexec_fn, made in this process: the child gets `sig` when this process goes away,
    and exits at once if it already has (it was adopted before the signal was set). The parent is
    named here, not guessed in the child: in a container this process is often PID 1, which a
    child must not take for the sign of an adoption."""
    parent = os.getpid()

    def preexec() -> None:
        set_parent_death_signal(sig)
        if os.getppid() != parent:
            os._exit(1)  # not a signal: its handler is still the parent's (asyncio's wakeup fd)

    return preexec


def free_port() -> int:
    """A loopback port free now (the kernel's pick; someone may take it before the caller binds it:
    for scripts, not for servers of ours, which bind port 0 themselves)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still running after `timeout` seconds; returns once it exited."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class TranslatorWorker:
    """A translator process that follows the control plane's xDS server; it bound `port` itself and
    reports on `ready` (a pipe: its port, then "serving" once its first configuration arrived)."""

    process: subprocess.Popen[bytes]
    port: int
    ready: IO[str]

    async def serving(self, timeout: float = WORKER_TIMEOUT) -> None:
        """Until the worker serves (it does once the control plane sent it its configuration)."""
        line = await _read_line(self.ready, self.process, timeout)
        self.ready.close()
        if line != "serving":
            raise RuntimeError(f"translator worker on port {self.port} did not start: {self._exit()}")
        log.info("translator_worker_ready", port=self.port, pid=self.process.pid)

    def _exit(self) -> str:
        code = self.process.poll()
        return f"exited with {code}" if code is not None else "no answer"

    async def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.ready.close()
        self.process.terminate()
        await asyncio.get_running_loop().run_in_executor(None, self.process.wait)


async def start_translator_worker(
    xds_port: int, budgets: BudgetOptions | None = None, timeout: float = WORKER_TIMEOUT
) -> TranslatorWorker:
    """A translator worker listening on a loopback port of its own choosing (it binds port 0 and
    reports the port it got, so no other process can take it in between); returns once it is bound.
    `budgets`: where it counts rate limits (the control plane's own choice)."""
    from aigw_translator.budgets import BudgetOptions

    budgets = budgets or BudgetOptions()
    read_fd, write_fd = os.pipe()
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aigw_translator",
                "--xds",
                f"127.0.0.1:{xds_port}",
                "--listen",
                "127.0.0.1:0",
                "--ready-fd",
                str(write_fd),
                "--log-level",
                "warning",
                "--log-format",
                log_format(),
                *budgets.worker_argv(),
            ],
            env={**os.environ, **budgets.worker_env()},
            stdin=subprocess.DEVNULL,
            pass_fds=(write_fd,),
            preexec_fn=dies_with_this_process(),
            # Not in the terminal's process group: Ctrl-C is for the control plane, which stops its
            # workers (a worker still importing printed a KeyboardInterrupt traceback).
            start_new_session=True,
        )
    finally:
        os.close(write_fd)  # the child's copy is the only writer: its exit ends our reads
    ready = os.fdopen(read_fd, "r")
    worker = TranslatorWorker(process, 0, ready)
    try:
        line = await _read_line(ready, process, timeout)
    except BaseException:  # cancelled while it starts (Ctrl-C): not left running
        process.kill()
        raise
    if not line.isdigit() or int(line) == 0:
        await worker.stop()
        raise RuntimeError(f"translator worker did not start: {worker._exit()}")
    worker.port = int(line)
    return worker


async def _read_line(pipe: IO[str], process: subprocess.Popen[bytes], timeout: float) -> str:
    """The next line from a worker's ready pipe ("" when it exited); kills it when it takes too long
    (which ends the read)."""
    read = asyncio.get_running_loop().run_in_executor(None, pipe.readline)
    try:
        # Not wait_for: on Python 3.11 it returns the line, and swallows a cancellation (Ctrl-C while
        # starting), when the line arrives as the task is cancelled.
        async with asyncio.timeout(timeout):
            return (await asyncio.shield(read)).strip()
    except TimeoutError:
        process.kill()
        await read
        return ""
