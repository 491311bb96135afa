"""BackendSecurityPolicy oidcExchangeToken (AWS, Azure) and GCP workload identity federation compile
into the translator's Auth: the OIDC client-credentials settings with the client secret read from
the Secret's `client-secret` key, the AWS role, the federation pool and the impersonated account."""

from __future__ import annotations

from aigw.translator.v1 import config_pb2
from aigw_xds.compile import compile_resources
from tests.resource_text import backend, gateway, resources, route


def _oidc(indent: int) -> str:
    """The oidc block of an oidcExchangeToken, indented to sit under it."""
    pad = " " * indent
    lines = [
        "oidc:",
        '  provider: {issuer: "https://issuer.example", tokenEndpoint: "https://issuer.example/token"}',
        "  clientID: aigw",
        "  clientSecret: {name: oidc-client}",
        "  scopes: [openid, bedrock]",
        "  redirectURL: https://ignored.example/callback",
    ]
    return "".join(f"\n{pad}{line}" for line in lines)


SECRET = """
---
apiVersion: v1
kind: Secret
metadata: {name: oidc-client, namespace: default}
stringData: {client-secret: s3cret-oidc}
"""


def _policy(target: str, body: str) -> str:
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: {target}-creds, namespace: default}}
spec:
  targetRefs:
    - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {target}}}
{body}"""


AWS = _policy(
    "a",
    f"""  type: AWSCredentials
  awsCredentials:
    region: us-east-1
    oidcExchangeToken:
      awsRoleArn: arn:aws:iam::123456789012:role/bedrock
      aud: sts.amazonaws.com{_oidc(6)}
""",
)
AZURE = _policy(
    "b",
    f"""  type: AzureCredentials
  azureCredentials:
    clientID: app
    tenantID: tenant
    oidcExchangeToken:{_oidc(6)}
""",
)
GCP = _policy(
    "c",
    f"""  type: GCPCredentials
  gcpCredentials:
    projectName: proj
    region: us-central1
    workloadIdentityFederationConfig:
      projectID: "123456"
      workloadIdentityPoolName: pool
      workloadIdentityProviderName: provider
      serviceAccountImpersonation: {{serviceAccountName: vertex-caller}}
      oidcExchangeToken:{_oidc(8)}
""",
)


def _auths(text: str) -> tuple[dict[str, config_pb2.Auth], list[str]]:
    result = compile_resources(
        resources(
            gateway()
            + route("r", {"m1": "a", "m2": "b", "m3": "c"})
            + backend("a", 9001)
            + backend("b", 9002)
            + backend("c", 9003)
            + text
        )
    )
    translator = result.gateways["default/gw"].translator
    auths = {b.service_backend.split("/")[-1]: b.auth for b in translator.backends}
    return auths, [d.message for d in result.diagnostics]


def _expect_oidc(token: config_pb2.OIDCToken, audience: str) -> None:
    assert token.issuer == "https://issuer.example"
    assert token.token_endpoint == "https://issuer.example/token"
    assert token.client_id == "aigw"
    assert token.client_secret == "s3cret-oidc"
    assert list(token.scopes) == ["openid", "bedrock"]
    assert token.audience == audience


def test_every_exchange_compiles_with_its_client_secret() -> None:
    auths, messages = _auths(AWS + AZURE + GCP + SECRET)
    assert messages == []
    aws = auths["a"].aws_credentials
    assert aws.policy == "default/a-creds"  # named in the translator's log lines
    assert auths["b"].azure_credentials.policy == "default/b-creds"
    assert auths["c"].gcp_credentials.policy == "default/c-creds"
    assert aws.role_arn == "arn:aws:iam::123456789012:role/bedrock"
    _expect_oidc(aws.oidc, "sts.amazonaws.com")
    _expect_oidc(auths["b"].azure_credentials.oidc, "")
    assert auths["b"].azure_credentials.client_secret == ""
    wif = auths["c"].gcp_credentials.workload_identity_federation
    assert (wif.project_id, wif.pool, wif.provider, wif.service_account) == (
        "123456",
        "pool",
        "provider",
        "vertex-caller",
    )
    _expect_oidc(wif.oidc, "")


def test_missing_client_secret_and_role_are_errors_naming_the_field() -> None:
    result = compile_resources(
        resources(
            gateway()
            + route("r", {"m1": "a"})
            + backend("a", 9001)
            + AWS.replace("      awsRoleArn: arn:aws:iam::123456789012:role/bedrock\n", "")
        )
    )
    fields = {(e.resource.name, e.field) for e in result.errors}
    assert ("a-creds", "spec.awsCredentials.oidcExchangeToken.awsRoleArn") in fields
    assert ("a-creds", "spec.awsCredentials.oidcExchangeToken.oidc.clientSecret.name") in fields
