"""Registry: the translator for a (client endpoint x backend schema) pair."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..endpoints import COHERE_ENDPOINTS, OPENAI_ENDPOINTS, Endpoint
from . import (
    anthropic_anthropic,
    anthropic_bedrock,
    anthropic_openai,
    bedrock_anthropic,
    bedrock_count_tokens,
    bedrock_embeddings,
    cohere_cohere,
    gcp_anthropic,
    openai_anthropic,
    openai_bedrock,
    openai_gemini,
    openai_openai,
)
from .base import (
    InvalidRequest,
    RequestContext,
    ResponseContext,
    ResponseTranslator,
    TranslatedRequest,
    TranslationError,
)

__all__ = [
    "InvalidRequest",
    "Pair",
    "RequestContext",
    "ResponseContext",
    "ResponseTranslator",
    "TranslatedRequest",
    "TranslationError",
    "get_pair",
]

OPENAI = "OpenAI"
AZURE_OPENAI = "AzureOpenAI"
ANTHROPIC = "Anthropic"
AWS_BEDROCK = "AWSBedrock"
AWS_ANTHROPIC = "AWSAnthropic"
GCP_VERTEX_AI = "GCPVertexAI"
GCP_ANTHROPIC = "GCPAnthropic"
COHERE = "Cohere"


@dataclass(frozen=True)
class Pair:
    request: Callable[[RequestContext, bytes], TranslatedRequest]
    response: type[ResponseTranslator]
    stream: type[ResponseTranslator]

    def response_translator(self, ctx: ResponseContext) -> ResponseTranslator:
        return (self.stream if ctx.stream else self.response)(ctx)


_OPENAI_PASSTHROUGH = Pair(openai_openai.translate_request, openai_openai.OpenAIResponse, openai_openai.OpenAIResponse)
_AZURE = Pair(openai_openai.translate_request_azure, openai_openai.OpenAIResponse, openai_openai.OpenAIResponse)
_CHAT_TO_ANTHROPIC = Pair(
    openai_anthropic.translate_request,
    openai_anthropic.AnthropicToOpenAIResponse,
    openai_anthropic.AnthropicToOpenAIStream,
)
_CHAT_TO_BEDROCK = Pair(
    openai_bedrock.translate_request,
    openai_bedrock.BedrockToOpenAIResponse,
    openai_bedrock.BedrockToOpenAIStream,
)
_CHAT_TO_AWS_ANTHROPIC = Pair(
    bedrock_anthropic.translate_chat_request,
    bedrock_anthropic.BedrockAnthropicToOpenAIResponse,
    bedrock_anthropic.BedrockAnthropicToOpenAIStream,
)
_EMBEDDINGS_TO_BEDROCK = Pair(
    bedrock_embeddings.translate_request,
    bedrock_embeddings.BedrockEmbeddingsToOpenAIResponse,
    bedrock_embeddings.BedrockEmbeddingsToOpenAIResponse,
)
_MESSAGES_TO_BEDROCK = Pair(
    anthropic_bedrock.translate_request,
    anthropic_bedrock.ConverseToAnthropicResponse,
    anthropic_bedrock.ConverseToAnthropicStream,
)
_COUNT_TOKENS_TO_BEDROCK = Pair(
    bedrock_count_tokens.translate_converse_request,
    bedrock_count_tokens.CountTokensResponse,
    bedrock_count_tokens.CountTokensResponse,
)
_COUNT_TOKENS_TO_AWS_ANTHROPIC = Pair(
    bedrock_count_tokens.translate_invoke_request,
    bedrock_count_tokens.CountTokensResponse,
    bedrock_count_tokens.CountTokensResponse,
)
_MESSAGES_TO_AWS_ANTHROPIC = Pair(
    bedrock_anthropic.translate_messages_request,
    bedrock_anthropic.BedrockAnthropicPassthroughResponse,
    bedrock_anthropic.BedrockAnthropicPassthroughStream,
)
_ANTHROPIC_PASSTHROUGH = Pair(
    anthropic_anthropic.translate_request,
    anthropic_anthropic.AnthropicPassthroughResponse,
    anthropic_anthropic.AnthropicPassthroughResponse,
)
_MESSAGES_TO_OPENAI = Pair(
    anthropic_openai.translate_request,
    anthropic_openai.OpenAIToAnthropicResponse,
    anthropic_openai.OpenAIToAnthropicStream,
)

# Answered by the gateway (an OpenAI-shaped backend counts no tokens): the answer is Anthropic's
# shape already, passed as a count_tokens answer from Anthropic is.
_COUNT_TOKENS_ESTIMATE = Pair(
    anthropic_openai.estimate_count_tokens,
    anthropic_anthropic.AnthropicPassthroughResponse,
    anthropic_anthropic.AnthropicPassthroughResponse,
)

_MESSAGES_TO_AZURE = Pair(
    anthropic_openai.translate_request_azure,
    anthropic_openai.OpenAIToAnthropicResponse,
    anthropic_openai.OpenAIToAnthropicStream,
)

_COHERE_PASSTHROUGH = Pair(cohere_cohere.translate_request, cohere_cohere.CohereResponse, cohere_cohere.CohereStream)

_CHAT_TO_GEMINI = Pair(
    openai_gemini.translate_request,
    openai_gemini.GeminiToOpenAIResponse,
    openai_gemini.GeminiToOpenAIStream,
)
_EMBEDDINGS_TO_GEMINI = Pair(
    openai_gemini.translate_embeddings_request,
    openai_gemini.GeminiEmbeddingsToOpenAIResponse,
    openai_gemini.GeminiEmbeddingsToOpenAIResponse,
)
_TOKENIZE_TO_GEMINI = Pair(
    openai_gemini.translate_tokenize_request,
    openai_gemini.GeminiCountTokensToTokenizeResponse,
    openai_gemini.GeminiCountTokensToTokenizeResponse,
)
_CHAT_TO_GCP_ANTHROPIC = Pair(
    gcp_anthropic.translate_chat_request,
    gcp_anthropic.GCPAnthropicToOpenAIResponse,
    gcp_anthropic.GCPAnthropicToOpenAIStream,
)
_MESSAGES_TO_GCP_ANTHROPIC = Pair(
    gcp_anthropic.translate_messages_request,
    gcp_anthropic.GCPAnthropicPassthroughResponse,
    gcp_anthropic.GCPAnthropicPassthroughResponse,
)

_TABLE: dict[tuple[str, Endpoint], Pair] = {
    **{(OPENAI, e): _OPENAI_PASSTHROUGH for e in OPENAI_ENDPOINTS},
    (OPENAI, Endpoint.MESSAGES): _MESSAGES_TO_OPENAI,
    (OPENAI, Endpoint.COUNT_TOKENS): _COUNT_TOKENS_ESTIMATE,
    # vLLM's /tokenize, sent as the passthrough sent it before it was an endpoint (Azure OpenAI
    # has no tokenize: left out, as in Envoy AI Gateway).
    (OPENAI, Endpoint.TOKENIZE): _OPENAI_PASSTHROUGH,
    **{(AZURE_OPENAI, e): _AZURE for e in OPENAI_ENDPOINTS},
    (AZURE_OPENAI, Endpoint.MESSAGES): _MESSAGES_TO_AZURE,
    (AZURE_OPENAI, Endpoint.COUNT_TOKENS): _COUNT_TOKENS_ESTIMATE,
    (ANTHROPIC, Endpoint.CHAT_COMPLETIONS): _CHAT_TO_ANTHROPIC,
    (ANTHROPIC, Endpoint.MESSAGES): _ANTHROPIC_PASSTHROUGH,
    (ANTHROPIC, Endpoint.COUNT_TOKENS): _ANTHROPIC_PASSTHROUGH,
    (AWS_BEDROCK, Endpoint.CHAT_COMPLETIONS): _CHAT_TO_BEDROCK,
    (AWS_BEDROCK, Endpoint.EMBEDDINGS): _EMBEDDINGS_TO_BEDROCK,
    (AWS_BEDROCK, Endpoint.MESSAGES): _MESSAGES_TO_BEDROCK,
    (AWS_BEDROCK, Endpoint.COUNT_TOKENS): _COUNT_TOKENS_TO_BEDROCK,
    (AWS_ANTHROPIC, Endpoint.CHAT_COMPLETIONS): _CHAT_TO_AWS_ANTHROPIC,
    (AWS_ANTHROPIC, Endpoint.MESSAGES): _MESSAGES_TO_AWS_ANTHROPIC,
    (AWS_ANTHROPIC, Endpoint.COUNT_TOKENS): _COUNT_TOKENS_TO_AWS_ANTHROPIC,
    # Envoy AI Gateway serves no Anthropic Messages front on Gemini: it is left out (422).
    (GCP_VERTEX_AI, Endpoint.CHAT_COMPLETIONS): _CHAT_TO_GEMINI,
    (GCP_VERTEX_AI, Endpoint.EMBEDDINGS): _EMBEDDINGS_TO_GEMINI,
    (GCP_VERTEX_AI, Endpoint.TOKENIZE): _TOKENIZE_TO_GEMINI,
    (GCP_ANTHROPIC, Endpoint.CHAT_COMPLETIONS): _CHAT_TO_GCP_ANTHROPIC,
    (GCP_ANTHROPIC, Endpoint.MESSAGES): _MESSAGES_TO_GCP_ANTHROPIC,
    (GCP_ANTHROPIC, Endpoint.COUNT_TOKENS): _MESSAGES_TO_GCP_ANTHROPIC,
    # Envoy AI Gateway serves no OpenAI endpoint on a Cohere backend (nor Cohere's on others).
    **{(COHERE, e): _COHERE_PASSTHROUGH for e in COHERE_ENDPOINTS},
}


def get_pair(endpoint: Endpoint, schema_name: str) -> Pair | None:
    """None when the backend's schema cannot serve the endpoint."""
    return _TABLE.get((schema_name or OPENAI, endpoint))
