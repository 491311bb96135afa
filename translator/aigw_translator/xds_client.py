"""Receive the translator configuration over xDS (delta ADS) from the control plane: how translator
sidecars and extra translator processes stay current without files.

The control plane serves one TranslatorConfig resource per fleet to nodes of the pseudo-fleet
contract.TRANSLATORS_FLEET. A sidecar subscribes to its own fleet's name; a shared worker
subscribes to all of them ("*"). The stream reconnects with back-off and, on reconnect, tells the
server which versions it holds, so nothing is resent needlessly. Because the resources carry
credentials, the control plane gives each translator only the fleets its identity may have: a
client certificate (mTLS, a SPIFFE ID) or a Kubernetes ServiceAccount token (`token_file`, sent as
`authorization: Bearer` on every connect and re-read each time: projected tokens rotate). A refusal
(PERMISSION_DENIED, UNAUTHENTICATED) is logged once with the server's message and retried with
back-off: the grant may come later. See docs/translator-sidecar.md.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable, Collection
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError
from google.rpc import status_pb2

import aigw_contract as contract
from aigw.translator.v1 import config_pb2

from .config import FleetsUnusable
from .config_parts import make_whole
from .logs import get_logger

log = get_logger(__name__)

CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", contract.XDS_MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", contract.XDS_MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)

Configs = dict[str, config_pb2.TranslatorConfig]

# Refusals a new grant (or a fixed token) can lift: retried, logged once until they change.
REFUSALS = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
MAX_BACKOFF_SECONDS = 10.0


class XdsConfigClient:
    def __init__(
        self,
        target: str,
        on_update: Callable[[Configs], object],
        *,
        fleet: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        node_id: str | None = None,
        token_file: str | None = None,
    ) -> None:
        self.target = target
        self.token_file = token_file
        self.on_update = on_update
        self.fleet = fleet
        self.credentials = credentials
        self.node_id = node_id or f"translator-{socket.gethostname()}-{os.getpid()}"
        self.configs: Configs = {}  # by fleet, whole (assembled from its parts)
        self.received: Configs = {}  # by resource name: the heads and parts as they came
        self.sent: dict[str, str] = {}  # by resource name: the versions of `received`
        self.versions: dict[str, str] = {}  # ...of what was taken: told to the server on a reconnect
        self.refused: set[str] = set()  # fleets whose latest resources could not be used
        self.unreadable: set[str] = set()  # resources whose latest version did not parse
        self.asked: set[str] = set()  # the names subscribed to on this connection
        self.synced = asyncio.Event()
        self.responses = 0  # received, over all sessions

    def _node(self) -> base_pb2.Node:
        metadata = struct_pb2.Struct()
        metadata.update({contract.NODE_FLEET_KEY: contract.TRANSLATORS_FLEET})
        return base_pb2.Node(
            id=self.node_id,
            cluster=contract.TRANSLATORS_FLEET,
            metadata=metadata,
            client_features=[contract.TRANSLATOR_CONFIG_PARTS_FEATURE],  # else it is sent wholes
        )

    async def run(self) -> None:
        """Follow the control plane forever, reconnecting after failures."""
        delay = 0.5
        refused = ""  # the last refusal logged: the same one again is not repeated
        while True:
            received = self.responses
            try:
                await self._session()
                delay = 0.5
            except grpc.aio.AioRpcError as exc:
                if self.responses != received:  # served in between: a refusal now is news again
                    refused = ""
                if exc.code() not in REFUSALS:
                    log.warning("xds_stream_failed", target=self.target, code=exc.code().name, details=exc.details())
                elif f"{exc.code()}{exc.details()}" != refused:
                    refused = f"{exc.code()}{exc.details()}"
                    log.error("xds_refused", target=self.target, code=exc.code().name, details=exc.details())
            except OSError as exc:  # the token file cannot be read (yet): never its contents
                log.warning("xds_token_unreadable", path=self.token_file, error=exc.strerror or type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        """The call's metadata: the ServiceAccount token, read afresh at each connect."""
        if not self.token_file:
            return ()
        token = Path(self.token_file).read_text().strip()
        if not token:
            raise OSError(0, "the file is empty")
        return (("authorization", f"Bearer {token}"),)

    async def _session(self) -> None:
        metadata = self._metadata()
        self._forget_untaken()
        if self.credentials is not None:
            channel = grpc.aio.secure_channel(self.target, self.credentials, options=CHANNEL_OPTIONS)
        else:
            channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        async with channel:
            # A request iterator, not call.write(): a write racing the server's end of the stream
            # makes gRPC report INTERNAL instead of the server's status (a refusal then looked
            # like a failure). The iterator ends when the stream does (None), so gRPC never has
            # to close it while it waits (a traceback on stderr once such tasks were collected).
            requests: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest | None] = asyncio.Queue()
            names = self._subscription()
            self.asked = set(names)
            requests.put_nowait(
                discovery_pb2.DeltaDiscoveryRequest(
                    node=self._node(),
                    type_url=contract.TRANSLATOR_CONFIG_TYPE_URL,
                    resource_names_subscribe=names,
                    initial_resource_versions=self.versions,
                )
            )

            async def outgoing() -> AsyncIterator[discovery_pb2.DeltaDiscoveryRequest]:
                while (request := await requests.get()) is not None:
                    yield request

            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            call = stub.DeltaAggregatedResources(outgoing(), metadata=metadata)
            try:
                async for response in call:
                    self.responses += 1
                    requests.put_nowait(self._apply(response))
            finally:
                requests.put_nowait(None)

    def _forget_untaken(self) -> None:
        """At a (re)connect, what was received and never taken is forgotten: the server, told only
        the versions taken, sends it again, or, for a Gateway deleted meanwhile, nothing (no removal
        of what it was not told of): held on, it would come back at the next configuration taken."""
        taken = self.versions
        self.received = {name: config for name, config in self.received.items() if name in taken}
        self.sent = {name: version for name, version in self.sent.items() if name in taken}
        self.unreadable = {name for name in self.unreadable if name in taken}

    def _subscription(self) -> list[str]:
        """What to subscribe to: everything (a shared worker), or the fleet's configuration, the
        parts its head names, and (before any head came) the parts a head of this version names."""
        if self.fleet is None:
            return ["*"]
        head = self.received.get(self.fleet)
        count = head.parts if head is not None else contract.TRANSLATOR_CONFIG_PARTS
        return [self.fleet, *(contract.translator_config_part(self.fleet, i) for i in range(count))]

    def _apply(self, response: discovery_pb2.DeltaDiscoveryResponse) -> discovery_pb2.DeltaDiscoveryRequest:
        """Take a response in; the ACK (or NACK) to send back.

        A fleet's configuration is assembled from the latest head and parts the server sent, or is
        the last one taken: what a refused (NACKed) response brought is held, since the server does
        not send it again, and the next response (only what changed since) assembled with the head
        and parts before the refused ones would be a mix no control plane compiled (an older seal key
        with newer backends). The fleets a response touches are assembled anew with those refused
        before (_take); a fleet that cannot be used (FleetsUnusable), or a resource that does not
        parse, is NACKed by name while the rest is taken, and that fleet keeps what it had. The
        versions told to the server on a reconnect are of what was taken: it sends a refused
        fleet's resources again (and what was never taken is forgotten at the reconnect)."""
        ack = discovery_pb2.DeltaDiscoveryRequest(type_url=response.type_url, response_nonce=response.nonce)
        received, sent, unreadable = self._held_after(response)
        fleet_of = contract.translator_config_fleet
        touched = {fleet_of(r.name) for r in response.resources} | set(map(fleet_of, response.removed_resources))
        blocked = set(map(fleet_of, unreadable))
        self.received, self.sent, self.unreadable = received, sent, unreadable
        # Never a name twice on one connection: the server answers a subscription by sending it again.
        more = [name for name in self._subscription() if name not in self.asked]
        self.asked.update(more)
        ack.resource_names_subscribe.extend(more)
        outcome = self._take(received, frozenset(touched), frozenset(blocked))
        if isinstance(outcome, str):
            self.refused |= touched
            return _refused(ack, outcome)
        updated, incomplete, taken, unusable = outcome
        self.refused = (self.refused - taken) | blocked | unusable
        self.versions = {n: v for n, v in self.sent.items() if fleet_of(n) not in self.refused} | {
            n: v for n, v in self.versions.items() if fleet_of(n) in self.refused
        }
        problems = [
            f"not a TranslatorConfig that parses: {n}"
            for n in sorted(unreadable & {r.name for r in response.resources})
        ]
        problems += [f"{f}: cannot be used" for f in sorted(unusable & touched)]
        if problems:  # the rest is taken
            _refused(ack, "; ".join(problems))
        missing = self.fleet is not None and self.fleet not in updated and self.fleet not in self.refused
        if missing and (self.fleet in self.configs or not self.synced.is_set()):  # said once, when it goes
            log.warning(
                "xds_fleet_unknown",
                fleet=self.fleet,
                hint="the control plane has no compiled Gateway of that name (check --fleet, and the control "
                "plane's errors): nothing is translated for it until one compiles",
            )
        self.configs = updated
        if incomplete:  # its parts are on their way (in the answer to this ACK's subscription)
            log.info("xds_config_parts_awaited", fleets=incomplete, nonce=response.nonce)
            return ack
        self.synced.set()
        log.info("xds_config_applied", fleets=sorted(updated), nonce=response.nonce)
        return ack

    def _take(
        self, received: Configs, touched: frozenset[str], blocked: frozenset[str]
    ) -> tuple[Configs, list[str], frozenset[str], frozenset[str]] | str:
        """Assemble and use (on_update) the fleets `touched` and those refused before, not the
        `blocked`: the configurations, the fleets whose parts are on their way, the fleets taken,
        and those found unusable (FleetsUnusable: their previous configurations kept); or why
        nothing could be used. A failure that names no fleet is tried again with the touched fleets
        alone, so a fleet refused before does not hold back a later edit of another."""
        rebuilt = (touched | self.refused) - blocked
        unusable: frozenset[str] = frozenset()
        while True:
            try:
                updated, incomplete = assembled(received, self.configs, rebuilt - unusable)
                self.on_update(updated)
                return (
                    updated,
                    [f for f in incomplete if f not in blocked],
                    rebuilt - unusable - set(incomplete),
                    unusable,
                )
            except FleetsUnusable as exc:
                if not (exc.fleets - unusable) & rebuilt:  # a fleet taken before: nothing to leave out
                    return str(exc)
                unusable |= exc.fleets & rebuilt
            except Exception as exc:
                if rebuilt == touched - blocked:
                    return str(exc) or type(exc).__name__
                rebuilt = touched - blocked

    def _held_after(self, response: discovery_pb2.DeltaDiscoveryResponse) -> tuple[Configs, dict[str, str], set[str]]:
        """What is held once `response` is taken in: the resources by name, their versions, and the
        names whose latest version did not parse (their fleets keep what they had until it comes
        readable)."""
        received, sent, unreadable = dict(self.received), dict(self.sent), set(self.unreadable)
        for resource in response.resources:
            config = config_pb2.TranslatorConfig()
            try:
                readable = resource.resource.Unpack(config)
            except DecodeError:
                readable = False
            if not readable:
                unreadable.add(resource.name)
                continue
            unreadable.discard(resource.name)
            received[resource.name] = config
            sent[resource.name] = resource.version
        for name in response.removed_resources:
            received.pop(name, None)
            sent.pop(name, None)
            unreadable.discard(name)
        return received, sent, unreadable


def _refused(nack: discovery_pb2.DeltaDiscoveryRequest, error: str) -> discovery_pb2.DeltaDiscoveryRequest:
    log.error("xds_config_rejected", error=error)
    nack.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return nack


def assembled(received: Configs, previous: Configs, rebuilt: Collection[str]) -> tuple[Configs, list[str]]:
    """Each fleet's whole configuration from the resources received (TranslatorConfig.parts): for the
    fleets in `rebuilt`, its head merged with each of its parts in turn and made whole
    (config_parts); for the others, the `previous` one (none if it had none: never taken). A fleet
    whose parts have not all come keeps its previous configuration (none before its first); those
    fleets are the second item."""
    configs: Configs = {}
    incomplete = []
    for name, head in received.items():
        if contract.translator_config_fleet(name) != name:
            continue  # a part: taken with its head
        found = (received.get(contract.translator_config_part(name, i)) for i in range(head.parts))
        parts = [part for part in found if part is not None]
        if len(parts) < head.parts:
            incomplete.append(name)
        if len(parts) < head.parts or name not in rebuilt:
            if name in previous:
                configs[name] = previous[name]
            continue
        if not parts:
            configs[name] = head
            continue
        whole = config_pb2.TranslatorConfig()
        whole.MergeFrom(head)
        for part in parts:
            whole.MergeFrom(part)
        make_whole(whole)
        configs[name] = whole
    return configs, incomplete
