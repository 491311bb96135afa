"""The ext_proc request stream, with a deadline: lets the router phase act when Envoy has sent
nothing for too long (a backend silent mid-stream) instead of only answering what Envoy sends.

Only a stream whose route has a streamIdleTimeout reads its requests through this (a reader task
hands them over; one timer per stream checks the deadline, which the phase only moves); every
other stream reads them with a plain `async for`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, TypeVar

T = TypeVar("T")

_END = object()  # the request stream ended
_CHECK = object()  # the timer fired: check the deadline


async def with_deadline(items: AsyncIterator[T], deadline: Callable[[], float]) -> AsyncGenerator[T | None, None]:
    """Each item of `items`; None each time `deadline()` (a time.monotonic() value, 0.0 for none)
    passes before the next item arrives. The caller must move or clear the deadline after a None,
    or it gets None again at once. A deadline never cancels the read under way: the next item is
    the one it returns. The caller closes it (contextlib.aclosing) so that its reader task stops as
    soon as the caller is done."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in items:
                queue.put_nowait(item)
        except Exception as exc:  # raised where the caller reads
            queue.put_nowait(exc)
        queue.put_nowait(_END)

    reader = asyncio.ensure_future(pump())
    timer: asyncio.TimerHandle | None = None
    timer_due = 0.0
    try:
        while True:
            due = deadline()
            if due and (timer is None or timer_due > due):
                if timer is not None:
                    timer.cancel()
                timer = loop.call_later(max(0.0, due - time.monotonic()), queue.put_nowait, _CHECK)
                timer_due = due
            item = await queue.get()
            if item is _CHECK:
                timer = None
                due = deadline()
                if due and due <= time.monotonic():
                    yield None
                continue  # no deadline, or one moved later: the loop arms the timer for it
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        if timer is not None:
            timer.cancel()
        reader.cancel()
