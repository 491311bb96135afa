from __future__ import annotations

import json
from typing import Any

import pytest

from aigw.translator.v1 import config_pb2
from aigw_contract import AZURE_DEFAULT_API_VERSION
from aigw_translator.endpoints import ClientSchema, Endpoint, resolve_path
from aigw_translator.errors import GatewayError
from aigw_translator.translators import RequestContext, ResponseContext, get_pair
from aigw_translator.translators.openai_openai import OpenAIResponse, translate_request, translate_request_azure

from .streams import events, run, splits


def _ctx(path: str, schema: config_pb2.Schema, override: str = "", model: str = "gpt") -> RequestContext:
    resolved = resolve_path(path)
    assert resolved is not None
    backend = config_pb2.Backend(name="b", schema=schema, model_name_override=override)
    return RequestContext(resolved.endpoint, backend, resolved.local_path, resolved.query, override or model, {})


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
BODY = json.dumps({"model": "gpt", "messages": []}).encode()


@pytest.mark.parametrize(
    ("path", "prefix", "expected"),
    [
        ("/v1/chat/completions", "", "/v1/chat/completions"),
        ("/v1/chat/completions?a=1", "", "/v1/chat/completions?a=1"),
        ("/v1/embeddings", "openai/v1", "/openai/v1/embeddings"),
        ("/v1/responses", "/api/v3/", "/api/v3/responses"),
        ("/v1/files/f1", "", "/v1/files/f1"),
        ("/v1/audio/transcriptions", "x", "/x/audio/transcriptions"),
    ],
)
def test_openai_paths(path: str, prefix: str, expected: str) -> None:
    tr = translate_request(_ctx(path, config_pb2.Schema(name="OpenAI", prefix=prefix)), BODY)
    assert tr.path == expected
    assert tr.body is None


def test_model_override_replaces_body_model() -> None:
    tr = translate_request(_ctx("/v1/chat/completions", config_pb2.Schema(name="OpenAI"), override="gpt-4o"), BODY)
    assert json.loads(tr.body)["model"] == "gpt-4o"
    # multipart bodies are never touched
    tr = translate_request(_ctx("/v1/audio/transcriptions", config_pb2.Schema(name="OpenAI"), override="w"), b"--x")
    assert tr.body is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/chat/completions", "/openai/deployments/dep/chat/completions?api-version=2024-10-21"),
        ("/v1/embeddings?api-version=old&x=1", "/openai/deployments/dep/embeddings?x=1&api-version=2024-10-21"),
        ("/v1/files", "/openai/files?api-version=2024-10-21"),
    ],
)
def test_azure_paths(path: str, expected: str) -> None:
    ctx = _ctx(path, config_pb2.Schema(name="AzureOpenAI", version="2024-10-21"), override="dep")
    assert translate_request_azure(ctx, BODY).path == expected


@pytest.mark.parametrize(
    ("version", "query", "sent"),
    [
        ("2025-03-01-preview", "", "2025-03-01-preview"),
        ("preview", "", "preview"),  # not dated: current
        ("", "?api-version=2025-04-01-preview", "2025-04-01-preview"),  # the client's
        ("2024-10-21", "", None),
        ("", "", None),  # the default, 2024-10-21
    ],
)
def test_the_responses_api_on_classic_azure_needs_a_version_that_serves_it(version: str, query: str, sent) -> None:
    """From a provider review: Azure serves /openai/responses from api-version 2025-03-01-preview
    on, and the default (2024-10-21) is older: the provider's 404 said nothing of why. The gateway
    refuses it, naming the version it would send."""
    ctx = _ctx("/v1/responses" + query, config_pb2.Schema(name="AzureOpenAI", version=version), override="dep")
    if sent is not None:
        assert translate_request_azure(ctx, BODY).path == f"/openai/responses?api-version={sent}"
        return
    with pytest.raises(GatewayError) as refused:
        translate_request_azure(ctx, BODY)
    assert refused.value.status == 422
    assert "needs api-version 2025-03-01-preview or later; this backend is sent 2024-10-21" in refused.value.message


@pytest.mark.parametrize("model", [".", "..", "...."])
def test_a_model_of_dots_alone_is_no_path_segment(model: str) -> None:
    """From a security review: a model of dots alone, which percent-encoding leaves as it is, became
    `/openai/deployments/../chat/completions` (and `/model/../converse`, a Vertex `models/..`): a
    relative segment the provider resolves elsewhere. Each provider URL that carries the model
    refuses it with a 400; a model with dots among other characters stays a name."""
    from aigw_translator.translators import (
        anthropic_openai,
        bedrock_anthropic,
        bedrock_count_tokens,
        openai_bedrock,
        vertex,
    )

    gcp = config_pb2.Backend(auth=config_pb2.Auth(gcp_credentials={"project_name": "p", "region": "us-central1"}))
    azure = config_pb2.Schema(name="AzureOpenAI", version="2024-10-21")
    builders = [
        lambda m: translate_request_azure(_ctx("/v1/chat/completions", azure, model=m), BODY).path,
        lambda m: (
            anthropic_openai.translate_request_azure(
                RequestContext(
                    Endpoint.MESSAGES, config_pb2.Backend(name="b", schema=azure), "/anthropic/v1/messages", "", m, {}
                ),
                b'{"model": "x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}',
            ).path
        ),
        lambda m: openai_bedrock.model_path(m, stream=False),
        lambda m: bedrock_anthropic.invoke_path(m, stream=True),
        lambda m: bedrock_count_tokens.count_path(m),
        lambda m: vertex.vertex_path(gcp, vertex.GOOGLE, m, "generateContent"),
    ]
    for build in builders:
        with pytest.raises(GatewayError) as refused:
            build(model)
        assert refused.value.status == 400 and "dots alone" in refused.value.message
        assert "/gpt-4.1..x" in build("gpt-4.1..x")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/deployments/secret-deployment/chat/completions",
        "/v1/Deployments/secret-deployment/chat/completions",
        "/v1/DEPLOYMENTS/secret-deployment/embeddings?api-version=2024-10-21",
        "/v1/%64eployments/secret-deployment/chat/completions",
        "/v1/%2564eployments/secret-deployment/chat/completions",
        "/v1/deployments%2Fsecret-deployment%2Fchat%2Fcompletions",
        "/v1/files/../deployments/secret-deployment/chat/completions",
        "/v1/files/%2E%2E/deployments/secret-deployment/chat/completions",
        "/v1/deployments;x/secret-deployment/chat/completions",
        "/v1/deployments",
        # Trailing dots (a security review; .NET servers ignore them in a path segment).
        "/v1/deployments./secret-deployment/chat/completions",
        "/v1/Deployments%2e/secret-deployment/chat/completions",
        "/v1/deployment%73../secret-deployment/chat/completions",
    ],
)
def test_azure_passthrough_never_names_a_deployment(path: str) -> None:
    """The deployment always comes from the routed model: a passthrough path naming one would reach
    any deployment of the resource with the gateway's key."""
    body = json.dumps({"model": "gpt-4o", "messages": []}).encode()
    ctx = _ctx(path, config_pb2.Schema(name="AzureOpenAI", version="2024-10-21"), model="gpt-4o")
    assert ctx.endpoint is Endpoint.PASSTHROUGH
    with pytest.raises(GatewayError) as err:
        translate_request_azure(ctx, body)
    assert err.value.status == 404


@pytest.mark.parametrize(
    "path",
    [
        "/v1/organization/admin_api_keys",
        "/v1/Organization/projects",
        "/v1/%6Frganization/users",
        "/v1/organization./users",
        "/v1/organization%2e%20/users",
    ],
)
def test_openai_organization_admin_api_is_not_passed_through(path: str) -> None:
    with pytest.raises(GatewayError) as err:
        translate_request(_ctx(path, config_pb2.Schema(name="OpenAI")), b"")
    assert err.value.status == 404


@pytest.mark.parametrize(
    ("query", "sent", "usage_option"),
    [
        # The client's api-version is what is sent, so it decides what the body may hold.
        ("?api-version=2024-06-01", "2024-06-01", False),
        ("?api-version=2024-08-01-preview&x=1", "2024-08-01-preview", False),
        ("?api-version=2024-10-21", "2024-10-21", True),
        # Neither the backend nor the client names one: the documented GA default.
        ("", AZURE_DEFAULT_API_VERSION, True),
        ("?api-version=", AZURE_DEFAULT_API_VERSION, True),
    ],
)
def test_azure_without_schema_version_decides_on_the_api_version_sent(
    query: str, sent: str, usage_option: bool
) -> None:
    ctx = _ctx("/v1/chat/completions" + query, config_pb2.Schema(name="AzureOpenAI"), override="dep")
    tr = translate_request_azure(ctx, json.dumps({**STREAM_REQUEST, "model": "dep"}).encode())
    path, _, sent_query = tr.path.partition("?")
    assert path == "/openai/deployments/dep/chat/completions"
    assert [p for p in sent_query.split("&") if p.startswith("api-version=")] == [f"api-version={sent}"]
    options = json.loads(tr.body).get("stream_options") if tr.body is not None else None
    # An older api-version refuses stream_options: the client's goes too.
    assert (options is not None and options.get("include_usage") is True) is usage_option
    assert (options is None) is (not usage_option)


def test_azure_default_api_version_is_ga() -> None:
    assert AZURE_DEFAULT_API_VERSION == "2024-10-21"
    ctx = _ctx("/v1/files", config_pb2.Schema(name="AzureOpenAI"))
    assert translate_request_azure(ctx, b"").path == f"/openai/files?api-version={AZURE_DEFAULT_API_VERSION}"


def test_registry() -> None:
    assert get_pair(Endpoint.CHAT_COMPLETIONS, "OpenAI") is not None
    assert get_pair(Endpoint.CHAT_COMPLETIONS, "") is get_pair(Endpoint.CHAT_COMPLETIONS, "OpenAI")
    assert get_pair(Endpoint.COUNT_TOKENS, "Cohere") is None
    assert get_pair(Endpoint.EMBEDDINGS, "Anthropic") is None
    assert get_pair(Endpoint.MESSAGES, "GCPVertexAI") is None  # Envoy AI Gateway has no Messages -> Gemini


def _rctx(endpoint: Endpoint = Endpoint.CHAT_COMPLETIONS, include_usage: bool = False) -> ResponseContext:
    return ResponseContext(endpoint, ClientSchema.OPENAI, "gpt", "gpt", True, include_usage)


def test_body_passthrough_reads_usage() -> None:
    tr = OpenAIResponse(_rctx())
    body = json.dumps(
        {"model": "gpt-x", "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
    ).encode()
    assert tr.body(body) is None
    assert (tr.usage.total_tokens, tr.response_model) == (3, "gpt-x")
    emb = OpenAIResponse(_rctx(Endpoint.EMBEDDINGS))
    emb.body(
        json.dumps(
            {"object": "list", "data": [{"embedding": "AAAA"}], "usage": {"prompt_tokens": 4, "total_tokens": 4}}
        ).encode()
    )
    assert emb.usage.input_tokens == 4
    assert OpenAIResponse(_rctx(Endpoint.AUDIO_SPEECH)).body(b"\x00binary audio") is None
    # A chat answer that is not a JSON object (a proxy's page): the router phase makes it a 502.
    with pytest.raises(ValueError, match="neither a JSON object nor a stream"):
        OpenAIResponse(_rctx()).body(b"<html><body>Gateway</body></html>")


STREAM = (
    b'data: {"id":"1","model":"gpt-x","choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
    b'data: {"id":"1","model":"gpt-x","choices":[],"prompt_filter_results":[]}\n\n'
    b'data: {"id":"1","model":"gpt-x","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n\n'  # noqa: E501
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("chunks", splits(STREAM, 29))
def test_stream_usage_chunk_stripped_when_not_requested(chunks: list[bytes]) -> None:
    tr = OpenAIResponse(_rctx(include_usage=False))
    evs = events(run(tr, chunks))
    assert len(evs) == 3  # the usage-only chunk is gone, the Azure filter chunk stays
    assert not any(isinstance(d, dict) and d.get("usage") for _, d in evs)
    assert tr.usage.total_tokens == 3


@pytest.mark.parametrize("chunks", splits(STREAM, 29))
def test_stream_passthrough_is_byte_exact_when_usage_requested(chunks: list[bytes]) -> None:
    tr = OpenAIResponse(_rctx(include_usage=True))
    assert run(tr, chunks) == STREAM
    assert tr.usage.total_tokens == 3


def test_responses_api_stream_usage() -> None:
    data = (
        b'event: response.created\ndata: {"type":"response.created","response":{"model":"o4"}}\n\n'
        b'event: response.completed\ndata: {"type":"response.completed","response":{"model":"o4",'
        b'"usage":{"input_tokens":5,"output_tokens":6,"total_tokens":11}}}\n\n'
    )
    tr = OpenAIResponse(_rctx(Endpoint.RESPONSES))
    assert run(tr, [data]) == data
    assert (tr.usage.total_tokens, tr.response_model) == (11, "o4")


def test_stream_dying_early_has_no_usage() -> None:
    tr = OpenAIResponse(_rctx(include_usage=True))
    run(tr, [STREAM[: STREAM.index(b'data: {"id":"1","model":"gpt-x","choices":[],"usage"')]])
    assert not tr.usage.known


# ----------------------------------------------------------------------------- per-backend rewrites

STREAM_REQUEST = {"model": "gpt", "messages": [], "stream": True, "stream_options": {"include_obfuscation": False}}


@pytest.mark.parametrize(
    ("schema", "injected"),
    [
        (config_pb2.Schema(name="OpenAI"), True),
        (config_pb2.Schema(name="OpenAI", prefix="openai/v1"), True),
        (config_pb2.Schema(name="AzureOpenAI", version="2024-10-21"), True),
        (config_pb2.Schema(name="AzureOpenAI", version="2025-03-01-preview"), True),
        # Classic Azure api-versions before 2024-09-01 reject stream_options.
        (config_pb2.Schema(name="AzureOpenAI", version="2024-06-01"), False),
        (config_pb2.Schema(name="AzureOpenAI", version="2024-02-15-preview"), False),
    ],
)
def test_every_stream_asks_for_usage_when_the_backend_supports_it(schema: config_pb2.Schema, injected: bool) -> None:
    ctx = _ctx("/v1/chat/completions", schema)
    fn = translate_request_azure if schema.name == "AzureOpenAI" else translate_request
    tr = fn(ctx, json.dumps(STREAM_REQUEST).encode())
    if injected:
        assert json.loads(tr.body)["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    else:  # refused by those versions, the client's stream_options go
        assert json.loads(tr.body) == {"model": "gpt", "messages": [], "stream": True}
    # Not a stream: left alone.
    assert fn(ctx, BODY).body is None
    asked = {**STREAM_REQUEST, "stream_options": {"include_usage": True}}
    assert (fn(ctx, json.dumps(asked).encode()).body is None) is injected


@pytest.mark.parametrize(
    ("request_fields", "sent"),
    [
        ({"max_completion_tokens": 20}, {"max_tokens": 20}),
        ({"max_completion_tokens": 20, "max_tokens": 10}, {"max_tokens": 10}),
        ({"max_tokens": 10}, None),  # nothing to change: forwarded as sent
        ({"stream": True, "stream_options": {"include_usage": True}}, {"stream": True}),
        ({"tools": [TOOL], "parallel_tool_calls": False}, {"tools": [TOOL]}),
    ],
)
def test_an_older_azure_api_version_gets_the_chat_parameters_it_takes(
    request_fields: dict[str, Any], sent: dict[str, Any] | None
) -> None:
    """From a provider-API review: Azure api-versions before 2024-09-01 answer 400 "Unrecognized
    request argument supplied" to max_completion_tokens (what o-series clients send) and
    stream_options (LangChain's stream usage): the gateway knows the version, and rewrites them as
    it does for Anthropic clients."""
    ctx = _ctx("/v1/chat/completions", config_pb2.Schema(name="AzureOpenAI", version="2024-06-01"))
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], **request_fields}
    tr = translate_request_azure(ctx, json.dumps(body).encode())
    if sent is None:
        assert tr.body is None
    else:
        assert json.loads(tr.body) == {"model": "gpt", "messages": body["messages"], **sent}


def test_schema_prefix_root() -> None:
    tr = translate_request(_ctx("/v1/chat/completions", config_pb2.Schema(name="OpenAI", prefix="/")), BODY)
    assert tr.path == "/chat/completions"


def test_model_override_on_json_passthrough() -> None:
    body = json.dumps({"model": "gpt", "input": "x"}).encode()
    tr = translate_request(_ctx("/v1/moderations", config_pb2.Schema(name="OpenAI"), override="omni"), body)
    assert json.loads(tr.body) == {"model": "omni", "input": "x"}
    # Not JSON, or no model: forwarded untouched.
    assert translate_request(_ctx("/v1/files", config_pb2.Schema(name="OpenAI"), override="omni"), b"--x").body is None


def test_model_override_on_multipart_transcription() -> None:
    form = (
        b'--BB\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n'
        b'--BB\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\nRIFF\x00\x01\r\n--BB--\r\n"
    )
    resolved = resolve_path("/v1/audio/transcriptions")
    assert resolved is not None
    backend = config_pb2.Backend(name="b", schema=config_pb2.Schema(name="OpenAI"), model_name_override="whisper-1")
    headers = {"content-type": "multipart/form-data; boundary=BB"}
    ctx = RequestContext(resolved.endpoint, backend, resolved.local_path, "", "whisper-1", headers)
    tr = translate_request(ctx, form)
    assert tr.body == form.replace(b"\r\n\r\nwhisper\r\n", b"\r\n\r\nwhisper-1\r\n")
    azure = config_pb2.Backend(
        name="b", schema=config_pb2.Schema(name="AzureOpenAI", version="2024-10-21"), model_name_override="whisper-1"
    )
    ctx = RequestContext(resolved.endpoint, azure, resolved.local_path, "", "whisper-1", headers)
    assert translate_request_azure(ctx, form).body == tr.body


def test_stream_too_deep_to_re_encode_is_forwarded_as_sent() -> None:
    deep: object = "x"
    for _ in range(300):
        deep = [deep]
    body = json.dumps({**STREAM_REQUEST, "messages": [{"role": "user", "content": deep}]}).encode()
    assert translate_request(_ctx("/v1/chat/completions", config_pb2.Schema(name="OpenAI")), body).body is None
