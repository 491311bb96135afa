"""MemoryTrimmer: free memory goes back to the system once a burst of activity is over."""

from __future__ import annotations

import asyncio
import contextlib
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


def test_what_a_burst_kept_is_forgotten_once_it_is_over_even_without_malloc_trim():
    """The answers the fleet's streams shared (SnapshotCache.forget_answers) go when the burst is
    over, before malloc_trim, and where there is no malloc_trim too."""

    async def scenario() -> None:
        events: list[str] = []
        for trim in (lambda: events.append("trim"), None):
            events.clear()
            trimmer = MemoryTrimmer(quiet=0.05, trim=trim, forget=lambda: events.append("forget"))
            if trim is None:
                trimmer._trim = None  # as on a system without glibc's malloc_trim
            stop = asyncio.Event()
            task = asyncio.create_task(trimmer.run(stop))
            trimmer.poke()
            await _until(lambda: "forget" in events)
            await asyncio.sleep(0.2)
            assert events == (["forget", "trim"] if trim is not None else ["forget"])
            stop.set()
            await asyncio.wait_for(task, 5)

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


class _Context:
    """The part of a grpc.aio servicer context an ADS stream uses; read() hands out the requests
    given, then waits as an idle Envoy's stream does."""

    def __init__(self, requests: list) -> None:
        self.requests = requests
        self.written: list = []
        self._idle: asyncio.Future = asyncio.get_running_loop().create_future()

    async def read(self):
        return self.requests.pop(0) if self.requests else await self._idle

    async def write(self, message) -> None:
        self.written.append(message)

    async def abort(self, code, details):
        raise AssertionError(f"aborted: {code} {details}")

    def invocation_metadata(self):
        return ()

    def auth_context(self):
        return {}

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5000"


def test_an_idle_stream_holds_no_request():
    """An Envoy that sends its node on every request (no set_node_on_first_message_only) sends 61 KB
    each time: an idle stream must not keep its last one. gRPC's request iterator held it until
    the next; the stream reads with context.read() and keeps no reference while it waits."""
    import sys

    from envoy.config.core.v3 import base_pb2
    from envoy.service.discovery.v3 import discovery_pb2

    from aigw_xds.xds import type_urls
    from aigw_xds.xds.cache import SnapshotCache
    from aigw_xds.xds.server import Registry

    async def scenario() -> None:
        request = discovery_pb2.DiscoveryRequest(
            node=base_pb2.Node(id="envoy-1", cluster="default/gw"), type_url=type_urls.CLUSTER
        )
        context = _Context([request])
        alone = sys.getrefcount(request) - 1  # without the context's list
        ads = AggregatedDiscoveryService(SnapshotCache(), Registry())
        stream = asyncio.create_task(ads.StreamAggregatedResources(iter(()), context))  # type: ignore[arg-type]
        await _until(lambda: context.written)
        for _ in range(10):  # whatever runs after the answer, before the stream waits again
            await asyncio.sleep(0)
        assert (
            not context.requests
            and discovery_pb2.DiscoveryResponse.FromString(context.written[0]).type_url == type_urls.CLUSTER
        )
        held = sys.getrefcount(request) - alone
        stream.cancel()
        assert held == 0, f"the idle stream holds {held} reference(s) to its last request"

    asyncio.run(scenario())


def test_a_stream_whose_write_fails_is_cleaned_up_at_once():
    """A client that goes away while its answer is being written makes context.write raise. The
    stream's generator was left suspended, its cleanup waiting for the garbage collector, or for
    ever while something kept the exception (a logged traceback): the node stayed in the registry
    and subscribed to its fleet (found by review). The exception kept here stands for that log."""
    from envoy.config.core.v3 import base_pb2
    from envoy.service.discovery.v3 import discovery_pb2

    from aigw_xds.xds import type_urls
    from aigw_xds.xds.cache import SnapshotCache
    from aigw_xds.xds.server import Registry

    class Gone(Exception):
        pass

    class GoneOnWrite(_Context):
        async def write(self, message) -> None:
            raise Gone

    async def scenario() -> None:
        request = discovery_pb2.DiscoveryRequest(
            node=base_pb2.Node(id="envoy-1", cluster="default/gw"), type_url=type_urls.CLUSTER
        )
        cache, registry = SnapshotCache(), Registry()
        ads = AggregatedDiscoveryService(cache, registry)
        subscribed = len(cache._subscribers)
        stream = asyncio.create_task(ads.StreamAggregatedResources(iter(()), GoneOnWrite([request])))  # type: ignore[arg-type]
        await asyncio.wait({stream})
        kept = stream.exception()  # held, as a log record's traceback holds it
        assert isinstance(kept, Gone)
        assert registry.streams == {} and len(cache._subscribers) == subscribed

    asyncio.run(scenario())


def test_a_request_that_does_not_parse_ends_the_stream_as_invalid():
    """gRPC hands the handler a DecodeError for bytes that are no DiscoveryRequest: the stream ended
    with status OK, as if the client had closed it (found by review); it is INVALID_ARGUMENT."""
    from google.protobuf.message import DecodeError

    from aigw_xds.xds.cache import SnapshotCache
    from aigw_xds.xds.server import Registry

    class Garbled(_Context):
        async def read(self):
            raise DecodeError("Error parsing message")

        async def abort(self, code, details):
            self.aborted = (code, details)
            raise asyncio.CancelledError  # what grpc's abort does to the handler: it ends

    async def scenario() -> None:
        context = Garbled([])
        ads = AggregatedDiscoveryService(SnapshotCache(), Registry())
        with contextlib.suppress(asyncio.CancelledError):
            await ads.StreamAggregatedResources(iter(()), context)  # type: ignore[arg-type]
        import grpc

        assert context.aborted == (grpc.StatusCode.INVALID_ARGUMENT, "a request does not parse: Error parsing message")

    asyncio.run(scenario())
