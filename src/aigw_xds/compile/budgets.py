"""Budgets (pure): the pieces of the translator's RateLimit messages that BackendTrafficPolicy rate
limits (traffic.py) and QuotaPolicy buckets (quota.py) share: client selectors -> conditions, windows,
and adding a budget to a fleet's configuration once."""

from __future__ import annotations

import re

from aigw.translator.v1 import config_pb2

from ..api import kinds
from ..api.kinds import parse_quota_duration

_HEADER_MATCH = {
    "Exact": config_pb2.HeaderCondition.EXACT,
    "RegularExpression": config_pb2.HeaderCondition.REGULAR_EXPRESSION,
    "Distinct": config_pb2.HeaderCondition.DISTINCT,
}
_PATH_MATCH = {
    "Exact": config_pb2.PathCondition.EXACT,
    "PathPrefix": config_pb2.PathCondition.PATH_PREFIX,
    "RegularExpression": config_pb2.PathCondition.REGULAR_EXPRESSION,
}
# Envoy Gateway's RateLimitUnit: (seconds, calendar months).
_UNITS: dict[str, tuple[int, int]] = {
    "Second": (1, 0),
    "Minute": (60, 0),
    "Hour": (3600, 0),
    "Day": (86400, 0),
    "Week": (7 * 86400, 0),  # from Monday 00:00 UTC (counters.window_bounds)
    "Month": (0, 1),
    "Year": (0, 12),
}


def selector_conditions(selectors: list[kinds.RateLimitSelectCondition]) -> list[config_pb2.Condition]:
    """Every condition of every selector (all must hold). Methods are ORed as in Envoy Gateway: the
    plain ones in one condition (any of them), the inverted ones in another (none of them)."""
    out: list[config_pb2.Condition] = []
    for selector in selectors:
        for header in selector.headers:
            out.append(
                config_pb2.Condition(
                    header=config_pb2.HeaderCondition(
                        name=header.name.lower(),
                        match=_HEADER_MATCH[header.type],
                        value=header.value or "",
                        invert=header.invert,
                    )
                )
            )
        if selector.sourceCIDR is not None:
            cidr = selector.sourceCIDR
            source = config_pb2.SourceCondition(cidr=cidr.value, distinct=cidr.type == "Distinct", invert=cidr.invert)
            out.append(config_pb2.Condition(source=source))
        for invert in (False, True):
            methods = [m.value for m in selector.methods if m.invert == invert]
            if methods:
                out.append(config_pb2.Condition(method=config_pb2.MethodCondition(methods=methods, invert=invert)))
        for param in selector.queryParams:
            query = config_pb2.HeaderCondition(
                name=param.name, match=_HEADER_MATCH[param.type], value=param.value or "", invert=param.invert
            )
            out.append(config_pb2.Condition(query=query))
        if selector.path is not None:
            path = config_pb2.PathCondition(
                match=_PATH_MATCH[selector.path.type], value=selector.path.value, invert=selector.path.invert
            )
            out.append(config_pb2.Condition(path=path))
    return out


def unit_window(unit: str) -> config_pb2.Window:
    """The window of an Envoy Gateway RateLimitUnit (Month: one calendar month; Year: twelve)."""
    seconds, months = _UNITS[unit]
    return config_pb2.Window(seconds=seconds, months=months)


def duration_window(duration: str) -> config_pb2.Window:
    """The window of a QuotaPolicy duration (kinds.parse_quota_duration)."""
    seconds, months = parse_quota_duration(duration)
    return config_pb2.Window(seconds=seconds, months=months)


def add_budgets(translator: config_pb2.TranslatorConfig, budgets: list[config_pb2.RateLimit]) -> None:
    """Adds budgets not already in the configuration (a rule's policy is compiled once per route
    rule; a budget shared by several rules is listed once), keeping them sorted by id_order."""
    known = {b.id: b for b in translator.rate_limits}
    for budget in budgets:
        known.setdefault(budget.id, budget)
    del translator.rate_limits[:]
    translator.rate_limits.extend(known[k] for k in sorted(known, key=id_order))


def id_order(budget_id: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key of budget ids: by their parts, numbers as numbers, so ".../bucket/2" comes before
    ".../bucket/10" (a bucket group's order is the policy's) and ".../default" after every bucket."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", budget_id) if p)
