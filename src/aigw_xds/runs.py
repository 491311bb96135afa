"""Runs: a long sequence (a Gateway's route units, its rules) cut into short consecutive pieces
where its items say, not where a count falls. An item ends a run when its mark (the CRC-32 of its
name: the same in every process) is a multiple of the run length, so an edit, or an item added or
removed, changes the run it falls in and no other; what is computed per run and kept is reused for
all the others, and an edit costs a run, not the whole sequence."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")

RUN_LENGTH = 32  # items per run, on average


def mark(name: str) -> int:
    return zlib.crc32(name.encode())


def runs(items: Sequence[T], marks: Iterable[int], length: int = RUN_LENGTH) -> list[tuple[T, ...]]:
    """`items` in runs, each ending after an item whose mark (`marks`, one per item) is a multiple of
    `length` (the last run may end without one)."""
    out: list[tuple[T, ...]] = []
    start = 0
    for end, item_mark in enumerate(marks, 1):
        if item_mark % length == 0:
            out.append(tuple(items[start:end]))
            start = end
    if start < len(items):
        out.append(tuple(items[start:]))
    return out
