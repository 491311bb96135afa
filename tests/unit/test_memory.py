"""MemoryTrimmer: free memory goes back to the system once a burst of activity is over."""

from __future__ import annotations

import asyncio
import inspect

from aigw_xds.memory import MemoryTrimmer, _malloc_trim
from aigw_xds.xds.server import AggregatedDiscoveryService


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_nothing_is_trimmed_without_activity_and_a_burst_is_trimmed_once():
    async def scenario() -> None:
        trims: list[int] = []
        trimmer = MemoryTrimmer(quiet=0.05, trim=lambda: trims.append(1))
        stop = asyncio.Event()
        task = asyncio.create_task(trimmer.run(stop))
        await asyncio.sleep(0.2)
        assert trims == []  # nothing happened, nothing to give back
        for _ in range(5):  # one burst
            trimmer.poke("default/gw")
        await _until(lambda: trims)
        await asyncio.sleep(0.2)
        assert len(trims) == 1
        trimmer.poke()  # the next burst
        await _until(lambda: len(trims) == 2)
        stop.set()
        await asyncio.wait_for(task, 5)
        assert trimmer.trims == 2

    asyncio.run(scenario())


def test_stop_ends_it_while_waiting_for_quiet():
    async def scenario() -> None:
        trimmer = MemoryTrimmer(quiet=60, trim=lambda: None)
        stop = asyncio.Event()
        task = asyncio.create_task(trimmer.run(stop))
        trimmer.poke()
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 5)
        assert trimmer.trims == 0

    asyncio.run(scenario())


def test_glibc_malloc_trim_is_found_and_runs():
    trim = _malloc_trim()
    assert trim is not None  # this machine runs glibc (Debian)
    trim()


def test_ads_answers_are_written_not_yielded():
    """gRPC's loop over an async-generator handler holds the message it last yielded until the next
    one, so every idle stream of a fleet kept its last answer (about 1 MB per node after a connect
    at 1,000 routes, hack/bench_fleet.py). The ADS handlers write each answer themselves."""
    for method in (
        AggregatedDiscoveryService.StreamAggregatedResources,
        AggregatedDiscoveryService.DeltaAggregatedResources,
    ):
        assert inspect.iscoroutinefunction(method)
        assert not inspect.isasyncgenfunction(method)


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_a_stream_keeps_its_node_without_the_memory_of_its_extensions():
    """Envoy 1.40's first request carries a 61 KB node, 60 KB of it the extensions it lists. What a
    stream keeps of it must not hold that memory: a copy whose extensions are cleared did (upb frees
    nothing before the whole message goes), 130 KB per connected node. 400 nodes kept that way
    grow the heap by about 52 MB; kept as they should be, by well under 1 MB."""
    from envoy.config.core.v3 import base_pb2
    from envoy.service.discovery.v3 import discovery_pb2

    from aigw_xds.xds.server import _node_kept

    node = base_pb2.Node(id="envoy-1", cluster="default/gw", user_agent_name="envoy")
    for i in range(516):
        type_url = f"envoy.extensions.x{i:03d}.v3.X" * 4
        node.extensions.add(name=f"envoy.filters.x{i:03d}", category="envoy.filters.http", type_urls=[type_url])
    wire = discovery_pb2.DiscoveryRequest(node=node).SerializeToString()
    assert len(wire) > 60_000
    trim = _malloc_trim()
    assert trim is not None
    trim()
    before = _rss_kb()
    kept = [_node_kept(discovery_pb2.DiscoveryRequest.FromString(wire).node) for _ in range(400)]
    trim()
    grown_kb = _rss_kb() - before
    assert all(k.id == "envoy-1" and not k.extensions for k in kept)
    assert grown_kb < 10_000, f"{grown_kb} KB for {len(kept)} kept nodes"
