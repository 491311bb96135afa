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


class Run(tuple[T, ...]):
    """A run: a tuple that hashes its items once (it is the key of several caches, each of which
    would hash all of them again)."""

    def __hash__(self) -> int:
        cached: int | None = self.__dict__.get("hash")
        if cached is None:
            cached = self.__dict__["hash"] = tuple.__hash__(self)
        return cached


def runs(items: Sequence[T], marks: Iterable[int], length: int = RUN_LENGTH) -> list[Run[T]]:
    """`items` in runs, each ending after an item whose mark (`marks`, one per item) is a multiple of
    `length` (the last run may end without one)."""
    ends = [end for end, item_mark in enumerate(marks, 1) if item_mark % length == 0]
    if not ends or ends[-1] < len(items):
        ends.append(len(items))
    return [Run(items[start:end]) for start, end in zip([0, *ends], ends, strict=False) if end > start]
