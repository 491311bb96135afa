"""The controller keeps each fleet's last good configuration through bad edits, and only that."""

from __future__ import annotations

from pathlib import Path

from aigw_xds.controller import Controller
from aigw_xds.sources.files import FileSource
from aigw_xds.xds import types
from aigw_xds.xds.build import BuildSettings
from aigw_xds.xds.cache import SnapshotCache
from tests.resource_text import backend, gateway, route


def setup(tmp_path: Path):
    cache = SnapshotCache()
    controller = Controller(cache, BuildSettings(translator_enabled=False))
    source = FileSource(tmp_path)
    return cache, controller, source


def endpoints_port(cache: SnapshotCache, fleet: str = "default/gw") -> int:
    assignment = cache.get(fleet).of_type(types.ENDPOINT)["default/r/rule/0"].message
    return assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value


def test_invalid_yaml_keeps_the_last_good_config_and_a_fix_applies(tmp_path: Path):
    cache, controller, source = setup(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}))
    (tmp_path / "backends.yaml").write_text(backend("a", 9001))
    assert controller.apply(source.load()).published == ["default/gw"]
    (tmp_path / "backends.yaml").write_text("kind: Backend\nmetadata: {name: [oops\n")
    report = controller.apply(source.load())
    assert report.kept == ["default/gw"] and report.published == []
    assert any("backends.yaml: invalid YAML at line 3, column 1" in str(d) for d in report.diagnostics)
    assert endpoints_port(cache) == 9001
    (tmp_path / "backends.yaml").write_text(backend("a", 9002))
    assert controller.apply(source.load()).published == ["default/gw"]
    assert endpoints_port(cache) == 9002


def test_invalid_gateway_document_keeps_the_fleet(tmp_path: Path):
    cache, controller, source = setup(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}) + backend("a", 9001))
    controller.apply(source.load())
    (tmp_path / "gw.yaml").write_text(
        (gateway() + route("r", {"m": "a"}) + backend("a", 9001)).replace("port: 8080", "port: 99999")
    )
    report = controller.apply(source.load())
    assert report.kept == ["default/gw"]
    assert any(d.field == "spec.listeners[0].port" for d in report.diagnostics if d.is_error)
    assert cache.get("default/gw") is not None


def test_invalid_backend_keeps_the_fleet_that_used_it(tmp_path: Path):
    cache, controller, source = setup(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}) + backend("a", 9001))
    controller.apply(source.load())
    (tmp_path / "gw.yaml").write_text(
        gateway() + route("r", {"m": "a"}) + backend("a", 9001).replace("name: OpenAI", "name: NotASchema")
    )
    report = controller.apply(source.load())
    assert report.kept == ["default/gw"]
    assert endpoints_port(cache) == 9001


def test_deleted_gateway_is_removed(tmp_path: Path):
    cache, controller, source = setup(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}) + backend("a", 9001))
    controller.apply(source.load())
    (tmp_path / "gw.yaml").write_text(backend("a", 9001))
    report = controller.apply(source.load())
    assert report.removed == ["default/gw"] and cache.get("default/gw") is None


def test_unchanged_recompile_publishes_nothing(tmp_path: Path):
    cache, controller, source = setup(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}) + backend("a", 9001))
    controller.apply(source.load())
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}) + backend("a", 9001) + "\n# comment\n")
    assert controller.apply(source.load()).published == []
