from __future__ import annotations

import json

import pytest

from aigw.translator.v1 import config_pb2
from aigw_translator.endpoints import ClientSchema, Endpoint
from aigw_translator.translators import RequestContext, ResponseContext
from aigw_translator.translators.anthropic_anthropic import AnthropicPassthroughResponse, translate_request

from .streams import run, splits

BODY = json.dumps({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}).encode()


@pytest.mark.parametrize(
    ("endpoint", "prefix", "override", "headers", "path", "model", "set_headers"),
    [
        (Endpoint.MESSAGES, "", "", {}, "/v1/messages", None, {"anthropic-version": "2023-06-01"}),
        (Endpoint.COUNT_TOKENS, "", "", {}, "/v1/messages/count_tokens", None, {"anthropic-version": "2023-06-01"}),
        (
            Endpoint.MESSAGES,
            "api/v9",
            "claude-x",
            {"anthropic-version": "2026-10-21"},
            "/api/v9/messages",
            "claude-x",
            {},
        ),
    ],
)
def test_request(endpoint, prefix, override, headers, path, model, set_headers) -> None:
    backend = config_pb2.Backend(
        name="b", schema=config_pb2.Schema(name="Anthropic", prefix=prefix), model_name_override=override
    )
    ctx = RequestContext(endpoint, backend, "/anthropic/v1/messages", "", override or "claude", headers)
    tr = translate_request(ctx, BODY)
    assert tr.path == path
    assert tr.set_headers == set_headers
    assert (json.loads(tr.body)["model"] if tr.body else None) == model


def _ctx(stream: bool) -> ResponseContext:
    return ResponseContext(Endpoint.MESSAGES, ClientSchema.ANTHROPIC, "claude", "claude", stream)


def test_body_usage() -> None:
    tr = AnthropicPassthroughResponse(_ctx(False))
    body = json.dumps(
        {"model": "claude-x", "usage": {"input_tokens": 2, "cache_read_input_tokens": 1, "output_tokens": 3}}
    ).encode()
    assert tr.body(body) is None
    assert (tr.usage.input_tokens, tr.usage.total_tokens, tr.response_model) == (3, 6, "claude-x")


STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":4,"output_tokens":1}}}\n\n'  # noqa: E501
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}\n\n'  # noqa: E501
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}\n\n'  # noqa: E501
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


@pytest.mark.parametrize("chunks", splits(STREAM, 31))
def test_stream_is_byte_exact_and_counts_usage(chunks: list[bytes]) -> None:
    tr = AnthropicPassthroughResponse(_ctx(True))
    assert run(tr, chunks) == STREAM
    assert (tr.usage.input_tokens, tr.usage.output_tokens, tr.usage.known) == (4, 7, True)


def test_stream_without_message_delta_has_no_usage() -> None:
    tr = AnthropicPassthroughResponse(_ctx(True))
    run(tr, [STREAM[: STREAM.index(b"event: content_block_delta")]])
    assert not tr.usage.known
