"""Whether the Envoys of a fleet have applied its current snapshot (pure): what a Gateway's
Programmed condition reports. The same per-resource state CSDS shows (streams.TypeState)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from . import type_urls
from .cache import Snapshot
from .streams import TypeState


@dataclass(frozen=True)
class Rejection:
    node: str
    type: str  # short type name: Cluster, Listener...
    names: tuple[str, ...]
    error: str


@dataclass(frozen=True)
class FleetSync:
    version: str  # the snapshot's version ("" without one)
    connected: int
    applied: int  # nodes that ACKed every resource of the snapshot they subscribe to
    rejections: tuple[Rejection, ...] = ()
    refused: tuple[str, ...] = ()  # "<node>: <why>" of nodes refused the configuration lately

    @property
    def programmed(self) -> bool:
        return self.connected > 0 and self.applied == self.connected


def fleet_sync(
    snapshot: Snapshot | None, nodes: Iterable[tuple[str, dict[str, TypeState]]], refused: tuple[str, ...] = ()
) -> FleetSync:
    """The sync state of a fleet's nodes (node id, per-type stream state) against its snapshot."""
    connected = applied = 0
    rejections: list[Rejection] = []
    for node, types in nodes:
        connected += 1
        node_applied = snapshot is not None
        for type_url, state in types.items():
            if snapshot is None or type_url not in type_urls.ORDER:
                continue
            current = snapshot.of_type(type_url)
            rejected: list[str] = []
            for name in state.subscribed(snapshot):
                resource = current.get(name)
                if resource is None:
                    continue  # asked for but not ours (e.g. EDS for an unknown cluster)
                version, status = state.status_of(name)
                if status == "ERROR":
                    rejected.append(name)
                if version != resource.version or status != "SYNCED":
                    node_applied = False
            if rejected:
                short = type_urls.SHORT.get(type_url, type_url)
                rejections.append(Rejection(node, short, tuple(sorted(rejected)), state.error.strip()))
        applied += node_applied
    return FleetSync(snapshot.version if snapshot else "", connected, applied, tuple(rejections), refused)
