"""Deterministic random-shape inputs: translators may reject (GatewayError) but never crash."""

from __future__ import annotations

import contextlib
import json
import random
from typing import Any

import pytest

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_translator.endpoints import ClientSchema, Endpoint
from aigw_translator.server import ExternalProcessor
from aigw_translator.translators import ResponseContext, get_pair

from .extproc_helpers import drive, request_body, request_headers, response_body, response_headers, upstream_attributes

KEYS = [
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "tool_calls",
    "function",
    "arguments",
    "tools",
    "tool_choice",
    "stop",
    "n",
    "image_url",
    "url",
    "source",
    "choices",
    "delta",
    "usage",
    "message",
    "index",
    "content_block",
    "input",
    "stream",
    "system",
    "max_tokens",
    "finish_reason",
    "stop_reason",
    "error",
]


def rand_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False, 0, 1, -5, 2.5])
    if kind == 2:
        return rng.choice(["", "user", "assistant", "tool", "system", "text", "function", "image_url", "data:x", "{}"])
    if kind == 3:
        return rng.choice(["tool_use", "text_delta", "input_json_delta", "message_start", "http://x", "auto"])
    if kind == 4:
        return rng.randrange(100)
    if kind in (5, 6):
        return {rng.choice(KEYS): rand_value(rng, depth + 1) for _ in range(rng.randrange(5))}
    return [rand_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def _config() -> config_pb2.TranslatorConfig:
    cfg = config_pb2.TranslatorConfig(name="f")
    for name, schema in (("openai", "OpenAI"), ("anthropic", "Anthropic"), ("azure", "AzureOpenAI")):
        cfg.backends.add(name=name, schema=config_pb2.Schema(name=schema))
    return cfg


PATHS = ["/v1/chat/completions", "/anthropic/v1/messages", "/v1/embeddings", "/v1/responses"]


@pytest.mark.parametrize("seed", range(40))
async def test_random_requests_never_crash(seed: int) -> None:
    rng = random.Random(seed)
    processor = ExternalProcessor(_config())
    for _ in range(10):
        body = rand_value(rng)
        if isinstance(body, dict) and rng.random() < 0.7:
            body["model"] = "m"
            body["messages"] = rand_value(rng, 1) if rng.random() < 0.5 else [rand_value(rng, 2)]
        raw = json.dumps(body).encode()
        path = rng.choice(PATHS)
        hdrs = {":method": "POST", ":path": path, contract.ORIGINAL_PATH_HEADER: path, contract.MODEL_HEADER: "m"}
        backend = rng.choice(["openai", "anthropic", "azure"])
        out = await drive(
            processor, [request_headers(hdrs, attributes=upstream_attributes(backend)), request_body(raw)]
        )
        last = out[-1]
        if last.WhichOneof("response") == "immediate_response":
            assert last.immediate_response.status.code in (400, 401, 404, 422), last


@pytest.mark.parametrize("seed", range(40))
async def test_random_responses_never_crash(seed: int) -> None:
    rng = random.Random(1000 + seed)
    for endpoint, schema in (
        (Endpoint.CHAT_COMPLETIONS, "Anthropic"),
        (Endpoint.MESSAGES, "OpenAI"),
        (Endpoint.CHAT_COMPLETIONS, "OpenAI"),
        (Endpoint.MESSAGES, "Anthropic"),
    ):
        pair = get_pair(endpoint, schema)
        assert pair is not None
        client = ClientSchema.ANTHROPIC if endpoint is Endpoint.MESSAGES else ClientSchema.OPENAI
        for stream in (False, True):
            tr = pair.response_translator(ResponseContext(endpoint, client, "m", "m", stream, True))
            if stream:
                data = b"".join(
                    b"event: " + rng.choice([b"message_start", b"content_block_delta", b"x"]) + b"\n"
                    b"data: " + json.dumps(rand_value(rng)).encode() + b"\n\n"
                    for _ in range(8)
                )
                tr.feed(data)
                tr.finish()
            else:
                # Shape errors are allowed here: the router turns them into a 502 (tested below).
                with contextlib.suppress(AttributeError, TypeError, KeyError, ValueError, IndexError):
                    tr.body(json.dumps(rand_value(rng)).encode())
                tr.error(500, json.dumps(rand_value(rng)).encode())


async def test_untranslatable_backend_body_is_502_in_client_schema() -> None:
    chat = {":method": "POST", ":path": "/v1/chat/completions"}
    out = await drive(
        ExternalProcessor(_config()),
        [
            request_headers(chat),
            request_body({"model": "m", "messages": []}),
            response_headers({":status": "200", "content-type": "application/json"}, "anthropic"),
            response_body(b'{"content": 5, "usage": 5}'),
        ],
    )
    common = out[-1].response_body.response
    assert json.loads(common.body_mutation.body)["error"]["type"] == "server_error"
    assert {h.header.key: h.header.raw_value for h in common.header_mutation.set_headers}[":status"] == b"502"
