#!/usr/bin/env python3
"""Benchmark the data path through real Envoy: bare Envoy (routing on a header, no translator),
OpenAI -> OpenAI passthrough with an API key, and OpenAI -> Anthropic translation; non-streaming
and streaming; concurrency 1 and 32; 1 KB requests. Reports requests/s, p50, p99 and the CPU
share of each process (100 % = one core).

Needs wrk (Debian: apt-get install wrk). Usage: hack/bench_translator.py [--duration 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aigw_contract import MODEL_HEADER  # noqa: E402
from aigw_xds.envoy.bootstrap import bootstrap  # noqa: E402
from aigw_xds.envoy.process import EnvoyProcess  # noqa: E402
from aigw_xds.processes import free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} not listening")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def config(listen: int, upstream: int) -> str:
    def backend(name: str, schema: str, auth: str) -> str:
        field = {"APIKey": "apiKey", "AnthropicAPIKey": "anthropicAPIKey"}[auth]
        return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: {name}}}
spec:
  schema: {{name: {schema}}}
  backendRef: {{name: {name}, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: {name}}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {upstream}}}}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: {name}}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {name}}}]
  type: {auth}
  {field}: {{secretRef: {{name: {name}}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}}}
stringData: {{apiKey: sk-bench-{name}}}
"""

    return (
        f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: bench}}
spec:
  gatewayClassName: aigw
  listeners: [{{name: http, protocol: HTTP, port: {listen}}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: bench}}
spec:
  parentRefs: [{{name: bench}}]
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: passthrough}}]}}]
      backendRefs: [{{name: openai}}]
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: to-anthropic}}]}}]
      backendRefs: [{{name: anthropic}}]
"""
        + backend("openai", "OpenAI", "APIKey")
        + backend("anthropic", "Anthropic", "AnthropicAPIKey")
    )


def lua_script(path: Path, model: str, stream: bool, model_header: bool) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "x" * 900}], "max_tokens": 64}
    if stream:
        body["stream"] = True
    text = json.dumps(body)
    headers = ['wrk.headers["content-type"] = "application/json"', 'wrk.headers["authorization"] = "Bearer client"']
    if model_header:
        headers.append(f'wrk.headers["{MODEL_HEADER}"] = "{model}"')
    path.write_text('wrk.method = "POST"\n' + "\n".join(headers) + f"\nwrk.body = [[{text}]]\n")


def parse_ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


class Setup:
    def __init__(self, workdir: Path, upstream_port: int, translator: bool) -> None:
        self.listen = free_port()
        self.xds = free_port()
        (workdir / "config").mkdir(exist_ok=True)
        (workdir / "config" / "bench.yaml").write_text(config(self.listen, upstream_port))
        args = [
            sys.executable,
            "-m",
            "aigw_xds",
            "--log-level",
            "error",
            "serve",
            "--config",
            str(workdir / "config"),
            "--listen",
            f"127.0.0.1:{self.xds}",
            "--no-watch",
        ]
        if translator:
            port = free_port()
            args += ["--translator-listen", f"127.0.0.1:{port}", "--translator-address", f"127.0.0.1:{port}"]
        else:
            args += ["--no-translator", "--translator-listen", ""]
        with (workdir / "cp.log").open("wb") as log:
            self.plane = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        wait_port(self.xds)
        admin = free_port()
        self.envoy = EnvoyProcess(
            bootstrap(
                xds_host="127.0.0.1", xds_port=self.xds, fleet="default/bench", node_id="bench", admin_port=admin
            ),
            admin_port=admin,
            log_level="error",
        )
        self.envoy.start()
        self.envoy.wait_ready()

    def stop(self) -> None:
        self.envoy.stop()
        self.plane.terminate()
        self.plane.wait()


def run_wrk(port: int, script: Path, connections: int, duration: int, pids: dict[str, int]) -> dict:
    threads = 1 if connections == 1 else 2
    subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            "-d1s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/v1/chat/completions",
        ],
        capture_output=True,
        check=True,
    )
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    start = time.monotonic()
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    elapsed = time.monotonic() - start
    cpu = {name: (cpu_seconds(pid) - before[name]) / elapsed * 100 for name, pid in pids.items()}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = parse_ms(re.search(r"50%\s+(\S+)", out).group(1))
    p99 = parse_ms(re.search(r"99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "cpu": cpu, "non2xx": int(errors.group(1)) if errors else 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    workdir = Path(tempfile.mkdtemp(prefix="aigw-bench-"))
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(ROOT / "hack" / "fast_upstream.py"), str(upstream_port)], stdout=subprocess.DEVNULL
    )
    wait_port(upstream_port)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"wrk, Envoy (--concurrency 1), translator and upstream share the cores"
    )
    columns = (
        "path",
        "stream",
        "conc.",
        "req/s",
        "p50 ms",
        "p99 ms",
        "non-2xx",
        "translator CPU %",
        "Envoy CPU %",
        "upstream CPU %",
    )
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    try:
        for translator in (False, True):
            setup = Setup(workdir, upstream_port, translator)
            pids = {"translator": setup.plane.pid, "envoy": setup.envoy.process.pid, "upstream": upstream.pid}
            paths = (
                [("passthrough", "bare Envoy")]
                if not translator
                else [("passthrough", "OpenAI -> OpenAI"), ("to-anthropic", "OpenAI -> Anthropic")]
            )
            try:
                for model, label in paths:
                    for stream in (False, True):
                        script = workdir / f"{model}-{stream}.lua"
                        lua_script(script, model, stream, model_header=not translator)
                        for connections in (1, 32):
                            r = run_wrk(setup.listen, script, connections, args.duration, pids)
                            cpu = r["cpu"]
                            print(
                                f"| {label} | {'yes' if stream else 'no'} | {connections} | {r['rps']:.0f} | "
                                f"{r['p50']:.2f} | {r['p99']:.2f} | {r['non2xx']} | "
                                f"{cpu['translator'] if translator else 0:.0f} | {cpu['envoy']:.0f} | "
                                f"{cpu['upstream']:.0f} |",
                                flush=True,
                            )
            finally:
                setup.stop()
    finally:
        upstream.terminate()


if __name__ == "__main__":
    main()
