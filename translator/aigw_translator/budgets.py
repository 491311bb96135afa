"""Budgets, the async end: reads a request's counters to admit it, and charges them in the background
(admission costs at once, response costs when the response ends). The decisions are limits.py's;
the counters (memory or Redis) are counters.py's.

Local budgets (rateLimit.local) are counted in this process's memory whatever store the others use,
and judged on it alone: a shared store that cannot be read leaves them enforced. A request they
refuse charges none of them, and one the shared budgets refuse has its local charges taken back (the
shared budgets keep a refused request's charge, as Envoy's rate limit service does). While a
request's local charges wait on its shared budgets' verdict they are pending: a request the local
budgets would refuse only because of pending charges waits for them to settle and is judged again
(a request the shared budgets refuse must not have spent another's local room).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .counters import LOCAL_KEY_PREFIX, Counters, MemoryCounters, counters_for
from .limits import Counted, Verdict, admission_charges, decide, over, taken_back
from .logs import get_logger

log = get_logger(__name__)


class Budgets:
    """One translator process's view of the budgets: `counters` shared (Redis) or its own (memory),
    and `local`, the local budgets' (its own, always)."""

    def __init__(self, counters: Counters, fail_closed: bool = False) -> None:
        self.counters = counters
        self.local = MemoryCounters()
        self.fail_closed = fail_closed
        # Local charges of requests whose shared budgets have not answered yet, by counter; and what
        # is set (then replaced) each time some of them settle.
        self._pending: dict[str, int] = {}
        self._settled = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        # Shadow-mode counters already reported as over their limit (one line per counter and window).
        self._shadow_reported: set[str] = set()

    async def admit(self, counted: Sequence[Counted], now: float | None = None) -> Verdict:
        """Decides on a request from its budgets' counters: the local ones first, from memory (see
        the module's docstring), then the others (_charged)."""
        if not counted:
            return Verdict(admitted=True)
        now = time.time() if now is None else now
        local = [c for c in counted if c.budget.local]
        shared = [c for c in counted if not c.budget.local]
        judged = await self._judged_locally(local, now) if local else _Judged(Verdict(admitted=True), {})
        verdict, used = judged.verdict, dict(judged.used)
        if not verdict.admitted or not shared:
            return self._said(verdict)
        charges = admission_charges(local)
        self._hold(charges, 1)
        try:
            before = await self._charged(shared)
            if before is None:  # the shared store is down: the local budgets alone were judged
                down = decide(shared, None, self.fail_closed, now)
                verdict = replace(down, headers={**verdict.headers, **down.headers})
            else:
                used.update(before)
                verdict = decide(counted, [used[c.key] for c in counted], self.fail_closed, now)
            if charges and not verdict.admitted:  # taken back before those waiting on them look again
                await self.local.add(taken_back(charges))
        finally:
            self._hold(charges, -1)
        return self._said(verdict)

    async def _judged_locally(self, local: Sequence[Counted], now: float) -> _Judged:
        """The local budgets' verdict, charged when admitted: read, judged and charged with no other
        request in between (memory: nothing to wait for). A refusal that pending charges alone make
        waits for them to settle, then the budgets are judged again."""
        keys = [c.key for c in local]
        while True:
            values = await self.local.read(keys)
            assert values is not None  # (memory is always read)
            verdict = decide(local, values, False, now)
            if verdict.admitted:
                await self.local.add(admission_charges(local))
                return _Judged(verdict, dict(zip(keys, values, strict=True)))
            exceeded = verdict.exceeded
            assert exceeded is not None
            pending = self._pending.get(exceeded.key, 0)
            if not pending or over(exceeded, values[keys.index(exceeded.key)] - pending):
                return _Judged(verdict, {})
            await self._settled.wait()

    def _hold(self, charges: Mapping[str, tuple[int, int]], sign: int) -> None:
        """Marks local charges pending (sign 1) or settled (-1), waking those waiting on them."""
        for key, (amount, _) in charges.items():
            left = self._pending.get(key, 0) + sign * amount
            if left:
                self._pending[key] = left
            else:
                self._pending.pop(key, None)
        if sign < 0 and charges:
            self._settled.set()
            self._settled = asyncio.Event()

    async def _charged(self, counted: Sequence[Counted]) -> dict[str, int] | None:
        """Each counter's value before the request (None: the store cannot be read): token budgets
        (admission cost 0) are read; those with an admission cost are charged it first, in the same
        round trip, and judged on the value they had before (so concurrent requests cannot all slip
        under a request limit; a refused request's charge stays)."""
        read = [c.key for c in counted if not c.budget.request_cost]
        values, totals = await asyncio.gather(self.counters.read(read), self.counters.add(admission_charges(counted)))
        if values is None or totals is None:
            return None
        before = dict(zip(read, values, strict=True))
        for c in counted:
            if c.budget.request_cost:  # a window already over when charged counts from zero
                before[c.key] = totals.get(c.key, c.budget.request_cost) - c.budget.request_cost
        return before

    def _said(self, verdict: Verdict) -> Verdict:
        """The verdict, its shadow refusals logged (once per counter and window) and a refusal at debug."""
        for c in verdict.shadow_exceeded:
            if c.key not in self._shadow_reported:
                if len(self._shadow_reported) > 10_000:
                    self._shadow_reported.clear()
                self._shadow_reported.add(c.key)
                log.info("rate_limit_shadow_exceeded", budget=c.budget.source, limit=c.budget.limit)
        if verdict.exceeded is not None:
            log.debug("rate_limited", budget=verdict.exceeded.budget.source, limit=verdict.exceeded.budget.limit)
        return verdict

    async def first_open(self, levels: Sequence[Sequence[Sequence[Counted]]], now: float | None = None) -> int:
        """The index of the first priority with a backend whose budgets all have room, given each
        priority's backends' budgets; 0 when none has (or the counters cannot be read: each attempt
        then decides). One read, nothing charged."""
        now = time.time() if now is None else now
        # A backend under no budget that applies (no quota, or none for this model or bucket) is
        # open: its priority and those below it need no read (nothing at all when it is the first).
        open_at = next((i for i, level in enumerate(levels) if any(not backend for backend in level)), None)
        if open_at == 0:
            return 0
        levels = levels if open_at is None else levels[: open_at + 1]
        keys = [c.key for level in levels for backend in level for c in backend]
        used = await self.counters.read(keys) if keys else []
        if used is None:
            return 0
        values = dict(zip(keys, used, strict=True))
        for index, level in enumerate(levels):
            for backend in level:
                if decide(backend, [values[c.key] for c in backend], False, now).admitted:
                    return index
        return 0

    def charge(self, charges: Mapping[str, tuple[int, int]]) -> None:
        """Adds to the counters in the background (a request never waits for its charge); the local
        budgets' to this process's."""
        local = {k: v for k, v in charges.items() if k.startswith(LOCAL_KEY_PREFIX)}
        shared = {k: v for k, v in charges.items() if not k.startswith(LOCAL_KEY_PREFIX)}
        if local:
            self._spawn(self.local.add(local))
        if shared:
            self._spawn(self.counters.add(shared))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Until every charge started so far is done (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


@dataclass(frozen=True)
class _Judged:
    """The local budgets' verdict, and the counters' values it was judged on (when admitted)."""

    verdict: Verdict
    used: dict[str, int]


# The Redis URL may carry a password: worker processes get it in their environment, not in argv
# (which `ps` shows to every user).
REDIS_URL_ENV = "AIGW_RATE_LIMIT_REDIS"


@dataclass(frozen=True)
class BudgetOptions:
    """Where the counters live and what a request meets while they cannot be read."""

    redis_url: str | None = field(default=None, repr=False)
    fail_closed: bool = False

    def budgets(self) -> Budgets:
        return Budgets(counters_for(self.redis_url), fail_closed=self.fail_closed)

    @property
    def ignored(self) -> str:
        """What in these options has no effect ("" when all of it does)."""
        if self.fail_closed and not self.redis_url:
            return "--rate-limit-fail-mode closed has no effect without --rate-limit-redis (memory never fails)"
        return ""

    @property
    def shared(self) -> bool:
        """Counters several translator processes (and replicas) share."""
        return bool(self.redis_url)

    def worker_argv(self) -> list[str]:
        """The translator command-line flags that carry these options (the URL goes by environment)."""
        return ["--rate-limit-fail-mode", "closed" if self.fail_closed else "open"]

    def worker_env(self) -> dict[str, str]:
        return {REDIS_URL_ENV: self.redis_url} if self.redis_url else {}
