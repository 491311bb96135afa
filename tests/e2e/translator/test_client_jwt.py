"""A SecurityPolicy's jwt (and cors) through a real Envoy fed by the control plane, with the official
OpenAI and Anthropic SDKs as clients: Envoy's jwt_authn checks the client's token against the
issuer's keys (fetched from its JWKS URI), answers a refusal in the client's API shape, writes a
claim to a header over the client's own value, and keeps the token from the provider. The issuer
is the fakes' OIDC issuer (a stand-in for a real identity provider: RS256 JWTs, a JWKS endpoint);
the providers are the OpenAI and Anthropic fakes (stand-ins that refuse a wrong API key)."""

from __future__ import annotations

import asyncio

import anthropic
import httpx
import jwt
import openai
import pytest

from aigw_fakes import OIDCIssuerFake
from aigw_xds.xds.build import UNVERIFIED_MESSAGE
from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.providers import ANTHROPIC_KEY, CHAT, OPENAI_KEY, Fakes
from tests.e2e.harness.resources import Ref, Route, Rule, traffic_policy
from tests.e2e.translator.test_form_endpoints import WAV
from tests.resource_text import any_model_route, security_policy

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "hi"}]
AUDIENCE = "ai-gateway"
GATEWAY_TARGET = "targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]"
# A route of its own for the audio model (multipart requests: the router phase finds their model).
AUDIO = Route("audio", [Rule(["whisper-1"], [Ref("openai")])])
# A model Envoy serves alone (an OpenAI backend, nothing to translate: a NATIVE rule).
PLAIN = Route("plain", [Rule(["gpt-plain"], [Ref("openai")])])
# A route of any model (a rule without matches).
VAULT = any_model_route("vault", "name: openai, modelNameOverride: whisper-1")
# ... and one open to every client.
OPEN_AUDIO = Route("open-audio", [Rule(["whisper-open"], [Ref("openai", model_name_override="whisper-1")])])


def _policy(issuer: OIDCIssuerFake, target: str, name: str = "sso", more: str = "") -> str:
    """A jwt of the issuer's tokens for AUDIENCE (provider idp), and `more` of the policy's spec."""
    return security_policy(
        target,
        f"""
jwt:
  providers:
    - name: idp
      issuer: {issuer.issuer}
      audiences: [{AUDIENCE}]
      remoteJWKS: {{uri: "{issuer.issuer}/jwks"}}
      claimToHeaders: [{{claim: sub, header: x-user-id}}]
{more}""",
        name,
    )


async def _until_keys_fetched(url: str, token: str) -> None:
    """Envoy fetches the issuer's keys as the listener starts, without holding it back: the first
    requests may meet a 503 saying so."""
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(100):
            answer = await http.get(f"{url}/v1/models", headers={"authorization": f"Bearer {token}"})
            if answer.status_code != 503:
                return
            await asyncio.sleep(0.1)
    raise AssertionError("Envoy did not fetch the issuer's keys")


async def test_a_gateway_policy_lets_only_clients_with_a_token_of_its_issuer_in(fakes: Fakes) -> None:
    with OIDCIssuerFake() as issuer:
        async with run_gateway(*fakes.resources(), PLAIN.yaml(), _policy(issuer, GATEWAY_TARGET)) as gw:
            token = issuer.issue(audience=AUDIENCE)
            await _until_keys_fetched(gw.url, token)
            async with httpx.AsyncClient(timeout=30) as http:
                missing = await http.post(f"{gw.url}/v1/chat/completions", json={"model": "gpt-test", "messages": []})
                models = await http.get(f"{gw.url}/v1/models")
            assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
            assert missing.json()["error"]["type"] == "authentication_error"
            assert "needs a JWT" in missing.json()["error"]["message"]
            assert models.status_code == 401  # the model list too

            # The OpenAI SDK sends its api_key as the bearer token.
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=token, max_retries=0)
            answer = await client.chat.completions.create(
                model="gpt-test", messages=MESSAGES, extra_headers={"x-user-id": "mallory"}
            )
            assert answer.choices[0].message.content
            [seen] = fakes.openai.requests
            # The provider gets its own key, never the client's token; the claim, not the client's value.
            assert seen.header("authorization") == f"Bearer {OPENAI_KEY}"
            assert token not in str(seen.headers)
            assert seen.header("x-user-id") == issuer.subject
            assert [m.id for m in (await client.models.list()).data]

            for bad, error, message in (
                ("not-a-jwt", openai.AuthenticationError, "the bearer token is not a JWT"),
                # (past the 60 s skew)
                (issuer.issue(audience=AUDIENCE, lifetime=-600), openai.AuthenticationError, "the JWT has expired"),
                (issuer.issue(audience="other"), openai.PermissionDeniedError, "the JWT is not for this service"),
            ):
                refused = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=bad, max_retries=0)
                for model in ("gpt-test", "gpt-plain"):  # (translated; served by Envoy alone)
                    with pytest.raises(error) as caught:
                        await refused.chat.completions.create(model=model, messages=MESSAGES)
                    assert caught.value.body["message"].startswith(message)
            forged = jwt.encode(
                {"iss": issuer.issuer, "aud": AUDIENCE, "sub": "x"},
                "a-guess-at-a-shared-secret-32-bytes",
                algorithm="HS256",
            )
            with pytest.raises(openai.AuthenticationError) as caught:
                await openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=forged, max_retries=0).models.list()
            assert caught.value.response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
            assert len(fakes.openai.requests) == 1

            # Anthropic's SDK: its auth_token as the bearer token; refusals in Anthropic's shape.
            claude = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", auth_token=token, max_retries=0)
            message = await claude.messages.create(model="claude", max_tokens=16, messages=MESSAGES)
            assert message.content
            assert fakes.anthropic.requests[-1].header("x-api-key") == ANTHROPIC_KEY
            assert fakes.anthropic.requests[-1].header("authorization") is None
            stranger = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="sk-ant-guess", max_retries=0)
            with pytest.raises(anthropic.AuthenticationError) as refused_claude:
                await stranger.messages.create(model="claude", max_tokens=16, messages=MESSAGES)
            assert refused_claude.value.body == {
                "type": "error",
                "error": {"type": "authentication_error", "message": refused_claude.value.body["error"]["message"]},
            }


async def test_a_rate_limit_counts_each_user_by_the_claim_whatever_header_the_client_sends(fakes: Fakes) -> None:
    """Envoy AI Gateway's usage limits per user: a rate limit on the header a JWT's claim is
    written to (x-user-id, from sub). A client's own x-user-id is replaced by its token's claim,
    and one of a claim its token lacks (x-user-email) is removed, not passed on."""
    per_user = traffic_policy(
        CHAT.name,
        """
rateLimit:
  global:
    rules:
      - clientSelectors: [{headers: [{name: x-user-id, type: Distinct}]}]
        limit: {requests: 2, unit: Minute}
""",
    )
    claims = "\n        claimToHeaders: [{claim: sub, header: x-user-id}, {claim: email, header: x-user-email}]"
    with OIDCIssuerFake() as issuer:
        sso = _policy(issuer, GATEWAY_TARGET).replace(
            "\n        claimToHeaders: [{claim: sub, header: x-user-id}]", claims
        )
        async with run_gateway(*fakes.resources(), per_user, sso) as gw:
            issuer.subject = "alice"
            alice = issuer.issue(audience=AUDIENCE)
            issuer.subject = "bob"
            bob = issuer.issue(audience=AUDIENCE)
            await _until_keys_fetched(gw.url, alice)

            def client(token: str) -> openai.AsyncOpenAI:
                return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=token, max_retries=0)

            posing = {"x-user-id": "carol", "x-user-email": "carol@example.com"}
            await client(alice).chat.completions.create(model="gpt-test", messages=MESSAGES)
            await client(alice).chat.completions.create(model="gpt-test", messages=MESSAGES, extra_headers=posing)
            with pytest.raises(openai.RateLimitError):  # alice's third, whoever she says she is
                await client(alice).chat.completions.create(
                    model="gpt-test", messages=MESSAGES, extra_headers={"x-user-id": "bob"}
                )
            await client(bob).chat.completions.create(model="gpt-test", messages=MESSAGES)  # bob: his own budget
            seen = [(r.header("x-user-id"), r.header("x-user-email")) for r in fakes.openai.requests]
            assert seen == [("alice", None), ("alice", None), ("bob", None)]


async def test_a_protected_route_that_matches_any_model_is_checked_when_the_router_phase_routes_to_it(
    fakes: Fakes,
) -> None:
    """From an expert review: a route of any model (no x-ai-eg-model match) with a policy, and an
    open route. A multipart request naming the open route's model in x-ai-eg-model and another in
    its form was first routed (and checked) as the open route's, then routed by the router phase to
    the protected one, where nothing checked it again: now it is refused there."""
    vault_target = "targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: vault}]"
    with OIDCIssuerFake() as issuer:
        documents = (*fakes.resources(), OPEN_AUDIO.yaml(), VAULT, _policy(issuer, vault_target))
        async with run_gateway(*documents) as gw:
            token = issuer.issue(audience=AUDIENCE)
            await _until_keys_fetched(gw.url, token)
            anyone = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="sk-not-a-jwt", max_retries=0)
            disguised = {"x-ai-eg-model": "whisper-open"}
            with pytest.raises(openai.AuthenticationError) as refused:
                await anyone.audio.translations.create(model="zzz", file=("hi.wav", WAV), extra_headers=disguised)
            assert refused.value.body["message"] == UNVERIFIED_MESSAGE
            # The vault's own multipart requests (the router phase sends them to its backend): refused
            # by Envoy after the router phase, the answer as it is (no provider rejected the gateway's key).
            with pytest.raises(openai.AuthenticationError) as refused:
                await anyone.audio.translations.create(model="zzz", file=("hi.wav", WAV))
            assert refused.value.body["message"] == UNVERIFIED_MESSAGE
            assert "x-aigw-refused-here" not in refused.value.response.headers
            with pytest.raises(openai.AuthenticationError):
                await anyone.chat.completions.create(model="zzz", messages=MESSAGES)
            assert fakes.openai.requests == []
            member = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=token, max_retries=0)
            assert (await member.audio.translations.create(model="zzz", file=("hi.wav", WAV))).text


async def test_a_route_policy_checks_its_rules_whatever_way_a_request_is_routed(fakes: Fakes) -> None:
    """The audio route asks for a token, the chat route for none. A multipart request for the audio
    model, whose model the router phase finds after the first check (on a route that takes requests
    without a token, as the chat route does), is checked again once routed: refused without one."""
    audio_target = "targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: audio}]"
    with OIDCIssuerFake() as issuer:
        documents = (*fakes.resources(), AUDIO.yaml(), OPEN_AUDIO.yaml(), _policy(issuer, audio_target))
        async with run_gateway(*documents) as gw:
            token = issuer.issue(audience=AUDIENCE)
            await _until_keys_fetched(gw.url, token)
            anyone = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="sk-not-a-jwt", max_retries=0)
            member = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=token, max_retries=0)
            assert (await anyone.chat.completions.create(model="gpt-test", messages=MESSAGES)).choices
            with pytest.raises(openai.AuthenticationError):
                await anyone.audio.translations.create(model="whisper-1", file=("hi.wav", WAV))
            with pytest.raises(openai.AuthenticationError):  # a JSON body naming the model
                await anyone.chat.completions.create(model="whisper-1", messages=MESSAGES)
            # A multipart request for the open route's model: its Authorization (no JWT) is not asked for.
            assert (await anyone.audio.translations.create(model="whisper-open", file=("hi.wav", WAV))).text
            assert [r.path for r in fakes.openai.requests] == ["/v1/chat/completions", "/v1/audio/translations"]
            translated = await member.audio.translations.create(
                model="whisper-1", file=("hi.wav", WAV), extra_headers={"x-user-id": "mallory"}
            )
            assert translated.text.startswith("Fake translation")
            # The route's claim header, over the client's; its token not passed on.
            assert fakes.openai.requests[-1].header("x-user-id") == issuer.subject
            assert fakes.openai.requests[-1].header("authorization") == f"Bearer {OPENAI_KEY}"
            # A token of the issuer passes the chat route too (it checks none).
            assert (await member.chat.completions.create(model="gpt-test", messages=MESSAGES)).choices


async def test_under_a_gateway_policy_a_route_of_its_own_takes_its_own_tokens_however_routed(fakes: Fakes) -> None:
    """The Gateway takes tokens of one issuer, the audio route (a policy of its own) of another's
    alone: its clients' multipart requests pass (checked on the route the router phase chose), the
    Gateway's clients' do not; a client routing by x-ai-eg-model passes both checks with its token."""
    audio_target = "targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: audio}]"
    with OIDCIssuerFake() as corp, OIDCIssuerFake() as partner:
        partner_policy = _policy(partner, audio_target, "partner")
        documents = (*fakes.resources(), AUDIO.yaml(), _policy(corp, GATEWAY_TARGET), partner_policy)
        async with run_gateway(*documents) as gw:
            corp_token, partner_token = corp.issue(audience=AUDIENCE), partner.issue(audience=AUDIENCE)
            await _until_keys_fetched(gw.url, corp_token)

            def client(token: str) -> openai.AsyncOpenAI:
                return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=token, max_retries=0)

            assert (await client(partner_token).audio.translations.create(model="whisper-1", file=("a.wav", WAV))).text
            with pytest.raises(openai.AuthenticationError):
                await client(corp_token).audio.translations.create(model="whisper-1", file=("a.wav", WAV))
            with pytest.raises(openai.AuthenticationError):
                await client(partner_token).chat.completions.create(model="gpt-test", messages=MESSAGES)
            by_header = await client(corp_token).chat.completions.create(
                model="gpt-test", messages=MESSAGES, extra_headers={"x-ai-eg-model": "gpt-test"}
            )
            assert by_header.choices
            assert [r.path for r in fakes.openai.requests] == ["/v1/audio/translations", "/v1/chat/completions"]


async def test_cors_preflights_are_answered_for_the_origins_the_policy_names(fakes: Fakes) -> None:
    cors = security_policy(
        GATEWAY_TARGET,
        """
cors:
  allowOrigins: ["https://*.example.com"]
  allowMethods: [POST]
  allowHeaders: [authorization, content-type]
  maxAge: 10m
""",
        "web",
    )
    async with run_gateway(*fakes.resources(), cors) as gw, httpx.AsyncClient(timeout=30) as http:
        preflight = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
        allowed = await http.options(
            f"{gw.url}/v1/chat/completions", headers={"origin": "https://app.example.com", **preflight}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
        assert allowed.headers["access-control-max-age"] == "600"
        other = await http.options(
            f"{gw.url}/v1/chat/completions", headers={"origin": "https://evil.test", **preflight}
        )
        assert "access-control-allow-origin" not in other.headers
        answer = await http.post(
            f"{gw.url}/v1/chat/completions",
            json={"model": "gpt-test", "messages": MESSAGES},
            headers={"origin": "https://app.example.com"},
        )
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "https://app.example.com"


async def test_two_policies_of_one_issuer_each_take_its_tokens_however_routed(fakes: Fakes) -> None:
    """From an expert review: the Gateway's policy and a route's of any model, of the same issuer.
    Envoy checked a token for the first policy whose providers took it, and the route's refused
    every request, JSON or multipart."""
    with OIDCIssuerFake() as issuer:
        vault_target = "targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: vault}]"
        vault_policy = _policy(issuer, vault_target, "vault-sso")
        documents = (*fakes.resources(), VAULT, _policy(issuer, GATEWAY_TARGET), vault_policy)
        async with run_gateway(*documents) as gw:
            token = issuer.issue(audience=AUDIENCE)
            await _until_keys_fetched(gw.url, token)
            member = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=token, max_retries=0)
            assert (await member.chat.completions.create(model="zzz", messages=MESSAGES)).choices
            assert (await member.audio.translations.create(model="zzz", file=("hi.wav", WAV))).text
            assert (await member.chat.completions.create(model="gpt-test", messages=MESSAGES)).choices
            anyone = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="sk-not-a-jwt", max_retries=0)
            with pytest.raises(openai.AuthenticationError):
                await anyone.chat.completions.create(model="zzz", messages=MESSAGES)
