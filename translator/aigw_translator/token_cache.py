"""Short-lived credentials (bearer tokens, temporary AWS keys) cached per key and refreshed before
they expire, for every credential module of the translator (azure_entra, oidc, aws, and gcp).

How to use it: a module makes one `TokenCache` (process-wide) and asks it for the value of a key on
each request, passing the blocking function that fetches a new value::

    _cache = TokenCache(credential="Azure Entra ID token", event="azure_token")

    def bearer_token(backend, azure):
        key = (azure.tenant_id, azure.client_id, azure.client_secret)
        return _cache.get(backend, key, partial(request_token, *key),
                          names={"tenant_id": ..., "client_id": ...}, secrets=(azure.client_secret,))

`fetch()` returns `(value, lifetime in seconds)` or raises `FetchError` with a message safe to log
(any other exception is logged by its type only). The cache promises:

* One value per key, shared by every backend whose policy has that key; concurrent requests
  without a value wait for one fetch, not one each.
* `get` never blocks the translator's event loop. Called on a thread running an asyncio loop, it
  answers from the cache or raises at once: with no valid value and no outage under way it starts
  the fetch on a worker thread (or joins the one under way) and raises `CredentialsPending`, a
  CredentialsUnavailable carrying `ready`, a future done once that fetch ended. The server awaits
  it before the message that needs the value (server.await_credentials), so a first request still
  gets its credential, and only its own stream waits. Called on any other thread (a prefetch, a
  fetch that needs another cache's value, a test), it waits for the fetch when there is no valid
  value and no outage under way.
* A value is refreshed in the background `refresh_before` seconds before it expires, or, for a value
  living shorter than that allows, when `short_lifetime_fraction` of its lifetime remains
  (0.5: at half its lifetime; 0.2: at 80%). The refresh is started by a timer when the value is
  fetched and, as a fallback, by any request that finds the value due. The current value is served
  meanwhile, until it expires; it is never served after. Timers keep refreshing the keys of the
  current configuration (those its prefetch asked for, in `new_configuration()`) whether or not
  requests use them, so an idle backend's next request finds a valid value. Once its prefetches
  ended, every key an earlier configuration asked for and it did not (say, one holding a secret
  since rotated) is forgotten, and its timers stop. Any other key is kept fresh while a request
  used it in the last `keep_warm` seconds, then forgotten.
* A fetch that fails (or cannot be started: no thread to run it) is one error log line per outage
  (`<event>_unavailable`, naming the backend and the `names` fields, never the `secrets`, which are
  also scrubbed from the reason) and one info line when it ends (`<event>_recovered`). Requests
  with no valid value get `CredentialsUnavailable` (503 in the client's schema, the message names
  `credential` and the reason) at once: a request finding no retry in the last
  `retry_after_failure` seconds starts one in the background, and a timer retries while the key is
  configured or in use, first after `retry_after_failure` seconds, then at doubling intervals up to
  `MAX_RETRY_DELAY` (without timers, the first request after that pause retries).

`clock`, `spawn` (how a background refresh runs) and `schedule` (how a refresh is timed; None: only
requests start refreshes) are injectable for tests. Timers hold their cache weakly, and `forget()`
stops them: a test that swaps a module's cache for its own leaves no timer refreshing against
endpoints it has stopped (or, once its environment is restored, against the real provider).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

from aigw.translator.v1 import config_pb2

from .errors import CredentialsUnavailable, GatewayError
from .logs import get_logger

log = get_logger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Envoy AI Gateway's controller rotates tokens 5 minutes before they expire.
REFRESH_BEFORE = 300.0
# Background refreshes keep a key's value fresh while a request used it this recently.
KEEP_WARM = 3600.0
# After a failed fetch, requests without a valid value fail at once for this long.
RETRY_AFTER_FAILURE = 2.0
# Timers retry a failing key at doubling intervals from RETRY_AFTER_FAILURE up to this.
MAX_RETRY_DELAY = 60.0

Spawn = Callable[[Callable[[], None]], None]
Schedule = Callable[[float, Callable[[], None]], None]


class FetchError(Exception):
    """A fetch gave no value; the message is safe to log (it must never hold a secret)."""


class CredentialsPending(CredentialsUnavailable):
    """No valid value yet, and `get` was called on the event loop, which never waits: the fetch runs
    on a worker thread, and `ready` is done once it ended (whatever its outcome). A caller that
    can await it asks again then; one that cannot answers the 503."""

    def __init__(self, backend: str, credential: str, ready: Future[None]) -> None:
        super().__init__(backend, credential, "it is being fetched")
        self.ready = ready


def on_event_loop() -> bool:
    """Whether this thread runs an asyncio event loop (where nothing may block)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


# The generation of the current configuration (new_configuration counts them; 0: none yet).
_generation = 0
_configurations = threading.Lock()
# Generation -> its prefetches not ended yet (its new_configuration block counts as one).
_under_way: dict[int, int] = {}
# Every cache (weakly), for the sweep once a configuration's prefetches ended.
_caches: weakref.WeakSet[TokenCache[Any, Any]] = weakref.WeakSet()


class _Prefetching(threading.local):
    """On a thread prefetching for a configuration: that configuration's generation."""

    generation = 0


_prefetching = _Prefetching()


@contextlib.contextmanager
def new_configuration() -> Iterator[None]:
    """A new configuration arrived, and the block prefetches its credentials: every key those
    fetches ask for (on this thread or on the `thread`s they start) is kept fresh by timers from now
    on, whether or not requests use it. Once they all ended, the keys earlier configurations asked
    for and this one did not are forgotten."""
    global _generation
    with _configurations:
        _generation += 1
        generation = _generation
        _under_way[generation] = 1
    before, _prefetching.generation = _prefetching.generation, generation
    try:
        yield
    finally:
        _prefetching.generation = before
        _prefetch_ended(generation)


def _prefetch_started(generation: int) -> None:
    with _configurations:
        _under_way[generation] = _under_way.get(generation, 0) + 1


def _prefetch_ended(generation: int) -> None:
    """One prefetch of `generation` ended; after the last one, if it is still the current
    configuration, every cache forgets the keys only earlier configurations asked for."""
    with _configurations:
        left = _under_way.get(generation, 1) - 1
        if left > 0:
            _under_way[generation] = left
            return
        _under_way.pop(generation, None)
        if generation != _generation:
            return  # a later configuration's sweep does it
    for cache in list(_caches):
        cache._forget_earlier_than(generation)


@dataclass(frozen=True)
class Lease(Generic[V]):
    value: V
    expires_at: float  # on the cache's clock
    refresh_at: float


def refresh_margin(lifetime: float, before: float, short_lifetime_fraction: float) -> float:
    """How long before expiry a value of `lifetime` seconds is refreshed."""
    return min(before, lifetime * short_lifetime_fraction)


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    return text


def thread(run: Callable[[], None]) -> None:
    """The default `spawn`: a daemon thread (prefetching for the configuration its caller is)."""
    generation = _prefetching.generation
    if generation:
        _prefetch_started(generation)

    def target() -> None:
        _prefetching.generation = generation
        try:
            run()
        finally:
            if generation:
                _prefetch_ended(generation)

    try:
        threading.Thread(target=target, name="credential-refresh", daemon=True).start()
    except BaseException:
        if generation:
            _prefetch_ended(generation)
        raise


# How one kind of backend auth (a field of the Backend's `auth` oneof) is prefetched: the fetch,
# called with the backend's name and its credentials, and which credentials are fetched (None: all).
Prefetch = tuple[Callable[[str, Any], object], Callable[[Any], bool] | None]


def prefetch(configs: Iterable[config_pb2.TranslatorConfig], kinds: Mapping[str, Prefetch]) -> None:
    """As a configuration arrives, fetch in the background the credentials of every backend whose
    auth is one of `kinds` (and is wanted), so that a first request rarely waits for one (the
    server awaits a fetch off the event loop before the phase runs). One pass over the backends
    for every kind (20,000 backends: a look each). A fetch that fails is left to the cache's one log
    line per outage and to the request that needs the token."""
    for config in configs:
        for backend in config.backends:
            kind = backend.auth.WhichOneof("kind")
            if kind not in kinds:
                continue
            fetch, wanted = kinds[kind]
            credentials = getattr(backend.auth, kind)
            if wanted is None or wanted(credentials):
                thread(partial(_quietly, fetch, backend.name, credentials))


def _quietly(fetch: Callable[[str, Any], object], backend: str, credentials: Any) -> None:
    with contextlib.suppress(GatewayError):
        fetch(backend, credentials)


def timer(delay: float, run: Callable[[], None]) -> None:
    """The default `schedule`: a daemon timer thread."""
    waiting = threading.Timer(max(0.0, delay), run)
    waiting.daemon = True
    waiting.name = "credential-refresh-timer"
    waiting.start()


class _Entry(Generic[V]):
    """The value of one key and the state of its refresh."""

    __slots__ = (
        "configured", "failed_at", "failing", "failures", "fetch_lock", "last_error", "lease", "pending", "timer",
        "used_at",
    )  # fmt: skip

    def __init__(self) -> None:
        self.lease: Lease[V] | None = None
        self.fetch_lock = threading.Lock()  # one fetch at a time (never taken on the event loop)
        self.pending: Future[None] | None = None  # the background fetch under way, if any
        self.timer = 0  # the generation of the timer that acts (older ones find nothing to do)
        self.configured = 0  # the latest configuration whose prefetch asked for this key
        self.failing = False  # an outage is under way (logged once)
        self.failures = 0  # failed fetches in a row
        self.failed_at = -1e18
        self.last_error = ""
        self.used_at = -1e18


class TokenCache(Generic[K, V]):
    """Thread-safe short-lived values by key (see the module docstring)."""

    def __init__(
        self,
        *,
        credential: str,
        event: str,
        refresh_before: float = REFRESH_BEFORE,
        short_lifetime_fraction: float = 0.5,
        retry_after_failure: float = RETRY_AFTER_FAILURE,
        keep_warm: float = KEEP_WARM,
        clock: Callable[[], float] = time.monotonic,
        spawn: Spawn | None = None,
        schedule: Schedule | None = timer,
        on_forget: Callable[[K], None] | None = None,
    ) -> None:
        self.credential = credential  # what a 503 says the gateway lacks, e.g. "AWS credentials"
        self.event = event  # log event prefix, e.g. "aws_credentials"
        self.refresh_before = refresh_before
        self.short_lifetime_fraction = short_lifetime_fraction
        self.retry_after_failure = retry_after_failure
        self.keep_warm = keep_warm
        self._clock = clock
        self._spawn = spawn or thread
        self._schedule = schedule
        self._lock = threading.Lock()
        self._entries: dict[K, _Entry[V]] = {}
        self._on_forget = on_forget  # told each key forgotten (what its owner keeps per key goes too)
        _caches.add(self)

    def get(
        self,
        backend: str,
        key: K,
        fetch: Callable[[], tuple[V, float]],
        *,
        names: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
    ) -> V:
        """The current value of `key`; raises CredentialsUnavailable naming `backend`. With no
        valid value: on the event loop, CredentialsPending at once (the fetch runs on a worker
        thread); elsewhere, fetched now (see the module docstring)."""
        job = _Job(backend, key, fetch, dict(names or {}), tuple(secrets))
        entry = self._entries.get(key)
        if entry is None:
            with self._lock:
                entry = self._entries.setdefault(key, _Entry())
        if _prefetching.generation > entry.configured:
            with self._lock:  # put back if an earlier configuration's sweep just forgot it
                entry = self._entries.setdefault(key, entry)
                entry.configured = max(entry.configured, _prefetching.generation)
        now = self._clock()
        entry.used_at = now
        lease = entry.lease
        if lease is not None and now < lease.expires_at:
            if now >= lease.refresh_at:
                with contextlib.suppress(CredentialsUnavailable):  # logged; the value still serves
                    self._refresh_in_background(job, entry)
            return lease.value
        on_loop = on_event_loop()
        if entry.failing and (self._schedule is not None or on_loop):
            # An outage: timers retry in the background, a request never waits on the failing
            # endpoint. One that finds no retry since the pause (the timers stopped while the key was
            # unused, or back off) starts one.
            if now - entry.failed_at >= self.retry_after_failure:
                self._refresh_in_background(job, entry)
                lease = entry.lease
                if lease is not None and self._clock() < lease.expires_at:
                    return lease.value
            raise CredentialsUnavailable(backend, self.credential, entry.last_error)
        if on_loop:
            # The event loop never waits: the fetch runs on a worker thread (one per key at a time).
            ready = self._refresh_in_background(job, entry)
            lease = entry.lease
            if lease is not None and self._clock() < lease.expires_at:
                return lease.value  # `spawn` ran it inline (tests)
            raise CredentialsPending(backend, self.credential, ready)
        # No valid value: this request waits for one (concurrent ones wait for the same fetch).
        with entry.fetch_lock:
            now = self._clock()
            lease = entry.lease
            if lease is not None and now < lease.expires_at:
                return lease.value
            if entry.failing and now - entry.failed_at < self.retry_after_failure:
                raise CredentialsUnavailable(backend, self.credential, entry.last_error)
            return self._renew(job, entry).value

    def forget(self) -> None:
        """Drop every value (tests; timers of dropped entries find nothing to do)."""
        with self._lock:
            gone = list(self._entries)
            self._entries.clear()
        self._forgotten(gone)

    def _forget_earlier_than(self, generation: int) -> None:
        """Drop the keys that only configurations before `generation` asked for (their timers find
        nothing to do; a request that needs one again fetches it anew)."""
        with self._lock:
            gone = [key for key, entry in self._entries.items() if 0 < entry.configured < generation]
            for key in gone:
                del self._entries[key]
        self._forgotten(gone)

    def _forgotten(self, keys: Iterable[K]) -> None:
        if self._on_forget is not None:
            for key in keys:
                self._on_forget(key)

    # ---- refresh ------------------------------------------------------------------------------
    def _refresh_in_background(self, job: _Job[K, V], entry: _Entry[V]) -> Future[None]:
        """Starts a fetch of `job`'s key on a worker thread unless one is under way; the future of
        the one that runs (done once it ended, whatever its outcome). When no thread can be started,
        the failure is an outage's (logged once) and raises CredentialsUnavailable."""
        with self._lock:
            if entry.pending is not None:
                return entry.pending
            done: Future[None] = Future()
            done.set_running_or_notify_cancel()  # no waiter can cancel it for the others
            entry.pending = done

        def run() -> None:
            try:
                with entry.fetch_lock:
                    lease = entry.lease
                    now = self._clock()
                    recent_failure = entry.failing and now - entry.failed_at < self.retry_after_failure
                    if (lease is None or now >= lease.refresh_at) and not recent_failure:
                        # Logged; the current value serves until it expires.
                        with contextlib.suppress(CredentialsUnavailable):
                            self._renew(job, entry)
            finally:
                with self._lock:
                    entry.pending = None
                done.set_result(None)

        try:
            self._spawn(run)
        except Exception as exc:  # no thread to be had (RuntimeError: can't start new thread)
            with self._lock:
                if entry.pending is done:
                    entry.pending = None
            if not done.done():
                done.set_result(None)
            # An outage like a failed fetch (one log line; requests fail at once, the first after
            # the pause tries again), never a 500 with a traceback.
            reason = f"no thread to fetch it ({type(exc).__name__})"
            self._failed(job, entry, reason)
            raise CredentialsUnavailable(job.backend, self.credential, reason) from None
        return done

    def _failed(self, job: _Job[K, V], entry: _Entry[V], reason: str) -> None:
        """Records a failure to get a value; the first of an outage is logged."""
        entry.failed_at = self._clock()
        entry.last_error = reason
        entry.failures += 1
        if not entry.failing:
            entry.failing = True
            log.error(f"{self.event}_unavailable", **job.log_fields(), reason=reason)

    def _on_timer(self, job: _Job[K, V], entry: _Entry[V], generation: int) -> None:
        with self._lock:
            if entry.timer != generation or self._entries.get(job.key) is not entry:
                return  # superseded by a later timer, or forgotten
        now = self._clock()
        configured = entry.configured > 0 and entry.configured == _generation
        if not configured and now - entry.used_at > self.keep_warm:
            # Not the current configuration's, and unused: forgotten (a later request fetches anew).
            with self._lock:
                gone = self._entries.get(job.key) is entry
                if gone:
                    del self._entries[job.key]
            if gone:
                self._forgotten((job.key,))
            return
        lease = entry.lease
        if lease is not None and not entry.failing and now < lease.refresh_at:
            self._arm(job, entry, lease.refresh_at - now + 0.01)  # woken early
            return
        with contextlib.suppress(CredentialsUnavailable):  # logged; requests try again
            self._refresh_in_background(job, entry)

    def _arm(self, job: _Job[K, V], entry: _Entry[V], delay: float) -> None:
        if self._schedule is None:
            return
        with self._lock:
            entry.timer += 1
            generation = entry.timer
        # The timer holds the cache weakly: a cache nobody holds any more (a test's) stops refreshing.
        cache = weakref.ref(self)

        def wake() -> None:
            alive = cache()
            if alive is not None:
                alive._on_timer(job, entry, generation)

        self._schedule(delay, wake)

    def _renew(self, job: _Job[K, V], entry: _Entry[V]) -> Lease[V]:
        """A new value (fetch_lock held). Logs the first failure of an outage and its end."""
        started = self._clock()
        try:
            value, lifetime = job.fetch()
        except FetchError as exc:
            reason = scrub(str(exc), job.secrets)
        except Exception as exc:  # a bug or an unexpected transport error: still one line, no secret
            reason = f"{self.credential} request failed: {type(exc).__name__}"
        else:
            if lifetime > 0:
                margin = refresh_margin(lifetime, self.refresh_before, self.short_lifetime_fraction)
                lease = Lease(value, started + lifetime, started + lifetime - margin)
                entry.lease = lease
                entry.failures = 0
                if entry.failing:
                    entry.failing = False
                    log.info(f"{self.event}_recovered", **job.log_fields())
                self._arm(job, entry, lease.refresh_at - self._clock())
                return lease
            reason = "the answer was already expired"
        self._failed(job, entry, reason)
        # Tried again in the background (while the key is configured or in use), so that an outage
        # ends without a request waiting on the endpoint; less often the longer it lasts.
        backoff = self.retry_after_failure * 2 ** min(entry.failures - 1, 16)
        self._arm(job, entry, max(self.retry_after_failure, min(backoff, MAX_RETRY_DELAY)) + 0.05)
        raise CredentialsUnavailable(job.backend, self.credential, reason)


@dataclass(frozen=True)
class _Job(Generic[K, V]):
    """What a fetch of one key needs, and how to log it."""

    backend: str
    key: K
    fetch: Callable[[], tuple[V, float]]
    names: dict[str, str]
    secrets: tuple[str, ...]

    def log_fields(self) -> dict[str, str]:
        """The backend (when the caller knows it) and the names, never a secret."""
        fields = {"backend": self.backend} if self.backend else {}
        return {**fields, **self.names}
