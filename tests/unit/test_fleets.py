"""Which fleet a node belongs to, and what the warning for a node without one tells its operator."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

import aigw_contract as contract
from aigw_xds.xds.fleets import fleet_of, unknown_fleet_hint


@pytest.mark.parametrize(
    ("cluster", "metadata", "fleet"),
    [
        ("team-a/gw", {}, "team-a/gw"),
        ("gw", {}, "default/gw"),
        (" team-a/gw ", {}, "team-a/gw"),
        ("ignored/cluster", {contract.NODE_FLEET_KEY: "team-b/gw"}, "team-b/gw"),
        ("ignored/cluster", {"gateway": "gw"}, "default/gw"),
        ("", {}, ""),
        (contract.TRANSLATORS_FLEET, {}, contract.TRANSLATORS_FLEET),
    ],
)
def test_fleet_of_a_node(cluster: str, metadata: dict[str, str], fleet: str):
    node = base_pb2.Node(id="n", cluster=cluster, metadata=struct_pb2.Struct())
    node.metadata.update(metadata)
    assert fleet_of(node) == fleet


def test_the_hint_names_what_to_set_or_the_gateway_that_is_missing():
    assert unknown_fleet_hint("", ["default/gw"]) == (
        'set node.cluster (or the node metadata "aigw.fleet") to "<namespace>/<gateway>"'
    )
    served = [contract.TRANSLATORS_FLEET, *(f"ns/gw{i}" for i in range(7))]
    assert unknown_fleet_hint("ns/typo", served) == (
        "no Gateway ns/typo has compiled: check its name, or the errors logged for it "
        "(compiled: ns/gw0, ns/gw1, ns/gw2, ns/gw3, ns/gw4 and 2 more)"
    )
    assert unknown_fleet_hint("ns/gw", [contract.TRANSLATORS_FLEET]).endswith("(compiled: none)")
