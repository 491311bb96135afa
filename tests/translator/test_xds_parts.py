"""A translator configuration served in parts (TranslatorConfig.parts), as the translator's xDS
client takes it in: whole once its head and every part it names have come, the previous one while
parts are on their way, and a subscription to the parts a head names that the client does not yet
ask for. Responses are built by hand here (the control plane's side: tests/protocol)."""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_translator.xds_client import XdsConfigClient

FLEET = "default/gw"


def _response(nonce: str, configs: dict[str, config_pb2.TranslatorConfig]) -> discovery_pb2.DeltaDiscoveryResponse:
    response = discovery_pb2.DeltaDiscoveryResponse(type_url=contract.TRANSLATOR_CONFIG_TYPE_URL, nonce=nonce)
    for name, config in configs.items():
        response.resources.add(name=name, version=nonce).resource.Pack(config)
    return response


def _part(fleet: str, index: int) -> str:
    return contract.translator_config_part(fleet, index)


def _backend(name: str) -> config_pb2.Backend:
    return config_pb2.Backend(name=name, service_backend="default/b")


def test_a_head_and_its_parts_are_one_configuration_and_a_missing_part_keeps_the_previous_one():
    updates: list[dict] = []
    client = XdsConfigClient("127.0.0.1:1", updates.append, fleet=FLEET)
    head = config_pb2.TranslatorConfig(name=FLEET, root_prefix="/", parts=2, models=[config_pb2.Model(id="m")])
    first = config_pb2.TranslatorConfig(backends=[_backend("one")])
    second = config_pb2.TranslatorConfig(backends=[_backend("two")])
    ack = client._apply(_response("1", {FLEET: head, _part(FLEET, 0): first, _part(FLEET, 1): second}))
    assert not ack.HasField("error_detail")
    whole = client.configs[FLEET]
    assert [b.name for b in whole.backends] == ["one", "two"] and [m.id for m in whole.models] == ["m"]
    assert whole.parts == 0 and whole.root_prefix == "/"
    assert client.synced.is_set()

    # A head that names a third part: the configuration stays as it was until the part comes, and
    # the ACK subscribes to it.
    grown = config_pb2.TranslatorConfig(name=FLEET, parts=3)
    ack = client._apply(_response("2", {FLEET: grown}))
    assert list(ack.resource_names_subscribe) == [contract.translator_config_part(FLEET, 2)]
    assert client.configs[FLEET] is whole and updates[-1][FLEET] is whole
    third = config_pb2.TranslatorConfig(backends=[_backend("three")])
    client._apply(_response("3", {_part(FLEET, 2): third}))
    assert [b.name for b in client.configs[FLEET].backends] == ["one", "two", "three"]
    assert client.configs[FLEET].root_prefix == ""  # the new head's


def test_a_whole_configuration_and_an_unchanged_one_are_taken_as_they_are():
    client = XdsConfigClient("127.0.0.1:1", lambda _c: None)  # a shared worker: every fleet
    whole = config_pb2.TranslatorConfig(name=FLEET, backends=[_backend("one")])  # parts 0: whole
    client._apply(_response("1", {FLEET: whole}))
    assert client.configs[FLEET] == whole
    other = config_pb2.TranslatorConfig(name="default/other", parts=1)
    client._apply(_response("2", {"default/other": other, _part("default/other", 0): config_pb2.TranslatorConfig()}))
    kept = client.configs[FLEET]
    client._apply(_response("3", {_part("default/other", 0): config_pb2.TranslatorConfig(backends=[_backend("x")])}))
    assert client.configs[FLEET] is kept  # not merged again: nothing of it came
    assert [b.name for b in client.configs["default/other"].backends] == ["x"]


def test_a_sidecar_asks_for_its_fleet_and_the_parts_a_head_names():
    client = XdsConfigClient("127.0.0.1:1", lambda _c: None, fleet=FLEET)
    parts = [contract.translator_config_part(FLEET, i) for i in range(contract.TRANSLATOR_CONFIG_PARTS)]
    assert client._subscription() == [FLEET, *parts]
    assert XdsConfigClient("127.0.0.1:1", lambda _c: None)._subscription() == ["*"]
