"""The resource set: every valid resource read from the sources, plus the keys of those that are
invalid or stale. It is the input of the compile stage."""

from __future__ import annotations

import bisect
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
from typing import Any, Protocol

from .api.decode import Decoded
from .api.decode import Loaded as Loaded  # a valid resource: made by decoding, held by the set
from .diagnostics import Diagnostic, Origin, error, warning
from .keys import ResourceKey


class ResourceView(Protocol):
    """What compiling reads of a resource set (incremental.py records these reads)."""

    def get(self, kind: str, namespace: str, name: str) -> Loaded[Any] | None: ...

    def of_kind(self, kind: str) -> Iterator[Loaded[Any]]: ...

    def policies_for(self, policy_kind: str, target: ResourceKey) -> tuple[Loaded[Any], ...]: ...

    def with_label(self, kind: str, label: str, namespace: str, value: str) -> tuple[Loaded[Any], ...]: ...

    def is_bad(self, key: ResourceKey) -> bool: ...


def found_key(loaded: Loaded[Any] | None, kind: str, namespace: str, name: str) -> ResourceKey:
    """The key a read of (kind, namespace, name) found: the resource's own when it is there, so a
    compile that notes its reads (closures, memo tokens) holds one key object per resource, not one
    more per read (14,000 more at 10,000 routes over 2,000 backends)."""
    return loaded.key if loaded is not None else ResourceKey(kind, namespace, name)


def target_refs(loaded: Loaded[Any]) -> list[Any]:
    """A policy's target references as written: its targetRefs, and its targetRef (v1alpha1)."""
    spec = getattr(loaded.resource, "spec", None)
    refs = list(getattr(spec, "targetRefs", None) or [])
    single = getattr(spec, "targetRef", None)
    if single is not None:
        refs.append(single)
    return refs


def policy_targets(loaded: Loaded[Any]) -> tuple[ResourceKey, ...]:
    """The resources a policy's targetRefs (or targetRef) name, in its namespace."""
    return tuple(dict.fromkeys(ResourceKey(ref.kind, loaded.key.namespace, ref.name) for ref in target_refs(loaded)))


def as_route(target: ResourceKey) -> ResourceKey:
    """A policy's target as the object it means here: an HTTPRoute is the AIGatewayRoute of that
    name (Envoy AI Gateway makes one of each, and BackendTrafficPolicies target it)."""
    return ResourceKey("AIGatewayRoute", target.namespace, target.name) if target.kind == "HTTPRoute" else target


def _key_of(loaded: Loaded[Any]) -> ResourceKey:
    return loaded.key


@dataclass(frozen=True)
class Changes:
    """How a resource set differs from the one it was built after (its source's last)."""

    # That set, while anything else holds it (weakly: sets never chain up behind each other).
    previous: weakref.ref[ResourceSet]
    # The keys whose item is another object than there, or is there and not here (or here only).
    keys: frozenset[ResourceKey]

    def since(self, previous: ResourceSet) -> frozenset[ResourceKey] | None:
        """The changed keys, when `previous` is the set these are relative to."""
        return self.keys if self.previous() is previous else None


@dataclass(frozen=True)
class ResourceSet:
    items: Mapping[ResourceKey, Loaded[Any]] = field(default_factory=dict)
    # Keys whose current content could not be used: failed validation, duplicated, or read from a file
    # that no longer parses. A Gateway that touches one keeps its last good configuration.
    bad_keys: frozenset[ResourceKey] = frozenset()
    diagnostics: tuple[Diagnostic, ...] = ()
    # Bad keys that are still in `items` with their last good version (shown as stale in status).
    stale_keys: frozenset[ResourceKey] = frozenset()
    # Bad keys whose document names targets (a policy that did not validate; a route: its parent
    # Gateways): those targets.
    bad_targets: Mapping[ResourceKey, tuple[ResourceKey, ...]] = field(default_factory=dict)
    # Against the set built before it (build_resource_set's `previous`): an edit's compile reads what
    # changed from here, and the indexes of kinds it did not touch are the previous set's.
    changes: Changes | None = field(default=None, compare=False, repr=False)
    # Built by build_resource_set_by_file's fast path: each file's items, by the id of its documents.
    by_file: Mapping[int, FileItems] | None = field(default=None, compare=False, repr=False)

    def get(self, kind: str, namespace: str, name: str) -> Loaded[Any] | None:
        return self.items.get(ResourceKey(kind, namespace, name))

    def is_bad(self, key: ResourceKey) -> bool:
        return key in self.bad_keys

    def with_label(self, kind: str, label: str, namespace: str, value: str) -> tuple[Loaded[Any], ...]:
        """Resources of a kind in a namespace whose `label` has this value."""
        return self.labelled(kind, label).get((namespace, value), ())

    def of_kind(self, kind: str) -> Iterator[Loaded[Any]]:
        """Resources of a kind, ordered by namespace and name."""
        return iter(self._by_kind.get(kind, ()))

    def policies_for(self, policy_kind: str, target: ResourceKey) -> tuple[Loaded[Any], ...]:
        """Policies of a kind whose targetRefs (or targetRef) name the target, in the target's
        namespace, ordered by name."""
        index = self._policy_indexes.get(policy_kind)
        if index is None:  # built once per set and policy kind, from that kind's resources only
            grouped: dict[ResourceKey, list[Loaded[Any]]] = {}
            for loaded in self.of_kind(policy_kind):
                for named in policy_targets(loaded):
                    grouped.setdefault(named, []).append(loaded)
            index = self._policy_indexes[policy_kind] = {k: tuple(v) for k, v in grouped.items()}
        return index.get(target, ())

    @cached_property
    def _policy_indexes(self) -> dict[str, dict[ResourceKey, tuple[Loaded[Any], ...]]]:
        kept = self._unchanged_kinds()
        return {kind: index for kind, index in kept[0]._policy_indexes.items() if kind not in kept[1]} if kept else {}

    def labelled(self, kind: str, label: str) -> dict[tuple[str, str], tuple[Loaded[Any], ...]]:
        """Resources of a kind by (namespace, value of `label`), e.g. EndpointSlices by Service: an
        index built once per set (a cluster holds thousands of slices; scanning them for each
        reference cost seconds per compile at 1,000 routes)."""
        index = self._label_indexes.get((kind, label))
        if index is None:
            grouped: dict[tuple[str, str], list[Loaded[Any]]] = {}
            for loaded in self.of_kind(kind):
                value = loaded.resource.metadata.labels.get(label)
                if value:
                    grouped.setdefault((loaded.key.namespace, value), []).append(loaded)
            index = {key: tuple(items) for key, items in grouped.items()}
            self._label_indexes[(kind, label)] = index
        return index

    @cached_property
    def _label_indexes(self) -> dict[tuple[str, str], dict[tuple[str, str], tuple[Loaded[Any], ...]]]:
        kept = self._unchanged_kinds()
        return {k: index for k, index in kept[0]._label_indexes.items() if k[0] not in kept[1]} if kept else {}

    @cached_property
    def _by_kind(self) -> dict[str, tuple[Loaded[Any], ...]]:
        kept = self._unchanged_kinds()
        if kept is None:
            grouped: dict[str, list[Loaded[Any]]] = {}
            for key in sorted(self.items):
                grouped.setdefault(key.kind, []).append(self.items[key])
            return {kind: tuple(items) for kind, items in grouped.items()}
        previous, touched = kept
        by_kind = {kind: items for kind, items in previous._by_kind.items() if kind not in touched}
        assert self.changes is not None  # _unchanged_kinds says so
        for kind in touched:  # the previous list, patched where its keys changed
            items = list(previous._by_kind.get(kind, ()))
            for key in sorted(k for k in self.changes.keys if k.kind == kind):
                at = bisect.bisect_left(items, key, key=_key_of)
                present = at < len(items) and items[at].key == key
                if key not in self.items:
                    if present:
                        del items[at]
                elif present:
                    items[at] = self.items[key]
                else:
                    items.insert(at, self.items[key])
            if items:
                by_kind[kind] = tuple(items)
        return by_kind

    def adopt_indexes(self) -> None:
        """Builds the indexes by kind now, taking the previous set's for the kinds that did not change."""
        for index in (self._by_kind, self._policy_indexes, self._label_indexes):
            assert index is not None

    def _unchanged_kinds(self) -> tuple[ResourceSet, set[str]] | None:
        """The set this one was built after (if still held) and the kinds that changed since."""
        previous = self.changes.previous() if self.changes is not None else None
        if previous is None or self.changes is None:
            return None
        return previous, {key.kind for key in self.changes.keys}

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]


# How the warning begins that says a resource's invalid version is replaced by its last good one.
LAST_GOOD_VERSION = "the last good version"


def build_resource_set(
    decoded: Iterable[Decoded],
    extra: Iterable[Diagnostic] = (),
    stale: Iterable[ResourceKey] = (),
    previous: ResourceSet | None = None,
    keep_last_good: bool = True,
) -> ResourceSet:
    """Collect decoded documents. A key defined twice is an error and neither copy is used.
    keep_last_good off (Kubernetes mode), an invalid resource is not replaced by its last good
    version: every replica, whenever it started, has the same set for the same objects.

    `stale` names keys whose documents are given in their last good form already (from a file that
    no longer parses). With the `previous` set, a resource whose new version is invalid or
    duplicated keeps its last good version, marked stale, instead of disappearing: a bad edit never
    removes what was serving; and an unchanged resource is the same Loaded object as there (the
    new set's `changes` say which are not).
    """
    last_good: Mapping[ResourceKey, Loaded[Any]] = previous.items if previous is not None else {}
    new: list[ResourceKey] = []  # keys given a new Loaded
    items: dict[ResourceKey, Loaded[Any]] = {}
    bad: set[ResourceKey] = set(stale)
    bad_targets: dict[ResourceKey, tuple[ResourceKey, ...]] = {}
    diags: list[Diagnostic] = list(extra)
    first_origin: dict[ResourceKey, Origin] = {}
    # A document that no longer yields its resource under the same name (too broken to name itself,
    # or a typo in its kind or apiVersion) stands where its last good version stood: same file, same
    # document index. That resource keeps its last good version unless it is defined elsewhere now.
    by_origin: dict[Origin, ResourceKey] | None = None  # built when a document first needs it
    displaced: dict[ResourceKey, Origin] = {}
    for d in decoded:
        diags.extend(d.diagnostics)
        if d.resource is None and d.diagnostics:
            if by_origin is None:
                by_origin = {loaded.origin: key for key, loaded in last_good.items()}
            previous_key = by_origin.get(d.origin)
            if previous_key is not None and previous_key != d.key:
                displaced[previous_key] = d.origin
        if d.key is None:
            continue
        if d.key in first_origin:
            # Neither is taken for the one meant: the other may be the one just written.
            twice = f"defined twice (also at {first_origin[d.key]}): rename or remove one"
            diags.append(error(twice, d.origin, d.key, "metadata.name"))
            items.pop(d.key, None)
            bad.add(d.key)
            continue
        first_origin[d.key] = d.origin
        if d.loaded is not None:
            # The same object for an unchanged resource: what was compiled from it can be reused.
            kept = last_good.get(d.key)
            if kept is not None and kept.resource is d.loaded.resource and kept.origin == d.origin:
                items[d.key] = kept
            else:
                items[d.key] = d.loaded
                new.append(d.key)
        elif any(x.is_error for x in d.diagnostics):
            bad.add(d.key)
            if d.targets:
                bad_targets[d.key] = d.targets
    for key in sorted(displaced.keys() - first_origin.keys()):
        diags.append(error(f"this document no longer reads as {key}: fix its kind, apiVersion or name", displaced[key]))
        bad.add(key)
    for key in sorted(bad - items.keys()) if keep_last_good else ():
        kept = last_good.get(key)
        if kept is not None:
            items[key] = kept
            diags.append(warning(f"{LAST_GOOD_VERSION} (from {kept.origin}) stays in use", None, key))
    changes = None
    if previous is not None:
        changed = {key for key in new if items.get(key) is not last_good.get(key)} | (last_good.keys() - items.keys())
        changes = Changes(weakref.ref(previous), frozenset(changed))
    resources = ResourceSet(
        items,
        frozenset(bad),
        tuple(diags),
        frozenset(bad & items.keys()),
        {k: v for k, v in bad_targets.items() if k in bad},
        changes,
    )
    return _adopted(resources, previous)


def _adopted(resources: ResourceSet, previous: ResourceSet | None) -> ResourceSet:
    """`resources`, with the indexes of the kinds that did not change taken from `previous`; or
    `previous` itself when nothing differs (a load after an event that changed nothing: the same set,
    so that nothing is compiled again)."""
    if previous is None:
        return resources
    if (
        resources.changes is not None
        and not resources.changes.keys
        and (resources.bad_keys, resources.stale_keys, resources.diagnostics, resources.bad_targets)
        == (previous.bad_keys, previous.stale_keys, previous.diagnostics, previous.bad_targets)
    ):
        return previous
    resources.adopt_indexes()  # now, while `previous` is surely held
    return resources


@dataclass(frozen=True, slots=True)
class FileItems:
    """A file's resources, as a set built by file holds them (the documents object is the key)."""

    documents: Sequence[Decoded]
    items: dict[ResourceKey, Loaded[Any]]


def build_resource_set_by_file(
    files: Sequence[Sequence[Decoded]],
    extra: Iterable[Diagnostic] = (),
    stale: Iterable[ResourceKey] = (),
    previous: ResourceSet | None = None,
) -> ResourceSet:
    """build_resource_set of the files' documents, file after file: the same set. While every
    document is a valid resource and no key is in two files (a configuration that loads cleanly),
    an edit costs the files it changed, not the documents of all the others: a file given as the
    very documents object of the previous set's contributes the items it did then."""
    extra, stale = tuple(extra), frozenset(stale)
    by_file = None if extra or stale else _items_by_file(files, previous)
    if by_file is None:  # something to report, keep or refuse: the general path says what
        return build_resource_set(chain.from_iterable(files), extra, stale, previous)
    items: dict[ResourceKey, Loaded[Any]] = {}
    for entry in by_file.values():
        items.update(entry.items)
    if len(items) != sum(len(entry.items) for entry in by_file.values()):  # a key defined twice
        return build_resource_set(chain.from_iterable(files), extra, stale, previous)
    changes = None
    if previous is not None:
        changes = Changes(weakref.ref(previous), frozenset(_changed_keys(previous, by_file, items)))
    return _adopted(ResourceSet(items, changes=changes, by_file=by_file), previous)


def _items_by_file(files: Sequence[Sequence[Decoded]], previous: ResourceSet | None) -> dict[int, FileItems] | None:
    """Each file's items (the previous set's where the documents are the same object), or None when
    a document is not a valid resource or a file defines a key twice."""
    known = previous.by_file if previous is not None and previous.by_file is not None else {}
    last_good: Mapping[ResourceKey, Loaded[Any]] = previous.items if previous is not None else {}
    by_file: dict[int, FileItems] = {}
    for documents in files:
        entry = known.get(id(documents))
        if entry is None or entry.documents is not documents:
            file_items: dict[ResourceKey, Loaded[Any]] = {}
            for d in documents:
                if d.loaded is None or d.key is None or d.diagnostics or d.key in file_items:
                    return None
                kept = last_good.get(d.key)
                same = kept is not None and kept.resource is d.loaded.resource and kept.origin == d.origin
                file_items[d.key] = kept if same and kept is not None else d.loaded
            entry = FileItems(documents, file_items)
        by_file[id(documents)] = entry
    return by_file


def _changed_keys(
    previous: ResourceSet, by_file: Mapping[int, FileItems], items: Mapping[ResourceKey, Loaded[Any]]
) -> set[ResourceKey]:
    """The keys whose item is another object than in `previous` (or is in one set only)."""
    before = previous.items
    if previous.by_file is None:  # built by the general path: compare every key
        return {k for k, loaded in items.items() if before.get(k) is not loaded} | (before.keys() - items.keys())
    changed: set[ResourceKey] = set()
    for file_id, entry in by_file.items():
        if previous.by_file.get(file_id) is not entry:
            changed.update(k for k, loaded in entry.items.items() if before.get(k) is not loaded)
    for file_id, entry in previous.by_file.items():
        if by_file.get(file_id) is not entry:
            changed.update(k for k in entry.items if k not in items)
    return changed
