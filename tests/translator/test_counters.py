"""The counters of budgets (aigw_translator.counters): fixed windows, and the memory and Redis stores
(a real redis-server, see tests/redis_server.py), including Redis going away and coming back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from aigw.translator.v1.config_pb2 import Window
from aigw_translator.arguments import rate_limit_problem
from aigw_translator.counters import (
    Counters,
    MemoryCounters,
    RedisCounters,
    StoreStatus,
    counters_for,
    redacted_url,
    window_bounds,
)
from tests.redis_server import RedisServer


def _t(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


# ---------------------------------------------------------------------------------------------
# Windows

WINDOWS = [
    # (window, now, start, end); 2026-12-02 is a Wednesday
    (Window(seconds=1), "2026-12-02T13:57:19.75", "2026-12-02T13:57:19", "2026-12-02T13:57:20"),
    (Window(seconds=10), "2026-12-02T13:57:19", "2026-12-02T13:57:10", "2026-12-02T13:57:20"),
    (Window(seconds=60), "2026-12-02T13:57:19", "2026-12-02T13:57:00", "2026-12-02T13:58:00"),
    (Window(seconds=60), "2026-12-02T13:57:00", "2026-12-02T13:57:00", "2026-12-02T13:58:00"),
    (Window(seconds=60), "2026-12-02T13:56:59.999", "2026-12-02T13:56:00", "2026-12-02T13:57:00"),
    (Window(seconds=3600), "2026-12-02T13:57:19", "2026-12-02T13:00:00", "2026-12-02T14:00:00"),
    (Window(seconds=86400), "2026-12-02T13:57:19", "2026-12-02T00:00:00", "2026-12-03T00:00:00"),
    (Window(seconds=86400), "2026-12-31T23:59:59", "2026-12-31T00:00:00", "2027-01-01T00:00:00"),
    (Window(seconds=2 * 86400), "1970-01-02T10:00:00", "1970-01-01T00:00:00", "1970-01-03T00:00:00"),
    # weeks start on Monday 00:00 UTC
    (Window(seconds=604800), "2026-12-02T13:57:19", "2026-11-30T00:00:00", "2026-12-07T00:00:00"),
    (Window(seconds=604800), "2026-11-30T00:00:00", "2026-11-30T00:00:00", "2026-12-07T00:00:00"),
    (Window(seconds=604800), "2026-11-29T23:59:59", "2026-11-23T00:00:00", "2026-11-30T00:00:00"),
    (Window(seconds=604800), "2027-01-01T12:00:00", "2026-12-28T00:00:00", "2027-01-04T00:00:00"),
    (Window(seconds=604800), "1970-01-01T00:00:00", "1969-12-29T00:00:00", "1970-01-05T00:00:00"),
    (Window(seconds=2 * 604800), "2026-12-02T13:57:19", "2026-11-30T00:00:00", "2026-12-14T00:00:00"),
    # calendar months UTC
    (Window(months=1), "2026-12-02T13:57:19", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
    (Window(months=1), "2026-12-31T23:59:59", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
    (Window(months=1), "2027-01-01T00:00:00", "2027-01-01T00:00:00", "2027-02-01T00:00:00"),
    (Window(months=1), "2028-02-29T12:00:00", "2028-02-01T00:00:00", "2028-03-01T00:00:00"),  # leap
    (Window(months=1), "2027-02-28T23:59:59", "2027-02-01T00:00:00", "2027-03-01T00:00:00"),
    (Window(months=1), "2100-02-28T23:00:00", "2100-02-01T00:00:00", "2100-03-01T00:00:00"),  # not leap
    (Window(months=3), "2026-12-02T13:57:19", "2026-10-01T00:00:00", "2027-01-01T00:00:00"),
    (Window(months=3), "2027-02-10T00:00:00", "2027-01-01T00:00:00", "2027-04-01T00:00:00"),
    (Window(months=12), "2026-12-02T13:57:19", "2026-01-01T00:00:00", "2027-01-01T00:00:00"),
    (Window(months=12), "2028-02-29T00:00:00", "2028-01-01T00:00:00", "2029-01-01T00:00:00"),
    (Window(months=24), "2027-06-01T00:00:00", "2026-01-01T00:00:00", "2028-01-01T00:00:00"),
    (Window(months=1), "1969-07-20T20:17:00", "1969-07-01T00:00:00", "1969-08-01T00:00:00"),
]


@pytest.mark.parametrize(("window", "now", "start", "end"), WINDOWS)
def test_window_bounds(window: Window, now: str, start: str, end: str) -> None:
    moment = datetime.fromisoformat(now).replace(tzinfo=UTC).timestamp()
    assert window_bounds(window, moment) == (_t(start), _t(end))


def test_window_bounds_hold_now_for_any_moment() -> None:
    for window in (Window(seconds=7), Window(seconds=604800), Window(months=1), Window(months=5)):
        for now in range(1_700_000_000, 1_800_000_000, 9_999_991):
            start, end = window_bounds(window, now + 0.5)
            assert start <= now < end
            assert window_bounds(window, end)[0] == end  # the next window starts where this one ends


def test_a_window_without_a_length_is_an_error() -> None:
    with pytest.raises(ValueError):
        window_bounds(Window(), 1_700_000_000)
    with pytest.raises(ValueError):
        window_bounds(Window(seconds=60, months=1), 1_700_000_000)


# ---------------------------------------------------------------------------------------------
# The stores, memory and Redis alike


@pytest.fixture(params=["memory", "redis"])
async def counters(request: pytest.FixtureRequest) -> AsyncIterator[Counters]:
    store: Counters
    if request.param == "memory":
        store = MemoryCounters()
    else:
        store = RedisCounters(request.getfixturevalue("redis_server").url)
    yield store
    await store.close()


async def test_missing_counters_are_zero_and_charges_add_up(counters: Counters) -> None:
    later = int(time.time()) + 60
    assert await counters.read([]) == []
    assert await counters.read(["aigw:rl:a:1", "aigw:rl:b:1"]) == [0, 0]
    await counters.add({"aigw:rl:a:1": (5, later)})
    await counters.add({"aigw:rl:a:1": (7, later), "aigw:rl:b:1": (1, later)})
    await counters.add({})
    assert await counters.read(["aigw:rl:b:1", "aigw:rl:missing", "aigw:rl:a:1"]) == [1, 0, 12]
    assert counters.status() == StoreStatus(available=True)


async def test_a_charge_for_a_window_that_is_over_counts_for_nothing(counters: Counters) -> None:
    await counters.add({"aigw:rl:old:1": (5, int(time.time()) - 1)})
    assert await counters.read(["aigw:rl:old:1"]) == [0]


async def test_counters_expire_at_the_end_of_their_window(counters: Counters) -> None:
    soon = int(time.time()) + 2
    await counters.add({"aigw:rl:short:1": (3, soon)})
    assert await counters.read(["aigw:rl:short:1"]) == [3]
    await asyncio.sleep(soon + 0.1 - time.time())
    assert await counters.read(["aigw:rl:short:1"]) == [0]


async def test_concurrent_charges_all_count(counters: Counters) -> None:
    later = int(time.time()) + 60
    await asyncio.gather(*(counters.add({"aigw:rl:c:1": (i, later)}) for i in range(1, 101)))
    assert await counters.read(["aigw:rl:c:1"]) == [5050]


# ---------------------------------------------------------------------------------------------
# Memory


async def test_memory_counters_stay_bounded() -> None:
    clock = [1_000_000.0]
    store = MemoryCounters(max_keys=100, clock=lambda: clock[0])
    for i in range(250):
        await store.add({f"k{i}": (1, 1_000_060)})
    assert len(store._values) == 100
    assert store.status().dropped == 150
    assert await store.read(["k0", "k149", "k150", "k249"]) == [0, 0, 1, 1]  # the oldest went


async def test_memory_drops_expired_counters_on_its_sweep() -> None:
    clock = [1_000_000.0]
    store = MemoryCounters(clock=lambda: clock[0])
    await store.add({f"old{i}": (1, 1_000_005) for i in range(1000)})
    await store.add({"live": (1, 1_000_100)})
    clock[0] += MemoryCounters.SWEEP_EVERY
    await store.add({"live": (1, 1_000_100)})
    assert list(store._values) == ["live"]
    assert store.status() == StoreStatus(available=True)  # expired counters are not drops


# ---------------------------------------------------------------------------------------------
# Redis


async def test_two_replicas_share_their_counters(redis_server: RedisServer) -> None:
    one, two = RedisCounters(redis_server.url), RedisCounters(redis_server.url)
    later = int(time.time()) + 60
    try:
        await asyncio.gather(
            *(one.add({"aigw:rl:shared:1": (2, later)}) for _ in range(50)),
            *(two.add({"aigw:rl:shared:1": (3, later)}) for _ in range(50)),
        )
        assert await one.read(["aigw:rl:shared:1"]) == [250]
        assert await two.read(["aigw:rl:shared:1"]) == [250]
    finally:
        await one.close()
        await two.close()


async def test_redis_expires_counters_at_the_end_of_their_window(redis_server: RedisServer) -> None:
    store = RedisCounters(redis_server.url)
    start, end = window_bounds(Window(seconds=3600), time.time())
    key = f"aigw:rl:ttl:{start}"
    await store.add({key: (10, end)})
    await store.add({key: (1, end)})
    await store.close()
    with redis_server.client() as redis:
        assert int(redis.get(key)) == 11
        assert redis.execute_command("EXPIRETIME", key) == end
        assert 0 < redis.ttl(key) <= 3600


class _Blackhole:
    """A TCP server that accepts connections and never answers: a Redis that hangs."""

    def __init__(self) -> None:
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self._writers.append(writer)

        self._server = await asyncio.start_server(accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        self._server.close()


async def test_a_hung_redis_never_holds_a_request_long_and_is_asked_once_a_second() -> None:
    hole = _Blackhole()
    port = await hole.start()
    store = RedisCounters(f"redis://127.0.0.1:{port}/0", timeout=0.2, deadline=0.5, probe_every=1.0)
    later = int(time.time()) + 60
    slow: list[float] = []
    began = time.monotonic()
    try:
        with structlog.testing.capture_logs() as logs:
            while time.monotonic() - began < 2.6:
                t0 = time.monotonic()
                calls = await asyncio.gather(
                    store.read(["aigw:rl:h:1"]), store.add({"aigw:rl:h:1": (1, later)}), store.read(["aigw:rl:h:2"])
                )
                took = time.monotonic() - t0
                assert calls[0] is None and calls[2] is None
                assert took < 1.0  # the 0.5 s deadline (and some slack), whatever the socket does
                if took > 0.1:
                    slow.append(took)
                await asyncio.sleep(0.01)
    finally:
        await store.close()
        await hole.stop()
    # the first call found it down; then one probe a second at most (about 2 in 2.6 s)
    assert 1 <= len(slow) <= 4, slow
    assert [e["event"] for e in logs] == ["rate_limit_store_unreachable"]
    status = store.status()
    assert not status.available and status.outages == 1 and status.pending == 1
    assert status.down_since is not None and time.time() - 5 < status.down_since < time.time()


async def test_charges_being_flushed_are_kept_when_the_probe_is_cancelled() -> None:
    hole = _Blackhole()
    port = await hole.start()
    # The background probe waits a minute: the charge below is the one that probes, and hangs.
    store = RedisCounters(f"redis://127.0.0.1:{port}/0", timeout=0.5, deadline=2.0, probe_every=60.0)
    later = int(time.time()) + 60
    try:
        with structlog.testing.capture_logs():
            await store.add({"aigw:rl:x:1": (3, later)})  # times out: down, kept
            assert store.status().pending == 1
            store._next_probe = 0.0  # due
            probing = asyncio.create_task(store.add({"aigw:rl:x:2": (1, later)}))  # the probe hangs
            await asyncio.sleep(0.1)
            assert store.status().pending == 0  # being flushed
            probing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await probing
        assert store._pending == {"aigw:rl:x:1": [3, later], "aigw:rl:x:2": [1, later]}
        assert not store.status().available
    finally:
        await store.close()
        await hole.stop()


async def test_redis_killed_then_back_on_the_same_port(redis_server: RedisServer) -> None:
    store = RedisCounters(redis_server.url, probe_every=0.2)
    later = int(time.time()) + 120
    try:
        await store.add({"aigw:rl:k:1": (5, later)})
        assert await store.read(["aigw:rl:k:1"]) == [5]
        redis_server.kill()
        with structlog.testing.capture_logs() as down_logs:
            for _ in range(20):
                assert await store.read(["aigw:rl:k:1"]) is None
                await store.add({"aigw:rl:k:1": (1, later), "aigw:rl:k:2": (2, later)})
            await asyncio.sleep(0.3)  # past a probe: it fails, and still one line for the outage
            assert await store.read(["aigw:rl:k:1"]) is None
        assert [(e["event"], e["log_level"]) for e in down_logs] == [("rate_limit_store_unreachable", "warning")]
        assert down_logs[0]["store"] == redis_server.url and down_logs[0]["error"]
        status = store.status()
        assert not status.available and status.outages == 1 and status.pending == 2

        with structlog.testing.capture_logs() as up_logs:
            redis_server.start()  # empty: what was counted before the outage is gone with it
            await _back(store)  # found by the background probe, with no request
            assert await store.read(["aigw:rl:k:1", "aigw:rl:k:2"]) == [20, 40]  # the charges kept, flushed
            assert await store.read(["aigw:rl:k:1"]) == [20]
        assert [(e["event"], e["log_level"]) for e in up_logs] == [("rate_limit_store_recovered", "info")]
        assert up_logs[0]["charges_flushed"] == 2 and up_logs[0]["outage_seconds"] > 0
        assert store.status() == StoreStatus(available=True, outages=1)
        with redis_server.client() as redis:
            assert redis.execute_command("EXPIRETIME", "aigw:rl:k:2") == later

        redis_server.kill()  # a second outage: its own line
        with structlog.testing.capture_logs() as again:
            await store.add({"aigw:rl:k:1": (1, later)})
            assert await store.read(["aigw:rl:k:1"]) is None
        assert [e["event"] for e in again] == ["rate_limit_store_unreachable"]
        assert store.status().outages == 2
    finally:
        await store.close()


async def _back(store: RedisCounters, within: float = 10.0) -> None:
    """Until the store finds Redis back (on its own: nothing here asks Redis)."""
    deadline = time.monotonic() + within
    while not store.status().available:
        assert time.monotonic() < deadline, "Redis is back, the store never found it"
        await asyncio.sleep(0.05)


async def test_the_outage_ends_when_redis_is_back_not_at_the_next_request(redis_server: RedisServer) -> None:
    """A platform team's trial: the end of an outage was found by the next request that needed
    Redis, which met the fail mode once more (admitted unchecked, or a 503 with fail mode closed)
    seconds after Redis was back, and the recovered line's outage ran until then (10.6 s logged
    for a 1.1 s stall). A background probe now finds it, and flushes what was charged meanwhile."""
    store = RedisCounters(redis_server.url, probe_every=0.2)
    later = int(time.time()) + 60
    try:
        redis_server.kill()
        await store.add({"aigw:rl:f:1": (4, later)})
        with structlog.testing.capture_logs() as logs:
            redis_server.start()
            await _back(store)
        [recovered] = logs
        assert recovered["event"] == "rate_limit_store_recovered" and recovered["charges_flushed"] == 1
        with redis_server.client() as redis:
            assert int(redis.get("aigw:rl:f:1")) == 4
        assert await store.add({"aigw:rl:f:1": (1, later)}) == {"aigw:rl:f:1": 5}
    finally:
        await store.close()


async def test_a_charge_that_finds_redis_back_is_counted_and_answered(redis_server: RedisServer) -> None:
    """The charge whose call runs the probe that finds Redis back is added like any other and
    answered with its totals (before, it was kept and answered None: unknown, as if still down)."""
    store = RedisCounters(redis_server.url, probe_every=60.0)  # the background probe waits
    later = int(time.time()) + 60
    try:
        redis_server.kill()
        await store.add({"aigw:rl:g:1": (4, later)})
        redis_server.start()
        store._next_probe = 0.0  # due now, for this call
        assert await store.add({"aigw:rl:g:1": (1, later)}) == {"aigw:rl:g:1": 5}
        assert store.status().available
    finally:
        await store.close()


async def test_the_pending_charges_are_bounded_dropping_the_oldest(redis_server: RedisServer) -> None:
    store = RedisCounters(redis_server.url, probe_every=0.2, max_pending=10)
    later = int(time.time()) + 60
    try:
        redis_server.kill()
        for i in range(25):
            await store.add({f"aigw:rl:p:{i}": (1, later)})
        await store.add({"aigw:rl:p:24": (1, later)})  # summed per counter, not a new entry
        assert (store.status().pending, store.status().dropped) == (10, 15)
        with structlog.testing.capture_logs() as logs:
            redis_server.start()
            await _back(store)
        values = await store.read([f"aigw:rl:p:{i}" for i in range(25)])
        assert values == [0] * 15 + [1] * 9 + [2]
        assert logs[0]["charges_flushed"] == 10 and logs[0]["charges_dropped"] == 15
    finally:
        await store.close()


async def test_a_password_in_the_url_never_shows(tmp_path: Path) -> None:
    password = "s3cr3t/p@ss"
    with RedisServer(tmp_path / "redis", password=password) as server:
        good = RedisCounters(server.url, probe_every=0.2)
        wrong = RedisCounters(server.url.replace("s3cr3t", "wr0ng"), probe_every=0.2)
        later = int(time.time()) + 60
        try:
            with structlog.testing.capture_logs() as logs:
                await good.add({"aigw:rl:pw:1": (3, later)})
                assert await good.read(["aigw:rl:pw:1"]) == [3]  # the password is used
                assert await wrong.read(["aigw:rl:pw:1"]) is None  # and checked
                server.kill()
                assert await good.read(["aigw:rl:pw:1"]) is None
                server.start()
                await asyncio.sleep(0.25)
                assert await good.read(["aigw:rl:pw:1"]) == [0]
            events = [e["event"] for e in logs]
            assert events == ["rate_limit_store_unreachable"] * 2 + ["rate_limit_store_recovered"]
            assert logs[0]["error"] == "AuthenticationError"
            assert all(e["store"] == f"redis://:***@127.0.0.1:{server.port}/0" for e in logs)
            shown = repr(logs) + repr(good) + repr(wrong) + repr(good.status())
            for secret in ("s3cr3t", "wr0ng", "p%40ss"):
                assert secret not in shown
        finally:
            await good.close()
            await wrong.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:pw@host/2", "redis://user:***@host/2"),
        ("redis://user@host", "redis://user@host"),
        ("rediss://host:6380", "rediss://host:6380"),
        ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
        ("unix:///run/redis.sock?db=1&password=pw", "unix:///run/redis.sock"),
        ("redis://:pa/ss@host:6379/0", "redis://***"),  # an unencoded "/" in the password
        ("redis://:pass@ho/st@host:6379/0", "redis://:***@ho/***"),
    ],
)
def test_redacted_url(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_counters_for() -> None:
    assert isinstance(counters_for(None), MemoryCounters)
    assert isinstance(counters_for(""), MemoryCounters)
    store = counters_for("redis://:pw@127.0.0.1:1/0")
    assert isinstance(store, RedisCounters) and "pw" not in repr(store)
    with pytest.raises(ValueError) as err:
        counters_for("http://:topsecret@127.0.0.1:1")
    assert "topsecret" not in str(err.value) and "redis://" in str(err.value)


@pytest.mark.parametrize("url", ["redis://:top/secret@127.0.0.1:6379/0", "redis://:top:se/cret@127.0.0.1:6379/0"])
def test_a_url_redis_cannot_read_is_refused_without_quoting_it(url: str) -> None:
    """An unencoded / in the password: redis-py's own error quotes what precedes it as the "port"."""
    with pytest.raises(ValueError) as err:
        counters_for(url)
    # the traceback does not show redis-py's error either (refused before redis-py reads it)
    assert err.value.__context__ is None or err.value.__suppress_context__
    shown = str(err.value)
    assert "top" not in shown and "%2F" in shown
    problem = rate_limit_problem(url)
    assert problem.startswith("--rate-limit-redis (or $AIGW_RATE_LIMIT_REDIS): the URL cannot be read")
    assert "top" not in problem
    assert rate_limit_problem("redis://:top%2Fsecret@127.0.0.1:6379/0") == ""


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://127.0.0.1:6379/0?foo=bar", "unknown option in the URL's query: foo (redis-py takes db, "),
        ("redis://127.0.0.1:6379/abc", "the database after the host must be a number"),
        ("redis://127.0.0.1:notaport/0", "the port after the host is not a number"),
        ("http://127.0.0.1:6379", "the URL must start with redis://, rediss:// or unix://"),
        ("redis://h:0/1", "the port must be 1 to 65535"),
    ],
)
def test_a_url_redis_would_fail_on_at_every_connection_is_refused_up_front(url: str, problem: str) -> None:
    """What redis-py only reports when it connects (for every request: an unknown query option is a
    TypeError each time) is refused when the command starts."""
    assert rate_limit_problem(url).startswith(f"--rate-limit-redis (or $AIGW_RATE_LIMIT_REDIS): {problem}")


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379", "rediss://:pw@h:6380/2?socket_timeout=1", "unix:///tmp/r.sock?db=1"]
)
def test_urls_redis_reads_are_accepted(url: str) -> None:
    assert rate_limit_problem(url) == ""


async def test_a_counter_redis_refuses_is_dropped_alone(redis_server: RedisServer) -> None:
    store = RedisCounters(redis_server.url)
    later = int(time.time()) + 60
    keys = ["aigw:rl:text:1", "aigw:rl:list:1", "aigw:rl:ok:1"]
    try:
        with redis_server.client() as redis:
            redis.set("aigw:rl:text:1", "not a number")
            redis.rpush("aigw:rl:list:1", "x")
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                await store.add({key: (2 if "ok" in key else 1, later) for key in keys})
        assert await store.read(keys) == [0, 0, 6]
        assert store.status() == StoreStatus(available=True, dropped=6)  # the store itself works
        assert sorted(e["key"] for e in logs) == ["aigw:rl:list:1", "aigw:rl:text:1"]  # one line each
        assert {e["event"] for e in logs} == {"rate_limit_counter_refused"}
    finally:
        await store.close()


async def test_memory_evicts_the_least_recently_used_counters_first() -> None:
    """A flood of new distinct values evicts each other, not the counter in use (which it would if
    the oldest went first)."""
    counters = MemoryCounters(max_keys=3)
    far = int(time.time()) + 3600
    await counters.add({"in-use": (99, far)})
    for n in range(10):
        await counters.add({f"flood-{n}": (1, far)})
        assert await counters.read(["in-use"]) == [99]
    assert counters.status().dropped == 8


async def test_a_translator_says_at_start_whether_its_redis_can_be_reached(redis_server: RedisServer) -> None:
    """Left alone before: a wrong --rate-limit-redis showed only at the first request with a budget.
    The translator pings its store when it starts: unreachable, it warns at once and its requests
    meet the fail mode without waiting on Redis; reachable, it says so."""
    from aigw.translator.v1 import config_pb2
    from aigw_translator.budgets import Budgets
    from aigw_translator.server import bind
    from tests.e2e.harness.processes import free_port

    for url, event, level in [
        (f"redis://127.0.0.1:{free_port()}/0", "rate_limit_store_unreachable", "warning"),
        (redis_server.url, "rate_limit_store_connected", "info"),
    ]:
        server = bind(config_pb2.TranslatorConfig(name="ns/gw"), "127.0.0.1:0", Budgets(RedisCounters(url)))
        with structlog.testing.capture_logs() as logs:
            await server.start()
        try:
            said = [e for e in logs if e["event"].startswith("rate_limit_store")]
            assert [(e["event"], e["log_level"]) for e in said] == [(event, level)]
            assert server.processor.budgets.counters.status().available is (level == "info")
        finally:
            await server.stop()


async def test_memory_takes_back_a_charge_only_from_a_counter_still_there() -> None:
    """A refund (a negative charge) to a counter evicted or expired meanwhile makes no counter of -1
    (which would admit one request more)."""
    counters = MemoryCounters()
    later = int(time.time()) + 60
    assert await counters.add({"k": (-1, later)}) == {}
    assert await counters.read(["k"]) == [0]
    await counters.add({"k": (2, later)})
    assert await counters.add({"k": (-1, later)}) == {"k": 1}
