"""Every kind of bad edit, of every kind of resource, under continuous traffic through a real Envoy
fed by `aigw-xds serve`: the error is reported, the last good configuration keeps serving, and not
one request fails. Then the fix applies.

Each resource lives in its own file, so each edit breaks exactly one resource (or one file).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.resource_text import api_key, backend, gateway, route

from .harness.control_plane import ControlPlaneProcess
from .harness.envoy import start_envoy
from .harness.processes import free_port, wait_for
from .harness.traffic import EchoUpstream, SteadyTraffic

pytestmark = pytest.mark.e2e

GATEWAY_CONFIG = """
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: GatewayConfig
metadata: {name: gwc, namespace: default}
spec:
  globalLLMRequestCosts:
    - {metadataKey: total, type: TotalToken}
"""


CLIENT_TRAFFIC_POLICY = """
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {name: gw-buffer, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  connection: {bufferLimit: 20Mi}
"""


def _documents(text: str) -> list[str]:
    return [d for d in text.split("\n---\n") if d.strip()]


def _files(listen_port: int, upstream_port: int) -> dict[str, str]:
    gateway_class, gateway_doc = _documents(gateway(port=listen_port, config="gwc"))
    service_backend, backend_doc = _documents(backend("a", upstream_port))
    policy, secret = _documents(api_key("a"))
    return {
        "gatewayclass.yaml": gateway_class,
        "gateway.yaml": gateway_doc,
        "gatewayconfig.yaml": GATEWAY_CONFIG,
        "clienttrafficpolicy.yaml": CLIENT_TRAFFIC_POLICY,
        "route.yaml": route("r", {"m1": "a"}),
        "aiservicebackend.yaml": service_backend,
        "backend.yaml": backend_doc,
        "policy.yaml": policy,
        "secret.yaml": secret,
    }


# (file, text to replace, replacement): one mistake each. "" as the text to replace means the whole
# file becomes the replacement.
MISTAKES = [
    ("route.yaml", "weight: 1}", "weight: lots}"),
    ("route.yaml", "{type: Exact, name: x-ai-eg-model", "{type: Bogus, name: x-ai-eg-model"),
    ("route.yaml", "backendRefs:", "backendRefz:"),
    ("route.yaml", "  rules:", "  rules:\n    - timeouts: {request: soon}\n      backendRefs: [{name: a}]"),
    ("route.yaml", "{name: a, priority: 0", "{name: nowhere, priority: 0"),  # dangling reference
    ("route.yaml", "metadata: {name: r, namespace: default}", "metadata: {namespace: default}"),
    ("route.yaml", "spec:\n", "spec:\n  rules: []\n"),  # duplicate YAML key
    ("route.yaml", "aigateway.envoyproxy.io/v1beta1", "aigateway.envoyproxy.io/v1beta"),  # apiVersion typo
    ("route.yaml", "kind: AIGatewayRoute", "kind: AIGatewayRout"),  # kind typo
    ("gateway.yaml", "kind: Gateway", "kind: Gatewy"),
    ("route.yaml", "", ""),  # left empty for a moment, as editors do
    ("route.yaml", "", "kind: AIGatewayRoute\nmetadata: {name: [r\n"),  # YAML syntax
    ("gateway.yaml", "port: ", "port: 99"),  # 99<port> is out of range
    ("gateway.yaml", "protocol: HTTP", "protocol: [HTTP]"),
    ("gateway.yaml", "", "\n"),
    ("gatewayclass.yaml", "controllerName:", "controllerName: {a: 1}, x:"),
    ("gatewayconfig.yaml", "type: TotalToken", "type: Tokens"),
    ("gatewayconfig.yaml", "metadataKey:", "metadataKee:"),
    ("clienttrafficpolicy.yaml", "bufferLimit: 20Mi", "bufferLimit: lots"),
    ("aiservicebackend.yaml", "name: OpenAI", "name: NotASchema"),
    ("aiservicebackend.yaml", "backendRef:", "backendRefs:"),
    ("backend.yaml", "port: ", "port: x"),
    ("backend.yaml", "", "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: a}\nx: [\n"),
    ("policy.yaml", "type: APIKey", "type: Bogus"),
    ("policy.yaml", "secretRef: {name: a-key}", "secretRef: {name: missing}"),
    ("secret.yaml", "stringData: {apiKey: sk-test}", "data: {apiKey: '@@not base64'}"),
    ("secret.yaml", "", ""),
]


@pytest.fixture
def stack(tmp_path: Path):
    config = tmp_path / "config"
    config.mkdir()
    upstream = EchoUpstream("a")
    listen_port = free_port()
    files = _files(listen_port, upstream.port)
    for name, text in files.items():
        (config / name).write_text(text)
    plane = ControlPlaneProcess(config, free_port(), tmp_path)
    envoy = None
    try:
        plane.start()
        envoy = start_envoy(plane.port, "default/gw", delta=False)
        yield config, files, listen_port, plane
    finally:
        if envoy is not None:
            envoy.stop()
        plane.stop()
        upstream.stop()


def _applied(plane: ControlPlaneProcess) -> int:
    return sum(1 for e in plane.events() if e.get("event") == "configuration_applied")


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def test_every_bad_edit_keeps_serving_with_zero_failed_requests(stack):
    config, files, listen_port, plane = stack
    with SteadyTraffic(listen_port, "m1") as traffic:
        wait_for(lambda: traffic.results["a"] > 10, what="traffic flowing")
        for file, old, new in MISTAKES:
            good = files[file]
            assert old in good, (file, old)
            bad = good.replace(old, new, 1) if old else new
            seen = len(plane.events())
            applied = _applied(plane)
            _write(config / file, bad)
            wait_for(lambda: _applied(plane) > applied, what=f"bad edit of {file} applied: {new!r}")  # noqa: B023
            events = plane.events()[seen:]
            errors = [e.get("text", "") for e in events if e.get("level") == "error"]
            assert any(file in message for message in errors), (file, new, errors)
            assert not any(e.get("event") == "configuration_applied" and e.get("published") for e in events), (
                file,
                new,
                "a bad edit was published",
            )
            served = traffic.results["a"]
            wait_for(lambda: traffic.results["a"] > served + 5, what=f"served after bad {file}")  # noqa: B023
            applied = _applied(plane)
            _write(config / file, good)
            wait_for(lambda: _applied(plane) > applied, what=f"{file} restored")  # noqa: B023
        # The fixed configuration still takes edits: a second model appears.
        applied = _applied(plane)
        _write(config / "route.yaml", route("r", {"m1": "a", "m2": "a"}))
        wait_for(lambda: _applied(plane) > applied, what="edit after the bad ones")
    assert traffic.failures == [], traffic.results
    assert traffic.results["a"] > 20 * len(MISTAKES) // 4
