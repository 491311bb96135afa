"""Cohere v2 client (/cohere/v2/chat, /embed, /rerank) -> Cohere-schema backend: passthrough to
/<schema.version, default v2>/<operation> with the model override, and usage read from the answer
(chat: `usage`; embed and rerank: `meta`; a chat stream: its message-end event).

Cohere's answers do not name the model, so the response model is the effective one (the router
phase's default) unless an answer carries a `model`.
"""

from __future__ import annotations

import re
from typing import Any

from ..endpoints import Endpoint
from ..errors import GatewayError
from ..sse import Event
from ..usage import from_cohere
from .base import (
    ObservedStream,
    RequestContext,
    ResponseTranslator,
    TranslatedRequest,
    load_json,
    model_override_body,
    passed_answer,
)

# The path version of a Cohere schema that names none (the compat examples name "v2").
DEFAULT_COHERE_VERSION = "v2"
OPERATIONS = {Endpoint.COHERE_CHAT: "chat", Endpoint.COHERE_EMBED: "embed", Endpoint.COHERE_RERANK: "rerank"}
_VERSION = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def cohere_version(version: str) -> str:
    """The schema's path version without slashes ("v2" when unset). Anything but one plain path
    segment (the operator's typo, "..") is refused rather than sent somewhere else."""
    stripped = version.strip("/")
    if not stripped:
        return DEFAULT_COHERE_VERSION
    if not _VERSION.fullmatch(stripped) or stripped in (".", ".."):
        raise GatewayError(500, f"the Cohere schema version {version[:40]!r} of this backend is not a path segment")
    return stripped


def translate_request(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    path = f"/{cohere_version(ctx.backend.schema.version)}/{OPERATIONS[ctx.endpoint]}"
    return TranslatedRequest(path=path, body=model_override_body(ctx, body))


def _usage_object(endpoint: Endpoint, obj: dict[str, Any]) -> Any:
    return obj.get("usage") if endpoint is Endpoint.COHERE_CHAT else obj.get("meta")


class CohereResponse(ResponseTranslator):
    """Bodies pass through unchanged; usage (and a model, if the answer has one) are read."""

    def body(self, body: bytes) -> bytes | None:
        obj = passed_answer(self.ctx, body)
        if isinstance(obj, dict):
            self.usage = from_cohere(_usage_object(self.ctx.endpoint, obj))
            if isinstance(obj.get("model"), str) and obj["model"]:
                self.response_model = obj["model"]
        return None


class CohereStream(ObservedStream):
    """A v2 chat stream passes through unchanged; its message-end event carries the usage."""

    def _observe(self, event: Event) -> None:
        obj = load_json(event.data.encode())
        if not isinstance(obj, dict) or (obj.get("type") or event.event) != "message-end":
            return
        delta = obj.get("delta")
        if isinstance(delta, dict):
            self.usage = from_cohere(delta.get("usage"))
