"""Pods of a Kubernetes Service, as fakes: OpenAI fakes on 127.0.0.1-3 at one port, the Service, its
EndpointSlice and the AIServiceBackend that references it; and what a real Envoy holds of the
Service's cluster (its endpoints, version and update counters)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai

from aigw_fakes import OpenAIFake
from aigw_xds.envoy.process import EnvoyProcess

from .processes import PortTaken, free_port

CLUSTER = "default/r/rule/0"
PODS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")

AI_SERVICE_BACKEND = """
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: llm, namespace: default}
spec:
  schema: {name: OpenAI}
  backendRef: {group: "", kind: Service, name: llm, port: 80}
"""

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: llm, namespace: default}
spec:
  selector: {app: llm}
  ports: [{name: http, port: 80, targetPort: http, protocol: TCP}]
"""


def endpoint_slice(addresses: list[str], port: int) -> str:
    """The Service's one EndpointSlice with `addresses` ready (and, always, one not-ready pod that
    must never get a request: 127.0.0.4, where nothing listens)."""
    endpoints = [{"addresses": [a], "conditions": {"ready": True}, "nodeName": "node-1"} for a in addresses]
    endpoints.append({"addresses": ["127.0.0.4"], "conditions": {"ready": False}, "nodeName": "node-1"})
    return f"""
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: llm-abcde
  namespace: default
  labels: {{kubernetes.io/service-name: llm, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP}}]
endpoints: {json.dumps(endpoints)}
"""


@asynccontextmanager
async def pods(api_key: str | None = None) -> AsyncIterator[tuple[int, dict[str, OpenAIFake]]]:
    """Three OpenAI fakes, one per pod address, all on one port, checking `api_key` (None: no key
    check, for a backend without a security policy); yields the port and the fakes by address."""
    for _ in range(5):
        port = free_port()
        fakes: dict[str, OpenAIFake] = {}
        try:
            for address in PODS:
                fakes[address] = await OpenAIFake(
                    api_key=api_key, name=f"pod-{address}", host=address, port=port
                ).start()
        except OSError:
            for fake in fakes.values():
                await fake.stop()
            continue
        try:
            yield port, fakes
        finally:
            for fake in fakes.values():
                await fake.stop()
        return
    raise PortTaken("no port free on 127.0.0.1-3")


def cluster_state(envoy: EnvoyProcess) -> tuple[str, str]:
    """The rule cluster's (version_info, last_updated) in Envoy's config dump."""
    dump = envoy.config_dump("dynamic_active_clusters")
    [entry] = [c for c in dump["configs"] if c["cluster"]["name"] == CLUSTER]
    return entry["version_info"], entry["last_updated"]


def envoy_endpoints(envoy: EnvoyProcess) -> list[str]:
    dump = json.loads(envoy.admin("/config_dump?resource=dynamic_endpoint_configs&include_eds"))
    [entry] = [c for c in dump["configs"] if c["endpoint_config"]["cluster_name"] == CLUSTER]
    localities: list[dict[str, Any]] = entry["endpoint_config"].get("endpoints", [])
    return sorted(
        e["endpoint"]["address"]["socket_address"]["address"] for loc in localities for e in loc.get("lb_endpoints", [])
    )


def update_counters(envoy: EnvoyProcess) -> dict[str, int]:
    stats = {**envoy.stats("cluster_manager.cds"), **envoy.stats("listener_manager.lds"), **envoy.stats("http.")}
    return {k: v for k, v in stats.items() if k.endswith((".update_success", ".update_attempt"))}


async def answered_by(client: openai.AsyncOpenAI, requests: int, model: str = "gpt-test") -> set[str]:
    names = set()
    for _ in range(requests):
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hello"}]
        )
        assert raw.parse().choices[0].message.content
        names.add(raw.headers["x-fake-id"])
    return names
