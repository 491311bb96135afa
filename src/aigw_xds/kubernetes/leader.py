"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it: the
leader renews the Lease every retry period; another replica takes it over once it has seen the
same record unchanged for a whole lease duration (timed on its own clock, so clocks that disagree
between nodes do not matter); a leader that cannot renew within the renew deadline stops leading
before anyone may take over. Defaults are client-go's: 15 s lease, 10 s renew deadline, 2 s retry.

Only the status writer needs a leader: every replica serves xDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import structlog

from ..sources.kube_kinds import LEASE
from .api import KubeAPI, KubeError

log = structlog.get_logger(__name__)


def default_identity() -> str:
    """The pod's name (from the downward API) or the host name, plus a random suffix so that two
    processes on one host are two candidates."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        api: KubeAPI,
        namespace: str,
        name: str = "aigw-xds",
        *,
        identity: str | None = None,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.leading = asyncio.Event()
        self._observed: tuple[Any, ...] = ()
        self._observed_at = 0.0
        self._renewed_at = 0.0  # monotonic time of our last successful renewal

    @property
    def is_leader(self) -> bool:
        """Leading, and renewed within the renew deadline: a leader whose renewals hang stops
        acting as one before another replica may take the Lease over."""
        return self.leading.is_set() and time.monotonic() - self._renewed_at < self.renew_deadline

    async def run(self, stop: asyncio.Event) -> None:
        lease = f"{self.namespace}/{self.name}"
        failing = False  # said once per outage, and its end once
        while not stop.is_set():
            held: bool | None  # None: could not tell (the API failed, or a write raced ours)
            sent = time.monotonic()  # a renewal counts from when it was asked for
            try:
                held = await asyncio.to_thread(self._try_acquire_or_renew)
            except KubeError as exc:
                held = None
                if not failing:
                    log.warning("leader_election_failed", lease=lease, error=exc.message, retrying=self.retry_period)
                failing = True
            else:
                if failing and held is not None:  # None: a write raced ours, the API still unproven
                    log.info("leader_election_recovered", lease=lease)
                    failing = False
            leading = self.leading.is_set()
            if held:
                self._renewed_at = sent
                if not leading:
                    log.info("leader_elected", identity=self.identity, lease=lease)
                    self.leading.set()
            elif leading and (held is False or time.monotonic() - self._renewed_at > self.renew_deadline):
                # Another replica holds it, or it could not be renewed in time.
                log.warning("leader_lost", identity=self.identity, lease=lease)
                self.leading.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.retry_period)
        if self.leading.is_set():
            self.leading.clear()
            try:
                await asyncio.to_thread(self._release)
            except KubeError as exc:
                log.warning("leader_release_failed", error=exc.message)

    @property
    def _timeout(self) -> float:
        """A request that has not answered within the renew deadline is a failed renewal."""
        return max(self.renew_deadline / 2, 0.5)

    def _path(self, name: str | None = None) -> str:
        return LEASE.path(self.namespace, name)

    def _try_acquire_or_renew(self) -> bool | None:
        now = _micro_time()
        try:
            lease = self.api.get(self._path(self.name), timeout=self._timeout)
        except KubeError as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": LEASE.api_version,
                "kind": LEASE.kind,
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, now, 0),
            }
            try:
                self.api.request("POST", self._path(), body=body, timeout=self._timeout)
            except KubeError as exc2:
                if exc2.status == 409:  # another replica created it first
                    return None
                raise
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"), spec.get("leaseTransitions"))
        monotonic = time.monotonic()
        if record != self._observed:
            self._observed, self._observed_at = record, monotonic
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and monotonic - self._observed_at < duration:
            return False  # held by another replica that renewed within the lease duration
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            acquired = spec.get("acquireTime") or now
        else:
            acquired, transitions = now, transitions + 1
        lease["spec"] = self._spec(acquired, now, transitions)
        try:
            self.api.request("PUT", self._path(self.name), body=lease, timeout=self._timeout)
        except KubeError as exc:
            if exc.status == 409:  # someone else wrote it since our read
                return None
            raise
        return True

    def _spec(self, acquired: str, renewed: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "acquireTime": acquired,
            "renewTime": renewed,
            "leaseTransitions": transitions,
        }

    def _release(self) -> None:
        """Give the Lease up on shutdown, so the next leader need not wait a lease duration."""
        lease = self.api.get(self._path(self.name), timeout=self._timeout)  # a hung API must not hold a stop
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return
        spec.update({"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": _micro_time()})
        lease["spec"] = spec
        self.api.request("PUT", self._path(self.name), body=lease, timeout=self._timeout)
        log.info("leader_released", identity=self.identity)
