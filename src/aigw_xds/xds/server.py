"""The ADS server (SotW and Delta) and CSDS, on grpc.aio.

Each stream runs one loop over a queue fed by two producers: the client's requests and the cache's
"fleet changed" notices. The protocol decisions live in streams.py; this module only moves messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from google.protobuf.message import DecodeError

import aigw_contract as contract

from . import type_urls
from .authz import Authorizer, ReviewUnavailable, StreamAccess
from .cache import ANY_FLEET, Snapshot, SnapshotCache
from .fleets import fleet_of, unknown_fleet_hint
from .replies import Reply
from .streams import DeltaStream, SotwStream, TypeState
from .translator_wholes import as_taken_by, takes_parts

log = structlog.get_logger(__name__)

# Raised limits (Envoy's requests outgrow gRPC's 4 MiB default at scale) and keepalive settings
# that tolerate Envoy's HTTP/2 pings on an idle stream (every 30 s by default in our bootstraps).
GRPC_SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", contract.XDS_MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", contract.XDS_MAX_MESSAGE_BYTES),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    # A port in use is an error, not a port silently shared with another control plane.
    ("grpc.so_reuseport", 0),
]

_stream_ids = itertools.count(1)


@dataclass
class StreamInfo:
    """What CSDS reports about one connected node."""

    id: int
    mode: str  # "sotw" or "delta"
    node: base_pb2.Node
    fleet: str
    types: dict[str, TypeState] = field(default_factory=dict)
    connected_at: float = field(default_factory=time.time)


_REFUSALS_KEPT = 16


class _Mailbox:
    """What a stream's loop takes next, in the order put: an asyncio.Queue without what a stream
    does not use (bounds, putters, join), 3 KB less per connected node. It holds a few items at
    most (requests not yet read, one fleet notice)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[tuple[str, Any]] = []
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: tuple[str, Any]) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> tuple[str, Any]:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


def _node_kept(node: base_pb2.Node) -> base_pb2.Node:
    """What a stream keeps of its node (for CSDS, proxy-status and logs): the node without the list
    of extensions the Envoy was built with. Envoy 1.40 sends 516 of them, 60 KB of its 61 KB node,
    and nothing here reads them: kept, they were most of the memory a connected node cost (130 KB).
    Parsed anew into a message of its own: a part of the request would keep all of the request,
    and a copy whose extensions are cleared still holds them (upb frees a message's memory only
    with the whole message)."""
    trimmed = base_pb2.Node()
    trimmed.CopyFrom(node)
    trimmed.ClearField("extensions")
    return base_pb2.Node.FromString(trimmed.SerializeToString())


class Registry:
    """Connected streams, for CSDS, proxy-status and the Gateways' Programmed status."""

    def __init__(self) -> None:
        self.streams: dict[int, StreamInfo] = {}
        # Called with the fleet whose nodes connected, disconnected, ACKed or NACKed.
        self.watchers: list[Callable[[str], None]] = []
        self.refusals: dict[str, dict[str, tuple[str, float]]] = {}  # fleet -> node -> (reason, when)
        self.nacks: Counter[tuple[str, str]] = Counter()  # (fleet, short type) -> NACKs received (metrics)

    def refuse(self, fleet: str, node: str, reason: str) -> None:
        """A node of a served fleet was refused its configuration (authorization): said in the
        Gateway's status for a minute, so that refused Envoys do not look absent. The peer names
        the node and the fleet: only fleets that exist count, node ids are cut short, and a fleet
        keeps its latest few refusals."""
        by_node = self.refusals.setdefault(fleet, {})
        by_node[node[:64]] = (reason, time.monotonic())
        while len(by_node) > _REFUSALS_KEPT:
            del by_node[min(by_node, key=lambda n: by_node[n][1])]
        self.changed(fleet)

    def refused(self, fleet: str, within: float = 60.0) -> tuple[str, ...]:
        """The reasons nodes of the fleet were refused in the last `within` seconds, by node."""
        now = time.monotonic()
        recent = {node: reason for node, (reason, at) in self.refusals.get(fleet, {}).items() if now - at < within}
        self.refusals[fleet] = {n: self.refusals[fleet][n] for n in recent} if fleet in self.refusals else {}
        return tuple(f"{node}: {reason}" for node, reason in sorted(recent.items()))

    def changed(self, fleet: str) -> None:
        for watcher in self.watchers:
            watcher(fleet)

    def nodes_of(self, fleet: str) -> list[tuple[str, dict[str, TypeState]]]:
        """(node id, per-type state) of every stream of the fleet."""
        return [(info.node.id, info.types) for info in self.streams.values() if info.fleet == fleet]


# The requests a stream of a withheld fleet may send while it waits (an Envoy sends one per type).
MAX_DEFERRED = 64


class AggregatedDiscoveryService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, cache: SnapshotCache, registry: Registry, authorizer: Authorizer | None = None) -> None:
        self._cache = cache
        self._registry = registry
        self._authorizer = authorizer or Authorizer()
        self._twins_said: set[tuple[str, str]] = set()  # (fleet, node id) said to be shared, a few hundred at most

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> None:
        await _write_all(self._serve(context, SotwStream(), "sotw"), context)

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> None:
        await _write_all(self._serve(context, DeltaStream(), "delta"), context)

    async def _serve(
        self,
        context: grpc.aio.ServicerContext,
        machine: SotwStream | DeltaStream,
        mode: str,
    ) -> AsyncGenerator[Reply, None]:
        queue = _Mailbox()
        info: StreamInfo | None = None
        access: StreamAccess | None = None
        # The requests of a node whose fleet is withheld (SnapshotCache.withheld), answered once it
        # has a snapshot or is no longer withheld: until then the node keeps what it serves.
        deferred: list[Any] = []

        async def read() -> None:
            # context.read(), not `async for` over the request iterator, which holds the last request
            # until the next one comes; nor does this frame hold it while it waits: an idle stream
            # kept its last request (with a node that is not sent on the first request only, 61 KB).
            try:
                while True:
                    request = await context.read()
                    if request is grpc.aio.EOF:
                        break
                    queue.put(("request", request))
                    del request
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                pass
            except DecodeError as exc:  # not a DiscoveryRequest: the stream ends saying so
                queue.put(("unreadable", str(exc)))
            finally:
                queue.put(("closed", None))

        # At most one "the fleet changed" notice waits in the queue: it is served with the snapshot
        # current when it is taken, so an Envoy slow to read gets the latest, never every version
        # in between, and the queue stays bounded however many edits land meanwhile.
        pending = False

        def changed(fleet: str) -> None:
            nonlocal pending
            if info is not None and fleet in (info.fleet, ANY_FLEET) and not pending:
                pending = True
                queue.put(("update", info.fleet))  # a notice for every fleet is one for this one

        reader = asyncio.create_task(read())
        unsubscribe = self._cache.subscribe(changed)
        try:
            while True:
                kind, item = await queue.get()
                if kind == "closed":
                    return
                if kind == "unreadable":
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"a request does not parse: {item}")
                if kind == "request":
                    request = item
                    if info is None:
                        if not request.HasField("node") or not (request.node.id or request.node.cluster):
                            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry a node")
                        node = _node_kept(request.node)
                        info = StreamInfo(next(_stream_ids), mode, node, fleet_of(node), machine.types)
                        access = await self._authorizer.admit(context)  # per-node authorization (authz.py)
                        self._registry.streams[info.id] = info
                        self._registry.changed(info.fleet)
                        self._log_connect(info)
                    if not request.type_url:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "type URL is required for ADS")
                    if deferred or self._cache.withheld(info.fleet):
                        if len(deferred) >= MAX_DEFERRED:  # an Envoy sends one per type, then waits
                            await context.abort(
                                grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"more than {MAX_DEFERRED} requests while fleet {info.fleet} is withheld",
                            )
                        deferred.append(request)
                        continue
                    if request.HasField("error_detail") and request.error_detail.code != 0:
                        short = type_urls.SHORT.get(request.type_url, request.type_url)
                        if short in type_urls.SHORT.values() and self._cache.get(info.fleet) is not None:
                            # Counted for fleets served and types known only: a client names both.
                            self._registry.nacks[(info.fleet, short)] += 1
                        log.warning(
                            "nack_received",
                            node=info.node.id,
                            fleet=info.fleet,
                            type=short,
                            nonce=request.response_nonce,
                            error=request.error_detail.message,
                        )
                    assert access is not None
                    snapshot = await self._prepared(context, access, info.fleet)
                    responses = machine.on_request(request, _sendable(access, info, snapshot))
                    if request.response_nonce:  # an ACK or a NACK: the fleet's Programmed status may change
                        self._registry.changed(info.fleet)
                    del request
                elif info is not None and access is not None and item == info.fleet:
                    pending = False
                    if self._cache.withheld(info.fleet):
                        continue
                    snapshot = await self._prepared(context, access, info.fleet)
                    sendable = _sendable(access, info, snapshot)
                    # The fleet's first answers go to the requests that waited for them (none, but
                    # while it was withheld), then the snapshot to what they did not ask again (a
                    # SotW ACK of an answer sent before the fleet was withheld asks nothing).
                    responses = [reply for waited in deferred for reply in machine.on_request(waited, sendable)]
                    responses += machine.on_snapshot(sendable)
                    deferred.clear()
                else:
                    continue
                refusal = access.refusal(info.node.id, info.fleet, snapshot, machine.types)
                if refusal:  # nothing of this answer is sent
                    if snapshot is not None:  # a fleet that exists (the peer names it)
                        self._registry.refuse(info.fleet, info.node.id, refusal)
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
                # While the stream waits for what comes next it holds neither the request nor the
                # answers: a fleet's idle streams would otherwise each keep their last ones.
                del item
                while responses:
                    response = responses.pop(0)
                    log.debug(
                        "response_sent",
                        node=info.node.id,
                        type=type_urls.SHORT.get(response.type_url),
                        nonce=response.nonce,
                        resources=response.resources,
                        removed=response.removed,
                    )
                    yield response
                    del response
        finally:
            unsubscribe()
            reader.cancel()
            if info is not None:
                self._registry.streams.pop(info.id, None)
                self._registry.changed(info.fleet)
                log.info("node_disconnected", node=info.node.id, fleet=info.fleet, mode=mode)

    async def _prepared(self, context: grpc.aio.ServicerContext, access: StreamAccess, fleet: str) -> Any:
        """The fleet's snapshot with the access decisions made for it. A recompile may land while a
        decision is awaited (a SubjectAccessReview): then it is made again for the new snapshot, so
        what is checked is what is sent (the checks after this read the same, current, Secrets)."""
        snapshot = self._cache.get(fleet)
        while True:
            await self._prepare(context, access, fleet, snapshot)
            latest = self._cache.get(fleet)
            if latest is snapshot:
                return snapshot
            snapshot = latest

    @staticmethod
    async def _prepare(context: grpc.aio.ServicerContext, access: StreamAccess, fleet: str, snapshot: Any) -> None:
        """The access decisions for what may be sent (RBAC on the Secrets, in Kubernetes mode)."""
        try:
            await access.prepare(fleet, snapshot)
        except ReviewUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    def _log_connect(self, info: StreamInfo) -> None:
        withheld = self._cache.withheld(info.fleet)
        if withheld:
            log.warning(
                "node_fleet_withheld",
                node=info.node.id,
                fleet=info.fleet,
                reason=withheld,
                serving="nothing until it is fixed: the node keeps the configuration it has",
            )
        elif not info.fleet or self._cache.get(info.fleet) is None:
            log.warning(
                "node_fleet_unknown",
                node=info.node.id,
                cluster=info.node.cluster,
                fleet=info.fleet or "(none)",
                serving="an empty configuration",
                hint=unknown_fleet_hint(info.fleet, self._cache.fleets()),
            )
        else:
            log.info("node_connected", node=info.node.id, fleet=info.fleet, mode=info.mode)
        twins = [s for s in self._registry.streams.values() if s.id != info.id and s.node.id == info.node.id]
        if twins and info.fleet != contract.TRANSLATORS_FLEET and (info.fleet, info.node.id) not in self._twins_said:
            if len(self._twins_said) >= 256:  # node ids are the clients': said again rather than kept forever
                self._twins_said.clear()
            self._twins_said.add((info.fleet, info.node.id))
            log.warning(
                "node_id_shared",
                node=info.node.id,
                fleet=info.fleet,
                streams=len(twins) + 1,
                hint="two Envoys with one node id cannot be told apart (proxy-status, a NACK in the Gateway's "
                "status): give each its own (bootstrap --node-id; in a Deployment, Envoy's --service-node with "
                "the pod's name). An Envoy that reconnects before its old stream closed shows here once too.",
            )
        if info.fleet == contract.TRANSLATORS_FLEET and not takes_parts(info.node):
            log.warning(
                "translator_takes_wholes",
                node=info.node.id,
                hint="an older translator, which does not take configurations in parts: it is sent each "
                "fleet's configuration whole, every edit (upgrade it)",
            )


def _sendable(access: StreamAccess, info: StreamInfo, snapshot: Snapshot | None) -> Snapshot | None:
    """What a stream is sent of its fleet's snapshot: as its node takes it, and what its identity
    may have."""
    return access.view(info.fleet, as_taken_by(info.node, info.fleet, snapshot))


async def _write_all(responses: AsyncGenerator[Reply, None], context: grpc.aio.ServicerContext) -> None:
    """Sends each answer with context.write rather than yielding it: gRPC's loop over a handler's
    generator holds the last message until the next one, so every idle stream of a fleet kept its
    last (often largest) answer, about 1 MB per node after a connect (docs/performance.md).
    The stream's generator is closed however this ends: a write that fails (the client went away
    mid-answer) left it suspended, its cleanup (the registry, the fleet subscription) waiting for
    the collector, or for ever while a logged traceback held it."""
    async with contextlib.aclosing(responses):
        async for response in responses:
            await context.write(response.data)
            del response


class ClientStatusDiscoveryService(csds_pb2_grpc.ClientStatusDiscoveryServiceServicer):
    """CSDS from the server's side: per connected node and resource, SYNCED (sent and ACKed),
    STALE (sent, no answer yet), ERROR (NACKed) or NOT_SENT."""

    def __init__(self, cache: SnapshotCache, registry: Registry, authorizer: Authorizer | None = None) -> None:
        self._cache = cache
        self._registry = registry
        self._authorizer = authorizer or Authorizer()

    def client_status(
        self, request: csds_pb2.ClientStatusRequest, access: StreamAccess | None = None
    ) -> csds_pb2.ClientStatusResponse:
        """The status of the connected nodes (with `access`: of those whose fleets it may have,
        judged as their configuration without credentials)."""
        response = csds_pb2.ClientStatusResponse()
        for info in sorted(self._registry.streams.values(), key=lambda i: (i.node.id, i.id)):
            if request.node_matchers and not _matches(request, info.node):
                continue
            if access is not None and not access.authorizer.allows(access.identity, info.fleet, credentials=False):
                continue
            config = response.config.add()
            config.node.CopyFrom(info.node)
            config.node.metadata.fields[contract.NODE_FLEET_KEY].string_value = info.fleet
            config.node.metadata.fields[contract.NODE_MODE_KEY].string_value = info.mode
            withheld = self._cache.withheld(info.fleet)
            if withheld:
                config.node.metadata.fields[contract.NODE_WITHHELD_KEY].string_value = withheld
            snapshot = as_taken_by(info.node, info.fleet, self._cache.get(info.fleet))
            for type_url in type_urls.ORDER:
                state = info.types.get(type_url)
                if state is None:
                    continue
                held = {n for n, (v, _) in state.sent.items() if v != "removed"}
                if info.mode == "sotw" and type_url not in type_urls.FULL_STATE:
                    # SotW removes routes, endpoints and secrets by no longer naming them: Envoy
                    # drops what it stopped subscribing to, with no answer about it.
                    held &= state.names
                names = sorted(set(state.subscribed(snapshot)) | held)
                for name in names:
                    version, status = state.status_of(name)
                    entry = config.generic_xds_configs.add(type_url=type_url, name=name, version_info=version)
                    # The stream state machine's status names are CSDS's (streams.Status).
                    entry.config_status = csds_pb2.ConfigStatus.Value(status)
                    if status == "ERROR" and state.error:
                        entry.error_state.details = state.error
                    # Never secrets' contents: backend keys (SDS credentials), TLS private keys,
                    # the translator configuration.
                    if (
                        not request.exclude_resource_contents
                        and snapshot is not None
                        and type_url not in (type_urls.TRANSLATOR, type_urls.SECRET)
                    ):
                        resource = snapshot.of_type(type_url).get(name)
                        if resource is not None and resource.version == version:
                            entry.xds_config.ParseFromString(resource.packed)
        return response

    async def _access(self, context: grpc.aio.ServicerContext) -> StreamAccess | None:
        """In Kubernetes mode, who asks (None: anyone may see every node, as outside it); a peer
        that may have no fleet at all is refused."""
        if not self._authorizer.kubernetes:
            return None
        access = await self._authorizer.admit(context)
        if not self._authorizer.may_have_any(access.identity):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{access.identity.label} may not see the status of any node: "
                f"{self._authorizer.how_to_grant(access.identity)}",
            )
        return access

    async def FetchClientStatus(self, request, context):
        return self.client_status(request, await self._access(context))

    async def StreamClientStatus(self, request_iterator, context):
        access = await self._access(context)
        async for request in request_iterator:
            yield self.client_status(request, access)


def _matches(request: csds_pb2.ClientStatusRequest, node: base_pb2.Node) -> bool:
    for matcher in request.node_matchers:
        if matcher.HasField("node_id"):
            string = matcher.node_id
            if string.exact and string.exact == node.id:
                return True
            if string.prefix and node.id.startswith(string.prefix):
                return True
    return False


def add_services(
    server: grpc.aio.Server, cache: SnapshotCache, registry: Registry, authorizer: Authorizer | None = None
) -> None:
    ads = AggregatedDiscoveryService(cache, registry, authorizer)
    # As ads_pb2_grpc registers the service, but a response is written as the bytes the stream
    # joined (replies.py), which gRPC sends as they are.
    handlers = {
        "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            ads.StreamAggregatedResources,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=bytes,
        ),
        "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
            ads.DeltaAggregatedResources,
            request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
            response_serializer=bytes,
        ),
    }
    service = "envoy.service.discovery.v3.AggregatedDiscoveryService"
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)
    csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(
        ClientStatusDiscoveryService(cache, registry, authorizer), server
    )


@dataclass(frozen=True)
class TLSFiles:
    cert: str
    key: str
    client_ca: str | None = None  # set: mTLS, clients must present a certificate signed by it

    def read(self) -> TLSMaterial:
        """The files' PEM, checked as the TLS handshake will use it: a file that cannot be read, a
        key that is not the certificate's, a CA file without a certificate is a ValueError naming
        the file (gRPC would log a handshaker failure and report the port as not bindable)."""
        import ssl
        from pathlib import Path

        flags = {self.cert: "--tls-cert", self.key: "--tls-key", self.client_ca: "--tls-client-ca"}
        try:
            material = TLSMaterial(
                Path(self.cert).read_bytes(),
                Path(self.key).read_bytes(),
                Path(self.client_ca).read_bytes() if self.client_ca else None,
            )
        except OSError as exc:
            flag = flags.get(exc.filename, "TLS file")
            raise ValueError(f"{flag} {exc.filename}: cannot read it ({exc.strerror})") from None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:  # an encrypted key is an error here, not OpenSSL's passphrase prompt on the terminal
            context.load_cert_chain(self.cert, self.key, password=lambda: b"")
        except ssl.SSLError as exc:
            text = str(exc)
            if "KEY_VALUES_MISMATCH" in text:
                reason = "the key is not the certificate's"
            elif "PEM" in text:
                reason = "not a PEM certificate and its PEM private key (an encrypted key is not read)"
            else:
                reason = str(exc.reason or exc)
            raise ValueError(f"--tls-cert {self.cert} with --tls-key {self.key}: {reason}") from None
        if self.client_ca:
            try:
                context.load_verify_locations(cafile=self.client_ca)
            except ssl.SSLError as exc:
                raise ValueError(
                    f"--tls-client-ca {self.client_ca}: not a PEM CA certificate ({exc.reason or exc})"
                ) from None
        return material


@dataclass(frozen=True)
class TLSMaterial:
    """Server TLS held in memory (PEM), e.g. read from a Kubernetes Secret. With client_ca, clients
    must present a certificate it signed (mTLS): gRPC Python can either not ask for client
    certificates or require them, not ask for optional ones (its dynamic credentials offer no
    "request, do not require"), so a CA given means required."""

    cert: bytes
    key: bytes = field(repr=False)
    client_ca: bytes | None = None


class ReloadableTLS:
    """Server TLS from memory whose certificate can be replaced while serving (a renewed one): gRPC
    asks for a newer configuration before each TLS handshake, so new connections get the latest
    and connections already open keep theirs. Client certificates as TLSMaterial (required with a
    client CA; the CA is fixed at construction: gRPC decides at bind time whether to ask)."""

    def __init__(self, material: TLSMaterial) -> None:
        self._material = material
        self._pending: TLSMaterial | None = None
        self._lock = threading.Lock()  # the fetch runs on gRPC's threads

    @property
    def material(self) -> TLSMaterial:
        return self._material

    def replace(self, material: TLSMaterial) -> None:
        with self._lock:
            self._material = self._pending = material

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            pending, self._pending = self._pending, None
        return _certificate_configuration(pending) if pending is not None else None

    def credentials(self) -> grpc.ServerCredentials:
        # The fetcher returns None for "no change", as gRPC documents (the stubs say it may not).
        fetch: Callable[[], grpc.ServerCertificateConfiguration] = self._fetch  # type: ignore[assignment]
        return grpc.dynamic_ssl_server_credentials(
            _certificate_configuration(self._material),
            fetch,
            require_client_authentication=self._material.client_ca is not None,
        )


def _certificate_configuration(material: TLSMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(material.key, material.cert)], material.client_ca)


def bind(server: grpc.aio.Server, address: str, tls: TLSMaterial | ReloadableTLS | None = None) -> int:
    if tls is None:
        return server.add_insecure_port(address)
    if isinstance(tls, TLSMaterial):
        tls = ReloadableTLS(tls)
    return server.add_secure_port(address, tls.credentials())
