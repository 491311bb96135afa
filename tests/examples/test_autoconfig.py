"""`aigw-xds run` without PATH: the configuration generated from provider environment variables."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from aigw_xds.api.decode import decode_text
from aigw_xds.autoconfig import (
    ANTHROPIC_MODEL_PATTERN,
    ANY_MODEL_PATTERN,
    BEDROCK_MODEL_PATTERN,
    VERTEX_MODEL_PATTERN,
    AutoconfigError,
    Endpoint,
    generate,
    parse_base_url,
)
from aigw_xds.compile import compile_resources
from aigw_xds.resources import build_resource_set

OPENAI = {"OPENAI_API_KEY": "sk-openai-secret"}
ANTHROPIC = {"ANTHROPIC_API_KEY": "sk-ant-secret"}
AZURE = {
    "AZURE_OPENAI_API_KEY": "azure-secret",
    "AZURE_OPENAI_ENDPOINT": "https://my-resource.openai.azure.com/",
    "OPENAI_API_VERSION": "2024-10-21",
}
# azure-identity's EnvironmentCredential variables: Entra ID instead of an API key.
AZURE_ENTRA = {
    "AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
    "AZURE_TENANT_ID": "66666666-7777-8888-9999-000000000000",
    "AZURE_CLIENT_SECRET": "entra-client-secret",
    "AZURE_OPENAI_ENDPOINT": "https://my-resource.openai.azure.com/",
    "OPENAI_API_VERSION": "2024-10-21",
}
AWS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "aws-secret", "AWS_REGION": "eu-west-1"}
GCP = {
    "GOOGLE_APPLICATION_CREDENTIALS": "/keys/sa.json",
    "GOOGLE_CLOUD_PROJECT": "my-project",
    "GOOGLE_CLOUD_LOCATION": "us-east5",
}


def _docs(env: dict[str, str]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(generate(env))}


def _rules(env: dict[str, str]) -> list[tuple[str, str]]:
    route = _docs(env)[("AIGatewayRoute", "aigw-run")]
    return [
        (rule["matches"][0]["headers"][0]["value"], rule["backendRefs"][0]["name"]) for rule in route["spec"]["rules"]
    ]


def _endpoint(env: dict[str, str], backend: str) -> dict:
    [endpoint] = _docs(env)[("Backend", backend)]["spec"]["endpoints"]
    return endpoint


# env -> (rules in order, {backend: (endpoint, TLS?, schema)})
CASES = {
    "openai": (
        OPENAI,
        [(ANY_MODEL_PATTERN, "openai")],
        {"openai": ({"fqdn": {"hostname": "api.openai.com", "port": 443}}, True, {"name": "OpenAI"})},
    ),
    "openai-compatible-local": (
        {**OPENAI, "OPENAI_BASE_URL": "http://localhost:11434/v1"},
        [(ANY_MODEL_PATTERN, "openai")],
        {"openai": ({"ip": {"address": "127.0.0.1", "port": 11434}}, False, {"name": "OpenAI"})},
    ),
    "openai-prefix": (
        {**OPENAI, "OPENAI_BASE_URL": "https://openrouter.ai/api/v1"},
        [(ANY_MODEL_PATTERN, "openai")],
        {
            "openai": (
                {"fqdn": {"hostname": "openrouter.ai", "port": 443}},
                True,
                {"name": "OpenAI", "prefix": "api/v1"},
            )
        },
    ),
    "anthropic": (
        ANTHROPIC,
        [(ANTHROPIC_MODEL_PATTERN, "anthropic")],
        {"anthropic": ({"fqdn": {"hostname": "api.anthropic.com", "port": 443}}, True, {"name": "Anthropic"})},
    ),
    "anthropic-local": (
        {**ANTHROPIC, "ANTHROPIC_BASE_URL": "http://127.0.0.1:8080"},
        [(ANTHROPIC_MODEL_PATTERN, "anthropic")],
        {"anthropic": ({"ip": {"address": "127.0.0.1", "port": 8080}}, False, {"name": "Anthropic"})},
    ),
    "azure": (
        AZURE,
        [(ANY_MODEL_PATTERN, "azure-openai")],
        {
            "azure-openai": (
                {"fqdn": {"hostname": "my-resource.openai.azure.com", "port": 443}},
                True,
                {"name": "AzureOpenAI", "version": "2024-10-21"},
            )
        },
    ),
    "azure-replaces-openai": (
        {**OPENAI, **AZURE},
        [(ANY_MODEL_PATTERN, "azure-openai")],
        {},
    ),
    "bedrock": (
        AWS,
        [(BEDROCK_MODEL_PATTERN, "aws-bedrock")],
        {
            "aws-bedrock": (
                {"fqdn": {"hostname": "bedrock-runtime.eu-west-1.amazonaws.com", "port": 443}},
                True,
                {"name": "AWSBedrock"},
            )
        },
    ),
    "vertex": (
        GCP,
        [(ANTHROPIC_MODEL_PATTERN, "gcp-anthropic"), (VERTEX_MODEL_PATTERN, "gcp-vertex")],
        {
            "gcp-vertex": (
                {"fqdn": {"hostname": "us-east5-aiplatform.googleapis.com", "port": 443}},
                True,
                {"name": "GCPVertexAI"},
            ),
            "gcp-anthropic": (
                {"fqdn": {"hostname": "us-east5-aiplatform.googleapis.com", "port": 443}},
                True,
                {"name": "GCPAnthropic", "version": "vertex-2023-10-16"},
            ),
        },
    ),
    "vertex-global-anthropic-sdk-variables": (
        {"GOOGLE_APPLICATION_CREDENTIALS": "/k.json", "ANTHROPIC_VERTEX_PROJECT_ID": "p", "CLOUD_ML_REGION": "global"},
        [(ANTHROPIC_MODEL_PATTERN, "gcp-anthropic"), (VERTEX_MODEL_PATTERN, "gcp-vertex")],
        {
            "gcp-vertex": (
                {"fqdn": {"hostname": "aiplatform.googleapis.com", "port": 443}},
                True,
                {"name": "GCPVertexAI"},
            )
        },
    ),
    "vertex-with-gclouds-credentials": (
        {"GOOGLE_CLOUD_PROJECT": "my-project", "GOOGLE_CLOUD_LOCATION": "us-east5"},
        [(ANTHROPIC_MODEL_PATTERN, "gcp-anthropic"), (VERTEX_MODEL_PATTERN, "gcp-vertex")],
        {},
    ),
    "an-aws-profile-alone-is-no-bedrock": (  # exported for everything, its region in ~/.aws/config
        {**OPENAI, "AWS_PROFILE": "work"},
        [(ANY_MODEL_PATTERN, "openai")],
        {},
    ),
    "a-google-project-alone-is-no-vertex": (
        {**OPENAI, "GOOGLE_CLOUD_PROJECT": "cloud-shells-project"},
        [(ANY_MODEL_PATTERN, "openai")],
        {},
    ),
    "bedrock-with-a-profile": (
        {"AWS_PROFILE": "sso-dev", "AWS_REGION": "us-east-1"},
        [(BEDROCK_MODEL_PATTERN, "aws-bedrock")],
        {
            "aws-bedrock": (
                {"fqdn": {"hostname": "bedrock-runtime.us-east-1.amazonaws.com", "port": 443}},
                True,
                {"name": "AWSBedrock"},
            )
        },
    ),
    "vertex-beside-anthropic-and-openai": (
        {**GCP, **ANTHROPIC, **OPENAI},
        [(ANTHROPIC_MODEL_PATTERN, "anthropic"), (VERTEX_MODEL_PATTERN, "gcp-vertex"), (ANY_MODEL_PATTERN, "openai")],
        {},
    ),
    "all": (
        {**OPENAI, **ANTHROPIC, **AWS, "AWS_SESSION_TOKEN": "session-secret"},
        [(BEDROCK_MODEL_PATTERN, "aws-bedrock"), (ANTHROPIC_MODEL_PATTERN, "anthropic"), (ANY_MODEL_PATTERN, "openai")],
        {},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_environment_to_resources(case: str):
    env, rules, backends = CASES[case]
    assert _rules(env) == rules
    docs = _docs(env)
    for backend, (endpoint, tls, schema) in backends.items():
        assert _endpoint(env, backend) == endpoint
        assert (("BackendTLSPolicy", f"{backend}-tls") in docs) is tls
        assert docs[("AIServiceBackend", backend)]["spec"]["schema"] == schema
    gateway = docs[("Gateway", "aigw-run")]
    assert gateway["metadata"]["namespace"] == "default"
    assert [listener["port"] for listener in gateway["spec"]["listeners"]] == [1975]


@pytest.mark.parametrize("case", sorted(CASES))
def test_generated_config_compiles_cleanly_and_holds_no_key(case: str):
    env = CASES[case][0]
    text = generate(env)
    for variable, value in env.items():
        if "KEY" in variable or "SECRET" in variable or "TOKEN" in variable:
            assert value not in text, variable
    result = compile_resources(build_resource_set(decode_text(text, "aigw-run.yaml", env)))
    assert [str(d) for d in result.diagnostics] == []
    assert list(result.gateways) == ["default/aigw-run"]


def test_keys_come_from_substitution_annotations():
    docs = _docs({**OPENAI, **ANTHROPIC, **AZURE})
    for secret, variable in (
        ("anthropic-apikey", "ANTHROPIC_API_KEY"),
        ("azure-openai-apikey", "AZURE_OPENAI_API_KEY"),
    ):
        metadata = docs[("Secret", secret)]["metadata"]
        assert metadata["annotations"] == {"substitution.aigw.run/env/apiKey": variable}
        assert docs[("Secret", secret)]["stringData"] == {"apiKey": "********"}
    assert ("Secret", "openai-apikey") not in docs  # Azure replaced OpenAI
    aws = _docs(AWS)
    assert [k for k in aws if k[0] == "Secret"] == []  # the AWS default credential chain reads the env
    assert aws[("BackendSecurityPolicy", "aws-bedrock-credentials")]["spec"]["awsCredentials"] == {
        "region": "eu-west-1"
    }


def test_vertex_uses_application_default_credentials_with_the_project_and_region():
    docs = _docs(GCP)
    assert [k for k in docs if k[0] == "Secret"] == []  # google-auth reads GOOGLE_APPLICATION_CREDENTIALS itself
    for backend in ("gcp-vertex", "gcp-anthropic"):
        policy = docs[("BackendSecurityPolicy", f"{backend}-credentials")]["spec"]
        assert policy["type"] == "GCPCredentials"
        assert policy["gcpCredentials"] == {"projectName": "my-project", "region": "us-east5"}
    assert "/keys/sa.json" not in generate(GCP)


def test_gemini_embeddings_and_claude_route_to_vertex():
    def first_backend(model: str) -> str:
        return next((backend for pattern, backend in _rules(GCP) if re.fullmatch(pattern, model)), "none")

    assert first_backend("gemini-2.5-flash") == "gcp-vertex"
    assert first_backend("text-embedding-005") == "gcp-vertex"
    assert first_backend("claude-3-5-haiku@20241022") == "gcp-anthropic"
    assert first_backend("gpt-4o") == "none"  # no OpenAI configured: no catch-all


def test_openais_embedding_models_still_reach_openai_beside_vertex():
    """Vertex's embedding models are numbered (text-embedding-005); OpenAI's are not, and a user
    with both providers configured must reach each with its own model names."""
    rules = _rules({**OPENAI, **GCP})

    def first_backend(model: str) -> str:
        return next(backend for pattern, backend in rules if re.fullmatch(pattern, model))

    assert first_backend("text-embedding-005") == "gcp-vertex"
    assert first_backend("text-multilingual-embedding-002") == "gcp-vertex"
    assert first_backend("text-embedding-3-small") == "openai"
    assert first_backend("text-embedding-ada-002") == "openai"


def test_openai_organization_and_project_become_headers():
    env = {**OPENAI, "OPENAI_ORG_ID": "org-1", "OPENAI_PROJECT_ID": "proj-1"}
    spec = _docs(env)[("AIServiceBackend", "openai")]["spec"]
    assert spec["headerMutation"] == {
        "set": [{"name": "OpenAI-Organization", "value": "org-1"}, {"name": "OpenAI-Project", "value": "proj-1"}]
    }


def test_compiled_routes_send_models_to_the_right_backend():
    env = {**OPENAI, **ANTHROPIC, **AWS}
    result = compile_resources(build_resource_set(decode_text(generate(env), "aigw-run.yaml", env)))
    rules = result.gateways["default/aigw-run"].rules

    def backend_for(model: str) -> str:
        for rule in rules:
            if all(re.fullmatch(h.value, model) for match in rule.matches for h in match):
                return rule.backends[0].name.split("/")[1]
        return "none"

    assert backend_for("gpt-4o-mini") == "openai"
    assert backend_for("claude-3-5-haiku-latest") == "anthropic"
    assert backend_for("anthropic.claude-3-haiku-20240307-v1:0") == "aws-bedrock"
    assert backend_for("us.amazon.nova-micro-v1:0") == "aws-bedrock"
    assert backend_for("llama3.1:8b") == "openai"


def test_azure_with_entra_id_compiles_into_azure_credentials_with_the_secret_from_the_environment():
    """Without AZURE_OPENAI_API_KEY, an application's client secret (azure-identity's variables)
    gives the AzureCredentials policy; the secret reaches the translator only, never the YAML."""
    env = {**OPENAI, **AZURE_ENTRA}
    docs = _docs(env)
    policy = docs[("BackendSecurityPolicy", "azure-openai-apikey")]["spec"]
    assert policy["type"] == "AzureCredentials"
    assert policy["azureCredentials"] == {
        "clientID": AZURE_ENTRA["AZURE_CLIENT_ID"],
        "tenantID": AZURE_ENTRA["AZURE_TENANT_ID"],
        "clientSecretRef": {"name": "azure-openai-apikey"},
    }
    secret = docs[("Secret", "azure-openai-apikey")]
    assert secret["metadata"]["annotations"] == {"substitution.aigw.run/env/client-secret": "AZURE_CLIENT_SECRET"}
    assert ("Secret", "openai-apikey") not in docs  # Azure takes OpenAI's place, as with a key
    text = generate(env)
    assert AZURE_ENTRA["AZURE_CLIENT_SECRET"] not in text
    assert "OPENAI_API_KEY is ignored" in text
    result = compile_resources(build_resource_set(decode_text(text, "aigw-run.yaml", env)))
    assert [str(d) for d in result.diagnostics] == []
    [azure] = [b for b in result.gateways["default/aigw-run"].translator.backends if b.schema.name == "AzureOpenAI"]
    creds = azure.auth.azure_credentials
    assert (creds.client_id, creds.tenant_id, creds.client_secret) == (
        AZURE_ENTRA["AZURE_CLIENT_ID"],
        AZURE_ENTRA["AZURE_TENANT_ID"],
        AZURE_ENTRA["AZURE_CLIENT_SECRET"],
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"AZURE_CLIENT_ID": "c", "AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com"},
            "AZURE_TENANT_ID is required when AZURE_CLIENT_ID is set",
        ),
        (
            {"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com"},
            "AZURE_CLIENT_SECRET is required when AZURE_CLIENT_ID is set",
        ),
        ({}, "no configuration PATH given and no provider found in the environment; set one of: OPENAI_API_KEY"),
        ({"OPENAI_API_KEY": ""}, "ANTHROPIC_API_KEY"),
        ({"AZURE_OPENAI_API_KEY": "k"}, "AZURE_OPENAI_ENDPOINT is required when AZURE_OPENAI_API_KEY is set"),
        (
            {"AZURE_OPENAI_API_KEY": "k", "AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com"},
            "OPENAI_API_VERSION is required when AZURE_OPENAI_API_KEY is set",
        ),
        ({"AWS_ACCESS_KEY_ID": "a"}, "AWS_SECRET_ACCESS_KEY is required when AWS_ACCESS_KEY_ID is set"),
        (
            {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"},
            "AWS_REGION (or AWS_DEFAULT_REGION) is required when AWS_ACCESS_KEY_ID is set",
        ),
        (
            {"GOOGLE_APPLICATION_CREDENTIALS": "/k.json"},
            "GOOGLE_CLOUD_PROJECT (or ANTHROPIC_VERTEX_PROJECT_ID) is required when GOOGLE_APPLICATION_CREDENTIALS",
        ),
        (
            {"GOOGLE_APPLICATION_CREDENTIALS": "/k.json", "GOOGLE_CLOUD_PROJECT": "p"},
            "GOOGLE_CLOUD_LOCATION (or CLOUD_ML_REGION) is required when GOOGLE_APPLICATION_CREDENTIALS is set",
        ),
        ({**OPENAI, "OPENAI_BASE_URL": "api.openai.com/v1"}, "OPENAI_BASE_URL='api.openai.com/v1' must start with"),
        ({**ANTHROPIC, "ANTHROPIC_BASE_URL": "http://:80"}, "ANTHROPIC_BASE_URL='http://:80' has no host"),
        ({**OPENAI, "OPENAI_BASE_URL": "http://h:99999/v1"}, "OPENAI_BASE_URL='http://h:99999/v1' is not a valid URL"),
    ],
)
def test_missing_or_bad_variables_are_one_line_errors(env: dict[str, str], message: str):
    with pytest.raises(AutoconfigError) as caught:
        generate(env)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_aws_default_region_and_endpoint_override():
    env = {**AWS, "AWS_REGION": "", "AWS_DEFAULT_REGION": "us-west-2"}
    assert _endpoint(env, "aws-bedrock") == {
        "fqdn": {"hostname": "bedrock-runtime.us-west-2.amazonaws.com", "port": 443}
    }
    env["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] = "http://127.0.0.1:4566"
    assert _endpoint(env, "aws-bedrock") == {"ip": {"address": "127.0.0.1", "port": 4566}}


def test_parse_base_url():
    assert parse_base_url("https://api.openai.com/v1/", "V") == Endpoint("api.openai.com", 443, True, "v1")
    assert parse_base_url("http://10.0.0.5:8000", "V").is_ip
    assert parse_base_url("http://[::1]:8000/v1", "V").host == "::1"
    local_tls = parse_base_url("https://localhost:8443/v1", "V")
    assert (local_tls.host, local_tls.sni, local_tls.is_ip) == ("127.0.0.1", "localhost", True)
    tls_policy = _docs({**OPENAI, "OPENAI_BASE_URL": "https://localhost:8443/v1"})[("BackendTLSPolicy", "openai-tls")]
    assert tls_policy["spec"]["validation"]["hostname"] == "localhost"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "AZURE_", "AWS_", "GOOGLE_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "aigw_xds", "run", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_print_config_prints_the_yaml_and_never_a_key():
    env = {**OPENAI, **ANTHROPIC, **AWS, "AWS_SESSION_TOKEN": "session-secret"}
    result = _cli("--print-config", env=env)
    assert result.returncode == 0, result.stderr
    for secret in ("sk-openai-secret", "sk-ant-secret", "AKIAEXAMPLE", "aws-secret", "session-secret"):
        assert secret not in result.stdout + result.stderr
    assert result.stdout == generate(env)
    assert "substitution.aigw.run/env/apiKey: OPENAI_API_KEY" in result.stdout


def test_run_without_path_or_provider_is_one_error_line():
    result = _cli(env={})
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("aigw-xds: error: no configuration PATH given and no provider found in the environment")
    assert "OPENAI_API_KEY" in line and "AWS_ACCESS_KEY_ID" in line


def test_a_half_configured_provider_left_out_is_said():
    """A project or a profile alone configures nothing (shells export them for everything), and a
    new user who meant it saw only "for OpenAI" while their Gemini requests went to OpenAI."""
    env = {**OPENAI, "GOOGLE_CLOUD_PROJECT": "my-project", "AWS_PROFILE": "work"}
    result = _cli("--print-config", env=env)
    assert result.returncode == 0, result.stderr
    assert "# GOOGLE_CLOUD_PROJECT is set without GOOGLE_CLOUD_LOCATION (or CLOUD_ML_REGION): Vertex AI is not" in (
        result.stdout
    )
    assert "# AWS_PROFILE is set without AWS_REGION (or AWS_DEFAULT_REGION): AWS Bedrock is not" in result.stdout
    alone = _cli(env={"GOOGLE_CLOUD_LOCATION": "us-east5"})
    assert alone.returncode == 1
    assert "(GOOGLE_CLOUD_LOCATION is set without GOOGLE_CLOUD_PROJECT (or ANTHROPIC_VERTEX_PROJECT_ID): Vertex AI" in (
        alone.stderr
    )
    claude_code = _cli("--print-config", env={**OPENAI, "ANTHROPIC_VERTEX_PROJECT_ID": "p"})  # Claude Code's name
    assert "# ANTHROPIC_VERTEX_PROJECT_ID is set without GOOGLE_CLOUD_LOCATION" in claude_code.stdout


def test_print_config_takes_no_path():
    result = _cli("examples/quickstart", "--print-config", env=OPENAI)
    assert result.returncode == 1 and "--print-config" in result.stderr


def test_port_moves_the_generated_listener_and_is_refused_with_a_path(tmp_path):
    """From a new-user trial: with port 1975 taken, the configuration generated without PATH could
    not be moved (only by writing it out and editing it). --port moves it; with PATH it is an error,
    the file's Gateway naming its own port."""
    result = _cli("--print-config", "--port", "28111", env=OPENAI)
    assert result.returncode == 0, result.stderr
    assert result.stdout == generate(OPENAI, 28111)
    [gateway] = [d for d in yaml.safe_load_all(result.stdout) if d["kind"] == "Gateway"]
    assert gateway["spec"]["listeners"][0]["port"] == 28111
    (tmp_path / "x.yaml").write_text("")
    refused = _cli(str(tmp_path), "--port", "28111", env=OPENAI)
    assert refused.returncode == 1
    assert "--port is the listener port of the configuration generated without PATH" in refused.stderr
