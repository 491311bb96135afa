"""token_cache.TokenCache, the refresh machinery the credential modules share: timed refreshes
before expiry, keep-warm, retries after failure, refresh margins."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from aigw_translator import token_cache
from aigw_translator.errors import CredentialsUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Timers:
    """A fake `schedule`: (delay, run) pairs, run by the test."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, run: Callable[[], None]) -> None:
        self.pending.append((delay, run))

    def fire(self) -> float:
        delay, run = self.pending.pop(0)
        run()
        return delay


def _cache(clock: Clock, timers: Timers, **kw: Any) -> token_cache.TokenCache[str, str]:
    return token_cache.TokenCache(
        credential="test token", event="test_token", clock=clock, spawn=lambda run: run(), schedule=timers, **kw
    )


@pytest.mark.parametrize(
    ("lifetime", "fraction", "margin"), [(3600, 0.5, 300), (3600, 0.2, 300), (10, 0.5, 5), (10, 0.2, 2)]
)
def test_refresh_margin(lifetime: float, fraction: float, margin: float) -> None:
    assert token_cache.refresh_margin(lifetime, 300, fraction) == pytest.approx(margin)


def _counted(numbered: bool = False) -> tuple[list[int], Callable[[], tuple[str, float]]]:
    """A fetch of values living 10 s that records its calls; its values are "v", or "v1", "v2", …
    when `numbered`."""
    calls: list[int] = []

    def fetch() -> tuple[str, float]:
        calls.append(1)
        return (f"v{len(calls)}" if numbered else "v"), 10

    return calls, fetch


def test_a_timer_refreshes_before_expiry_without_a_request() -> None:
    clock, timers = Clock(), Timers()
    calls, fetch = _counted(numbered=True)

    cache = _cache(clock, timers, short_lifetime_fraction=0.2)
    assert cache.get("b", "k", fetch) == "v1"
    assert [d for d, _ in timers.pending] == [pytest.approx(8)]  # at 80% of the lifetime
    clock.now += 8
    timers.fire()
    assert calls == [1, 1] and cache.get("b", "k", fetch) == "v2"
    assert len(timers.pending) == 1  # the next refresh is armed


def test_an_unused_value_is_not_kept_warm() -> None:
    clock, timers = Clock(), Timers()
    calls, fetch = _counted()

    cache = _cache(clock, timers, keep_warm=5)
    cache.get("b", "k", fetch)
    clock.now += 6
    timers.fire()
    assert len(calls) == 1 and not timers.pending


def test_a_failed_fetch_is_retried_by_a_timer_and_the_outage_logged_once() -> None:
    clock, timers = Clock(), Timers()
    answers: list[tuple[str, float] | Exception] = [token_cache.FetchError("down"), ("v", 10)]

    def fetch() -> tuple[str, float]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    cache = _cache(clock, timers)
    with pytest.raises(CredentialsUnavailable, match="no test token for this backend \\(down\\)"):
        cache.get("b", "k", fetch)
    with pytest.raises(CredentialsUnavailable):  # at once: no second fetch within the retry delay
        cache.get("b", "k", fetch)
    assert len(answers) == 1
    clock.now += token_cache.RETRY_AFTER_FAILURE + 0.1
    timers.fire()
    assert cache.get("b", "k", fetch) == "v"


def test_secrets_are_scrubbed_from_reasons() -> None:
    def fetch() -> tuple[str, float]:
        raise token_cache.FetchError("endpoint said: bad secret hunter2")

    cache = _cache(Clock(), Timers())
    with pytest.raises(CredentialsUnavailable) as err:
        cache.get("b", "k", fetch, secrets=("hunter2",))
    assert "hunter2" not in err.value.message and "[REDACTED]" in err.value.message


def test_only_the_latest_timer_acts() -> None:
    """A request that refreshes first (the fallback) supersedes the timer armed before it."""
    clock, timers = Clock(), Timers()
    calls, fetch = _counted(numbered=True)

    cache = _cache(clock, timers)
    cache.get("b", "k", fetch)
    clock.now += 5
    assert cache.get("b", "k", fetch) == "v1"  # due: refreshed (inline spawn) by this request
    assert cache.get("b", "k", fetch) == "v2" and len(calls) == 2
    timers.fire()  # the first value's timer: superseded, does nothing
    assert len(calls) == 2 and len(timers.pending) == 1
    clock.now += 5
    timers.fire()  # the second value's timer refreshes
    assert len(calls) == 3 and cache.get("b", "k", fetch) == "v3"


def test_a_timer_woken_early_waits_again() -> None:
    clock, timers = Clock(), Timers()
    calls, fetch = _counted()

    cache = _cache(clock, timers)
    cache.get("b", "k", fetch)
    clock.now += 4.9
    timers.fire()
    assert len(calls) == 1 and [d for d, _ in timers.pending] == [pytest.approx(0.11)]


def test_a_cache_nobody_holds_stops_refreshing() -> None:
    import gc

    clock, timers = Clock(), Timers()
    calls, fetch = _counted()

    cache = _cache(clock, timers)
    cache.get("b", "k", fetch)
    del cache
    gc.collect()
    clock.now += 5
    timers.fire()
    assert len(calls) == 1 and not timers.pending


def test_forget_stops_the_timers() -> None:
    clock, timers = Clock(), Timers()
    calls, fetch = _counted()

    cache = _cache(clock, timers)
    cache.get("b", "k", fetch)
    cache.forget()
    clock.now += 5
    timers.fire()
    assert len(calls) == 1 and not timers.pending


def test_an_outage_outliving_the_keep_warm_spell_is_retried_by_the_next_request() -> None:
    clock, timers = Clock(), Timers()
    down = True

    def fetch() -> tuple[str, float]:
        if down:
            raise token_cache.FetchError("down")
        return "v", 10

    cache = _cache(clock, timers, keep_warm=5)
    with pytest.raises(CredentialsUnavailable):
        cache.get("b", "k", fetch)
    clock.now += 10
    timers.fire()  # unused for longer than keep_warm: the retries stop
    assert not timers.pending
    down = False
    assert cache.get("b", "k", fetch) == "v"  # a request restarts them (inline spawn here)


def test_a_refresh_without_a_thread_to_run_it_still_serves_the_valid_value() -> None:
    clock, timers = Clock(), Timers()
    calls, fetch = _counted()

    def no_thread(run: Callable[[], None]) -> None:
        raise RuntimeError("can't start new thread")

    cache: token_cache.TokenCache[str, str] = token_cache.TokenCache(
        credential="test token", event="test_token", clock=clock, spawn=no_thread, schedule=timers
    )
    assert cache.get("b", "k", fetch) == "v"  # off the loop: fetched by this caller
    clock.now += 6  # due for its refresh, still valid
    assert cache.get("b", "k", fetch) == "v"
    timers.fire()  # the timer cannot start one either: no exception on its thread
    clock.now += 5  # expired: an outage
    with pytest.raises(CredentialsUnavailable, match=r"\(no thread to fetch it \(RuntimeError\)\)"):
        cache.get("b", "k", fetch)
    assert len(calls) == 1
