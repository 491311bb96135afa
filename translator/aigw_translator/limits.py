"""Budgets (token rate limits and quotas), pure: which apply to a request, under which counter, whether
the request is admitted, what it is charged, and the headers and error the client gets.

A budget (config_pb2.RateLimit) applies to a request when all its conditions hold. Its counter is
the budget's id, the values of its Distinct conditions (hashed: a header value can be anything) and
the start of the fixed window holding now. A request is admitted when every applying budget's
counter is below its limit and stays within it after the request's own admission cost
(request_cost, 0 for token budgets: their cost is only known once the response is done). Budgets
of one `bucket_group` (a QuotaPolicy's buckets for one model) are exclusive: only the first whose
conditions hold applies. A budget with `unless` applies only when none of the budgets it names
does (a local rate limit's rule without clientSelectors: the route's default).

A `local` budget (rateLimit.local) is counted where the request passes, never in the counters
replicas share: its keys start with LOCAL_KEY_PREFIX, which counters.py keeps in memory.

Overshoot: a token budget admits every request while its counter is below the limit, and charges it
when its response ends. So the counter can pass the limit by what the requests admitted before it
got there use in total: at most (requests in flight at that moment) x (tokens one request can
use). docs/rate-limits.md works the bound through.

The async end (reading and charging the counters) is budgets.py; the counters themselves are
counters.py.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import unquote

import re2

from aigw.translator.v1 import config_pb2

from .counters import LOCAL_KEY_PREFIX, window_bounds
from .endpoints import ClientSchema
from .errors import gateway_error_body

RateLimit = config_pb2.RateLimit
Header = config_pb2.HeaderCondition
Path = config_pb2.PathCondition

KEY_PREFIX = "aigw:rl"
# Beyond this retry-after a refusal tells the official SDKs not to retry (x-should-retry: false): the
# Anthropic SDK would sleep as long as it says (days, for a weekly quota), the OpenAI SDK up to 2 minutes.
SDK_RETRY_WAIT_S = 60


@dataclass(frozen=True)
class Request:
    """What conditions look at: lower-case headers (with :method and :path) and the client's address."""

    headers: Mapping[str, str]
    source: str = ""  # the client's IP address ("" when Envoy did not say)


@dataclass(frozen=True)
class Counted:
    """One budget as it applies to one request: its counter and when that counter's window ends."""

    budget: RateLimit
    key: str
    reset_at: int  # Unix seconds: the end of the window
    stem: str  # the key without its window (counter_stem): the same counter in another window


@dataclass(frozen=True)
class Verdict:
    admitted: bool
    # The budget that refused the request (None when admitted, or refused because the store is down).
    exceeded: Counted | None = None
    # x-ratelimit-* for every answer; retry-after too on a refusal.
    headers: dict[str, str] = field(default_factory=dict)
    # Shadow budgets that would have refused the request.
    shadow_exceeded: tuple[Counted, ...] = ()
    # The counters could not be read: admitted (fail open) or refused (fail closed) without them.
    store_down: bool = False


def source_ip(address: str) -> str:
    """Envoy's source.address ("10.0.0.7:51234", "[::1]:51234") without the port."""
    if address.startswith("["):
        return address[1 : address.find("]")] if "]" in address else address
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host
    return address


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re2._Regexp:
    return re2.compile(pattern)


@lru_cache(maxsize=1024)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr, strict=False)


def _in_network(ip: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in _network(cidr)
    except ValueError:
        return False


def _header_holds(cond: config_pb2.HeaderCondition, headers: Mapping[str, str]) -> tuple[bool, str | None]:
    value = headers.get(cond.name)
    if cond.match == Header.DISTINCT:
        # A Distinct header that is absent selects nobody (Envoy Gateway sends no descriptor then).
        return (value is not None, value) if not cond.invert else (value is None, None)
    if value is None:
        holds = False
    elif cond.match == Header.REGULAR_EXPRESSION:
        try:
            holds = _regex(cond.value).fullmatch(value) is not None
        except UnicodeEncodeError:  # a query value that is not UTF-8 (_query_params): no pattern's
            holds = False
    else:
        holds = value == cond.value
    return holds != cond.invert, None


def _path_holds(cond: config_pb2.PathCondition, path: str) -> bool:
    # The path as the gateway serves it: without its query, and without trailing slashes (the
    # translator answers /v1/chat/completions/ as /v1/chat/completions: an Exact condition on the
    # latter must hold for both, or a slash would step around it).
    path = path.split("?", 1)[0].rstrip("/") or "/"
    if cond.match == Path.PATH_PREFIX:
        prefix = cond.value.rstrip("/")
        holds = path == prefix or path.startswith(prefix + "/") or not prefix
    elif cond.match == Path.REGULAR_EXPRESSION:
        holds = _regex(cond.value).fullmatch(path) is not None
    else:
        holds = path == (cond.value.rstrip("/") or "/")
    return holds != cond.invert


@lru_cache(maxsize=1024)
def _query_params(path: str) -> dict[str, str]:
    """The query parameters of a path, each name's first value, as Envoy's query parameter matchers
    take them: %XX decoded, a `+` left as it is (not a space), bytes that are not UTF-8 kept apart
    (surrogate escapes: each such value counts alone)."""
    params: dict[str, str] = {}
    for part in path.partition("?")[2].partition("#")[0].split("&"):
        name, _, value = part.partition("=")
        if name:
            params.setdefault(unquote(name, errors="surrogateescape"), unquote(value, errors="surrogateescape"))
    return params


def _distinct_values(budget: RateLimit, request: Request) -> list[str] | None:
    """The values that pick the budget's counter (one per Distinct condition), or None when a
    condition does not hold."""
    values: list[str] = []
    for condition in budget.conditions:
        kind = condition.WhichOneof("condition")
        if kind in ("header", "query"):  # a query parameter is matched as a header is
            if kind == "header":
                cond, seen = condition.header, request.headers
            else:
                cond, seen = condition.query, _query_params(request.headers.get(":path", ""))
            holds, distinct = _header_holds(cond, seen)
            if not holds:
                return None
            if distinct is not None:
                values.append(distinct)
        elif kind == "source":
            if _in_network(request.source, condition.source.cidr) == condition.source.invert:
                return None
            if condition.source.distinct:
                values.append(request.source)
        elif kind == "method":
            method = request.headers.get(":method", "")
            if (method in condition.method.methods) == condition.method.invert:
                return None
        elif kind == "path" and not _path_holds(condition.path, request.headers.get(":path", "/")):
            return None
    return values


def counter_stem(budget: RateLimit, values: Sequence[str]) -> str:
    """The counters of one budget and one set of distinct values, all windows (counter_key)."""
    prefix = LOCAL_KEY_PREFIX if budget.local else KEY_PREFIX
    if not values:
        return f"{prefix}:{budget.id}"
    digest = hashlib.blake2b("\x00".join(values).encode("utf-8", "surrogateescape"), digest_size=12).hexdigest()
    return f"{prefix}:{budget.id}:{digest}"


def counter_key(budget: RateLimit, values: Sequence[str], window_start: int) -> str:
    """The counter of one budget, one set of distinct values and one window."""
    return f"{counter_stem(budget, values)}:{window_start}"


def applicable(budgets: Iterable[RateLimit], request: Request, model: str, now: float) -> list[Counted]:
    """The budgets that apply to a request (in the given order), each with its counter. `model`: the
    model sent to the backend, for budgets that name one (quotas); "" where it is not known yet."""
    found: list[tuple[RateLimit, list[str]]] = []
    groups_taken: set[str] = set()
    for budget in budgets:
        if budget.model and budget.model != model:
            continue
        if budget.bucket_group and budget.bucket_group in groups_taken:
            continue
        values = _distinct_values(budget, request)
        if values is None:
            continue
        if budget.bucket_group:
            groups_taken.add(budget.bucket_group)
        found.append((budget, values))
    taken = {budget.id for budget, _ in found if not budget.unless}
    return [
        _in_window(budget, counter_stem(budget, values), now)
        for budget, values in found
        if not taken.intersection(budget.unless)
    ]


def _in_window(budget: RateLimit, stem: str, now: float) -> Counted:
    """A budget's counter (stem: its budget and distinct values) in the window holding `now`."""
    start, end = window_bounds(budget.window, now)
    return Counted(budget, f"{stem}:{start}", end, stem)


def in_window(counted: Iterable[Counted], now: float) -> list[Counted]:
    """The same counters in the window holding `now`. A response is charged to the window it ends
    in (as Envoy's apply_on_stream_done charges it), not to the one it was admitted in: that window
    may be over by then, and a charge to it would be lost (a stream longer than what was left of a
    Minute window would never be counted)."""
    return [_in_window(c.budget, c.stem, now) for c in counted]


def over(counted: Counted, used: int) -> bool:
    """Whether the budget refuses a request with its counter at `used` (before the request's own cost)."""
    cost = counted.budget.request_cost
    return used + cost > counted.budget.limit if cost else used >= counted.budget.limit


def _window_seconds(window: config_pb2.Window, now: float) -> int:
    """The window's length (draft-03's w): a calendar window's whole length, as Envoy gives a
    Month's (30 days), not what is left of it (that is x-ratelimit-reset)."""
    if window.seconds:
        return int(window.seconds)
    start, end = window_bounds(window, now)
    return end - start


def rate_limit_headers(counted: Counted, used: int, now: float) -> dict[str, str]:
    """Envoy's draft-03 x-ratelimit-* headers for the budget closest to its limit."""
    budget = counted.budget
    remaining = max(0, budget.limit - used - budget.request_cost)
    window = _window_seconds(budget.window, now)
    return {
        "x-ratelimit-limit": f"{budget.limit}, {budget.limit};w={window}",
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-reset": str(max(0, counted.reset_at - int(now))),
    }


def decide(counted: Sequence[Counted], used: Sequence[int] | None, fail_closed: bool, now: float) -> Verdict:
    """Admit or refuse a request given its budgets' counters (None: the store could not be read)."""
    if not counted:
        return Verdict(admitted=True)
    if used is None:
        # Shadow budgets never refuse, not even while the store is down and failing closed.
        if fail_closed and any(not c.budget.shadow for c in counted):
            return Verdict(admitted=False, headers={"retry-after": "1"}, store_down=True)
        return Verdict(admitted=True, store_down=True)
    enforced = [(c, u) for c, u in zip(counted, used, strict=True) if not c.budget.shadow]
    shadow = tuple(c for c, u in zip(counted, used, strict=True) if c.budget.shadow and over(c, u))
    exceeded = next(((c, u) for c, u in enforced if over(c, u)), None)
    if exceeded is not None:
        headers = rate_limit_headers(exceeded[0], exceeded[1], now)
        headers["retry-after"] = headers["x-ratelimit-reset"]
        if int(headers["retry-after"]) > SDK_RETRY_WAIT_S:
            # The Stainless SDKs' (OpenAI's, Anthropic's) own header: do not sleep on it and retry.
            headers["x-should-retry"] = "false"
        if exceeded[0].budget.headers_off:  # its retry-after stays: when to try again
            headers = {k: v for k, v in headers.items() if not k.startswith("x-ratelimit-")}
        return Verdict(admitted=False, exceeded=exceeded[0], headers=headers, shadow_exceeded=shadow)
    headers = {}
    shown = [(c, u) for c, u in enforced if not c.budget.headers_off]
    if shown:
        tightest = min(shown, key=lambda cu: cu[0].budget.limit - cu[1] - cu[0].budget.request_cost)
        headers = rate_limit_headers(tightest[0], tightest[1], now)
    return Verdict(admitted=True, headers=headers, shadow_exceeded=shadow)


def taken_back(charges: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """The charges that undo `charges` (a refused request's local ones)."""
    return {key: (-amount, expires_at) for key, (amount, expires_at) in charges.items()}


def admission_charges(counted: Iterable[Counted]) -> dict[str, tuple[int, int]]:
    """Counter key -> (amount, expires_at) of the request costs charged when a request is admitted."""
    return {c.key: (c.budget.request_cost, c.reset_at) for c in counted if c.budget.request_cost}


def response_cost_name(budget: RateLimit) -> str:
    """The cost a budget charges when the response ends: a configured request cost's metadata key, or
    (for a CEL cost expression) a name of the budget's own."""
    return budget.response_cost_key or (f"budget:{budget.id}" if budget.response_cost_cel else "")


def expression_costs(counted: Iterable[Counted]) -> list[config_pb2.LLMRequestCost]:
    """The CEL costs the budgets charge, as request costs under response_cost_name."""
    return [
        config_pb2.LLMRequestCost(
            metadata_key=response_cost_name(c.budget),
            type=config_pb2.LLMRequestCost.CEL,
            cel=c.budget.response_cost_cel,
        )
        for c in counted
        if c.budget.response_cost_cel
    ]


def response_charges(counted: Iterable[Counted], costs: Mapping[str, int | float]) -> dict[str, tuple[int, int]]:
    """Counter key -> (amount, expires_at) charged when the response ends, from the costs computed on
    its usage (by metadata key; see response_cost_name). Negative or fractional figures are floored
    at zero / truncated."""
    out: dict[str, tuple[int, int]] = {}
    for c in counted:
        value = costs.get(response_cost_name(c.budget))
        if value is None:
            continue
        amount = max(0, int(value))
        if amount:
            out[c.key] = (amount, c.reset_at)
    return out


_UNITS = ((7 * 86400, "week"), (86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


def window_text(window: config_pb2.Window) -> str:
    """A window as a reader says it: "hour", "2 weeks", "month", "90 seconds"."""
    if window.months:
        return "month" if window.months == 1 else f"{window.months} months"
    for seconds, unit in _UNITS:
        if window.seconds % seconds == 0:
            count = window.seconds // seconds
            return unit if count == 1 else f"{count} {unit}s"
    return f"{window.seconds} seconds"


def refusal_body(schema: ClientSchema, verdict: Verdict) -> tuple[int, bytes]:
    """Status and body in the client's schema for a refused request."""
    if verdict.exceeded is None:
        return 503, gateway_error_body(schema, 503, "the rate limit store is unavailable; try again shortly")
    budget = verdict.exceeded.budget
    reset = int(verdict.headers.get("retry-after", "0"))
    after = f"{reset}s" + (f" ({_readable(reset)})" if reset >= 120 else "")
    message = f"rate limit exceeded: {budget.limit} per {window_text(budget.window)} used up; it resets in {after}"
    return 429, gateway_error_body(schema, 429, message, code="rate_limit_exceeded")


def _readable(seconds: int) -> str:
    """A duration in its two largest units: 549492 -> "6d 8h", 1800 -> "30m"."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")]
    first = next(i for i, (n, _) in enumerate(parts) if n)
    return " ".join(f"{n}{unit}" for n, unit in parts[first : first + 2] if n)
