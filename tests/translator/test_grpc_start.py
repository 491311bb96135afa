"""A gRPC server whose start is cancelled (Ctrl-C while a command starts) still stops cleanly."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any

import grpc
import pytest

from aigw_translator.grpc_start import start_whole


def _grpc_start(server: grpc.aio.Server) -> Coroutine[Any, Any, None]:
    return server.start()


@pytest.mark.parametrize("cancels", [1, 3])
@pytest.mark.parametrize("start", [start_whole, _grpc_start], ids=["start_whole", "grpc's own start"])
def test_a_server_whose_start_was_cancelled_stops_without_a_failed_task(start, cancels: int) -> None:
    """Cancelled at its first step (as asyncio.run cancels its main task on Ctrl-C), or again while it
    finishes, start_whole finishes the start and then raises the cancellation, leaving no start
    running, so the stop that follows is clean; gRPC's own start, cut short, leaves a shutdown task
    that fails (the traceback users saw): the contrast shows the test can fail."""
    failures: list[BaseException] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: failures.append(ctx["exception"]))
        server = grpc.aio.server()
        server.add_insecure_port("127.0.0.1:0")
        starting = asyncio.ensure_future(start(server))
        for _ in range(cancels):
            await asyncio.sleep(0)
            starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and "start" in repr(t.get_coro())]
        assert left == [] or start is _grpc_start
        await server.stop(0.5)
        await asyncio.sleep(0.1)  # the shutdown's own tasks end

    try:
        asyncio.run(main())
    except asyncio.InvalidStateError as exc:  # or out of the loop's stop itself
        failures.append(exc)
    gc.collect()  # a failed task's exception is reported when the task is collected
    if start is start_whole:
        assert failures == []
    else:
        assert asyncio.InvalidStateError in [type(f) for f in failures]
