"""Label and field selectors as the API server parses them for list and watch (pure functions).

Label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``, ``k notin (a,b)``,
comma-separated (all must hold). Field selectors: ``metadata.name`` and ``metadata.namespace``
with ``=``, ``==`` or ``!=``; any other field is refused, as the real server refuses a field
label a type does not support.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Matcher = Callable[[dict[str, Any]], bool]

_KEY = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_SET_TERM = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_TERM = re.compile(rf"^\s*({_KEY})\s*(==|!=|=)\s*([-A-Za-z0-9_.]*)\s*$")
_EXISTS_TERM = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")
_FIELDS = {"metadata.name": ("metadata", "name"), "metadata.namespace": ("metadata", "namespace")}


class SelectorError(ValueError):
    """The selector does not parse."""


def _terms(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    out: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(selector):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(selector[start:i])
            start = i + 1
    out.append(selector[start:])
    return [t for t in out if t.strip()]


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels if isinstance(labels, dict) else {}


def _label_term(term: str) -> Matcher:
    if m := _SET_TERM.match(term):
        key, op = m.group(1), m.group(2)
        values = {v.strip() for v in m.group(3).split(",") if v.strip()}
        if op == "in":
            return lambda o: _labels(o).get(key) in values
        return lambda o: _labels(o).get(key) not in values
    if m := _EQ_TERM.match(term):
        key, op, value = m.group(1), m.group(2), m.group(3)
        if op == "!=":
            return lambda o: _labels(o).get(key) != value
        return lambda o: _labels(o).get(key) == value
    if m := _EXISTS_TERM.match(term):
        negate, key = m.group(1) == "!", m.group(2)
        return lambda o: (key in _labels(o)) != negate
    raise SelectorError(f"unable to parse requirement: {term.strip()!r}")


def label_matcher(selector: str | None) -> Matcher | None:
    """None when the selector is empty (everything matches)."""
    if not selector or not selector.strip():
        return None
    terms = [_label_term(t) for t in _terms(selector)]
    return lambda o: all(t(o) for t in terms)


def _field_term(term: str) -> Matcher:
    for op in ("!=", "==", "="):
        if op in term:
            field, value = (s.strip() for s in term.split(op, 1))
            break
    else:
        raise SelectorError(f"invalid selector: '{term}'; can't understand '{term}'")
    if field not in _FIELDS:
        raise SelectorError(f"field label not supported: {field}")
    a, b = _FIELDS[field]

    def get(o: dict[str, Any]) -> str:
        return str((o.get(a) or {}).get(b) or "")

    if op == "!=":
        return lambda o: get(o) != value
    return lambda o: get(o) == value


def field_matcher(selector: str | None) -> Matcher | None:
    if not selector or not selector.strip():
        return None
    terms = [_field_term(t) for t in selector.split(",") if t.strip()]
    return lambda o: all(t(o) for t in terms)


def combine(*matchers: Matcher | None) -> Matcher | None:
    real = [m for m in matchers if m is not None]
    if not real:
        return None
    if len(real) == 1:
        return real[0]
    return lambda o: all(m(o) for m in real)
