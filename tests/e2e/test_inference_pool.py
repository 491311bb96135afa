"""An AIGatewayRoute whose backendRef is an InferencePool, through a real Envoy fed by `aigw-xds
serve` (file source: the pool, its endpoint picker's Service and EndpointSlice are YAML files, as
the Kubernetes source hands them over) and its translator, with the official `openai` SDK.

The pool's pods are three OpenAI fakes on 127.0.0.1-3 (each names itself in x-fake-id). Its
endpoint picker is aigw_fakes.endpoint_picker, a stand-in for the Inference Extension's EPP that
speaks its protocol as strictly (TLS with a self-signed certificate, FULL_DUPLEX_STREAMED bodies,
headers answered after the body) and picks among the pods in turn: each request must reach exactly
the pod it picked, whichever way the gateway serves it (Envoy alone, the translator's router phase
for a stream, the per-attempt phase for a request routed on the x-ai-eg-model header).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from aigw_fakes.endpoint_picker import DESTINATION_HEADER, MODEL_REWRITE_HEADER, SELECTION_HEADER, FakeEndpointPicker
from tests.resource_text import gateway, inference_pool, pool_route

from .harness.control_plane import ControlPlaneProcess
from .harness.envoy import start_envoy
from .harness.processes import free_port
from .harness.service_pods import PODS, pods

pytestmark = pytest.mark.e2e

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def pool_config(listen_port: int, picker_port: int) -> str:
    """A Gateway, a route sending MODEL to the pool `llama`, the pool and its picker's Service and
    EndpointSlice (the picker on 127.0.0.1:picker_port)."""
    return gateway(port=listen_port) + pool_route("r", MODEL, "llama") + inference_pool("llama", picker_port)


@asynccontextmanager
async def pool_gateway(
    tmp_path: Path, picker_pods: list[str] | None = None, serve_args: tuple[str, ...] = ()
) -> AsyncIterator[tuple[int, FakeEndpointPicker, int]]:
    """The pods, the picker (picking among `picker_pods`, default every pod), the control plane
    (`aigw-xds serve` with `serve_args`) and Envoy; yields Envoy's listener port, the picker and the
    pods' port."""
    async with pods() as (pod_port, _):
        addresses = [f"{a}:{pod_port}" for a in PODS] if picker_pods is None else picker_pods
        picker = await FakeEndpointPicker(addresses, server_name="llama-epp.default.svc").start()
        config = tmp_path / "config"
        config.mkdir()
        listen_port = free_port()
        (config / "pool.yaml").write_text(pool_config(listen_port, picker.port))
        translator = ("--translator-listen", f"127.0.0.1:{free_port()}", "--translator-workers", "1", *serve_args)
        plane = ControlPlaneProcess(config, free_port(), tmp_path, extra=translator)
        envoy = None
        try:
            plane.start()
            envoy = start_envoy(plane.port, "default/gw", delta=True)
            yield listen_port, picker, pod_port
        finally:
            if envoy is not None:
                envoy.stop()
            plane.stop()
            await picker.stop()


def _client(listen_port: int, **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{listen_port}/v1", api_key="client-key", max_retries=0, default_headers=headers
    )


async def test_each_request_reaches_the_pod_the_picker_picked(tmp_path: Path) -> None:
    async with pool_gateway(tmp_path) as (listen_port, picker, _):
        client = _client(listen_port)
        try:
            answered = []
            for _ in range(6):  # Envoy serves these alone (NATIVE)
                raw = await client.chat.completions.with_raw_response.create(
                    model=MODEL, messages=[{"role": "user", "content": "hello"}]
                )
                assert raw.parse().choices[0].message.content
                answered.append(raw.headers["x-fake-id"])
            # A body the picker streams back in several pieces (62,000 bytes each) arrives whole.
            big = "x" * 300_000
            raw = await client.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": big}]
            )
            assert raw.parse().choices[0].message.content.startswith(f"Fake {MODEL} reply to: xxxx")
            answered.append(raw.headers["x-fake-id"])
            # A stream: the translator's router phase, then the picker.
            stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hello"}], stream=True
            )
            chunks = [chunk async for chunk in stream]
            assert any(c.choices and c.choices[0].delta.content for c in chunks)
            answered.append(stream.response.headers["x-fake-id"])
        finally:
            await client.close()
        picked = [f"pod-{p.pod.split(':')[0]}" for p in picker.picks if p.pod]
        assert answered == picked, (answered, picked)
        assert set(answered) == {f"pod-{a}" for a in PODS}
        assert all(p.model == MODEL for p in picker.picks)
        # The response went through the picker too (it marks the headers it saw).
        assert raw.headers["x-went-into-resp-headers"] == "true"


async def test_a_request_that_names_its_model_in_the_header_too_is_placed(tmp_path: Path) -> None:
    """A client that sends x-ai-eg-model beside the body's model (as Envoy AI Gateway's clients may):
    the request is placed by the picker like any other."""
    async with pool_gateway(tmp_path) as (listen_port, picker, _):
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(
                f"http://127.0.0.1:{listen_port}/v1/chat/completions",
                headers={"x-ai-eg-model": MODEL, "authorization": "Bearer client-key"},
                json={"model": MODEL, "messages": [{"role": "user", "content": "hello"}]},
            )
        assert response.status_code == 200, response.text
        assert picker.picks and picker.picks[-1].pod is not None
        assert response.headers["x-fake-id"] == f"pod-{picker.picks[-1].pod.split(':')[0]}"


async def test_a_client_cannot_choose_the_pod(tmp_path: Path) -> None:
    """A client's own x-gateway-destination-endpoint is removed before the picker runs: the request
    goes where the picker says (here the only pod it may pick), never where the client says; and
    its x-gateway-model-name-rewrite, which the picker would put in place of the body's model."""
    async with pool_gateway(tmp_path) as (listen_port, picker, pod_port):
        first = f"127.0.0.1:{pod_port}"
        spoofed = {DESTINATION_HEADER: f"127.0.0.3:{pod_port}", MODEL_REWRITE_HEADER: "another-model"}
        client = _client(listen_port, **spoofed, **{SELECTION_HEADER: first})
        try:
            for _ in range(3):
                raw = await client.chat.completions.with_raw_response.create(
                    model=MODEL, messages=[{"role": "user", "content": "hello"}]
                )
                assert raw.headers["x-fake-id"] == "pod-127.0.0.1"
                # The model the route matched is the one the pod serves: the client's rewrite is gone.
                assert raw.parse().model == MODEL
        finally:
            await client.close()
        assert all(not set(spoofed) & set(p.headers) for p in picker.picks), "the client's headers reached the picker"


async def test_a_pool_without_pods_and_a_picker_gone_are_errors_in_openai_shape(tmp_path: Path) -> None:
    async with pool_gateway(tmp_path, picker_pods=[]) as (listen_port, picker, _):
        client = _client(listen_port)
        try:
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello"}])
            assert caught.value.status_code == 503
            error = caught.value.body
            assert isinstance(error, dict) and error["type"] == "server_error", error
            assert "endpoint picker did not place the request" in error["message"], error
            assert "failed to find candidate pods" in error["message"], error
            await picker.stop()  # the picker gone: the request is not placed, never sent anywhere
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello"}])
            assert caught.value.status_code == 503
            error = caught.value.body
            assert isinstance(error, dict) and error["type"] == "server_error", error
            assert "endpoint picker" in error["message"]
        finally:
            await client.close()


async def test_every_client_api_reaches_the_picked_pod_with_route_scopes(tmp_path: Path) -> None:
    """In route scopes (--route-scopes-from 0: a scope per model), OpenAI's chat plain and streamed
    and Anthropic's Messages (translated by the router phase, which takes the scope headers off and
    rewrites the path) all reach the pod the picker picked: the picker's answer does not route the
    request again."""
    async with pool_gateway(tmp_path, serve_args=("--route-scopes-from", "0")) as (listen_port, picker, _):
        openai_client = _client(listen_port)
        claude = anthropic.AsyncAnthropic(
            base_url=f"http://127.0.0.1:{listen_port}/anthropic", api_key="k", max_retries=0
        )
        answered = []
        try:
            raw = await openai_client.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": "hello"}]
            )
            answered.append(raw.headers["x-fake-id"])
            stream = await openai_client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hello"}], stream=True
            )
            assert [c async for c in stream]
            answered.append(stream.response.headers["x-fake-id"])
            message = await claude.messages.with_raw_response.create(
                model=MODEL, max_tokens=32, messages=[{"role": "user", "content": "hello"}]
            )
            assert (await message.parse()).content[0].text
            answered.append(message.headers["x-fake-id"])
            async with claude.messages.stream(
                model=MODEL, max_tokens=32, messages=[{"role": "user", "content": "hello"}]
            ) as streamed:
                assert await streamed.get_final_text()
                answered.append(streamed.response.headers["x-fake-id"])
        finally:
            await openai_client.close()
            await claude.close()
        assert answered == [f"pod-{p.pod.split(':')[0]}" for p in picker.picks if p.pod], picker.picks
        assert len(answered) == 4
