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


def _usable_unless(backend: str):
    """An on_update that, as the translator's (config.runtimes), names the fleets it cannot use."""
    from aigw_translator.config import FleetsUnusable

    def on_update(configs: dict) -> None:
        unusable = {f: "unusable" for f, c in configs.items() if any(b.name == backend for b in c.backends)}
        if unusable:
            raise FleetsUnusable(unusable)

    return on_update


def _fleet(fleet: str, backend: str) -> config_pb2.TranslatorConfig:
    return config_pb2.TranslatorConfig(name=fleet, backends=[_backend(backend)])


def test_a_fleet_that_cannot_be_used_is_refused_alone_in_a_response_of_several():
    """A shared worker's first response (a reconnect's, an edit of what several Gateways share)
    carries several fleets; the one the translator cannot use is NACKed by name, the others are
    taken, and the worker is synced."""
    client = XdsConfigClient("127.0.0.1:1", _usable_unless("unusable"))
    nack = client._apply(
        _response("1", {"default/a": _fleet("default/a", "unusable"), "default/b": _fleet("default/b", "ok")})
    )
    assert nack.error_detail.message == "default/a: cannot be used"
    assert set(client.configs) == {"default/b"} and client.refused == {"default/a"} and client.synced.is_set()
    assert client.versions == {"default/b": "1"}


def test_a_new_fleet_whose_part_does_not_parse_does_not_keep_a_shared_worker_from_syncing():
    client = XdsConfigClient("127.0.0.1:1", lambda _c: None)
    head = config_pb2.TranslatorConfig(name="default/a", parts=2)
    response = _response(
        "1",
        {
            "default/b": _fleet("default/b", "ok"),
            "default/a": head,
            _part("default/a", 1): config_pb2.TranslatorConfig(),
        },
    )
    response.resources.add(name=_part("default/a", 0), version="1").resource.CopyFrom(
        any_pb2.Any(type_url=contract.TRANSLATOR_CONFIG_TYPE_URL, value=b"\xff\xff")
    )
    assert client._apply(response).HasField("error_detail")
    assert set(client.configs) == {"default/b"} and client.synced.is_set()


def test_what_was_never_taken_is_forgotten_at_a_reconnect():
    """A refused fleet deleted while the worker was away: the server, told only what was taken,
    sends no removal for it; held on, it came back (credentials and all) with the next
    configuration taken."""
    client = XdsConfigClient("127.0.0.1:1", _usable_unless("unusable"))
    client._apply(_response("1", {"default/b": _fleet("default/b", "b1")}))
    client._apply(_response("2", {"default/a": _fleet("default/a", "unusable")}))
    client._forget_untaken()  # what a (re)connect does first
    assert set(client.received) == {"default/b"} and set(client.sent) == {"default/b"}
    client._apply(_response("3", {"default/b": _fleet("default/b", "b2")}))
    assert set(client.configs) == {"default/b"}


def test_a_refused_fleet_whose_parts_are_on_their_way_stays_refused():
    client = XdsConfigClient("127.0.0.1:1", _usable_unless("unusable"), fleet=FLEET)
    head = config_pb2.TranslatorConfig(name=FLEET, parts=2)
    client._apply(_response("1", {FLEET: head, _part(FLEET, 0): _fleet("", "a"), _part(FLEET, 1): _fleet("", "b")}))
    client._apply(_response("2", {_part(FLEET, 0): _fleet("", "unusable")}))
    assert client.refused == {FLEET}
    client._apply(_response("3", {FLEET: config_pb2.TranslatorConfig(name=FLEET, parts=3)}))  # part 2 on its way
    assert client.refused == {FLEET} and client.versions[_part(FLEET, 0)] == "1"  # a reconnect gets it again


def test_after_failures_that_name_no_fleet_every_fleet_is_taken_once_they_stop():
    failing = [True]

    def on_update(configs: dict) -> None:
        if failing[0]:
            raise RuntimeError("disk full")

    client = XdsConfigClient("127.0.0.1:1", on_update)
    client._apply(_response("1", {"default/a": _fleet("default/a", "a1")}))
    client._apply(_response("2", {"default/b": _fleet("default/b", "b1")}))
    assert client.refused == {"default/a", "default/b"} and client.versions == {}
    failing[0] = False
    client._apply(_response("3", {"default/c": _fleet("default/c", "c1")}))
    assert set(client.configs) == {"default/a", "default/b", "default/c"} and not client.refused


async def test_a_configuration_taken_while_the_server_starts_reaches_it(monkeypatch):
    """The translator's main: once synced it starts its server with the configurations it has; one
    taken while the server starts is handed to it then (it served the one before until the next
    edit)."""
    import argparse
    import asyncio

    from aigw_translator import __main__ as main

    client = XdsConfigClient("127.0.0.1:1", lambda _c: None)
    client._apply(_response("1", {"default/a": _fleet("default/a", "a1")}))
    served: list[dict] = []

    class Server:
        def update_configs(self, configs: dict) -> None:
            served.append(configs)

    async def starting(configs, listen, budgets):
        served.append(configs)
        await asyncio.sleep(0)
        client._apply(_response("2", {"default/a": _fleet("default/a", "a2")}))  # while it starts
        return Server()

    monkeypatch.setattr(main, "serve", starting)
    args = argparse.Namespace(ready_fd=None, listen="127.0.0.1:0", budgets=argparse.Namespace(budgets=lambda: None))
    await main._serve(args, client)
    assert [b.name for b in served[-1]["default/a"].backends] == ["a2"]


def test_the_translator_names_the_fleets_whose_configuration_it_cannot_build(monkeypatch):
    """config.runtimes (what the translator's update_configs does) builds every fleet and, when some
    cannot be built, raises FleetsUnusable naming each with its reason, building nothing."""
    import pytest

    from aigw_translator import config
    from aigw_translator.config import FleetsUnusable, RuntimeConfig, runtimes

    build = RuntimeConfig.build

    def failing(config_: config_pb2.TranslatorConfig) -> RuntimeConfig:
        if config_.name == "default/a":
            raise ValueError("no such thing")
        return build(config_)

    monkeypatch.setattr(config.RuntimeConfig, "build", staticmethod(failing))
    with pytest.raises(FleetsUnusable) as raised:
        runtimes({"default/a": _fleet("default/a", "x"), "default/b": _fleet("default/b", "y")})
    assert raised.value.fleets == {"default/a"} and str(raised.value) == "default/a: no such thing"
    assert set(runtimes({"default/b": _fleet("default/b", "y")})) == {"default/b"}


def test_a_sidecar_never_asks_twice_for_a_part_on_one_connection():
    """A fleet served whole for a while (QuotaPolicies) and then in parts again: the parts were
    subscribed to when the connection began, and a subscription names them again only if they
    were not (a subscription makes the server send a resource again: the 64 parts twice)."""
    client = XdsConfigClient("127.0.0.1:1", lambda _c: None, fleet=FLEET)
    client.asked = set(client._subscription())  # what the connection began with
    ack = client._apply(_response("1", {FLEET: config_pb2.TranslatorConfig(name=FLEET)}))  # whole
    assert not ack.resource_names_subscribe
    parts = {_part(FLEET, i): config_pb2.TranslatorConfig() for i in range(contract.TRANSLATOR_CONFIG_PARTS)}
    head = config_pb2.TranslatorConfig(name=FLEET, parts=contract.TRANSLATOR_CONFIG_PARTS)
    ack = client._apply(_response("2", {FLEET: head, **parts}))
    assert not ack.resource_names_subscribe and not ack.HasField("error_detail")
    grown = config_pb2.TranslatorConfig(name=FLEET, parts=contract.TRANSLATOR_CONFIG_PARTS + 1)
    ack = client._apply(_response("3", {FLEET: grown}))
    assert list(ack.resource_names_subscribe) == [_part(FLEET, contract.TRANSLATOR_CONFIG_PARTS)]
