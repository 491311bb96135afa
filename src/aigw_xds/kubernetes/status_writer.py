"""Writes status to the API server: the leader's job. After every compile, every change in what
the Envoys of a fleet applied, and every few seconds (the other replicas' Envoys, ack_reports.py),
it computes the status each object should have (status.py) and merge-patches the status
subresource of those whose status differs, nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from ..compile import CompileResult
from ..keys import ResourceKey
from ..resources import ResourceSet
from ..sources.kube_kinds import BY_KIND
from ..sources.kubernetes import KubernetesSource
from ..xds.acks import FleetSync
from .ack_reports import AckReports, merge
from .api import KubeAPI, KubeError
from .status import Current, now_rfc3339, released_gateway_status, status_updates

log = structlog.get_logger(__name__)


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
        self._dirty = asyncio.Event()
        # Per Gateway of ours, its status when this replica last wrote statuses as leader.
        self._ours: dict[ResourceKey, Mapping[str, Any]] = {}

    def compiled(self, result: CompileResult, resources: ResourceSet) -> None:
        self._latest = (result, resources)
        self._dirty.set()

    def poke(self, _fleet: str = "") -> None:
        """Something status depends on changed (a fleet's ACKs, leadership)."""
        self._dirty.set()

    def _current(self, key: ResourceKey) -> Current | None:
        stored = self.source.status_of(key)
        return Current(stored.generation, stored.status) if stored is not None else None

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
            now = now_rfc3339()
            updates = status_updates(result, resources, sync, self._current, now)
            updates.update(self._released(resources, now))
            for key, status in updates.items():
                await asyncio.to_thread(self._write, key, status)
            gateways = ((key, self.source.status_of(key)) for key in _gateways(resources))
            self._ours = {key: stored.status for key, stored in gateways if stored is not None}

    def _released(self, resources: ResourceSet, now: str) -> dict[ResourceKey, dict[str, Any]]:
        """The Gateways that were ours at the last round and are no longer: each one's status back to
        the Gateway API's initial one, unless another controller wrote its own since (it no longer
        holds what it held while ours)."""
        out: dict[ResourceKey, dict[str, Any]] = {}
        ours = _gateways(resources)
        for key, status in self._ours.items():
            stored = self.source.status_of(key) if key not in ours else None
            if stored is not None and stored.status == status and status.get("conditions"):
                out[key] = released_gateway_status(stored.generation, now)
        return out

    def _whole_fleet(self, others: list[dict[str, FleetSync]], fleet: str) -> FleetSync:
        return merge(self.sync(fleet), (report[fleet] for report in others if fleet in report))

    def _write(self, key: ResourceKey, status: dict[str, object]) -> None:
        kind = BY_KIND[key.kind]
        path = kind.path(key.namespace, key.name) + "/status"
        try:
            written = self.api.merge_patch(path, {"status": status})
        except KubeError as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report
                log.warning("status_write_failed", resource=str(key), error=exc.message)
            return
        self.writes += 1
        # What the watch will report shortly: known now, so the next round does not write it again.
        self.source.record_status(key, written.get("status") or {})
        log.debug("status_written", resource=str(key))


def _gateways(resources: ResourceSet) -> set[ResourceKey]:
    """The Gateways of our classes, valid or not (the source reads no other)."""
    return {key for key in (*resources.items, *resources.bad_keys) if key.kind == "Gateway"}
