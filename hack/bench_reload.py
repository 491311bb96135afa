#!/usr/bin/env python3
"""Hot reload through a real Envoy: the time from saving the YAML to Envoy serving the changed
route, and the requests lost meanwhile (the goal is none).

`aigw-xds run` (control plane, in-process translator, local Envoy) serves a Gateway whose rules go
to two fake OpenAI providers (separate processes): `steady`, never edited, and `edit-0 .. edit-<i>`.
Each edit adds the rule `edit-<i+1>` (alternating providers), so every edit brings a new route and a
new cluster with its endpoints, and rewrites the file in place as an editor does. The latency of an
edit runs from just before the write to the first 200 answer for the new model from the expected
provider, polled on its own connection every 2 ms; until then every answer must be a 404 (a 503
would mean the route reached Envoy before its cluster).

Meanwhile two clients send `steady` requests back to back, one over a keep-alive connection and
one opening a connection per request; any answer other than 200 from the steady provider, or a
connection error, counts as failed.

With --routes N the Gateway also holds N routes of bench_compile's shape (files of 100 routes, over
--backends backends at addresses nothing answers), so the edits are timed at that size: the run
serves the directory, and an edit still rewrites the one small file.

Usage: hack/bench_reload.py [--edits 20] [--settle 0.3] [--routes 0 [--backends 2000]]
Prints the machine, a Markdown table and the failed-request count. Figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import bench_compile

from aigw_xds.envoy.process import envoy_binary
from aigw_xds.processes import free_port

KEY = "sk-bench-reload"

CONFIG = """apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: aigw-xds}}
spec: {{controllerName: gateway.envoyproxy.io/gatewayclass-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: reload, namespace: default}}
spec:
  gatewayClassName: aigw-xds
  listeners: [{{name: http, protocol: HTTP, port: {listen}}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: reload, namespace: default}}
spec:
  parentRefs: [{{name: reload, kind: Gateway, group: gateway.networking.k8s.io}}]
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: steady}}]}}]
      backendRefs: [{{name: provider-a}}]
{rules}{backends}"""

RULE = """    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {model}}}]}}]
      backendRefs: [{{name: {provider}}}]
"""

BACKEND = """---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: {name}, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: {name}, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: {name}, namespace: default}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {port}}}}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {name}}}]
  type: APIKey
  apiKey: {{secretRef: {{name: {name}}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: default}}
stringData: {{apiKey: {key}}}
"""


def machine() -> str:
    cpu = "unknown CPU"
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = found.group(1).strip() if found else cpu
        mem_kb = int(re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M).group(1))  # type: ignore[union-attr]
        memory = f"{mem_kb / 1024 / 1024:.0f} GiB"
    except (OSError, AttributeError):
        memory = "? GiB"
    envoy = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True).stdout
    envoy_version = re.search(r"/(\d+\.\d+\.\d+)/", envoy)
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory} memory, {platform.system()} {platform.release()}, "
        f"CPython {platform.python_version()}, Envoy {envoy_version.group(1) if envoy_version else '?'}"
    )


def chat(connection: http.client.HTTPConnection, model: str) -> tuple[int, str]:
    """(status, x-fake-id of the provider that answered)."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    connection.request("POST", "/v1/chat/completions", body=body, headers={"content-type": "application/json"})
    response = connection.getresponse()
    response.read()
    return response.status, response.getheader("x-fake-id") or ""


class Steady:
    """Back-to-back `steady` requests until stopped; counts the ones that did not succeed."""

    def __init__(self, port: int, keep_alive: bool) -> None:
        self.port = port
        self.keep_alive = keep_alive
        self.ok = 0
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop.is_set():
            try:
                if not self.keep_alive:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                status, provider = chat(connection, "steady")
                if status == 200 and provider == "provider-a":
                    self.ok += 1
                else:
                    self.failed.append(f"status {status} from {provider or '?'}")
            except (OSError, http.client.HTTPException) as exc:
                self.failed.append(f"{type(exc).__name__}: {exc}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            finally:
                if not self.keep_alive:
                    connection.close()


def wait_serving(port: int, model: str, provider: str, transition_errors: list[str], timeout: float = 30.0) -> float:
    """Polls until `model` is answered by `provider`; returns the monotonic time it first was.
    Until then the answer must be 404 (no route yet): anything else, e.g. a 503 from a route that
    reached Envoy before its cluster, is a transition error."""
    deadline = time.monotonic() + timeout
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while time.monotonic() < deadline:
        try:
            status, answered_by = chat(connection, model)
            if status == 200 and answered_by == provider:
                return time.monotonic()
            if status != 404:
                transition_errors.append(f"{model}: status {status} from {answered_by or '?'}")
        except (OSError, http.client.HTTPException) as exc:
            transition_errors.append(f"{model}: {type(exc).__name__}: {exc}")
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        time.sleep(0.002)
    raise TimeoutError(f"{model} not served by {provider} within {timeout}s")


def envoy_updates(admin: int) -> str:
    """How many updates of each xDS type Envoy accepted, and whether a listener was replaced. (Run's
    Envoy speaks delta xDS, where a response bringing several clusters' endpoints counts once.)"""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?filter=update_success|listener_modified") as r:
        lines = r.read().decode().splitlines()
    stats = {name: int(value) for name, _, value in (line.partition(": ") for line in lines) if value.isdigit()}
    kinds = {
        "CDS": r"cluster_manager\.cds\.",
        "EDS": r"cluster\.[^.]+\.update_success",
        "LDS": r"lds\.",
        "RDS": r"rds\.",
    }
    counts = {
        kind: sum(v for k, v in stats.items() if re.search(pattern, k) and k.endswith("update_success"))
        for kind, pattern in kinds.items()
    }
    return (
        ", ".join(f"{kind} {n}" for kind, n in counts.items())
        + f"; listeners replaced: {stats.get('listener_manager.listener_modified', '?')}"
    )


def start_fake(name: str, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "aigw_fakes", "--provider", "openai", "--port", str(port)]
    command += ["--api-key", KEY, "--name", name]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on" not in line:
        raise RuntimeError(f"fake {name} did not start: {line!r}")
    return process


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--edits", type=int, default=20)
    p.add_argument("--settle", type=float, default=0.3, help="seconds between an edit being served and the next")
    p.add_argument("--routes", type=int, default=0, help="routes of bench_compile's shape besides the edited file")
    p.add_argument("--backends", type=int, default=2000, help="backends those routes share (default 2000)")
    args = p.parse_args()

    listen, admin = free_port(), free_port()
    ports = {"provider-a": free_port(), "provider-b": free_port()}
    fakes = [start_fake(name, port) for name, port in ports.items()]
    backends = "".join(BACKEND.format(name=n, port=port, key=KEY) for n, port in ports.items())
    workdir = Path(tempfile.mkdtemp(prefix="bench-reload-"))
    config = workdir / "reload.yaml"

    def provider(i: int) -> str:
        return "provider-b" if i % 2 == 0 else "provider-a"

    def write(i: int) -> None:
        """Edit i: the file with rules edit-0 .. edit-i (each edit adds one rule, hence one cluster)."""
        rules = "".join(RULE.format(model=f"edit-{j}", provider=provider(j)) for j in range(i + 1))
        config.write_text(CONFIG.format(listen=listen, rules=rules, backends=backends))

    served = config  # what the run serves: the file, or the directory holding it and the bulk
    if args.routes:
        served = workdir / "config"
        served.mkdir()
        config = served / config.name
        (served / "bulk-backends.yaml").write_text(bench_compile.backends_text(args.backends))
        for first in range(0, args.routes, bench_compile.ROUTES_PER_FILE):
            count = min(bench_compile.ROUTES_PER_FILE, args.routes - first)
            text = bench_compile.routes_text(first, count, args.backends, gateway="reload")
            (served / f"bulk-routes-{first:06d}.yaml").write_text(text)
    write(0)
    log = (workdir / "run.log").open("wb")
    run = subprocess.Popen(
        [sys.executable, "-m", "aigw_xds", "--log-format", "json", "run", str(served), "--admin-port", str(admin)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    latencies: list[float] = []
    transition_errors: list[str] = []
    clients = [Steady(listen, keep_alive=True), Steady(listen, keep_alive=False)]
    try:
        deadline = time.monotonic() + 60 + args.routes / 100
        while '"event": "ready"' not in (workdir / "run.log").read_text():  # the JSON log's ready event
            if run.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((workdir / "run.log").read_text()[-3000:])
            time.sleep(0.05)
        wait_serving(listen, "edit-0", provider(0), transition_errors=[])
        for client in clients:
            client.thread.start()
        time.sleep(1.0)  # traffic running before the first edit
        for i in range(1, args.edits + 1):
            start = time.monotonic()
            write(i)
            latencies.append(wait_serving(listen, f"edit-{i}", provider(i), transition_errors) - start)
            time.sleep(args.settle)
        time.sleep(1.0)  # and after the last one
        updates = envoy_updates(admin)
    finally:
        for client in clients:
            client.stop.set()
            client.thread.join(timeout=15)
        run.send_signal(signal.SIGINT)
        try:
            run.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.kill()
        for fake in fakes:
            fake.terminate()
            fake.wait(timeout=10)
        log.close()

    failed = [f for c in clients for f in c.failed]
    steady = sum(c.ok for c in clients) + len(failed)
    ordered = sorted(latencies)
    print(f"machine: {machine()}")
    print()
    bulk = f"{args.routes}" + (f", over {args.backends} backends" if args.routes else "")
    print(f"routes besides the edited file: {bulk}")
    print("| edits | p50 s | p90 s | max s | min s | steady requests during the edits | failed |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {len(latencies)} | {statistics.median(latencies):.3f} | {ordered[int(0.9 * (len(ordered) - 1))]:.3f} "
        f"| {max(latencies):.3f} | {min(latencies):.3f} | {steady} | {len(failed)} |"
    )
    print()
    print("per edit (s): " + " ".join(f"{x:.3f}" for x in latencies))
    print(f"Envoy accepted (including the initial configuration): {updates}")
    print(
        f"new-model requests answered other than 404 (not yet routed) or 200 while an edit was applied: "
        f"{len(transition_errors)}" + (f" ({'; '.join(transition_errors[:5])})" if transition_errors else "")
    )
    print(f"failed requests: {len(failed)}" + (f" ({'; '.join(sorted(set(failed))[:5])})" if failed else ""))
    return 1 if failed or transition_errors else 0


if __name__ == "__main__":
    sys.exit(main())
