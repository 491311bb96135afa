#!/usr/bin/env python3
"""Benchmark the control plane's pipeline on large configurations: load (read + parse + validate),
compile, build and serialize, then one-route edits (each rewrites one route's model in one file;
the pipeline runs again with what the control plane keeps: the file source, compile memo, packer,
the fleet's last build and snapshot). The edit column is the median of EDITS edits.

Usage: hack/bench_compile.py [--routes 1000 10000] [--backends 2000] [--route-scopes-from RULES]
Prints a Markdown table; run it on an idle machine. Figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from aigw_contract import TRANSLATORS_FLEET
from aigw_xds.compile import compile_resources
from aigw_xds.compile.incremental import CompileMemo
from aigw_xds.controller import GC_THRESHOLDS, collector_paused
from aigw_xds.sources.files import FileSource
from aigw_xds.xds.build import BuildSettings, build_fleet, translator_fleet
from aigw_xds.xds.cache import Packer, Snapshot, make_snapshot

GATEWAY = """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: aigw
  listeners: [{name: http, protocol: HTTP, port: 8080}]
"""
ROUTES_PER_FILE = 100
SETTINGS = BuildSettings()  # one for every build, as the control plane has (main: --route-scopes-from)


def backends_text(backends: int) -> str:
    return "".join(
        f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: b{b}, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: b{b}, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: b{b}, namespace: default}}
spec:
  endpoints: [{{ip: {{address: 10.{b // 250}.{b % 250}.1, port: 8000}}}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: b{b}, namespace: default}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: b{b}}}]
  type: APIKey
  apiKey: {{secretRef: {{name: b{b}}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: b{b}, namespace: default}}
stringData: {{apiKey: sk-bench-{b}}}
"""
        for b in range(backends)
    )


def routes_text(first: int, count: int, backends: int, edited: int | None = None, gateway: str = "gw") -> str:
    out = []
    for r in range(first, first + count):
        model = f"model-{r}" + ("-edited" if r == edited else "")
        out.append(
            f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: r{r}, namespace: default}}
spec:
  parentRefs: [{{name: {gateway}}}]
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {model}}}]}}]
      backendRefs: [{{name: b{r % backends}}}, {{name: b{(r + 1) % backends}, priority: 1}}]
"""
        )
    return "".join(out)


def write_routes(directory: Path, first: int, routes: int, backends: int, edited: int | None = None) -> None:
    count = min(ROUTES_PER_FILE, routes - first)
    (directory / f"routes-{first:06d}.yaml").write_text(routes_text(first, count, backends, edited))


def write_config(directory: Path, routes: int, backends: int) -> None:
    """The benchmark's configuration: the Gateway, the backends and the routes' files."""
    (directory / "gateway.yaml").write_text(GATEWAY)
    (directory / "backends.yaml").write_text(backends_text(backends))
    for first in range(0, routes, ROUTES_PER_FILE):
        write_routes(directory, first, routes, backends)


EDITS = 8


def run(source: FileSource, memo: CompileMemo, packer: Packer, previous: dict | None = None) -> dict:
    t0 = time.perf_counter()
    resources = source.load()
    t1 = time.perf_counter()
    with collector_paused():  # as the controller compiles
        result = compile_resources(resources, memo=memo)
        t2 = time.perf_counter()
        assert not result.errors, result.errors[:3]
        fleet = build_fleet(result.gateways["default/gw"], SETTINGS, previous["fleet"] if previous else None)
        t3 = time.perf_counter()
        snapshot = make_snapshot("default/gw", fleet, packer, previous["snapshot"] if previous else None)
        t4 = time.perf_counter()
        # What translator processes get (the control plane makes it after the fleets; not timed).
        translators = translator_fleet(result.gateways)
        served = make_snapshot(TRANSLATORS_FLEET, translators, packer, previous["translators"] if previous else None)
        memo.served({gateway.key: gateway.translator_served for gateway in result.gateways.values()})
        packer.keep()
    return {
        "load": t1 - t0,
        "compile": t2 - t1,
        "build": t3 - t2,
        "serialize": t4 - t3,
        "total": t4 - t0,
        "bytes": sum(len(r.packed) for by in snapshot.resources.values() for r in by.values()),
        "fleet": fleet,
        "snapshot": snapshot,
        "translators": served,
    }


HEADER = (
    "routes",
    "backends",
    "load s",
    "compile s",
    "build s",
    "serialize s",
    "total s",
    "Envoy config MB",
    "one-route edit ms",
    "resources changed",
    "translator config MB",
    "translator KB per edit",
    "peak RSS MB",
)


def main() -> None:
    global SETTINGS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Prints a Markdown table.")
    parser.add_argument(
        "--routes", type=int, nargs="+", default=[1000, 10000], help="route counts, one row each (default 1000 10000)"
    )
    parser.add_argument("--backends", type=int, default=2000, help="backends the routes share (default 2000)")
    parser.add_argument(
        "--route-scopes-from",
        type=int,
        default=SETTINGS.route_scopes_from,
        help=f"split the listener's routes into scopes from this many rules (default {SETTINGS.route_scopes_from})",
    )
    parser.add_argument("--row", action="store_true", help=argparse.SUPPRESS)  # one size, its row only
    args = parser.parse_args()
    SETTINGS = replace(SETTINGS, route_scopes_from=args.route_scopes_from)
    if args.row:
        print(row(args.routes[0], args.backends), flush=True)
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER), flush=True)
    for routes in args.routes:
        # Each size in a process of its own: its peak RSS is its own, not the larger of the sizes
        # run so far (and the caches a control plane keeps hold only this configuration).
        command = [sys.executable, __file__, "--row", "--routes", str(routes), "--backends", str(args.backends)]
        command += ["--route-scopes-from", str(args.route_scopes_from)]
        subprocess.run(command, check=True)


def row(routes: int, backends: int) -> str:
    """One size's row of the table."""
    gc.set_threshold(*GC_THRESHOLDS)  # as the control plane runs
    directory = Path(tempfile.mkdtemp(prefix="aigw-bench-"))
    try:
        write_config(directory, routes, backends)
        source = FileSource(directory)
        gc.collect()
        memo, packer = CompileMemo(), Packer()  # as the control plane keeps them
        state = run(source, memo, packer)
        # Figures only: of the states, only the last is kept (as the control plane keeps them).
        first_compile = {k: v for k, v in state.items() if k not in ("fleet", "snapshot")}
        first_compile["translator bytes"] = _bytes(state["translators"], state["translators"].resources)
        edits, changed, translator_sent = [], 0, []
        for i in range(EDITS):
            edited = routes // 2 + i * 137
            write_routes(directory, edited - edited % ROUTES_PER_FILE, routes, backends, edited=edited)
            before, translators_before = state["snapshot"], state["translators"]
            state = run(source, memo, packer, state)
            edits.append(state["total"])
            if i == 0:
                changed = _changed(before, state["snapshot"])
            # What a delta stream of a translator sends for the edit: what changed.
            translator_sent.append(_bytes(state["translators"], _changes(translators_before, state["translators"])))
            del before, translators_before
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # ru_maxrss: KiB
    cells = [
        routes,
        backends,
        f"{first_compile['load']:.2f}",
        f"{first_compile['compile']:.2f}",
        f"{first_compile['build']:.2f}",
        f"{first_compile['serialize']:.2f}",
        f"{first_compile['total']:.2f}",
        f"{first_compile['bytes'] / 1e6:.1f}",
        f"{statistics.median(edits) * 1000:.0f}",
        changed,
        f"{first_compile['translator bytes'] / 1e6:.2f}",
        f"{statistics.median(translator_sent) / 1e3:.1f}",
        f"{peak_mb:.0f}",
    ]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _changes(before: Snapshot, after: Snapshot) -> dict[str, list[str]]:
    """The names of the resources an edit changed (or added), by type."""
    return {
        t: [n for n, r in by.items() if (was := before.of_type(t).get(n)) is None or was.version != r.version]
        for t, by in after.resources.items()
    }


def _bytes(snapshot: Snapshot, resources: Mapping[str, Iterable[str]]) -> int:
    """The bytes of `resources` (names by type) as packed in `snapshot`."""
    return sum(len(snapshot.resources[t][n].packed) for t, names in resources.items() for n in names)


def _changed(before: Snapshot, after: Snapshot) -> int:
    """How many resources an edit changed (or added)."""
    return sum(map(len, _changes(before, after).values()))


if __name__ == "__main__":
    main()
