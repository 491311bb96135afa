"""OpenAI embeddings -> AWS Bedrock InvokeModel (Titan Text Embeddings, Cohere Embed)."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_translator.endpoints import ClientSchema, Endpoint
from aigw_translator.errors import GatewayError
from aigw_translator.server import ExternalProcessor
from aigw_translator.translators import RequestContext, ResponseContext, TranslationError, get_pair
from aigw_translator.translators.bedrock_embeddings import (
    BedrockEmbeddingsToOpenAIResponse,
    embeddings_to_invoke,
    family,
    translate_request,
)

from .extproc_helpers import drive, metadata, request_body, request_headers, response_body, response_headers

TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-english-v3"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("amazon.titan-embed-text-v2:0", "titan-v2"),
        ("us.amazon.titan-embed-text-v2:0", "titan-v2"),
        ("arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0", "titan-v2"),
        ("amazon.titan-embed-text-v1", "titan-v1"),
        ("amazon.titan-embed-g1-text-02", "titan-v1"),
        ("cohere.embed-english-v3", "cohere-v3"),
        ("eu.cohere.embed-multilingual-v3", "cohere-v3"),
        ("cohere.embed-v4:0", "cohere-v4"),
        ("global.cohere.embed-v4:0", "cohere-v4"),
    ],
)
def test_family(model: str, expected: str) -> None:
    assert family(model) == expected


@pytest.mark.parametrize(
    "model", ["amazon.nova-micro-v1:0", "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/x"]
)
def test_a_model_of_no_known_family_is_refused(model: str) -> None:
    with pytest.raises(TranslationError) as err:
        family(model)
    assert err.value.status == 422 and "embedding model" in err.value.message


@pytest.mark.parametrize(
    ("req", "model", "expected"),
    [
        ({"input": "hello"}, TITAN, {"inputText": "hello", "normalize": True}),
        ({"input": ["hello"]}, TITAN, {"inputText": "hello", "normalize": True}),
        ({"input": "hi", "dimensions": 256}, TITAN, {"inputText": "hi", "dimensions": 256, "normalize": True}),
        ({"input": "hi", "encoding_format": "base64", "user": "u"}, TITAN, {"inputText": "hi", "normalize": True}),
        ({"input": "hi"}, "amazon.titan-embed-text-v1", {"inputText": "hi"}),
        (
            {"input": ["a", "b"]},
            COHERE,
            {"texts": ["a", "b"], "input_type": "search_document", "embedding_types": ["float"]},
        ),
        (
            {"input": "q", "input_type": "search_query", "truncate": "END"},
            COHERE,
            {"texts": ["q"], "input_type": "search_query", "embedding_types": ["float"], "truncate": "END"},
        ),
        (
            {"input": "a", "dimensions": 512},
            "cohere.embed-v4:0",
            {"texts": ["a"], "input_type": "search_document", "embedding_types": ["float"], "output_dimension": 512},
        ),
    ],
)
def test_request(req: dict[str, Any], model: str, expected: dict[str, Any]) -> None:
    assert embeddings_to_invoke({"model": "m", **req}, model) == expected


@pytest.mark.parametrize(
    ("req", "model", "status", "words"),
    [
        ({"input": ["a", "b"]}, TITAN, 422, "one text per request"),
        ({"input": "a", "dimensions": 256}, "amazon.titan-embed-text-v1", 422, "'dimensions' is not supported"),
        ({"input": "a", "dimensions": 256}, COHERE, 422, "only by Embed v4"),
        ({"input": [1, 2, 3]}, TITAN, 422, "token arrays"),
        ({"input": [[1, 2], [3]]}, COHERE, 422, "token arrays"),
        ({"input": ["x"] * 97}, COHERE, 422, "at most 96"),
        ({"input": []}, COHERE, 400, "'input'"),
        ({}, TITAN, 400, "'input'"),
        ({"input": "a", "encoding_format": "int8"}, TITAN, 400, "encoding_format"),
        ({"input": "a", "dimensions": 0}, TITAN, 400, "'dimensions'"),
        ({"input": "a", "input_type": "image"}, COHERE, 400, "input_type"),
        ({"input": "a", "truncate": "MIDDLE"}, COHERE, 400, "truncate"),
    ],
)
def test_requests_that_cannot_be_honoured_are_clear_errors(
    req: dict[str, Any], model: str, status: int, words: str
) -> None:
    with pytest.raises(GatewayError) as err:
        embeddings_to_invoke({"model": "m", **req}, model)
    assert err.value.status == status and words in err.value.message


def test_translate_request_path_and_registry() -> None:
    backend = config_pb2.Backend(name="b", schema=config_pb2.Schema(name="AWSBedrock"))
    ctx = RequestContext(Endpoint.EMBEDDINGS, backend, "/v1/embeddings", "", "us.amazon.titan-embed-text-v2:0")
    out = translate_request(ctx, b'{"model":"x","input":"hi"}')
    assert out.path == "/model/us.amazon.titan-embed-text-v2%3A0/invoke"
    assert out.set_headers["content-type"] == "application/json"
    assert json.loads(out.body or b"") == {"inputText": "hi", "normalize": True}
    pair = get_pair(Endpoint.EMBEDDINGS, "AWSBedrock")
    assert pair is not None and pair.request is translate_request


# ----------------------------------------------------------------------------- response


def _ctx(model: str, *, base64_embeddings: bool = False, headers: dict[str, str] | None = None) -> ResponseContext:
    return ResponseContext(
        endpoint=Endpoint.EMBEDDINGS,
        client_schema=ClientSchema.OPENAI,
        request_model="alias",
        effective_model=model,
        stream=False,
        response_headers=headers or {},
        base64_embeddings=base64_embeddings,
    )


def test_titan_response() -> None:
    tr = BedrockEmbeddingsToOpenAIResponse(_ctx(TITAN))
    out = json.loads(tr.body(b'{"embedding":[0.5,-0.25,1],"inputTextTokenCount":4}') or b"")
    assert out == {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25, 1.0]}],
        "model": TITAN,
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }
    assert tr.usage.known and tr.usage.input_tokens == 4 and tr.response_model == TITAN


@pytest.mark.parametrize(
    "body",
    [
        {"id": "e1", "embeddings": [[0.1, 0.2], [0.3, 0.4]], "texts": ["a", "b"], "response_type": "embeddings_floats"},
        {"id": "e1", "embeddings": {"float": [[0.1, 0.2], [0.3, 0.4]]}, "response_type": "embeddings_by_type"},
    ],
)
def test_cohere_response_usage_from_the_header(body: dict[str, Any]) -> None:
    tr = BedrockEmbeddingsToOpenAIResponse(_ctx(COHERE, headers={"x-amzn-bedrock-input-token-count": "7"}))
    out = json.loads(tr.body(json.dumps(body).encode()) or b"")
    assert [d["embedding"] for d in out["data"]] == [[0.1, 0.2], [0.3, 0.4]]
    assert [d["index"] for d in out["data"]] == [0, 1]
    assert out["usage"] == {"prompt_tokens": 7, "total_tokens": 7} and tr.usage.known


def test_cohere_response_without_the_header_has_unknown_usage() -> None:
    tr = BedrockEmbeddingsToOpenAIResponse(_ctx(COHERE))
    tr.body(b'{"embeddings":{"float":[[1.0]]}}')
    assert not tr.usage.known


def test_base64_is_little_endian_float32() -> None:
    values = [0.5, -1.25, 3.0, 1e-3]
    tr = BedrockEmbeddingsToOpenAIResponse(_ctx(TITAN, base64_embeddings=True))
    out = json.loads(tr.body(json.dumps({"embedding": values, "inputTextTokenCount": 1}).encode()) or b"")
    raw = base64.b64decode(out["data"][0]["embedding"])
    assert struct.unpack(f"<{len(values)}f", raw) == pytest.approx(values)


@pytest.mark.parametrize(
    "body", [b"[]", b'{"embedding":"x"}', b'{"embeddings":{"int8":[[1]]}}', b'{"embedding":[1,true]}', b"nope"]
)
def test_a_body_of_another_shape_raises(body: bytes) -> None:
    with pytest.raises(ValueError):
        BedrockEmbeddingsToOpenAIResponse(_ctx(TITAN)).body(body)


def test_error_keeps_the_bedrock_type() -> None:
    headers = {"x-amzn-errortype": "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    out = json.loads(BedrockEmbeddingsToOpenAIResponse(_ctx(TITAN, headers=headers)).error(429, b'{"message":"slow"}'))
    assert out["error"] == {"message": "slow", "type": "rate_limit_error", "param": None, "code": "ThrottlingException"}


# ----------------------------------------------------------------------------- router phase

BACKEND = "ns/bedrock/route/r/rule/0/ref/0"


def _config() -> config_pb2.TranslatorConfig:
    cfg = config_pb2.TranslatorConfig(name="ns/gw")
    cfg.backends.add(
        name=BACKEND,
        service_backend="ns/bedrock",
        route_name="ns/r",
        schema=config_pb2.Schema(name="AWSBedrock"),
        model_name_override=COHERE,
    )
    return cfg


@pytest.mark.parametrize("encoding", ["base64", "float", None])
async def test_router_phase_packs_base64_when_the_client_asked(encoding: str | None) -> None:
    req: dict[str, Any] = {"model": "embedder", "input": ["a", "b"]}
    if encoding:
        req["encoding_format"] = encoding
    out = await drive(
        ExternalProcessor(_config()),
        [
            request_headers({":method": "POST", ":path": "/v1/embeddings", "content-type": "application/json"}),
            request_body(req),
            response_headers(
                {":status": "200", "content-type": "application/json", "x-amzn-bedrock-input-token-count": "3"},
                BACKEND,
            ),
            response_body(b'{"embeddings":{"float":[[0.5],[0.25]]},"response_type":"embeddings_by_type"}', True),
        ],
    )
    sent = json.loads(out[3].response_body.response.body_mutation.body)
    first = sent["data"][0]["embedding"]
    if encoding == "base64":
        assert struct.unpack("<f", base64.b64decode(first)) == (0.5,)
    else:
        assert first == [0.5]
    assert sent["usage"]["prompt_tokens"] == 3 and metadata(out[3])[contract.INPUT_TOKENS_KEY] == 3
