"""Starting a gRPC server so that it can always be stopped: shared by the translator and the control
plane (a light module: the control plane without a translator imports nothing else of it)."""

from __future__ import annotations

import asyncio

import grpc


async def start_whole(server: grpc.aio.Server) -> None:
    """server.start(), carried to its end when the caller is cancelled meanwhile (Ctrl-C while
    starting, however many times the task is cancelled), and the cancellation raised after: gRPC
    cannot stop a server whose start was cut short (its shutdown task fails with InvalidStateError,
    printed as a traceback at exit). A start that fails is raised, or chained to the cancellation.
    (A second Ctrl-C under asyncio.run is no cancellation: asyncio raises KeyboardInterrupt.)"""
    starting = asyncio.ensure_future(server.start())
    cancelled = False
    while not starting.done():
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            if starting.cancelled():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError from starting.exception()
    starting.result()
