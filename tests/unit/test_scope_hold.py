"""Route scopes held while Envoy drains (xds/scope_hold.py, Controller.release_held): the scopes a
listener had stay in the fleet's snapshot, unchanged, for Envoy's drain time and the margin after a
build drops them (a port edit, a listener that leaves its scopes, a listener removed), then go; a
scope built again is the build's at once. The controller's clock is a fake one here."""

from __future__ import annotations

import aigw_contract as contract
from aigw_xds.controller import Controller
from aigw_xds.xds import type_urls
from aigw_xds.xds.build import BuildSettings
from aigw_xds.xds.cache import SnapshotCache, check_consistency
from aigw_xds.xds.scope_hold import MARGIN_S
from tests.resource_text import api_key, backend, gateway, resources, route

FLEET = "default/gw"
DRAIN = 30.0
MODELS = 6


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _text(port: int = 8080, models: int = MODELS, extra_listener: bool = False) -> str:
    extra = "    - {name: api, protocol: HTTP, port: 9090}" if extra_listener else ""
    text = gateway(port=port, extra_listeners=extra) + backend("a", 9001) + api_key("a", "sk-a")
    return text + route("r", {f"model-{i}": "a" for i in range(models)})


def _setup(scopes_from: int = 0, drain: float = DRAIN) -> tuple[SnapshotCache, Controller, Clock]:
    cache, clock = SnapshotCache(), Clock()
    settings = BuildSettings(envoy_credentials=True, route_scopes_from=scopes_from)
    return cache, Controller(cache, settings, envoy_drain_s=drain, clock=clock), clock


def _scopes(cache: SnapshotCache, listener: str) -> dict[str, str]:
    """The versions of the listener's scopes and of their route configurations."""
    snapshot = cache.get(FLEET)
    return {
        f"{kind} {name}": r.version
        for kind, type_url in (("SRDS", type_urls.SCOPED_ROUTE), ("RDS", type_urls.ROUTE))
        for name, r in snapshot.of_type(type_url).items()
        if name.startswith(f"{listener}#")
    }


def test_a_port_edit_holds_the_old_listeners_scopes_for_the_drain_time_then_releases_them():
    cache, controller, clock = _setup()
    controller.apply(resources(_text()))
    old = _scopes(cache, "default/gw/8080")
    assert len(old) == 2 * contract.ROUTE_SCOPES
    assert controller.next_release() is None

    assert controller.apply(resources(_text(port=8081))).published == [FLEET]
    snapshot = cache.get(FLEET)
    assert set(snapshot.of_type(type_urls.LISTENER)) == {"default/gw/8081"}
    assert _scopes(cache, "default/gw/8080") == old  # held as they were: Envoy is sent nothing for them
    assert len(_scopes(cache, "default/gw/8081")) == 2 * contract.ROUTE_SCOPES
    check_consistency(snapshot)
    assert controller.next_release() == clock.now + DRAIN + MARGIN_S

    clock.now += DRAIN + MARGIN_S - 0.1
    assert controller.release_held() == []
    assert _scopes(cache, "default/gw/8080") == old
    clock.now += 0.1
    assert controller.release_held() == [FLEET]
    assert _scopes(cache, "default/gw/8080") == {}
    assert len(_scopes(cache, "default/gw/8081")) == 2 * contract.ROUTE_SCOPES
    assert controller.next_release() is None
    assert controller.release_held() == []


def test_an_edit_while_scopes_are_held_keeps_them_until_their_own_time():
    cache, controller, clock = _setup()
    controller.apply(resources(_text()))
    controller.apply(resources(_text(port=8081)))
    due = controller.next_release()
    clock.now += 10
    assert controller.apply(resources(_text(port=8081, models=MODELS + 1))).published == [FLEET]
    assert controller.next_release() == due  # not pushed back by the edit
    assert len(_scopes(cache, "default/gw/8080")) == 2 * contract.ROUTE_SCOPES
    clock.now = due
    assert controller.release_held() == [FLEET]
    assert _scopes(cache, "default/gw/8080") == {}
    scope = f"default/gw/8081#{contract.route_scope('model-6')}"
    assert "model-6" in str(cache.get(FLEET).of_type(type_urls.ROUTE)[scope].message)  # the edit stays


def test_a_listener_that_leaves_its_scopes_keeps_them_while_it_drains_and_takes_them_back_as_built():
    cache, controller, clock = _setup(scopes_from=MODELS)
    controller.apply(resources(_text()))
    scoped = _scopes(cache, "default/gw/8080")
    assert scoped
    controller.apply(resources(_text(models=MODELS - 1)))  # below the threshold: one configuration
    routes = cache.get(FLEET).of_type(type_urls.ROUTE)
    assert "default/gw/8080" in routes
    assert _scopes(cache, "default/gw/8080") == scoped
    check_consistency(cache.get(FLEET))

    clock.now += 1
    controller.apply(resources(_text(models=MODELS + 1)))  # back in scopes: the build's, not the held
    assert controller.next_release() is None
    back = _scopes(cache, "default/gw/8080")
    assert set(back) == set(scoped) and back != scoped
    assert "default/gw/8080" not in cache.get(FLEET).of_type(type_urls.ROUTE)


def test_a_listener_removed_holds_its_scopes_and_the_other_listener_is_untouched():
    cache, controller, clock = _setup()
    controller.apply(resources(_text(extra_listener=True)))
    kept = _scopes(cache, "default/gw/9090")
    gone = _scopes(cache, "default/gw/8080")
    without_8080 = _text(extra_listener=True).replace("    - {name: http, protocol: HTTP, port: 8080}\n", "")
    controller.apply(resources(without_8080))
    assert set(cache.get(FLEET).of_type(type_urls.LISTENER)) == {"default/gw/9090"}
    assert _scopes(cache, "default/gw/8080") == gone
    assert _scopes(cache, "default/gw/9090") == kept
    clock.now += DRAIN + MARGIN_S
    controller.release_held()
    assert _scopes(cache, "default/gw/8080") == {}
    assert _scopes(cache, "default/gw/9090") == kept


def test_held_scopes_are_released_while_the_fleet_keeps_its_last_good_configuration():
    cache, controller, clock = _setup()
    controller.apply(resources(_text()))
    controller.apply(resources(_text(port=8081)))
    assert controller.apply(resources(_text(port=99999))).kept == [FLEET]  # an invalid port: kept
    clock.now += DRAIN + MARGIN_S
    assert controller.release_held() == [FLEET]
    assert _scopes(cache, "default/gw/8080") == {}
    assert set(cache.get(FLEET).of_type(type_urls.LISTENER)) == {"default/gw/8081"}


def test_without_a_drain_time_the_scopes_go_with_the_edit():
    cache, controller, _ = _setup(drain=0.0)
    controller.apply(resources(_text()))
    controller.apply(resources(_text(port=8081)))
    assert _scopes(cache, "default/gw/8080") == {}
    assert controller.next_release() is None


def test_a_deleted_gateway_drops_what_it_held():
    cache, controller, _ = _setup()
    controller.apply(resources(_text()))
    controller.apply(resources(_text(port=8081)))
    assert controller.next_release() is not None
    assert controller.apply(resources(backend("a", 9001))).removed == [FLEET]
    assert controller.next_release() is None and controller.release_held() == []


def test_a_due_scope_is_not_held_again_by_an_apply_before_its_release():
    """A scope due but not yet released (an apply, e.g. a resync or a long compile, runs before the
    release timer) goes with that apply; it was held again for a whole drain time (review)."""
    cache, controller, clock = _setup()
    controller.apply(resources(_text()))
    controller.apply(resources(_text(port=8081)))
    due = controller.next_release()
    assert due is not None
    clock.now = due + 0.01
    controller.apply(resources(_text(port=8081)))  # the same resources again
    assert controller.next_release() is None


def test_a_release_that_fails_is_tried_again_later_not_in_a_loop(monkeypatch):
    """A release that raises (a bug of ours) leaves the scopes held and says when it tries again:
    the control plane's release task sleeps until then instead of calling it again at once."""
    import structlog

    from aigw_xds.xds.scope_hold import RELEASE_RETRY_S

    cache, controller, clock = _setup()
    controller.apply(resources(_text()))
    old = _scopes(cache, "default/gw/8080")
    controller.apply(resources(_text(port=8081)))
    clock.now = controller.next_release()
    publish = controller._publish

    calls = []

    def broken(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("a bug")

    monkeypatch.setattr(controller, "_publish", broken)
    with structlog.testing.capture_logs() as logs:
        assert controller.release_held() == []
    assert [e["event"] for e in logs] == ["route_scopes_release_failed"]
    assert controller.next_release() == clock.now + RELEASE_RETRY_S
    assert controller.release_held() == [] and len(calls) == 1  # not due again yet: not tried
    assert _scopes(cache, "default/gw/8080") == old

    monkeypatch.setattr(controller, "_publish", publish)
    clock.now += RELEASE_RETRY_S
    assert controller.release_held() == [FLEET]
    assert _scopes(cache, "default/gw/8080") == {}
