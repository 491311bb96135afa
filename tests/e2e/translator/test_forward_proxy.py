"""GatewayConfig forwardProxy with a real Envoy: the backends' connections tunnelled through an HTTP
CONNECT proxy, TLS inside the tunnel, clients the official SDKs. The proxy is
aigw_fakes.forward_proxy, a stand-in for squid or a corporate egress proxy (it refuses what such a
proxy refuses: anything but CONNECT, denied targets); the providers are the usual fakes, the OpenAI
one serving TLS with a certificate the BackendTLSPolicy trusts."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from aigw_fakes.anthropic import AnthropicFake
from aigw_fakes.forward_proxy import FakeForwardProxy
from aigw_fakes.openai import OpenAIFake
from tests.e2e.harness import resources
from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.resources import Ref, Route, Rule

pytestmark = pytest.mark.e2e

OPENAI_KEY = "sk-proxied-openai"
ANTHROPIC_KEY = "sk-ant-proxied"
ROUTE = Route("proxied", [Rule(["gpt-tls"], [Ref("openai-tls")]), Rule(["claude-plain"], [Ref("anthropic-plain")])])
CHAT = [{"role": "user", "content": "hi"}]


def _documents(openai_fake: OpenAIFake, anthropic_fake: AnthropicFake) -> tuple[str, ...]:
    """The route, an OpenAI backend at localhost over TLS (its BackendTLSPolicy trusts the fake's
    certificate) and an Anthropic backend at 127.0.0.1 in plaintext, each with its key."""
    with open(openai_fake.ca_file) as ca:
        ca_pem = ca.read()
    tls = f"""
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: fake-ca, namespace: default}}
data: {{ca.crt: {json.dumps(ca_pem)}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: openai-tls, namespace: default}}
spec:
  targetRefs: [{{group: gateway.envoyproxy.io, kind: Backend, name: openai-tls}}]
  validation:
    caCertificateRefs: [{{group: "", kind: ConfigMap, name: fake-ca}}]
    hostname: localhost
"""
    return (
        ROUTE.yaml(),
        resources.backend("openai-tls", openai_fake.port, hostname="localhost"),
        resources.api_key("openai-tls", OPENAI_KEY),
        tls,
        resources.backend("anthropic-plain", anthropic_fake.port, "Anthropic"),
        resources.api_key("anthropic-plain", ANTHROPIC_KEY, "AnthropicAPIKey"),
    )


@pytest.fixture
async def providers():
    openai_fake = await OpenAIFake(api_key=OPENAI_KEY, tls=True).start()
    anthropic_fake = await AnthropicFake(api_key=ANTHROPIC_KEY).start()
    proxy = await FakeForwardProxy().start()
    yield openai_fake, anthropic_fake, proxy
    for fake in (openai_fake, anthropic_fake, proxy):
        await fake.stop()


async def test_every_backend_connection_goes_through_the_proxy(providers) -> None:
    """TLS to a backend named by FQDN and plaintext to one at an IP both run inside CONNECT tunnels;
    the proxy is asked for the name the requests are addressed to (and resolves it itself); streams
    are metered as ever."""
    openai_fake, anthropic_fake, proxy = providers
    async with run_gateway(*_documents(openai_fake, anthropic_fake), forward_proxy=f"127.0.0.1:{proxy.port}") as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)
        reply = await client.chat.completions.create(model="gpt-tls", messages=CHAT)
        assert reply.choices[0].message.content == "Fake gpt-tls reply to: hi"
        stream = await client.chat.completions.create(
            model="gpt-tls", messages=CHAT, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
        messages = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="client-key", max_retries=0)
        message = await messages.messages.create(model="claude-plain", max_tokens=20, messages=CHAT)
        assert message.content[0].type == "text" and message.content[0].text.startswith("Fake claude-plain")

        assert {seen.header("authorization") for seen in openai_fake.requests} == {f"Bearer {OPENAI_KEY}"}
        assert [seen.header("x-api-key") for seen in anthropic_fake.requests] == [ANTHROPIC_KEY]
        # Every connection was a tunnel the proxy opened: none went around it.
        assert set(proxy.connects) == {f"localhost:{openai_fake.port}", f"127.0.0.1:{anthropic_fake.port}"}
        assert proxy.refused == []
        entries = await gw.access_log.wait_for(3)
        assert [e["gen_ai.usage.output_tokens"] > 0 for e in entries] == [True, True, True]
        log = gw.access_log.path.read_text() + gw.envoy_log()
        assert OPENAI_KEY not in log and ANTHROPIC_KEY not in log


async def test_a_target_the_proxy_refuses_is_an_error_in_the_clients_shape(providers) -> None:
    """The proxy's 403 to a CONNECT (a target its policy denies) fails the connection: the client
    gets the 503 any unreachable provider gives, in its API's shape, and nothing reaches the
    provider."""
    openai_fake, anthropic_fake, proxy = providers
    proxy.denied_hosts = frozenset({"localhost"})
    async with run_gateway(*_documents(openai_fake, anthropic_fake), forward_proxy=f"127.0.0.1:{proxy.port}") as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)
        with pytest.raises(openai.InternalServerError) as failed:
            await client.chat.completions.create(model="gpt-tls", messages=CHAT)
        assert failed.value.status_code == 503
        assert isinstance(failed.value.body, dict) and failed.value.body["type"] == "server_error"
        assert openai_fake.requests == []
        assert f"localhost:{openai_fake.port}" in proxy.connects
        # The other backend is not denied: its tunnel serves.
        messages = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="client-key", max_retries=0)
        message = await messages.messages.create(model="claude-plain", max_tokens=20, messages=CHAT)
        assert message.content[0].type == "text"


async def test_without_a_forward_proxy_nothing_goes_through_one(providers) -> None:
    """The control: the same configuration without forwardProxy connects to the backends directly."""
    openai_fake, anthropic_fake, proxy = providers
    async with run_gateway(*_documents(openai_fake, anthropic_fake)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)
        reply = await client.chat.completions.create(model="gpt-tls", messages=CHAT)
        assert reply.choices[0].message.content == "Fake gpt-tls reply to: hi"
        assert proxy.connects == []
