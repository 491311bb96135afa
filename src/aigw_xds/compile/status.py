"""Status conditions per resource, as Kubernetes controllers write them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from ..keys import ResourceKey


@dataclass(frozen=True, order=True)
class Condition:
    type: str  # Accepted, ResolvedRefs
    status: bool
    reason: str
    message: str = ""


class StatusBook:
    """Collects conditions during one compile; the last condition of a type wins, except that a
    False never turns back into True."""

    def __init__(self) -> None:
        self._conditions: dict[ResourceKey, dict[str, Condition]] = defaultdict(dict)

    def set(self, key: ResourceKey, type_: str, status: bool, reason: str, message: str = "") -> None:
        self.put(key, Condition(type_, status, reason, message))

    def put(self, key: ResourceKey, condition: Condition) -> None:
        conditions = self._conditions[key]
        current = conditions.get(condition.type)
        if current is not None and not current.status and condition.status:
            return
        conditions[condition.type] = condition

    def put_all(self, ops: Iterable[tuple[ResourceKey, Condition]]) -> None:
        """put() each (key, condition) in order (a route's conditions replayed: one call, not one
        per condition)."""
        book = self._conditions
        for key, condition in ops:
            conditions = book[key]
            current = conditions.get(condition.type)
            if current is None or current.status or not condition.status:
                conditions[condition.type] = condition

    def has(self, key: ResourceKey, type_: str) -> bool:
        return type_ in self._conditions.get(key, {})

    def snapshot(self) -> dict[ResourceKey, tuple[Condition, ...]]:
        return {k: tuple(sorted(v.values())) for k, v in sorted(self._conditions.items())}
