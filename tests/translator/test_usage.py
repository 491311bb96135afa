from __future__ import annotations

import pytest

from aigw_translator.usage import (
    TokenUsage,
    from_anthropic,
    from_openai,
    merge_anthropic_stream,
    to_anthropic,
    to_openai_chat,
)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (
            {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            TokenUsage(10, 0, 0, 5, 0, 15, True),
        ),
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "total_tokens": 15,
                "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 2},
            },
            TokenUsage(10, 4, 0, 5, 2, 15, True),
        ),
        ({"prompt_tokens": 3, "total_tokens": 3}, TokenUsage(3, 0, 0, 0, 0, 3, True)),  # embeddings
        (
            {
                "input_tokens": 8,
                "output_tokens": 6,
                "total_tokens": 14,
                "input_tokens_details": {"cached_tokens": 1},
                "output_tokens_details": {"reasoning_tokens": 3},
            },
            TokenUsage(8, 1, 0, 6, 3, 14, True),
        ),  # Responses API
        (
            {
                "prompt_tokens": 100,
                "completion_tokens": 5,
                "total_tokens": 105,
                "prompt_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 80},
            },
            TokenUsage(100, 10, 80, 5, 0, 105, True),
        ),  # OpenAI's cache writes (chat)
        (
            {
                "input_tokens": 100,
                "output_tokens": 5,
                "total_tokens": 105,
                "input_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 80},
            },
            TokenUsage(100, 10, 80, 5, 0, 105, True),
        ),  # OpenAI's cache writes (Responses)
        (None, TokenUsage()),
        ("bad", TokenUsage()),
    ],
)
def test_from_openai(usage: object, expected: TokenUsage) -> None:
    assert from_openai(usage) == expected


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"input_tokens": 5, "output_tokens": 9}, TokenUsage(5, 0, 0, 9, 0, 14, True)),
        (
            {"input_tokens": 5, "output_tokens": 9, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 2},
            TokenUsage(10, 3, 2, 9, 0, 19, True),
        ),
        (None, TokenUsage()),
    ],
)
def test_from_anthropic(usage: object, expected: TokenUsage) -> None:
    assert from_anthropic(usage) == expected


def test_anthropic_stream_merge_is_cumulative() -> None:
    u = merge_anthropic_stream(
        TokenUsage(),
        {"input_tokens": 5, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 2, "output_tokens": 1},
    )
    assert (u.input_tokens, u.output_tokens) == (10, 1)
    u = merge_anthropic_stream(u, {"output_tokens": 9})
    assert (u.input_tokens, u.cached_input_tokens, u.cache_creation_input_tokens, u.output_tokens, u.total_tokens) == (
        10,
        3,
        2,
        9,
        19,
    )
    u = merge_anthropic_stream(u, {"output_tokens": 12})  # cumulative, not added
    assert u.output_tokens == 12


def test_round_trips() -> None:
    u = TokenUsage(10, 3, 2, 9, 1, 19, True)
    assert to_openai_chat(u) == {
        "prompt_tokens": 10,
        "completion_tokens": 9,
        "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 2},
        "completion_tokens_details": {"reasoning_tokens": 1},
    }
    # Written to the cache: said to an OpenAI client in OpenAI's own field (an Anthropic backend's
    # cache_creation_input_tokens had been folded into prompt_tokens, unseen).
    assert to_openai_chat(TokenUsage(10, 3, 0, 9))["prompt_tokens_details"] == {"cached_tokens": 3}
    assert to_anthropic(u) == {
        "input_tokens": 5,
        "output_tokens": 9,
        "cache_creation_input_tokens": 2,
        "cache_read_input_tokens": 3,
    }
    assert from_anthropic(to_anthropic(u)).input_tokens == 10


def test_duration_usage_is_not_token_usage() -> None:
    assert not from_openai({"type": "duration", "seconds": 12}).known
    assert from_openai({"type": "tokens", "input_tokens": 3, "output_tokens": 2, "total_tokens": 5}).total_tokens == 5


@pytest.mark.parametrize("bad", [-5, -1.5, float("nan"), float("inf"), "7", None, True])
def test_counts_a_provider_reports_wrong_are_clamped_to_zero(bad: object) -> None:
    usage = from_openai({"prompt_tokens": bad, "completion_tokens": 3, "total_tokens": bad})
    assert usage.input_tokens == 0 and usage.output_tokens == 3 and usage.total_tokens == 3
    usage = from_anthropic({"input_tokens": 4, "output_tokens": bad, "cache_read_input_tokens": bad})
    assert usage.input_tokens == 4 and usage.output_tokens == 0 and usage.cached_input_tokens == 0


def test_prompt_estimate_counts_text_and_a_flat_amount_per_inline_binary_part():
    from aigw_translator.usage import BINARY_PART_TOKENS, estimate_prompt_tokens

    image = "data:image/png;base64," + "A" * 1_500_000
    openai_request = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "x" * 400}, {"type": "image_url", "image_url": {"url": image}}],
            }
        ],
    }
    anthropic_request = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 1_500_000}}
                ],
            }
        ],
    }
    assert 100 + BINARY_PART_TOKENS <= estimate_prompt_tokens(openai_request) < 120 + BINARY_PART_TOKENS
    assert BINARY_PART_TOKENS <= estimate_prompt_tokens(anthropic_request) < BINARY_PART_TOKENS + 20
