"""The translator configuration over xDS: a translator process follows the control plane."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog
from envoy.service.status.v3 import csds_pb2

from aigw_translator.xds_client import XdsConfigClient
from aigw_xds.controller import Controller
from aigw_xds.sources.files import FileSource
from aigw_xds.xds.build import BuildSettings
from aigw_xds.xds.server import ClientStatusDiscoveryService
from tests.resource_text import api_key, backend, gateway, route


async def test_translator_follows_every_fleet_and_its_changes(plane, tmp_path: Path):
    (tmp_path / "a.yaml").write_text(gateway() + route("r", {"m": "b"}) + backend("b", 9000) + api_key("b", "sk-one"))
    source = FileSource(tmp_path)
    controller = Controller(plane.cache, BuildSettings())
    controller.apply(source.load())

    updates: list[dict] = []
    client = XdsConfigClient(f"127.0.0.1:{plane.port}", updates.append, node_id="worker-1")
    follower = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.synced.wait(), 10)
        assert list(client.configs) == ["default/gw"]
        assert client.configs["default/gw"].backends[0].auth.api_key.key == "sk-one"

        # A second Gateway and a rotated key arrive as updates.
        (tmp_path / "a.yaml").write_text(
            gateway() + route("r", {"m": "b"}) + backend("b", 9000) + api_key("b", "sk-two")
        )
        (tmp_path / "b.yaml").write_text(
            gateway("other", port=9090).split("---", 1)[1] + route("r2", {"m": "b"}, gateway_name="other")
        )
        controller.apply(source.load())
        await _until(lambda: set(client.configs) == {"default/gw", "default/other"})
        assert client.configs["default/gw"].backends[0].auth.api_key.key == "sk-two"

        # A deleted Gateway is removed from the translator too.
        (tmp_path / "b.yaml").unlink()
        controller.apply(source.load())
        await _until(lambda: set(client.configs) == {"default/gw"})

        # CSDS shows the translator node but never the configuration's contents (credentials).
        status = ClientStatusDiscoveryService(plane.cache, plane.registry).client_status(csds_pb2.ClientStatusRequest())
        [node] = [c for c in status.config if c.node.id == "worker-1"]
        assert node.node.metadata.fields["aigw.fleet"].string_value == "aigw:translators"
        assert all(not e.xds_config.value for e in node.generic_xds_configs)
        assert b"sk-two" not in status.SerializeToString()
    finally:
        follower.cancel()


async def test_translator_warns_when_its_fleet_is_not_served(plane, tmp_path: Path):
    """--fleet naming a Gateway the control plane has not compiled (a typo, or not applied yet) is
    a warning when the translator syncs and again whenever its Gateway goes; not while it is there."""
    (tmp_path / "a.yaml").write_text(gateway() + route("r", {"m": "b"}) + backend("b", 9000) + api_key("b", "sk-one"))
    source = FileSource(tmp_path)
    controller = Controller(plane.cache, BuildSettings())
    controller.apply(source.load())
    with structlog.testing.capture_logs() as logs:
        client = XdsConfigClient(f"127.0.0.1:{plane.port}", lambda _configs: None, fleet="default/other")
        follower = asyncio.create_task(client.run())
        try:
            await asyncio.wait_for(client.synced.wait(), 10)
            assert client.configs == {}
            warned = [e for e in logs if e["event"] == "xds_fleet_unknown"]
            assert [(e["fleet"], e["log_level"]) for e in warned] == [("default/other", "warning")]
            (tmp_path / "b.yaml").write_text(
                gateway("other", port=9090).split("---", 1)[1] + route("r2", {"m": "b"}, gateway_name="other")
            )
            controller.apply(source.load())
            await _until(lambda: set(client.configs) == {"default/other"})
            assert len([e for e in logs if e["event"] == "xds_fleet_unknown"]) == 1
            (tmp_path / "b.yaml").unlink()
            controller.apply(source.load())
            await _until(lambda: not client.configs)
            assert len([e for e in logs if e["event"] == "xds_fleet_unknown"]) == 2
        finally:
            follower.cancel()


async def _until(predicate, timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


@pytest.mark.parametrize(
    ("peer", "auth", "allowed"),
    [
        ("ipv4:127.0.0.1:5000", {}, True),
        ("ipv6:[::1]:5000", {}, True),
        ("unix:/run/aigw.sock", {}, True),
        ("ipv4:10.1.2.3:5000", {}, False),
        ("ipv6:[fd00::1]:5000", {}, False),
        # mTLS: a verified client certificate without a SPIFFE ID, no --authorize grant configured
        ("ipv4:10.1.2.3:5000", {"x509_pem_cert": [b"..."], "x509_common_name": [b"translator-1"]}, True),
    ],
)
def test_translator_configuration_goes_only_to_local_or_authenticated_peers(peer, auth, allowed):
    """Without grants and outside Kubernetes mode (the per-node rules: tests/unit/test_authz.py)."""
    from aigw_xds.xds.authz import Authorizer, identity_of

    assert Authorizer().may_have_any(identity_of(peer, auth)) is allowed


async def test_a_sidecar_gets_its_fleets_configuration_in_parts_and_an_edit_of_a_route_sends_its_part(
    plane, tmp_path: Path
):
    """A translator that follows one fleet (a sidecar's --fleet) subscribes to the configuration's
    head and its contract.TRANSLATOR_CONFIG_PARTS parts; what it assembles is the whole
    configuration the control plane compiled. An edit of one route's backend, then of its model,
    sends the one part that holds that route's backends and models (incremental.translator_part):
    not the head, not the others; /v1/models keeps listing the models in the routes' order."""
    import aigw_contract as contract
    from aigw_xds.compile.incremental import translator_part
    from aigw_xds.keys import ResourceKey

    routes = 40

    def models(renamed: str = "m7") -> list[str]:  # by route name: r0, r1, r10, r11...
        return [renamed if i == 7 else f"m{i}" for i in sorted(range(routes), key=lambda i: f"r{i}")]

    def write(override: str, renamed: str = "m7") -> None:
        text = gateway() + backend("b", 9000) + api_key("b", "sk-one")
        text += "".join(route(f"r{i}", {renamed if i == 7 else f"m{i}": "b"}) for i in range(routes))
        ref = "- {name: b, priority: 0, weight: 1}"
        (tmp_path / "a.yaml").write_text(
            text.replace(
                f"value: {renamed}}}\n      backendRefs:\n        {ref}",
                f"value: {renamed}}}\n      backendRefs:\n        {ref[:-1]}, modelNameOverride: {override}}}",
            )
        )

    write("first")
    source = FileSource(tmp_path)
    controller = Controller(plane.cache, BuildSettings())
    controller.apply(source.load())
    client = XdsConfigClient(f"127.0.0.1:{plane.port}", lambda _configs: None, fleet="default/gw")
    follower = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.synced.wait(), 10)
        parts = [contract.translator_config_part("default/gw", i) for i in range(contract.TRANSLATOR_CONFIG_PARTS)]
        assert set(client.received) == {"default/gw", *parts}
        assert client.configs["default/gw"] == controller.last_good["default/gw"].translator
        assert len(client.configs["default/gw"].backends) == routes
        assert {b.model_name_override for b in client.configs["default/gw"].backends} == {"", "first"}

        before = dict(client.received)
        write("second")  # route r7's backendRef
        controller.apply(source.load())
        await _until(lambda: client.received != before)
        changed = {name for name, config in client.received.items() if config is not before.get(name)}
        part = translator_part(ResourceKey("AIGatewayRoute", "default", "r7"))
        assert changed == {contract.translator_config_part("default/gw", part)}
        assert client.configs["default/gw"] == controller.last_good["default/gw"].translator
        overrides = {b.name: b.model_name_override for b in client.configs["default/gw"].backends}
        assert [o for name, o in overrides.items() if "/route/r7/" in name] == ["second"]
        assert [m.id for m in client.configs["default/gw"].models] == models()

        before = dict(client.received)
        write("second", renamed="m7-renamed")
        controller.apply(source.load())
        await _until(lambda: client.received != before)
        changed = {name for name, config in client.received.items() if config is not before.get(name)}
        assert changed == {contract.translator_config_part("default/gw", part)}
        assert client.configs["default/gw"] == controller.last_good["default/gw"].translator
        assert [m.id for m in client.configs["default/gw"].models] == models("m7-renamed")
    finally:
        follower.cancel()


class _OlderTranslator(XdsConfigClient):
    """A stand-in for a translator older than the configuration parts (still running while a
    rolling upgrade goes on): its node announces no client feature, and it subscribes to the names
    it knows, a fleet's or every one ("*"), never to parts."""

    def _node(self):
        node = super()._node()
        node.ClearField("client_features")
        return node

    def _subscription(self) -> list[str]:
        return ["*"] if self.fleet is None else [self.fleet]


async def test_a_translator_older_than_the_parts_is_sent_each_configuration_whole(plane, tmp_path: Path):
    """A sidecar that does not announce contract.TRANSLATOR_CONFIG_PARTS_FEATURE would take the head
    for the whole configuration (no backends, no models); it is sent the configuration made whole
    under the head's name, no parts, again after an edit, and the control plane says once that an
    older translator is connected. A shared worker of that age ("*") gets the wholes alone too. A
    current translator beside them still gets the parts."""
    import aigw_contract as contract

    def write(key: str) -> None:
        text = gateway() + backend("b", 9000) + api_key("b", key)
        (tmp_path / "a.yaml").write_text(text + "".join(route(f"r{i}", {f"m{i}": "b"}) for i in range(12)))

    write("sk-one")
    source = FileSource(tmp_path)
    controller = Controller(plane.cache, BuildSettings())
    controller.apply(source.load())
    target = f"127.0.0.1:{plane.port}"
    with structlog.testing.capture_logs() as logs:
        sidecar = _OlderTranslator(target, lambda _configs: None, fleet="default/gw", node_id="old-sidecar")
        worker = _OlderTranslator(target, lambda _configs: None, node_id="old-worker")
        current = XdsConfigClient(target, lambda _configs: None, fleet="default/gw", node_id="new-sidecar")
        followers = [asyncio.create_task(c.run()) for c in (sidecar, worker, current)]
        try:
            for client in (sidecar, worker, current):
                await asyncio.wait_for(client.synced.wait(), 10)
            expected = controller.last_good["default/gw"].translator
            for old in (sidecar, worker):
                assert list(old.received) == ["default/gw"]  # no part
                assert old.configs["default/gw"] == expected
                assert old.configs["default/gw"].parts == 0 and len(old.configs["default/gw"].backends) == 12
            assert len(current.received) == 1 + contract.TRANSLATOR_CONFIG_PARTS
            warned = sorted(e["node"] for e in logs if e["event"] == "translator_takes_wholes")
            assert warned == ["old-sidecar", "old-worker"]

            write("sk-two")  # a rotated key reaches the older translators whole
            controller.apply(source.load())
            await _until(
                lambda: all(
                    c.configs["default/gw"].backends[0].auth.api_key.key == "sk-two" for c in (sidecar, worker, current)
                )
            )
            assert sidecar.configs["default/gw"] == controller.last_good["default/gw"].translator
            assert list(sidecar.received) == ["default/gw"]
        finally:
            for follower in followers:
                follower.cancel()


async def test_a_translator_that_refused_a_configuration_gets_it_again_when_it_reconnects(plane, tmp_path: Path):
    """A sidecar that cannot use a configuration (here: it fails once) NACKs it and keeps the one it
    had; the control plane does not send it again on that stream. On a reconnect the sidecar names
    only the versions it took, so the control plane sends the refused configuration again, and the
    sidecar takes it."""
    (tmp_path / "a.yaml").write_text(gateway() + route("r", {"m": "b"}) + backend("b", 9000) + api_key("b", "sk-one"))
    source = FileSource(tmp_path)
    controller = Controller(plane.cache, BuildSettings())
    controller.apply(source.load())
    failures = ["sk-two"]

    def on_update(configs: dict) -> None:
        keys = {b.auth.api_key.key for c in configs.values() for b in c.backends}
        if failures and failures[0] in keys:
            failures.pop()
            raise RuntimeError("cannot use it now")

    client = XdsConfigClient(f"127.0.0.1:{plane.port}", on_update, fleet="default/gw")
    follower = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.synced.wait(), 10)
        held = dict(client.versions)
        (tmp_path / "a.yaml").write_text(
            gateway() + route("r", {"m": "b"}) + backend("b", 9000) + api_key("b", "sk-two")
        )
        controller.apply(source.load())
        await _until(lambda: not failures)  # refused once
        assert client.configs["default/gw"].backends[0].auth.api_key.key == "sk-one"
        assert client.versions == held and client.refused == {"default/gw"}

        follower.cancel()  # the connection ends; the client reconnects with what it holds
        follower = asyncio.create_task(client.run())
        await _until(lambda: client.configs["default/gw"].backends[0].auth.api_key.key == "sk-two")
        assert not client.refused and client.versions != held
    finally:
        follower.cancel()


async def test_a_translator_keeps_a_withheld_fleets_configuration(plane):
    """From review: a control plane restarted on a broken Gateway withholds its fleet, and Envoy keeps
    what it serves; a translator that follows the control plane and reconnects with that fleet's
    configuration was told to remove it, so every request needing it got a 503. It keeps it; once
    the fleet is no longer withheld (its Gateway deleted), it is told the configuration is gone."""
    from aigw_contract import TRANSLATORS_FLEET
    from aigw_xds.xds import type_urls
    from aigw_xds.xds.cache import FleetResources, make_snapshot

    def translators(withheld: frozenset[str]):
        return make_snapshot(TRANSLATORS_FLEET, FleetResources({type_urls.TRANSLATOR: {}}), withheld=withheld)

    plane.cache.set(translators(frozenset({"default/gw"})))
    worker = plane.envoy(delta=True, node_id="worker-1", cluster=TRANSLATORS_FLEET)
    held = {"default/gw": "v1", "default/gw#3": "v1", "default/gone": "v1"}
    await worker.send(type_url=type_urls.TRANSLATOR, resource_names_subscribe=["*"], initial_resource_versions=held)
    first = await worker.recv()
    assert list(first.removed_resources) == ["default/gone"]
    await worker.ack(first)
    plane.cache.set(translators(frozenset()))
    second = await worker.recv()
    assert sorted(second.removed_resources) == ["default/gw", "default/gw#3"]


def test_what_a_withholding_changes_is_logged_as_that() -> None:
    """A platform team's trial: the translators' snapshot, sent again only because the fleets it
    withholds changed, was logged as another publish of the same version; withholding the fleets
    without a snapshot (ANY_FLEET, a file that does not read) read "fleet_withheld fleet=*", while
    every fleet served kept serving."""
    from aigw_contract import TRANSLATORS_FLEET
    from aigw_xds.xds import type_urls
    from aigw_xds.xds.cache import ANY_FLEET, FleetResources, SnapshotCache, make_snapshot

    cache = SnapshotCache()
    translators = FleetResources({type_urls.TRANSLATOR: {}})
    with structlog.testing.capture_logs() as logs:
        cache.set(make_snapshot(TRANSLATORS_FLEET, translators))
        cache.set(make_snapshot(TRANSLATORS_FLEET, translators, withheld=frozenset({"default/gw"})))
        cache.withhold({ANY_FLEET: "gw.yaml does not read"})
        cache.withhold({})
    assert [(e["event"], e.get("version") is not None) for e in logs] == [
        ("snapshot_published", True),
        ("snapshot_withheld_fleets_changed", False),
        ("fleets_without_a_snapshot_withheld", False),
        ("fleets_without_a_snapshot_released", False),
    ]
    assert logs[1]["withheld"] == ["default/gw"] and logs[2]["reason"] == "gw.yaml does not read"
    assert cache.publishes[TRANSLATORS_FLEET] == 1
