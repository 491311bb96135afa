"""The status book: per resource and condition type the last condition set wins, except that a False
never turns back into True; and a piece of compiling's conditions, put on another book in one step,
leave it as setting them there one by one would."""

from __future__ import annotations

import random

import pytest

from aigw_xds.compile.status import Condition, StatusBook
from aigw_xds.keys import ResourceKey

KEYS = [ResourceKey("AIGatewayRoute", "default", f"r{i}") for i in range(3)]
TYPES = ["Accepted", "ResolvedRefs"]


def reference(ops: list[tuple[ResourceKey, Condition]]) -> dict[ResourceKey, tuple[Condition, ...]]:
    """The rule as stated, one condition at a time (the oracle: no code shared with the book)."""
    book: dict[ResourceKey, dict[str, Condition]] = {}
    for key, condition in ops:
        current = book.setdefault(key, {}).get(condition.type)
        if current is not None and not current.status and condition.status:
            continue
        book[key][condition.type] = condition
    return {k: tuple(sorted(v.values())) for k, v in sorted(book.items())}


def random_ops(rng: random.Random, n: int) -> list[tuple[ResourceKey, Condition]]:
    return [
        (rng.choice(KEYS), Condition(rng.choice(TYPES), rng.random() < 0.6, f"reason{rng.randrange(3)}"))
        for _ in range(n)
    ]


@pytest.mark.parametrize("seed", range(30))
def test_the_book_and_pieces_put_in_one_step_follow_the_rule(seed: int) -> None:
    rng = random.Random(seed)
    pieces = [random_ops(rng, rng.randrange(0, 8)) for _ in range(rng.randrange(1, 6))]
    one_by_one = StatusBook()
    in_steps = StatusBook()
    for piece in pieces:
        scratch = StatusBook()
        for key, condition in piece:
            one_by_one.put(key, condition)
            scratch.put(key, condition)
        in_steps.put_all(scratch.conditions())
    expected = reference([op for piece in pieces for op in piece])
    assert one_by_one.snapshot() == expected
    assert in_steps.snapshot() == expected
    for key in KEYS:
        for type_ in TYPES:
            assert (key in one_by_one.having(type_, {key})) == (any(c.type == type_ for c in expected.get(key, ())))


@pytest.mark.parametrize("seed", range(40))
def test_conditions_put_as_layers_with_conditions_set_between_follow_the_rule(seed: int) -> None:
    """put_layers holds conditions as layers under what is set after; reading merges them: the same
    as setting every condition in turn, whatever is nested, interleaved or read in between."""
    rng = random.Random(seed)
    ops: list[tuple[ResourceKey, Condition]] = []

    def book_of(depth: int) -> StatusBook:
        book = StatusBook()
        for _ in range(rng.randrange(1, 5)):
            step = rng.random()
            if step < 0.4 and depth < 2:
                layers = [[book_of(depth + 1).conditions() for _ in range(rng.randrange(0, 3))] for _ in range(2)]
                book.put_layers(*layers)
            elif step < 0.7:
                for key, condition in random_ops(rng, rng.randrange(1, 4)):
                    book.put(key, condition)
                    ops.append((key, condition))
            else:
                piece = random_ops(rng, rng.randrange(1, 4))
                scratch = StatusBook()
                for key, condition in piece:
                    scratch.put(key, condition)
                book.put_all(scratch.conditions())
                ops.extend(piece)
        return book

    book = book_of(0)
    expected = reference(ops)
    for key in KEYS:  # read through the layers, which stay unmerged
        for type_ in TYPES:
            assert (key in book.having(type_, {key})) == any(c.type == type_ for c in expected.get(key, ()))
    assert book.snapshot() == expected
    more = random_ops(rng, 3)
    for key, condition in more:
        book.put(key, condition)
    assert book.snapshot() == reference(ops + more)
