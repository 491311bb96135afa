"""The ext_proc request stream, with a deadline: lets the router phase act when Envoy has sent
nothing for too long (a backend silent mid-stream) instead of only answering what Envoy sends.

Only a stream whose phase has a deadline pays for it (one pending read task); every other stream
reads its requests exactly as a plain `async for` would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def with_deadline(items: AsyncIterator[T], deadline: Callable[[], float]) -> AsyncIterator[T | None]:
    """Each item of `items`; None each time `deadline()` (a time.monotonic() value, 0.0 for none)
    passes before the next item arrives. The caller must move or clear the deadline after a None,
    or it gets None again at once. A deadline never cancels the read that was waiting: the next item is
    the one it returns."""
    it = aiter(items)
    pending: asyncio.Future[T] | None = None
    try:
        while True:
            due = deadline()
            if pending is None and not due:
                try:
                    item = await anext(it)
                except StopAsyncIteration:
                    return
                yield item
                continue
            if pending is None:
                pending = asyncio.ensure_future(anext(it))
            timeout = max(0.0, due - time.monotonic()) if due else None
            done, _ = await asyncio.wait((pending,), timeout=timeout)
            if not done:
                yield None
                continue
            finished, pending = pending, None
            try:
                item = finished.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            pending.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Marks a read nobody awaits any more as seen (asyncio logs an exception never retrieved)."""
    if not future.cancelled():
        future.exception()
