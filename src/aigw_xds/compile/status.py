"""Status conditions per resource, as Kubernetes controllers write them."""

from __future__ import annotations

import builtins
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain

from ..keys import ResourceKey


@dataclass(frozen=True, order=True, slots=True)
class Condition:
    type: str  # Accepted, ResolvedRefs
    status: bool
    reason: str
    message: str = ""


Slot = tuple[ResourceKey, str]  # a resource and a condition type

# One Condition for each that is set again and again (every route's Accepted, every backend's
# ResolvedRefs: 28,000 of them at 10,000 routes); it is immutable.
_condition = lru_cache(maxsize=1024)(Condition)


@dataclass(frozen=True, slots=True)
class Conditions:
    """What a piece of compiling set, as a book keeps it: per resource and condition type, the last
    True and the last False set (a False wins). Put on another book, the same as setting them there
    one by one, in one step."""

    true: tuple[tuple[Slot, Condition], ...] = ()
    false: tuple[tuple[Slot, Condition], ...] = ()


NO_CONDITIONS = Conditions()  # one for every piece that set none


# A Gateway's refusal of a route, which another Gateway's acceptance outweighs: Gateway API judges
# each parentRef, and a route's one Accepted condition is True when any of its parents takes it.
PARENT_REFUSALS = frozenset({"NotAllowedByListeners", "NoMatchingListenerHostname"})


class StatusBook:
    """Collects conditions during one compile; the last condition of a type wins, except that a
    False never turns back into True: kept as the last True and the last False of each resource and
    type, of which the False is the one that counts (but a parent's refusal, PARENT_REFUSALS, where
    another parent accepted).

    Conditions put as layers (put_layers) are held under what is set after them, and merged only
    when the book is read whole (conditions, snapshot; `having` reads through them): an edit's
    compile puts the conditions of every route on its Gateway's book, which in file mode nothing
    reads whole, and a copy of them all in the book's own dictionaries would be kept for nothing
    (3 MB at 10,000 routes)."""

    __slots__ = ("_false", "_layers", "_true")

    def __init__(self) -> None:
        self._true: dict[Slot, Condition] = {}
        self._false: dict[Slot, Condition] = {}
        self._layers: list[tuple[Conditions, ...]] = []  # under _true and _false, in the order put

    def set(self, key: ResourceKey, type_: str, status: bool, reason: str, message: str = "") -> None:
        self.put(key, _condition(type_, status, reason, message))

    def put(self, key: ResourceKey, condition: Condition) -> None:
        (self._true if condition.status else self._false)[(key, condition.type)] = condition

    def put_all(self, *conditions: Conditions) -> None:
        """Puts each Conditions in turn (in two dict updates, however many there are)."""
        self._true.update(chain.from_iterable(c.true for c in conditions))
        self._false.update(chain.from_iterable(c.false for c in conditions))

    def put_layers(self, *layers: tuple[Conditions, ...]) -> None:
        """Puts each layer's Conditions in turn, as put_all does, but holds them as they are (the
        tuples themselves: never changed) until the book is read."""
        if self._true or self._false:
            self._layers.append((Conditions(tuple(self._true.items()), tuple(self._false.items())),))
            self._true, self._false = {}, {}
        self._layers.extend(layers)

    def having(self, type_: str, keys: Iterable[ResourceKey]) -> builtins.set[ResourceKey]:
        """Those of `keys` that have a condition of `type_`: one pass over the layers, which stay
        as they are (a book read only for this keeps no merged copy of them)."""
        wanted = {(key, type_) for key in keys}
        pairs = chain(self._true.items(), self._false.items())
        layered = chain.from_iterable(chain(c.true, c.false) for c in chain.from_iterable(self._layers))
        return {slot[0] for slot, _ in chain(pairs, layered) if slot in wanted}

    def conditions(self) -> Conditions:
        self._merge_layers()
        false = self._counted_false()
        if not self._true and not false:
            return NO_CONDITIONS
        return Conditions(tuple(i for i in self._true.items() if i[0] not in false), tuple(false.items()))

    def snapshot(self) -> dict[ResourceKey, tuple[Condition, ...]]:
        self._merge_layers()
        by_key: dict[ResourceKey, list[Condition]] = defaultdict(list)
        for (key, _), condition in {**self._true, **self._counted_false()}.items():
            by_key[key].append(condition)
        return {k: tuple(sorted(v)) for k, v in sorted(by_key.items())}

    def _counted_false(self) -> dict[Slot, Condition]:
        """The False conditions that count: all but a parent's refusal where another accepted."""
        true = self._true
        return {slot: c for slot, c in self._false.items() if not (c.reason in PARENT_REFUSALS and slot in true)}

    def _merge_layers(self) -> None:
        """Folds the layers into this book's own conditions (the same conditions, merged)."""
        if not self._layers:
            return
        true, false = self._true, self._false
        self._true, self._false, layers, self._layers = {}, {}, self._layers, []
        self.put_all(*chain.from_iterable(layers), Conditions(tuple(true.items()), tuple(false.items())))
