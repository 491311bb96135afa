"""One normalised token-usage record, and conversions from and to each provider's usage object.

Semantics follow OpenAI: input_tokens counts every prompt token (cached reads and cache writes
included), output_tokens includes reasoning, total = input + output unless the provider says
otherwise. A record is only "known" when the provider actually reported usage; it is never invented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class TokenUsage:
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    known: bool = False

    @property
    def reported(self) -> bool:
        """Final usage, or counts the provider reported before the response ended (Anthropic's
        message_start input tokens): what is charged when a stream stops early."""
        return self.known or self.input_tokens > 0 or self.output_tokens > 0

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "total_tokens": self.total_tokens,
        }


def _int(value: Any) -> int:
    """A token count as reported; anything that is not a non-negative finite number counts 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and math.isfinite(value):
        return max(int(value), 0)
    return 0


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


_TOKEN_KEYS = frozenset({"prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "total_tokens"})


# OpenAI's rule of thumb for English text; only used for estimates, never for reported usage.
CHARS_PER_TOKEN = 4
# What an estimate counts for inline binary content (an image, audio or file as a data: URL or a
# base64 field): about one OpenAI image tile. Counting its base64 text would overstate it 100-fold.
BINARY_PART_TOKENS = 256
_BINARY_KEYS = frozenset({"data", "file_data", "b64_json"})


def estimate_prompt_tokens(request: Any) -> int:
    """A rough token count of a parsed request body: its text at ~4 characters a token, each inline
    binary part (data: URL, base64 field) at a flat BINARY_PART_TOKENS. Only for provisional usage."""
    chars, binary = 0, 0
    stack = [request]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if item.startswith("data:"):
                binary += 1
            else:
                chars += len(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                if key in _BINARY_KEYS and isinstance(value, str) and len(value) > 1024:
                    binary += 1
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return chars // CHARS_PER_TOKEN + binary * BINARY_PART_TOKENS


def provisional(usage: TokenUsage, prompt_estimate: int, output_estimate: int) -> TokenUsage:
    """The usage to charge for an answer whose provider has not reported its usage (a stream that may
    still stop early, the client hanging up or the provider cutting it; a backend that does not
    count): what the provider reported so far, and where it reported nothing, an estimate of what
    the client was sent (a stream: one token per event; a whole answer: estimate_prompt_tokens of
    it) and of its prompt (estimate_prompt_tokens). Final usage (`known`) is returned unchanged."""
    if usage.known:
        return usage
    inp = usage.input_tokens or max(prompt_estimate, 0)
    out = max(usage.output_tokens, output_estimate)
    return TokenUsage(
        inp, usage.cached_input_tokens, usage.cache_creation_input_tokens, out, usage.reasoning_tokens, inp + out
    )


def from_openai(usage: Any) -> TokenUsage:
    """Chat/completions/embeddings usage (prompt_/completion_ tokens) or Responses API usage
    (input_/output_ tokens)."""
    if not isinstance(usage, dict) or not _TOKEN_KEYS & usage.keys():
        return TokenUsage()  # e.g. transcription usage by duration: no token counts to report
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        inp = _int(usage.get("prompt_tokens"))
        out = _int(usage.get("completion_tokens"))
        cached = _int(_get(usage, "prompt_tokens_details", "cached_tokens"))
        # OpenAI's name (prompt_tokens_details.cache_write_tokens), then other servers' names.
        creation = (
            _int(_get(usage, "prompt_tokens_details", "cache_write_tokens"))
            or _int(_get(usage, "prompt_tokens_details", "cache_creation_tokens"))
            or _int(usage.get("cache_write_tokens"))
        )
        reasoning = _int(_get(usage, "completion_tokens_details", "reasoning_tokens"))
    else:
        inp = _int(usage.get("input_tokens"))
        out = _int(usage.get("output_tokens"))
        cached = _int(_get(usage, "input_tokens_details", "cached_tokens"))
        creation = _int(_get(usage, "input_tokens_details", "cache_write_tokens"))
        reasoning = _int(_get(usage, "output_tokens_details", "reasoning_tokens"))
    total = _int(usage.get("total_tokens")) or inp + out
    return TokenUsage(inp, cached, creation, out, reasoning, total, known=True)


def from_anthropic(usage: Any) -> TokenUsage:
    """Anthropic usage: input_tokens excludes cache reads and cache writes, so they are added."""
    if not isinstance(usage, dict):
        return TokenUsage()
    base = _int(usage.get("input_tokens"))
    cached = _int(usage.get("cache_read_input_tokens"))
    creation = _int(usage.get("cache_creation_input_tokens"))
    out = _int(usage.get("output_tokens"))
    reasoning = _int(_get(usage, "output_tokens_details", "reasoning_tokens")) or _int(
        _get(usage, "output_tokens_details", "thinking_tokens")
    )
    inp = base + cached + creation
    return TokenUsage(inp, cached, creation, out, reasoning, inp + out, known=True)


def from_bedrock(usage: Any) -> TokenUsage:
    """Bedrock Converse TokenUsage (the response's `usage`, a stream's `metadata.usage`). Read like
    Anthropic's: inputTokens excludes cacheReadInputTokens and cacheWriteInputTokens, so they are
    added (Envoy AI Gateway does the same). Bedrock reports no reasoning token count."""
    if not isinstance(usage, dict) or not {"inputTokens", "outputTokens", "totalTokens"} & usage.keys():
        return TokenUsage()
    base = _int(usage.get("inputTokens"))
    cached = _int(usage.get("cacheReadInputTokens"))
    creation = _int(usage.get("cacheWriteInputTokens"))
    out = _int(usage.get("outputTokens"))
    inp = base + cached + creation
    return TokenUsage(inp, cached, creation, out, 0, inp + out, known=True)


def merge_anthropic_stream(current: TokenUsage, usage: Any) -> TokenUsage:
    """Fold one message_start / message_delta usage object into the running record.

    message_delta counts are cumulative; fields it omits keep the values from message_start."""
    if not isinstance(usage, dict):
        return current
    base = current.input_tokens - current.cached_input_tokens - current.cache_creation_input_tokens
    merged = {
        "input_tokens": usage.get("input_tokens") if usage.get("input_tokens") is not None else base,
        "cache_read_input_tokens": usage.get("cache_read_input_tokens")
        if usage.get("cache_read_input_tokens") is not None
        else current.cached_input_tokens,
        "cache_creation_input_tokens": usage.get("cache_creation_input_tokens")
        if usage.get("cache_creation_input_tokens") is not None
        else current.cache_creation_input_tokens,
        "output_tokens": usage.get("output_tokens")
        if usage.get("output_tokens") is not None
        else current.output_tokens,
    }
    if isinstance(usage.get("output_tokens_details"), dict):
        merged["output_tokens_details"] = usage["output_tokens_details"]
    result = from_anthropic(merged)
    if not result.reasoning_tokens:
        result.reasoning_tokens = current.reasoning_tokens
    return result


def to_openai_chat(usage: TokenUsage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens or usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
    }
    if usage.cache_creation_input_tokens:  # (OpenAI's name for the prompt tokens written to its cache)
        out["prompt_tokens_details"]["cache_write_tokens"] = usage.cache_creation_input_tokens
    if usage.reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def to_anthropic(usage: TokenUsage) -> dict[str, Any]:
    base = usage.input_tokens - usage.cached_input_tokens - usage.cache_creation_input_tokens
    return {
        "input_tokens": max(base, 0),
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cached_input_tokens,
    }


def from_cohere(usage: Any) -> TokenUsage:
    """Cohere v2 usage: a chat response's (or stream's message-end) `usage`, or a rerank or embed
    response's `meta`, each {tokens, billed_units, cached_tokens}. The tokens the model processed
    (`tokens`) are read first, as Envoy AI Gateway reads rerank usage; `billed_units` (what Cohere
    invoices, without its prompt template) only when `tokens` is absent. `cached_tokens` are part of
    the input. Rerank's search_units are not tokens and are not counted."""
    if not isinstance(usage, dict):
        return TokenUsage()
    counts = usage.get("tokens")
    if not isinstance(counts, dict) or not {"input_tokens", "output_tokens"} & counts.keys():
        counts = usage.get("billed_units")
    if not isinstance(counts, dict) or not {"input_tokens", "output_tokens"} & counts.keys():
        return TokenUsage()
    inp = _int(counts.get("input_tokens"))
    out = _int(counts.get("output_tokens"))
    cached = min(_int(usage.get("cached_tokens")), inp)
    return TokenUsage(inp, cached, 0, out, 0, inp + out, known=True)


def from_gemini(usage: Any) -> TokenUsage:
    """Gemini usageMetadata (Vertex AI generateContent). promptTokenCount counts the cached tokens
    (cachedContentTokenCount is part of it) and toolUsePromptTokenCount (tool results the model read,
    e.g. search) is prompt too; candidatesTokenCount excludes thoughtsTokenCount, so the thoughts are
    added to the output (OpenAI counts reasoning in completion tokens) and are its reasoning tokens."""
    if (
        not isinstance(usage, dict)
        or not {"promptTokenCount", "candidatesTokenCount", "totalTokenCount"} & usage.keys()
    ):
        return TokenUsage()
    inp = _int(usage.get("promptTokenCount")) + _int(usage.get("toolUsePromptTokenCount"))
    cached = _int(usage.get("cachedContentTokenCount"))
    reasoning = _int(usage.get("thoughtsTokenCount"))
    out = _int(usage.get("candidatesTokenCount")) + reasoning
    total = _int(usage.get("totalTokenCount")) or inp + out
    return TokenUsage(inp, cached, 0, out, reasoning, total, known=True)
