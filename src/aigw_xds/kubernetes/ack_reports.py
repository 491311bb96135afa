"""What the Envoys connected to each replica applied, shared through the API so that the leader's
Programmed condition counts the whole fleet, not only the Envoys that happen to be connected to it.

Each replica keeps one Lease of its own (`aigw-xds-acks-<identity>`, labelled
aigw-xds.io/ack-report) whose annotation holds, per fleet, the snapshot version it serves, how many
of its nodes are connected and how many applied that version, and their rejections; it renews it
on every change (debounced) and every 10 s. The leader lists these Leases when it computes status,
ignores those not renewed for 30 s (a replica that died) and deletes them after 5 minutes, timed on
its own clock from when it saw a report change (the replicas' clocks may disagree). Versions
are deterministic, so replicas that agree on the configuration report the same version; nodes of a
replica that serves another version count as connected but not applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

import orjson
import structlog

from ..sources.kube_kinds import LEASE
from ..xds.acks import FleetSync, Rejection
from .api import KubeAPI, KubeError

log = structlog.get_logger(__name__)

LABEL = "aigw-xds.io/ack-report"
ANNOTATION = "aigw-xds.io/fleets"
HEARTBEAT_S = 10.0
EXPIRED_S = 30.0
FORGOTTEN_S = 300.0


def report_name(identity: str) -> str:
    """A Lease name (DNS subdomain) for the replica's identity."""
    name = re.sub(r"[^a-z0-9.-]+", "-", identity.lower()).strip("-.")
    return f"aigw-xds-acks-{name}"[:253].rstrip("-.")


def encode(views: Mapping[str, FleetSync]) -> str:
    return orjson.dumps(
        {
            fleet: {
                "version": sync.version,
                "connected": sync.connected,
                "applied": sync.applied,
                "rejections": [[r.node, r.type, list(r.names), r.error[:512]] for r in sync.rejections[:5]],
                "refused": [reason[:512] for reason in sync.refused[:3]],
            }
            for fleet, sync in sorted(views.items())
        }
    ).decode()


def decode(text: str) -> dict[str, FleetSync]:
    try:
        data = orjson.loads(text)
    except ValueError:
        return {}
    out = {}
    for fleet, view in data.items() if isinstance(data, dict) else ():
        try:
            rejections = tuple(Rejection(str(n), str(t), tuple(names), str(e)) for n, t, names, e in view["rejections"])
            refused = tuple(str(reason) for reason in view.get("refused", ()))
            out[str(fleet)] = FleetSync(
                str(view["version"]), int(view["connected"]), int(view["applied"]), rejections, refused
            )
        except (KeyError, TypeError, ValueError):
            continue
    return out


def merge(own: FleetSync, others: Iterable[FleetSync]) -> FleetSync:
    """The fleet as a whole, against the version this replica serves."""
    connected, applied, rejections, refused = own.connected, own.applied, list(own.rejections), list(own.refused)
    for other in others:
        connected += other.connected
        refused += other.refused
        if other.version == own.version:
            applied += other.applied
            rejections += other.rejections
    return FleetSync(own.version, connected, applied, tuple(rejections), tuple(refused))


class AckReports:
    """This replica's report (written) and the other replicas' (read by the leader)."""

    def __init__(self, api: KubeAPI, namespace: str, identity: str, views: Callable[[], dict[str, FleetSync]]) -> None:
        self.api = api
        self.namespace = namespace
        self.identity = identity
        self.name = report_name(identity)
        self.views = views
        self._changed = asyncio.Event()
        self._written = ""
        self._written_at = 0.0
        # Per report Lease: its renewTime as last read and when (our monotonic clock) it changed. Ages
        # are timed on this clock, as leader election does: replicas' clocks may disagree.
        self._seen: dict[str, tuple[str, float]] = {}

    def poke(self, _fleet: str = "") -> None:
        self._changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(self._changed.wait(), HEARTBEAT_S)
                if not stop.is_set():
                    await asyncio.sleep(1.0)  # an edit reaching a fleet is many ACKs: one write
            except TimeoutError:
                pass
            if stop.is_set():
                break
            self._changed.clear()
            text = encode(self.views())
            if text == self._written and time.monotonic() - self._written_at < HEARTBEAT_S:
                continue
            try:
                await asyncio.to_thread(self._write, text)
                self._written, self._written_at = text, time.monotonic()
            except KubeError as exc:
                log.warning("ack_report_write_failed", lease=f"{self.namespace}/{self.name}", error=exc.message)
        with contextlib.suppress(KubeError):
            await asyncio.to_thread(self.api.request, "DELETE", LEASE.path(self.namespace, self.name))

    def _write(self, text: str) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "apiVersion": LEASE.api_version,
            "kind": LEASE.kind,
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {LABEL: "true"},
                "annotations": {ANNOTATION: text},
            },
            "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": int(EXPIRED_S), "renewTime": now},
        }
        try:
            self.api.merge_patch(LEASE.path(self.namespace, self.name), body)
        except KubeError as exc:
            if exc.status != 404:
                raise
            self.api.request("POST", LEASE.path(self.namespace), body=body)

    def others(self) -> list[dict[str, FleetSync]]:
        """The live reports of the other replicas (the leader calls this from a thread); reports
        of replicas gone for minutes are deleted."""
        listed = self.api.get(LEASE.path(self.namespace), [("labelSelector", LABEL)])
        now = time.monotonic()
        reports = []
        seen: dict[str, tuple[str, float]] = {}
        for lease in listed.get("items") or []:
            name = str((lease.get("metadata") or {}).get("name"))
            if name == self.name:
                continue
            renewed = str((lease.get("spec") or {}).get("renewTime") or "")
            before = self._seen.get(name)
            changed_at = before[1] if before is not None and before[0] == renewed else now
            seen[name] = (renewed, changed_at)
            age = now - changed_at
            if age > FORGOTTEN_S:
                with contextlib.suppress(KubeError):
                    self.api.request("DELETE", LEASE.path(self.namespace, name))
                continue
            if age <= EXPIRED_S:
                annotations = (lease.get("metadata") or {}).get("annotations") or {}
                reports.append(decode(str(annotations.get(ANNOTATION) or "{}")))
        self._seen = seen
        return reports
