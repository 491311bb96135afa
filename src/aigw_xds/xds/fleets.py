"""Which fleet (Gateway) a node belongs to.

Rule, in order:
1. node metadata key contract.NODE_FLEET_KEY ("aigw.fleet"; or "gateway"), a string "<namespace>/<gateway>";
2. node.cluster, when it has the form "<namespace>/<gateway>";
3. node.cluster "<gateway>" alone means namespace "default".
Translator processes that follow the control plane use the pseudo-fleet contract.TRANSLATORS_FLEET.
A node whose fleet is unknown gets an empty, valid configuration and a warning, never another
fleet's configuration; it picks up its fleet's configuration as soon as that Gateway appears.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2

import aigw_contract as contract

METADATA_KEYS = (contract.NODE_FLEET_KEY, "gateway")


def fleet_of(node: base_pb2.Node) -> str:
    fields = node.metadata.fields
    for key in METADATA_KEYS:
        if key in fields and fields[key].string_value:
            return _normalise(fields[key].string_value)
    return _normalise(node.cluster)


def _normalise(value: str) -> str:
    value = value.strip()
    if not value or value == contract.TRANSLATORS_FLEET:
        return value
    return value if "/" in value else f"default/{value}"


def unknown_fleet_hint(fleet: str, served: list[str], shown: int = 5) -> str:
    """What to do about a node whose fleet has no snapshot: name a fleet, or compile that Gateway
    (`served`: the fleets that have one, the translators' pseudo-fleet among them)."""
    if not fleet:
        return f'set node.cluster (or the node metadata "{contract.NODE_FLEET_KEY}") to "<namespace>/<gateway>"'
    gateways = [name for name in served if name != contract.TRANSLATORS_FLEET]
    listed = ", ".join(gateways[:shown]) + (f" and {len(gateways) - shown} more" if len(gateways) > shown else "")
    listed = listed or "none"
    return f"no Gateway {fleet} has compiled: check its name, or the errors logged for it (compiled: {listed})"
