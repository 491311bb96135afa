"""What a translator that does not take its configuration in parts is sent: each fleet's
configuration whole.

A fleet's translator configuration is served as a head and contract.TRANSLATOR_CONFIG_PARTS parts
(an edit of one route sends one part). A translator that assembles them says so in its node's
client_features (contract.TRANSLATOR_CONFIG_PARTS_FEATURE). One that does not, a sidecar older than
the parts still running while a rolling upgrade goes on, would take the head for the whole
configuration (no backends, no models: every request refused). It is sent each fleet's
configuration made whole instead, under the head's name, and no parts: the head merged with its
parts and made whole as the translator makes it (aigw_translator.config_parts), made once per
snapshot for every such stream, and again only for a fleet whose head or parts changed.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_translator.config_parts import make_whole

from ..wire import Serialized
from . import type_urls
from .cache import Resource, Snapshot, as_serialized, pack, versions_digest


def takes_parts(node: base_pb2.Node) -> bool:
    return contract.TRANSLATOR_CONFIG_PARTS_FEATURE in node.client_features


def as_taken_by(node: base_pb2.Node, fleet: str, snapshot: Snapshot | None) -> Snapshot | None:
    """`snapshot` as the stream of `node` (a node of `fleet`) is to be sent it."""
    if fleet != contract.TRANSLATORS_FLEET or snapshot is None or takes_parts(node):
        return snapshot
    return snapshot.memo("translator_wholes", lambda: _wholes(snapshot))


# The wholes made last, by fleet, with the versions of the head and parts each was made of: a
# fleet an edit did not change is not made again. Only the latest snapshot's (a fleet gone is
# forgotten); made and read on the event loop only.
_made: dict[str, tuple[tuple[str, ...], Resource]] = {}


def _wholes(snapshot: Snapshot) -> Snapshot:
    global _made
    available = snapshot.of_type(type_urls.TRANSLATOR)
    made: dict[str, tuple[tuple[str, ...], Resource]] = {}
    wholes: dict[str, Resource] = {}
    for name, head in available.items():
        if contract.translator_config_fleet(name) != name:
            continue  # a part: taken into its head
        if contract.translator_config_part(name, 0) not in available:
            wholes[name] = head  # served whole already
            continue
        count = config_pb2.TranslatorConfig.FromString(bytes(_data(head))).parts  # a head: small
        parts = [available[n] for i in range(count) if (n := contract.translator_config_part(name, i)) in available]
        versions = (head.version, *(part.version for part in parts))
        last = _made.get(name)
        if last is not None and last[0] == versions:
            made[name] = last
        else:
            # A message's serializations one after the other parse as their merge (protobuf).
            whole = config_pb2.TranslatorConfig.FromString(b"".join([_data(head), *map(_data, parts)]))
            make_whole(whole)
            made[name] = (versions, pack(name, Serialized.of(whole)))  # its bytes, not the parsed message
        wholes[name] = made[name][1]
    _made = made
    versions_of = {name: resource.version for name, resource in wholes.items()}
    return Snapshot(
        snapshot.fleet, {type_urls.TRANSLATOR: wholes}, versions_digest(versions_of), withheld=snapshot.withheld
    )


def _data(resource: Resource) -> memoryview:
    return as_serialized(resource.content).data
