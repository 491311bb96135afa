"""Writes status to the API server: the leader's job. After every compile, every change in what
the Envoys of a fleet applied, and every few seconds (the other replicas' Envoys, ack_reports.py),
it computes the status each object should have (status.py) and merge-patches the status
subresource of those whose status differs, nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import Any

import structlog

from ..compile import CompileResult
from ..keys import ResourceKey
from ..resources import ResourceSet
from ..sources.kube_kinds import BY_KIND, POLICY_STATUS_KINDS
from ..sources.kubernetes import KubernetesSource
from ..xds.acks import FleetSync
from .ack_reports import AckReports, merge
from .api import KubeAPI, KubeError
from .status import (
    Current,
    entries_ours,
    now_rfc3339,
    released_gateway_status,
    status_updates,
    written_by_us,
)

log = structlog.get_logger(__name__)

# The kinds whose status is a list of entries, each controller's own (an InferencePool's parents, a
# policy's ancestors).
_SHARED_KINDS = ("InferencePool", *POLICY_STATUS_KINDS)


class StatusWriter:
    def __init__(
        self,
        api: KubeAPI,
        source: KubernetesSource,
        sync: Callable[[str], FleetSync],
        is_leader: Callable[[], bool],
        *,
        reports: AckReports | None = None,
        # Long enough for a push to be ACKed before status is written: not a Pending and a
        # Programmed write for every edit.
        debounce: float = 1.0,
        poll: float = 5.0,
    ) -> None:
        self.api = api
        self.source = source
        self.sync = sync  # this replica's view of a fleet
        self.is_leader = is_leader
        self.reports = reports
        self.debounce = debounce
        self.poll = poll
        self.writes = 0
        self._latest: tuple[CompileResult, ResourceSet] | None = None
        self._read: dict[ResourceKey, str] = {}  # this round's: the version each status was read at
        self._dirty = asyncio.Event()

    def compiled(self, result: CompileResult, resources: ResourceSet) -> None:
        self._latest = (result, resources)
        self._dirty.set()

    def poke(self, _fleet: str = "") -> None:
        """Something status depends on changed (a fleet's ACKs, leadership)."""
        self._dirty.set()

    def _current(self, key: ResourceKey) -> Current | None:
        """The object as last seen, and its version kept for the round's write (_shared_version):
        a list of other controllers' entries is written over the version it was read at."""
        stored = self.source.status_of(key)
        if stored is None:
            return None
        self._read[key] = stored.resource_version
        return Current(stored.generation, stored.status)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # The other replicas' Envoys change nothing here: look again every `poll` seconds.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.poll)
            await asyncio.sleep(self.debounce)
            self._dirty.clear()
            if self._latest is None or not self.is_leader():
                continue
            result, resources = self._latest
            others: list[dict[str, FleetSync]] = []
            if self.reports is not None:
                try:
                    others = await asyncio.to_thread(self.reports.others)
                except KubeError as exc:
                    log.warning("ack_reports_unreadable", error=exc.message)
                    continue  # Programmed from half the fleet would be wrong: wait for the next round
            sync = functools.partial(self._whole_fleet, others)
            self._read = {}
            now = now_rfc3339()
            controller = self.source.controller_name
            with_ours = [
                key
                for kind in _SHARED_KINDS
                for key, stored in self.source.held(kind)
                if entries_ours(kind, stored.status, controller)
            ]
            updates = status_updates(result, resources, sync, self._current, now, with_ours, controller)
            # Leadership looked at again before each write: a round's writes can outlast a lease.
            for key, status in updates.items():
                if self.is_leader():
                    await asyncio.to_thread(self._write, key, status, self._shared_version(key))
            for key, status, version in self._released(resources, now):
                if self.is_leader():
                    await asyncio.to_thread(self._write, key, status, version)

    def _released(self, resources: ResourceSet, now: str) -> list[tuple[ResourceKey, dict[str, Any], str]]:
        """The Gateways no longer ours (their class changed, or names none) whose status is still the
        one we write (written_by_us): each one's back to the Gateway API's initial status, written
        only over the version seen (another controller writing first wins: a 409). Read from the
        objects, not remembered: a failed write is tried again, a new leader finds them too."""
        ours = {key for key in (*resources.items, *resources.bad_keys) if key.kind == "Gateway"}
        return [
            (key, released_gateway_status(stored.generation, now), stored.resource_version)
            for key, stored in self.source.held("Gateway")
            if key not in ours and written_by_us(stored.status)
        ]

    def _shared_version(self, key: ResourceKey) -> str | None:
        """The version a status other controllers write too is written over: the one its entries were
        read at (an InferencePool's parents, a policy's ancestors: lists a merge patch replaces whole;
        another's entry changed since is not lost, a 409 and the next round's read has it); None for
        the rest, written whatever the version."""
        return self._read.get(key) if key.kind in _SHARED_KINDS else None

    def _whole_fleet(self, others: list[dict[str, FleetSync]], fleet: str) -> FleetSync:
        return merge(self.sync(fleet), (report[fleet] for report in others if fleet in report))

    def _write(self, key: ResourceKey, status: dict[str, object], version: str | None = None) -> None:
        """Merge-patches the object's status; over `version` only, when given."""
        kind = BY_KIND[key.kind]
        path = kind.path(key.namespace, key.name) + "/status"
        patch: dict[str, Any] = {"status": status}
        if version is not None:
            patch["metadata"] = {"resourceVersion": version}
        try:
            written = self.api.merge_patch(path, patch)
        except KubeError as exc:
            if exc.status == 409 and version is not None:  # changed since: looked at again next round
                log.debug("status_write_conflict", resource=str(key))
            elif exc.status != 404:  # deleted meanwhile: nothing to report
                log.warning("status_write_failed", resource=str(key), error=exc.message)
            return
        self.writes += 1
        # What the watch will report shortly: known now, so the next round does not write it again.
        self.source.record_status(key, written.get("status") or {})
        log.debug("status_written", resource=str(key))
