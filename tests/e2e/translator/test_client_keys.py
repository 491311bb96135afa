"""A SecurityPolicy's apiKeyAuth through a real Envoy fed by the control plane, with the official
OpenAI and Anthropic SDKs as clients: Envoy asks the translator (its Authorization service, over
ext_authz) whether a request carries a client key, and the keys stay in the translator's
configuration. A client's key reaches no provider; its client's id reaches the provider (and rate
limits) in forwardClientIDHeader, over any the client sent. The providers are the OpenAI and
Anthropic fakes (stand-ins that refuse a wrong API key)."""

from __future__ import annotations

import base64
import hashlib

import anthropic
import httpx
import openai
import pytest

from aigw_xds.xds.build import UNVERIFIED_MESSAGE
from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.providers import ANTHROPIC_KEY, OPENAI_KEY, Fakes
from tests.e2e.translator.test_client_jwt import AUDIO, GATEWAY_TARGET, MESSAGES, PLAIN
from tests.e2e.translator.test_form_endpoints import WAV
from tests.resource_text import security_policy

pytestmark = pytest.mark.e2e

ALICE, BOB = "gw-key-of-alice-0123", "gw-key-of-bob-0123"
KEYS = f"""
---
apiVersion: v1
kind: Secret
metadata: {{name: client-keys, namespace: default}}
stringData: {{alice: {ALICE}, bob: {BOB}}}
"""


def _policy(
    target: str, name: str = "keys", extract: str = "[{headers: [authorization]}, {headers: [x-api-key]}]"
) -> str:
    """Keys read from Authorization (the OpenAI SDK's api_key) or x-api-key (the Anthropic SDK's),
    unless `extract` says where."""
    body = f"""
apiKeyAuth:
  credentialRefs: [{{name: client-keys}}]
  extractFrom: {extract}
  forwardClientIDHeader: x-client-id
"""
    return security_policy(target, body, name)


async def test_a_gateway_policy_lets_only_clients_with_a_key_in(fakes: Fakes) -> None:
    async with run_gateway(*fakes.resources(), PLAIN.yaml(), KEYS, _policy(GATEWAY_TARGET)) as gw:
        alice = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=ALICE, max_retries=0)
        answer = await alice.chat.completions.create(
            model="gpt-test", messages=MESSAGES, extra_headers={"x-client-id": "mallory"}
        )
        assert answer.choices[0].message.content
        [seen] = fakes.openai.requests
        assert seen.header("authorization") == f"Bearer {OPENAI_KEY}"  # the provider's key, not alice's
        assert ALICE not in str(seen.headers)
        assert seen.header("x-client-id") == "alice"
        assert [m.id for m in (await alice.models.list()).data]

        stranger = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="sk-guess", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as refused:
            await stranger.chat.completions.create(model="gpt-test", messages=MESSAGES)
        assert refused.value.body == {
            "message": "a valid API key is required",
            "type": "authentication_error",
            "param": None,
            "code": None,
        }
        with pytest.raises(openai.AuthenticationError):
            await stranger.models.list()
        # A model Envoy serves alone (no translator on its route): the same refusal, not read as the
        # provider's (a new user's trial had "the provider rejected the gateway's credential").
        with pytest.raises(openai.AuthenticationError) as refused:
            await stranger.chat.completions.create(model="gpt-plain", messages=MESSAGES)
        assert refused.value.body["message"] == "a valid API key is required"
        assert "x-aigw-refused-here" not in refused.value.response.headers
        async with httpx.AsyncClient(timeout=30) as http:
            missing = await http.post(f"{gw.url}/v1/chat/completions", json={"model": "gpt-test", "messages": []})
        assert missing.status_code == 401
        assert len(fakes.openai.requests) == 1

        bob = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key=BOB, max_retries=0)
        message = await bob.messages.create(model="claude", max_tokens=16, messages=MESSAGES)
        assert message.content
        assert fakes.anthropic.requests[-1].header("x-api-key") == ANTHROPIC_KEY
        assert fakes.anthropic.requests[-1].header("x-client-id") == "bob"
        guess = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="sk-ant-guess", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as refused_claude:
            await guess.messages.create(model="claude", max_tokens=16, messages=MESSAGES)
        assert refused_claude.value.body["error"]["type"] == "authentication_error"


async def test_a_route_policy_checks_its_rules_whatever_way_a_request_is_routed(fakes: Fakes) -> None:
    """The audio route asks for a key, the chat route for none: a multipart request for the audio
    model (its model found by the router phase) is checked once routed."""
    audio = "targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: audio}]"
    async with run_gateway(*fakes.resources(), AUDIO.yaml(), KEYS, _policy(audio)) as gw:
        anyone = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="sk-anything", max_retries=0)
        alice = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=ALICE, max_retries=0)
        assert (await anyone.chat.completions.create(model="gpt-test", messages=MESSAGES)).choices
        with pytest.raises(openai.AuthenticationError) as refused:
            await anyone.audio.translations.create(model="whisper-1", file=("hi.wav", WAV))
        assert refused.value.body["message"] == UNVERIFIED_MESSAGE
        with pytest.raises(openai.AuthenticationError):
            await anyone.chat.completions.create(model="whisper-1", messages=MESSAGES)
        assert [r.path for r in fakes.openai.requests] == ["/v1/chat/completions"]
        translated = await alice.audio.translations.create(model="whisper-1", file=("hi.wav", WAV))
        assert translated.text.startswith("Fake translation")
        assert fakes.openai.requests[-1].header("x-client-id") == "alice"
        assert ALICE not in str(fakes.openai.requests[-1].headers)


async def test_a_key_in_a_header_of_its_own_or_the_query_reaches_no_provider(fakes: Fakes) -> None:
    """From an expert review: the key's removal was only seen on Authorization and x-api-key, which
    the translator replaces with the provider's key anyway. Here a header it leaves alone, and a
    query parameter; on a model Envoy serves alone too (no translator on its route)."""
    custom = _policy(GATEWAY_TARGET, extract="[{headers: [x-gw-key]}, {params: [gw_key]}]")
    async with run_gateway(*fakes.resources(), PLAIN.yaml(), KEYS, custom) as gw:
        for model in ("gpt-test", "gpt-plain"):
            by_header = openai.AsyncOpenAI(
                base_url=gw.url + "/v1", api_key="sk-anything", default_headers={"x-gw-key": ALICE}, max_retries=0
            )
            assert (await by_header.chat.completions.create(model=model, messages=MESSAGES)).choices
            by_query = openai.AsyncOpenAI(
                base_url=gw.url + "/v1", api_key="sk-anything", default_query={"gw_key": BOB}, max_retries=0
            )
            assert (await by_query.chat.completions.create(model=model, messages=MESSAGES)).choices
        seen = fakes.openai.requests
        assert [r.header("x-client-id") for r in seen] == ["alice", "bob"] * 2
        for request in seen:
            assert ALICE not in str(request.headers) and BOB not in request.path + str(request.query)
            assert request.header("x-gw-key") is None and "gw_key" not in request.query


async def test_one_secret_for_the_gateways_policy_and_a_routes_takes_a_key_on_both(fakes: Fakes) -> None:
    """From an expert review: a key that two policies take (the Gateway's and the audio route's,
    one Secret) was recorded for the first only, and the route the router phase chose refused it."""
    audio = _policy("targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: audio}]", "audio-keys")
    async with run_gateway(*fakes.resources(), AUDIO.yaml(), KEYS, _policy(GATEWAY_TARGET), audio) as gw:
        alice = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=ALICE, max_retries=0)
        assert (await alice.audio.translations.create(model="whisper-1", file=("hi.wav", WAV))).text
        assert (await alice.chat.completions.create(model="gpt-test", messages=MESSAGES)).choices
        stranger = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="sk-guess", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await stranger.audio.translations.create(model="whisper-1", file=("hi.wav", WAV))


async def test_basic_auth_users_sign_in_with_their_passwords_which_reach_no_provider(fakes: Fakes) -> None:
    """Envoy Gateway's basicAuth: an htpasswd Secret ({SHA} lines) whose users the translator
    checks, as it checks client keys (the digests stay in its configuration, never Envoy's). A
    user's name reaches the provider in forwardUsernameHeader; the password never; a refusal is a
    401 with a Basic challenge, in the client's API shape."""
    htpasswd = "\\n".join(
        f"{name}:{{SHA}}{base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()}"
        for name, password in (("alice", "wonderland"), ("bob", "builder"))
    )
    users = f"""
---
apiVersion: v1
kind: Secret
metadata: {{name: staff, namespace: default}}
stringData: {{.htpasswd: "{htpasswd}\\n"}}
"""
    body = "basicAuth: {users: {name: staff}, forwardUsernameHeader: x-user}"
    documents = (*fakes.resources(), PLAIN.yaml(), users, security_policy(GATEWAY_TARGET, body, "staff"))
    async with run_gateway(*documents) as gw:

        def basic(credentials: str) -> dict[str, str]:
            return {"authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}

        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        for model in ("gpt-test", "gpt-plain"):  # (translated; served by Envoy alone)
            answer = await client.chat.completions.create(
                model=model, messages=MESSAGES, extra_headers={**basic("alice:wonderland"), "x-user": "mallory"}
            )
            assert answer.choices[0].message.content
            seen = fakes.openai.requests[-1]
            assert seen.header("authorization") == f"Bearer {OPENAI_KEY}"
            assert "wonderland" not in str(seen.headers) and seen.header("x-user") == "alice"
            with pytest.raises(openai.AuthenticationError) as refused:
                await client.chat.completions.create(model=model, messages=MESSAGES, extra_headers=basic("bob:guess"))
            assert refused.value.response.headers["www-authenticate"] == 'Basic realm="aigw"'
            assert "user name and password" in refused.value.body["message"]
        assert len(fakes.openai.requests) == 2
        claude = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="unused", max_retries=0)
        message = await claude.messages.create(
            model="claude", max_tokens=16, messages=MESSAGES, extra_headers=basic("bob:builder")
        )
        assert message.content and fakes.anthropic.requests[-1].header("x-user") == "bob"
        assert fakes.anthropic.requests[-1].header("x-api-key") == ANTHROPIC_KEY
