"""Memory measured with tracemalloc, for tests (no timing)."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def held(build: Callable[[], T]) -> tuple[T, int]:
    """What build() returns, and the bytes it allocated that are still held after a collection."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        built = build()
        gc.collect()
        return built, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
