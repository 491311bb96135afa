"""The counters of budgets (token rate limits and quotas): fixed windows, and the stores that count in
them, in this process's memory (MemoryCounters) or in Redis shared by several translator processes
and replicas (RedisCounters).

A store reads counters (missing ones are 0) and adds charges, each with the Unix time its counter
expires (the end of its window). Adding never raises and never makes a request wait: the budgets
module runs it in the background.

Redis unreachable: reads answer None (budgets.py then fails open or closed, as configured), and
charges wait in a bounded pending map (summed per counter) that is flushed when Redis answers again.
While Redis is down it is asked once a second (the probe: by a background task, requests or not, and
by a call that finds the probe due); every other call answers at once. So the outage ends when Redis
is back, not when a request that needs it next comes (which would meet the fail mode once more). One
warning line per outage (`rate_limit_store_unreachable`), one info line when it ends
(`rate_limit_store_recovered`, with its length), and status() for a metric. A charge whose pipeline failed midway may
be counted twice once it is flushed: an outage can only make a counter high, never low (except for
charges dropped when the pending map is full, counted in status().dropped).

The Redis URL may carry a password: only redacted_url(url) ever reaches a log line, an error or a
repr.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import URL_QUERY_ARGUMENT_PARSERS
from redis.exceptions import ResponseError

from aigw.translator.v1 import config_pb2

from .logs import get_logger

log = get_logger(__name__)

WEEK = 7 * 24 * 3600
# Monday 1969-12-29 00:00 UTC: windows of whole weeks start on Mondays.
_MONDAY = -3 * 24 * 3600
_DAY = 24 * 3600

# ---------------------------------------------------------------------------------------------
# Windows


def window_bounds(window: config_pb2.Window, now: float) -> tuple[int, int]:
    """The fixed window holding `now`, as (start, end) Unix seconds (start included, end not).

    `seconds` windows are aligned on the Unix epoch, except windows of whole weeks, which start on
    a Monday 00:00 UTC. `months` windows are calendar months UTC, numbered from January of year 0
    (index year*12 + month-1) and aligned on multiples of `months`: months=1 is this month, 3 the
    quarter, 12 the calendar year.
    """
    if window.seconds and window.months:
        raise ValueError("a window is either seconds or months long, not both")
    if window.seconds:
        size = int(window.seconds)
        origin = _MONDAY if size % WEEK == 0 else 0
        start = (int(now // 1) - origin) // size * size + origin
        return start, start + size
    if window.months:
        days, _ = divmod(int(now // 1), _DAY)
        year, month = _civil_from_days(days)
        index = (year * 12 + month - 1) // window.months * window.months
        return _month_start(index), _month_start(index + window.months)
    raise ValueError("a window needs seconds or months")


def _month_start(index: int) -> int:
    """Unix seconds of 00:00 UTC on the first day of month `index` (year*12 + month-1)."""
    year, month0 = divmod(index, 12)
    return _days_from_civil(year, month0 + 1, 1) * _DAY


# Proleptic Gregorian calendar <-> days since 1970-01-01, for any year (Howard Hinnant's algorithms,
# http://howardhinnant.github.io/date_algorithms.html); datetime stops at year 1.
def _days_from_civil(year: int, month: int, day: int) -> int:
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def _civil_from_days(days: int) -> tuple[int, int]:
    """(year, month) of a day counted from 1970-01-01."""
    days += 719468
    era = days // 146097
    day_of_era = days - era * 146097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    mp = (5 * day_of_year + 2) // 153
    month = mp + 3 if mp < 10 else mp - 9
    return year_of_era + era * 400 + (month <= 2), month


# ---------------------------------------------------------------------------------------------
# Stores

Charges = Mapping[str, tuple[int, int]]  # counter key -> (amount, expires_at Unix seconds)
# The keys of the counters of `local` budgets (limits.py): always this process's, in memory
# (budgets.Budgets keeps them apart from the store replicas share).
LOCAL_KEY_PREFIX = "aigw:rl-local"


@dataclass(frozen=True)
class StoreStatus:
    """What a store is going through, for a metric or a status line."""

    available: bool
    outages: int = 0  # outages since the process started
    down_since: float | None = None  # Unix seconds, while unavailable
    pending: int = 0  # counters with charges waiting for the store
    # Charges lost since the process started: the pending map or the memory was full, or Redis refused a
    # counter (its key held something else than a count).
    dropped: int = 0


class Counters(Protocol):
    async def read(self, keys: Sequence[str]) -> list[int] | None:
        """The counters' values, in order (a missing or expired counter is 0); None when the store
        cannot be read."""
        ...

    async def add(self, charges: Charges) -> dict[str, int] | None:
        """Adds each amount to its counter, which expires at the given Unix time, and returns the
        counters' new values (a counter whose window is over is left out); None when the charges could
        not be added now (kept for later). Never raises."""
        ...

    def status(self) -> StoreStatus: ...

    async def check(self) -> None:
        """At start: whether the store can be reached, said in the log now rather than at the first
        request that has a budget. Never raises."""
        ...

    async def close(self) -> None: ...


class MemoryCounters:
    """Counters in this process's memory (one translator process). Expired counters are dropped when
    read and by a sweep every SWEEP_EVERY seconds; beyond `max_keys` live counters the least
    recently used are dropped (counted in status().dropped): memory stays bounded whatever the
    distinct values clients send, and a flood of new values does not reset the counters in use."""

    SWEEP_EVERY = 10.0

    def __init__(self, max_keys: int = 200_000, clock: Callable[[], float] = time.time) -> None:
        self._values: dict[str, list[int]] = {}  # key -> [value, expires_at]; insertion order = age
        self._max_keys = max_keys
        self._clock = clock
        self._next_sweep = clock() + self.SWEEP_EVERY
        self._dropped = 0

    async def read(self, keys: Sequence[str]) -> list[int] | None:
        now = self._clock()
        out = []
        for key in keys:
            entry = self._values.pop(key, None)
            if entry is not None and entry[1] > now:
                self._values[key] = entry  # the most recently used go last: eviction takes the others
            else:
                entry = None
            out.append(entry[0] if entry is not None else 0)
        return out

    async def add(self, charges: Charges) -> dict[str, int] | None:
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        totals = {}
        for key, (amount, expires_at) in charges.items():
            if expires_at <= now:
                continue
            entry = self._values.pop(key, None)
            if (entry is None or entry[1] <= now) and amount < 0:  # a charge taken back from a counter gone
                continue
            if entry is None or entry[1] <= now:
                entry = [amount, expires_at]
            else:
                entry[0] += amount
                entry[1] = max(entry[1], expires_at)
            self._values[key] = entry  # last: the most recently used
            totals[key] = entry[0]
        self._bound(now)
        return totals

    def _bound(self, now: float) -> None:
        """Beyond max_keys, the least recently used counters go (a flood of new distinct values evicts
        each other before the counters in use); one warning the first time a live one goes."""
        while len(self._values) > self._max_keys:
            oldest = next(iter(self._values))
            if self._values.pop(oldest)[1] > now:
                if not self._dropped:
                    log.warning("rate_limit_memory_full", max_counters=self._max_keys)
                self._dropped += 1

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self.SWEEP_EVERY
        for key in [k for k, (_, expires_at) in self._values.items() if expires_at <= now]:
            del self._values[key]

    def status(self) -> StoreStatus:
        return StoreStatus(available=True, dropped=self._dropped)

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        self._values.clear()

    def __repr__(self) -> str:
        return f"MemoryCounters({len(self._values)} counters)"


def redacted_url(url: str) -> str:
    """The URL with its password (and its query string, which may hold one) left out: safe to log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # not a URL we can read (its message would quote it): nothing of it is shown
        return f"{parts.scheme}://***"
    if port is not None:
        host = f"{host}:{port}"
    user = parts.username
    if user:
        host = f"{user}:***@{host}" if parts.password is not None else f"{user}@{host}"
    elif parts.password is not None:
        host = f":***@{host}"
    # A password with an unencoded "/" ends the host early: the rest of it would be in the path.
    path = "/***" if "@" in parts.path else parts.path
    return f"{parts.scheme}://{host}{path}"


URL_UNREADABLE = (
    "the URL cannot be read (percent-encode the password's reserved characters, e.g. / as %2F, : as %3A, @ as %40)"
)


# The query options redis-py takes from a URL (any other one fails every connection).
_URL_OPTIONS = frozenset(URL_QUERY_ARGUMENT_PARSERS) | {"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"}


def url_problem(url: str) -> str:
    """Why a Redis URL cannot be used ("" when it can): what redis-py would only report when it first
    connects, for every request. Never quotes the URL (it may hold a password)."""
    parts = urlsplit(url)
    if parts.scheme not in RedisCounters.SCHEMES:
        return "the URL must start with redis://, rediss:// or unix://"
    if "@" in url and "@" not in parts.netloc:  # a reserved character in the password ended the host part
        return URL_UNREADABLE
    try:
        port = parts.port
    except ValueError:
        at = parts.netloc.rpartition("@")[2]
        if ":" in at and not at.rpartition(":")[2].isdigit():
            return "the port after the host is not a number"
        return URL_UNREADABLE
    if port == 0:
        return "the port must be 1 to 65535"
    if parts.scheme != "unix" and parts.path not in ("", "/") and not parts.path[1:].isdigit():
        return "the database after the host must be a number (e.g. redis://host:6379/0)"
    unknown = sorted({name for name, _ in parse_qsl(parts.query, keep_blank_values=True)} - _URL_OPTIONS)
    if unknown:
        known = ", ".join(sorted(_URL_OPTIONS))
        return f"unknown option in the URL's query: {', '.join(unknown)} (redis-py takes {known})"
    return ""


class RedisCounters:
    """Counters in Redis, shared by every translator process and replica pointed at it.

    read is one MGET; add is one pipeline (no transaction) of INCRBY + EXPIREAT per counter. Socket
    timeouts are short (`timeout`, one retry on a broken connection, and `deadline` over the whole
    call), so a request never hangs on Redis. See the module docstring for what happens while Redis
    is unreachable.
    """

    SCHEMES = ("redis", "rediss", "unix")

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.25,
        deadline: float = 1.0,
        probe_every: float = 1.0,
        max_pending: int = 100_000,
    ) -> None:
        self._where = redacted_url(url)
        problem = url_problem(url)
        if problem:
            raise ValueError(f"rate limit store {self._where!r}: {problem}")
        self._secrets = _secrets_of(url)
        try:
            self._client: aioredis.Redis = aioredis.Redis.from_url(
                url,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                retry=Retry(NoBackoff(), 1),
                health_check_interval=0,
            )
        except ValueError:  # its message quotes the URL's pieces, e.g. a password cut at an unencoded "/"
            raise ValueError(f"rate limit store {self._where!r}: {URL_UNREADABLE}") from None
        self._deadline = deadline
        self._probe_every = probe_every
        self._max_pending = max_pending
        # While down (since this monotonic time): charges waiting for Redis, key -> [amount, expires_at],
        # oldest first.
        self._down_since: float | None = None
        self._down_since_unix: float | None = None
        self._pending: dict[str, list[int]] = {}
        self._next_probe = 0.0
        self._probing = False
        self._outages = 0
        self._dropped = 0
        self._dropped_before = 0  # self._dropped when the current outage began
        self._refused: set[str] = set()  # counters reported as refused (one line each)
        self._watch: asyncio.Task[None] | None = None  # probes while down (_probe_until_back)

    async def read(self, keys: Sequence[str]) -> list[int] | None:
        if not keys:
            return []
        if self._down_since is not None and not await self._probe():
            return None
        try:
            async with asyncio.timeout(self._deadline):
                values = await self._client.mget(list(keys))
        except Exception as exc:
            self._went_down(exc)
            return None
        return [_as_int(v) for v in values]

    async def add(self, charges: Charges) -> dict[str, int] | None:
        if not charges:
            return {}
        if self._down_since is not None:
            # Kept first (a caller cancelled meanwhile loses nothing); a probe that finds Redis back
            # flushes it with the rest, and the counters' values after it are its answer.
            self._keep({k: list(v) for k, v in charges.items()})
            if not await self._probe():
                return None
            values = await self.read(list(charges))
            return None if values is None else dict(zip(charges, values, strict=True))
        try:
            return await self._apply(charges)
        except Exception as exc:
            self._went_down(exc)
            self._keep({k: list(v) for k, v in charges.items()})
            return None

    async def _apply(self, charges: Mapping[str, tuple[int, int] | list[int]]) -> dict[str, int]:
        """Adds the charges in one round trip; the counters' new values (refused counters left out)."""
        now = time.time()
        pipe = self._client.pipeline(transaction=False)
        keys = []
        for key, (amount, expires_at) in charges.items():
            if expires_at <= now:
                continue  # its window is over: nobody reads that counter any more
            keys.append(key)
            pipe.incrby(key, amount)
            pipe.expireat(key, expires_at)
        if not len(pipe):
            return {}
        async with asyncio.timeout(self._deadline):
            results = await pipe.execute(raise_on_error=False)
        # A counter Redis refuses to add to (someone else's value under our key) is dropped on its own;
        # any other error is the store's and fails the whole charge.
        for result in results:
            if isinstance(result, Exception) and not _refused_counter(result):
                raise result
        totals = {}
        for key, result in zip(keys, results[::2], strict=True):
            if isinstance(result, Exception):
                self._dropped += 1
                if key not in self._refused and len(self._refused) < 1000:
                    self._refused.add(key)
                    log.warning("rate_limit_counter_refused", key=key, error=type(result).__name__, reason=str(result))
            else:
                totals[key] = _as_int(result)
        return totals

    async def _probe(self) -> bool:
        """While down: is Redis back? At most one caller a probe_every asks it (by flushing the pending
        charges, or a PING), every other caller is answered False at once."""
        now = time.monotonic()
        if self._probing or now < self._next_probe:
            return False
        self._probing = True
        self._next_probe = now + self._probe_every
        flushing, self._pending = self._pending, {}
        back = False
        try:
            if flushing:
                await self._apply(flushing)
            else:
                async with asyncio.timeout(self._deadline):
                    await self._client.ping()
            back = True
        except Exception:
            pass
        finally:  # also when the caller is cancelled: the charges being flushed are kept
            self._probing = False
            if not back:
                newer, self._pending = self._pending, flushing
                self._keep(newer)
        if not back:
            return False
        self._recovered(len(flushing))
        kept_meanwhile, self._pending = self._pending, {}  # charged while the probe ran
        if kept_meanwhile:
            try:
                await self._apply(kept_meanwhile)
            except Exception as exc:
                self._went_down(exc)
                self._keep(kept_meanwhile)
        return True

    def _keep(self, charges: Mapping[str, list[int]]) -> None:
        """Adds charges to the pending map (summed per counter; the oldest counters go beyond max_pending)."""
        pending = self._pending
        for key, (amount, expires_at) in charges.items():
            entry = pending.get(key)
            if entry is None:
                pending[key] = [amount, expires_at]
            else:
                entry[0] += amount
                entry[1] = max(entry[1], expires_at)
        while len(pending) > self._max_pending:
            del pending[next(iter(pending))]
            self._dropped += 1

    def _went_down(self, exc: BaseException) -> None:
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        self._down_since_unix = time.time()
        self._next_probe = self._down_since + self._probe_every
        self._outages += 1
        self._dropped_before = self._dropped
        log.warning(
            "rate_limit_store_unreachable",
            store=self._where,
            error=type(exc).__name__,
            reason=self._scrub(str(exc))[:200],
        )
        if self._watch is None or self._watch.done():
            self._watch = asyncio.get_running_loop().create_task(self._probe_until_back())

    async def _probe_until_back(self) -> None:
        """While down: a probe each time one is due (one a probe_every), whoever else asks Redis."""
        while self._down_since is not None:
            await asyncio.sleep(max(self._next_probe - time.monotonic(), 0.05))
            if self._down_since is not None:
                await self._probe()

    def _recovered(self, flushed: int) -> None:
        if self._down_since is None:
            return
        outage = time.monotonic() - self._down_since
        self._down_since = self._down_since_unix = None
        log.info(
            "rate_limit_store_recovered",
            store=self._where,
            outage_seconds=round(outage, 1),
            charges_flushed=flushed,
            charges_dropped=self._dropped - self._dropped_before,
        )

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def status(self) -> StoreStatus:
        return StoreStatus(
            available=self._down_since is None,
            outages=self._outages,
            down_since=self._down_since_unix,
            pending=len(self._pending),
            dropped=self._dropped,
        )

    async def check(self) -> None:
        try:
            async with asyncio.timeout(self._deadline):
                await self._client.ping()
        except Exception as exc:
            self._went_down(exc)  # requests meet the fail mode at once, and a probe finds it back
            return
        log.info("rate_limit_store_connected", store=self._where)

    async def close(self) -> None:
        if self._watch is not None:
            # Waited for no longer than a probe may take: redis-py can hold a cancellation that
            # arrives while it connects (measured: a minute, against a Redis that never answers).
            self._watch.cancel()
            await asyncio.wait({self._watch}, timeout=self._deadline)
        await self._client.aclose()

    def __repr__(self) -> str:
        return f"RedisCounters({self._where!r})"


def _secrets_of(url: str) -> tuple[str, ...]:
    """The password of a URL as it may show up in a message (raw, percent-encoded), and its query."""
    parts = urlsplit(url)
    found = [s for s in (parts.password, parts.query) if s]
    found += [unquote(s) for s in found] + [quote(s, safe="") for s in found]
    return tuple(sorted({s for s in found if s}, key=len, reverse=True))


def _refused_counter(error: Exception) -> bool:
    """Redis refused one counter's command (its key holds something else than a count), not every command."""
    text = str(error)
    return isinstance(error, ResponseError) and (
        text.startswith("WRONGTYPE") or "not an integer" in text or "would overflow" in text
    )


def _as_int(value: Any) -> int:
    if value is None:
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def counters_for(url: str | None) -> Counters:
    """The counters of a translator process: in Redis at `url`, else in memory. (Those of local
    budgets are always in memory: budgets.Budgets.)"""
    return RedisCounters(url) if url else MemoryCounters()
