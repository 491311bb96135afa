"""Starting a gRPC server so that it can always be stopped: shared by the translator and the control
plane (a light module: the control plane without a translator imports nothing else of it)."""

from __future__ import annotations

import asyncio

import grpc


async def start_whole(server: grpc.aio.Server) -> None:
    """server.start(), carried to its end when the caller is cancelled meanwhile (Ctrl-C while
    starting), and the cancellation raised after: gRPC cannot stop a server whose start was cut short
    (its shutdown task fails with InvalidStateError, printed as a traceback at exit)."""
    starting = asyncio.ensure_future(server.start())
    try:
        await asyncio.shield(starting)
    except asyncio.CancelledError:
        await asyncio.wait([starting])
        raise
