"""A configuration generated from environment variables, for `aigw-xds run` without a PATH.

Envoy AI Gateway's `aigw run` does the same with the provider SDKs' own variables. This module is
pure: an environment mapping in, YAML text out (`generate`), or an `AutoconfigError` whose message
is one line naming the variables to set.

Providers and their variables:

==============  =====================================================================================
OpenAI          OPENAI_API_KEY; OPENAI_BASE_URL (default https://api.openai.com/v1); OPENAI_ORG_ID and
                OPENAI_PROJECT_ID become the OpenAI-Organization / OpenAI-Project headers
Azure OpenAI    AZURE_OPENAI_API_KEY + AZURE_OPENAI_ENDPOINT + OPENAI_API_VERSION (replaces OpenAI as
                the default provider when set, as in `aigw run`); without the key, Entra ID with
                azure-identity's variables: AZURE_CLIENT_ID + AZURE_TENANT_ID + AZURE_CLIENT_SECRET
                + AZURE_OPENAI_ENDPOINT + OPENAI_API_VERSION
Anthropic       ANTHROPIC_API_KEY; ANTHROPIC_BASE_URL (default https://api.anthropic.com)
AWS Bedrock     AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN), or AWS_PROFILE (a
                profile of the AWS configuration files, SSO ones included), + AWS_REGION or
                AWS_DEFAULT_REGION (a profile without one of them configures nothing);
                AWS_ENDPOINT_URL_BEDROCK_RUNTIME overrides the endpoint
GCP Vertex AI   GOOGLE_CLOUD_PROJECT (or ANTHROPIC_VERTEX_PROJECT_ID) + GOOGLE_CLOUD_LOCATION (or
                CLOUD_ML_REGION), the variables of Google's and Anthropic's Vertex SDKs, with
                application default credentials: GOOGLE_APPLICATION_CREDENTIALS (which then requires
                both), gcloud's (`gcloud auth application-default login`) or the metadata server's;
                endpoint <region>-aiplatform.googleapis.com (aiplatform.googleapis.com for the
                region `global`)
==============  =====================================================================================

Model names are open-ended, so the one AIGatewayRoute routes by pattern (RegularExpression
matches on x-ai-eg-model, full-string, first match wins, in this order):

1. Bedrock model IDs, `[<geo>.]<vendor>.<model>` (`anthropic.claude-3-haiku-20240307-v1:0`,
   `us.amazon.nova-micro-v1:0`, `meta.llama3-8b-instruct-v1:0`)   -> Bedrock
2. `claude-.*`                                                     -> Anthropic, else Claude on
                                                                      Vertex AI (GCPAnthropic)
3. `gemini-.*`, `text-embedding-<3 digits>`, `text-multilingual-embedding-.*` -> Vertex AI (GCPVertexAI)
4. anything else (`.*`)                                            -> Azure OpenAI if configured,
                                                                      else OpenAI

A rule exists only for a configured provider; with neither OpenAI nor Azure there is no catch-all
and other model names get the gateway's 404 `model_not_found`.

Keys never appear in the YAML: each Secret holds a masked placeholder and a
`substitution.aigw.run/env/apiKey: <VAR>` annotation, so the key is read from the environment when
the file is loaded. Bedrock gets no Secret at all: its BackendSecurityPolicy has no credentials
file, so the translator uses the AWS default credential chain, which reads the same AWS_* variables
(and AWS_PROFILE's profile). Vertex AI gets none either: its GCPCredentials policy names no key, so
the translator uses Google's application default credentials (GOOGLE_APPLICATION_CREDENTIALS,
gcloud's, the metadata server).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import yaml

from aigw_contract import DEFAULT_SCHEMA_PREFIX, MODEL_HEADER

NAMESPACE = "default"
NAME = "aigw-run"
PORT = 1975
MASK = "********"
SUBSTITUTION_ENV = "substitution.aigw.run/env/"

# [<geo>.]<vendor>.<model>: Bedrock's model and inference-profile IDs. The geography is any
# lowercase word: listing them (us|eu|apac|...) made the RE2 program bigger than Envoy accepts.
BEDROCK_MODEL_PATTERN = (
    r"(?:[a-z-]+\.)?"
    r"(?:amazon|anthropic|ai21|cohere|deepseek|meta|mistral|openai|qwen|stability|twelvelabs|writer)\..+"
)
ANTHROPIC_MODEL_PATTERN = r"claude-.*"
# Vertex's embedding models are numbered (text-embedding-005); OpenAI's are not
# (text-embedding-3-small, text-embedding-ada-002), so they still reach OpenAI.
VERTEX_MODEL_PATTERN = r"(?:gemini-.*|text-embedding-[0-9]{3}|text-multilingual-embedding-.*)"
# The Anthropic Messages version Claude on Vertex takes.
VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"
ANY_MODEL_PATTERN = r".*"

PROVIDER_VARIABLES = (
    "OPENAI_API_KEY [OPENAI_BASE_URL]",
    "ANTHROPIC_API_KEY [ANTHROPIC_BASE_URL]",
    "AZURE_OPENAI_API_KEY (or AZURE_CLIENT_ID + AZURE_TENANT_ID + AZURE_CLIENT_SECRET) + AZURE_OPENAI_ENDPOINT"
    " + OPENAI_API_VERSION",
    "AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY [AWS_SESSION_TOKEN] (or AWS_PROFILE) + AWS_REGION (or"
    " AWS_DEFAULT_REGION)",
    "GOOGLE_CLOUD_PROJECT (or ANTHROPIC_VERTEX_PROJECT_ID) + GOOGLE_CLOUD_LOCATION (or CLOUD_ML_REGION)"
    " [GOOGLE_APPLICATION_CREDENTIALS]",
)


class AutoconfigError(ValueError):
    """The environment cannot make a configuration; the message is one line for the user."""


@dataclass(frozen=True)
class Endpoint:
    """Where a provider is reached, parsed from a base URL."""

    host: str
    port: int
    tls: bool
    path: str  # without slashes at either end; "" for none
    tls_hostname: str = ""  # the name to verify (and send as SNI) when it differs from host

    @property
    def sni(self) -> str:
        return self.tls_hostname or self.host

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


@dataclass(frozen=True)
class Provider:
    """One configured provider: what the generated resources are made of."""

    name: str  # resource names (Backend, AIServiceBackend, BackendSecurityPolicy, Secret)
    title: str  # for humans
    schema: dict[str, str]
    endpoint: Endpoint
    pattern: str  # the x-ai-eg-model regular expression routed to it
    auth: str | None  # BackendSecurityPolicy type
    key_variable: str | None = None  # the environment variable holding the key
    headers: tuple[tuple[str, str], ...] = ()
    region: str | None = None  # AWS, GCP
    project: str | None = None  # GCP
    entra: tuple[str, str] | None = None  # Azure Entra ID: (tenant id, client id)


def parse_base_url(url: str, variable: str) -> Endpoint:
    """scheme://host[:port][/path] -> Endpoint; AutoconfigError naming the variable otherwise."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise AutoconfigError(f"{variable}={url!r} is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise AutoconfigError(f"{variable}={url!r} must start with http:// or https://")
    if not parts.hostname:
        raise AutoconfigError(f"{variable}={url!r} has no host")
    if parts.query or parts.fragment:
        raise AutoconfigError(f"{variable}={url!r} must not have a query or fragment")
    host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
    tls = parts.scheme == "https"
    return Endpoint(
        host=host,
        port=port or (443 if tls else 80),
        tls=tls,
        path=parts.path.strip("/"),
        tls_hostname=parts.hostname if host != parts.hostname else "",
    )


def _get(env: Mapping[str, str], name: str) -> str:
    return (env.get(name) or "").strip()


def _require(env: Mapping[str, str], name: str, because: str) -> str:
    value = _get(env, name)
    if not value:
        raise AutoconfigError(f"{name} is required when {because} is set")
    return value


def providers(env: Mapping[str, str]) -> list[Provider]:
    """The providers the environment configures, in routing order (most specific pattern first)."""
    out: list[Provider] = []

    keys = _get(env, "AWS_ACCESS_KEY_ID") or _get(env, "AWS_SECRET_ACCESS_KEY")
    region = _get(env, "AWS_REGION") or _get(env, "AWS_DEFAULT_REGION")
    # A profile alone is no provider: many shells export AWS_PROFILE for everything, the region in
    # the profile's file (which this pure module does not read).
    if keys or (_get(env, "AWS_PROFILE") and region):
        because = "AWS_PROFILE"
        if keys:
            because = "AWS_ACCESS_KEY_ID" if _get(env, "AWS_ACCESS_KEY_ID") else "AWS_SECRET_ACCESS_KEY"
            _require(env, "AWS_ACCESS_KEY_ID", because)
            _require(env, "AWS_SECRET_ACCESS_KEY", because)
        if not region:
            raise AutoconfigError(f"AWS_REGION (or AWS_DEFAULT_REGION) is required when {because} is set")
        override = _get(env, "AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
        endpoint = (
            parse_base_url(override, "AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
            if override
            else Endpoint(f"bedrock-runtime.{region}.amazonaws.com", 443, True, "")
        )
        out.append(
            Provider(
                name="aws-bedrock",
                title="AWS Bedrock",
                schema={"name": "AWSBedrock"},
                endpoint=endpoint,
                pattern=BEDROCK_MODEL_PATTERN,
                auth="AWSCredentials",
                region=region,
            )
        )

    if _get(env, "ANTHROPIC_API_KEY"):
        variable = "ANTHROPIC_BASE_URL"
        endpoint = parse_base_url(_get(env, variable) or "https://api.anthropic.com", variable)
        # The Anthropic SDK's base URL stops before /v1 (it appends /v1/messages itself).
        prefix = f"{endpoint.path}/v1" if endpoint.path else ""
        out.append(
            Provider(
                name="anthropic",
                title="Anthropic",
                schema={"name": "Anthropic", **({"prefix": prefix} if prefix else {})},
                endpoint=endpoint,
                pattern=ANTHROPIC_MODEL_PATTERN,
                auth="AnthropicAPIKey",
                key_variable="ANTHROPIC_API_KEY",
            )
        )

    out.extend(_vertex(env, anthropic=bool(_get(env, "ANTHROPIC_API_KEY"))))

    azure = _azure(env)
    if azure is not None:
        out.append(azure)
    elif _get(env, "OPENAI_API_KEY"):
        variable = "OPENAI_BASE_URL"
        endpoint = parse_base_url(_get(env, variable) or "https://api.openai.com/v1", variable)
        # The OpenAI SDK's base URL includes the version (…/v1): its path is the schema prefix.
        # An empty path is left to the default prefix (v1).
        prefix = endpoint.path
        headers = tuple(
            (header, _get(env, variable))
            for header, variable in (("OpenAI-Organization", "OPENAI_ORG_ID"), ("OpenAI-Project", "OPENAI_PROJECT_ID"))
            if _get(env, variable)
        )
        out.append(
            Provider(
                name="openai",
                title="OpenAI",
                schema={"name": "OpenAI", **({"prefix": prefix} if prefix and prefix != DEFAULT_SCHEMA_PREFIX else {})},
                endpoint=endpoint,
                pattern=ANY_MODEL_PATTERN,
                auth="APIKey",
                key_variable="OPENAI_API_KEY",
                headers=headers,
            )
        )

    if not out:
        raise AutoconfigError(
            "no configuration PATH given and no provider found in the environment; set one of: "
            + "; ".join(PROVIDER_VARIABLES)
            + "".join(f" ({note})" for note in left_out(env))
        )
    return out


def _azure(env: Mapping[str, str]) -> Provider | None:
    """Azure OpenAI with its API key, else with Entra ID (a client secret, read by the translator
    through azure-identity) when AZURE_CLIENT_ID names an application for AZURE_OPENAI_ENDPOINT."""
    if _get(env, "AZURE_OPENAI_API_KEY"):
        because = "AZURE_OPENAI_API_KEY"
        auth, key_variable, entra = "AzureAPIKey", "AZURE_OPENAI_API_KEY", None
    elif _get(env, "AZURE_CLIENT_ID") and _get(env, "AZURE_OPENAI_ENDPOINT"):
        because = "AZURE_CLIENT_ID"
        entra = (_require(env, "AZURE_TENANT_ID", because), _get(env, "AZURE_CLIENT_ID"))
        auth, key_variable = "AzureCredentials", "AZURE_CLIENT_SECRET"
        _require(env, key_variable, because)
    else:
        return None
    url = _require(env, "AZURE_OPENAI_ENDPOINT", because)
    version = _require(env, "OPENAI_API_VERSION", because)
    return Provider(
        name="azure-openai",
        title="Azure OpenAI",
        schema={"name": "AzureOpenAI", "version": version},
        endpoint=parse_base_url(url, "AZURE_OPENAI_ENDPOINT"),
        pattern=ANY_MODEL_PATTERN,
        auth=auth,
        key_variable=key_variable,
        entra=entra,
    )


def _vertex(env: Mapping[str, str], *, anthropic: bool) -> list[Provider]:
    """Vertex AI when a project and a location are set, or GOOGLE_APPLICATION_CREDENTIALS (which
    requires both): Gemini and embeddings, and Claude on Vertex unless Anthropic's own API takes
    claude-.* (`anthropic`). Without GOOGLE_APPLICATION_CREDENTIALS the credentials are gcloud's or
    the metadata server's; a project alone (Cloud Shell sets one) configures nothing."""
    because = "GOOGLE_APPLICATION_CREDENTIALS"
    project = _get(env, "GOOGLE_CLOUD_PROJECT") or _get(env, "ANTHROPIC_VERTEX_PROJECT_ID")
    region = _get(env, "GOOGLE_CLOUD_LOCATION") or _get(env, "CLOUD_ML_REGION")
    if not _get(env, because) and not (project and region):
        return []
    if not project:
        raise AutoconfigError(
            f"GOOGLE_CLOUD_PROJECT (or ANTHROPIC_VERTEX_PROJECT_ID) is required when {because} is set"
        )
    if not region:
        raise AutoconfigError(f"GOOGLE_CLOUD_LOCATION (or CLOUD_ML_REGION) is required when {because} is set")
    host = "aiplatform.googleapis.com" if region == "global" else f"{region}-aiplatform.googleapis.com"
    gemini = Provider(
        name="gcp-vertex",
        title="Vertex AI",
        schema={"name": "GCPVertexAI"},
        endpoint=Endpoint(host, 443, True, ""),
        pattern=VERTEX_MODEL_PATTERN,
        auth="GCPCredentials",
        region=region,
        project=project,
    )
    if anthropic:
        return [gemini]
    claude = replace(
        gemini,
        name="gcp-anthropic",
        title="Claude on Vertex AI",
        schema={"name": "GCPAnthropic", "version": VERTEX_ANTHROPIC_VERSION},
        pattern=ANTHROPIC_MODEL_PATTERN,
    )
    return [claude, gemini]


def _meta(name: str) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE}


def _documents(configured: list[Provider], port: int) -> list[tuple[str | None, dict[str, Any]]]:
    """(comment, document) pairs, in file order."""
    docs: list[tuple[str | None, dict[str, Any]]] = [
        (
            None,
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "GatewayClass",
                "metadata": {"name": NAME},
                "spec": {"controllerName": "gateway.envoyproxy.io/gatewayclass-controller"},
            },
        ),
        (
            None,
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "metadata": _meta(NAME),
                "spec": {"gatewayClassName": NAME, "listeners": [{"name": "http", "protocol": "HTTP", "port": port}]},
            },
        ),
        (
            "Routing by model name: the first rule whose pattern matches the whole model name wins.",
            {
                "apiVersion": "aigateway.envoyproxy.io/v1beta1",
                "kind": "AIGatewayRoute",
                "metadata": _meta(NAME),
                "spec": {
                    "parentRefs": [{"name": NAME, "kind": "Gateway", "group": "gateway.networking.k8s.io"}],
                    "rules": [
                        {
                            "matches": [
                                {"headers": [{"type": "RegularExpression", "name": MODEL_HEADER, "value": p.pattern}]}
                            ],
                            "backendRefs": [{"name": p.name}],
                            "timeouts": {"request": "120s"},
                        }
                        for p in configured
                    ],
                    # Token counts in dynamic metadata (io.envoy.ai_gateway), e.g. for access logs.
                    "llmRequestCosts": [
                        {"metadataKey": "llm_input_token", "type": "InputToken"},
                        {"metadataKey": "llm_output_token", "type": "OutputToken"},
                        {"metadataKey": "llm_total_token", "type": "TotalToken"},
                    ],
                },
            },
        ),
    ]
    for p in configured:
        docs.extend(_provider_documents(p))
    return docs


def _provider_documents(p: Provider) -> list[tuple[str | None, dict[str, Any]]]:
    e = p.endpoint
    endpoint = (
        {"ip": {"address": e.host, "port": e.port}} if e.is_ip else {"fqdn": {"hostname": e.host, "port": e.port}}
    )
    service: dict[str, Any] = {
        "schema": dict(p.schema),
        "backendRef": {"name": p.name, "kind": "Backend", "group": "gateway.envoyproxy.io"},
    }
    if p.headers:
        service["headerMutation"] = {"set": [{"name": n, "value": v} for n, v in p.headers]}
    default_port = 443 if e.tls else 80
    where = f"{'https' if e.tls else 'http'}://{e.host}" + (f":{e.port}" if e.port != default_port else "")
    docs: list[tuple[str | None, dict[str, Any]]] = [
        (
            f"{p.title}: {where}/{e.path}".rstrip("/"),
            {
                "apiVersion": "aigateway.envoyproxy.io/v1beta1",
                "kind": "AIServiceBackend",
                "metadata": _meta(p.name),
                "spec": service,
            },
        ),
        (
            None,
            {
                "apiVersion": "gateway.envoyproxy.io/v1alpha1",
                "kind": "Backend",
                "metadata": _meta(p.name),
                "spec": {"endpoints": [endpoint]},
            },
        ),
    ]
    if e.tls:
        docs.append(
            (
                None,
                {
                    "apiVersion": "gateway.networking.k8s.io/v1",
                    "kind": "BackendTLSPolicy",
                    "metadata": _meta(f"{p.name}-tls"),
                    "spec": {
                        "targetRefs": [{"group": "gateway.envoyproxy.io", "kind": "Backend", "name": p.name}],
                        "validation": {"wellKnownCACertificates": "System", "hostname": e.sni},
                    },
                },
            )
        )
    policy: dict[str, Any] = {
        "targetRefs": [{"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": p.name}],
        "type": p.auth,
    }
    if p.auth == "AWSCredentials":
        # No credentials file: the AWS default credential chain reads AWS_ACCESS_KEY_ID,
        # AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN from the environment, or AWS_PROFILE's profile.
        policy["awsCredentials"] = {"region": p.region}
    elif p.auth == "GCPCredentials":
        # No key: Google's application default credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's).
        policy["gcpCredentials"] = {"projectName": p.project, "region": p.region}
    elif p.auth == "AzureCredentials":
        assert p.entra is not None
        tenant, client = p.entra
        policy["azureCredentials"] = {
            "clientID": client,
            "tenantID": tenant,
            "clientSecretRef": {"name": f"{p.name}-apikey"},
        }
    else:
        field = {"APIKey": "apiKey", "AnthropicAPIKey": "anthropicAPIKey", "AzureAPIKey": "azureAPIKey"}[p.auth or ""]
        policy[field] = {"secretRef": {"name": f"{p.name}-apikey"}}
    docs.append(
        (
            None,
            {
                "apiVersion": "aigateway.envoyproxy.io/v1beta1",
                "kind": "BackendSecurityPolicy",
                "metadata": _meta(f"{p.name}-apikey" if p.key_variable else f"{p.name}-credentials"),
                "spec": policy,
            },
        )
    )
    if p.key_variable:
        # The Secret key each policy type reads (Envoy AI Gateway's names).
        key = "client-secret" if p.auth == "AzureCredentials" else "apiKey"
        docs.append(
            (
                f"The key is read from ${p.key_variable} when the file is loaded; the file never holds it.",
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        **_meta(f"{p.name}-apikey"),
                        "annotations": {f"{SUBSTITUTION_ENV}{key}": p.key_variable},
                    },
                    "type": "Opaque",
                    "stringData": {key: MASK},
                },
            )
        )
    return docs


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=200)


def generate(env: Mapping[str, str], port: int = PORT) -> str:
    """The YAML configuration for the providers configured in `env` (see the module docstring), its
    listener on `port`."""
    configured = providers(env)
    header = [
        "# Generated by `aigw-xds run` from environment variables; keys are never written here.",
        f"# Providers: {', '.join(p.title for p in configured)}.",
        "# Model routing (x-ai-eg-model, whole-name regular expressions, first match wins):",
        *(f"#   {p.pattern:<12} -> {p.title}" for p in configured if p.pattern != BEDROCK_MODEL_PATTERN),
    ]
    if any(p.pattern == BEDROCK_MODEL_PATTERN for p in configured):
        header.insert(3, "#   [<geo>.]<vendor>.<model> (Bedrock model IDs) -> AWS Bedrock")
    if _get(env, "OPENAI_API_KEY") and any(p.name == "azure-openai" for p in configured):
        header.append("# OPENAI_API_KEY is ignored: Azure OpenAI takes its place when it is configured.")
    header.extend(f"# {note}." for note in left_out(env))
    parts = []
    for comment, doc in _documents(configured, port):
        parts.append((f"# {comment}\n" if comment else "") + _dump(doc))
    return "\n".join(header) + "\n" + "---\n".join(parts)


def summary(env: Mapping[str, str]) -> str:
    """One line naming the configured providers, for the console."""
    return ", ".join(p.title for p in providers(env))


def left_out(env: Mapping[str, str]) -> list[str]:
    """What the environment half-configures and is left out by design (a profile or a project
    alone, which shells and Cloud Shell export for everything): said, so that a user who meant
    it knows what is missing, and where those models go instead."""
    notes = []
    aws_keys = _get(env, "AWS_ACCESS_KEY_ID") or _get(env, "AWS_SECRET_ACCESS_KEY")
    aws_region = _get(env, "AWS_REGION") or _get(env, "AWS_DEFAULT_REGION")
    if _get(env, "AWS_PROFILE") and not aws_keys and not aws_region:
        notes.append("AWS_PROFILE is set without AWS_REGION (or AWS_DEFAULT_REGION): AWS Bedrock is not configured")
    project = next((name for name in ("GOOGLE_CLOUD_PROJECT", "ANTHROPIC_VERTEX_PROJECT_ID") if _get(env, name)), "")
    location = next((name for name in ("GOOGLE_CLOUD_LOCATION", "CLOUD_ML_REGION") if _get(env, name)), "")
    if not _get(env, "GOOGLE_APPLICATION_CREDENTIALS") and bool(project) != bool(location):
        have, lack = (
            (project, "GOOGLE_CLOUD_LOCATION (or CLOUD_ML_REGION)")
            if project
            else (location, "GOOGLE_CLOUD_PROJECT (or ANTHROPIC_VERTEX_PROJECT_ID)")
        )
        notes.append(f"{have} is set without {lack}: Vertex AI is not configured")
    return notes
