#!/usr/bin/env python3
"""Kubernetes mode at 1,000 routes: cold start, one edit to a real Envoy, memory with many Secrets.

The API server is the EMULATED one (fakes/aigw_fakes/kube_apiserver.py, in this process, in its
own thread): a stand-in, so the figures measure aigw-xds (list, decode, compile, serve), not a real
kube-apiserver's latency. Everything runs as deploy/kubernetes does: xDS over the TLS the control
plane provisions, the Envoy proving its ServiceAccount with a token, RBAC letting it get the
Secrets. It holds one Gateway with N AIGatewayRoutes (one rule each) over M
AIServiceBackends (each with its Backend, BackendSecurityPolicy and Secret), plus S Secrets nobody
references. `aigw-xds serve --kubernetes` runs as a subprocess; a real Envoy (delta xDS) follows.

Measured, for S = 0 and S = --secrets:
- cold start: process start -> /readyz 200 (every kind listed, compiled, the xDS server up), and
  process start -> Envoy's routes ready (its RDS applied);
- one edit: an AIGatewayRoute patched through the API (a model added) -> Envoy's RDS update count
  goes up (p50/max over --edits edits);
- memory: the control plane's RSS after the first snapshot and the edits (from /proc).

Usage: hack/bench_kubernetes.py [--routes 1000] [--backends 200] [--secrets 10000] [--edits 5]
Prints the machine and a Markdown table; figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "fakes"), str(ROOT / "src")]

from aigw_fakes.kube_apiserver import KubeAPIServer  # noqa: E402
from aigw_xds.envoy.bootstrap import bootstrap  # noqa: E402
from aigw_xds.envoy.process import EnvoyProcess  # noqa: E402
from tests.e2e.harness.processes import free_port  # noqa: E402
from tests.kube_api import KINDS, grant_secrets  # noqa: E402

CONTROLLER = "aigw-xds.io/gateway-controller"


def objects(routes: int, backends: int, listen_port: int) -> list[dict[str, Any]]:
    ns = {"namespace": "default"}
    out: list[dict[str, Any]] = [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "aigw"},
            "spec": {"controllerName": CONTROLLER},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", **ns},
            "spec": {
                "gatewayClassName": "aigw",
                "listeners": [{"name": "http", "protocol": "HTTP", "port": listen_port}],
            },
        },
    ]
    for b in range(backends):
        name = f"backend-{b}"
        out += [
            {
                "apiVersion": "gateway.envoyproxy.io/v1alpha1",
                "kind": "Backend",
                "metadata": {"name": name, **ns},
                "spec": {"endpoints": [{"ip": {"address": "127.0.0.1", "port": 20000 + b}}]},
            },
            {
                "apiVersion": "aigateway.envoyproxy.io/v1beta1",
                "kind": "AIServiceBackend",
                "metadata": {"name": name, **ns},
                "spec": {
                    "schema": {"name": "OpenAI"},
                    "backendRef": {"name": name, "kind": "Backend", "group": "gateway.envoyproxy.io"},
                },
            },
            {
                "apiVersion": "aigateway.envoyproxy.io/v1beta1",
                "kind": "BackendSecurityPolicy",
                "metadata": {"name": name, **ns},
                "spec": {
                    "targetRefs": [{"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": name}],
                    "type": "APIKey",
                    "apiKey": {"secretRef": {"name": f"{name}-key"}},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{name}-key", **ns},
                "stringData": {"apiKey": f"sk-{b:032d}"},
            },
        ]
    for r in range(routes):
        out.append(route(r, backends))
    return out


def route(r: int, backends: int, extra_model: str = "") -> dict[str, Any]:
    models = [f"model-{r}", *([extra_model] if extra_model else [])]
    return {
        "apiVersion": "aigateway.envoyproxy.io/v1beta1",
        "kind": "AIGatewayRoute",
        "metadata": {"name": f"route-{r}", "namespace": "default"},
        "spec": {
            "parentRefs": [{"name": "gw", "kind": "Gateway", "group": "gateway.networking.k8s.io"}],
            "rules": [
                {
                    "matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": m}]} for m in models],
                    "backendRefs": [{"name": f"backend-{r % backends}"}],
                }
            ],
        },
    }


def unreferenced_secret(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"unrelated-{i}", "namespace": "default", "labels": {"app": "other"}},
        "stringData": {"token": "x" * 512, "ca.crt": "y" * 1024},
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait(check: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > timeout:
            raise TimeoutError(what)
        time.sleep(0.01)
    return time.perf_counter()


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


def rds_updates(envoy: EnvoyProcess) -> int:
    return sum(v for k, v in envoy.stats("http.").items() if k.endswith(".rds.default/gw/listener/update_success")
               or (".rds." in k and k.endswith(".update_success")))  # fmt: skip


def run(routes: int, backends: int, secrets: int, edits: int, workdir: Path) -> dict[str, Any]:
    listen = free_port()
    with KubeAPIServer(KINDS).running() as api:
        for obj in objects(routes, backends, listen):
            api.apply(obj)
        for i in range(secrets):
            api.apply(unreferenced_secret(i))
        grant_secrets(api, "default", "envoy", [f"backend-{b}-key" for b in range(backends)])
        token = workdir / f"token-{secrets}"
        token.write_text(api.issue_token("default", "envoy"))
        kubeconfig = api.write_kubeconfig(workdir / f"kubeconfig-{secrets}")
        xds, health = free_port(), free_port()
        log = (workdir / f"serve-{secrets}.log").open("wb")
        started = time.perf_counter()
        plane = subprocess.Popen(
            [sys.executable, "-m", "aigw_xds", "--log-format", "json", "serve", "--kubernetes", "--kubeconfig",
             str(kubeconfig), "--listen", f"127.0.0.1:{xds}", "--health-listen", f"127.0.0.1:{health}",
             "--translator-listen", "", "--leader-election-namespace", "aigw-system",
             "--tls-service-name", "localhost"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path[:3])},
        )  # fmt: skip
        envoy = None
        try:
            ready_at = wait(lambda: ready(health), 300, "readyz")
            ca = workdir / f"ca-{secrets}.crt"
            wait(lambda: "data" in (api.get("ConfigMap", "default", "aigw-xds-ca") or {}), 60, "the CA ConfigMap")
            ca.write_text((api.get("ConfigMap", "default", "aigw-xds-ca") or {})["data"]["ca.crt"])
            admin = free_port()
            envoy = EnvoyProcess(
                bootstrap(xds_host="localhost", xds_port=xds, fleet="default/gw", node_id="bench", delta=True,
                          admin_port=admin, tls_ca=str(ca), token_file=str(token)),
                admin_port=admin,
            )  # fmt: skip
            envoy.start()
            envoy.wait_ready(timeout=120)
            wait(lambda: rds_updates(envoy) >= 1, 120, "Envoy's first RDS")
            envoy_at = time.perf_counter()
            cold_rss = rss_mb(plane.pid)
            latencies = []
            for e in range(edits):
                before = rds_updates(envoy)
                t0 = time.perf_counter()
                api.apply(route(e, backends, extra_model=f"edit-{e}"))
                wait(lambda b=before: rds_updates(envoy) > b, 60, "the edit in Envoy")
                latencies.append(time.perf_counter() - t0)
            return {
                "secrets": secrets,
                "ready_s": ready_at - started,
                "envoy_s": envoy_at - started,
                "edit_p50_ms": statistics.median(latencies) * 1000,
                "edit_max_ms": max(latencies) * 1000,
                "rss_cold_mb": cold_rss,
                "rss_after_mb": rss_mb(plane.pid),
            }
        finally:
            if envoy is not None:
                envoy.stop()
            if os.environ.get("BENCH_KEEP"):
                import shutil

                shutil.copy(workdir / f"serve-{secrets}.log", Path(os.environ["BENCH_KEEP"]) / f"serve-{secrets}.log")
            plane.terminate()
            plane.wait(timeout=30)
            log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--backends", type=int, default=200)
    parser.add_argument("--secrets", type=int, default=10000, help="Secrets nobody references")
    parser.add_argument("--edits", type=int, default=5)
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    print(f"machine: {os.cpu_count()} vCPU, {cpu}, Python {platform.python_version()}")
    print(f"{args.routes} routes, {args.backends} backends (each with a referenced Secret), edits: {args.edits}\n")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_KEEP")) as tmp:
        rows = [run(args.routes, args.backends, s, args.edits, Path(tmp)) for s in (0, args.secrets)]
    print("| unreferenced Secrets | start -> /readyz | start -> Envoy has routes | one edit -> Envoy (p50 / max) "
          "| RSS after start | RSS after edits |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['secrets']:,} | {r['ready_s']:.2f} s | {r['envoy_s']:.2f} s | {r['edit_p50_ms']:.0f} / "
              f"{r['edit_max_ms']:.0f} ms | {r['rss_cold_mb']:.0f} MB | {r['rss_after_mb']:.0f} MB |")  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
