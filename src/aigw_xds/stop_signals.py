"""How the long-running commands (serve, run) end on a signal: SIGTERM (a pod deleted, `docker
stop`), SIGINT (Ctrl-C) and, for run, SIGHUP (a closed terminal) end them gracefully at any moment,
also while they are starting. (serve, a daemon, reads its configuration again on SIGHUP.)"""

from __future__ import annotations

import asyncio


class StopSignals:
    """Made at the start of a command's main coroutine, in that task. While the command starts, a
    signal cancels that task: a start can wait long (for a cluster's API server, for Envoy to be
    ready), and the process would otherwise be killed by the signal, or answer it only once started.
    After `started()`, a signal sets `requested`, which the serving command waits for."""

    def __init__(self, *signals: int) -> None:
        self.requested = asyncio.Event()
        self._starting = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.add_signal_handler(sig, self._signalled)

    def _signalled(self) -> None:
        if self._starting is not None and not self.requested.is_set():
            self._starting.cancel()
        self.requested.set()

    def started(self) -> None:
        self._starting = None

    def cut_start_short(self) -> bool:
        """In an `except asyncio.CancelledError` around the start: whether a signal cancelled it
        (then the cancellation is taken back, and the command stops as asked); otherwise re-raise."""
        task = asyncio.current_task()
        if not self.requested.is_set() or task is not self._starting or task is None:
            return False
        task.uncancel()
        self._starting = None
        return True
