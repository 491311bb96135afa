from __future__ import annotations

import pytest

from aigw.translator.v1 import config_pb2
from aigw_translator.endpoints import ClientSchema, Endpoint, client_schema_of_path, resolve_path, unsupported_path
from aigw_translator.model_list import models_body
from aigw_translator.multipart import form_field


@pytest.mark.parametrize(
    ("path", "root", "endpoint", "local", "query"),
    [
        ("/v1/chat/completions", "", Endpoint.CHAT_COMPLETIONS, "/v1/chat/completions", ""),
        ("/v1/chat/completions?x=1", "", Endpoint.CHAT_COMPLETIONS, "/v1/chat/completions", "?x=1"),
        ("/v1/completions", "", Endpoint.COMPLETIONS, "/v1/completions", ""),
        ("/v1/embeddings", "", Endpoint.EMBEDDINGS, "/v1/embeddings", ""),
        ("/v1/responses", "", Endpoint.RESPONSES, "/v1/responses", ""),
        ("/v1/images/generations", "", Endpoint.IMAGES_GENERATIONS, "/v1/images/generations", ""),
        ("/v1/audio/speech", "", Endpoint.AUDIO_SPEECH, "/v1/audio/speech", ""),
        ("/v1/audio/transcriptions", "", Endpoint.AUDIO_TRANSCRIPTIONS, "/v1/audio/transcriptions", ""),
        ("/anthropic/v1/messages", "", Endpoint.MESSAGES, "/anthropic/v1/messages", ""),
        ("/anthropic/v1/messages?beta=true", "", Endpoint.MESSAGES, "/anthropic/v1/messages", "?beta=true"),
        ("/anthropic/v1/messages/count_tokens", "", Endpoint.COUNT_TOKENS, "/anthropic/v1/messages/count_tokens", ""),
        ("/v1/models", "", Endpoint.MODELS, "/v1/models", ""),
        ("/v1/files/abc", "", Endpoint.PASSTHROUGH, "/v1/files/abc", ""),
        ("/ai/v1/chat/completions", "/ai", Endpoint.CHAT_COMPLETIONS, "/v1/chat/completions", ""),
    ],
)
def test_resolve(path: str, root: str, endpoint: Endpoint, local: str, query: str) -> None:
    resolved = resolve_path(path, root)
    assert resolved is not None
    assert (resolved.endpoint, resolved.local_path, resolved.query) == (endpoint, local, query)


@pytest.mark.parametrize(
    ("path", "root"),
    [
        ("/anthropic/v1/other", ""),
        ("/cohere/v1/chat", ""),
        ("/v1/chat/completions", "/ai"),
        ("/aix/v1", "/ai"),
        # Only OpenAI's own paths pass through with the gateway's key: a new user's review sent
        # these to the provider, key and all (an OpenAI-compatible server's admin routes, a
        # base_url without /v1, the organization API spelt /V1 past its guard).
        ("/foo/bar", ""),
        ("/chat/completions", ""),
        ("/V1/organization/users", ""),
        ("/v1", ""),
        ("/ai/admin", "/ai"),
    ],
)
def test_unsupported(path: str, root: str) -> None:
    assert resolve_path(path, root) is None


@pytest.mark.parametrize(
    ("path", "root", "message", "schema"),
    [
        (
            "/chat/completions?x=1",
            "",
            "unsupported path: /chat/completions (OpenAI clients: the base URL ends in /v1, /v1/chat/completions)",
            ClientSchema.OPENAI,
        ),
        (
            "/ai/embeddings",
            "/ai",
            "unsupported path: /ai/embeddings (OpenAI clients: the base URL ends in /v1, /ai/v1/embeddings)",
            ClientSchema.OPENAI,
        ),
        # An Anthropic SDK whose base URL is the gateway's root: not passed through to an OpenAI
        # backend (whose "Invalid URL" said nothing useful), and answered in Anthropic's shape.
        (
            "/v1/messages",
            "",
            "unsupported path: /v1/messages (Anthropic clients: the base URL ends in /anthropic, "
            "/anthropic/v1/messages)",
            ClientSchema.ANTHROPIC,
        ),
        ("/foo/bar", "", "unsupported path: /foo/bar", ClientSchema.OPENAI),
        # A base URL that already ends in /v1, to which the SDK adds its own.
        (
            "/v1/v1/chat/completions",
            "",
            "unsupported path: /v1/v1/chat/completions (the base URL ends in /v1 once: /v1/chat/completions)",
            ClientSchema.OPENAI,
        ),
        (
            "/v1/v1/messages",
            "",
            "unsupported path: /v1/v1/messages (Anthropic clients: the base URL ends in /anthropic, "
            "/anthropic/v1/messages)",
            ClientSchema.OPENAI,
        ),
        (
            "/ai/v1/messages",
            "/ai",
            "unsupported path: /ai/v1/messages (Anthropic clients: the base URL ends in /anthropic, "
            "/ai/anthropic/v1/messages)",
            ClientSchema.ANTHROPIC,
        ),
        # An Anthropic base URL ending in /anthropic/v1 (a new user's trial: no hint, where OpenAI's got one).
        (
            "/anthropic/v1/v1/messages",
            "",
            "unsupported path: /anthropic/v1/v1/messages (Anthropic clients: the base URL ends in /anthropic, "
            "not /anthropic/v1: /anthropic/v1/messages)",
            ClientSchema.ANTHROPIC,
        ),
        (
            "/x/anthropic/v1/v1/models",
            "/x",
            "unsupported path: /x/anthropic/v1/v1/models (Anthropic clients: the base URL ends in /anthropic, "
            "not /anthropic/v1: /x/anthropic/v1/models)",
            ClientSchema.ANTHROPIC,
        ),
    ],
)
def test_an_unsupported_path_names_the_path_meant(path: str, root: str, message: str, schema: ClientSchema) -> None:
    assert resolve_path(path, root) is None
    assert unsupported_path(path, root) == message
    assert client_schema_of_path(path, root) is schema


def test_client_schema() -> None:
    assert resolve_path("/anthropic/v1/messages").client_schema is ClientSchema.ANTHROPIC
    assert resolve_path("/v1/chat/completions").client_schema is ClientSchema.OPENAI


def test_models_are_host_scoped() -> None:
    import json

    models = [
        config_pb2.Model(id="everywhere", owned_by="o", created=1),
        config_pb2.Model(id="scoped", owned_by="o", created=2, hosts=["api.example.com"]),
        config_pb2.Model(id="everywhere", owned_by="o", created=1),
    ]
    ids = lambda authority: [m["id"] for m in json.loads(models_body(models, authority))["data"]]  # noqa: E731
    assert ids("other.example.com") == ["everywhere"]
    assert ids("api.example.com") == ["everywhere", "scoped"]
    assert ids("api.example.com:8080") == ["everywhere", "scoped"]


def test_a_wildcard_hosts_models_are_listed_on_its_subdomains() -> None:
    """As Gateway API matches a `*.example.com` hostname (the model was listed nowhere before)."""
    import json

    models = [config_pb2.Model(id="wild", owned_by="o", created=1, hosts=["*.example.com"])]
    ids = lambda authority: [m["id"] for m in json.loads(models_body(models, authority))["data"]]  # noqa: E731
    assert ids("api.example.com:8080") == ["wild"]
    assert ids("a.b.example.com") == ["wild"]
    assert ids("example.com") == [] and ids("api.example.org") == []


def test_multipart_model_field() -> None:
    ct = "multipart/form-data; boundary=XyZ"
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\nRIFF\x00\x01binary\r\n"
        b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--XyZ--\r\n'
    )
    assert form_field(body, ct, "model") == "whisper-1"
    assert form_field(body, ct, "missing") is None
    assert form_field(body, "application/json", "model") is None


@pytest.mark.parametrize(
    ("path", "body", "content_type", "stream"),
    [
        ("/v1/images/generations", b'{"model":"gpt-image-1","prompt":"x","stream":true}', "application/json", True),
        ("/v1/images/generations", b'{"model":"gpt-image-1","prompt":"x"}', "application/json", False),
        ("/v1/audio/speech", b'{"model":"m","input":"x","voice":"a","stream_format":"sse"}', "application/json", True),
        (
            "/v1/audio/speech",
            b'{"model":"m","input":"x","voice":"a","stream_format":"audio"}',
            "application/json",
            False,
        ),
        ("/v1/audio/speech", b'{"model":"m","input":"x","voice":"a","stream":true}', "application/json", False),
        ("/v1/audio/transcriptions", b"stream=True", "", True),
        ("/v1/audio/transcriptions", b"", "", False),
        ("/v1/embeddings", b'{"model":"e","input":"x","stream":true}', "application/json", False),
    ],
)
def test_which_requests_stream(path: str, body: bytes, content_type: str, stream: bool) -> None:
    """Images stream on `stream`, speech on `stream_format: sse`, a transcription on its form's
    `stream` field; an endpoint that cannot stream does not, whatever the body says."""
    from aigw_translator.router_phase import parse_request

    if path.endswith("transcriptions"):
        content_type = "multipart/form-data; boundary=B"
        extra = b'--B\r\nContent-Disposition: form-data; name="stream"\r\n\r\n' + body[7:] + b"\r\n" if body else b""
        body = (
            b'--B\r\nContent-Disposition: form-data; name="model"\r\n\r\ngpt-4o-transcribe\r\n' + extra + b"--B--\r\n"
        )
    resolved = resolve_path(path, "")
    assert resolved is not None
    parsed = parse_request(resolved, body, content_type)
    assert parsed is not None and parsed.stream is stream


@pytest.mark.parametrize(
    ("query", "ids", "more"),
    [
        ("", ["a", "b", "c", "d", "e"], False),
        ("?limit=2", ["a", "b"], True),
        ("?limit=2&after_id=b", ["c", "d"], True),
        ("?limit=2&after_id=d", ["e"], False),
        ("?limit=2&before_id=d", ["b", "c"], True),
        ("?limit=3&before_id=c", ["a", "b"], False),
        ("?after_id=nope", [], False),
        ("?before_id=nope", [], False),
    ],
)
def test_anthropic_models_list_pages_as_the_models_api_does(query: str, ids: list[str], more: bool) -> None:
    import orjson

    from aigw_translator.model_list import anthropic_models_body

    models = [config_pb2.Model(id=i) for i in "abcde"]
    body = orjson.loads(anthropic_models_body(models, "gw", query))
    assert [m["id"] for m in body["data"]] == ids and body["has_more"] is more
    assert body["first_id"] == (ids[0] if ids else None) and body["last_id"] == (ids[-1] if ids else None)


@pytest.mark.parametrize("query", ["?limit=0", "?limit=1001", "?limit=x", "?after_id=a&before_id=b"])
def test_an_anthropic_models_query_anthropic_refuses_is_a_400(query: str) -> None:
    from aigw_translator.model_list import PageError, anthropic_models_body

    with pytest.raises(PageError):
        anthropic_models_body([config_pb2.Model(id="a")], "gw", query)
