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


def _replayed(thinking: dict[str, object] | None) -> dict[str, object]:
    """An Anthropic client's tool loop whose assistant turn holds another model's reasoning: a
    thinking block with an empty signature, as anthropic_openai hands an OpenAI backend's reasoning
    to an Anthropic client (here after a failover to that backend and back to Claude)."""
    weather = {"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}
    body: dict[str, object] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4000,
        "tools": [weather],
        "messages": [
            {"role": "user", "content": "weather in Oslo?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "I should call the tool.", "signature": ""},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]},
        ],
    }
    if thinking is not None:
        body["thinking"] = thinking
    return body


@pytest.mark.parametrize("thinking", [None, {"type": "enabled", "budget_tokens": 2048}])
def test_another_models_reasoning_is_not_replayed_to_claude(thinking: dict[str, object] | None) -> None:
    """From a provider review: Claude refuses a thinking block whose signature it did not make (the
    fake refuses an empty one, as Anthropic's API does), so a conversation that met an OpenAI backend
    once could not go on with Claude. Such blocks are dropped on the way to every Claude; where that
    leaves the pending tool call without its thinking, extended thinking is off for the request. A
    body holding none is forwarded as it came, not parsed."""
    from aigw_fakes.anthropic import AnthropicError, AnthropicFake
    from aigw_translator.translators import bedrock_anthropic, gcp_anthropic

    body = json.dumps(_replayed(thinking)).encode()
    with pytest.raises(AnthropicError, match="Invalid `signature` in `thinking` block"):
        AnthropicFake().validate(json.loads(body))
    backend = config_pb2.Backend(name="b", schema=config_pb2.Schema(name="Anthropic"))
    ctx = RequestContext(Endpoint.MESSAGES, backend, "/anthropic/v1/messages", "", "claude-sonnet-4-5", {})
    sent = translate_request(ctx, body).body
    assert sent is not None
    out = json.loads(sent)
    assert [b["type"] for b in out["messages"][1]["content"]] == ["tool_use"]
    assert "thinking" not in out
    AnthropicFake().validate(out)
    # The same on Bedrock InvokeModel and Vertex rawPredict, which take the client's Messages body.
    gcp = config_pb2.Backend(
        name="v",
        schema=config_pb2.Schema(name="GCPAnthropic", version="vertex-2023-10-16"),
        auth=config_pb2.Auth(gcp_credentials={"project_name": "p", "region": "us-east5"}),
    )
    for translate, on in (
        (bedrock_anthropic.translate_messages_request, backend),
        (gcp_anthropic.translate_messages_request, gcp),
    ):
        cloud = translate(
            RequestContext(Endpoint.MESSAGES, on, "/anthropic/v1/messages", "", "claude-sonnet-4-5", {}), body
        )
        assert cloud.body is not None and b'"signature":""' not in cloud.body and b'"thinking":{' not in cloud.body
    # Signed thinking (Claude's own) stays, and a body without unsigned thinking is not rewritten.
    signed = _replayed(thinking)
    signed["messages"][1]["content"][0]["signature"] = "EqQBCkYI"  # type: ignore[index]
    assert translate_request(ctx, json.dumps(signed).encode()).body is None
