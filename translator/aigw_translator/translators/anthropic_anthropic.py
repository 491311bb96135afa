"""Anthropic Messages client -> Anthropic backend: passthrough with model override and usage."""

from __future__ import annotations

from ..auth import ANTHROPIC_VERSION_HEADER, DEFAULT_ANTHROPIC_VERSION
from ..config import schema_prefix
from ..endpoints import Endpoint
from ..sse import Event
from ..usage import from_anthropic, merge_anthropic_stream
from .base import (
    ObservedStream,
    RequestContext,
    TranslatedRequest,
    load_json,
    model_override_body,
    passed_answer,
)


def translate_request(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    prefix = schema_prefix(ctx.backend.schema)
    suffix = "/messages/count_tokens" if ctx.endpoint is Endpoint.COUNT_TOKENS else "/messages"
    new_body = model_override_body(ctx, body)
    headers = {}
    if ANTHROPIC_VERSION_HEADER not in ctx.headers:
        headers[ANTHROPIC_VERSION_HEADER] = DEFAULT_ANTHROPIC_VERSION
    return TranslatedRequest(path=(f"/{prefix}" if prefix else "") + suffix, body=new_body, set_headers=headers)


class AnthropicPassthroughResponse(ObservedStream):
    def body(self, body: bytes) -> bytes | None:
        obj = passed_answer(self.ctx, body)
        if isinstance(obj, dict):
            if self.ctx.endpoint is Endpoint.MESSAGES:
                self.usage = from_anthropic(obj.get("usage"))
            if isinstance(obj.get("model"), str):
                self.response_model = obj["model"]
        return None

    def _observe(self, event: Event) -> None:
        obj = load_json(event.data.encode())
        if not isinstance(obj, dict):
            return
        kind = obj.get("type")
        if kind == "message_start":
            msg = obj.get("message") or {}
            self.response_model = msg.get("model") or self.response_model
            self.usage = merge_anthropic_stream(self.usage, msg.get("usage"))
            self.usage.known = False
        elif kind == "message_delta":
            self.usage = merge_anthropic_stream(self.usage, obj.get("usage"))
        elif kind == "error":
            self.usage.known = False
