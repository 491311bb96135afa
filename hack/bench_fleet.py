#!/usr/bin/env python3
"""Fleet load driver: one control plane, many simulated Envoys, a one-route edit and a full restart.

It writes a configuration of N routes over M backends (bench_compile's generator), starts
`aigw-xds serve --no-translator` on it as a subprocess, and connects C simulated Envoy nodes over
ADS (half delta, half SotW by default), spread over worker processes with one grpc.aio event loop
each. Every node has its own channel (its own TCP connection), a node id and the fleet in
node.cluster ("default/gw"), and behaves like Envoy:

- SotW: wildcard CDS; EDS for the EDS clusters it got (service_name or cluster name); wildcard
  LDS once its clusters have their endpoints; RDS for the route configurations its listeners name
  (wildcard SRDS for a listener whose routes come in scopes, and RDS for what the scopes name).
  Every response is ACKed (version_info and nonce of the response, and the subscribed names).
- Delta: the same subscriptions (legacy wildcard for CDS/LDS, names for EDS/RDS, subscribe and
  unsubscribe as clusters and listeners change), ACKed by nonce, and on reconnect every type's
  first request carries initial_resource_versions (what the node has).
- When the stream ends it reconnects with jittered exponential backoff, like Envoy's (base
  --retry-base, capped at --retry-max; Envoy's cap is 30 s, lower here so that a restart measures
  the control plane, not the clients' backoff), re-sending every subscription.

Then it edits one route's model in the YAML (as bench_compile's one-route edit does; even edits
put it back), --edits times, and measures from the file save to each node's ACK of the response that
brought it the new version: p50/p99/max over nodes, bytes received per node (delta vs SotW), and
the control plane's CPU seconds and peak RSS (from /proc/<pid>). RSS per connected node is (RSS with
C nodes synced - RSS before any connected) / C, at rest (2 s after the connect, and again after the
edits). Last, the control plane is stopped and started again on the same configuration, every node
reconnects, and the same figures are reported, with the resources resent (a delta node that
reconnects with initial_resource_versions should be sent none).

The nodes do not subscribe to SDS (the generated configuration has no secrets). Their first request
carries a node of the size Envoy 1.40's has (61 KB: the 516 extensions it lists).

Usage: hack/bench_fleet.py [--routes 1000] [--backends 200] [--clients 1000] [--delta-share 0.5]
                           [--edits 5] [--workers 1] [--translator [--route-scopes-from RULES]]
With --translator the control plane runs its translator, and a listener whose rules match at least
--route-scopes-from models (serve's default: 200) has its routes in scopes: the nodes then
subscribe to the scopes (SRDS, a wildcard) and to the route configurations they name, as Envoy does.
With BENCH_PROFILE=DIR in the environment the control plane runs under cProfile (DIR/serve-N.prof).
Prints the machine and Markdown tables. Figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.connection
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import scoped_route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import discovery_pb2

from aigw_xds.processes import free_port
from aigw_xds.xds import type_urls

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # hack/ as a namespace package
from hack.bench_compile import GATEWAY, ROUTES_PER_FILE, backends_text, write_routes

FLEET = "default/gw"


def _envoy_node() -> base_pb2.Node:
    """A node of the size and shape Envoy 1.40 sends on its first request: its user agent and build
    version, and the list of the extensions it was built with (516 of them, 60 KB of the node's 61)."""
    node = base_pb2.Node(cluster=FLEET, user_agent_name="envoy")
    node.user_agent_build_version.version.major_number = 1
    node.user_agent_build_version.version.minor_number = 40
    node.user_agent_build_version.metadata.fields["build.type"].string_value = "RELEASE"
    for i in range(516):
        category = f"envoy.filters.http.category{i % 40}"
        node.extensions.add(
            name=f"envoy.filters.extension_number_{i:03d}",
            category=category,
            type_urls=[f"envoy.extensions.extension_number_{i:03d}.v3.Config"],
        )
    return node


ENVOY_NODE = _envoy_node()

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 256 << 20),
    ("grpc.max_send_message_length", 256 << 20),
    # One connection per node, as every Envoy has its own (gRPC would otherwise share one
    # subchannel between channels with the same target and arguments).
    ("grpc.use_local_subchannel_pool", 1),
    # gRPC's own reconnect backoff (1 s, growing to 120 s) would hide ours.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
WILDCARD_TYPES = (type_urls.CLUSTER, type_urls.LISTENER, type_urls.SCOPED_ROUTE)
TYPES = (type_urls.CLUSTER, type_urls.ENDPOINT, type_urls.LISTENER, type_urls.SCOPED_ROUTE, type_urls.ROUTE)
# A listener whose routes come in scopes depends on this name (for the SRDS subscription it makes).
SCOPES = "(scopes)"


# --------------------------------------------------------------------------------------------
# What a node learns from clusters and listeners (shared by the nodes of a worker, by content)


class Derived:
    """EDS names of a cluster, RDS names of a listener (SCOPES for one whose routes come in scopes)
    and the RDS name of a scope, memoized on the serialized resource: a thousand nodes receive the
    same bytes."""

    def __init__(self) -> None:
        self._memo: dict[tuple[str, bytes], tuple[str, frozenset[str]]] = {}

    def of(self, type_url: str, value: bytes) -> tuple[str, frozenset[str]]:
        """(resource name, the names of the type it depends on)."""
        key = (type_url, value)
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) > 200_000:
                self._memo.clear()
            found = self._memo[key] = self._parse(type_url, value)
        return found

    @staticmethod
    def _parse(type_url: str, value: bytes) -> tuple[str, frozenset[str]]:
        if type_url == type_urls.CLUSTER:
            cluster = cluster_pb2.Cluster.FromString(value)
            if cluster.type == cluster_pb2.Cluster.EDS:
                return cluster.name, frozenset([cluster.eds_cluster_config.service_name or cluster.name])
            return cluster.name, frozenset()
        if type_url == type_urls.SCOPED_ROUTE:
            scope = scoped_route_pb2.ScopedRouteConfiguration.FromString(value)
            return scope.name, frozenset([scope.route_configuration_name])
        listener = listener_pb2.Listener.FromString(value)
        routes = set()
        for chain in [*listener.filter_chains, listener.default_filter_chain]:
            for network_filter in chain.filters:
                manager = hcm_pb2.HttpConnectionManager()
                if network_filter.typed_config.Unpack(manager) and manager.HasField("rds"):
                    routes.add(manager.rds.route_config_name)
                elif manager.HasField("scoped_routes"):
                    routes.add(SCOPES)
        return listener.name, frozenset(routes)


def _name_of(type_url: str, value: bytes, derived: Derived) -> str:
    """The name of a SotW resource (EDS and RDS are not parsed beyond their name's field)."""
    if type_url in WILDCARD_TYPES:
        return derived.of(type_url, value)[0]
    # ClusterLoadAssignment.cluster_name and RouteConfiguration.name are both field 1, a string.
    if value[:1] == b"\x0a":
        length, i, shift = 0, 1, 0
        while True:
            byte = value[i]
            length |= (byte & 0x7F) << shift
            i += 1
            shift += 7
            if not byte & 0x80:
                break
        return value[i : i + length].decode()
    return ""


# --------------------------------------------------------------------------------------------
# A simulated Envoy


@dataclass
class PhaseStats:
    """What one node saw since the phase was marked."""

    bytes: int = 0
    responses: int = 0
    resources: int = 0
    removed: int = 0
    first_ack: float = 0.0  # ACK of the response that brought the expected version
    last_ack: float = 0.0
    reconnected: float = 0.0  # when a new stream opened (restart)
    answered: set[str] = field(default_factory=set)  # types answered on the current stream


@dataclass
class TypeState:
    names: set[str] = field(default_factory=set)  # EDS/RDS subscriptions
    # name -> version (delta) or "" (SotW), and what it depends on / whether it holds the marker
    have: dict[str, str] = field(default_factory=dict)
    depends: dict[str, frozenset[str]] = field(default_factory=dict)
    marked: set[str] = field(default_factory=set)
    nonce: str = ""
    version: str = ""  # SotW version_info last ACKed
    requested: bool = False


class Node:
    def __init__(self, index: int, delta: bool, target: str, derived: Derived, retry: tuple[float, float]) -> None:
        self.id = f"bench-envoy-{index}"
        self.delta = delta
        self.target = target
        self.derived = derived
        self.retry_base, self.retry_max = retry
        self.types: dict[str, TypeState] = {t: TypeState() for t in TYPES}
        self.stats = PhaseStats()
        self.marker = b""
        self.expect: bool | None = None
        self.synced_at = 0.0  # initial configuration complete
        self.started = 0.0
        self.streams = 0
        self._call: Any = None
        self._first = True
        self.stopping = False

    # ---- state

    def has_marker(self) -> bool:
        return any(self.types[type_urls.ROUTE].marked)

    def scoped(self) -> bool:
        """Whether a listener's routes come in scopes (Envoy then subscribes to them)."""
        return any(SCOPES in names for names in self.types[type_urls.LISTENER].depends.values())

    def complete(self) -> bool:
        """Clusters, endpoints, listeners, scopes where listeners have them, and routes all
        received (the routes non-empty)."""
        needed = [t for t in TYPES if t != type_urls.SCOPED_ROUTE or self.scoped()]
        return all(self.types[t].requested for t in needed) and bool(self.types[type_urls.ROUTE].have)

    # ---- the stream

    async def run(self) -> None:
        channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        variant = "DeltaAggregatedResources" if self.delta else "StreamAggregatedResources"
        request_type = discovery_pb2.DeltaDiscoveryRequest if self.delta else discovery_pb2.DiscoveryRequest
        response_type = discovery_pb2.DeltaDiscoveryResponse if self.delta else discovery_pb2.DiscoveryResponse
        method = channel.stream_stream(
            ADS + variant,
            request_serializer=request_type.SerializeToString,
            response_deserializer=lambda data: (len(data), response_type.FromString(data)),
        )
        self.started = time.time()
        attempt = 0
        try:
            while not self.stopping:
                self._call = call = method()
                self._first = True
                try:
                    await self._open()
                    while True:
                        message: Any = await call.read()
                        if message is grpc.aio.EOF:
                            break
                        attempt = 0
                        size, response = message
                        await self._on_response(size, response)
                except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError, ConnectionError):
                    pass
                if self.stopping:
                    break
                # Envoy's jittered exponential backoff.
                delay = random.uniform(0, min(self.retry_max, self.retry_base * 2**attempt))
                attempt += 1
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            pass
        finally:
            await channel.close(grace=None)

    async def _send(self, **fields: Any) -> None:
        request: Any
        if self.delta:
            request = discovery_pb2.DeltaDiscoveryRequest(**fields)
        else:
            request = discovery_pb2.DiscoveryRequest(**fields)
        if self._first:
            request.node.CopyFrom(ENVOY_NODE)
            request.node.id = self.id
            self._first = False
        await self._call.write(request)

    async def _open(self) -> None:
        """A new stream: every type subscribed so far, in ADS order (CDS alone on a first start)."""
        self.streams += 1
        if self.streams > 1:
            self.stats.reconnected = time.time()
            self.stats.answered = set()
        sent = False
        for type_url in TYPES:
            state = self.types[type_url]
            if not state.requested and (type_url != type_urls.CLUSTER or sent):
                continue
            state.requested = True
            state.nonce = ""
            sent = True
            await self._subscribe(type_url, initial=True)

    async def _subscribe(
        self, type_url: str, *, initial: bool, added: set[str] | None = None, gone: set[str] | None = None
    ) -> None:
        state = self.types[type_url]
        wildcard = type_url in WILDCARD_TYPES
        if self.delta:
            if initial:
                await self._send(
                    type_url=type_url,
                    resource_names_subscribe=[] if wildcard else sorted(state.names),
                    initial_resource_versions=state.have,
                )
            else:
                await self._send(
                    type_url=type_url,
                    resource_names_subscribe=sorted(added or ()),
                    resource_names_unsubscribe=sorted(gone or ()),
                )
        else:
            await self._send(
                type_url=type_url,
                version_info=state.version,
                response_nonce=state.nonce,
                resource_names=[] if wildcard else sorted(state.names),
            )

    async def _on_response(self, size: int, response: Any) -> None:
        type_url = response.type_url
        state = self.types[type_url]
        stats = self.stats
        stats.bytes += size
        stats.responses += 1
        stats.resources += len(response.resources)
        stats.answered.add(type_url)
        if self.delta:
            stats.removed += len(response.removed_resources)
            for resource in response.resources:
                value = resource.resource.value
                self._keep(state, type_url, resource.name, resource.version, value)
            for name in response.removed_resources:
                state.have.pop(name, None)
                state.depends.pop(name, None)
                state.marked.discard(name)
            state.nonce = response.nonce
            await self._send(type_url=type_url, response_nonce=response.nonce)
        else:
            if type_url in WILDCARD_TYPES:
                state.have, state.depends, state.marked = {}, {}, set()
            for packed in response.resources:
                value = packed.value
                self._keep(state, type_url, _name_of(type_url, value, self.derived), "", value)
            state.nonce = response.nonce
            state.version = response.version_info
            await self._subscribe(type_url, initial=False)  # the ACK
        now = time.time()
        stats.last_ack = now
        if self.expect is not None and not stats.first_ack and self.has_marker() == self.expect:
            stats.first_ack = now
        if type_url == type_urls.CLUSTER:
            await self._follow(type_urls.ENDPOINT, state)
        elif type_url == type_urls.LISTENER:
            scopes = self.types[type_urls.SCOPED_ROUTE]
            if self.scoped() and not scopes.requested:
                scopes.requested = True
                await self._subscribe(type_urls.SCOPED_ROUTE, initial=True)
            await self._follow(type_urls.ROUTE, state, scopes)
        elif type_url == type_urls.SCOPED_ROUTE:
            await self._follow(type_urls.ROUTE, self.types[type_urls.LISTENER], state)
        if type_url in (type_urls.ENDPOINT, type_urls.CLUSTER) and not self.types[type_urls.LISTENER].requested:
            eds = self.types[type_urls.ENDPOINT]
            if eds.names <= set(eds.have) or not eds.names:
                # Clusters warmed: Envoy asks for listeners now.
                self.types[type_urls.LISTENER].requested = True
                await self._subscribe(type_urls.LISTENER, initial=True)
        if not self.synced_at and self.complete():
            self.synced_at = now

    def _keep(self, state: TypeState, type_url: str, name: str, version: str, value: bytes) -> None:
        state.have[name] = version
        if type_url in WILDCARD_TYPES:
            state.depends[name] = self.derived.of(type_url, value)[1]
        elif type_url == type_urls.ROUTE:
            if self.marker and self.marker in value:
                state.marked.add(name)
            else:
                state.marked.discard(name)

    async def _follow(self, type_url: str, *parents: TypeState) -> None:
        """Subscribe to what the clusters (listeners and scopes) name, drop what they no longer name."""
        state = self.types[type_url]
        wanted: set[str] = set().union(*(names for parent in parents for names in parent.depends.values()))
        wanted.discard(SCOPES)
        added, gone = wanted - state.names, state.names - wanted
        if not added and not gone and state.requested:
            return
        state.names = wanted
        for name in gone:
            state.have.pop(name, None)
            state.marked.discard(name)
        if self.delta and state.requested:
            await self._subscribe(type_url, initial=False, added=added, gone=gone)
        else:
            first = not state.requested
            state.requested = True
            await self._subscribe(type_url, initial=first)

    async def close(self) -> None:
        self.stopping = True
        if self._call is not None:
            self._call.cancel()


# --------------------------------------------------------------------------------------------
# A worker process: some of the nodes, one event loop


def worker_main(
    conn: multiprocessing.connection.Connection,
    first: int,
    count: int,
    delta_share: float,
    target: str,
    retry: tuple[float, float],
) -> None:
    asyncio.run(_worker(conn, first, count, delta_share, target, retry))


async def _worker(
    conn: multiprocessing.connection.Connection,
    first: int,
    count: int,
    delta_share: float,
    target: str,
    retry: tuple[float, float],
) -> None:
    loop = asyncio.get_running_loop()
    derived = Derived()
    # Delta nodes are spread evenly over the indices (the first of every pair with a share of 0.5).
    nodes = [
        Node(i, int((i + 1) * delta_share) > int(i * delta_share), target, derived, retry)
        for i in range(first, first + count)
    ]
    tasks: list[asyncio.Task] = []
    while True:
        command, args = await loop.run_in_executor(None, conn.recv)
        if command == "connect":
            cpu = time.process_time()
            tasks = [asyncio.create_task(node.run()) for node in nodes]
            ok = await _until(lambda: all(n.complete() for n in nodes), args["timeout"])
            await _quiet(nodes, args["quiet"], args["timeout"])
            conn.send({"ok": ok, "cpu": time.process_time() - cpu, "nodes": [_report(n) for n in nodes]})
        elif command == "mark":
            for node in nodes:
                node.stats = PhaseStats()
                node.marker = args["marker"]
                node.expect = args["expect"]
            conn.send({"cpu": time.process_time()})
        elif command == "settle":
            cpu = args["cpu"]
            if args["restart"]:

                def done() -> bool:
                    return all(n.stats.reconnected and n.stats.answered >= _expected_answers(n) for n in nodes)

            else:

                def done() -> bool:
                    return all(n.stats.first_ack for n in nodes)

            ok = await _until(done, args["timeout"])
            await _quiet(nodes, args["quiet"], args["timeout"])
            conn.send({"ok": ok, "cpu": time.process_time() - cpu, "nodes": [_report(n) for n in nodes]})
        elif command == "stop":
            for node in nodes:
                await node.close()
            await asyncio.gather(*tasks, return_exceptions=True)
            conn.send({})
            return


def _expected_answers(node: Node) -> set[str]:
    """The types a reconnected node is answered for: delta answers the wildcard types always (even
    if empty) and the others only if something changed; SotW answers every first request."""
    requested = {t for t in TYPES if node.types[t].requested}
    return requested & set(WILDCARD_TYPES) if node.delta else requested


async def _until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def _quiet(nodes: list[Node], quiet: float, timeout: float) -> None:
    """Wait until no node has received anything for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = max((n.stats.last_ack for n in nodes), default=0.0)
        if time.time() - last >= quiet:
            return
        await asyncio.sleep(0.05)


def _report(node: Node) -> dict[str, Any]:
    s = node.stats
    return {
        "delta": node.delta,
        "bytes": s.bytes,
        "responses": s.responses,
        "resources": s.resources,
        "removed": s.removed,
        "first_ack": s.first_ack,
        "last_ack": s.last_ack,
        "reconnected": s.reconnected,
        "started": node.started,
        "synced_at": node.synced_at,
    }


# --------------------------------------------------------------------------------------------
# The control plane, seen from outside


class ControlPlane:
    def __init__(self, config: Path, port: int, log_path: Path, options: list[str]) -> None:
        self.config = config
        self.options = options  # serve's translator options
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.started = 0.0
        self._log_offset = 0

    def start(self, timeout: float) -> float:
        """Start and wait until it listens; the time it took."""
        self.started = time.time()
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        command = [sys.executable, *_profiler(), "-m", "aigw_xds", "--log-format", "json", "serve"]
        command += ["--config", str(self.config)]
        command += ["--listen", f"127.0.0.1:{self.port}", *self.options]
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not any(e.get("event") == "xds_server_listening" for e in self.events()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("control plane did not start:\n" + self.log_path.read_text()[-3000:])
            time.sleep(0.05)
        return time.time() - self.started

    def events(self, since: float = 0.0) -> Iterator[dict[str, Any]]:
        """This process's log entries (JSON lines) at or after `since` (epoch seconds)."""
        with self.log_path.open("rb") as f:
            f.seek(self._log_offset)
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if since and _epoch(entry.get("timestamp", "")) < since:
                    continue
                yield entry

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def cpu(self) -> float:
        """User + system CPU seconds so far."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory(self) -> tuple[float, float]:
        """(RSS, peak RSS) in MB."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()

        def kb(key: str) -> float:
            found = re.search(rf"^{key}:\s*(\d+) kB", status, re.M)
            return int(found.group(1)) / 1024 if found else 0.0

        return kb("VmRSS"), kb("VmHWM")


_profiles = 0


def _profiler() -> list[str]:
    """With BENCH_PROFILE=DIR, the control plane runs under cProfile (one DIR/serve-N.prof per start)."""
    global _profiles
    directory = os.environ.get("BENCH_PROFILE")
    if not directory:
        return []
    _profiles += 1
    return ["-m", "cProfile", "-o", str(Path(directory) / f"serve-{_profiles}.prof")]


def _epoch(timestamp: str) -> float:
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


# --------------------------------------------------------------------------------------------
# The driver


class Workers:
    def __init__(self, count: int, clients: int, delta_share: float, target: str, retry: tuple[float, float]) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[multiprocessing.connection.Connection] = []
        self.processes = []
        per = -(-clients // count)
        for first in range(0, clients, per):
            parent, child = context.Pipe()
            process = context.Process(
                target=worker_main,
                args=(child, first, min(per, clients - first), delta_share, target, retry),
                daemon=True,
            )
            process.start()
            self.conns.append(parent)
            self.processes.append(process)

    def ask(self, command: str, **args: Any) -> list[dict[str, Any]]:
        for conn in self.conns:
            conn.send((command, args))
        return [conn.recv() for conn in self.conns]

    def close(self) -> None:
        try:
            self.ask("stop")
        finally:
            for process in self.processes:
                process.join(timeout=10)
                if process.is_alive():
                    process.terminate()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def kb(value: float) -> str:
    return f"{value / 1024:.1f}"


def machine() -> str:
    cpu = "unknown CPU"
    found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    if found:
        cpu = found.group(1).strip()
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, CPython {platform.python_version()}"
    )


@dataclass
class Phase:
    name: str
    seconds: list[float]  # per node
    nodes: list[dict[str, Any]]
    cpu: float  # control plane
    driver_cpu: float
    rss: float
    peak: float
    published: float | None = None  # save -> snapshot published
    ok: bool = True

    def row(self) -> list[Any]:
        delta = [n for n in self.nodes if n["delta"]]
        sotw = [n for n in self.nodes if not n["delta"]]

        def mean_bytes(group: list[dict[str, Any]]) -> str:
            return kb(statistics.mean(n["bytes"] for n in group)) if group else "-"

        def resent(group: list[dict[str, Any]]) -> str:
            return f"{statistics.mean(n['resources'] for n in group):.0f}" if group else "-"

        return [
            self.name + ("" if self.ok else " (timed out)"),
            f"{self.published:.3f}" if self.published is not None else "-",
            f"{pct(self.seconds, 0.5):.3f}",
            f"{pct(self.seconds, 0.99):.3f}",
            f"{max(self.seconds, default=float('nan')):.3f}",
            mean_bytes(delta),
            mean_bytes(sotw),
            resent(delta),
            resent(sotw),
            f"{self.cpu:.2f}",
            f"{self.driver_cpu:.2f}",
            f"{self.rss:.0f}",
            f"{self.peak:.0f}",
        ]


def by_mode(phase: Phase) -> list[Any]:
    """A phase's latency percentiles for delta and SotW nodes apart."""
    cells: list[Any] = [phase.name]
    for delta in (True, False):
        seconds = [s for s, n in zip(phase.seconds, phase.nodes, strict=True) if n["delta"] == delta]
        cells += [f"{pct(seconds, 0.5):.3f}", f"{pct(seconds, 0.99):.3f}", f"{max(seconds, default=float('nan')):.3f}"]
    return cells


MODE_HEADER = ["phase", "delta p50 s", "delta p99 s", "delta max s", "SotW p50 s", "SotW p99 s", "SotW max s"]

HEADER = [
    "phase",
    "save → published s (restart: stop → listening)",
    "p50 s",
    "p99 s",
    "max s",
    "KB per delta node",
    "KB per SotW node",
    "resources per delta node",
    "resources per SotW node",
    "control plane CPU s",
    "driver CPU s",
    "RSS MB",
    "peak RSS MB",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--backends", type=int, default=200)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--delta-share", type=float, default=0.5, help="share of delta nodes (the rest SotW)")
    parser.add_argument("--edits", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1, help="driver processes (one event loop each)")
    parser.add_argument("--retry-base", type=float, default=0.5, help="reconnect backoff base, s (Envoy: 0.5)")
    parser.add_argument("--retry-max", type=float, default=1.0, help="reconnect backoff cap, s (Envoy: 30)")
    parser.add_argument("--timeout", type=float, default=300.0, help="per phase, s")
    parser.add_argument("--quiet", type=float, default=1.0, help="a phase ends after this long with no response, s")
    parser.add_argument(
        "--translator",
        action="store_true",
        help="serve with its in-process translator (default: --no-translator); route scopes need it",
    )
    parser.add_argument("--route-scopes-from", type=int, help="serve's --route-scopes-from (with --translator)")
    args = parser.parse_args()
    if args.translator:
        options = ["--translator-listen", f"127.0.0.1:{free_port()}", "--translator-workers", "1"]
        if args.route_scopes_from is not None:
            options += ["--route-scopes-from", str(args.route_scopes_from)]
    else:
        options = ["--no-translator", "--translator-listen", ""]

    directory = Path(tempfile.mkdtemp(prefix="aigw-bench-fleet-"))
    (directory / "gateway.yaml").write_text(GATEWAY)
    (directory / "backends.yaml").write_text(backends_text(args.backends))
    for first in range(0, args.routes, ROUTES_PER_FILE):
        write_routes(directory, first, args.routes, args.backends)
    edited = args.routes // 2
    marker = f"model-{edited}-edited".encode()

    port = free_port()
    plane = ControlPlane(directory, port, directory / "control-plane.log", options)
    workers: Workers | None = None
    phases: list[Phase] = []
    try:
        startup = plane.start(args.timeout)
        time.sleep(1.0)
        rss0, _ = plane.memory()
        cpu0 = plane.cpu()

        # Connect every node: the cold start of a fleet.
        workers = Workers(
            args.workers, args.clients, args.delta_share, f"127.0.0.1:{port}", (args.retry_base, args.retry_max)
        )
        replies = workers.ask("connect", timeout=args.timeout, quiet=args.quiet)
        nodes = [n for r in replies for n in r["nodes"]]
        rss_c, peak = plane.memory()
        phases.append(
            Phase(
                "connect (cold)",
                [n["synced_at"] - n["started"] if n["synced_at"] else float("nan") for n in nodes],
                nodes,
                plane.cpu() - cpu0,
                sum(r["cpu"] for r in replies),
                rss_c,
                peak,
                ok=all(r["ok"] for r in replies),
            )
        )
        time.sleep(2.0)  # at rest: the control plane gives a burst's memory back after 1 s of quiet
        rss_c, _ = plane.memory()
        per_node_kb = (rss_c - rss0) * 1024 / args.clients

        # Edits: one route's model changed, then put back.
        for k in range(1, args.edits + 1):
            expect = k % 2 == 1
            marks = workers.ask("mark", marker=marker, expect=expect)
            cpu_before = plane.cpu()
            directory_file = edited - edited % ROUTES_PER_FILE
            saved = time.time()
            write_routes(directory, directory_file, args.routes, args.backends, edited=edited if expect else None)
            replies = [
                r for r in _ask_each(workers, "settle", marks, timeout=args.timeout, quiet=args.quiet, restart=False)
            ]
            nodes = [n for r in replies for n in r["nodes"]]
            published = next(
                (_epoch(e["timestamp"]) - saved for e in plane.events(saved) if e.get("event") == "snapshot_published"),
                None,
            )
            rss, peak = plane.memory()
            phases.append(
                Phase(
                    f"edit {k}",
                    [n["first_ack"] - saved if n["first_ack"] else float("nan") for n in nodes],
                    nodes,
                    plane.cpu() - cpu_before,
                    sum(r["cpu"] for r in replies),
                    rss,
                    peak,
                    published,
                    ok=all(r["ok"] for r in replies),
                )
            )

        time.sleep(2.0)
        rss_rest, _ = plane.memory()

        # A full restart: every node reconnects (delta nodes with initial_resource_versions).
        marks = workers.ask("mark", marker=marker, expect=None)
        stopped = time.time()
        plane.stop()
        startup_again = plane.start(args.timeout)
        replies = _ask_each(workers, "settle", marks, timeout=args.timeout, quiet=args.quiet, restart=True)
        nodes = [n for r in replies for n in r["nodes"]]
        rss, peak = plane.memory()
        restart = Phase(
            "restart",
            [n["last_ack"] - stopped if n["last_ack"] else float("nan") for n in nodes],
            nodes,
            plane.cpu(),
            sum(r["cpu"] for r in replies),
            rss,
            peak,
            plane.started - stopped + startup_again,
            ok=all(r["ok"] for r in replies),
        )
        phases.append(restart)
    finally:
        if workers is not None:
            workers.close()
        plane.stop()

    delta_count = sum(1 for n in phases[0].nodes if n["delta"])
    print(f"machine: {machine()}")
    print(
        f"\n{args.routes} routes, {args.backends} backends, {args.clients} nodes ({delta_count} delta, "
        f"{args.clients - delta_count} SotW), {args.workers} driver process(es); control plane started in "
        f"{startup:.2f} s, {rss0:.0f} MB RSS before any node; restarted in {startup_again:.2f} s "
        f"(stop → listening {plane.started - stopped + startup_again:.2f} s)\n"
    )
    print(table(HEADER, [p.row() for p in phases]))
    print()
    print(table(MODE_HEADER, [by_mode(p) for p in phases]))
    print(
        f"\nRSS per connected node: {per_node_kb:.1f} KB (({rss_c:.0f} MB with {args.clients} nodes synced "
        f"- {rss0:.0f} MB with none) / {args.clients}, at rest 2 s after the connect); at rest after the edits: "
        f"{rss_rest:.0f} MB ({(rss_rest - rss0) * 1024 / args.clients:.1f} KB per node)"
    )
    print(
        "\nconnect: from each node's start to its complete configuration; edit: from the file save to "
        "each node's ACK of the response that brought it the edit; restart: from the stop of the control plane to "
        "each node's last ACK after reconnecting. KB and resources: received per node in the phase. CPU: the control "
        "plane's user+system seconds in the phase (restart: the new process's total); driver CPU: the simulated "
        "nodes' processes (near wall time x processes means the driver, not the control plane, was the limit)."
    )
    if all(p.ok for p in phases):
        shutil.rmtree(directory, ignore_errors=True)
        return 0
    print(f"\nsome nodes did not settle; the configuration and the control plane's log are in {directory}")
    return 1


def _ask_each(workers: Workers, command: str, marks: list[dict[str, Any]], **args: Any) -> list[dict[str, Any]]:
    """A command whose arguments differ per worker (each worker's CPU time at the mark)."""
    for conn, mark in zip(workers.conns, marks, strict=True):
        conn.send((command, {**args, "cpu": mark["cpu"]}))
    return [conn.recv() for conn in workers.conns]


if __name__ == "__main__":
    sys.exit(main())
