"""A gRPC client that plays Envoy against the real ADS server, in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from aigw_xds.compile import compile_resources
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import BuildSettings, build_fleet
from aigw_xds.xds.cache import Snapshot, SnapshotCache, make_snapshot
from aigw_xds.xds.server import GRPC_SERVER_OPTIONS, Registry, add_services
from tests.resource_text import backend, gateway, resources, route

FLEET = "default/gw"


def snapshot_of(text: str) -> Snapshot:
    ir = compile_resources(resources(text)).gateways[FLEET]
    return make_snapshot(FLEET, build_fleet(ir, BuildSettings(translator_enabled=False)))


def config(models: dict[str, str], ports: dict[str, int]) -> str:
    return gateway() + route("r", models) + "".join(backend(name, port) for name, port in ports.items())


class FakeEnvoy:
    """One ADS stream: send requests, read responses in order."""

    def __init__(self, stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub, delta: bool, node: base_pb2.Node) -> None:
        self.delta = delta
        self.node = node
        self._requests: asyncio.Queue = asyncio.Queue()
        self._first = True

        async def requests() -> AsyncIterator:
            while True:
                item = await self._requests.get()
                if item is None:
                    return
                yield item

        method = stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources
        self.call = method(requests())

    async def send(self, **fields) -> None:
        cls = discovery_pb2.DeltaDiscoveryRequest if self.delta else discovery_pb2.DiscoveryRequest
        request = cls(**fields)
        if self._first:
            request.node.CopyFrom(self.node)
            self._first = False
        await self._requests.put(request)

    async def recv(self, timeout: float = 10.0):
        return await asyncio.wait_for(self.call.read(), timeout)

    async def ack(self, response, version: str | None = None, names: list[str] | None = None) -> None:
        if self.delta:
            await self.send(type_url=response.type_url, response_nonce=response.nonce)
        else:
            await self.send(
                type_url=response.type_url,
                response_nonce=response.nonce,
                version_info=response.version_info if version is None else version,
                resource_names=names or [],
            )

    async def nack(self, response, version: str, names: list[str] | None = None, message: str = "rejected") -> None:
        detail = status_pb2.Status(code=3, message=message)
        if self.delta:
            await self.send(type_url=response.type_url, response_nonce=response.nonce, error_detail=detail)
        else:
            await self.send(
                type_url=response.type_url,
                response_nonce=response.nonce,
                version_info=version,
                resource_names=names or [],
                error_detail=detail,
            )

    async def close(self) -> None:
        await self._requests.put(None)
        self.call.cancel()


class Plane:
    def __init__(self) -> None:
        self.cache = SnapshotCache()
        self.registry = Registry()
        self.server = grpc.aio.server(options=GRPC_SERVER_OPTIONS)
        add_services(self.server, self.cache, self.registry)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.channel: grpc.aio.Channel | None = None
        self.envoys: list[FakeEnvoy] = []

    async def start(self) -> None:
        await self.server.start()
        self.channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{self.port}",
            options=[("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)],
        )

    def envoy(
        self, delta: bool = False, node_id: str = "envoy-1", cluster: str = FLEET, node: base_pb2.Node | None = None
    ) -> FakeEnvoy:
        """A stream whose first request carries `node` (default: node_id in cluster)."""
        assert self.channel is not None
        node = node if node is not None else base_pb2.Node(id=node_id, cluster=cluster)
        envoy = FakeEnvoy(ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel), delta, node)
        self.envoys.append(envoy)
        return envoy

    async def stop(self) -> None:
        for envoy in self.envoys:
            await envoy.close()
        if self.channel is not None:
            await self.channel.close()
        await self.server.stop(0)


@pytest.fixture
async def plane():
    p = Plane()
    await p.start()
    yield p
    await p.stop()


def names(response) -> list[str]:
    if isinstance(response, discovery_pb2.DeltaDiscoveryResponse):
        return sorted(r.name for r in response.resources)
    out = []
    for packed in response.resources:
        message = {
            type_urls.CLUSTER: "envoy.config.cluster.v3.cluster_pb2.Cluster",
            type_urls.ENDPOINT: "envoy.config.endpoint.v3.endpoint_pb2.ClusterLoadAssignment",
            type_urls.LISTENER: "envoy.config.listener.v3.listener_pb2.Listener",
            type_urls.ROUTE: "envoy.config.route.v3.route_pb2.RouteConfiguration",
        }[packed.type_url]
        module, _, cls = message.rpartition(".")
        import importlib

        obj = getattr(importlib.import_module(module), cls)()
        packed.Unpack(obj)
        out.append(getattr(obj, "cluster_name", "") or obj.name)
    return sorted(out)
