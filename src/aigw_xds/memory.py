"""Giving memory back to the system after a burst.

A fleet connecting at once (or a push to all of it) allocates each node's first answers and
serializations, hundreds of KB per node, and frees them a moment later. glibc's malloc keeps freed
pages in its heap for reuse, so without help the process keeps the peak of the last burst as its
resident size: with 1,000 nodes, most of what looked like per-node memory (docs/performance.md).
`MemoryTrimmer` waits for a quiet moment after activity and asks malloc to return its free pages
(malloc_trim). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


def _malloc_trim() -> Callable[[], object] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class MemoryTrimmer:
    """poke() on activity (nodes connecting, ACKing, a snapshot published); once nothing has poked
    for `quiet` seconds, what was kept for the burst is dropped (`forget`: the answers the fleet's
    streams shared, SnapshotCache.forget_answers) and free memory goes back to the system, once per
    burst."""

    def __init__(
        self, quiet: float = 1.0, trim: Callable[[], object] | None = None, forget: Callable[[], object] | None = None
    ) -> None:
        self.quiet = quiet
        self._trim = trim if trim is not None else _malloc_trim()
        self._forget = forget
        self._poked = asyncio.Event()
        self.trims = 0

    def poke(self, *_: object) -> None:
        self._poked.set()

    async def run(self, stop: asyncio.Event) -> None:
        if self._trim is None and self._forget is None:
            return
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                poked = asyncio.ensure_future(self._poked.wait())
                await asyncio.wait({poked, stopping}, return_when=asyncio.FIRST_COMPLETED)
                poked.cancel()
                # Quiet: no poke for a whole period (a fan-out's ACKs keep arriving for a while).
                while self._poked.is_set() and not stop.is_set():
                    self._poked.clear()
                    await asyncio.wait({stopping}, timeout=self.quiet)
                if stop.is_set():
                    break
                if self._forget is not None:
                    self._forget()
                if self._trim is not None:
                    before, started = rss_kb(), time.perf_counter()
                    self._trim()
                    self.trims += 1
                    log.debug(
                        "memory_trimmed",
                        rss_before_kb=before,
                        rss_after_kb=rss_kb(),
                        seconds=round(time.perf_counter() - started, 4),
                    )
        finally:
            stopping.cancel()


def rss_kb() -> int:
    """This process's resident memory in KiB (Linux), 0 where /proc does not say."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0
