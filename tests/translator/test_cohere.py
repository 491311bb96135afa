"""Cohere v2 client -> Cohere backend: paths, errors in Cohere's shape, usage (bodies and the chat
stream), and the router phase serving /cohere on one stream."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_translator.client_stream import ClientStream
from aigw_translator.endpoints import (
    JSON_ENDPOINTS,
    STREAMING_ENDPOINTS,
    ClientSchema,
    Endpoint,
    client_schema_of_path,
    resolve_path,
)
from aigw_translator.errors import GatewayError, gateway_error_body, to_client_error
from aigw_translator.server import ExternalProcessor
from aigw_translator.translators import RequestContext, ResponseContext, get_pair
from aigw_translator.translators.cohere_cohere import CohereResponse, CohereStream, translate_request
from aigw_translator.usage import from_cohere

from .extproc_helpers import (
    ROUTER_STREAM,
    drive,
    immediate_json,
    metadata,
    request_body,
    request_headers,
    response_body,
    response_headers,
    set_headers,
)
from .streams import events, run, splits

# ------------------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("path", "root", "endpoint"),
    [
        ("/cohere/v2/rerank", "", Endpoint.COHERE_RERANK),
        ("/cohere/v2/chat", "", Endpoint.COHERE_CHAT),
        ("/cohere/v2/embed/", "", Endpoint.COHERE_EMBED),
        ("/ai/cohere/v2/rerank?x=1", "/ai", Endpoint.COHERE_RERANK),
    ],
)
def test_cohere_paths_resolve_to_cohere_endpoints(path, root, endpoint) -> None:
    resolved = resolve_path(path, root)
    assert resolved is not None
    assert (resolved.endpoint, resolved.client_schema) == (endpoint, ClientSchema.COHERE)


@pytest.mark.parametrize("path", ["/cohere", "/cohere/", "/cohere/v2/classify", "/cohere/v1/rerank", "/cohere/v2"])
def test_unknown_cohere_paths_are_not_served_nor_passed_through(path) -> None:
    """No passthrough below /cohere: an OpenAI backend must never get them with its key."""
    assert resolve_path(path) is None
    assert client_schema_of_path(path) is ClientSchema.COHERE


def test_schema_of_unserved_paths() -> None:
    assert client_schema_of_path("/ai/cohere/v9/x?y=1") is ClientSchema.COHERE
    assert client_schema_of_path("/anthropic/v9") is ClientSchema.ANTHROPIC
    assert client_schema_of_path("/elsewhere/cohere-like") is ClientSchema.OPENAI


def test_cohere_chat_streams_and_every_cohere_endpoint_needs_a_json_model() -> None:
    assert Endpoint.COHERE_CHAT in STREAMING_ENDPOINTS
    assert Endpoint.COHERE_RERANK not in STREAMING_ENDPOINTS
    assert {Endpoint.COHERE_CHAT, Endpoint.COHERE_EMBED, Endpoint.COHERE_RERANK} <= JSON_ENDPOINTS


@pytest.mark.parametrize(
    ("endpoint", "schema", "served"),
    [
        (Endpoint.COHERE_RERANK, "Cohere", True),
        (Endpoint.COHERE_CHAT, "Cohere", True),
        (Endpoint.COHERE_EMBED, "Cohere", True),
        # Envoy AI Gateway has no OpenAI chat -> Cohere pair, nor Cohere's API on other schemas.
        (Endpoint.CHAT_COMPLETIONS, "Cohere", False),
        (Endpoint.EMBEDDINGS, "Cohere", False),
        (Endpoint.PASSTHROUGH, "Cohere", False),
        (Endpoint.COHERE_RERANK, "OpenAI", False),
        (Endpoint.COHERE_CHAT, "Anthropic", False),
    ],
)
def test_pairs(endpoint, schema, served) -> None:
    assert (get_pair(endpoint, schema) is not None) is served


# ------------------------------------------------------------------------------------ errors


def test_gateway_errors_have_cohere_shape() -> None:
    assert json.loads(gateway_error_body(ClientSchema.COHERE, 404, "unsupported path: /cohere/x")) == {
        "message": "unsupported path: /cohere/x"
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"message":"invalid api token"}', {"message": "invalid api token"}),
        (b'{"error":{"message":"rate limited","type":"rate_limit_error"}}', {"message": "rate limited"}),
        (b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}', {"message": "Overloaded"}),
        (b"<html>bad gateway</html>", {"message": "<html>bad gateway</html>"}),
        (b"", {"message": "upstream returned status 429"}),
    ],
)
def test_upstream_errors_become_cohere_errors(body, expected) -> None:
    assert json.loads(to_client_error(ClientSchema.COHERE, 429, body)) == expected


def test_cohere_error_body_passes_byte_exact() -> None:
    body = b'{"message": "too many tokens", "id": "x"}'
    assert to_client_error(ClientSchema.COHERE, 400, body) == body


# ------------------------------------------------------------------------------------- usage


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # tokens first (what the model processed), as Envoy AI Gateway reads rerank usage
        (
            {
                "billed_units": {"input_tokens": 50, "output_tokens": 26},
                "tokens": {"input_tokens": 793, "output_tokens": 61},
            },
            (793, 0, 61, 854, True),
        ),
        (
            {"tokens": {"input_tokens": 793, "output_tokens": 61}, "cached_tokens": 176},
            (793, 176, 61, 854, True),
        ),
        # billed units when there are no token counts (embed's meta)
        ({"api_version": {"version": "2"}, "billed_units": {"input_tokens": 9}}, (9, 0, 0, 9, True)),
        # rerank billed only in search units: no token usage is invented
        ({"billed_units": {"search_units": 1}}, (0, 0, 0, 0, False)),
        ({"tokens": {}}, (0, 0, 0, 0, False)),
        (None, (0, 0, 0, 0, False)),
        ({"tokens": {"input_tokens": -3, "output_tokens": "7"}}, (0, 0, 0, 0, True)),
    ],
)
def test_from_cohere(usage, expected) -> None:
    u = from_cohere(usage)
    assert (u.input_tokens, u.cached_input_tokens, u.output_tokens, u.total_tokens, u.known) == expected


# ----------------------------------------------------------------------------------- request

BODY = json.dumps({"model": "rerank-english-v3.0", "query": "q", "documents": ["a", "b"]}).encode()


def _backend(version: str = "", override: str = "") -> config_pb2.Backend:
    return config_pb2.Backend(
        name="b", schema=config_pb2.Schema(name="Cohere", version=version), model_name_override=override
    )


@pytest.mark.parametrize(
    ("endpoint", "version", "override", "path", "model"),
    [
        (Endpoint.COHERE_RERANK, "v2", "", "/v2/rerank", None),
        (Endpoint.COHERE_RERANK, "", "", "/v2/rerank", None),
        (Endpoint.COHERE_CHAT, "/v2/", "", "/v2/chat", None),
        (Endpoint.COHERE_EMBED, "v1", "", "/v1/embed", None),
        (Endpoint.COHERE_RERANK, "v2", "rerank-v3.5", "/v2/rerank", "rerank-v3.5"),
    ],
)
def test_request(endpoint, version, override, path, model) -> None:
    ctx = RequestContext(
        endpoint, _backend(version, override), "/cohere/v2/x", "?q=1", override or "rerank-english-v3.0"
    )
    tr = translate_request(ctx, BODY)
    assert tr.path == path
    assert (json.loads(tr.body)["model"] if tr.body else None) == model
    if tr.body:
        assert json.loads(tr.body)["documents"] == ["a", "b"]


@pytest.mark.parametrize("version", ["..", "v2/../admin", "v 2", "v2?x=1"])
def test_a_version_that_is_not_one_path_segment_is_refused(version) -> None:
    ctx = RequestContext(Endpoint.COHERE_RERANK, _backend(version), "/cohere/v2/rerank", "", "m")
    with pytest.raises(GatewayError) as err:
        translate_request(ctx, BODY)
    assert err.value.status == 500


# ---------------------------------------------------------------------------------- response


def _ctx(endpoint: Endpoint, stream: bool = False) -> ResponseContext:
    return ResponseContext(endpoint, ClientSchema.COHERE, "m", "m-effective", stream)


@pytest.mark.parametrize(
    ("endpoint", "body", "usage"),
    [
        (
            Endpoint.COHERE_RERANK,
            {
                "id": "r",
                "results": [{"index": 1, "relevance_score": 0.9}],
                "meta": {"billed_units": {"search_units": 1}, "tokens": {"input_tokens": 12, "output_tokens": 0}},
            },
            (12, 0, True),
        ),
        (
            Endpoint.COHERE_CHAT,
            {
                "id": "c",
                "finish_reason": "COMPLETE",
                "message": {"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
                "usage": {
                    "billed_units": {"input_tokens": 5, "output_tokens": 2},
                    "tokens": {"input_tokens": 70, "output_tokens": 2},
                },
            },
            (70, 2, True),
        ),
        (
            Endpoint.COHERE_EMBED,
            {
                "id": "e",
                "embeddings": {"float": [[0.1]]},
                "texts": ["x"],
                "meta": {"billed_units": {"input_tokens": 3}},
            },
            (3, 0, True),
        ),
        # a chat answer's `meta` is not its usage
        (Endpoint.COHERE_CHAT, {"meta": {"tokens": {"input_tokens": 4}}}, (0, 0, False)),
    ],
)
def test_body_usage(endpoint, body, usage) -> None:
    tr = CohereResponse(_ctx(endpoint))
    assert tr.body(json.dumps(body).encode()) is None
    assert (tr.usage.input_tokens, tr.usage.output_tokens, tr.usage.known) == usage
    assert tr.response_model == ""  # Cohere names no model: the router phase reports the effective one


def test_error_is_cohere_shaped() -> None:
    tr = CohereResponse(_ctx(Endpoint.COHERE_RERANK))
    assert json.loads(tr.error(500, b'{"error":{"message":"x"}}')) == {"message": "x"}


STREAM = (
    b'event: message-start\ndata: {"id":"c1","type":"message-start","delta":{"message":{"role":"assistant","content":[],"tool_plan":"","tool_calls":[],"citations":[]}}}\n\n'  # noqa: E501
    b'event: content-start\ndata: {"type":"content-start","index":0,"delta":{"message":{"content":{"type":"text","text":""}}}}\n\n'  # noqa: E501
    b'event: content-delta\ndata: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"message-end"}}}}\n\n'  # noqa: E501
    b'event: content-end\ndata: {"type":"content-end","index":0}\n\n'
    b'event: message-end\ndata: {"type":"message-end","delta":{"finish_reason":"COMPLETE","usage":{"billed_units":{"input_tokens":5,"output_tokens":3},"tokens":{"input_tokens":71,"output_tokens":3},"cached_tokens":64}}}\n\n'  # noqa: E501
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("chunks", splits(STREAM, 29))
def test_stream_is_byte_exact_and_counts_usage(chunks: list[bytes]) -> None:
    tr = CohereStream(_ctx(Endpoint.COHERE_CHAT, stream=True))
    assert run(tr, chunks) == STREAM
    u = tr.usage
    assert (u.input_tokens, u.cached_input_tokens, u.output_tokens, u.known) == (71, 64, 3, True)


def test_stream_cut_before_message_end_has_no_usage() -> None:
    tr = CohereStream(_ctx(Endpoint.COHERE_CHAT, stream=True))
    run(tr, [STREAM[: STREAM.index(b"event: message-end")]])
    assert not tr.usage.known


def test_stream_message_end_without_event_line_counts() -> None:
    tr = CohereStream(_ctx(Endpoint.COHERE_CHAT, stream=True))
    run(tr, [b'data: {"type":"message-end","delta":{"usage":{"tokens":{"input_tokens":2,"output_tokens":1}}}}\n\n'])
    assert (tr.usage.input_tokens, tr.usage.output_tokens) == (2, 1)


# ----------------------------------------------------------------------------- client stream


@pytest.mark.parametrize(
    "end",
    [
        b'event: message-end\ndata: {"type":"message-end","delta":{"finish_reason":"COMPLETE"}}\n\n',
        b'data: {"type":"message-end","delta":{}}\n\n',
        b"data: [DONE]\n\n",
    ],
)
def test_cohere_stream_ends_are_recognised_at_every_split(end: bytes) -> None:
    start = STREAM[: STREAM.index(b"event: content-end")]
    unfinished = ClientStream(Endpoint.COHERE_CHAT, ClientSchema.COHERE)
    unfinished.sent(start)
    assert not unfinished.complete  # the model's text "message-end" is no end
    for i in range(len(end)):
        stream = ClientStream(Endpoint.COHERE_CHAT, ClientSchema.COHERE)
        stream.sent(start + end[:i])
        stream.sent(end[i:])
        assert stream.complete, i


def test_cut_cohere_stream_ends_with_cohere_error_end_event() -> None:
    out = ClientStream(Endpoint.COHERE_CHAT, ClientSchema.COHERE).error_event()
    [(name, data)] = events(out)
    assert name == "message-end"
    assert data["delta"]["finish_reason"] == "ERROR"
    assert "before the response was complete" in data["delta"]["error"]


# ------------------------------------------------------------------------------ router phase

COHERE = "ns/cohere/route/r/rule/0/ref/0"


def config() -> config_pb2.TranslatorConfig:
    cfg = config_pb2.TranslatorConfig(name="ns/gw")
    backend = cfg.backends.add(
        name=COHERE,
        service_backend="ns/cohere",
        route_name="ns/r",
        schema=config_pb2.Schema(name="Cohere", version="v2"),
    )
    backend.auth.api_key.key = "co-secret-key"
    return cfg


RERANK = {":method": "POST", ":path": "/cohere/v2/rerank", ":authority": "gw", "content-type": "application/json"}
ON_ONE_STREAM = (*ROUTER_STREAM, (contract.ROUTE_BACKEND_METADATA_KEY, COHERE))


async def test_rerank_on_one_stream_gets_path_bearer_key_and_meters_usage() -> None:
    hdrs = {**RERANK, "authorization": "Bearer client-key"}
    answer = {"id": "r", "results": [], "meta": {"tokens": {"input_tokens": 21}, "billed_units": {"search_units": 1}}}
    out = await drive(
        ExternalProcessor(config()),
        [
            request_headers(hdrs),
            request_body(json.loads(BODY)),
            response_headers({":status": "200", "content-type": "application/json"}),
            response_body(json.dumps(answer).encode()),
        ],
        ON_ONE_STREAM,
    )
    sent = set_headers(out[1].request_body.response.header_mutation)
    assert sent[":path"] == "/v2/rerank"
    assert sent["authorization"] == "Bearer co-secret-key"
    fields = metadata(out[3])
    assert fields[contract.INPUT_TOKENS_KEY] == 21
    assert fields[contract.RESPONSE_MODEL_KEY] == "rerank-english-v3.0"
    assert fields[contract.BACKEND_NAME_METADATA_KEY] == COHERE


async def test_unknown_cohere_path_is_a_cohere_404() -> None:
    out = await drive(ExternalProcessor(config()), [request_headers({**RERANK, ":path": "/cohere/v2/classify"})])
    assert immediate_json(out[0]) == (404, {"message": "unsupported path: /cohere/v2/classify"})


async def test_missing_model_is_a_cohere_400() -> None:
    out = await drive(
        ExternalProcessor(config()), [request_headers(RERANK), request_body({"query": "q", "documents": []})]
    )
    assert immediate_json(out[1]) == (400, {"message": "field 'model' is required"})


async def test_openai_chat_to_a_cohere_backend_is_a_clear_422() -> None:
    hdrs = {**RERANK, ":path": "/v1/chat/completions"}
    out = await drive(
        ExternalProcessor(config()),
        [request_headers(hdrs), request_body({"model": "command-a", "messages": []})],
        ON_ONE_STREAM,
    )
    status, body = immediate_json(out[1])
    assert status == 422
    assert "not supported by backend schema Cohere" in body["error"]["message"]


async def test_provider_401_reaches_the_client_cohere_shaped_without_the_key() -> None:
    out = await drive(
        ExternalProcessor(config()),
        [
            request_headers(RERANK),
            request_body(json.loads(BODY)),
            response_headers({":status": "401", "content-type": "application/json"}),
            response_body(b'{"error":"invalid api token co-secret-key"}'),
        ],
        ON_ONE_STREAM,
    )
    body = out[3].response_body.response.body_mutation.body
    rejected = "the provider rejected the gateway's credential for this backend (status 401)"
    assert json.loads(body) == {"message": f"{rejected}: invalid api token [REDACTED]"}


# ------------------------------------------------------------------------------- random shapes

_KEYS = ["type", "delta", "usage", "meta", "tokens", "billed_units", "input_tokens", "output_tokens", "cached_tokens"]


def _rand(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 4 else 4)
    if kind == 0:
        return rng.choice([None, True, -1, 2.5, float("1e300"), "message-end", "x"])
    if kind == 1:
        return rng.randrange(1000)
    if kind in (2, 3):
        return rng.choice(["", "message-end", "content-delta", "12"])
    if kind in (4, 5):
        return {rng.choice(_KEYS): _rand(rng, depth + 1) for _ in range(rng.randrange(5))}
    return [_rand(rng, depth + 1) for _ in range(rng.randrange(3))]


@pytest.mark.parametrize("seed", range(30))
def test_random_answers_and_streams_never_crash(seed: int) -> None:
    """Whatever JSON object a backend answers, the passthrough forwards it unchanged and usage stays
    sane; any other success answer (but a stream) is a ValueError (the router phase's 502 in the client's shape)."""
    rng = random.Random(seed)
    for endpoint in (Endpoint.COHERE_CHAT, Endpoint.COHERE_EMBED, Endpoint.COHERE_RERANK):
        body = CohereResponse(_ctx(endpoint))
        answer = _rand(rng)
        if isinstance(answer, dict):
            assert body.body(json.dumps(answer).encode()) is None
        else:
            with pytest.raises(ValueError, match="neither a JSON object"):
                body.body(json.dumps(answer).encode())
        assert body.usage.input_tokens >= 0 and body.usage.cached_input_tokens <= body.usage.input_tokens
        json.loads(body.error(rng.choice([400, 429, 500]), json.dumps(_rand(rng)).encode()))
    stream = CohereStream(_ctx(Endpoint.COHERE_CHAT, stream=True))
    data = b"".join(
        b"event: "
        + rng.choice([b"message-end", b"content-delta", b"x"])
        + b"\ndata: "
        + json.dumps(_rand(rng)).encode()
        + b"\n\n"
        for _ in range(8)
    )
    assert run(stream, [data[i : i + 13] for i in range(0, len(data), 13)]) == data
    assert stream.usage.total_tokens == stream.usage.input_tokens + stream.usage.output_tokens
