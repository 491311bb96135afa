"""OpenAI embeddings client -> AWS Bedrock InvokeModel (`/model/{model id}/invoke`) with the body
of the embedding model's family, chosen by the model id (a region or inference-profile prefix such
as `us.` and a foundation-model ARN are looked through; an application inference profile ARN names
no family and is refused with a 422):

- Amazon Titan Text Embeddings V2 (`amazon.titan-embed-text-v2:0`): `{inputText, dimensions,
  normalize: true}` (OpenAI's embeddings are unit vectors: normalised alike). One text per call: an
  input list of several texts is refused (422), never split into several calls.
- Titan Text Embeddings G1 (`amazon.titan-embed-text-v1`, `amazon.titan-embed-g1-text-02`):
  `{inputText}` only; `dimensions` is refused (422).
- Cohere Embed on Bedrock (`cohere.embed-english-v3`, `cohere.embed-multilingual-v3`,
  `cohere.embed-v4:0`): `{texts (1 to 96), input_type, embedding_types: ["float"]}`. OpenAI has no
  input type: `search_document` is sent (what a vector store's documents are embedded as), unless
  the request carries Cohere's own `input_type` (search_document, search_query, classification,
  clustering); Cohere's `truncate` (NONE, START, END) is passed the same way. `dimensions` becomes
  `output_dimension` on Embed v4 and is refused on v3.

Token arrays (OpenAI's int or int-array inputs) are refused: Bedrock embeds text only.
`encoding_format` "base64" (the official SDKs' default) is honoured: the floats are packed as
little-endian float32 (base.embedding_value).

Usage: Titan reports `inputTextTokenCount` in the body; Cohere's body has no count, so it is read
from Bedrock's `x-amzn-bedrock-input-token-count` response header, and is unknown (not invented)
when the header is missing.
"""

from __future__ import annotations

from typing import Any

from ..errors import GatewayError
from ..usage import TokenUsage
from .base import (
    RequestContext,
    ResponseTranslator,
    TranslatedRequest,
    TranslationError,
    dump_json,
    embedding_value,
    parse_request_json,
    positive_int,
    success_json,
)
from .bedrock_anthropic import invoke_path
from .bedrock_errors import to_openai as bedrock_error

TITAN_V2 = "titan-v2"
TITAN_V1 = "titan-v1"
COHERE_V3 = "cohere-v3"
COHERE_V4 = "cohere-v4"

# Model id fragment -> family; the first that the (lower-cased) id contains wins.
_FAMILIES = (
    ("amazon.titan-embed-text-v2", TITAN_V2),
    ("amazon.titan-embed-text-v1", TITAN_V1),
    ("amazon.titan-embed-g1-text", TITAN_V1),
    ("cohere.embed-v4", COHERE_V4),
    ("cohere.embed-english-v3", COHERE_V3),
    ("cohere.embed-multilingual-v3", COHERE_V3),
)

COHERE_DEFAULT_INPUT_TYPE = "search_document"
COHERE_INPUT_TYPES = frozenset({"search_document", "search_query", "classification", "clustering"})
COHERE_TRUNCATE = frozenset({"NONE", "START", "END"})
COHERE_MAX_TEXTS = 96
INPUT_TOKENS_HEADER = "x-amzn-bedrock-input-token-count"


def family(model: str) -> str:
    """The embedding family of a Bedrock model id; GatewayError(422) for a model the gateway cannot
    write an embeddings body for."""
    lowered = model.lower()
    for fragment, name in _FAMILIES:
        if fragment in lowered:
            return name
    raise TranslationError(
        f"model {model[:100]!r} is not a Bedrock embedding model the gateway can translate to "
        "(Amazon Titan Text Embeddings, Cohere Embed); an application inference profile ARN does not say "
        "which model it serves: name the model id"
    )


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    if isinstance(value, list) and value and all(isinstance(v, int | list) for v in value):
        raise TranslationError("token arrays are not supported by AWS Bedrock embedding models: send text")
    raise GatewayError(400, "'input' must be a string or a non-empty array of strings")


def _encoding_format(req: dict[str, Any]) -> None:
    value = req.get("encoding_format")
    if value not in (None, "float", "base64"):
        raise GatewayError(400, "'encoding_format' must be 'float' or 'base64'")


def _cohere_option(req: dict[str, Any], key: str, allowed: frozenset[str]) -> str | None:
    value = req.get(key)
    if value is None:
        return None
    if value not in allowed:
        raise GatewayError(400, f"'{key}' must be one of {', '.join(sorted(allowed))}")
    return str(value)


def embeddings_to_invoke(req: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI embeddings request as the InvokeModel body of the model's family."""
    kind = family(model)
    _encoding_format(req)
    texts = _texts(req.get("input"))
    dimensions = positive_int(req, "dimensions")
    if kind in (TITAN_V2, TITAN_V1):
        if len(texts) != 1:
            raise TranslationError(
                f"Amazon Titan embedding models take one text per request, got {len(texts)}: send them one by one"
            )
        out: dict[str, Any] = {"inputText": texts[0]}
        if kind == TITAN_V1:
            if dimensions is not None:
                raise TranslationError("'dimensions' is not supported by Titan Text Embeddings G1 (v1)")
            return out
        if dimensions is not None:
            out["dimensions"] = dimensions
        out["normalize"] = True
        return out
    if len(texts) > COHERE_MAX_TEXTS:
        raise TranslationError(f"Cohere Embed on AWS Bedrock takes at most {COHERE_MAX_TEXTS} texts a request")
    body: dict[str, Any] = {
        "texts": texts,
        "input_type": _cohere_option(req, "input_type", COHERE_INPUT_TYPES) or COHERE_DEFAULT_INPUT_TYPE,
        "embedding_types": ["float"],
    }
    truncate = _cohere_option(req, "truncate", COHERE_TRUNCATE)
    if truncate is not None:
        body["truncate"] = truncate
    if dimensions is not None:
        if kind == COHERE_V3:
            raise TranslationError("'dimensions' is not supported by Cohere Embed v3 (only by Embed v4)")
        body["output_dimension"] = dimensions
    return body


def translate_request(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    req = parse_request_json(body)
    out = embeddings_to_invoke(req, ctx.model)
    return TranslatedRequest(
        path=invoke_path(ctx.model, stream=False),
        body=dump_json(out),
        set_headers={"content-type": "application/json"},
    )


# ----------------------------------------------------------------------------- response


def _floats(value: Any) -> list[float]:
    if not isinstance(value, list) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise ValueError("an embedding is not an array of numbers")
    return [float(v) for v in value]


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def invoke_vectors(resp: dict[str, Any]) -> list[list[float]]:
    """The embeddings of a Titan (`embedding`) or Cohere (`embeddings`, a list, or by type with
    `float`) InvokeModel answer."""
    if "embedding" in resp:
        return [_floats(resp["embedding"])]
    vectors = resp.get("embeddings")
    if isinstance(vectors, dict):
        vectors = vectors.get("float")
    if not isinstance(vectors, list):
        raise ValueError("the backend's answer holds no embeddings")
    return [_floats(v) for v in vectors]


class BedrockEmbeddingsToOpenAIResponse(ResponseTranslator):
    """An InvokeModel embeddings answer -> OpenAI's embedding list."""

    def body(self, body: bytes) -> bytes | None:
        resp = success_json(body)
        vectors = invoke_vectors(resp)
        tokens = _count(resp.get("inputTextTokenCount"))
        if tokens is None:
            tokens = _count(self.ctx.response_headers.get(INPUT_TOKENS_HEADER))
        if tokens is not None:
            self.usage = TokenUsage(input_tokens=tokens, total_tokens=tokens, known=True)
        self.response_model = self.ctx.effective_model
        as_base64 = self.ctx.base64_embeddings
        return dump_json(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": embedding_value(v, as_base64)}
                    for i, v in enumerate(vectors)
                ],
                "model": self.response_model,
                "usage": {"prompt_tokens": tokens or 0, "total_tokens": tokens or 0},
            }
        )

    def error(self, status: int, body: bytes) -> bytes:
        return bedrock_error(status, body, self.ctx.response_headers)
