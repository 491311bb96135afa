"""Edits that move a rule between route classes, under continuous traffic that names its model in
the body (the way SDKs do, so Envoy routes it itself): from NATIVE (Envoy injects the key from an
SDS secret) to ROUTE (the translator injects it) and back, and a key rotation that is an SDS update
only. Not one request fails, and every request carries the key of the configuration it was routed
by, never none."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.resource_text import api_key, backend, gateway, route

from .harness.control_plane import ControlPlaneProcess
from .harness.envoy import start_envoy
from .harness.processes import free_port, wait_for
from .harness.traffic import EchoUpstream, SteadyTraffic

pytestmark = pytest.mark.e2e

OVERRIDE = "  credentialOverride: {fromRequestHeaders: {header: x-byok}, fallbackToConfigured: true}\n"


def _with_override(policy: str) -> str:
    return policy.replace("  apiKey:", OVERRIDE + "  apiKey:", 1)


def test_class_switches_and_key_rotation_lose_no_request(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    upstream = EchoUpstream("a")
    listen_port = free_port()
    policy = api_key("a", "sk-one")
    assert "  apiKey:" in policy
    (config / "gateway.yaml").write_text(gateway(port=listen_port))
    (config / "route.yaml").write_text(route("r", {"m1": "a"}))
    (config / "backend.yaml").write_text(backend("a", upstream.port))
    (config / "policy.yaml").write_text(policy)
    plane = ControlPlaneProcess(
        config,
        free_port(),
        tmp_path,
        extra=("--translator-listen", f"127.0.0.1:{free_port()}", "--translator-workers", "1"),
    )
    envoy = None
    try:
        plane.start()
        envoy = start_envoy(plane.port, "default/gw", delta=False)
        with SteadyTraffic(listen_port, "m1", in_body=True) as traffic:
            wait_for(lambda: traffic.results["a"] > 10, what="traffic flowing")
            steps = [
                _with_override(policy),  # ROUTE: the translator injects the key
                policy,  # NATIVE again: credential_injector, SDS secret
                policy.replace("sk-one", "sk-two"),  # rotation: an SDS update
                _with_override(policy.replace("sk-one", "sk-two")),
            ]
            for text in steps:
                served = traffic.results["a"]
                (config / "policy.yaml").write_text(text)
                expected = "Bearer sk-two" if "sk-two" in text else "Bearer sk-one"
                wait_for(
                    lambda: upstream.requests[-1]["headers"].get("authorization") == expected,  # noqa: B023
                    what=f"requests carry {expected}",
                )
                wait_for(lambda: traffic.results["a"] > served + 10, what="traffic after the edit")  # noqa: B023
        assert traffic.failures == [], traffic.results
        keys = {r["headers"].get("authorization") for r in upstream.requests}
        assert keys == {"Bearer sk-one", "Bearer sk-two"}, keys
    finally:
        if envoy is not None:
            envoy.stop()
        plane.stop()
        upstream.stop()
