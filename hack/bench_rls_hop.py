#!/usr/bin/env python3
"""Measure the design alternative for token rate limits that we did not choose (issue 12, item 3): Envoy's
ratelimit filter calling an external rate-limit service (RLS) over gRPC, instead of checks inside the
translator's ext_proc phases. A standalone Envoy (static bootstrap, no control plane, --concurrency 1) in
front of hack/fast_upstream.py (OpenAI chat JSON, usage.total_tokens 258), loaded with wrk as in
hack/bench_datapath.py (whose helpers this reuses).

Rows (--rows, comma-separated; default all):
  bare       one route to the fast upstream, only the router filter
  meta       bare + envoy.filters.http.json_to_metadata writing the response's usage.total_tokens to dynamic
             metadata io.envoy.ai_gateway:llm_total_token (what the translator does in the real gateway; here
             a filter does it so the stream-done cost is a real number); isolates the hop from that work
  rls        meta + envoy.filters.http.ratelimit (domain "aigw", failure_mode_deny false, x-ratelimit
             headers DRAFT_VERSION_03, --rls-timeout) against a Python grpc.aio RateLimitService started by
             this script (one process, the default asyncio loop), with two rate limits on the x-tenant-id
             request header in the route's RateLimitPerRoute.rate_limits: admission at request time with
             hits_addend {number: 0}, and the charge with apply_on_stream_done: true and
             hits_addend {format: "%DYNAMIC_METADATA(io.envoy.ai_gateway:llm_total_token)%"}
  rls-uvloop the same, the RLS process on uvloop (skipped if uvloop is not installed)

Before the rls rows, a probe (checked, not loaded) puts the same two rate limits in RouteAction.rate_limits
instead: on Envoy 1.40 that config loads and both calls are made, but the descriptors carry no hits_addend
(the RLS would charge 1, not the tokens), which is why the rows use the per-route filter config.

The RLS keeps fixed-window counters in a dict (key: domain, descriptor entries, window start) and always
answers OK, with each descriptor's limit and remaining budget so Envoy writes the x-ratelimit-* headers. Each
row first checks one request end to end (200, a chat completion; rls rows: x-ratelimit-limit on the answer,
and the RLS received one descriptor with hits_addend 0 and one with hits_addend 258) and reports, for every
load, the descriptors the RLS received per completed request and the ratelimit filter's error counter (calls
that timed out or failed and were let through) from Envoy's admin stats.

CPU is summed over each process tree from /proc/<pid>/stat (Envoy; the RLS) and divided by the requests wrk
completed. Each row: concurrency 1 and 32, --duration seconds after --warmup seconds of warm-up.

Usage:
  .venv/bin/python hack/bench_rls_hop.py [--duration 5] [--warmup 1] [--rows bare,meta,rls,rls-uvloop]
                                         [--rls-timeout 0.02]
The script runs its own RLS as a child process: hack/bench_rls_hop.py --serve-rls PORT [--uvloop].
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make `hack` importable (mypy sees it from the repository root)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from hack import bench_datapath as datapath

ROWS = ("bare", "meta", "rls", "rls-uvloop")
PROBE = "rls-route-action"  # checked, not loaded: the rls row's rate limits in RouteAction.rate_limits
DOMAIN = "aigw"
STATS_DOMAIN = "aigw-bench-stats"  # a ShouldRateLimit in this domain answers the RLS's counters in raw_body
TENANT_HEADER = "x-tenant-id"
TENANT = "tenant-bench"
METADATA_NAMESPACE = "io.envoy.ai_gateway"
METADATA_KEY = "llm_total_token"
TOTAL_TOKENS = 258  # hack/fast_upstream.py's usage.total_tokens for an OpenAI chat completion
LIMIT = 4_000_000_000  # tokens per minute (uint32 in the protocol): the RLS never has a reason to refuse
WINDOW_SECONDS = 60


# ---------------------------------------------------------------- the rate-limit service (child process)


class CountingRateLimitService(rls_pb2_grpc.RateLimitServiceServicer):
    """Envoy's RateLimitService with fixed-window counters in a dict; always OK, with the budget left."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, ...], int] = {}
        self.by_addend: Counter[str] = Counter()  # descriptors received, by their hits_addend
        self.calls = 0

    async def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: grpc.aio.ServicerContext
    ) -> rls_pb2.RateLimitResponse:
        if request.domain == STATS_DOMAIN:
            stats = {"calls": self.calls, "descriptors_by_hits_addend": dict(self.by_addend)}
            return rls_pb2.RateLimitResponse(
                overall_code=rls_pb2.RateLimitResponse.OK, raw_body=json.dumps(stats).encode()
            )
        self.calls += 1
        window = str(int(time.time()) // WINDOW_SECONDS)
        statuses = []
        for descriptor in request.descriptors:
            if descriptor.HasField("hits_addend"):
                hits = descriptor.hits_addend.value
                self.by_addend[str(hits)] += 1
            else:
                hits = request.hits_addend or 1  # the protocol: 0 means 1
                self.by_addend[f"request:{request.hits_addend}"] += 1
            key = (request.domain, *(f"{e.key}={e.value}" for e in descriptor.entries), window)
            used = self.counters.get(key, 0) + hits
            self.counters[key] = used
            statuses.append(
                rls_pb2.RateLimitResponse.DescriptorStatus(
                    code=rls_pb2.RateLimitResponse.OK,
                    current_limit=rls_pb2.RateLimitResponse.RateLimit(
                        requests_per_unit=LIMIT, unit=rls_pb2.RateLimitResponse.RateLimit.MINUTE
                    ),
                    limit_remaining=max(0, LIMIT - used),
                )
            )
        return rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK, statuses=statuses)


async def serve_rls(port: int) -> None:
    server = grpc.aio.server()
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(CountingRateLimitService(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"RLS listening on 127.0.0.1:{port} ({type(asyncio.get_running_loop()).__module__})", flush=True)
    await server.wait_for_termination()


def run_rls(port: int, use_uvloop: bool) -> None:
    if use_uvloop:
        import uvloop

        uvloop.run(serve_rls(port))
    else:
        asyncio.run(serve_rls(port))


def rls_stats(port: int) -> dict[str, Any]:
    """The counters of the RLS on port (calls, descriptors by hits_addend), asked over its own gRPC API."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        answer = stub.ShouldRateLimit(rls_pb2.RateLimitRequest(domain=STATS_DOMAIN), timeout=5)
    stats: dict[str, Any] = json.loads(answer.raw_body)
    return stats


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- Envoy's static bootstrap


def _typed(type_name: str, **fields: Any) -> dict[str, Any]:
    return {"@type": f"type.googleapis.com/{type_name}", **fields}


def _cluster(name: str, port: int, http2: bool = False) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
                    ]
                }
            ],
        },
    }
    if http2:
        options = _typed(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            explicit_http_config={"http2_protocol_options": {}},
        )
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options
        }
    return cluster


def bootstrap(row: str, listen: int, admin: int, upstream: int, rls: int | None, rls_timeout: float) -> dict[str, Any]:
    """A static bootstrap for row: bare, meta (+ json_to_metadata) or rls (+ the ratelimit filter and RLS cluster).

    The rls rows put the route's two rate limits in the ratelimit filter's per-route config
    (RateLimitPerRoute.rate_limits); row rls-route-action puts them in RouteAction.rate_limits instead.
    """
    tenant = {"request_headers": {"header_name": TENANT_HEADER, "descriptor_key": "tenant"}}
    route: dict[str, Any] = {"cluster": "upstream", "timeout": "10s"}
    per_filter: dict[str, Any] = {}
    filters: list[dict[str, Any]] = []
    clusters = [_cluster("upstream", upstream)]
    if row != "bare":
        rule = {
            "selectors": [{"key": "usage"}, {"key": "total_tokens"}],
            "on_present": {"metadata_namespace": METADATA_NAMESPACE, "key": METADATA_KEY, "type": "NUMBER"},
        }
        config = _typed(
            "envoy.extensions.filters.http.json_to_metadata.v3.JsonToMetadata", response_rules={"rules": [rule]}
        )
        filters.append({"name": "envoy.filters.http.json_to_metadata", "typed_config": config})
    if rls is not None:
        config = _typed(
            "envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            domain=DOMAIN,
            failure_mode_deny=False,
            enable_x_ratelimit_headers="DRAFT_VERSION_03",
            timeout=f"{rls_timeout}s",
            rate_limit_service={"grpc_service": {"envoy_grpc": {"cluster_name": "rls"}}, "transport_api_version": "V3"},
        )
        filters.append({"name": "envoy.filters.http.ratelimit", "typed_config": config})
        clusters.append(_cluster("rls", rls, http2=True))
        rate_limits = [
            {"actions": [tenant], "hits_addend": {"number": 0}},
            {
                "actions": [tenant],
                "apply_on_stream_done": True,
                "hits_addend": {"format": f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{METADATA_KEY})%"},
            },
        ]
        if row == "rls-route-action":
            route["rate_limits"] = rate_limits
        else:
            per_route = _typed("envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute", rate_limits=rate_limits)
            per_filter = {"envoy.filters.http.ratelimit": per_route}
    router = _typed("envoy.extensions.filters.http.router.v3.Router")
    filters.append({"name": "envoy.filters.http.router", "typed_config": router})
    hcm = _typed(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix="bench",
        route_config={
            "name": "bench",
            "virtual_hosts": [
                {
                    "name": "bench",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": route, "typed_per_filter_config": per_filter}],
                }
            ],
        },
        http_filters=filters,
    )
    listener = {
        "name": "bench",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [listener], "clusters": clusters},
    }


# ---------------------------------------------------------------- one row


@dataclass
class Row:
    name: str
    listen: int
    admin: int
    envoy: subprocess.Popen[bytes]
    rls: subprocess.Popen[bytes] | None = None
    rls_port: int | None = None

    def stop(self) -> None:
        datapath.stop(self.envoy)
        if self.rls is not None:
            datapath.stop(self.rls)


def start_row(name: str, workdir: Path, upstream: int, args: argparse.Namespace) -> Row:
    rls = rls_port = None
    try:
        if name.startswith("rls"):
            rls_port = datapath.free_port()
            serve = [sys.executable, str(Path(__file__).resolve()), "--serve-rls", str(rls_port)]
            if name == "rls-uvloop":
                serve.append("--uvloop")
            rls = datapath.start(serve, workdir / f"{name}-rls.log")
            datapath.wait_port(rls_port, process=rls)
        listen, admin = datapath.free_port(), datapath.free_port()
        config = workdir / f"{name}-bootstrap.json"
        config.write_text(json.dumps(bootstrap(name, listen, admin, upstream, rls_port, args.rls_timeout), indent=1))
        command = [datapath.envoy_binary(), "-c", str(config), "--use-dynamic-base-id", "--concurrency", "1"]
        envoy = datapath.start([*command, "-l", "error"], workdir / f"{name}-envoy.log")
        try:
            datapath.wait_port(listen, timeout=30, process=envoy)
        except BaseException:
            datapath.stop(envoy)
            raise
    except BaseException:
        if rls is not None:
            datapath.stop(rls)
        raise
    return Row(name, listen, admin, envoy, rls, rls_port)


def request_headers() -> dict[str, str]:
    return {"content-type": "application/json", TENANT_HEADER: TENANT}


def post(port: int, body: str) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/chat/completions", body, request_headers())
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def check(row: Row, body: str) -> str:
    """One request end to end; for the RLS rows also that the RLS got both calls with the right hits_addend.

    A first request opens Envoy's HTTP/2 connection to the RLS (its first call can take longer than the
    filter's timeout); the second is the one checked."""
    post(row.listen, body)
    time.sleep(0.2)
    before = rls_stats(row.rls_port) if row.rls_port else None
    response, answer = post(row.listen, body)
    if response.status != 200:
        return f"status {response.status}: {answer[:200]!r}"
    if json.loads(answer).get("object") != "chat.completion":
        return f"not a chat completion: {answer[:200]!r}"
    if row.rls_port is None or before is None:
        return "ok"
    want = {"0": 1, str(TOTAL_TOKENS): 1}
    got: dict[str, int] = {}
    deadline = time.monotonic() + 5  # the stream-done call is sent after the response, asynchronously
    while time.monotonic() < deadline and got != want:
        time.sleep(0.05)
        got = _delta(before, rls_stats(row.rls_port))
    if got != want:
        return f"the RLS received descriptors by hits_addend {got} for 1 request, expected {want}"
    limit = response.getheader("x-ratelimit-limit")
    if limit is None:
        return f"no x-ratelimit-limit header (headers: {response.getheaders()})"
    return (
        f"ok: the RLS received 2 calls for 1 request, one descriptor with hits_addend 0 (request time) and "
        f"one with hits_addend {TOTAL_TOKENS} (stream done); x-ratelimit-limit: {limit}"
    )


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    old, new = before["descriptors_by_hits_addend"], after["descriptors_by_hits_addend"]
    return {k: v - old.get(k, 0) for k, v in new.items() if v - old.get(k, 0)}


def envoy_ratelimit_stats(admin: int) -> Counter[str]:
    """The ratelimit filter's counters (ok, error, failure_mode_allowed, over_limit) for the upstream cluster."""
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
    try:
        conn.request("GET", "/stats?filter=^cluster\\.upstream\\.ratelimit\\.")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    counters: Counter[str] = Counter()
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        counters[name.rsplit(".", 1)[-1]] = int(value)
    return counters


@dataclass
class Measured:
    load: datapath.Load
    rls_per_request: dict[str, float]  # descriptors the RLS received per completed request, by hits_addend
    filter_stats: Counter[str]  # the ratelimit filter's counters during the measured run


def measure(row: Row, script: Path, connections: int, upstream: datapath.Target, args: argparse.Namespace) -> Measured:
    trees = {"proxy": [row.envoy.pid], "envoy": [row.envoy.pid], "upstream": upstream.roots()}
    if row.rls is not None:
        trees["proxy"].append(row.rls.pid)
        trees["rls"] = [row.rls.pid]
    if args.warmup > 0:
        datapath.wrk(row.listen, script, connections, args.warmup)
    datapath.settle(trees["proxy"])
    before = rls_stats(row.rls_port) if row.rls_port else None
    filter_before = envoy_ratelimit_stats(row.admin)
    load = datapath.run_load(
        row.listen, script, connections, argparse.Namespace(warmup=0, duration=args.duration), trees
    )
    datapath.settle(trees["proxy"])  # let the last stream-done calls land
    filter_stats = envoy_ratelimit_stats(row.admin)
    filter_stats.subtract(filter_before)
    per_request: dict[str, float] = {}
    if row.rls_port and before is not None:
        delta = _delta(before, rls_stats(row.rls_port))
        per_request = {k: v / max(load.requests, 1) for k, v in sorted(delta.items())}
    return Measured(load, per_request, +filter_stats)


# ---------------------------------------------------------------- report

COLUMNS = (
    "row",
    "conc.",
    "req/s",
    "req/s vs bare",
    "p50 ms",
    "p50 vs bare",
    "p99 ms",
    "Envoy CPU ms/req",
    "RLS CPU ms/req",
    "Envoy+RLS CPU ms/req",
    "CPU vs bare",
    "RLS descriptors/req (by hits_addend)",
    "RLS call errors (per req)",
    "non-2xx",
)


def table_row(name: str, connections: int, m: Measured, bare: Measured | None) -> str:
    load = m.load
    envoy = load.cpu["envoy"] * 1000
    rls = load.cpu.get("rls", 0.0) * 1000
    base_cpu = bare.load.cpu["envoy"] * 1000 if bare else None
    addends = ", ".join(f"{k}: {v:.2f}" for k, v in m.rls_per_request.items()) or "-"
    errors = m.filter_stats["error"]  # each also counts in failure_mode_allowed (failure_mode_deny false)
    cells = (
        name,
        str(connections),
        f"{load.rps:.0f}",
        f"{load.rps / bare.load.rps:.2f}x" if bare else "-",
        f"{load.p50:.2f}",
        f"{load.p50 - bare.load.p50:+.2f} ms" if bare else "-",
        f"{load.p99:.2f}",
        f"{envoy:.3f}",
        f"{rls:.3f}" if "rls" in load.cpu else "-",
        f"{envoy + rls:.3f}",
        f"{(envoy + rls) / base_cpu:.2f}x" if base_cpu else "-",
        addends,
        f"{errors} ({errors / max(load.requests, 1):.0%})" if "rls" in load.cpu else "-",
        str(load.non2xx + load.socket_errors),
    )
    return "| " + " | ".join(cells) + " |"


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds measured per row and concurrency (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up before each (default 1)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument(
        "--rls-timeout", type=float, default=0.02, help="the ratelimit filter's timeout, s (default 0.02, Envoy's)"
    )
    parser.add_argument("--serve-rls", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--uvloop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = set(args.rows) - set(ROWS)
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))} (choose from {', '.join(ROWS)})")
    return args


def run_row(
    name: str,
    workdir: Path,
    upstream: datapath.Target,
    script: Path,
    body: str,
    args: argparse.Namespace,
    results: dict[tuple[str, int], Measured],
) -> str:
    """Start the row's processes, check one request, then (unless it is the probe) load it; returns the check's
    verdict. Table lines are printed as they come."""
    try:
        row = start_row(name, workdir, upstream.port, args)
    except (TimeoutError, OSError, ChildProcessError) as error:
        print(datapath.log_tails(workdir, name, lines=20), file=sys.stderr)
        print(f"| {name} | - | could not start: {error} |", flush=True)
        return f"could not start: {error}"
    try:
        try:
            verdict = check(row, body)
        except (OSError, ValueError, grpc.RpcError) as error:
            verdict = f"{type(error).__name__}: {error}"
            print(datapath.log_tails(workdir, name, lines=20), file=sys.stderr)
        if name == PROBE:
            return verdict
        if not verdict.startswith("ok"):
            print(f"| {name} | - | check failed: {verdict} |", flush=True)
            return verdict
        for connections in datapath.CONCURRENCY:
            measured = measure(row, script, connections, upstream, args)
            results[(name, connections)] = measured
            print(table_row(name, connections, measured, results.get(("bare", connections))), flush=True)
        return verdict
    finally:
        row.stop()


def main() -> None:
    args = parse_args()
    if args.serve_rls is not None:
        run_rls(args.serve_rls, args.uvloop)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed and is not on PATH: sudo apt-get install -y wrk (Debian/Ubuntu)")
    rows = [r for r in args.rows if r != "rls-uvloop" or uvloop_available()]
    if len(rows) < len(args.rows):
        print("uvloop is not installed: row rls-uvloop skipped")
    body = datapath.text_request(datapath.OPENAI_MODEL, stream=False)
    scenario = datapath.Scenario("bare", "bare", "bare", body, stream=False)
    began = time.monotonic()
    load_before = " ".join(f"{n:.2f}" for n in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="aigw-bench-rls-") as tmp:
        workdir = Path(tmp)
        script = workdir / "chat.lua"
        datapath.lua_script(script, scenario)
        with script.open("a") as lua:
            lua.write(f'wrk.headers["{TENANT_HEADER}"] = "{TENANT}"\n')
        print(datapath.machine_line().replace("the gateway or LiteLLM", "Envoy, the RLS"))
        print(
            f"{args.duration:g} s per row after {args.warmup:g} s warm-up; wrk -t1; ~{datapath.REQUEST_BYTES} B "
            f"OpenAI chat requests; ratelimit filter timeout {args.rls_timeout:g} s\n"
        )
        notes: list[str] = []
        results: dict[tuple[str, int], Measured] = {}
        print(datapath.table_header(COLUMNS), flush=True)
        upstream = datapath.start_upstream(workdir)
        try:
            if any(r.startswith("rls") for r in rows):
                probe = run_row(PROBE, workdir, upstream, script, body, args, results)
                notes.append(f"probe, the same two rate limits in RouteAction.rate_limits instead: {probe}")
            for name in rows:
                notes.append(f"{name}: {run_row(name, workdir, upstream, script, body, args, results)}")
        finally:
            upstream.stop()
        print("\nChecks:\n" + "\n".join(f"- {note}" for note in notes))
        print(
            "\n- CPU: Envoy's process and the RLS's process from /proc/<pid>/stat over the measured run, per request "
            "wrk completed; 'vs bare' compares with the bare row at the same concurrency.\n"
            "- RLS descriptors/req: the descriptors the RLS received during the measured run per completed request, "
            f"by hits_addend (0: admission at request time; {TOTAL_TOKENS}: the charge at stream done); requests "
            "that wrk cut at the end of a run add a little.\n"
            "- RLS call errors: the ratelimit filter's `error` counter (calls that timed out or failed; the "
            "request went on, failure_mode_deny false), and per completed request.\n"
            f"- load average before the run: {load_before}; other processes on the machine add noise."
        )
        print(f"\n(total run time {time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    main()
