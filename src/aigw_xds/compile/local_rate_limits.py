"""A BackendTrafficPolicy's rateLimit.local -> ir.LocalRateLimit (pure), as Envoy Gateway renders it
for Envoy's local_ratelimit filter: token buckets in each Envoy, per match of each rule the policy
applies to (Envoy Gateway's route; xds/local_rate_limits.py).

The rule without clientSelectors, if any (at most one), is the default bucket: requests no other
rule picks take it; without one they are not limited. A rule with selectors has a bucket of its
own, taken by the requests all its conditions pick (a request two rules pick must find a token in
both; one a rule with a sourceCIDR picks takes the default's token too, said by a warning). Each
bucket holds `requests` tokens and is refilled whole every `unit` (Month: 30 days, Year: 365, as
Envoy Gateway has them); Envoy needs every rule's unit to be a multiple of the default's. A
Distinct header or sourceCIDR gives each value, or each address, a bucket of its own.

What a local bucket cannot do is said and left out: a cost (each request takes one token), `shared`
(each match has its buckets), and shadowMode (a rule in shadow mode is not built: it would limit).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ..api import kinds
from ..diagnostics import Diagnostic, error, warning
from ..resources import Loaded
from . import ir

# Envoy Gateway's seconds of each RateLimitUnit for a token bucket's fill interval.
UNIT_SECONDS = {"Second": 1, "Minute": 60, "Hour": 3600, "Day": 86400, "Month": 30 * 86400, "Year": 365 * 86400}


def local_rate_limit(local: kinds.LocalRateLimit) -> ir.LocalRateLimit:
    """The policy's local rate limit (checked by local_rate_limit_problems)."""
    default = None
    rules = []
    for rule in local.rules:
        bucket = (rule.limit.requests, UNIT_SECONDS[rule.limit.unit])
        if not rule.clientSelectors:
            default = default or bucket
        elif not rule.shadowMode:
            rules.append(_rule(rule, *bucket))
    return ir.LocalRateLimit(default, tuple(rules))


def _rule(rule: kinds.RateLimitRule, requests: int, fill_s: int) -> ir.LimitRule:
    headers, methods, paths, sources = [], [], [], []
    for selector in rule.clientSelectors:
        headers += [ir.LimitHeader(h.name.lower(), h.type, h.value or "", h.invert) for h in selector.headers]
        for invert in (False, True):
            named = tuple(m.value for m in selector.methods if m.invert == invert)
            if named:
                methods.append((named, invert))
        if selector.path is not None:
            paths.append(ir.LimitPath(selector.path.type, selector.path.value, selector.path.invert))
        if selector.sourceCIDR is not None:
            network = str(ipaddress.ip_network(selector.sourceCIDR.value, strict=False))
            sources.append((network, selector.sourceCIDR.type == "Distinct"))
    return ir.LimitRule(requests, fill_s, tuple(headers), tuple(methods), tuple(paths), tuple(sources))


def local_rate_limit_problems(loaded: Loaded[Any]) -> list[Diagnostic]:
    """Errors that keep a policy's rateLimit.local from being built (the policy then fails the
    Gateways it applies to, as Envoy Gateway refuses it), and warnings for what is left out."""
    policy: kinds.BackendTrafficPolicy = loaded.resource
    local = policy.spec.rateLimit.local if policy.spec.rateLimit else None
    if local is None:
        return []
    out: list[Diagnostic] = []
    defaults = [i for i, rule in enumerate(local.rules) if not rule.clientSelectors]
    for index in defaults[1:]:
        message = (
            f"a second rule without clientSelectors (rules[{defaults[0]}] is the default limit): give it "
            "clientSelectors, or keep one"
        )
        out.append(error(message, loaded.origin, loaded.key, f"spec.rateLimit.local.rules[{index}].clientSelectors"))
    if defaults:
        default_unit = local.rules[defaults[0]].limit.unit
        for index, rule in enumerate(local.rules):
            if UNIT_SECONDS[rule.limit.unit] % UNIT_SECONDS[default_unit]:
                message = (
                    f"unit {rule.limit.unit} is not a multiple of the default limit's ({default_unit}), which "
                    "Envoy's local rate limit needs"
                )
                out.append(error(message, loaded.origin, loaded.key, f"spec.rateLimit.local.rules[{index}].limit.unit"))
    for index, rule in enumerate(local.rules):
        at = f"spec.rateLimit.local.rules[{index}]"
        if defaults and rule.clientSelectors and any(s.sourceCIDR for s in rule.clientSelectors):
            message = (
                "the requests this rule picks take a token of the default limit too (a sourceCIDR cannot be told "
                "apart there, as a header can)"
            )
            out.append(warning(message, loaded.origin, loaded.key, f"{at}.clientSelectors"))
        if rule.cost is not None:
            out.append(_left_out(loaded, f"{at}.cost", "a local rate limit counts requests: each takes one token"))
        if rule.shared:
            out.append(_left_out(loaded, f"{at}.shared", "a local rate limit's buckets are each route match's own"))
        if rule.shadowMode and rule.clientSelectors:
            message = "shadowMode is not supported for local rate limits: this rule is left out (it limits nothing)"
            out.append(warning(message, loaded.origin, loaded.key, f"{at}.shadowMode"))
        elif rule.shadowMode:
            message = "shadowMode is not supported for local rate limits: the default limit applies"
            out.append(warning(message, loaded.origin, loaded.key, f"{at}.shadowMode"))
    return out


def _left_out(loaded: Loaded[Any], path: str, why: str) -> Diagnostic:
    return warning(f"{path.rsplit('.', 1)[1]} is not used: {why}", loaded.origin, loaded.key, path)
