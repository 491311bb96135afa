"""BackendSecurityPolicy -> the translator's Auth of one AIServiceBackend: one small function per
policy type (_AUTH_BY_TYPE), the Secret values they read, the credential override, and the
pass-client-headers annotation with its warnings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_contract.gcp_key import service_account_info

from ..api import kinds
from ..keys import ResourceKey
from ..resources import Loaded
from .backend_traits import FleetBackends
from .context import CompileContext
from .references import AIGW_GROUP

# What an unresolved secret value compiles to when placeholder_secrets is set.
PLACEHOLDER_SECRET = "unset-secret-placeholder"

# Policy type -> the kind of the translator's Auth it compiles to, which names the request header a
# credentialOverride reads when it names none (contract.OVERRIDE_HEADER_DEFAULTS).
_AUTH_KIND = {
    "APIKey": "api_key",
    "AnthropicAPIKey": "anthropic_api_key",
    "AzureAPIKey": "azure_api_key",
    "AWSCredentials": "aws_credentials",
    "GCPCredentials": "gcp_credentials",
    "AzureCredentials": "azure_credentials",
}


def backend_auth(ctx: CompileContext, aisb_loaded: Loaded[Any]) -> config_pb2.Auth:
    """The Auth of the one BackendSecurityPolicy that targets the AIServiceBackend (or InferencePool;
    empty if none; an error if several)."""
    policies = ctx.resources.policies_for("BackendSecurityPolicy", aisb_loaded.key)
    for loaded in policies:
        ctx.use(loaded)
    if not policies:
        return config_pb2.Auth()
    if len(policies) > 1:
        names = ", ".join(p.key.ref for p in policies)
        ctx.error(
            f"more than one BackendSecurityPolicy targets {aisb_loaded.key.kind} {aisb_loaded.key.ref}: {names}; "
            "the backend is skipped",
            policies[1],
            "spec.targetRefs",
        )
        return config_pb2.Auth()
    loaded = policies[0]
    spec: kinds.BackendSecurityPolicySpec = loaded.resource.spec
    auth = config_pb2.Auth()
    build = _AUTH_BY_TYPE.get(spec.type)
    if build is not None:
        build(ctx, loaded, spec, auth)
    _pass_client_headers(ctx, loaded, auth)
    override = spec.credentialOverride
    if override is not None:
        source: kinds.FromRequestHeaders | kinds.FromDynamicMetadata | None
        if override.fromRequestHeaders is not None:
            source = override.fromRequestHeaders
            default = contract.OVERRIDE_HEADER_DEFAULTS[_AUTH_KIND[spec.type]]
            auth.credential_override.from_request_headers.header = source.header or default
        else:
            source = override.fromDynamicMetadata
            assert source is not None
            auth.credential_override.from_dynamic_metadata.namespace = source.namespace
            auth.credential_override.from_dynamic_metadata.key = source.key or ""
        auth.credential_override.fallback_to_configured = source.fallbackToConfigured
    ctx.status.set(loaded.key, "Accepted", True, "Accepted")
    return auth


# --------------------------------------------------------------------------------------------
# One function per policy type: fill `auth` from the policy's spec.

_AuthBuilder = Callable[[CompileContext, Loaded[Any], kinds.BackendSecurityPolicySpec, config_pb2.Auth], None]


def _api_key(spec_field: str, auth_field: str) -> _AuthBuilder:
    """APIKey, AnthropicAPIKey, AzureAPIKey: the key `apiKey` of the Secret in spec.<spec_field>."""

    def build(
        ctx: CompileContext, loaded: Loaded[Any], spec: kinds.BackendSecurityPolicySpec, auth: config_pb2.Auth
    ) -> None:
        holder = getattr(spec, spec_field)
        key = secret_value(ctx, loaded, holder.secretRef, "apiKey", f"spec.{spec_field}.secretRef")
        getattr(auth, auth_field).key = key or ""

    return build


def _aws_credentials(
    ctx: CompileContext, loaded: Loaded[Any], spec: kinds.BackendSecurityPolicySpec, auth: config_pb2.Auth
) -> None:
    aws = spec.awsCredentials
    assert aws is not None
    auth.aws_credentials.policy = loaded.key.ref
    auth.aws_credentials.region = aws.region
    if aws.credentialsFile is not None:
        auth.aws_credentials.credentials_file = (
            secret_value(
                ctx,
                loaded,
                aws.credentialsFile.secretRef,
                "credentials",
                "spec.awsCredentials.credentialsFile.secretRef",
            )
            or ""
        )
        auth.aws_credentials.profile = aws.credentialsFile.profile
    if aws.oidcExchangeToken is not None:
        exchange = aws.oidcExchangeToken
        if not exchange.awsRoleArn:
            ctx.error(
                "awsRoleArn is required for the OIDC token exchange (the role STS assumes)",
                loaded,
                "spec.awsCredentials.oidcExchangeToken.awsRoleArn",
            )
        auth.aws_credentials.role_arn = exchange.awsRoleArn or ""
        _oidc_token(ctx, loaded, exchange, "spec.awsCredentials.oidcExchangeToken", auth.aws_credentials.oidc)


def _gcp_credentials(
    ctx: CompileContext, loaded: Loaded[Any], spec: kinds.BackendSecurityPolicySpec, auth: config_pb2.Auth
) -> None:
    gcp = spec.gcpCredentials
    assert gcp is not None
    auth.gcp_credentials.policy = loaded.key.ref
    auth.gcp_credentials.project_name = gcp.projectName
    auth.gcp_credentials.region = gcp.region
    if gcp.credentialsFile is not None:
        path = "spec.gcpCredentials.credentialsFile.secretRef"
        key = secret_value(ctx, loaded, gcp.credentialsFile.secretRef, "service_account.json", path)
        if key is not None and key != PLACEHOLDER_SECRET:
            try:
                service_account_info(key)
            except ValueError as exc:
                # Said now, not only at the first request (the translator's 503); a warning, as an
                # example's placeholder key ("{}") must not hold the Gateway's other backends back.
                secret = gcp.credentialsFile.secretRef.name
                message = f"Secret {secret}, key service_account.json: {exc}: requests to this backend get a 503"
                ctx.warn(message, loaded, path)
        auth.gcp_credentials.service_account_json = key or ""
    wif = gcp.workloadIdentityFederationConfig
    if wif is not None:
        target = auth.gcp_credentials.workload_identity_federation
        target.project_id = wif.projectID
        target.pool = wif.workloadIdentityPoolName
        target.provider = wif.workloadIdentityProviderName
        if wif.serviceAccountImpersonation is not None:
            target.service_account = wif.serviceAccountImpersonation.serviceAccountName
        _oidc_token(
            ctx,
            loaded,
            wif.oidcExchangeToken,
            "spec.gcpCredentials.workloadIdentityFederationConfig.oidcExchangeToken",
            target.oidc,
        )


def _azure_credentials(
    ctx: CompileContext, loaded: Loaded[Any], spec: kinds.BackendSecurityPolicySpec, auth: config_pb2.Auth
) -> None:
    azure = spec.azureCredentials
    assert azure is not None
    auth.azure_credentials.policy = loaded.key.ref
    auth.azure_credentials.client_id = azure.clientID
    auth.azure_credentials.tenant_id = azure.tenantID
    if azure.clientSecretRef is not None:
        auth.azure_credentials.client_secret = (
            secret_value(ctx, loaded, azure.clientSecretRef, "client-secret", "spec.azureCredentials.clientSecretRef")
            or ""
        )
    elif azure.oidcExchangeToken is not None:
        _oidc_token(
            ctx, loaded, azure.oidcExchangeToken, "spec.azureCredentials.oidcExchangeToken", auth.azure_credentials.oidc
        )


def _oidc_token(
    ctx: CompileContext,
    loaded: Loaded[Any],
    exchange: kinds.OIDCExchangeToken,
    path: str,
    target: config_pb2.OIDCToken,
) -> None:
    """The client-credentials grant of an oidcExchangeToken (its client secret read from the Secret's
    `client-secret` key, as Envoy Gateway's OIDC settings keep it)."""
    oidc = exchange.oidc
    target.issuer = oidc.provider.issuer
    target.token_endpoint = oidc.provider.tokenEndpoint or ""
    target.client_id = oidc.clientID
    target.client_secret = (
        secret_value(ctx, loaded, oidc.clientSecret, "client-secret", f"{path}.oidc.clientSecret") or ""
    )
    target.scopes.extend(oidc.scopes)
    target.audience = exchange.aud or ""
    target.grant_type = exchange.grantType or ""


_AUTH_BY_TYPE: dict[str, _AuthBuilder] = {
    "APIKey": _api_key("apiKey", _AUTH_KIND["APIKey"]),
    "AnthropicAPIKey": _api_key("anthropicAPIKey", _AUTH_KIND["AnthropicAPIKey"]),
    "AzureAPIKey": _api_key("azureAPIKey", _AUTH_KIND["AzureAPIKey"]),
    "AWSCredentials": _aws_credentials,
    "GCPCredentials": _gcp_credentials,
    "AzureCredentials": _azure_credentials,
}


# --------------------------------------------------------------------------------------------
# Client headers, and the Secret values a policy reads


def _pass_client_headers(ctx: CompileContext, loaded: Loaded[Any], auth: config_pb2.Auth) -> None:
    """The policy's annotation naming the provider-scoped client headers (an OpenAI organization or
    project, cookies...) that pass to its backends; the translator strips them otherwise."""
    value = loaded.resource.metadata.annotations.get(contract.PASS_CLIENT_HEADERS_ANNOTATION, "")
    for name in dict.fromkeys(n.strip().lower() for n in value.split(",") if n.strip()):
        if name in contract.PROVIDER_SCOPED_HEADERS:
            auth.pass_client_headers.append(name)
        else:
            scoped = (
                " (stripped with every client header under its prefix)"
                if name.startswith(contract.PROVIDER_SCOPED_PREFIXES)
                else " (client credentials never reach a provider; other headers are not stripped)"
            )
            ctx.warn(
                f"{name!r} cannot be passed: only {', '.join(contract.PROVIDER_SCOPED_HEADERS)} can{scoped}",
                loaded,
                f"metadata.annotations[{contract.PASS_CLIENT_HEADERS_ANNOTATION}]",
            )


def warn_passed_override_headers(ctx: CompileContext, backends: FleetBackends) -> None:
    """A pass-client-headers annotation naming a credential override header of any backend of the
    fleet: the translator never passes it (it would carry that backend's client credential)."""
    overrides = backends.overrides
    if not overrides:
        return
    for b in backends.passing:
        for name in b.pass_client_headers:
            if name not in overrides:
                continue
            namespace, _, aisb = b.service_backend.partition("/")
            target = ResourceKey("AIServiceBackend", namespace, aisb)
            for policy in ctx.resources.policies_for("BackendSecurityPolicy", target):
                ctx.warn(
                    f"{name!r} is the credential override header of AIServiceBackend {overrides[name]} in this "
                    "Gateway: it is never passed (client credentials never reach a provider)",
                    policy,
                    f"metadata.annotations[{contract.PASS_CLIENT_HEADERS_ANNOTATION}]",
                )


def secret_value(
    ctx: CompileContext, bsp_loaded: Loaded[Any], ref: kinds.SecretObjectReference, key: str, path: str
) -> str | None:
    secret_loaded = referenced_secret(ctx, bsp_loaded, ref, path)
    if secret_loaded is None:
        return None
    return secret_key_value(ctx, bsp_loaded, secret_loaded, key, path)


def referenced_secret(
    ctx: CompileContext, holder: Loaded[Any], ref: kinds.SecretObjectReference, path: str
) -> Loaded[Any] | None:
    """The Secret `ref` names, when `holder` may reference it and it is there (else None, said)."""
    ns = ref.namespace or holder.key.namespace
    if not ctx.reference_allowed(holder, AIGW_GROUP, "", "Secret", ns, ref.name):
        ctx.error(
            f"reference to Secret {ns}/{ref.name} in another namespace needs a ReferenceGrant in namespace {ns}",
            holder,
            f"{path}.namespace",
        )
        return None
    secret_loaded = ctx.lookup("Secret", ns, ref.name)
    if secret_loaded is None:
        missing = ctx.absent("Secret", ns, ref.name)
        ctx.error(missing, holder, f"{path}.name")
        ctx.status.set(holder.key, "ResolvedRefs", False, "SecretNotFound", f"{path}: {missing}")
        return None
    # True unless another of the holder's Secrets is missing (a False wins).
    ctx.status.set(holder.key, "ResolvedRefs", True, "ResolvedRefs")
    return secret_loaded


def secret_key_value(
    ctx: CompileContext, holder: Loaded[Any], secret_loaded: Loaded[Any], key: str, path: str
) -> str | None:
    """A Secret's value of `key` as `holder` uses it (at `path`): None, said, when it is not there,
    is empty or did not resolve (a placeholder in validate and translate)."""
    secret: kinds.Secret = secret_loaded.resource
    ref = secret_loaded.key.ref
    if key in secret.unresolved:
        reason = f"key {key!r}: {secret.unresolved[key]}"
        if ctx.placeholder_secrets:
            reason += " (checked with a placeholder; run and serve need it)"
            ctx.warn(reason, secret_loaded, f"stringData.{key}")
            return PLACEHOLDER_SECRET
        ctx.error(reason, secret_loaded, f"stringData.{key}")
        return None
    value = secret.value(key)
    if value is None:
        ctx.error(f"Secret {ref} has no key {key!r}", holder, f"{path}.name")
        return None
    if not value.strip():  # a provider would refuse every request with it (a 401 the client reads as its own)
        ctx.error(f"Secret {ref} key {key!r} is empty", holder, f"{path}.name")
        ctx.status.set(holder.key, "ResolvedRefs", False, "InvalidSecret", f"{path}: key {key!r} is empty")
        return None
    return value
