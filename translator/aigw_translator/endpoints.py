"""Client endpoints: which API a request path belongs to, and which schema the client speaks."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote

import aigw_contract as contract


class Endpoint(StrEnum):
    CHAT_COMPLETIONS = "chat_completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    RESPONSES = "responses"
    IMAGES_GENERATIONS = "images_generations"
    AUDIO_SPEECH = "audio_speech"
    AUDIO_TRANSCRIPTIONS = "audio_transcriptions"
    AUDIO_TRANSLATIONS = "audio_translations"
    IMAGES_EDITS = "images_edits"
    IMAGES_VARIATIONS = "images_variations"
    MESSAGES = "messages"
    COUNT_TOKENS = "count_tokens"
    # vLLM's POST /tokenize ({model, prompt} or {model, messages}); served by vLLM behind an
    # OpenAI-schema backend as sent, by Gemini through :countTokens.
    TOKENIZE = "tokenize"
    MODELS = "models"
    PASSTHROUGH = "passthrough"
    # Cohere's v2 API, served by Cohere-schema backends as sent (below /cohere).
    COHERE_CHAT = "cohere_chat"
    COHERE_EMBED = "cohere_embed"
    COHERE_RERANK = "cohere_rerank"


class ClientSchema(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    COHERE = "cohere"


# Client path (below the root prefix) -> endpoint. Model listing is answered locally.
_PATHS: dict[str, Endpoint] = {
    "/v1/chat/completions": Endpoint.CHAT_COMPLETIONS,
    "/v1/completions": Endpoint.COMPLETIONS,
    "/v1/embeddings": Endpoint.EMBEDDINGS,
    "/v1/responses": Endpoint.RESPONSES,
    "/v1/images/generations": Endpoint.IMAGES_GENERATIONS,
    "/v1/audio/speech": Endpoint.AUDIO_SPEECH,
    "/v1/audio/transcriptions": Endpoint.AUDIO_TRANSCRIPTIONS,
    "/v1/audio/translations": Endpoint.AUDIO_TRANSLATIONS,
    "/v1/images/edits": Endpoint.IMAGES_EDITS,
    "/v1/images/variations": Endpoint.IMAGES_VARIATIONS,
    "/anthropic/v1/messages": Endpoint.MESSAGES,
    "/anthropic/v1/messages/count_tokens": Endpoint.COUNT_TOKENS,
    "/tokenize": Endpoint.TOKENIZE,
    "/v1/models": Endpoint.MODELS,
    "/anthropic/v1/models": Endpoint.MODELS,
    "/cohere/v2/chat": Endpoint.COHERE_CHAT,
    "/cohere/v2/embed": Endpoint.COHERE_EMBED,
    "/cohere/v2/rerank": Endpoint.COHERE_RERANK,
}
# Cohere's endpoints (the operation is the path's last segment on the backend: /<version>/<op>).
COHERE_ENDPOINTS = (Endpoint.COHERE_CHAT, Endpoint.COHERE_EMBED, Endpoint.COHERE_RERANK)
# Client path prefixes of the APIs that have no passthrough: an unknown path below them is a 404
# in their schema (under the root prefix).
_ANTHROPIC_PREFIX = contract.ANTHROPIC_PATH_PREFIX
_COHERE_PREFIX = contract.COHERE_PATH_PREFIX

# The paths passed through to OpenAI-schema backends when no endpoint above is theirs: OpenAI's API,
# and vLLM's inference routes outside /v1 (not its admin ones: /reset_prefix_cache, /sleep...).
_PASSTHROUGH_PREFIX = "/v1/"
_PASSTHROUGH_PATHS = frozenset({"/detokenize", "/pooling", "/classify", "/score", "/rerank", "/v2/rerank"})

# Prefixes of one model's path (GET .../models/{id}); the id may itself contain "/".
_MODEL_PATHS = ("/v1/models/", "/anthropic/v1/models/")


def model_id_of(local_path: str) -> str | None:
    """The (URL-decoded) model id of a GET /v1/models/{id} path; None for the list."""
    for prefix in _MODEL_PATHS:
        if local_path.startswith(prefix):
            return unquote(local_path[len(prefix) :])
    return None


# The OpenAI API's endpoints whose request body is JSON carrying "model".
_OPENAI_JSON_ENDPOINTS = (
    Endpoint.CHAT_COMPLETIONS,
    Endpoint.COMPLETIONS,
    Endpoint.EMBEDDINGS,
    Endpoint.RESPONSES,
    Endpoint.IMAGES_GENERATIONS,
    Endpoint.AUDIO_SPEECH,
)
# Endpoints whose request body is JSON carrying "model".
JSON_ENDPOINTS = frozenset(
    {*_OPENAI_JSON_ENDPOINTS, Endpoint.TOKENIZE, Endpoint.MESSAGES, Endpoint.COUNT_TOKENS, *COHERE_ENDPOINTS}
)
# Endpoints whose success answer is a JSON object (or, streamed, SSE): all those of JSON_ENDPOINTS but
# speech, which answers audio.
JSON_ANSWER_ENDPOINTS = JSON_ENDPOINTS - {Endpoint.AUDIO_SPEECH}
# Endpoints of the OpenAI API that an OpenAI-schema backend (OpenAI, Azure OpenAI) serves as the
# client sent them.
# The OpenAI API's endpoints whose request body is a multipart form carrying "model" (and, on those
# that stream, "stream").
FORM_ENDPOINTS = frozenset(
    {Endpoint.AUDIO_TRANSCRIPTIONS, Endpoint.AUDIO_TRANSLATIONS, Endpoint.IMAGES_EDITS, Endpoint.IMAGES_VARIATIONS}
)
# The model OpenAI takes for a form without one (routed by it, as OpenAI serves it).
FORM_DEFAULT_MODELS = {Endpoint.IMAGES_EDITS: "dall-e-2", Endpoint.IMAGES_VARIATIONS: "dall-e-2"}
OPENAI_ENDPOINTS = (*_OPENAI_JSON_ENDPOINTS, *sorted(FORM_ENDPOINTS), Endpoint.PASSTHROUGH)
# Endpoints whose JSON body says "stream": true to stream (a form says it in its "stream" field,
# speech with "stream_format": "sse": router_phase.parse_request).
STREAMING_ENDPOINTS = frozenset(
    {
        Endpoint.CHAT_COMPLETIONS,
        Endpoint.COMPLETIONS,
        Endpoint.RESPONSES,
        Endpoint.MESSAGES,
        Endpoint.COHERE_CHAT,
        Endpoint.IMAGES_GENERATIONS,
    }
)
# Endpoints whose streams are OpenAI's typed events (`type` in each event's data), ending with
# the event that carries the usage.
MEDIA_STREAM_ENDPOINTS = frozenset(
    {Endpoint.IMAGES_GENERATIONS, Endpoint.IMAGES_EDITS, Endpoint.AUDIO_SPEECH, Endpoint.AUDIO_TRANSCRIPTIONS}
)
# Endpoints that generate text, and so are charged an estimate when their answer reports no usage
# (a backend that never counts; a stream cut before its usage).
TEXT_ENDPOINTS = frozenset(
    {Endpoint.CHAT_COMPLETIONS, Endpoint.COMPLETIONS, Endpoint.RESPONSES, Endpoint.MESSAGES, Endpoint.COHERE_CHAT}
)
# Streaming endpoints whose usage only arrives when stream_options.include_usage is set.
USAGE_OPTION_ENDPOINTS = frozenset({Endpoint.CHAT_COMPLETIONS, Endpoint.COMPLETIONS})


@dataclass(frozen=True)
class ResolvedPath:
    endpoint: Endpoint
    # Path below the root prefix, without the query string ("/v1/chat/completions").
    local_path: str
    # The query string including "?" or "".
    query: str

    @property
    def client_schema(self) -> ClientSchema:
        return client_schema_of(self.endpoint, self.local_path)


def client_schema_of(endpoint: Endpoint, local_path: str = "") -> ClientSchema:
    if endpoint in (Endpoint.MESSAGES, Endpoint.COUNT_TOKENS) or local_path.startswith(f"{_ANTHROPIC_PREFIX}/"):
        return ClientSchema.ANTHROPIC
    if endpoint in COHERE_ENDPOINTS or local_path.startswith(f"{_COHERE_PREFIX}/"):
        return ClientSchema.COHERE
    return ClientSchema.OPENAI


def client_schema_of_path(path: str, root_prefix: str = "") -> ClientSchema:
    """The schema of a client path that resolve_path does not serve (its 404), whatever the root
    prefix: an Anthropic or Cohere client gets an error its SDK can parse."""
    bare = split_query(path)[0]
    for prefix, schema in ((_ANTHROPIC_PREFIX, ClientSchema.ANTHROPIC), (_COHERE_PREFIX, ClientSchema.COHERE)):
        if f"{prefix}/" in bare or bare.endswith(prefix):
            return schema
    if _missing_prefix(_local(bare, root_prefix)) is not None:
        return ClientSchema.ANTHROPIC
    return ClientSchema.OPENAI


def _local(bare: str, root_prefix: str) -> str:
    """`bare` without the root prefix (as it is when it does not start with it)."""
    return bare[len(root_prefix) :] if root_prefix and bare.startswith(root_prefix + "/") else bare


def _missing_prefix(bare: str) -> str | None:
    """The Anthropic path `bare` would be under /anthropic (an Anthropic SDK whose base URL is the
    gateway's root sends /v1/messages), else None."""
    guess = _ANTHROPIC_PREFIX + bare.rstrip("/")
    return guess if _PATHS.get(guess) in (Endpoint.MESSAGES, Endpoint.COUNT_TOKENS) else None


def unsupported_path(path: str, root_prefix: str = "") -> str:
    """The 404's message for a path resolve_path does not serve, with the path meant when a base
    URL evidently lacks its last part (`/chat/completions`: /v1; `/v1/messages`: /anthropic)."""
    bare = split_query(path)[0]
    local = _local(bare, root_prefix)
    message = f"unsupported path: {bare}"
    once = local[3:] if local.startswith("/v1/v1/") else local  # a base URL of .../v1 the SDK extended
    anthropic = _missing_prefix(once)
    if anthropic is not None:
        return f"{message} (Anthropic clients: the base URL ends in /anthropic, {root_prefix}{anthropic})"
    if local.startswith(_ANTHROPIC_PREFIX + "/v1/v1/"):  # a base URL of .../anthropic/v1 the SDK extended
        meant = _ANTHROPIC_PREFIX + local[len(_ANTHROPIC_PREFIX) + 3 :]
        if resolve_path(meant) is not None:
            hint = f"the base URL ends in /anthropic, not /anthropic/v1: {root_prefix}{meant}"
            return f"{message} (Anthropic clients: {hint})"
    if once != local:
        return f"{message} (the base URL ends in /v1 once: {root_prefix}{once})"
    if (_PATHS.get("/v1" + local.rstrip("/")) or Endpoint.PASSTHROUGH) is not Endpoint.PASSTHROUGH:
        return f"{message} (OpenAI clients: the base URL ends in /v1, {root_prefix}/v1{local})"
    return message


def split_query(path: str) -> tuple[str, str]:
    idx = path.find("?")
    if idx < 0:
        return path, ""
    return path[:idx], path[idx:]


def resolve_path(path: str, root_prefix: str = "") -> ResolvedPath | None:
    """The endpoint of a client path, or None when the path is not served (404).

    Other paths of OpenAI's API (`/v1/...`, under the root prefix) are passed through to
    OpenAI-schema backends; nothing else is: a path outside it (`/chat/completions` without its
    `/v1`, `/V1/...`, a server's own admin routes) would reach the provider with the gateway's key.
    """
    bare, query = split_query(path)
    if root_prefix:
        if bare != root_prefix and not bare.startswith(root_prefix + "/"):
            return None
        bare = bare[len(root_prefix) :] or "/"
    endpoint = _PATHS.get(bare.rstrip("/") or "/")
    if endpoint is not None:
        return ResolvedPath(endpoint, bare.rstrip("/"), query)
    if bare.startswith(_MODEL_PATHS) and bare.rstrip("/") not in _MODEL_PATHS:
        # GET /v1/models/{id} (and the Anthropic one): one model, answered like the list.
        return ResolvedPath(Endpoint.MODELS, bare, query)
    if bare.rstrip("/") in _PASSTHROUGH_PATHS:
        return ResolvedPath(Endpoint.PASSTHROUGH, bare.rstrip("/"), query)
    if not bare.startswith(_PASSTHROUGH_PREFIX) or _missing_prefix(bare) is not None or bare.startswith("/v1/v1/"):
        return None
    return ResolvedPath(Endpoint.PASSTHROUGH, bare, query)
