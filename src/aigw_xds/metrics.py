"""The control plane's state for Prometheus (text exposition format 0.0.4), at GET /metrics on
`serve --health-listen`: per fleet, its connected nodes, how many applied its current
configuration and how many rejected part of it, whether it is withheld; NACKs and publishes as
counters; the last reading of the configuration (errors, how long it took); the process's memory.

Pure: `samples` reads the state it is given, `render` writes the text."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .xds.acks import FleetSync

# name -> (type, help)
FAMILIES: dict[str, tuple[str, str]] = {
    "aigw_xds_fleet_nodes": ("gauge", "Nodes connected to the fleet (Envoys, or translator processes)."),
    "aigw_xds_fleet_nodes_applied": ("gauge", "Connected nodes that applied the fleet's current configuration."),
    "aigw_xds_fleet_nodes_rejecting": ("gauge", "Connected nodes whose last answer for a type was a NACK."),
    "aigw_xds_fleet_withheld": (
        "gauge",
        "1 while the fleet is withheld for its errors (its nodes are answered nothing).",
    ),
    "aigw_xds_streams": ("gauge", "Open ADS streams by protocol (sotw, delta)."),
    "aigw_xds_nacks_total": ("counter", "NACKs received, by fleet and type."),
    "aigw_xds_snapshot_publishes_total": ("counter", "New configurations published, by fleet."),
    "aigw_xds_configuration_reads_total": ("counter", "Readings of the configuration applied (start, edits)."),
    "aigw_xds_configuration_errors": ("gauge", "Errors of the last reading of the configuration."),
    "aigw_xds_configuration_apply_seconds": ("gauge", "How long the last reading took to compile and publish."),
    "aigw_xds_process_resident_memory_bytes": ("gauge", "Resident memory of the control plane's process."),
}


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(frozen=True)
class State:
    """What the samples are read from (one scrape's view)."""

    fleets: Mapping[str, FleetSync]  # every fleet with a configuration or nodes
    withheld: Iterable[str]
    streams_by_mode: Mapping[str, int]
    nacks: Mapping[tuple[str, str], int]  # (fleet, short type) -> count
    publishes: Mapping[str, int]
    reads: int
    errors: int
    apply_seconds: float
    rss_bytes: int


def samples(state: State) -> list[Sample]:
    out = []
    withheld = set(state.withheld)
    for fleet in sorted(set(state.fleets) | withheld):
        sync = state.fleets.get(fleet, FleetSync("", 0, 0))
        labels = (("fleet", fleet),)
        rejecting = len({rejection.node for rejection in sync.rejections})
        out += [
            Sample("aigw_xds_fleet_nodes", labels, sync.connected),
            Sample("aigw_xds_fleet_nodes_applied", labels, sync.applied),
            Sample("aigw_xds_fleet_nodes_rejecting", labels, rejecting),
            Sample("aigw_xds_fleet_withheld", labels, 1 if fleet in withheld else 0),
        ]
    for mode in ("sotw", "delta"):
        out.append(Sample("aigw_xds_streams", (("protocol", mode),), state.streams_by_mode.get(mode, 0)))
    for (fleet, kind), count in sorted(state.nacks.items()):
        out.append(Sample("aigw_xds_nacks_total", (("fleet", fleet), ("type", kind)), count))
    for fleet, count in sorted(state.publishes.items()):
        out.append(Sample("aigw_xds_snapshot_publishes_total", (("fleet", fleet),), count))
    out += [
        Sample("aigw_xds_configuration_reads_total", (), state.reads),
        Sample("aigw_xds_configuration_errors", (), state.errors),
        Sample("aigw_xds_configuration_apply_seconds", (), state.apply_seconds),
        Sample("aigw_xds_process_resident_memory_bytes", (), state.rss_bytes),
    ]
    return out


def render(all_samples: Iterable[Sample]) -> str:
    """The text format: each family's HELP and TYPE once, then its samples."""
    by_name: dict[str, list[Sample]] = {}
    for sample in all_samples:
        by_name.setdefault(sample.name, []).append(sample)
    lines = []
    for name, (kind, help_text) in FAMILIES.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for sample in by_name.get(name, ()):
            labels = ",".join(f'{key}="{_escaped(value)}"' for key, value in sample.labels)
            lines.append(f"{name}{{{labels}}} {_number(sample.value)}" if labels else f"{name} {_number(sample.value)}")
    return "\n".join(lines) + "\n"


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
