"""Status conditions per resource, as Kubernetes controllers write them."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import chain

from ..keys import ResourceKey


@dataclass(frozen=True, order=True, slots=True)
class Condition:
    type: str  # Accepted, ResolvedRefs
    status: bool
    reason: str
    message: str = ""


Slot = tuple[ResourceKey, str]  # a resource and a condition type


@dataclass(frozen=True, slots=True)
class Conditions:
    """What a piece of compiling set, as a book keeps it: per resource and condition type, the last
    True and the last False set (a False wins). Put on another book, the same as setting them there
    one by one, in one step."""

    true: tuple[tuple[Slot, Condition], ...] = ()
    false: tuple[tuple[Slot, Condition], ...] = ()


class StatusBook:
    """Collects conditions during one compile; the last condition of a type wins, except that a
    False never turns back into True: kept as the last True and the last False of each resource and
    type, of which the False is the one that counts."""

    def __init__(self) -> None:
        self._true: dict[Slot, Condition] = {}
        self._false: dict[Slot, Condition] = {}

    def set(self, key: ResourceKey, type_: str, status: bool, reason: str, message: str = "") -> None:
        self.put(key, Condition(type_, status, reason, message))

    def put(self, key: ResourceKey, condition: Condition) -> None:
        (self._true if condition.status else self._false)[(key, condition.type)] = condition

    def put_all(self, *conditions: Conditions) -> None:
        """Puts each Conditions in turn (in two dict updates, however many there are)."""
        self._true.update(chain.from_iterable(c.true for c in conditions))
        self._false.update(chain.from_iterable(c.false for c in conditions))

    def put_books(self, *books: StatusBook) -> None:
        """Puts each book's conditions in turn, as dict merges (their slots are not hashed again)."""
        for book in books:
            self._true.update(book._true)
            self._false.update(book._false)

    def has(self, key: ResourceKey, type_: str) -> bool:
        return (key, type_) in self._false or (key, type_) in self._true

    def conditions(self) -> Conditions:
        false = self._false
        return Conditions(tuple(i for i in self._true.items() if i[0] not in false), tuple(false.items()))

    def snapshot(self) -> dict[ResourceKey, tuple[Condition, ...]]:
        by_key: dict[ResourceKey, list[Condition]] = defaultdict(list)
        for (key, _), condition in {**self._true, **self._false}.items():
            by_key[key].append(condition)
        return {k: tuple(sorted(v)) for k, v in sorted(by_key.items())}
