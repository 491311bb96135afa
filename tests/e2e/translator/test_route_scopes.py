"""Route scopes end to end, the way a platform team runs them: `aigw-xds serve --route-scopes-from 0`
(the listener's routes split by model into scopes, served as SRDS and RDS over ADS), a real Envoy
in SotW and in delta, and the official openai SDK as the client.

What must hold: Envoy accepts the scopes; every model reaches its backend through the scope that
Envoy's Lua filter picks (its hash must equal the control plane's, or the request lands in a scope
without the model's routes and gets a 404); a model matched by a regular expression reaches its
backend from any scope; an unknown model gets OpenAI's 404; an edit of one rule changes the route
configuration of its scope alone on the Envoy (a SotW answer carries that one: the others stay),
and moves its traffic.

The providers are the project's fakes (stand-ins for OpenAI and Anthropic that reject a wrong key
or a malformed body as the real APIs do)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx2
import openai
import pytest

import aigw_contract as contract
from tests.e2e.harness import resources
from tests.e2e.harness.control_plane import ControlPlaneProcess
from tests.e2e.harness.envoy import listener_active, start_envoy
from tests.e2e.harness.processes import free_port, wait_for
from tests.e2e.harness.providers import openai_and_anthropic
from tests.e2e.harness.resources import FLEET, Ref, Route, Rule

pytestmark = pytest.mark.e2e

# One longer than what the scope's hash reads (contract.ROUTE_SCOPE_BYTES), one not ASCII.
MODELS = [f"model-{i}" for i in range(28)] + ["long-" + "x" * 300, "modèle-ü"]
CHAT = [{"role": "user", "content": "hello"}]


def _routes(moved: str | None = None, models: list[str] = MODELS) -> Route:
    """A rule per model to OpenAI (`moved`: that one to Anthropic)."""
    return Route("many", [Rule([m], [Ref("anthropic" if m == moved else "openai")]) for m in models])


def _pattern_route() -> str:
    """Models `llama-...` to Anthropic, matched by a regular expression: in every scope."""
    return """
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: pattern, namespace: default}
spec:
  parentRefs:
    - {name: gw, kind: Gateway, group: gateway.networking.k8s.io}
  rules:
    - matches: [{headers: [{type: RegularExpression, name: x-ai-eg-model, value: "llama-.*"}]}]
      backendRefs:
        - {name: anthropic}
"""


def _write(
    directory: Path, port: int, providers, moved: str | None = None, models: list[str] = MODELS, pattern: bool = True
) -> None:
    openai_fake, anthropic_fake = providers
    text = resources.gateway(port) + (_pattern_route() if pattern else "")
    text += "".join(openai_and_anthropic(_routes(moved, models), openai_fake.port, anthropic_fake.port))
    tmp = directory / "gateway.tmp"
    tmp.write_text(text)
    tmp.replace(directory / "gateway.yaml")


def _route_versions(envoy) -> dict[str, str]:
    dump = envoy.config_dump("dynamic_route_configs")
    out = {}
    for config in dump["configs"]:
        for entry in config.get("dynamic_route_configs", [config]):
            out[entry["route_config"]["name"]] = entry["version_info"]
    return out


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_models_reach_their_backends_through_their_scopes_and_an_edit_changes_one_scope(
    keyed_providers, tmp_path: Path, delta: bool
) -> None:
    openai_fake, anthropic_fake = keyed_providers
    config, port, xds_port = tmp_path / "config", free_port(), free_port()
    config.mkdir()
    _write(config, port, keyed_providers)
    translator = f"127.0.0.1:{free_port()}"
    plane = ControlPlaneProcess(
        config, xds_port, tmp_path, extra=("--translator-listen", translator, "--route-scopes-from", "0")
    )
    plane.start()
    envoy = None
    try:
        envoy = start_envoy(xds_port, FLEET, delta=delta)
        await asyncio.get_running_loop().run_in_executor(None, listener_active, envoy)
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="client-key", max_retries=0)

        versions = _route_versions(envoy)
        listener = f"{FLEET}/{port}"
        assert set(versions) == {f"{listener}#{s}" for s in range(contract.ROUTE_SCOPES)}

        for model in MODELS:
            response = await client.chat.completions.create(model=model, messages=CHAT)
            assert response.choices[0].message.content
            assert openai_fake.requests[-1].body["model"] == model
        assert len({contract.route_scope(m) for m in MODELS}) > 10  # the models span many scopes
        for model in ("llama-3", "llama-guard"):
            response = await client.chat.completions.create(model=model, messages=CHAT)
            assert response.choices[0].message.content
            assert anthropic_fake.requests[-1].body["model"] == model
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="no-such-model", messages=CHAT)
        assert missing.value.code == "model_not_found"

        _write(config, port, keyed_providers, moved="model-7")
        scope = f"{listener}#{contract.route_scope('model-7')}"
        wait_for(lambda: _route_versions(envoy)[scope] != versions[scope], timeout=30, what="model-7's scope updated")
        after = _route_versions(envoy)
        assert {name for name in after if after[name] != versions[name]} == {scope}
        answered = len(anthropic_fake.requests)
        response = await client.chat.completions.create(model="model-7", messages=CHAT)
        assert response.choices[0].message.content
        assert len(anthropic_fake.requests) == answered + 1
        assert anthropic_fake.requests[-1].body["model"] == "model-7"
        # The other scopes, which the edit's answer left out (SotW too: type_urls.CHANGES_ONLY), serve.
        for model in MODELS:
            if model != "model-7":
                await client.chat.completions.create(model=model, messages=CHAT)
                assert openai_fake.requests[-1].body["model"] == model
    finally:
        if envoy is not None:
            envoy.stop()
        plane.stop()


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_a_listener_that_grows_past_the_threshold_moves_to_scopes_and_keeps_serving(
    keyed_providers, tmp_path: Path, delta: bool
) -> None:
    """A gateway that grows to --route-scopes-from rules: its listener changes from one route
    configuration to scopes (an in-place filter chain update Envoy warms), the models it served
    are served throughout, and every model once the listener with scopes is active.

    "Throughout" is per new connection: a connection opened before the update keeps the old
    filter chain (so the old routes) until Envoy closes it. Envoy 1.40 answers `Connection: close`
    on it with a chance that grows over the drain time, none in its first second (this Envoy's
    drain time is 1 s), then closes it when the drain time ends, so a request in flight at that
    moment fails (this test once reused one connection and failed 4 runs in 25 on a loaded host).
    The kept connection is checked for what Envoy promises: it ends, and the client's next
    connection gets the new routes."""
    openai_fake, _ = keyed_providers
    config, port, xds_port = tmp_path / "config", free_port(), free_port()
    config.mkdir()
    _write(config, port, keyed_providers, models=MODELS[:-1], pattern=False)
    translator = f"127.0.0.1:{free_port()}"
    threshold = str(len(MODELS))  # the models' rules (no rule on a pattern: it would be in all 128 scopes)
    plane = ControlPlaneProcess(
        config, xds_port, tmp_path, extra=("--translator-listen", translator, "--route-scopes-from", threshold)
    )
    plane.start()
    envoy = None
    try:
        envoy = start_envoy(xds_port, FLEET, delta=delta)
        await asyncio.get_running_loop().run_in_executor(None, listener_active, envoy)
        base_url = f"http://127.0.0.1:{port}/v1"
        kept = openai.AsyncOpenAI(base_url=base_url, api_key="client-key", max_retries=0)
        no_keep_alive = httpx2.Limits(max_keepalive_connections=0)
        fresh = openai.AsyncOpenAI(
            base_url=base_url,
            api_key="client-key",
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(limits=no_keep_alive),
        )
        listener = f"{FLEET}/{port}"
        assert set(_route_versions(envoy)) == {listener}
        for model in MODELS[:-1]:
            await kept.chat.completions.create(model=model, messages=CHAT)
            assert openai_fake.requests[-1].body["model"] == model

        _write(config, port, keyed_providers, pattern=False)
        # While Envoy warms the listener with scopes, the old one serves the models it had; once
        # it is active, the new model too. No request for an old model fails meanwhile.
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            await fresh.chat.completions.create(model=MODELS[0], messages=CHAT)
            try:
                await fresh.chat.completions.create(model=MODELS[-1], messages=CHAT)
                break
            except openai.NotFoundError:
                assert asyncio.get_running_loop().time() < deadline, "the new model was never served"
                await asyncio.sleep(0.05)
        scoped = {f"{listener}#{s}" for s in range(contract.ROUTE_SCOPES)}
        assert set(_route_versions(envoy)) >= scoped
        for model in MODELS:
            await fresh.chat.completions.create(model=model, messages=CHAT)
            assert openai_fake.requests[-1].body["model"] == model

        # The connection opened before the update: closed by Envoy once drained (its Envoy drains
        # for 1 s); the client's next one is routed by scopes.
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                await kept.chat.completions.create(model=MODELS[-1], messages=CHAT)
                break
            except (openai.NotFoundError, openai.APIConnectionError):
                assert asyncio.get_running_loop().time() < deadline, "the old filter chain kept its connection"
                await asyncio.sleep(0.05)
        assert openai_fake.requests[-1].body["model"] == MODELS[-1]
    finally:
        if envoy is not None:
            envoy.stop()
        plane.stop()


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_a_port_edit_that_envoy_cannot_bind_keeps_the_old_port_serving_with_its_scopes(
    keyed_providers, tmp_path: Path, delta: bool
) -> None:
    """The listener hand-over with route scopes: the Gateway's port edited to one something else
    holds; the old listener is kept, and so are its scopes (named after it), so every model is
    still served on the old port. Before the fix the scopes went with the edit and the old port
    answered 404 to everything."""
    import socket

    openai_fake, _ = keyed_providers
    config, port, xds_port = tmp_path / "config", free_port(), free_port()
    config.mkdir()
    _write(config, port, keyed_providers)
    translator = f"127.0.0.1:{free_port()}"
    plane = ControlPlaneProcess(
        config, xds_port, tmp_path, extra=("--translator-listen", translator, "--route-scopes-from", "0")
    )
    plane.start()
    envoy = None
    try:
        envoy = start_envoy(xds_port, FLEET, delta=delta)
        await asyncio.get_running_loop().run_in_executor(None, listener_active, envoy)
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="client-key", max_retries=0)
        await client.chat.completions.create(model=MODELS[0], messages=CHAT)
        with socket.socket() as busy:
            busy.bind(("0.0.0.0", 0))  # where serve's listeners bind
            busy.listen()
            _write(config, busy.getsockname()[1], keyed_providers)
            wait_for(lambda: any(e.get("event") == "nack_received" for e in plane.events()), what="the NACK")
            # Give what follows the NACK time to arrive: a scope removal would show below (the pass
            # does not depend on this wait, a regression shows more surely with it).
            await asyncio.sleep(1.0)
            for model in MODELS:
                await client.chat.completions.create(model=model, messages=CHAT)
                assert openai_fake.requests[-1].body["model"] == model
    finally:
        if envoy is not None:
            envoy.stop()
        plane.stop()


def _scope_names(envoy) -> set[str]:
    dump = envoy.config_dump("dynamic_scoped_route_configs")
    return {scope["name"] for config in dump["configs"] for scope in config.get("scoped_route_configs", [])}


async def _chat(connection, model: str) -> tuple[int, dict[str, str]]:
    """One chat completion on an open HTTP/1.1 connection (in a thread: the fake providers answer
    on this loop): its status and headers."""
    import json

    def chat() -> tuple[int, dict[str, str]]:
        body = json.dumps({"model": model, "messages": CHAT}).encode()
        connection.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}

    return await asyncio.get_running_loop().run_in_executor(None, chat)


@pytest.mark.parametrize(
    ("edit", "delta"),
    [("port", False), ("port", True), ("out-of-scopes", False)],
    ids=["port-sotw", "port-delta", "out-of-scopes-sotw"],
)
async def test_connections_draining_on_a_replaced_listener_keep_its_scopes_until_the_drain_time_ends(
    keyed_providers, tmp_path: Path, edit: str, delta: bool
) -> None:
    """An edit that replaces the listener: its port (Envoy accepts the new one), or a rule fewer
    than --route-scopes-from (the listener leaves its scopes for one route configuration). The
    connections open on the old listener drain (an Envoy started with --drain-time-s 600 here: its gradual
    drain answers `Connection: close` with a chance of the seconds elapsed over 600, none in the first
    second, so the draining connection outlives the four requests but for a chance under 1/150) and
    their requests are still routed by its scopes, which serve --envoy-drain-time 3 holds for 3 + 5
    s; then they go, and such a request gets Envoy's 404. Before the hold the scopes went with the
    edit: 404 at once."""
    import http.client

    openai_fake, _ = keyed_providers
    config, port, xds_port = tmp_path / "config", free_port(), free_port()
    new_port = free_port() if edit == "port" else port
    config.mkdir()
    _write(config, port, keyed_providers, pattern=False)
    translator = f"127.0.0.1:{free_port()}"
    threshold = str(len(MODELS))
    extra = ("--translator-listen", translator, "--route-scopes-from", threshold, "--envoy-drain-time", "3")
    plane = ControlPlaneProcess(config, xds_port, tmp_path, extra=extra)
    plane.start()
    envoy = None
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        envoy = start_envoy(xds_port, FLEET, delta=delta, drain_time_s=600)
        await asyncio.get_running_loop().run_in_executor(None, listener_active, envoy)
        old_scopes = {f"{FLEET}/{port}#{s}" for s in range(contract.ROUTE_SCOPES)}
        assert _scope_names(envoy) == old_scopes
        assert (await _chat(connection, MODELS[0]))[0] == 200

        _write(config, new_port, keyed_providers, models=MODELS[:-1] if edit != "port" else MODELS, pattern=False)
        draining = "total_listeners_draining" if edit == "port" else "total_filter_chains_draining"
        wait_for(
            lambda: envoy.stats("listener_manager").get(f"listener_manager.{draining}", 0) >= 1,
            timeout=30,
            what="the old listener draining",
        )
        await asyncio.sleep(0.5)  # what a removal of the scopes would bring has time to arrive
        for model in MODELS[:4]:  # models of different scopes, on the draining connection
            status, headers = await _chat(connection, model)
            assert status == 200, f"{model}: {status} on the draining connection"
            assert openai_fake.requests[-1].body["model"] == model
            assert headers.get("connection") != "close", "Envoy closed the connection: the test proves less"
        assert _scope_names(envoy) >= old_scopes
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{new_port}/v1", api_key="client-key", max_retries=0)
        await client.chat.completions.create(model=MODELS[5], messages=CHAT)  # the new listener serves

        wait_for(lambda: not _scope_names(envoy) & old_scopes, timeout=30, what="the held scopes released")
        assert any(e.get("event") == "route_scopes_released" for e in plane.events())
        assert (await _chat(connection, MODELS[1]))[0] == 404  # what the hold kept from the draining connection
        await client.chat.completions.create(model=MODELS[6], messages=CHAT)
    finally:
        connection.close()
        if envoy is not None:
            envoy.stop()
        plane.stop()
