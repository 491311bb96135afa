"""The resource set: every valid resource read from the sources, plus the keys of those that are
invalid or stale. It is the input of the compile stage."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Generic, TypeVar

from pydantic import BaseModel

from .api.decode import Decoded
from .diagnostics import Diagnostic, Origin, ResourceKey, error

R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True)
class Loaded(Generic[R]):
    key: ResourceKey
    resource: R
    origin: Origin


@dataclass(frozen=True)
class ResourceSet:
    items: Mapping[ResourceKey, Loaded] = field(default_factory=dict)
    # Keys whose current content could not be used: failed validation, duplicated, or read from a file
    # that no longer parses. A Gateway that touches one keeps its last good configuration.
    bad_keys: frozenset[ResourceKey] = frozenset()
    diagnostics: tuple[Diagnostic, ...] = ()

    def get(self, kind: str, namespace: str, name: str) -> Loaded | None:
        return self.items.get(ResourceKey(kind, namespace, name))

    def of_kind(self, kind: str) -> Iterator[Loaded]:
        """Resources of a kind, ordered by namespace and name."""
        return iter(self._by_kind.get(kind, ()))

    def policies_for(self, policy_kind: str, target: ResourceKey) -> tuple[Loaded, ...]:
        """Policies of a kind whose targetRefs (or targetRef) name the target, in the target's
        namespace, ordered by name."""
        return self._policy_index.get((policy_kind, target), ())

    @cached_property
    def _policy_index(self) -> dict[tuple[str, ResourceKey], tuple[Loaded, ...]]:
        index: dict[tuple[str, ResourceKey], list[Loaded]] = {}
        for key in sorted(self.items):
            loaded = self.items[key]
            spec = getattr(loaded.resource, "spec", None)
            refs = list(getattr(spec, "targetRefs", None) or [])
            single = getattr(spec, "targetRef", None)
            if single is not None:
                refs.append(single)
            for target in dict.fromkeys(ResourceKey(ref.kind, key.namespace, ref.name) for ref in refs):
                index.setdefault((key.kind, target), []).append(loaded)
        return {k: tuple(v) for k, v in index.items()}

    @cached_property
    def _by_kind(self) -> dict[str, tuple[Loaded, ...]]:
        grouped: dict[str, list[Loaded]] = {}
        for key in sorted(self.items):
            grouped.setdefault(key.kind, []).append(self.items[key])
        return {kind: tuple(items) for kind, items in grouped.items()}

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]


def build_resource_set(
    decoded: Iterable[Decoded], extra: Iterable[Diagnostic] = (), stale: Iterable[ResourceKey] = ()
) -> ResourceSet:
    """Collect decoded documents; a key defined twice is an error and neither copy is used."""
    items: dict[ResourceKey, Loaded] = {}
    bad: set[ResourceKey] = set(stale)
    diags: list[Diagnostic] = list(extra)
    first_origin: dict[ResourceKey, Origin] = {}
    for d in decoded:
        diags.extend(d.diagnostics)
        if d.key is None:
            continue
        if d.key in first_origin:
            diags.append(error(f"defined twice (first at {first_origin[d.key]})", d.origin, d.key, "metadata.name"))
            items.pop(d.key, None)
            bad.add(d.key)
            continue
        first_origin[d.key] = d.origin
        if d.resource is not None:
            items[d.key] = Loaded(d.key, d.resource, d.origin)
        elif any(x.is_error for x in d.diagnostics):
            bad.add(d.key)
    return ResourceSet(items, frozenset(bad), tuple(diags))
