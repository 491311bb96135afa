#!/usr/bin/env python3
"""What Kubernetes mode pays while a Gateway has an invalid object: bench_compile's configuration
with one more route naming a backend that does not exist. Each edit (another route's model renamed)
is applied by a controller as `serve --kubernetes` runs it (exclude_invalid: the Gateway compiled
again without the invalid route, compile/excluding.py) and by one as file mode runs it (the
Gateway held at its last good configuration); the first apply of each is a replica starting.

Usage: hack/bench_excluding.py [--routes 1000 10000] [--backends 2000] [--edits 5]
Prints a Markdown table; figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_compile import ROUTES_PER_FILE, write_config, write_routes

from aigw_xds.controller import Controller
from aigw_xds.logging_setup import configure
from aigw_xds.sources.files import FileSource
from aigw_xds.xds.build import BuildSettings
from aigw_xds.xds.cache import SnapshotCache

INVALID = """---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: invalid, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
    - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: nowhere}]}]
      backendRefs: [{name: no-such-backend}]
"""
HEADER = ("routes", "mode", "start s", "edit ms (median)", "edit ms (max)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--backends", type=int, default=2000)
    parser.add_argument("--edits", type=int, default=5)
    args = parser.parse_args()
    configure("critical", "console")  # the controller's lines (the route's error each apply) are not the table
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER), flush=True)
    for routes in args.routes:
        for mode, exclude in (("Kubernetes (left out)", True), ("files (last good held)", False)):
            print(row(routes, args.backends, args.edits, mode, exclude), flush=True)


def row(routes: int, backends: int, edits: int, mode: str, exclude: bool) -> str:
    directory = Path(tempfile.mkdtemp(prefix="aigw-bench-"))
    try:
        write_config(directory, routes, backends)
        source = FileSource(directory)
        controller = Controller(SnapshotCache(), BuildSettings(), b"s" * 32, exclude_invalid=exclude)
        if not exclude:  # file mode holds a last good configuration from before the mistake
            controller.apply(source.load())
        (directory / "invalid.yaml").write_text(INVALID)
        t0 = time.perf_counter()
        controller.apply(source.load())
        start = time.perf_counter() - t0
        times = []
        for i in range(edits):
            edited = routes // 2 + i * 137
            write_routes(directory, edited - edited % ROUTES_PER_FILE, routes, backends, edited=edited)
            t0 = time.perf_counter()
            controller.apply(source.load())
            times.append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    cells = [routes, mode, f"{start:.2f}", f"{statistics.median(times) * 1000:.0f}", f"{max(times) * 1000:.0f}"]
    return "| " + " | ".join(str(c) for c in cells) + " |"


if __name__ == "__main__":
    main()
