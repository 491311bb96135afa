#!/usr/bin/env python3
"""The MCP gateway's cost: MCP requests through `aigw-xds run` (a real Envoy, the translator's MCP
proxy) against the same requests sent straight to the MCP server.

The MCP server is the bundled fake (`python -m aigw_fakes --provider mcp`, a process of its own,
JSON answers); the gateway serves one MCPRoute with that server as its one backend, behind an API
key, and another (/secure/mcp) to the same server whose clients sign in: Envoy checks an OAuth
token (RS256, a key set given inline), the MCP proxy an authorization rule (the token's scope for
the `echo` tool; a list shows that tool only) and sends the token's `sub` as a header. A client
(aiohttp, in this process) opens a session each way (initialize, initialized) and then sends
`tools/call` (the `echo` tool) and `tools/list`, back to back from C concurrent tasks, N requests
per row. Each row is timed from the first request to the last answer; latencies are per
request.

Usage: hack/bench_mcp.py [--requests 2000] [--concurrency 1 8]
Prints the machine, a Markdown table and the gateway/direct ratios. Figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from aigw_xds.processes import free_port

KEY = "mcp-bench-key"
SECURE = "gateway, OAuth and a rule"
ACCEPT = "application/json, text/event-stream"

CONFIG = """apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: aigw-xds}}
spec: {{controllerName: gateway.envoyproxy.io/gatewayclass-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: bench, namespace: default}}
spec:
  gatewayClassName: aigw-xds
  listeners: [{{name: http, protocol: HTTP, port: {listen}}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: MCPRoute
metadata: {{name: tools, namespace: default}}
spec:
  parentRefs: [{{name: bench}}]
  backendRefs:
    - name: fake
      kind: Backend
      group: gateway.envoyproxy.io
      securityPolicy: {{apiKey: {{inline: {key}}}}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: MCPRoute
metadata: {{name: secure, namespace: default}}
spec:
  parentRefs: [{{name: bench}}]
  path: /secure/mcp
  backendRefs:
    - name: fake
      kind: Backend
      group: gateway.envoyproxy.io
      securityPolicy: {{apiKey: {{inline: {key}}}}}
  securityPolicy:
    oauth:
      issuer: https://issuer.bench.example
      audiences: [aigw-bench]
      jwks: {{localJWKS: {{inline: '{jwks}'}}}}
      claimToHeaders: [{{claim: sub, header: x-user}}]
      protectedResourceMetadata: {{resource: "http://127.0.0.1:{listen}/secure/mcp", scopesSupported: [bench]}}
    authorization:
      rules:
        - source: {{jwt: {{scopes: [bench]}}}}
          target: {{tools: [{{backend: fake, tool: echo}}]}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: fake, namespace: default}}
spec: {{endpoints: [{{ip: {{address: 127.0.0.1, port: {fake}}}}}]}}
"""


def _signing() -> tuple[str, str]:
    """A key set of one RSA key (JSON), and a token it signs for the secure route (scope bench)."""
    import jwt  # the fakes' extra, which this benchmark's fake MCP server needs too
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    claims = {"iss": "https://issuer.bench.example", "aud": "aigw-bench", "sub": "bench", "scope": "bench"}
    token = jwt.encode({**claims, "exp": int(time.time()) + 3600}, key, algorithm="RS256", headers={"kid": "bench"})
    return json.dumps({"keys": [{**jwk, "kid": "bench", "alg": "RS256", "use": "sig"}]}), token


def _started(command: list[str], log: Path, ready: str, timeout: float = 90.0) -> subprocess.Popen:
    out = log.open("wb")
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while ready not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{command[:4]} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)
    return process


async def _post(
    http: aiohttp.ClientSession, url: str, message: dict, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    async with http.post(url, data=json.dumps(message), headers=headers) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, await response.read()


async def _session(http: aiohttp.ClientSession, url: str, key: str | None) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": ACCEPT}
    if key:
        headers["authorization"] = f"Bearer {key}"
    hello = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}
    status, got, body = await _post(
        http, url, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello}, headers
    )
    if status != 200:
        raise SystemExit(f"initialize at {url}: {status} {body[:300]!r}")
    headers |= {"mcp-session-id": got["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
    await _post(http, url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, headers)
    return headers


async def _row(url: str, key: str | None, method: str, params: dict, requests: int, concurrency: int) -> dict:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        headers = await _session(http, url, key)
        latencies: list[float] = []
        failed = 0
        counter = iter(range(requests))

        async def worker() -> None:
            nonlocal failed
            for i in counter:
                began = time.perf_counter()
                status, _, body = await _post(
                    http, url, {"jsonrpc": "2.0", "id": i + 1, "method": method, "params": params}, headers
                )
                latencies.append(time.perf_counter() - began)
                if status != 200 or b'"result"' not in body:
                    failed += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "rps": requests / elapsed,
        "failed": failed,
    }


async def _measure(
    gateway: str, secure: str, token: str, direct: str, requests: int, levels: list[int]
) -> list[tuple[str, int, str, dict]]:
    calls = {
        "tools/call": ("tools/call", {"name": "fake__echo", "arguments": {"text": "hello"}}),
        "tools/list": ("tools/list", {}),
    }
    rows = []
    for label, (method, params) in calls.items():
        for concurrency in levels:
            for path, url, key in (("direct", direct, KEY), ("gateway", gateway, None), (SECURE, secure, token)):
                own = dict(params, name="echo") if path == "direct" and "name" in params else params
                rows.append((label, concurrency, path, await _row(url, key, method, own, requests, concurrency)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per row (default 2000)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8], help="concurrent clients (default 1 8)")
    args = parser.parse_args()
    listen, fake, admin, xds = free_port(), free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="bench-mcp-") as scratch:
        work = Path(scratch)
        jwks, token = _signing()
        (work / "config.yaml").write_text(CONFIG.format(listen=listen, fake=fake, key=KEY, jwks=jwks))
        fake_process = _started(
            [sys.executable, "-m", "aigw_fakes", "--provider", "mcp", "--port", str(fake), "--api-key", KEY],
            work / "fake.log",
            "listening on",
        )
        run = _started(
            [
                *(sys.executable, "-m", "aigw_xds", "run", str(work / "config.yaml")),
                *("--admin-port", str(admin), "--xds-port", str(xds), "--translator-workers", "1"),
            ],
            work / "run.log",
            "aigw-xds ready:",
        )
        try:
            rows = asyncio.run(
                _measure(
                    f"http://127.0.0.1:{listen}/mcp",
                    f"http://127.0.0.1:{listen}/secure/mcp",
                    token,
                    f"http://127.0.0.1:{fake}/mcp",
                    args.requests,
                    args.concurrency,
                )
            )
        finally:
            for process in (run, fake_process):
                os.killpg(process.pid, signal.SIGINT)
                process.wait(timeout=30)
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"requests per row: {args.requests}; MCP server: the fake (JSON answers), one backend behind an API key")
    print()
    print("| request | concurrency | path | p50 ms | p99 ms | req/s | failed |")
    print("|---|---|---|---|---|---|---|")
    for label, concurrency, path, row in rows:
        cells = (label, concurrency, path, f"{row['p50']:.2f}", f"{row['p99']:.2f}", f"{row['rps']:.0f}", row["failed"])
        print("| " + " | ".join(map(str, cells)) + " |")
    print()
    by = {(label, c, path): row for label, c, path, row in rows}
    for label, concurrency, path, row in rows:
        if path != "direct":
            direct = by[(label, concurrency, "direct")]
            print(
                f"{label} at {concurrency}: {path}/direct p50 {row['p50'] / direct['p50']:.1f}x, "
                f"req/s {row['rps'] / direct['rps']:.2f}x"
            )
    return 0 if all(row["failed"] == 0 for *_, row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
