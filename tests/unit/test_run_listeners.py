"""run's admission of listener ports (run.LocalListeners): a port something else holds is refused
before it is published; a port its own Envoy holds is not, also after that Envoy refused a
configuration (it keeps the listeners it had)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from aigw_xds.compile import compile_resources
from aigw_xds.run import LocalListeners
from tests.resource_text import api_key, backend, gateway, resources, route


def held_port() -> socket.socket:
    """A socket listening on a free loopback port (as an Envoy's listener, or another process)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def compiled(port: int):
    text = gateway(port=port) + route("r", {"m": "b"}) + backend("b", 9000) + api_key("b")
    result = compile_resources(resources(text))
    return result.gateways["default/gw"], resources(text)


def test_a_port_held_by_the_envoy_after_it_refused_a_move_is_its_own() -> None:
    """The Envoy here is this process (its socket on the first port); another process holds the
    other port."""
    with held_port() as envoy:
        other = subprocess.Popen([sys.executable, "-c", HOLD_A_PORT], stdout=subprocess.PIPE, text=True)
        try:
            assert other.stdout is not None
            first, taken = envoy.getsockname()[1], int(other.stdout.readline())
            admit = LocalListeners("127.0.0.1", fleet="default/gw", envoy_pid=os.getpid())
            served, _ = compiled(first)
            # Moved to a port another process holds: refused, naming the field.
            moved, moved_set = compiled(taken)
            [problem] = admit(moved, served, moved_set)
            assert problem.field == "spec.listeners[0].port" and "in use" in problem.message
            # Suppose it was served anyway and the Envoy refused it (the port was taken after the
            # check): it keeps listening on the first port, and moving back there is admitted.
            back, back_set = compiled(first)
            assert admit(back, moved, back_set) == ()
            # A port it served once and left, which another process took since, is refused again
            # (a review found it exempted for good: published, Envoy refused it).
            assert admit(moved, back, moved_set) != ()
        finally:
            other.kill()
            other.wait()


def test_envoys_own_admin_port_is_no_port_of_its_listeners() -> None:
    """From a new-user trial: the Gateway moved onto Envoy's admin port (9901) was published, as
    any port Envoy's process holds was taken for its listener's; Envoy refused it and the console
    said it listened there. (The Envoy here is this process, its admin socket the held port.)"""
    with held_port() as envoy, held_port() as admin:
        first, admin_port = envoy.getsockname()[1], admin.getsockname()[1]
        admit = LocalListeners("127.0.0.1", fleet="default/gw", envoy_pid=os.getpid(), admin_port=admin_port)
        served, _ = compiled(first)
        moved, moved_set = compiled(admin_port)
        [problem] = admit(moved, served, moved_set)
        assert problem.field == "spec.listeners[0].port" and "in use" in problem.message


# Another process: listens on a free port, prints it, waits to be killed.
HOLD_A_PORT = (
    "import socket, sys, time\ns = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
    "print(s.getsockname()[1], flush=True)\ntime.sleep(60)"
)


def fake_backed(listener: int, fake: int):
    """The Gateway on `listener`, its backend served by the bundled fake on `fake`."""
    annotated = backend("b", fake).replace(
        "kind: Backend\nmetadata: {name: b, namespace: default}",
        "kind: Backend\nmetadata: {name: b, namespace: default, annotations: {aigw-xds.dev/fake-provider: openai}}",
    )
    assert "fake-provider" in annotated
    text = gateway(port=listener) + route("r", {"m": "b"}) + annotated + api_key("b")
    return compile_resources(resources(text)).gateways["default/gw"], resources(text)


def test_a_fake_provider_moved_to_a_port_taken_or_a_listeners_is_refused_naming_the_backend() -> None:
    """Published, the fakes (restarted after it) could not start: every fake backend failed."""
    with held_port() as envoy, held_port() as other, held_port() as fake:
        listener, taken, running = (s.getsockname()[1] for s in (envoy, other, fake))
        admit = LocalListeners("127.0.0.1", fleet="default/gw", fake_ports={running})
        served, same = fake_backed(listener, running)
        assert admit(served, served, same) == ()  # the port its running fake holds
        for port, words in ((taken, "in use"), (listener, "also the port of a listener of Gateway default/gw")):
            gateway_ir, resource_set = fake_backed(listener, port)
            [problem] = admit(gateway_ir, served, resource_set)
            assert problem.resource.kind == "Backend" and problem.field == "spec.endpoints[0].ip.port"
            assert "the fake openai provider cannot listen on" in problem.message and words in problem.message
