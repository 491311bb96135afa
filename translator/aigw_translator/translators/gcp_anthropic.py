"""OpenAI chat completions and Anthropic Messages clients -> Claude on GCP Vertex AI (schema
GCPAnthropic).

Requests (path: vertex.vertex_path, publisher `anthropic`; always `content-type: application/json`):

- Messages: `POST …/publishers/anthropic/models/{model}:rawPredict`, or `…:streamRawPredict` when
  the body says `"stream": true`. The body is an Anthropic Messages body (openai_anthropic's
  translation for an OpenAI client, the client's own body for an Anthropic one) without `model`
  (it is in the path) and with `anthropic_version` first: the backend's schema.version, else
  `vertex-2023-10-16`. `stream: true` stays in the body, as Anthropic's Vertex SDK sends it.
- Token counting (`/anthropic/v1/messages/count_tokens`): `POST
  …/publishers/anthropic/models/count-tokens:rawPredict` with the client's body, its `model` set to
  the effective model (Vertex reads the model from the body here), and `anthropic_version`.

Claude on Vertex rejects URL sources ("URL sources are not supported"): an image or document block
with a `url` source (an http(s) image URL from an OpenAI client) is refused with a clear 422 before it
is sent; inline base64 data passes.

A client's `anthropic-version` header is removed (the version travels in the body); of its
`anthropic-beta` header, the betas Claude on Vertex takes pass (VERTEX_BETAS; Vertex answers any
other with a 400 "Unexpected value(s)", and Claude Code sends first-party ones to every base URL),
the header going when none is left.

Responses are Anthropic Messages JSON and Anthropic SSE: openai_anthropic's translation for an
OpenAI client, anthropic_anthropic's passthrough (with its usage and model) for an Anthropic one.
Errors: Vertex's own (Google JSON: quota, permission, unknown model) and Claude's (Anthropic JSON)
become the client's error shape with the status kept (vertex.py).
"""

from __future__ import annotations

from typing import Any

from ..endpoints import Endpoint
from .anthropic_anthropic import AnthropicPassthroughResponse
from .base import RequestContext, TranslatedRequest, betas_of, dump_json, parse_request_json, refuse_url_sources
from .claude_reasoning import drop_unsigned_thinking
from .openai_anthropic import AnthropicToOpenAIResponse, AnthropicToOpenAIStream, chat_to_messages
from .vertex import ANTHROPIC, vertex_anthropic_error, vertex_openai_error, vertex_path

DEFAULT_VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"
RAW_PREDICT = "rawPredict"
STREAM_RAW_PREDICT = "streamRawPredict"
# The model Vertex's token counting is addressed at (the counted model is the body's).
COUNT_TOKENS_MODEL = "count-tokens"
_REMOVED_HEADERS = ["anthropic-version"]
BETA_HEADER = "anthropic-beta"
# The betas Claude on Vertex takes (Google's documentation of its Claude features); token counting
# takes no web search.
VERTEX_BETAS = frozenset(
    {
        "computer-use-2024-10-22",
        "computer-use-2025-01-24",
        "token-efficient-tools-2025-02-19",
        "interleaved-thinking-2025-05-14",
        "output-128k-2025-02-19",
        "context-1m-2025-08-07",
        "context-management-2025-06-27",
        "web-search-2025-03-05",
    }
)
_COUNT_TOKENS_BETAS = VERTEX_BETAS - {"web-search-2025-03-05"}


def _beta_headers(ctx: RequestContext, taken: frozenset[str]) -> tuple[dict[str, str], list[str]]:
    """(set, removed) headers: the client's anthropic-beta values Vertex takes, the rest dropped."""
    given = betas_of(ctx.headers.get(BETA_HEADER, ""))
    kept = [b for b in given if b in taken]
    if kept == given:
        return {}, list(_REMOVED_HEADERS)
    if kept:
        return {BETA_HEADER: ",".join(kept)}, list(_REMOVED_HEADERS)
    return {}, [*_REMOVED_HEADERS, BETA_HEADER]


def anthropic_version(ctx: RequestContext) -> str:
    return ctx.backend.schema.version or DEFAULT_VERTEX_ANTHROPIC_VERSION


def to_vertex_body(ctx: RequestContext, messages: dict[str, Any], keep_model: bool = False) -> dict[str, Any]:
    """An Anthropic Messages body as Claude on Vertex takes it."""
    out: dict[str, Any] = {"anthropic_version": anthropic_version(ctx)}
    out.update((k, v) for k, v in messages.items() if k not in ("model", "anthropic_version"))
    if keep_model:
        out["model"] = ctx.model
    return out


def _raw_predict(ctx: RequestContext, messages: dict[str, Any]) -> TranslatedRequest:
    refuse_url_sources(messages, "GCP Vertex AI")
    method = STREAM_RAW_PREDICT if messages.get("stream") is True else RAW_PREDICT
    betas, removed = _beta_headers(ctx, VERTEX_BETAS)
    return TranslatedRequest(
        path=vertex_path(ctx.backend, ANTHROPIC, ctx.model, method),
        body=dump_json(to_vertex_body(ctx, messages)),
        set_headers={"content-type": "application/json", **betas},
        remove_headers=removed,
    )


def translate_chat_request(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    """OpenAI chat completions: openai_anthropic's Messages body, for rawPredict."""
    req = parse_request_json(body)
    return _raw_predict(ctx, chat_to_messages(req, ctx.model, user_id_key=ctx.user_id_key))


def translate_messages_request(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    """Anthropic Messages (and count_tokens): the client's body (without another model's reasoning)."""
    req = parse_request_json(body)
    drop_unsigned_thinking(req)
    if ctx.endpoint is not Endpoint.COUNT_TOKENS:
        return _raw_predict(ctx, req)
    refuse_url_sources(req, "GCP Vertex AI")
    betas, removed = _beta_headers(ctx, _COUNT_TOKENS_BETAS)
    return TranslatedRequest(
        path=vertex_path(ctx.backend, ANTHROPIC, COUNT_TOKENS_MODEL, RAW_PREDICT),
        body=dump_json(to_vertex_body(ctx, req, keep_model=True)),
        set_headers={"content-type": "application/json", **betas},
        remove_headers=removed,
    )


class GCPAnthropicToOpenAIResponse(AnthropicToOpenAIResponse):
    """rawPredict's Anthropic message -> chat.completion (openai_anthropic's translation)."""

    def error(self, status: int, body: bytes) -> bytes:
        return vertex_openai_error(status, body)


class GCPAnthropicToOpenAIStream(AnthropicToOpenAIStream):
    """streamRawPredict's Anthropic SSE -> chat.completion.chunk (openai_anthropic's translation)."""

    def error(self, status: int, body: bytes) -> bytes:
        return vertex_openai_error(status, body)


class GCPAnthropicPassthroughResponse(AnthropicPassthroughResponse):
    """rawPredict / streamRawPredict / count-tokens answers, to an Anthropic client as they are."""

    def error(self, status: int, body: bytes) -> bytes:
        return vertex_anthropic_error(status, body)
