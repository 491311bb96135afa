"""Fake LLM providers (stand-ins for OpenAI, Azure OpenAI, Anthropic, AWS Bedrock, Cohere, Vertex AI) and a
fake MCP server for tests.

Each fake is an aiohttp server on loopback that validates requests like the real provider and
answers deterministically. ``common`` documents the shared controls (request record, fault
injection headers, ``fail_next``/``always_fail``, thread and async runners).

    from aigw_fakes import OpenAIFake
    with OpenAIFake(api_key="sk-test", name="primary") as fake:   # background thread
        client = openai.OpenAI(api_key="sk-test", base_url=fake.url)

The servers need the `fakes` extra (`pip install 'aigw-xds[fakes]'`, i.e. aiohttp); this package
is imported lazily so that `annotated` (what `aigw-xds run` calls) and `rewrite` (what
examples/with_fakes.py calls) load without it. This package never imports aigw_translator: an
oracle shares no code with what it checks.

    annotated   Backends annotated `aigw-xds.dev/fake-provider`: started by `aigw-xds run`
    rewrite     an example's YAML with its provider Backends pointed at loopback fakes
    common      the aiohttp server, request record, fault injection, SSE and multipart helpers
    openai, azure_openai, anthropic, bedrock, cohere   one fake per provider API (bedrock: SigV4, event stream)
    entra       Entra ID's token endpoint (client credentials), whose tokens azure_openai can accept
    oidc_issuer an OIDC provider's client-credentials grant (RS256 JWTs, discovery, JWKS, verify())
    aws_sts     STS AssumeRoleWithWebIdentity (verifies oidc_issuer tokens; bedrock accepts its keys)
    vertex      Vertex AI: Gemini generateContent/stream, embeddings :predict, Claude rawPredict
    ext_authz   an external authorization service (Envoy's gRPC Authorization service, or HTTP)
    mcp         an MCP server (Streamable HTTP at /mcp: tools, a prompt, a resource, sessions), the
                backend of MCPRoute tests
    google_auth Google's token services (service-account JWT grant, STS, generateAccessToken), whose
                tokens vertex accepts; service_account_key makes test keys naming it
    __main__    `python -m aigw_fakes --provider openai ...`: one fake as a process
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .anthropic import AnthropicFake
    from .aws_sts import AWSSTSFake
    from .azure_openai import AzureOpenAIFake
    from .bedrock import BedrockFake
    from .cohere import CohereFake
    from .common import FakeProvider, RecordedRequest
    from .entra import EntraFake
    from .ext_authz import ExtAuthzFake
    from .google_auth import GoogleAuthFake
    from .mcp import McpFake
    from .oidc_issuer import OIDCIssuerFake
    from .openai import OpenAIFake
    from .vertex import VertexFake

# name -> the module that defines it (imported on first use: the servers need aiohttp).
_LAZY = {
    "AnthropicFake": ".anthropic",
    "AWSSTSFake": ".aws_sts",
    "AzureOpenAIFake": ".azure_openai",
    "BedrockFake": ".bedrock",
    "CohereFake": ".cohere",
    "EntraFake": ".entra",
    "ExtAuthzFake": ".ext_authz",
    "GoogleAuthFake": ".google_auth",
    "McpFake": ".mcp",
    "OIDCIssuerFake": ".oidc_issuer",
    "FakeProvider": ".common",
    "RecordedRequest": ".common",
    "OpenAIFake": ".openai",
    "VertexFake": ".vertex",
}


def providers() -> dict[str, type[FakeProvider]]:
    """Provider name (as `--provider` and the fake-provider annotation spell it) -> its fake."""
    from .anthropic import AnthropicFake
    from .azure_openai import AzureOpenAIFake
    from .bedrock import BedrockFake
    from .cohere import CohereFake
    from .mcp import McpFake
    from .openai import OpenAIFake
    from .vertex import VertexFake

    return {
        "openai": OpenAIFake,
        "azure": AzureOpenAIFake,
        "azure-openai": AzureOpenAIFake,
        "anthropic": AnthropicFake,
        "bedrock": BedrockFake,
        "cohere": CohereFake,
        "vertex": VertexFake,
        "mcp": McpFake,
    }


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AWSSTSFake",
    "AnthropicFake",
    "AzureOpenAIFake",
    "BedrockFake",
    "CohereFake",
    "EntraFake",
    "ExtAuthzFake",
    "FakeProvider",
    "GoogleAuthFake",
    "McpFake",
    "OIDCIssuerFake",
    "OpenAIFake",
    "RecordedRequest",
    "VertexFake",
    "providers",
]
