"""Envoy AI Gateway's own published examples load unchanged and compile to Envoy configuration.

Files that reference resources from another example file are compiled together with it, as users
apply them together.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aigw_xds.api.decode import decode_text
from aigw_xds.compile import compile_resources
from aigw_xds.resources import build_resource_set
from aigw_xds.xds.build import BuildSettings, build_fleet
from aigw_xds.xds.cache import check_consistency, make_snapshot

# Envoy AI Gateway's published examples are not in this repository: they sit in shared/, a directory
# beside the checkout (../shared/compat/envoy-ai-gateway-examples), in development and in CI alike.
# AIGW_COMPAT_EXAMPLES points elsewhere. Missing, these tests fail (never skip) saying so.
EXAMPLES = Path(
    os.environ.get("AIGW_COMPAT_EXAMPLES")
    or Path(__file__).resolve().parents[3] / "shared" / "compat" / "envoy-ai-gateway-examples"
)
MISSING = (
    f"Envoy AI Gateway's examples are missing: expected 19 *.yaml files in {EXAMPLES} "
    "(the shared/ directory beside the checkout; or set AIGW_COMPAT_EXAMPLES to their directory)"
)

COMPANIONS = {
    "basic_anthropic.yaml": ["basic_basic.yaml"],
    "basic_aws-bedrock-openai-anthropic.yaml": ["basic_basic.yaml"],
    "basic_aws.yaml": ["basic_basic.yaml"],
    "basic_azure_openai.yaml": ["basic_basic.yaml"],
    "basic_cohere.yaml": ["basic_basic.yaml"],
    "basic_gcp_vertex.yaml": ["basic_basic.yaml"],
    "basic_openai.yaml": ["basic_basic.yaml"],
    "inference-pool_aigwroute.yaml": ["inference-pool_base.yaml"],
    "inference-pool_base.yaml": ["inference-pool_aigwroute.yaml"],
    "provider_fallback_fallback.yaml": ["provider_fallback_base.yaml"],
    "stream_idle_timeout_backends.yaml": ["stream_idle_timeout_base.yaml"],
    "stream_idle_timeout_base.yaml": ["stream_idle_timeout_backends.yaml"],
}

# What the Inference Extension's quickstart installs (its Helm chart) before Envoy AI Gateway's
# inference-pool example is applied: the pool the example's route names, and its endpoint picker's
# Service (no EndpointSlice: its pods are not running here, a warning).
GIE_QUICKSTART_POOL = """
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: vllm-llama3-8b-instruct, namespace: default}
spec:
  targetPorts: [{number: 8000}]
  selector: {matchLabels: {app: vllm-llama3-8b-instruct}}
  endpointPickerRef: {name: vllm-llama3-8b-instruct-epp, port: {number: 9002}}
---
apiVersion: v1
kind: Service
metadata: {name: vllm-llama3-8b-instruct-epp, namespace: default}
spec:
  selector: {app: vllm-llama3-8b-instruct-epp}
  ports: [{protocol: TCP, port: 9002, targetPort: 9002, appProtocol: http2}]
"""
INSTALLED_BEFORE = {
    "inference-pool_aigwroute.yaml": GIE_QUICKSTART_POOL,
    "inference-pool_base.yaml": GIE_QUICKSTART_POOL,
}

# Never an empty parameter set (pytest would skip): a missing directory fails with MISSING.
FILES = sorted(p.name for p in EXAMPLES.glob("*.yaml")) or ["(missing)"]


def test_examples_are_present():
    assert len(FILES) == 19, MISSING


@pytest.mark.parametrize("name", FILES)
def test_example_loads_validates_and_compiles(name: str):
    assert (EXAMPLES / name).is_file(), MISSING
    decoded = decode_text((EXAMPLES / name).read_text(), name)
    alone = build_resource_set(decoded)
    assert alone.errors == [], [str(e) for e in alone.errors]
    for warning in alone.diagnostics:
        assert warning.severity == "warning"
    together = [*decoded]
    for companion in COMPANIONS.get(name, []):
        together.extend(decode_text((EXAMPLES / companion).read_text(), companion))
    if name in INSTALLED_BEFORE:
        together.extend(decode_text(INSTALLED_BEFORE[name], "gie-quickstart.yaml"))
    # As `validate` does: a Secret filled from the environment (the MCP example's GitHub token) is
    # checked with a placeholder, so that this needs no one's key.
    result = compile_resources(build_resource_set(together), placeholder_secrets=True)
    assert result.errors == [], [str(e) for e in result.errors]
    if name == "provider_fallback_fallback.yaml":
        return  # a BackendTrafficPolicy only; its base file holds the gateway
    assert result.gateways, "no gateway compiled"
    for fleet, ir in result.gateways.items():
        snapshot = make_snapshot(fleet, build_fleet(ir, BuildSettings()))
        check_consistency(snapshot)
        assert snapshot.of_type("type.googleapis.com/envoy.config.listener.v3.Listener")
