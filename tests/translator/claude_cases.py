"""Requests the table tests of Claude behind a cloud (AWSAnthropic on Bedrock InvokeModel,
GCPAnthropic on Vertex rawPredict) share: both send openai_anthropic's Messages body, so the same
OpenAI chat requests check both."""

from __future__ import annotations

import json
from typing import Any

import pytest

TOOL = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}


def chat(**kw: Any) -> dict[str, Any]:
    """An OpenAI chat request, with `kw` over a one-turn default."""
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}


def msgs(**kw: Any) -> dict[str, Any]:
    """An Anthropic Messages request, with `kw` over a one-turn default."""
    return {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}], **kw}


def body_of(tr: Any) -> dict[str, Any]:
    """A translated request's new body as JSON (it must have one)."""
    assert tr.body is not None
    out: dict[str, Any] = json.loads(tr.body)
    return out


# OpenAI chat requests whose Messages body is openai_anthropic's, whichever cloud Claude is behind.
CHAT_REQUESTS = pytest.mark.parametrize(
    "req",
    [
        chat(),
        chat(stream=True, stream_options={"include_usage": True}),
        chat(max_completion_tokens=99, temperature=0.5, stop=["END"], user="u1"),
        chat(
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            ],
            tools=[TOOL],
            tool_choice="required",
        ),
        chat(reasoning_effort="low", max_completion_tokens=3000),
    ],
)
