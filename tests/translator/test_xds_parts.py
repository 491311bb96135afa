"""A translator configuration served in parts (TranslatorConfig.parts), as the translator's xDS
client takes it in: whole once its head and every part it names have come, the previous one while
parts are on their way, and a subscription to the parts a head names that the client does not yet
ask for. Responses are built by hand here (the control plane's side: tests/protocol)."""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

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


def test_after_a_refused_response_a_configuration_is_assembled_from_the_latest_head_and_parts():
    """A response the translator cannot use is NACKed and the last configuration stays; the server
    does not send it again. The next response (only what changed since) is assembled with the
    refused head and parts, the latest the server sent, never with the ones before them: a head's
    seal key always comes with the backends of the same compile."""
    used: list[dict] = []

    def on_update(configs: dict) -> None:
        if any(b.name == "unusable" for c in configs.values() for b in c.backends):
            raise ValueError("backend unusable cannot be used")
        used.append(configs)

    client = XdsConfigClient("127.0.0.1:1", on_update, fleet=FLEET)

    def head(key: bytes) -> config_pb2.TranslatorConfig:
        return config_pb2.TranslatorConfig(name=FLEET, parts=2, seal_key=key)

    one = config_pb2.TranslatorConfig(backends=[_backend("one")])
    client._apply(_response("1", {FLEET: head(b"old"), _part(FLEET, 0): one, _part(FLEET, 1): one}))
    first = client.configs[FLEET]

    unusable = config_pb2.TranslatorConfig(backends=[_backend("unusable")])
    nack = client._apply(_response("2", {FLEET: head(b"new"), _part(FLEET, 0): unusable}))
    assert nack.error_detail.message == "backend unusable cannot be used"
    assert client.configs[FLEET] is first and len(used) == 1

    # Part 0 fixed: the configuration is the new head's, with both latest parts.
    fixed = config_pb2.TranslatorConfig(backends=[_backend("fixed")])
    ack = client._apply(_response("3", {_part(FLEET, 0): fixed}))
    assert not ack.HasField("error_detail")
    assert client.configs[FLEET].seal_key == b"new"
    assert [b.name for b in client.configs[FLEET].backends] == ["fixed", "one"]

    # Another change that leaves the refused part in place is refused again, not mixed.
    client._apply(_response("4", {FLEET: head(b"newer"), _part(FLEET, 0): unusable}))
    nack = client._apply(_response("5", {_part(FLEET, 1): config_pb2.TranslatorConfig(backends=[_backend("two")])}))
    assert nack.HasField("error_detail") and client.configs[FLEET].seal_key == b"new"


def test_a_resource_that_does_not_parse_keeps_its_fleet_as_it_was_until_it_comes_readable():
    """A response with a resource that does not parse is NACKed naming it; the rest is taken (here
    another fleet of a shared worker), while the fleet of that resource keeps what it had, however
    many of its other parts come meanwhile (assembled with an older version of the unreadable one,
    it would be a mix), until that resource comes readable. A reconnect names none of that fleet's
    versions since it was last taken."""
    client = XdsConfigClient("127.0.0.1:1", lambda _c: None)
    head = config_pb2.TranslatorConfig(name=FLEET, parts=2)

    def part(backend: str) -> config_pb2.TranslatorConfig:
        return config_pb2.TranslatorConfig(backends=[_backend(backend)])

    client._apply(_response("1", {FLEET: head, _part(FLEET, 0): part("zero"), _part(FLEET, 1): part("one")}))
    taken = client.configs[FLEET]
    response = _response("2", {"default/other": config_pb2.TranslatorConfig(name="default/other")})
    response.resources.add(name=_part(FLEET, 0), version="2").resource.CopyFrom(
        any_pb2.Any(type_url=contract.TRANSLATOR_CONFIG_TYPE_URL, value=b"\xff\xff")
    )
    nack = client._apply(response)
    assert nack.error_detail.message == f"not a TranslatorConfig that parses: {_part(FLEET, 0)}"
    assert "default/other" in client.configs and client.configs[FLEET] is taken
    assert client.versions == {FLEET: "1", _part(FLEET, 0): "1", _part(FLEET, 1): "1", "default/other": "2"}

    ack = client._apply(_response("3", {_part(FLEET, 1): part("one-edited")}))
    assert not ack.HasField("error_detail") and client.configs[FLEET] is taken
    client._apply(_response("4", {_part(FLEET, 0): part("zero-edited")}))
    assert [b.name for b in client.configs[FLEET].backends] == ["zero-edited", "one-edited"]
    assert client.versions[_part(FLEET, 1)] == "3" and not client.refused


def test_a_refused_fleet_is_not_told_as_held_on_a_reconnect_and_does_not_hold_the_others_back():
    """A shared worker ("*"): a new fleet it cannot use is refused; the next responses, for another
    fleet, are taken (the refused one is tried with them, then left out), and the versions the
    worker tells the server on a reconnect are of what it took, so the server sends the refused
    fleet again. Once the refused fleet changes into something usable, it is taken."""

    def on_update(configs: dict) -> None:
        if any(b.name == "unusable" for c in configs.values() for b in c.backends):
            raise ValueError("backend unusable cannot be used")

    client = XdsConfigClient("127.0.0.1:1", on_update)

    def config(fleet: str, backend: str) -> config_pb2.TranslatorConfig:
        return config_pb2.TranslatorConfig(name=fleet, backends=[_backend(backend)])

    client._apply(_response("1", {"default/b": config("default/b", "b-one")}))
    nack = client._apply(_response("2", {"default/a": config("default/a", "unusable")}))
    assert nack.HasField("error_detail") and set(client.configs) == {"default/b"}
    assert client.versions == {"default/b": "1"}  # a reconnect asks for default/a again

    for nonce, backend in (("3", "b-two"), ("4", "b-three")):
        ack = client._apply(_response(nonce, {"default/b": config("default/b", backend)}))
        assert not ack.HasField("error_detail")
        assert [b.name for b in client.configs["default/b"].backends] == [backend]
        assert "default/a" not in client.configs and client.versions == {"default/b": nonce}

    client._apply(_response("5", {"default/a": config("default/a", "a-one")}))
    assert [b.name for b in client.configs["default/a"].backends] == ["a-one"]
    assert client.versions == {"default/a": "5", "default/b": "4"} and not client.refused
