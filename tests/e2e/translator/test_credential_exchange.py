"""OIDC token exchange through real Envoy with the official openai SDK as client: BackendSecurityPolicies
with oidcExchangeToken (YAML, compiled by the control plane) for AWS Bedrock (OIDC token → STS
AssumeRoleWithWebIdentity → SigV4 with temporary credentials) and Azure OpenAI (OIDC token as the
Entra ID client assertion of a workload identity).

The stand-ins, each on loopback: aigw_fakes.OIDCIssuerFake (client-credentials grant, RS256 JWTs),
AWSSTSFake (verifies the web identity token with the issuer fake and hands the credentials it issues
to the Bedrock fake, which accepts them until they expire), EntraFake with a federated identity
credential for the issuer's tokens (https with a self-signed CA, trusted through REQUESTS_CA_BUNDLE),
AzureOpenAIFake accepting only Entra's unexpired tokens. The translator runs in this process: the
STS endpoint reaches it through AWS_ENDPOINT_URL_STS, Entra's through AZURE_AUTHORITY_HOST. The token
services run on their own threads, so that they answer while the translator's event loop (this
test's) awaits a fetch, which runs on a worker thread."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import openai
import pytest
import structlog

from aigw_fakes import AWSSTSFake, AzureOpenAIFake, BedrockFake, EntraFake, OIDCIssuerFake, OpenAIFake
from aigw_fakes.aws_sts import TEST_ROLE_ARN
from aigw_fakes.entra import TEST_CLIENT_ID as AZURE_CLIENT_ID
from aigw_fakes.entra import TEST_TENANT_ID, FederatedCredential
from aigw_fakes.oidc_issuer import TEST_CLIENT_ID, TEST_CLIENT_SECRET
from aigw_translator import aws, azure_entra, oidc
from tests.e2e.harness import resources
from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.resources import NAMESPACE, Ref, Route, Rule
from tests.e2e.harness.traffic import send_without_a_failure

pytestmark = pytest.mark.e2e

BEDROCK_MODEL = "amazon.nova-micro-v1:0"
AZURE_VERSION = "2024-10-21"
OPENAI_KEY = "sk-openai-bystander"
ROUTE = Route(
    "exchange",
    [Rule([BEDROCK_MODEL], [Ref("bedrock")]), Rule(["gpt-4o"], [Ref("azure")]), Rule(["gpt-4o-mini"], [Ref("openai")])],
)
CHAT = [{"role": "user", "content": "hello there"}]
SUBJECT = "system:serviceaccount:aigw:translator"


def _oidc_yaml(issuer: str, secret_name: str, aud: str | None) -> str:
    oidc_fields = (
        f"oidc: {{provider: {{issuer: {json.dumps(issuer)}}}, clientID: {json.dumps(TEST_CLIENT_ID)}, "
        f"clientSecret: {{name: {secret_name}}}, scopes: [gateway]}}"
    )
    return oidc_fields + (f", aud: {json.dumps(aud)}" if aud else "")


def _secret(name: str) -> str:
    return f"""
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: {NAMESPACE}}}
stringData: {{client-secret: {json.dumps(TEST_CLIENT_SECRET)}}}
"""


def _aws_policy(issuer: str) -> str:
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: bedrock-oidc, namespace: {NAMESPACE}}}
spec:
  targetRefs:
    - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: bedrock}}
  type: AWSCredentials
  awsCredentials:
    region: us-east-1
    oidcExchangeToken: {{{_oidc_yaml(issuer, "bedrock-oidc", "sts.amazonaws.com")}, awsRoleArn: {TEST_ROLE_ARN}}}
""" + _secret("bedrock-oidc")


def _azure_policy(issuer: str) -> str:
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: azure-oidc, namespace: {NAMESPACE}}}
spec:
  targetRefs:
    - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: azure}}
  type: AzureCredentials
  azureCredentials:
    clientID: {json.dumps(AZURE_CLIENT_ID)}
    tenantID: {json.dumps(TEST_TENANT_ID)}
    oidcExchangeToken: {{{_oidc_yaml(issuer, "azure-oidc", None)}}}
""" + _secret("azure-oidc")


@dataclass
class Services:
    issuer: OIDCIssuerFake
    sts: AWSSTSFake
    entra: EntraFake
    bedrock: BedrockFake
    azure: AzureOpenAIFake
    openai: OpenAIFake

    def docs(self) -> tuple[str, ...]:
        return (
            ROUTE.yaml(),
            resources.backend("bedrock", self.bedrock.port, "AWSBedrock"),
            _aws_policy(self.issuer.issuer),
            resources.backend("azure", self.azure.port, "AzureOpenAI", version=AZURE_VERSION, hostname="localhost"),
            _azure_policy(self.issuer.issuer),
            resources.backend("openai", self.openai.port),
            resources.api_key("openai", OPENAI_KEY),
        )


@pytest.fixture
def token_services() -> Iterator[tuple[OIDCIssuerFake, EntraFake]]:
    with OIDCIssuerFake(subject=SUBJECT) as issuer:
        record = FederatedCredential(issuer.verify, issuer.issuer, SUBJECT)
        entra = EntraFake(federated=record).start_in_thread()
        try:
            yield issuer, entra
        finally:
            entra.stop_thread()


@pytest.fixture
async def services(
    token_services: tuple[OIDCIssuerFake, EntraFake], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Services]:
    issuer, entra = token_services
    bedrock = await BedrockFake(region="us-east-1").start()
    azure = await AzureOpenAIFake(api_key=None, token_validator=entra.validate).start()
    bystander = await OpenAIFake(api_key=OPENAI_KEY).start()
    sts = AWSSTSFake(issuer.verify, roles={TEST_ROLE_ARN: SUBJECT}, accept=[bedrock]).start_in_thread()
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
    monkeypatch.setenv(azure_entra.AUTHORITY_ENV, entra.base_url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", entra.ca_file)
    # No credentials of another test.
    aws.reset()
    oidc.reset()
    monkeypatch.setattr(azure_entra, "_cache", azure_entra.TokenCache())
    try:
        yield Services(issuer, sts, entra, bedrock, azure, bystander)
    finally:
        azure_entra._cache.forget()  # no refresh outlives the fakes
        sts.stop_thread()
        for fake in (bedrock, azure, bystander):
            await fake.stop()
        aws.reset()
        oidc.reset()


def _client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="client-key", max_retries=0)


async def test_oidc_exchange_signs_bedrock_and_authenticates_azure(services: Services) -> None:
    async with run_gateway(*services.docs()) as gw:
        client = _client(gw.url)
        for _ in range(2):
            bedrock = await client.chat.completions.create(model=BEDROCK_MODEL, messages=CHAT)
            assert bedrock.choices[0].message.content == f"Fake {BEDROCK_MODEL} reply to: hello there"
            azure = await client.chat.completions.create(model="gpt-4o", messages=CHAT)
            assert azure.choices[0].message.content.startswith("Fake gpt-4o")
    # AWS: one role session; Bedrock saw its temporary key and session token on every request.
    [issued] = services.sts.issued
    assert issued.role_arn == TEST_ROLE_ARN and issued.subject == SUBJECT
    assert [c.access_key_id for c in services.bedrock.calls] == [issued.access_key_id] * 2
    assert {r.header("x-amz-security-token") for r in services.bedrock.requests} == {issued.session_token}
    # Azure: one Entra token, got with an OIDC client assertion (no client secret anywhere).
    [entra_token] = services.entra.issued
    assert [r.header("authorization") for r in services.azure.requests] == [f"Bearer {entra_token}"] * 2
    [login] = [r for r in services.entra.requests if r.method == "POST"]
    assert "client_assertion=" in login.raw_body.decode() and "client_secret" not in login.raw_body.decode()
    # The issuer saw one grant per audience (STS's and Entra's federated one).
    audiences = sorted(services.issuer.verify(t, a)["aud"] for t, a in _tokens_and_audiences(services.issuer))
    assert audiences == ["api://AzureADTokenExchange", "sts.amazonaws.com"]
    for seen in [*services.bedrock.requests, *services.azure.requests]:
        assert "client-key" not in json.dumps(seen.headers) and TEST_CLIENT_SECRET not in json.dumps(seen.headers)


def _tokens_and_audiences(issuer: OIDCIssuerFake) -> list[tuple[str, str]]:
    pairs = []
    for token in issuer.issued:
        for audience in ("sts.amazonaws.com", "api://AzureADTokenExchange"):
            try:
                issuer.verify(token, audience)
            except Exception:
                continue
            pairs.append((token, audience))
    return pairs


async def test_short_lived_credentials_rotate_without_a_failed_request(services: Services) -> None:
    """STS credentials, OIDC tokens and Entra tokens living 3-4 s: requests sent continuously (four
    at a time, to both backends) across at least two rotations of each, none failing."""
    services.sts.credential_lifetime_s = 3
    services.issuer.token_lifetime_s = 4
    services.entra.lifetime = 3
    async with run_gateway(*services.docs()) as gw:
        client = _client(gw.url)
        sent = await send_without_a_failure(
            lambda: [client.chat.completions.create(model=m, messages=CHAT) for m in (BEDROCK_MODEL, "gpt-4o") * 2],
            seconds=9,
        )
    assert len(services.bedrock.calls) + len(services.azure.requests) == sent
    # At least two rotations of each credential, every one used.
    assert len(services.sts.issued) >= 3 and len({c.access_key_id for c in services.bedrock.calls}) >= 3
    assert len(services.entra.issued) >= 3 and len({r.header("authorization") for r in services.azure.requests}) >= 3
    assert len(services.issuer.issued) >= 4


async def test_sts_down_is_a_503_in_openai_shape_one_log_line_and_other_backends_serve(
    services: Services,
) -> None:
    services.sts.always_fail(503)
    with structlog.testing.capture_logs() as logs:
        async with run_gateway(*services.docs()) as gw:
            client = _client(gw.url)
            for _ in range(3):
                with pytest.raises(openai.InternalServerError) as failed:
                    await client.chat.completions.create(model=BEDROCK_MODEL, messages=CHAT)
                assert failed.value.status_code == 503
                body = failed.value.body
                assert isinstance(body, dict) and body["type"] == "server_error"
                assert "no AWS credentials for this backend" in body["message"]
                assert "ServiceUnavailable" in body["message"]
                # The other backends keep serving meanwhile.
                bystander = await client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)
                assert bystander.choices[0].message.content
                azure = await client.chat.completions.create(model="gpt-4o", messages=CHAT)
                assert azure.choices[0].message.content
                await asyncio.sleep(0.3)
    assert not services.bedrock.requests  # nothing was sent unsigned
    unavailable = [e for e in logs if e.get("event") == "aws_credentials_unavailable"]
    assert len(unavailable) == 1
    assert unavailable[0]["backend"].startswith(f"{NAMESPACE}/bedrock/") and unavailable[0]["role_arn"] == TEST_ROLE_ARN
    assert unavailable[0]["policy"] == f"{NAMESPACE}/bedrock-oidc"
    assert "ServiceUnavailable" in unavailable[0]["reason"]
    assert TEST_CLIENT_SECRET not in repr(logs)
