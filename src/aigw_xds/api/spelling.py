"""Misspelt fields where a document's model ignores unknown ones (pure).

The Gateway API and Envoy Gateway kinds, metadata and references are Lenient models (base.py): their
full schemas hold fields aigw-xds does not read, which must not be errors. A field they ignore that
is close to one the model has is most likely a typo of it (`namspace`, `listners`, `hostnam`), and
would otherwise be dropped without a word: the resource lands in the default namespace, a listener
matches every host. Strict models report their unknown fields themselves (decode._message).
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel

from . import kinds
from .base import Lenient, ObjectMeta

# How close an unknown field must be to a known one to be reported as its typo (difflib's ratio):
# `namspace` -> namespace is 0.94, `generateName` -> name 0.5.
CLOSENESS = 0.8
# Fields of the full schemas that aigw-xds does not read and that are that close to one it reads
# (checked against the upstream schemas' fields: these are the only ones).
UPSTREAM_FIELDS: dict[type[BaseModel], frozenset[str]] = {
    ObjectMeta: frozenset({"deletionTimestamp"}),  # creationTimestamp
    kinds.ServiceMeta: frozenset({"deletionTimestamp"}),
    kinds.ServiceSpec: frozenset({"clusterIPs"}),  # clusterIP
    kinds.OIDC: frozenset({"clientIDRef"}),  # clientID
    kinds.ClientTrafficPolicySpec: frozenset({"http3"}),  # http1, http2
}


@dataclass(frozen=True, slots=True)
class _Plan:
    """What to check in a mapping validated by a model: its own fields when it is Lenient, and the
    fields that lead to a Lenient model further down."""

    known: frozenset[str] | None  # the names it takes (None: it reports unknown fields itself)
    spelt: tuple[str, ...]  # the names as written (aliases), what a typo is compared with
    children: tuple[tuple[str, _Plan], ...]


# A place in a document: its parent's place and its own name (a field's or an index), built into
# a field path only for a field reported (most documents have none).
_Place = tuple[Any, str | int] | None


def misspelt_fields(model: type[BaseModel], document: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, the field it is most likely a typo of) for each field `document` gives that a
    Lenient part of `model` ignores and that is close to one of its fields."""
    found: list[tuple[_Place, str]] = []
    plan = _plan(model)
    if plan is not None:
        _walk(plan, document, None, found)
    return [(_path(place), close) for place, close in found]


def typo_of(model: type[BaseModel], name: str) -> str | None:
    """The field of `model` that a name it does not have is most likely a typo of (as
    misspelt_fields says), or None: not close to one, or a field of the upstream schema."""
    plan = _plan(model)
    if plan is None or plan.known is None or name in plan.known:
        return None
    close = difflib.get_close_matches(name, plan.spelt, n=1, cutoff=CLOSENESS)
    return close[0] if close else None


def _walk(plan: _Plan, mapping: dict[str, Any], place: _Place, found: list[tuple[_Place, str]]) -> None:
    known = plan.known
    if known is not None and not known.issuperset(mapping):
        for given in mapping.keys() - known:
            close = difflib.get_close_matches(str(given), plan.spelt, n=1, cutoff=CLOSENESS)
            if close:
                found.append(((place, str(given)), close[0]))
    for name, child in plan.children:
        value = mapping.get(name)
        if isinstance(value, dict):
            _walk(child, value, (place, name), found)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    _walk(child, item, ((place, name), index), found)


def _path(place: _Place) -> str:
    parts: list[str | int] = []
    while place is not None:
        place, part = place
        parts.append(part)
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in reversed(parts)).removeprefix(".")


@cache
def _plan(model: type[BaseModel]) -> _Plan | None:
    """The model's plan; None when nothing under it ignores fields (no walk there at all). (No
    model holds itself, directly or not.)"""
    children = []
    for name, info in model.model_fields.items():
        child = model_in(info.annotation)
        plan = _plan(child) if child is not None else None
        if plan is not None:
            children.append((info.alias or name, plan))
    lenient = issubclass(model, Lenient)
    if not lenient and not children:
        return None
    spelt = tuple(info.alias or name for name, info in model.model_fields.items())
    known = frozenset(spelt) | frozenset(model.model_fields) | UPSTREAM_FIELDS.get(model, frozenset())
    return _Plan(known if lenient else None, spelt, tuple(children))


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The one model an annotation holds: itself, or inside an Optional, a list or a tuple (not a
    mapping's values: their keys are not fields)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (dict, Mapping):
        return None
    models = {m for m in map(model_in, typing.get_args(annotation)) if m is not None}
    return models.pop() if len(models) == 1 else None
