"""A Kubernetes Service as an AIServiceBackend's backend, through a real Envoy fed by `aigw-xds serve`
(file source: the Service and its EndpointSlice are YAML files, as the Kubernetes source would hand
them over), with the official `openai` SDK.

The Service's pods are three OpenAI fakes on 127.0.0.1, 127.0.0.2 and 127.0.0.3 at one port (the
slice's port). Its EndpointSlice is edited to scale 1 -> 3 -> 0 -> 1 with traffic after each edit:
requests reach exactly the ready endpoints (each fake names itself in x-fake-id), with none the
client gets an error in OpenAI's shape at once (no hang), and each edit reaches Envoy as an EDS
update only: the cluster's version and last update time, and Envoy's CDS, LDS and RDS update
counters, stay what they were. A Service without ready endpoints at priority 0 fails over to the
rule's next priority, and takes the traffic back when a pod is ready.
"""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest

from aigw_fakes import OpenAIFake
from aigw_xds.envoy.process import EnvoyProcess
from tests.resource_text import api_key, backend, gateway, route

from .harness.control_plane import ControlPlaneProcess
from .harness.envoy import start_envoy
from .harness.processes import free_port, until
from .harness.service_pods import (
    AI_SERVICE_BACKEND,
    PODS,
    SERVICE,
    answered_by,
    cluster_state,
    endpoint_slice,
    envoy_endpoints,
    pods,
    update_counters,
)

pytestmark = pytest.mark.e2e


def _plane(config: Path, workdir: Path) -> ControlPlaneProcess:
    """`aigw-xds serve` on the folder, watching it, with its translator."""
    translator = ("--translator-listen", f"127.0.0.1:{free_port()}", "--translator-workers", "1")
    return ControlPlaneProcess(config, free_port(), workdir, extra=translator)


def _client(listen_port: int) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{listen_port}/v1", api_key="client-key", max_retries=0)


async def test_service_endpoints_scale_1_3_0_1_by_eds_only(tmp_path: Path) -> None:
    async with pods() as (pod_port, fakes):
        config = tmp_path / "config"
        config.mkdir()
        listen_port = free_port()
        (config / "gateway.yaml").write_text(gateway(port=listen_port) + route("r", {"gpt-test": "llm"}))
        (config / "aiservicebackend.yaml").write_text(AI_SERVICE_BACKEND)
        (config / "service.yaml").write_text(SERVICE)
        slice_file = config / "endpointslice.yaml"

        def scale(addresses: list[str]) -> None:
            tmp = slice_file.with_suffix(".tmp")
            tmp.write_text(endpoint_slice(addresses, pod_port))
            tmp.replace(slice_file)

        scale(["127.0.0.1"])
        plane = _plane(config, tmp_path)
        envoy = None
        client = _client(listen_port)
        try:
            plane.start()
            envoy = start_envoy(plane.port, "default/gw", delta=True)
            await until(lambda: envoy_endpoints(envoy) == ["127.0.0.1"], "the first endpoint")
            assert await answered_by(client, 3) == {"pod-127.0.0.1"}
            # Addressed by the Service's cluster name, not by a pod's address.
            first = fakes["127.0.0.1"].last_request
            assert first is not None and first.header("host") == "llm.default.svc"
            cluster_before = cluster_state(envoy)
            counters_before = update_counters(envoy)
            assert counters_before, "no update counters found"

            for addresses in (list(PODS), [], ["127.0.0.3"]):
                scale(addresses)
                await until(lambda a=addresses: envoy_endpoints(envoy) == a, f"Envoy to have endpoints {addresses}")
                if addresses:
                    # Round robin over the ready endpoints: every one answers, nobody else.
                    assert await answered_by(client, 4 * len(addresses)) == {f"pod-{a}" for a in addresses}
                else:
                    started = time.monotonic()
                    with pytest.raises(openai.APIStatusError) as caught:
                        await client.chat.completions.create(
                            model="gpt-test", messages=[{"role": "user", "content": "hello"}]
                        )
                    assert time.monotonic() - started < 5, "no endpoint must fail at once, not hang"
                    assert caught.value.status_code == 503
                    error = caught.value.body
                    assert isinstance(error, dict) and error["type"] == "server_error", caught.value.body
                    assert "no healthy upstream" in error["message"]
                # An EDS update only: the cluster itself and the listeners and routes untouched.
                assert cluster_state(envoy) == cluster_before
                assert update_counters(envoy) == counters_before
        finally:
            await client.close()
            if envoy is not None:
                envoy.stop()
            plane.stop()


async def test_a_service_without_ready_endpoints_fails_over_to_the_next_priority(tmp_path: Path) -> None:
    async with pods() as (pod_port, _):
        fallback = await OpenAIFake(api_key=None, name="fallback").start()
        config = tmp_path / "config"
        config.mkdir()
        listen_port = free_port()
        text = gateway(port=listen_port) + route("r", {"gpt-test": [("llm", 0, 1), ("b", 1, 1)]})
        (config / "gateway.yaml").write_text(text + backend("b", fallback.port))
        (config / "service.yaml").write_text(AI_SERVICE_BACKEND + "---\n" + SERVICE)
        slice_file = config / "endpointslice.yaml"
        slice_file.write_text(endpoint_slice([], pod_port))
        plane = _plane(config, tmp_path)
        envoy = None
        client = _client(listen_port)
        try:
            plane.start()
            envoy = start_envoy(plane.port, "default/gw", delta=True)
            assert await answered_by(client, 3) == {"fallback"}
            slice_file.write_text(endpoint_slice(["127.0.0.2"], pod_port))
            await until(lambda: "127.0.0.2" in envoy_endpoints(envoy), "the pod to be ready in Envoy")
            assert await answered_by(client, 3) == {"pod-127.0.0.2"}
        finally:
            await client.close()
            if envoy is not None:
                envoy.stop()
            plane.stop()
            await fallback.stop()


def _secret_names(envoy: EnvoyProcess) -> list[str]:
    return sorted(s["name"] for s in envoy.config_dump("dynamic_active_secrets").get("configs", []))


async def test_a_key_envoy_injects_stays_one_secret_while_the_pods_scale(tmp_path: Path) -> None:
    """The NATIVE rule with a key (build._cluster carries its endpoints inline): scaling updates
    that cluster only; the SDS secret keeps its name and the routes and listeners stay."""
    key = "sk-service-pods"
    async with pods(api_key=key) as (pod_port, _):
        config = tmp_path / "config"
        config.mkdir()
        listen_port = free_port()
        text = gateway(port=listen_port) + route("r", {"gpt-test": "llm"}) + api_key("llm", key)
        (config / "gateway.yaml").write_text(text)
        (config / "service.yaml").write_text(AI_SERVICE_BACKEND + "---\n" + SERVICE)
        slice_file = config / "endpointslice.yaml"
        slice_file.write_text(endpoint_slice(["127.0.0.1"], pod_port))
        plane = _plane(config, tmp_path)
        envoy = None
        client = _client(listen_port)
        try:
            plane.start()
            envoy = start_envoy(plane.port, "default/gw", delta=True)
            # The fakes refuse any other key: answers prove Envoy injected it.
            assert await answered_by(client, 2) == {"pod-127.0.0.1"}
            secrets = _secret_names(envoy)
            assert [s for s in secrets if s.startswith("credential/")], secrets
            routes_and_listeners = {
                k: v for k, v in update_counters(envoy).items() if not k.startswith("cluster_manager.")
            }
            slice_file.write_text(endpoint_slice(["127.0.0.1", "127.0.0.2"], pod_port))
            await until(lambda: envoy_endpoints(envoy) == ["127.0.0.1", "127.0.0.2"], "the second pod in Envoy")
            assert await answered_by(client, 4) == {"pod-127.0.0.1", "pod-127.0.0.2"}
            assert _secret_names(envoy) == secrets
            after = {k: v for k, v in update_counters(envoy).items() if not k.startswith("cluster_manager.")}
            assert after == routes_and_listeners
        finally:
            await client.close()
            if envoy is not None:
                envoy.stop()
            plane.stop()
