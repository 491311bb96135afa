"""A SecurityPolicy's authorization rules through a real Envoy fed by the control plane, with the
official OpenAI and Anthropic SDKs as clients: Envoy's RBAC decides by the first rule that matches
(a verified token's claims and scopes, the client's address and headers, the method), else the
default action, and answers a refusal as a 403 in the client's API shape. The issuer is the fakes'
OIDC issuer (a stand-in for a real identity provider: RS256 JWTs, a JWKS endpoint); the providers
are the OpenAI and Anthropic fakes (stand-ins that refuse a wrong API key)."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from aigw_fakes import OIDCIssuerFake
from aigw_xds.xds.build import AUTHORIZATION_REFUSED_MESSAGE, UNVERIFIED_MESSAGE
from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.providers import Fakes
from tests.e2e.translator.test_client_jwt import AUDIENCE, AUDIO, GATEWAY_TARGET, MESSAGES, PLAIN, _until_keys_fetched
from tests.e2e.translator.test_client_jwt import _policy as jwt_policy
from tests.e2e.translator.test_form_endpoints import WAV
from tests.resource_text import any_model_route, security_policy

pytestmark = pytest.mark.e2e


def _policy(issuer: OIDCIssuerFake, target: str, authorization: str, name: str = "sso") -> str:
    return jwt_policy(issuer, target, name, more=f"authorization:\n{authorization}\n")


RULES = """
  defaultAction: Deny
  rules:
    - name: banned
      action: Deny
      principal: {jwt: {provider: idp, claims: [{name: sub, values: [mallory]}]}}
    - name: readers
      action: Allow
      principal: {jwt: {provider: idp, scopes: [models.read]}}
    - name: ml-team-here
      action: Allow
      operation: {methods: [POST]}
      principal: {headers: [{name: x-team, values: [ml, research]}], clientCIDRs: [127.0.0.0/8]}
"""


async def test_a_gateway_policy_lets_by_whom_its_first_matching_rule_allows(fakes: Fakes) -> None:
    """Translated requests and those Envoy serves alone alike: the first rule that matches decides
    (mallory's scope does not outweigh the rule that bans her), a client no rule matches is
    refused (defaultAction Deny), and no refused request reaches a provider."""
    with OIDCIssuerFake() as issuer:
        documents = (*fakes.resources(), PLAIN.yaml(), _policy(issuer, GATEWAY_TARGET, RULES))
        async with run_gateway(*documents) as gw:
            issuer.subject = "alice"
            reader = issuer.issue(audience=AUDIENCE, scopes=["openid", "models.read"])
            issuer.subject = "bob"
            plain = issuer.issue(audience=AUDIENCE)
            issuer.subject = "mallory"
            banned = issuer.issue(audience=AUDIENCE, scopes=["models.read"])
            await _until_keys_fetched(gw.url, reader)

            def client(token: str) -> openai.AsyncOpenAI:
                return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=token, max_retries=0)

            for model in ("gpt-test", "gpt-plain"):  # (translated; served by Envoy alone)
                assert (await client(reader).chat.completions.create(model=model, messages=MESSAGES)).choices
                # bob's token has no scope, but his team's header from this address is let by.
                ml = {"x-team": "research"}
                answer = await client(plain).chat.completions.create(model=model, messages=MESSAGES, extra_headers=ml)
                assert answer.choices
                for token, headers in ((plain, {}), (plain, {"x-team": "sales"}), (banned, {})):
                    with pytest.raises(openai.PermissionDeniedError) as refused:
                        await client(token).chat.completions.create(
                            model=model, messages=MESSAGES, extra_headers=headers
                        )
                    assert refused.value.body["message"] == AUTHORIZATION_REFUSED_MESSAGE
                    assert refused.value.body["type"] == "permission_error"
                    assert "x-aigw-refused-here" not in refused.value.response.headers
            # Four answered, six refused: only the answered reached the provider.
            assert len(fakes.openai.requests) == 4
            with pytest.raises(openai.PermissionDeniedError):  # the model list too
                await client(plain).models.list()
            assert [m.id for m in (await client(reader).models.list()).data]

            claude = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", auth_token=plain, max_retries=0)
            with pytest.raises(anthropic.PermissionDeniedError) as refused_claude:
                await claude.messages.create(model="claude", max_tokens=16, messages=MESSAGES)
            assert refused_claude.value.body == {
                "type": "error",
                "error": {"type": "permission_error", "message": AUTHORIZATION_REFUSED_MESSAGE},
            }
            assert fakes.anthropic.requests == []


async def test_a_routes_own_rules_decide_however_the_request_is_routed(fakes: Fakes) -> None:
    """The audio route's policy allows only tokens with the audio scope; the chat routes take the
    Gateway's (any token). A transcription is a multipart form, whose model the router phase
    finds: the audio route's rules decide once it is routed there (after the router phase, where
    the answers it routes again from have not decided)."""
    audio_target = "targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: audio}]"
    audio_rules = """
  defaultAction: Deny
  rules:
    - {name: speakers, action: Allow, principal: {jwt: {provider: idp, scopes: [audio]}}}
"""
    with OIDCIssuerFake() as issuer:
        documents = (
            *fakes.resources(),
            AUDIO.yaml(),
            _policy(issuer, GATEWAY_TARGET, "  defaultAction: Allow"),
            _policy(issuer, audio_target, audio_rules, "audio-only"),
        )
        async with run_gateway(*documents) as gw:
            speaker = issuer.issue(audience=AUDIENCE, scopes=["audio"])
            writer = issuer.issue(audience=AUDIENCE, scopes=["chat"])
            await _until_keys_fetched(gw.url, speaker)

            def client(token: str) -> openai.AsyncOpenAI:
                return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=token, max_retries=0)

            assert (await client(speaker).audio.transcriptions.create(model="whisper-1", file=("hi.wav", WAV))).text
            assert (await client(writer).chat.completions.create(model="gpt-test", messages=MESSAGES)).choices
            with pytest.raises(openai.PermissionDeniedError) as refused:
                await client(writer).audio.transcriptions.create(model="whisper-1", file=("hi.wav", WAV))
            assert refused.value.body["message"] == AUTHORIZATION_REFUSED_MESSAGE
            # Disguised as a chat request: its token was checked for the chat routes' policy only,
            # so the audio route's refuses it as unverified before its rules are read.
            disguised = {"x-ai-eg-model": "gpt-test"}
            with pytest.raises(openai.AuthenticationError) as unverified:
                await client(writer).audio.transcriptions.create(
                    model="whisper-1", file=("hi.wav", WAV), extra_headers=disguised
                )
            assert unverified.value.body["message"] == UNVERIFIED_MESSAGE
            paths = [r.path for r in fakes.openai.requests]
            assert paths == ["/v1/audio/transcriptions", "/v1/chat/completions"]


DENY_BUT_THE_OFFICE = """
authorization:
  defaultAction: Deny
  rules:
    - {name: office, action: Allow, principal: {clientCIDRs: [10.0.0.0/8]}}
"""


@pytest.mark.parametrize("route_scopes_from", [0, None], ids=["route scopes", "one route configuration"])
async def test_no_route_of_the_gateway_s_rules_is_reached_around_them(fakes: Fakes, route_scopes_from) -> None:
    """From an expert review: the Gateway's rules refuse this client (its address); one route has a
    policy of its own that lets everyone by. A JSON request to an image edit, whose model Envoy
    read but the translator takes for dall-e-2 (a form's default), was routed again into another
    route scope, onto a rule of any model's route checked only before the router phase, and
    reached its provider with the backend's key. Now every route reached decides; the model list
    takes the Gateway's rules (it had taken the answers' looser ones)."""
    plain_target = "targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: plain}]"
    documents = (
        *fakes.resources(),
        PLAIN.yaml(),
        any_model_route("vault", "name: openai"),
        security_policy(GATEWAY_TARGET, DENY_BUT_THE_OFFICE, "office"),
        security_policy(plain_target, "authorization: {defaultAction: Allow}", "open"),
    )
    async with (
        run_gateway(*documents, route_scopes_from=route_scopes_from) as gw,
        httpx.AsyncClient(timeout=20) as http,
    ):
        for path, body in (
            ("/v1/chat/completions", {"model": "gpt-test", "messages": MESSAGES}),
            ("/v1/chat/completions", {"model": "zzz", "messages": MESSAGES}),
            ("/v1/images/edits", {"model": "gpt-test", "prompt": "x"}),
            ("/v1/images/edits", {"model": "fallback", "prompt": "x"}),  # (a rule translated per attempt)
            ("/v1/images/edits", {"model": "zzz", "prompt": "x"}),
            ("/v1/images/variations", {"model": "embed"}),
        ):
            answer = await http.post(gw.url + path, json=body)
            assert answer.status_code == 403, (path, body, answer.status_code, answer.text)
        for path in ("/v1/models", "/v1/models/gpt-test", "/anthropic/v1/models"):
            answer = await http.get(gw.url + path)
            assert answer.status_code == 403, (path, answer.text)
        assert fakes.openai.requests == [] and fakes.anthropic.requests == []
        opened = await http.post(gw.url + "/v1/chat/completions", json={"model": "gpt-plain", "messages": MESSAGES})
        assert opened.status_code == 200, opened.text
