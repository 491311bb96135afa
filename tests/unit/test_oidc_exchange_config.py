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


KEY_POLICY = _policy(
    "c",
    """  type: GCPCredentials
  gcpCredentials:
    projectName: proj
    region: us-central1
    credentialsFile: {secretRef: {name: sa-key}}
""",
)


def test_a_service_account_key_that_cannot_be_one_is_an_error_when_compiled() -> None:
    """From a new-user trial: a path given for the key's JSON (GCP_SERVICE_ACCOUNT_JSON=key.json)
    passed validate and `run` started; only the first request said the key is not JSON (a 503). It
    is a warning naming the policy and the Secret now, never quoting the key; a key that reads is
    taken without one."""
    import json

    from aigw_fakes.service_account_key import make_service_account_key

    def compiled(value: str):
        secret = f"""
---
apiVersion: v1
kind: Secret
metadata: {{name: sa-key, namespace: default}}
stringData: {{service_account.json: {json.dumps(value)}}}
"""
        text = gateway() + route("r", {"m": "c"}) + backend("c", 9003) + KEY_POLICY + secret
        return compile_resources(resources(text))

    for value, problem in [
        ("my-service-account.json", "the service-account key is not JSON"),
        ('{"type": "authorized_user", "client_secret": "hush"}', "credentials JSON of type authorized_user"),
        ('{"type": "service_account", "private_key": "hush"}', "missing client_email, token_uri"),
    ]:
        result = compiled(value)
        [said] = [d for d in result.diagnostics if d.field == "spec.gcpCredentials.credentialsFile.secretRef"]
        assert not said.is_error and problem in said.message and "get a 503" in said.message, said
        assert "Secret sa-key" in said.message and "hush" not in str(result.diagnostics)
        # A warning: an example's placeholder key ("{}") does not hold the Gateway's other backends.
        assert "default/gw" in result.gateways
    good = compiled(json.dumps(make_service_account_key("https://oauth2.example/token")))
    assert not good.diagnostics and "default/gw" in good.gateways
