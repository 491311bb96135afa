"""The controller keeps each fleet's last good configuration through bad edits, and only that."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog.testing

import aigw_contract as contract
from aigw_contract import TRANSLATORS_FLEET
from aigw_xds.compile.incremental import translator_part
from aigw_xds.compile.ir import GatewayIR
from aigw_xds.controller import Controller
from aigw_xds.diagnostics import Diagnostic, error
from aigw_xds.keys import ResourceKey
from aigw_xds.resources import ResourceSet
from aigw_xds.sources.files import FileSource
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import BuildSettings
from aigw_xds.xds.cache import SnapshotCache
from tests.resource_text import api_key, backend, gateway, resources, route


def setup(tmp_path: Path):
    cache = SnapshotCache()
    controller = Controller(cache, BuildSettings(translator_enabled=False))
    source = FileSource(tmp_path)
    return cache, controller, source


def endpoints_port(cache: SnapshotCache, fleet: str = "default/gw") -> int:
    assignment = cache.get(fleet).of_type(type_urls.ENDPOINT)["default/r/rule/0"].message
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


@pytest.mark.parametrize("serve", [True, False])
def test_started_on_a_broken_route_serve_withholds_its_fleet_and_run_serves_the_rest(tmp_path: Path, serve: bool):
    """serve started (or restarted) on a route that does not validate: the fleet its parentRefs name
    has never been served here, and served without the route it would take that route's models
    from the Envoys that outlived the restart. So serve withholds it (its nodes get nothing, and
    keep what they serve) until the route is fixed; run, whose Envoy starts with it, serves the rest."""
    cache = SnapshotCache()
    controller = Controller(cache, BuildSettings(translator_enabled=False), withhold_incomplete=serve)
    source = FileSource(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}) + backend("a", 9001))
    (tmp_path / "more.yaml").write_text(route("s", {"n": "a"}).replace("weight: 1", "weight: nine"))
    report = controller.apply(source.load())
    assert any(d.is_error and d.field.endswith("weight") for d in report.diagnostics)
    if serve:
        assert report.published == [] and cache.get("default/gw") is None
        assert cache.withheld("default/gw") == "AIGatewayRoute default/s names it and has errors"
    else:
        assert report.published == ["default/gw"] and cache.withheld("default/gw") is None
    (tmp_path / "more.yaml").write_text(route("s", {"n": "a"}))
    report = controller.apply(source.load())
    assert report.published == ["default/gw"] and cache.withheld("default/gw") is None
    # Served once, the fleet keeps the last good version of a route that breaks (as always).
    (tmp_path / "more.yaml").write_text(route("s", {"n": "a"}).replace("weight: 1", "weight: nine"))
    assert controller.apply(source.load()).published == [] and cache.get("default/gw") is not None


def test_started_on_a_file_that_does_not_read_serve_withholds_every_fleet(tmp_path: Path):
    """A new user's trial: serve restarted while the file of a route had a bad indent published the
    Gateway without the route (every model a 404 on Envoys that had served it). A document that
    does not read may hold any fleet's resources, even its Gateway: every fleet is withheld, one
    not compiled too (ANY_FLEET: its nodes get nothing rather than an empty configuration), until
    it reads."""
    from aigw_xds.xds.cache import ANY_FLEET

    cache = SnapshotCache()
    controller = Controller(cache, BuildSettings(translator_enabled=False), withhold_incomplete=True)
    source = FileSource(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}) + backend("a", 9001))
    (tmp_path / "route.yaml").write_text(route("s", {"n": "a"}).replace("spec:\n", "spec:\n bad: indent\n"))
    report = controller.apply(source.load())
    assert report.published == [] and cache.get("default/gw") is None
    assert cache.withheld("default/gw") == f"{tmp_path / 'route.yaml'} does not read, and may hold its resources"
    assert cache.withheld("default/other") == cache.withheld("default/gw")  # not compiled: withheld too
    assert ANY_FLEET in cache.withheld_fleets()
    (tmp_path / "route.yaml").write_text(route("s", {"n": "a"}))
    assert controller.apply(source.load()).published == ["default/gw"]
    assert cache.withheld("default/other") is None and cache.withheld_fleets() == []


def test_a_broken_route_withholds_no_gateway_in_kubernetes_mode_nor_one_that_is_gone(tmp_path: Path):
    """From review: Kubernetes mode serves a Gateway without what is invalid (its replicas agree
    whenever they started), so a route in error must not withhold it there; and a Gateway deleted
    (or one a route names by mistake) is not withheld by the route that names it: its nodes are told
    it is gone."""
    text = gateway() + route("r", {"m": "a"}) + backend("a", 9001)
    broken = route("s", {"n": "a"}).replace("weight: 1", "weight: nine")
    cluster = SnapshotCache()
    kubernetes = Controller(
        cluster, BuildSettings(translator_enabled=False), exclude_invalid=True, withhold_incomplete=True
    )
    assert kubernetes.apply(resources(text + broken)).published == ["default/gw"]
    assert cluster.withheld("default/gw") is None

    cache = SnapshotCache()
    controller = Controller(cache, BuildSettings(translator_enabled=False), withhold_incomplete=True)
    source = FileSource(tmp_path)
    (tmp_path / "gw.yaml").write_text(text)
    assert controller.apply(source.load()).published == ["default/gw"]
    (tmp_path / "more.yaml").write_text(broken + route("t", {"o": "a"}, gateway_name="typo").replace("1}", "x}"))
    controller.apply(source.load())
    (tmp_path / "gw.yaml").write_text(route("r", {"m": "a"}) + backend("a", 9001))  # the Gateway deleted
    report = controller.apply(source.load())
    assert report.removed == ["default/gw"]
    assert cache.withheld("default/gw") is None and cache.withheld("default/typo") is None


def test_started_on_a_broken_gateway_its_fleet_is_withheld_not_unknown(tmp_path: Path):
    """A Gateway that does not validate at start: its nodes must not get the empty configuration of
    an unknown fleet (which would remove an Envoy's listeners), until it is fixed or deleted."""
    cache, controller, source = setup(tmp_path)
    (tmp_path / "gw.yaml").write_text((gateway() + route("r", {"m": "a"}) + backend("a", 9001)).replace("8080", "8o80"))
    controller.apply(source.load())
    assert cache.get("default/gw") is None and cache.withheld("default/gw")
    (tmp_path / "gw.yaml").write_text(route("r", {"m": "a"}) + backend("a", 9001))  # the Gateway deleted
    controller.apply(source.load())
    assert cache.withheld("default/gw") is None


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


def _route_models(cache: SnapshotCache, fleet: str = "default/gw") -> set[str]:
    """The model names the fleet's route configurations match on (exact x-ai-eg-model matches)."""
    found: set[str] = set()
    for resource in cache.get(fleet).of_type(type_urls.ROUTE).values():
        for vhost in resource.message.virtual_hosts:
            for r in vhost.routes:
                found.update(h.string_match.exact for h in r.match.headers if h.string_match.exact)
    return found


ROUTE_MISTAKES = {
    "weight not a number": ("weight: 1}", "weight: lots}"),
    "unknown header match type": ("{type: Exact, name: x-ai-eg-model", "{type: Bogus, name: x-ai-eg-model"),
    "misspelt field": ("backendRefs:", "backendRefz:"),
    "bad timeout": ("  rules:", "  rules:\n    - timeouts: {request: soon}\n      backendRefs: [{name: a}]"),
    "duplicate YAML key": ("spec:\n", "spec:\n  rules: []\n"),
    "name missing": ("metadata: {name: r, namespace: default}", "metadata: {namespace: default}"),
    "apiVersion typo": ("aigateway.envoyproxy.io/v1beta1", "aigateway.envoyproxy.io/v1beta"),
    "kind typo": ("kind: AIGatewayRoute", "kind: AIGatewayRout"),
}


@pytest.mark.parametrize("mistake", sorted(ROUTE_MISTAKES))
def test_invalid_route_keeps_its_last_good_version(tmp_path: Path, mistake: str):
    """Any invalid field in an AIGatewayRoute used to republish the Gateway without the route (every
    model of it 404). The route's last good version must stay, marked stale, until it is fixed."""
    cache, controller, source = setup(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + backend("a", 9001))
    (tmp_path / "route.yaml").write_text(route("r", {"m": "a"}))
    assert controller.apply(source.load()).published == ["default/gw"]
    old, new = ROUTE_MISTAKES[mistake]
    text = route("r", {"m": "a"})
    assert old in text
    (tmp_path / "route.yaml").write_text(text.replace(old, new, 1))
    report = controller.apply(source.load())
    assert report.published == [] and report.kept == ["default/gw"]
    assert any("route.yaml" in str(d) for d in report.diagnostics)
    assert any("last good" in str(d) for d in report.diagnostics)
    assert _route_models(cache) == {"m"}
    result = controller.last_result
    assert result is not None
    [accepted] = [c for c in result.statuses[ResourceKey("AIGatewayRoute", "default", "r")] if c.type == "Accepted"]
    assert not accepted.status and "stale" in accepted.message
    (tmp_path / "route.yaml").write_text(route("r", {"m2": "a"}))
    assert controller.apply(source.load()).published == ["default/gw"]
    assert _route_models(cache) == {"m2"}


@pytest.mark.parametrize("mistake", ["misspelt field", "name missing", "kind typo"])
def test_a_syntax_error_after_an_invalid_document_reports_only_the_syntax_error(tmp_path: Path, mistake: str):
    """A file that stops parsing keeps what it gave the last configuration, but the errors of its
    last parse are about text that is gone: only the syntax error is reported (the earlier error
    came back with it, found by a new user). The route keeps its last good version throughout."""
    cache, controller, source = setup(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + backend("a", 9001))
    (tmp_path / "route.yaml").write_text(route("r", {"m": "a"}))
    controller.apply(source.load())
    old, new = ROUTE_MISTAKES[mistake]
    (tmp_path / "route.yaml").write_text(route("r", {"m": "a"}).replace(old, new, 1))
    first = controller.apply(source.load())
    assert [d for d in first.diagnostics if d.is_error and "route.yaml" in str(d)]
    (tmp_path / "route.yaml").write_text("kind: AIGatewayRoute\nmetadata: {name: [oops\n")
    report = controller.apply(source.load())
    errors = [str(d) for d in report.diagnostics if d.is_error and "route.yaml" in str(d.origin)]
    assert len(errors) == 1 and "invalid YAML at line 3" in errors[0], errors
    assert report.kept == ["default/gw"] and _route_models(cache) == {"m"}
    (tmp_path / "route.yaml").write_text(route("r", {"m2": "a"}))
    assert controller.apply(source.load()).published == ["default/gw"]
    assert _route_models(cache) == {"m2"}


def test_a_resource_moved_out_of_a_file_that_stops_parsing_is_the_new_one_not_stale(tmp_path: Path):
    """A resource with an error in a.yaml, fixed and moved to b.yaml in the save that breaks a.yaml:
    b.yaml's version is the resource, not a stale one without an error to say why (found by review)."""
    _, _, source = setup(tmp_path)
    service = ResourceKey("AIServiceBackend", "default", "x")
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "x"}))
    (tmp_path / "a.yaml").write_text(backend("x", 9001))
    source.load()
    (tmp_path / "a.yaml").write_text(backend("x", 9001).replace("spec:", "spec:\n  bogus: 1", 1))
    assert service in source.load().stale_keys
    (tmp_path / "a.yaml").write_text("kind: Backend\nmetadata: {name: [oops\n")
    (tmp_path / "b.yaml").write_text(backend("x", 9002))
    resources = source.load()
    assert service not in resources.stale_keys
    assert resources.items[service].origin.file == str(tmp_path / "b.yaml")


def test_duplicated_route_keeps_its_last_good_version(tmp_path: Path):
    cache, controller, source = setup(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + backend("a", 9001) + route("r", {"m": "a"}))
    controller.apply(source.load())
    (tmp_path / "copy.yaml").write_text(route("r", {"other": "a"}))
    report = controller.apply(source.load())
    assert report.kept == ["default/gw"] and _route_models(cache) == {"m"}


@pytest.mark.parametrize("content", ["", "\n# being rewritten\n", "---\n"])
def test_a_file_left_empty_for_a_moment_keeps_its_resources(tmp_path: Path, content: str):
    """Editors truncate a file before writing it: an empty file must not drop the listener."""
    cache, controller, source = setup(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}) + backend("a", 9001))
    controller.apply(source.load())
    (tmp_path / "gw.yaml").write_text(content)
    report = controller.apply(source.load())
    assert report.kept == ["default/gw"] and report.removed == []
    assert any("holds no document now" in str(d) for d in report.diagnostics)
    assert cache.get("default/gw").of_type(type_urls.LISTENER)
    (tmp_path / "gw.yaml").unlink()
    assert controller.apply(source.load()).removed == ["default/gw"]


def test_a_single_config_file_replaced_by_rename_keeps_serving(tmp_path: Path):
    cache = SnapshotCache()
    controller = Controller(cache, BuildSettings(translator_enabled=False))
    path = tmp_path / "gw.yaml"
    path.write_text(gateway() + route("r", {"m": "a"}) + backend("a", 9001))
    source = FileSource(path)
    controller.apply(source.load())
    path.unlink()
    report = controller.apply(source.load())
    assert report.kept == ["default/gw"] and _route_models(cache) == {"m"}


def test_a_document_replaced_by_another_kind_keeps_the_resource_only_until_the_file_changes_again(tmp_path: Path):
    """A kind typo keeps the route (stale); fixing the typo brings it back as edited; removing the
    document removes the route."""
    cache, controller, source = setup(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + backend("a", 9001))
    (tmp_path / "route.yaml").write_text(route("r", {"m": "a"}))
    controller.apply(source.load())
    (tmp_path / "route.yaml").write_text(route("r", {"m": "a"}).replace("kind: AIGatewayRoute", "kind: AIGatewayRout"))
    assert controller.apply(source.load()).kept == ["default/gw"]
    (tmp_path / "route.yaml").write_text(route("r", {"m2": "a"}))
    controller.apply(source.load())
    assert _route_models(cache) == {"m2"}
    (tmp_path / "route.yaml").write_text("# nothing here any more\n---\n" + backend("z", 9009))
    report = controller.apply(source.load())
    assert report.published == ["default/gw"] and _route_models(cache) == set()


def test_a_fixed_configuration_says_so(tmp_path: Path):
    cache, controller, source = setup(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}) + backend("a", 9001))
    controller.apply(source.load())
    (tmp_path / "gw.yaml").write_text("kind: [broken\n")
    with structlog.testing.capture_logs() as broken:
        controller.apply(source.load())
    assert not [e for e in broken if e["event"] == "configuration_fixed"]
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}) + backend("a", 9002))
    with structlog.testing.capture_logs() as fixed:
        controller.apply(source.load())
    assert [e["fleet"] for e in fixed if e["event"] == "configuration_fixed"] == ["default/gw"]


def test_a_diagnostic_is_one_event_with_its_fields_and_whole_line(tmp_path: Path):
    cache, controller, source = setup(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "nope"}))
    with structlog.testing.capture_logs() as logs:
        controller.apply(source.load())
    [event] = [e for e in logs if e["event"] == "diagnostic" and e.get("resource") == "AIGatewayRoute default/r"]
    file = str(tmp_path / "gw.yaml")
    assert event["log_level"] == "error" and event["file"] == file
    where = f"{file}#{event['document']}"
    assert event["text"].startswith(f"error: {where}: AIGatewayRoute default/r") and event["message"] in event["text"]


def test_replicas_sharing_a_seal_secret_serve_identical_translator_configurations() -> None:
    """A fleet with no credential of its own seals with a key derived from the seal secret: replicas
    given one (Kubernetes mode: from the TLS Secret they share) serve translators the same bytes;
    without one, each process picks its own."""
    from tests.resource_text import resources

    text = gateway() + route("r", {"m": "b"}) + backend("b", 8000)

    def translator_bytes(seal_secret: bytes | None) -> bytes:
        cache = SnapshotCache()
        Controller(cache, BuildSettings(), seal_secret).apply(resources(text))
        snapshot = cache.get("aigw:translators")
        assert snapshot is not None
        return b"".join(r.packed for r in snapshot.of_type(type_urls.TRANSLATOR).values())

    assert translator_bytes(b"shared") == translator_bytes(b"shared")
    assert translator_bytes(None) != translator_bytes(None)


def test_an_edit_packs_again_only_the_translator_configurations_it_changed() -> None:
    """Each Gateway's TranslatorConfig is megabytes at scale: an edit of one Gateway's route keeps
    the other's resource as it was (not packed and hashed again), and the configuration is held
    once: what the compile gave is the very bytes the snapshot serves."""
    from tests.resource_text import resources

    def text(model: str) -> str:
        one = gateway("a") + route("r", {model: "b"}, gateway_name="a") + backend("b", 8000)
        two = (
            "---"
            + gateway("z", port=8081).split("---", 1)[1]
            + route("s", {"m": "c"}, gateway_name="z")
            + backend("c", 8001)
        )
        return one + two

    cache = SnapshotCache()
    controller = Controller(cache, BuildSettings())
    configs = []
    for model in ("m1", "m2"):
        controller.apply(resources(text(model)))
        snapshot = cache.get("aigw:translators")
        assert snapshot is not None
        configs.append(snapshot.of_type(type_urls.TRANSLATOR))
    parts = contract.TRANSLATOR_CONFIG_PARTS
    names = {f"default/{g}{suffix}" for g in "az" for suffix in ("", *(f"#{i}" for i in range(parts)))}
    assert set(configs[0]) == set(configs[1]) == names
    changed = {name for name in names if configs[1][name] is not configs[0][name]}
    part = contract.translator_config_part("default/a", translator_part(ResourceKey("AIGatewayRoute", "default", "r")))
    assert changed == {part}  # the part holding the route's models (its backends did not change)
    assert configs[1][part].version != configs[0][part].version
    for fleet in ("default/a", "default/z"):
        for name, piece in controller.last_good[fleet].translator_config_resources().items():
            assert piece.packed is configs[1][name].packed


def test_a_translator_configuration_is_held_once_after_a_mistake_is_undone() -> None:
    """A compile that is not served (a Backend made invalid: the Gateway keeps its last good
    configuration) and then the mistake undone: the configuration compiled again is the very
    object served since before the mistake, not an equal second copy held beside it."""
    from tests.resource_text import resources

    good = gateway("a") + route("r", {"m1": "b"}, gateway_name="a") + backend("b", 8000)
    broken = good.replace("port: 8000", "port: 0")
    assert broken != good
    cache = SnapshotCache()
    controller = Controller(cache, BuildSettings())
    served = []
    for text, kept in ((good, []), (broken, ["default/a"]), (good, [])):
        assert controller.apply(resources(text)).kept == kept
        snapshot = cache.get("aigw:translators")
        assert snapshot is not None
        served.append(snapshot.of_type(type_urls.TRANSLATOR)["default/a"])
    assert served[2] is served[0]
    assert controller.last_good["default/a"].translator_served[0].packed is served[2].packed


def test_the_cyclic_collector_is_off_while_a_configuration_compiles_and_back_after(tmp_path: Path, monkeypatch):
    """A compile's objects mostly outlive it: the collector pauses during apply (it would walk them
    again and again), and runs again afterwards, even when the compile fails (a bug of ours)."""
    import gc

    from aigw_xds import controller as controller_module

    cache, controller, source = setup(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}) + backend("a", 9001))
    seen: list[bool] = []
    compile_resources = controller_module.compile_resources

    def watched(*args, **kwargs):
        seen.append(gc.isenabled())
        return compile_resources(*args, **kwargs)

    monkeypatch.setattr(controller_module, "compile_resources", watched)
    assert gc.isenabled()
    assert controller.apply(source.load()).published == ["default/gw"]
    assert seen == [False] and gc.isenabled()

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(controller_module, "compile_resources", broken)
    with pytest.raises(RuntimeError):
        controller.apply(source.load())
    assert gc.isenabled()


def test_a_configuration_its_admission_refuses_keeps_the_last_good_one_and_its_errors_are_reported(tmp_path: Path):
    """The host's admission (run: a listener's new port must be free on this machine) refuses a
    fleet's new configuration: the served one stays, the refusal is an error of the apply, the
    translators keep their configuration; once admitted again it is published and said fixed. A
    fleet refused before anything was served for it is not served (and not said kept)."""
    refusing: set[int] = set()

    def admission(gateway: GatewayIR, served: GatewayIR | None, resources: ResourceSet) -> tuple[Diagnostic, ...]:
        held = {listener.port for listener in served.listeners} if served is not None else set()
        new = {listener.port for listener in gateway.listeners} - held
        return tuple(error(f"port {port} is refused", resource=gateway.key) for port in sorted(new & refusing))

    cache = SnapshotCache()
    controller = Controller(cache, BuildSettings(), admission=admission)
    source = FileSource(tmp_path)
    text = gateway() + route("r", {"m": "a"}) + backend("a", 9001)
    (tmp_path / "gw.yaml").write_text(text)
    refusing.add(8080)
    report = controller.apply(source.load())
    assert report.published == [] and report.kept == [] and cache.get("default/gw") is None
    assert [str(d) for d in controller.last_result.errors] == ["error: Gateway default/gw: port 8080 is refused"]
    refusing.clear()
    assert controller.apply(source.load()).published == ["default/gw"]
    served, translators = cache.get("default/gw"), cache.get(TRANSLATORS_FLEET)

    refusing.add(8081)
    (tmp_path / "gw.yaml").write_text(text.replace("port: 8080", "port: 8081").replace("port: 9001", "port: 9002"))
    with structlog.testing.capture_logs() as logs:
        report = controller.apply(source.load())
    assert report.kept == ["default/gw"] and report.published == []
    assert [str(d) for d in report.diagnostics if d.is_error] == ["error: Gateway default/gw: port 8081 is refused"]
    assert controller.last_result.errors == [d for d in report.diagnostics if d.is_error]
    assert cache.get("default/gw") is served and endpoints_port(cache) == 9001
    assert cache.get(TRANSLATORS_FLEET) is translators
    assert controller.last_good["default/gw"].listeners[0].port == 8080
    assert {"event": "last_good_configuration_kept", "fleet": "default/gw"}.items() <= logs[-1].items()

    refusing.clear()
    with structlog.testing.capture_logs() as logs:
        assert controller.apply(source.load()).published == ["default/gw"]
    assert endpoints_port(cache) == 9002 and controller.last_good["default/gw"].listeners[0].port == 8081
    assert any(entry["event"] == "configuration_fixed" for entry in logs)


def _key_of_backend(controller: Controller, fleet: str = "default/gw") -> str:
    [backend] = controller.last_good[fleet].translator.backends
    return backend.auth.api_key.key


def test_a_policy_retargeted_at_what_is_not_there_keeps_the_fleet_it_was_built_with(tmp_path: Path):
    """From a platform review: a BackendSecurityPolicy whose targetRefs name was edited into a typo
    applied to nothing, validate said nothing, and the backend was published without its key
    (every client a 401). The typo is an error on the field, and the fleet built with the policy
    keeps its last good configuration until it is fixed."""
    cache, controller, source = setup(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}) + backend("a", 9001))
    (tmp_path / "key.yaml").write_text(api_key("a", "sk-a"))
    assert controller.apply(source.load()).published == ["default/gw"]
    assert _key_of_backend(controller) == "sk-a"
    (tmp_path / "key.yaml").write_text(api_key("a", "sk-a").replace("name: a}", "name: aa}"))
    report = controller.apply(source.load())
    assert report.kept == ["default/gw"] and report.published == []
    [err] = [d for d in report.diagnostics if d.is_error]
    assert err.resource == ResourceKey("BackendSecurityPolicy", "default", "a-key")
    assert err.field == "spec.targetRefs[0].name" and "AIServiceBackend default/aa not found" in err.message
    assert _key_of_backend(controller) == "sk-a"
    (tmp_path / "key.yaml").write_text(api_key("a", "sk-b"))
    assert controller.apply(source.load()).kept == []
    assert _key_of_backend(controller) == "sk-b"  # (in the translator's part: Envoy's is the same)


@pytest.mark.parametrize(
    ("edit", "withheld"),
    [
        (
            lambda text: text.replace("name: local-a}", "name: local-aa}"),
            "BackendSecurityPolicy default/local-a-key names AIServiceBackend default/local-aa, which is not there: "
            "is it meant for local-a?",
        ),
        (
            lambda text: text.replace("kind: BackendSecurityPolicy", "kind: BackendSecurityPolicies"),
            "its Gateway or what it is built from has errors",  # read as the policy it is close to
        ),
    ],
    ids=["target-typo", "kind-typo"],
)
def test_started_on_a_policy_that_applies_to_nothing_serve_withholds_the_fleets_it_may_be_for(
    tmp_path: Path, edit, withheld: str
):
    """From a platform review: serve restarted on a BackendSecurityPolicy with a typo (in its kind,
    or its target's name) published the Gateway without the credential, over Envoys that had served
    it with one. Such a policy may be meant for any AIServiceBackend of its namespace: the fleets
    built with one are withheld until it is fixed."""
    cache = SnapshotCache()
    controller = Controller(cache, BuildSettings(translator_enabled=False), withhold_incomplete=True)
    source = FileSource(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "local-a"}) + backend("local-a", 9001))
    (tmp_path / "key.yaml").write_text(edit(api_key("local-a", "sk-a")))
    report = controller.apply(source.load())
    assert report.published == [] and cache.get("default/gw") is None
    assert (cache.withheld("default/gw") or "").startswith(withheld)
    (tmp_path / "key.yaml").write_text(api_key("local-a", "sk-a"))
    assert controller.apply(source.load()).published == ["default/gw"]
    assert _key_of_backend(controller) == "sk-a"


def test_started_on_a_policy_whose_target_is_far_from_any_name_serve_serves(tmp_path: Path):
    """From a diff review: a stale policy (its backend deleted long ago) withheld every Gateway of
    its namespace at serve's start. Only a target close to a name a fleet is built from is taken
    for a typo of it."""
    cache = SnapshotCache()
    controller = Controller(cache, BuildSettings(translator_enabled=False), withhold_incomplete=True)
    source = FileSource(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "local-a"}) + backend("local-a", 9001))
    (tmp_path / "key.yaml").write_text(api_key("retired-backend"))
    report = controller.apply(source.load())
    assert report.published == ["default/gw"] and cache.withheld("default/gw") is None
    assert any(d.field == "spec.targetRefs[0].name" for d in report.diagnostics if d.is_error)


def test_a_route_whose_parent_is_misspelt_keeps_the_fleet_that_served_it(tmp_path: Path):
    """From a platform review: `namespace: prod` added by mistake to a route's parentRef emptied a
    serving Gateway (every model a 404) with a warning. A route all of whose parents are not there
    keeps the fleet that served it as it was; a route moved to another Gateway that is there moves."""
    cache, controller, source = setup(tmp_path)
    other = gateway("other", port=8081)
    gateways = gateway() + other[other.index("---") :]  # (one GatewayClass)
    (tmp_path / "gw.yaml").write_text(gateways + backend("a", 9001))
    (tmp_path / "route.yaml").write_text(route("r", {"m": "a"}) + route("s", {"n": "a"}))
    assert sorted(controller.apply(source.load()).published) == ["default/gw", "default/other"]
    (tmp_path / "route.yaml").write_text(route("r", {"m": "a"}, gateway_name="gww") + route("s", {"n": "a"}))
    report = controller.apply(source.load())
    assert report.kept == ["default/gw"] and report.published == []
    assert any(d.field == "spec.parentRefs" and "did you mean default/gw?" in d.message for d in report.diagnostics)
    assert endpoints_port(cache) == 9001 and controller.last_good["default/gw"].closure >= {
        ResourceKey("AIGatewayRoute", "default", "r")
    }
    (tmp_path / "route.yaml").write_text(route("r", {"m": "a"}, gateway_name="other") + route("s", {"n": "a"}))
    report = controller.apply(source.load())
    assert report.kept == [] and sorted(report.published) == ["default/gw", "default/other"]
    assert ResourceKey("AIGatewayRoute", "default", "r") not in controller.last_good["default/gw"].closure


def test_a_policy_whose_target_was_deleted_holds_nothing(tmp_path: Path):
    """From a diff review: deleting a backend (or a route, a Gateway) and leaving its policy behind
    froze the fleet at its last good configuration, the deleted object served on and every later
    edit ignored. The policy's error stays (naming the target), but only an edit of a policy's own
    targets holds the fleet."""
    cache, controller, source = setup(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a", "n": "b"}))
    (tmp_path / "backends.yaml").write_text(backend("a", 9001) + backend("b", 9002))
    (tmp_path / "key.yaml").write_text(api_key("b", "sk-b"))
    assert controller.apply(source.load()).published == ["default/gw"]
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}))
    (tmp_path / "backends.yaml").write_text(backend("a", 9001))
    report = controller.apply(source.load())
    assert report.kept == [] and report.published == ["default/gw"]
    assert any(d.field == "spec.targetRefs[0].name" for d in report.diagnostics if d.is_error)
    assert {b.name.split("/")[0] for b in controller.last_good["default/gw"].translator.backends} == {"default"}
    assert len(controller.last_good["default/gw"].translator.backends) == 1


def test_started_on_a_policy_whose_target_kind_is_misspelt_serve_withholds_its_fleet(tmp_path: Path):
    """From a new-user trial: `kind: AIServiceBackends` in a BackendSecurityPolicy's targetRefs made
    the policy invalid, and serve's start published its backend without the key. Read as the kind
    it is close to, the target's fleet is not served without the policy."""
    cache = SnapshotCache()
    controller = Controller(cache, BuildSettings(translator_enabled=False), withhold_incomplete=True)
    source = FileSource(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}) + backend("a", 9001))
    policy = api_key("a", "sk-a")
    (tmp_path / "key.yaml").write_text(policy.replace("kind: AIServiceBackend,", "kind: AIServiceBackends,"))
    report = controller.apply(source.load())
    assert any(
        d.is_error and d.resource == ResourceKey("BackendSecurityPolicy", "default", "a-key")
        for d in report.diagnostics
    )
    assert report.published == [] and cache.withheld("default/gw") is not None
    (tmp_path / "key.yaml").write_text(policy)
    assert controller.apply(source.load()).published == ["default/gw"]


def _bsp(name: str, targets: list[str], key: str = "sk") -> str:
    """A BackendSecurityPolicy of an API key for several AIServiceBackends, and its Secret."""
    refs = "\n".join(f"    - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {t}}}" for t in targets)
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  targetRefs:
{refs}
  type: APIKey
  apiKey:
    secretRef: {{name: {name}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: default}}
stringData: {{apiKey: {key}}}
"""


def _keys(controller: Controller, fleet: str = "default/gw") -> dict[str, str]:
    return {b.name.split("/")[1]: b.auth.api_key.key for b in controller.last_good[fleet].translator.backends}


def test_only_a_reference_an_edit_took_from_a_fleet_holds_that_fleet(tmp_path: Path):
    """From a second diff review: a policy already naming a deleted backend froze its fleet at the
    next edit of its targets, however right; a typo in a reference one fleet uses held another
    fleet too; and a typo in a reference's sectionName was not seen (only kind and name compared)."""
    from tests.unit.test_rate_limit_compile import COSTS, TOKENS, btp, rate_limit

    cache, controller, source = setup(tmp_path)
    other = gateway("other", port=8081)
    gateways = gateway() + other[other.index("---") :]
    (tmp_path / "gw.yaml").write_text(gateways + route("r", {"m": "a"}) + route("s", {"n": "b"}, gateway_name="other"))
    (tmp_path / "backends.yaml").write_text(backend("a", 9001) + backend("b", 9002) + backend("c", 9003))
    (tmp_path / "key.yaml").write_text(_bsp("k", ["a", "b", "retired"]))
    assert sorted(controller.apply(source.load()).published) == ["default/gw", "default/other"]
    # References added or reordered beside a stale one: no reference was taken away.
    (tmp_path / "key.yaml").write_text(_bsp("k", ["retired", "c", "b", "a"], key="sk-2"))
    assert controller.apply(source.load()).kept == [] and _keys(controller) == {"a": "sk-2"}
    # b misspelt: the fleet that uses b is held, not the one that uses a.
    (tmp_path / "key.yaml").write_text(_bsp("k", ["retired", "c", "bb", "a"], key="sk-3"))
    report = controller.apply(source.load())
    assert report.kept == ["default/other"] and _keys(controller) == {"a": "sk-3"}
    assert _keys(controller, "default/other") == {"b": "sk-2"}
    # A BackendTrafficPolicy's sectionName misspelt: its rule would lose its budget.
    named = route("t", {"x": "a"}, extra=COSTS).replace("    - matches:", "    - name: rule-a\n      matches:", 1)
    (tmp_path / "key.yaml").write_text(_bsp("k", ["a", "b"]))
    (tmp_path / "t.yaml").write_text(named)
    target = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: t, sectionName: rule-a}"
    (tmp_path / "btp.yaml").write_text(btp(rate_limit(TOKENS), target=target))
    assert controller.apply(source.load()).kept == []
    assert [b.id for b in controller.last_good["default/gw"].translator.rate_limits] == [
        "btp/default/btp/0/route/default/t"
    ]
    (tmp_path / "btp.yaml").write_text(btp(rate_limit(TOKENS), target=target.replace("rule-a}", "rule-aa}")))
    assert controller.apply(source.load()).kept == ["default/gw"]
    assert [b.id for b in controller.last_good["default/gw"].translator.rate_limits] == [
        "btp/default/btp/0/route/default/t"
    ]


def test_a_name_close_to_a_stale_policys_target_with_a_policy_of_its_own_is_not_its_typo(tmp_path: Path):
    """From a second diff review: backends named in a series (vllm-1, vllm-2), each with its key,
    and a stale vllm-3-key: serve's start withheld the Gateway, "meant for vllm-2?"."""
    cache = SnapshotCache()
    controller = Controller(cache, BuildSettings(translator_enabled=False), withhold_incomplete=True)
    source = FileSource(tmp_path)
    models = {"m1": "vllm-1", "m2": "vllm-2"}
    (tmp_path / "gw.yaml").write_text(
        gateway() + route("r", models) + backend("vllm-1", 9001) + backend("vllm-2", 9002)
    )
    (tmp_path / "keys.yaml").write_text(_bsp("k1", ["vllm-1"]) + _bsp("k2", ["vllm-2"]) + _bsp("k3", ["vllm-3"]))
    report = controller.apply(source.load())
    assert report.published == ["default/gw"] and cache.withheld("default/gw") is None


def test_a_route_whose_parent_listener_is_misspelt_keeps_the_fleet_that_served_it(tmp_path: Path):
    """From a second diff review: a parentRef's sectionName misspelt (`htp` for the listener
    `http`) detached the route and emptied the Gateway, with a warning that named no listener."""
    cache, controller, source = setup(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + backend("a", 9001))
    parent = "group: gateway.networking.k8s.io}"
    text = route("r", {"m": "a"}).replace(parent, "group: gateway.networking.k8s.io, sectionName: http}")
    assert text != route("r", {"m": "a"})
    (tmp_path / "route.yaml").write_text(text)
    assert controller.apply(source.load()).published == ["default/gw"]
    (tmp_path / "route.yaml").write_text(text.replace("sectionName: http}", "sectionName: htp}"))
    report = controller.apply(source.load())
    assert report.kept == ["default/gw"] and endpoints_port(cache) == 9001
    [warned] = [d for d in report.diagnostics if d.field == "spec.parentRefs"]
    assert "Gateway default/gw has no listener named htp" in warned.message
    (tmp_path / "route.yaml").write_text(text)
    assert controller.apply(source.load()).kept == []


def _answers(cache: SnapshotCache) -> list:
    configs = cache.get("default/gw").of_type(type_urls.ROUTE).values()
    return [r for c in configs for vh in c.message.virtual_hosts for r in vh.routes]


def test_a_security_policy_added_to_a_served_gateway_closes_it_not_its_last_good_open_version(tmp_path: Path):
    """Found by a new user: a SecurityPolicy (not enforced) added while `run` served the Gateway
    left its last good configuration serving, open to every client, while the error said it was not
    served. The Gateway is served closed instead: every request refused (a 500 in the client's
    schema) while the policy names it; one naming a route takes that route out. Removed, it opens."""
    from tests.unit.test_security_policies import security_policy

    cache, controller, source = setup(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}) + route("s", {"n": "a"}) + backend("a", 1))
    controller.apply(source.load())
    assert any(r.route.cluster for r in _answers(cache))
    (tmp_path / "auth.yaml").write_text(security_policy("targetRefs: [{kind: Gateway, name: gw}]"))
    report = controller.apply(source.load())
    assert "default/gw" not in report.kept
    # The console says it is closed (a new user read "served without the SecurityPolicy" as open).
    said = [d.message for d in report.diagnostics if d.resource == ResourceKey("Gateway", "default", "gw")]
    assert any("every request answered a 500" in m and "SecurityPolicy default/auth" in m for m in said), said
    answers = _answers(cache)
    assert answers and not any(r.route.cluster for r in answers)
    assert {r.direct_response.status for r in answers} == {500}
    assert all("SecurityPolicy" in r.direct_response.body.inline_string for r in answers)
    (tmp_path / "auth.yaml").write_text(security_policy("targetRefs: [{kind: HTTPRoute, name: r}]"))
    controller.apply(source.load())
    served = {r.route.cluster for r in _answers(cache) if r.route.cluster}
    assert served == {"default/s/rule/0"}  # the route it names is out; the other is served
    (tmp_path / "auth.yaml").unlink()
    controller.apply(source.load())
    assert {r.route.cluster for r in _answers(cache) if r.route.cluster} == {"default/r/rule/0", "default/s/rule/0"}


def test_a_jwt_policy_added_moved_and_removed_while_served_is_what_envoy_checks(tmp_path: Path):
    """A SecurityPolicy's jwt edited while `run` serves the Gateway (the incremental compile):
    on the Gateway, every request of its host is checked; moved to one route, that route's alone;
    removed, none."""
    from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2

    from tests.unit.test_client_checks import GATEWAY_TARGET, ROUTE_A, jwt, policy

    def requirements() -> dict[str, str]:
        [configuration] = [c.message for c in cache.get("default/gw").of_type(type_urls.ROUTE).values()]
        out = {}
        for vhost in configuration.virtual_hosts:
            for name, entry in [(vhost.name, vhost), *((r.name, r) for r in vhost.routes)]:
                if "envoy.filters.http.jwt_authn" in entry.typed_per_filter_config:
                    config = jwt_pb2.PerRouteConfig()
                    entry.typed_per_filter_config["envoy.filters.http.jwt_authn"].Unpack(config)
                    out[name] = config.requirement_name
        return out

    cache, controller, source = setup(tmp_path)
    (tmp_path / "gw.yaml").write_text(gateway() + route("a", {"m": "x"}) + route("b", {"n": "x"}) + backend("x", 1))
    controller.apply(source.load())
    assert requirements() == {}
    (tmp_path / "auth.yaml").write_text(policy(GATEWAY_TARGET, jwt()))
    controller.apply(source.load())
    assert requirements() == {"default/gw/*": "policy:default/auth"}
    (tmp_path / "auth.yaml").write_text(policy(ROUTE_A, jwt()))
    controller.apply(source.load())
    checked = requirements()
    assert checked and all(n.startswith("default/a/") or n.endswith(("/find-model", "/check-model")) for n in checked)
    assert {requirement for name, requirement in checked.items() if name.startswith("default/a/")} == {
        "policy:default/auth"
    }
    (tmp_path / "auth.yaml").unlink()
    controller.apply(source.load())
    assert requirements() == {}
