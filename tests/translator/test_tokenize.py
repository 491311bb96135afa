"""vLLM's POST /tokenize: its endpoint, the OpenAI-schema passthrough it keeps (vLLM serves it), and
Gemini on Vertex AI through :countTokens."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aigw.translator.v1 import config_pb2
from aigw_translator.endpoints import JSON_ENDPOINTS, ClientSchema, Endpoint, resolve_path
from aigw_translator.errors import GatewayError, openai_error_type
from aigw_translator.translators import RequestContext, ResponseContext, get_pair
from aigw_translator.translators.base import TranslationError
from aigw_translator.translators.openai_gemini import (
    GeminiCountTokensToTokenizeResponse,
    tokenize_to_count_tokens,
    translate_tokenize_request,
)

MODEL = "gemini-2.5-flash"
COUNT_PATH = "/v1/projects/my-proj/locations/us-central1/publishers/google/models/gemini-2.5-flash:countTokens"


def _gemini_backend() -> config_pb2.Backend:
    backend = config_pb2.Backend(name="ns/gemini", schema=config_pb2.Schema(name="GCPVertexAI"))
    backend.auth.gcp_credentials.project_name = "my-proj"
    backend.auth.gcp_credentials.region = "us-central1"
    return backend


def _rctx(backend: config_pb2.Backend, model: str = MODEL, query: str = "") -> RequestContext:
    return RequestContext(Endpoint.TOKENIZE, backend, "/tokenize", query, model, {})


def _resp_ctx() -> ResponseContext:
    return ResponseContext(Endpoint.TOKENIZE, ClientSchema.OPENAI, MODEL, MODEL, stream=False)


@pytest.mark.parametrize(
    ("path", "root", "local", "query"),
    [
        ("/tokenize", "", "/tokenize", ""),
        ("/tokenize/?a=1", "", "/tokenize", "?a=1"),
        ("/ai/tokenize", "/ai", "/tokenize", ""),
    ],
)
def test_tokenize_path_is_an_openai_json_endpoint(path: str, root: str, local: str, query: str) -> None:
    resolved = resolve_path(path, root)
    assert resolved is not None
    assert (resolved.endpoint, resolved.local_path, resolved.query) == (Endpoint.TOKENIZE, local, query)
    assert resolved.client_schema is ClientSchema.OPENAI
    assert Endpoint.TOKENIZE in JSON_ENDPOINTS
    # vLLM's other inference routes outside /v1 pass through; its admin routes do not.
    detokenize = resolve_path(root + "/detokenize", root)
    assert detokenize is not None and detokenize.endpoint is Endpoint.PASSTHROUGH
    assert resolve_path(root + "/reset_prefix_cache", root) is None


@pytest.mark.parametrize("prefix", ["", "v1", "/openai/v1"])
@pytest.mark.parametrize("override", ["", "served-name"])
@pytest.mark.parametrize("query", ["", "?x=1"])
def test_openai_backend_gets_tokenize_as_the_passthrough_sent_it(prefix: str, override: str, query: str) -> None:
    """An OpenAI-schema backend (vLLM) gets exactly what it got when /tokenize was passed through."""
    backend = config_pb2.Backend(name="ns/vllm", schema=config_pb2.Schema(name="OpenAI", prefix=prefix))
    backend.model_name_override = override
    model = override or "llama"
    body = json.dumps({"model": "llama", "prompt": "hello world", "add_special_tokens": False}).encode()
    tokenize, passthrough = get_pair(Endpoint.TOKENIZE, "OpenAI"), get_pair(Endpoint.PASSTHROUGH, "OpenAI")
    assert tokenize is not None and passthrough is not None
    got = tokenize.request(RequestContext(Endpoint.TOKENIZE, backend, "/tokenize", query, model, {}), body)
    before = passthrough.request(RequestContext(Endpoint.PASSTHROUGH, backend, "/tokenize", query, model, {}), body)
    assert got == before
    assert got.path == "/tokenize" + query
    if override:
        assert json.loads(got.body or b"")["model"] == "served-name"
    else:
        assert got.body is None  # forwarded as sent
    ctx = _resp_ctx()
    assert tokenize.response_translator(ctx).body(b'{"count":2,"max_model_len":8192,"tokens":[1,2]}') is None


def test_only_openai_and_gemini_backends_serve_tokenize() -> None:
    assert get_pair(Endpoint.TOKENIZE, "") is get_pair(Endpoint.TOKENIZE, "OpenAI")
    for schema in ("AzureOpenAI", "Anthropic", "AWSBedrock", "AWSAnthropic", "GCPAnthropic", "Cohere"):
        assert get_pair(Endpoint.TOKENIZE, schema) is None, schema
    pair = get_pair(Endpoint.TOKENIZE, "GCPVertexAI")
    assert pair is not None and pair.request is translate_tokenize_request
    assert type(pair.response_translator(_resp_ctx())) is GeminiCountTokensToTokenizeResponse


@pytest.mark.parametrize(
    ("req", "want"),
    [
        (
            {"prompt": "hello world", "add_special_tokens": True},
            {"contents": [{"role": "user", "parts": [{"text": "hello world"}]}]},
        ),
        (
            {
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"},
                    {"role": "user", "content": [{"type": "text", "text": "there"}]},
                    {"role": "assistant", "content": "hello"},
                ],
                "add_generation_prompt": True,
                "return_token_strs": True,
            },
            {
                "contents": [
                    {"role": "user", "parts": [{"text": "hi"}, {"text": "there"}]},
                    {"role": "model", "parts": [{"text": "hello"}]},
                ],
                "systemInstruction": {"parts": [{"text": "be brief"}]},
            },
        ),
        (
            {
                "messages": [{"role": "user", "content": "weather?"}],
                "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            },
            {
                "contents": [{"role": "user", "parts": [{"text": "weather?"}]}],
                "tools": [
                    {"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": {"type": "object"}}]}
                ],
            },
        ),
    ],
)
def test_tokenize_to_count_tokens(req: dict[str, Any], want: dict[str, Any]) -> None:
    assert tokenize_to_count_tokens({"model": MODEL, **req}) == want


@pytest.mark.parametrize(
    ("req", "status", "message"),
    [
        ({}, 400, "exactly one of 'prompt' or 'messages'"),
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, 400, "exactly one of"),
        ({"prompt": ""}, 400, "non-empty string"),
        ({"prompt": ["a", "b"]}, 400, "non-empty string"),
        ({"messages": []}, 400, "non-empty array"),
        ({"messages": [{"role": "critic", "content": "x"}]}, 422, "critic"),
    ],
)
def test_tokenize_refusals(req: dict[str, Any], status: int, message: str) -> None:
    with pytest.raises(GatewayError) as info:
        tokenize_to_count_tokens({"model": MODEL, **req})
    assert info.value.status == status
    assert message in str(info.value)
    if status == 422:
        assert isinstance(info.value, TranslationError)


def test_translate_tokenize_request_posts_count_tokens() -> None:
    body = json.dumps({"model": "gemini", "prompt": "hello"}).encode()
    out = translate_tokenize_request(_rctx(_gemini_backend()), body)
    assert out.path == COUNT_PATH
    assert out.set_headers == {"content-type": "application/json"}
    assert json.loads(out.body or b"") == {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}


def test_translate_tokenize_request_needs_the_vertex_project() -> None:
    backend = config_pb2.Backend(name="ns/gemini", schema=config_pb2.Schema(name="GCPVertexAI"))
    with pytest.raises(GatewayError) as info:
        translate_tokenize_request(_rctx(backend), b'{"model": "m", "prompt": "x"}')
    assert info.value.status == 500


@pytest.mark.parametrize(
    ("answer", "count"),
    [
        ({"totalTokens": 7, "totalBillableCharacters": 20, "promptTokensDetails": [{"modality": "TEXT"}]}, 7),
        ({}, 0),  # proto JSON leaves a zero out
    ],
)
def test_count_tokens_answer_as_vllm_tokenize_response(answer: dict[str, Any], count: int) -> None:
    tr = GeminiCountTokensToTokenizeResponse(_resp_ctx())
    out = json.loads(tr.body(json.dumps(answer).encode()) or b"")
    assert out == {"count": count, "max_model_len": None, "tokens": []}
    assert tr.response_model == MODEL


@pytest.mark.parametrize("answer", [b"[]", b'{"totalTokens": "7"}', b'{"totalTokens": -1}', b'{"totalTokens": true}'])
def test_count_tokens_answer_without_a_count_is_refused(answer: bytes) -> None:
    with pytest.raises(ValueError):
        GeminiCountTokensToTokenizeResponse(_resp_ctx()).body(answer)


def test_count_tokens_error_is_an_openai_error_with_googles_status() -> None:
    google = {"error": {"code": 429, "message": "Resource exhausted.", "status": "RESOURCE_EXHAUSTED"}}
    out = json.loads(GeminiCountTokensToTokenizeResponse(_resp_ctx()).error(429, json.dumps(google).encode()))
    assert out["error"]["message"] == "Resource exhausted."
    assert out["error"]["code"] == "RESOURCE_EXHAUSTED"
    assert out["error"]["type"] == openai_error_type(429)
