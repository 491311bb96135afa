"""Rules' local rate limits (ir.LocalRateLimit) in Envoy's local_ratelimit filter, with Envoy
Gateway's meaning: a bucket per rule of the policy and per match of the AIGatewayRoute rule (Envoy
Gateway's route), which every route the match makes here shares (Envoy alone, the translator's one
stream, per attempt, on the header: a request takes the route of its class, and a per-route
configuration would give each class buckets of its own).

So the buckets are the listener's: its filter holds a descriptor per bucket, keyed by the match
(`aigw_limit`: "<rule cluster>/match/<i>#<bucket>"), and each route of the match lists, in its
RouteAction.rate_limits, the actions that make a request's descriptors: the key (generic_key), then
an entry per condition. A condition on a header value, the method or the path is a
header_value_match entry, present when the request matches (or, inverted, does not); a Distinct
header is the header's value itself (no value in the descriptor: each value has a bucket, the last
MAX_DYNAMIC_DESCRIPTORS kept); a sourceCIDR is the client's address masked to the CIDR's length
(equal to the CIDR when the address is in it), with the address itself for a Distinct one. A request
missing what an entry needs makes no descriptor for that rule: the rule does not apply to it.

The default bucket (the rule without selectors) is taken by the requests no rule with selectors
picks: its descriptor needs, besides the key, an entry per such rule present when that rule's
conditions do not all hold (header_value_match, expect_match false, over the rule's conditions as
header matchers). A sourceCIDR is no header: a request a rule with one picks takes the default's
token too (said when compiled). Limited requests get a 429 with x-ratelimit headers (draft 03),
which the listener's local replies put in the client's API shape (build._local_replies)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import TypeAlias

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2, token_bucket_pb2
from google.protobuf import wrappers_pb2

from ..compile import ir
from .messages import duration, packed

LOCAL_RATE_LIMIT_FILTER_NAME = "envoy.filters.http.local_ratelimit"
STAT_PREFIX = "aigw_local_rate_limit"
KEY = "aigw_limit"
# The buckets kept per Distinct rule (its values or addresses seen last), as Envoy Gateway keeps.
MAX_DYNAMIC_DESCRIPTORS = 10_000
# What Envoy's replies to a limited request say in their details.
LIMITED_DETAILS = "local_rate_limited"
_UNLIMITED = (2**32 - 1, 1)  # the filter's own bucket: requests no descriptor matches are not limited

Action: TypeAlias = route_components_pb2.RateLimit.Action
Entry: TypeAlias = ratelimit_pb2.RateLimitDescriptor.Entry
Descriptor: TypeAlias = ratelimit_pb2.LocalRateLimitDescriptor


def local_rate_limit_filter(matches: Iterable[tuple[str, ir.LocalRateLimit]]) -> hcm_pb2.HttpFilter:
    """The listener's filter: the buckets of every match (`matches`: its key and its rule's limit)."""
    always = _all_of_them()
    config = local_rate_limit_pb2.LocalRateLimit(
        stat_prefix=STAT_PREFIX,
        token_bucket=_bucket(*_UNLIMITED),
        filter_enabled=always,
        filter_enforced=always,
        enable_x_ratelimit_headers=ratelimit_pb2.DRAFT_VERSION_03,
        # A request's matched buckets only (the filter's own, unlimited one is for the others).
        always_consume_default_token_bucket=wrappers_pb2.BoolValue(value=False),
        max_dynamic_descriptors=wrappers_pb2.UInt32Value(value=MAX_DYNAMIC_DESCRIPTORS),
    )
    for key, limit in matches:
        config.descriptors.extend(descriptor for _, descriptor in _buckets(key, limit))
    return hcm_pb2.HttpFilter(name=LOCAL_RATE_LIMIT_FILTER_NAME, typed_config=packed(config))


def route_rate_limits(key: str, limit: ir.LocalRateLimit) -> list[route_components_pb2.RateLimit]:
    """What each route of the match `key` lists in its RouteAction.rate_limits."""
    return [rate_limit for rate_limit, _ in _buckets(key, limit)]


@lru_cache(maxsize=1 << 12)
def _buckets(key: str, limit: ir.LocalRateLimit) -> tuple[tuple[route_components_pb2.RateLimit, Descriptor], ...]:
    """Per bucket of the match: the route's actions and the listener's descriptor (entries in the
    same order). Shared: callers copy them."""
    out = []
    for index, rule in enumerate(limit.rules):
        actions, entries = _keyed(f"{key}#{index}")
        for action, entry in _conditions(f"{index}", rule):
            actions.append(action)
            entries.append(entry)
        out.append((actions, entries, _bucket(rule.requests, rule.fill_s)))
    if limit.default is not None:
        actions, entries = _keyed(f"{key}#default")
        for index, rule in enumerate(limit.rules):
            matchers = _header_matchers(rule)
            if matchers is None:
                continue  # a sourceCIDR: not a header (its requests take the default's token too)
            action, entry = _header_value_match(f"not-{index}", matchers, expect=False)
            actions.append(action)
            entries.append(entry)
        out.append((actions, entries, _bucket(*limit.default)))
    return tuple(
        (route_components_pb2.RateLimit(actions=actions), Descriptor(entries=entries, token_bucket=bucket))
        for actions, entries, bucket in out
    )


def _keyed(value: str) -> tuple[list[Action], list[Entry]]:
    return [Action(generic_key=Action.GenericKey(descriptor_key=KEY, descriptor_value=value))], [
        Entry(key=KEY, value=value)
    ]


def _conditions(prefix: str, rule: ir.LimitRule) -> list[tuple[Action, Entry]]:
    """The rule's actions and its descriptor's entries, condition by condition (keys unique in it)."""
    out: list[tuple[Action, Entry]] = []

    def matching(matcher: route_components_pb2.HeaderMatcher, invert: bool) -> None:
        out.append(_header_value_match(f"{prefix}-{len(out)}", [matcher], expect=not invert))

    for header in rule.headers:
        if header.match == "Distinct":
            at = f"{prefix}-{len(out)}"
            distinct = Action.RequestHeaders(header_name=header.name, descriptor_key=at)
            out.append((Action(request_headers=distinct), Entry(key=at)))  # no value: each value apart
        else:
            matching(_header_matcher(header), header.invert)
    for methods, invert in rule.methods:
        matching(_method_matcher(methods), invert)
    for path in rule.paths:
        matching(_path_matcher(path), path.invert)
    for cidr, distinct in rule.sources:
        network, length = cidr.split("/")
        masked = Action.MaskedRemoteAddress()
        mask = wrappers_pb2.UInt32Value(value=int(length))
        (masked.v6_prefix_mask_len if ":" in network else masked.v4_prefix_mask_len).CopyFrom(mask)
        out.append((Action(masked_remote_address=masked), Entry(key="masked_remote_address", value=cidr)))
        if distinct:
            out.append((Action(remote_address=Action.RemoteAddress()), Entry(key="remote_address")))
    return out


def _header_value_match(
    at: str, matchers: list[route_components_pb2.HeaderMatcher], expect: bool
) -> tuple[Action, Entry]:
    """An entry `at`, present when the matchers all match (`expect`), or when they do not."""
    match = Action.HeaderValueMatch(
        descriptor_key=at, descriptor_value=at, expect_match=wrappers_pb2.BoolValue(value=expect), headers=matchers
    )
    return Action(header_value_match=match), Entry(key=at, value=at)


def _header_matchers(rule: ir.LimitRule) -> list[route_components_pb2.HeaderMatcher] | None:
    """The rule's conditions as header matchers, all of which match when the rule picks a request
    (None: it has a sourceCIDR, which is no header). An inverted one matches a missing header."""
    if rule.sources:
        return None
    out = []
    for header in rule.headers:
        if header.match == "Distinct":
            out.append(route_components_pb2.HeaderMatcher(name=header.name, present_match=True))
        else:
            out.append(_inverted(_header_matcher(header), header.invert))
    out += [_inverted(_method_matcher(methods), invert) for methods, invert in rule.methods]
    out += [_inverted(_path_matcher(path), path.invert) for path in rule.paths]
    return out


def _inverted(matcher: route_components_pb2.HeaderMatcher, invert: bool) -> route_components_pb2.HeaderMatcher:
    if invert:
        matcher.invert_match = True
        matcher.treat_missing_header_as_empty = True
    return matcher


def _header_matcher(header: ir.LimitHeader) -> route_components_pb2.HeaderMatcher:
    matcher = string_pb2.StringMatcher(exact=header.value) if header.match == "Exact" else _regex(header.value)
    return route_components_pb2.HeaderMatcher(name=header.name, string_match=matcher)


def _method_matcher(methods: tuple[str, ...]) -> route_components_pb2.HeaderMatcher:
    return route_components_pb2.HeaderMatcher(name=":method", string_match=_regex(f"^({'|'.join(methods)})$"))


def _path_matcher(path: ir.LimitPath) -> route_components_pb2.HeaderMatcher:
    """The :path (its query included, which Exact and PathPrefix allow after the path)."""
    if path.match == "RegularExpression":
        matcher = _regex(path.value)
    elif path.match == "PathPrefix" and path.value == "/":
        matcher = string_pb2.StringMatcher(prefix="/")
    elif path.match == "PathPrefix":  # whole segments, as a route's PathPrefix matches
        matcher = _regex(f"^{_escaped(path.value.rstrip('/'))}([/?].*)?$")
    else:
        matcher = _regex(f"^{_escaped(path.value)}(\\?.*)?$")
    return route_components_pb2.HeaderMatcher(name=":path", string_match=matcher)


def _regex(pattern: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=pattern))


def _escaped(text: str) -> str:
    """`text` as an RE2 literal."""
    return "".join(f"\\{c}" if c in "\\.^$|?*+()[]{}" else c for c in text)


def _bucket(requests: int, fill_s: int) -> token_bucket_pb2.TokenBucket:
    return token_bucket_pb2.TokenBucket(
        max_tokens=requests, tokens_per_fill=wrappers_pb2.UInt32Value(value=requests), fill_interval=duration(fill_s)
    )


def _all_of_them() -> base_pb2.RuntimeFractionalPercent:
    hundred = percent_pb2.FractionalPercent(numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED)
    return base_pb2.RuntimeFractionalPercent(default_value=hundred)
