"""Credentials and provider headers never cross backends or attempts (the upstream phase, driven
with ProcessingRequest protos; `_Envoy` applies each answer to one shared header map and carries the
dynamic metadata to the next attempt, as Envoy does for the upstream filters of one request)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import structlog
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import json_format

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_translator import router_phase, server, upstream_phase
from aigw_translator.config import RuntimeConfig
from aigw_translator.server import ExternalProcessor
from aigw_translator.translators.capabilities import opaque_user_id

from .extproc_helpers import (
    ROUTER_STREAM,
    UPSTREAM_STREAM,
    drive,
    immediate_json,
    metadata_text,
    request_body,
    request_headers,
    set_headers,
    upstream_attributes,
)

AZURE = "ns/azure/route/r/rule/0/ref/0"
ANTHROPIC = "ns/claude/route/r/rule/0/ref/1"
TENANT = "ns/tenant/route/r/rule/1/ref/0"
PLAIN = "ns/plain/route/r/rule/1/ref/1"
ORG = "ns/org/route/r/rule/2/ref/0"
APIM = "Ocp-Apim-Subscription-Key"


def config() -> config_pb2.TranslatorConfig:
    cfg = config_pb2.TranslatorConfig(name="ns/gw", seal_key=b"k" * 32)
    z = cfg.backends.add(name=AZURE, schema=config_pb2.Schema(name="AzureOpenAI", version="2024-10-21"))
    z.auth.azure_api_key.key = "az-key"
    z.header_mutation.set.add(name=APIM, value="apim-secret")
    z.upstream_host = "res.openai.azure.com"
    a = cfg.backends.add(name=ANTHROPIC, schema=config_pb2.Schema(name="Anthropic"), model_name_override="claude-x")
    a.auth.anthropic_api_key.key = "sk-ant"
    a.upstream_host = "api.anthropic.com"
    t = cfg.backends.add(name=TENANT, schema=config_pb2.Schema(name="OpenAI"))
    t.auth.api_key.key = "sk-shared"
    t.auth.credential_override.from_request_headers.header = "X-Tenant-Key"
    p = cfg.backends.add(name=PLAIN, schema=config_pb2.Schema(name="OpenAI"))
    p.auth.api_key.key = "sk-plain"
    o = cfg.backends.add(name=ORG, schema=config_pb2.Schema(name="OpenAI"))
    o.auth.api_key.key = "sk-org"
    o.auth.pass_client_headers.append("openai-organization")
    return cfg


OPENAI_CLIENT = {
    ":method": "POST",
    ":path": "/v1/chat/completions",
    ":authority": "gw.example",
    "content-type": "application/json",
    "authorization": "Bearer client-key",
    contract.MODEL_HEADER: "gpt-4o",
    contract.ORIGINAL_PATH_HEADER: "/v1/chat/completions",
}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
ANTHROPIC_CLIENT = {
    **OPENAI_CLIENT,
    ":path": "/anthropic/v1/messages",
    contract.ORIGINAL_PATH_HEADER: "/anthropic/v1/messages",
    "anthropic-version": "2023-01-01",
    "anthropic-beta": "tools-2024",
}
MESSAGES = {"model": "gpt-4o", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
PROVIDER_SCOPED = {
    "openai-organization": "org-client",
    "openai-project": "proj-client",
    "cookie": "session=client",
    "proxy-authorization": "Basic client",
    "x-goog-api-key": "goog-client",
    "x-goog-user-project": "client-project",  # Google's quota and billing project
}


class _Envoy:
    """One request's shared upstream header map and dynamic metadata across its attempts."""

    def __init__(self, headers: dict[str, str], cfg: config_pb2.TranslatorConfig | None = None) -> None:
        self.processor = ExternalProcessor(cfg or config())
        self.headers = dict(headers)
        self.metadata: dict[str, Any] = {}

    async def answer(self, backend: str, body: dict) -> ep.ProcessingResponse:
        """The last response of an attempt's stream (which Envoy gives it with the metadata of the
        attempts before)."""
        first = request_headers(self.headers, attributes=upstream_attributes(backend))
        for ns, fields in self.metadata.items():
            first.metadata_context.filter_metadata[ns].update(fields)
        out = await drive(self.processor, [first, request_body(body)])
        return out[-1]

    async def attempt(self, backend: str, body: dict) -> ep.CommonResponse:
        out = [await self.answer(backend, body)]
        assert out[-1].WhichOneof("response") == "request_body", out[-1]
        common = out[-1].request_body.response
        for name in common.header_mutation.remove_headers:
            self.headers.pop(name, None)
        self.headers.update(set_headers(common.header_mutation))
        for ns, fields in json_format.MessageToDict(out[-1].dynamic_metadata).items():
            self.metadata.setdefault(ns, {}).update(fields)
        return common


async def test_custom_override_header_of_one_backend_never_reaches_another() -> None:
    """A weighted split: the request meant for TENANT (x-tenant-key) lands on PLAIN or ANTHROPIC."""
    for backend, body in ((PLAIN, CHAT), (ANTHROPIC, CHAT), (AZURE, CHAT)):
        envoy = _Envoy({**OPENAI_CLIENT, "x-tenant-key": "tenant-secret"})
        await envoy.attempt(backend, body)
        assert "x-tenant-key" not in envoy.headers, backend
        assert "client-key" not in json.dumps(envoy.headers)
    envoy = _Envoy({**OPENAI_CLIENT, "x-tenant-key": "tenant-secret"})
    await envoy.attempt(TENANT, CHAT)
    assert envoy.headers["authorization"] == "Bearer tenant-secret"
    assert "x-tenant-key" not in envoy.headers


async def test_header_mutation_names_of_any_backend_are_stripped_everywhere() -> None:
    """The client cannot smuggle a header the gateway sets for another backend."""
    envoy = _Envoy({**OPENAI_CLIENT, APIM.lower(): "client-apim"})
    await envoy.attempt(PLAIN, CHAT)
    assert APIM.lower() not in envoy.headers


async def test_azure_attempt_headers_never_reach_the_anthropic_retry() -> None:
    envoy = _Envoy(OPENAI_CLIENT)
    await envoy.attempt(AZURE, CHAT)
    assert envoy.headers[APIM.lower()] == "apim-secret"
    assert envoy.headers["api-key"] == "az-key"
    assert envoy.headers[":authority"] == "res.openai.azure.com"
    await envoy.attempt(ANTHROPIC, CHAT)
    assert APIM.lower() not in envoy.headers
    assert "api-key" not in envoy.headers and "authorization" not in envoy.headers
    assert envoy.headers["x-api-key"] == "sk-ant"
    assert envoy.headers[":authority"] == "api.anthropic.com"
    assert envoy.headers[":path"] == "/v1/messages"


async def test_anthropic_version_set_for_attempt_one_never_reaches_an_openai_retry() -> None:
    envoy = _Envoy(OPENAI_CLIENT)
    await envoy.attempt(ANTHROPIC, CHAT)
    assert envoy.headers["anthropic-version"] == "2023-06-01"
    await envoy.attempt(PLAIN, CHAT)
    assert "anthropic-version" not in envoy.headers and "x-api-key" not in envoy.headers
    assert envoy.headers["authorization"] == "Bearer sk-plain"
    # Nor to the next one: the restored view still says the client sent no anthropic-version.
    await envoy.attempt(ANTHROPIC, CHAT)
    assert envoy.headers["anthropic-version"] == "2023-06-01"


async def test_retry_restores_client_headers_an_earlier_attempt_removed() -> None:
    """Attempt 1 (Anthropic client to an OpenAI backend) drops anthropic-version and -beta; the
    retry to Anthropic gets the client's values back, not the default."""
    envoy = _Envoy(ANTHROPIC_CLIENT)
    await envoy.attempt(PLAIN, MESSAGES)
    assert "anthropic-version" not in envoy.headers and "anthropic-beta" not in envoy.headers
    await envoy.attempt(ANTHROPIC, MESSAGES)
    assert envoy.headers["anthropic-version"] == "2023-01-01"
    assert envoy.headers["anthropic-beta"] == "tools-2024"


async def test_override_header_survives_retries_but_never_reaches_a_provider() -> None:
    envoy = _Envoy({**OPENAI_CLIENT, "x-tenant-key": "tenant-secret"})
    await envoy.attempt(TENANT, CHAT)
    await envoy.attempt(PLAIN, CHAT)
    assert envoy.headers["authorization"] == "Bearer sk-plain"
    await envoy.attempt(TENANT, CHAT)
    assert envoy.headers["authorization"] == "Bearer tenant-secret"
    assert "x-tenant-key" not in envoy.headers
    carried = json.dumps(envoy.metadata)  # sealed: Envoy (and its access log) cannot read it
    assert "tenant-secret" not in carried and "client-key" not in carried


async def test_provider_scoped_client_headers_pass_only_where_configured() -> None:
    envoy = _Envoy({**OPENAI_CLIENT, **PROVIDER_SCOPED})
    await envoy.attempt(PLAIN, CHAT)
    assert not set(PROVIDER_SCOPED) & set(envoy.headers)
    # The retry lands on the backend whose policy passes openai-organization: restored.
    await envoy.attempt(ORG, CHAT)
    assert envoy.headers["openai-organization"] == "org-client"
    assert not (set(PROVIDER_SCOPED) - {"openai-organization"}) & set(envoy.headers)
    await envoy.attempt(ANTHROPIC, CHAT)
    assert not set(PROVIDER_SCOPED) & set(envoy.headers)


@pytest.mark.parametrize(
    ("model", "deployment"),
    [
        ("gpt-4o/../../other-deployment", "gpt-4o%2F..%2F..%2Fother-deployment"),
        ("gpt 4o", "gpt%204o"),
        ("gpt-4o?api-version=1#x", "gpt-4o%3Fapi-version%3D1%23x"),
    ],
)
@pytest.mark.parametrize(("client", "body"), [(OPENAI_CLIENT, CHAT), (ANTHROPIC_CLIENT, MESSAGES)])
async def test_azure_deployment_is_one_percent_encoded_segment(
    model: str, deployment: str, client: dict, body: dict
) -> None:
    envoy = _Envoy({**client, contract.MODEL_HEADER: model})
    await envoy.attempt(AZURE, {**body, "model": model})
    assert envoy.headers[":path"] == f"/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21"


@pytest.mark.parametrize("model", ["gpt-4o\nx-injected: 1", "gpt\r4o", "gpt\x00", "gpt\x7f", "gpt\t4o"])
async def test_model_with_control_characters_is_400(model: str) -> None:
    hdrs = {":method": "POST", ":path": "/v1/chat/completions", "content-type": "application/json"}
    out = await drive(ExternalProcessor(config()), [request_headers(hdrs), request_body({**CHAT, "model": model})])
    code, obj = immediate_json(out[-1])
    assert code == 400
    assert obj["error"]["type"] == "invalid_request_error"


async def test_model_with_unicode_is_routed() -> None:
    hdrs = {":method": "POST", ":path": "/v1/chat/completions", "content-type": "application/json"}
    out = await drive(ExternalProcessor(config()), [request_headers(hdrs), request_body({**CHAT, "model": "modèle"})])
    assert set_headers(out[-1].request_body.response.header_mutation)[contract.MODEL_HEADER] == "modèle"


CLIENT_HEADERS = {":method": "POST", ":path": "/v1/chat/completions", "authorization": "Bearer client-key"}


@pytest.mark.parametrize(
    ("stream_metadata", "attributes"),
    [
        ((), False),  # no marker
        ((), True),
        (((contract.PHASE_METADATA_KEY, "other"),), False),
        (UPSTREAM_STREAM, False),  # an upstream stream that lacks its attributes
        (ROUTER_STREAM, True),  # a router stream that carries upstream attributes
    ],
)
async def test_stream_without_a_valid_phase_marker_is_refused(stream_metadata, attributes: bool) -> None:
    kw = {"attributes": upstream_attributes(PLAIN)} if attributes else {}
    out = await drive(ExternalProcessor(config()), [request_headers(CLIENT_HEADERS, **kw)], stream_metadata)
    code, _ = immediate_json(out[0])
    assert code == 500
    assert len(out) == 1


async def test_marked_streams_run_their_phase() -> None:
    router_out = await drive(ExternalProcessor(config()), [request_headers(CLIENT_HEADERS)], ROUTER_STREAM)
    assert router_out[0].WhichOneof("response") == "request_headers"
    attrs = upstream_attributes(PLAIN)
    out = await drive(
        ExternalProcessor(config()),
        [request_headers({**OPENAI_CLIENT, "x-tenant-key": "t"}, attributes=attrs), request_body(CHAT)],
        UPSTREAM_STREAM,
    )
    assert "x-tenant-key" in out[1].request_body.response.header_mutation.remove_headers


async def test_debug_logs_redact_custom_override_and_header_mutation_names(monkeypatch: pytest.MonkeyPatch) -> None:
    capture = structlog.testing.LogCapture()
    logger = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    for module in (router_phase, upstream_phase, server):
        monkeypatch.setattr(module, "log", logger)
    hdrs = {**OPENAI_CLIENT, "x-tenant-key": "tenant-secret", APIM.lower(): "client-apim-secret"}
    processor = ExternalProcessor(config())
    await drive(processor, [request_headers(hdrs), request_body(CHAT)])
    envoy = _Envoy(hdrs)
    envoy.processor = processor
    await envoy.attempt(TENANT, CHAT)
    await envoy.attempt(AZURE, CHAT)
    text = json.dumps(capture.entries, default=str)
    assert [e["event"] for e in capture.entries].count("upstream_attempt") == 2
    for secret in ("tenant-secret", "client-apim-secret", "apim-secret", "client-key", "az-key", "sk-shared"):
        assert secret not in text


def _goog_config(seal_key: bytes = b"k" * 32) -> config_pb2.TranslatorConfig:
    """TENANT's override header is x-goog-api-key; OTHER's policy passes x-goog-api-key."""
    cfg = config_pb2.TranslatorConfig(name="ns/gw", seal_key=seal_key)
    t = cfg.backends.add(name=TENANT, schema=config_pb2.Schema(name="OpenAI"))
    t.auth.credential_override.from_request_headers.header = "x-goog-api-key"
    o = cfg.backends.add(name=PLAIN, schema=config_pb2.Schema(name="OpenAI"))
    o.auth.api_key.key = "sk-other"
    o.auth.pass_client_headers.append("x-goog-api-key")
    a = cfg.backends.add(name=ANTHROPIC, schema=config_pb2.Schema(name="Anthropic"))
    a.auth.anthropic_api_key.key = "sk-ant"
    return cfg


def _attempt(cfg: config_pb2.TranslatorConfig, backend: str, headers: dict[str, str], body: dict) -> dict[str, str]:
    runtime = RuntimeConfig.build(cfg)
    attrs = {contract.UPSTREAM_HOST_METADATA_ATTRIBUTE: metadata_text(backend)}
    out = upstream_phase.translate_attempt(runtime, headers, attrs, {}, json.dumps(body).encode(), True)
    sent = {k: v for k, v in headers.items() if k not in out.remove_headers}
    sent.update(out.set_headers)
    return sent


def test_override_header_never_passes_even_when_a_policy_lists_it() -> None:
    """A tenant's credential in a custom override header is not forwarded to another backend whose
    pass-client-headers list names the same header."""
    sent = _attempt(_goog_config(), PLAIN, {**OPENAI_CLIENT, "x-goog-api-key": "tenant-secret"}, CHAT)
    assert "x-goog-api-key" not in sent
    assert sent["authorization"] == "Bearer sk-other"
    assert "tenant-secret" not in json.dumps(sent)


def test_user_id_is_keyed_per_fleet() -> None:
    """The opaque end-user id is an HMAC with a key derived from the fleet's seal_key: stable for one
    fleet's credentials, different for another fleet's."""
    raw = json.dumps({**CHAT, "user": "someone@example.com"}).encode()
    attrs = {contract.UPSTREAM_HOST_METADATA_ATTRIBUTE: metadata_text(ANTHROPIC)}

    def user_id(seal_key: bytes) -> str:
        runtime = RuntimeConfig.build(_goog_config(seal_key))
        out = upstream_phase.translate_attempt(runtime, dict(OPENAI_CLIENT), attrs, {}, raw, True)
        assert out.body is not None
        user = json.loads(out.body)["metadata"]["user_id"]
        assert user == opaque_user_id("someone@example.com", runtime.user_id_key)
        assert runtime.user_id_key not in (b"", seal_key)  # a subkey of the fleet's secret
        return user

    assert user_id(b"a" * 32) == user_id(b"a" * 32) != user_id(b"b" * 32)
    assert user_id(b"a" * 32).startswith("aigw-") and len(user_id(b"a" * 32)) == len("aigw-") + 32


GEMINI = "ns/gemini/route/r/rule/0/ref/2"


async def test_a_failover_to_a_backend_that_cannot_serve_the_endpoint_is_a_retryable_503() -> None:
    """Found by review: Anthropic (priority 0) failing over to Gemini on Vertex (priority 1), which
    serves no Anthropic Messages, answered 422: the SDKs never retry it, and a passing outage of the
    first backend read as a request that can never succeed. On a retry it is a 503 now; a first
    attempt that lands there is still the 422 (the model is not served that way)."""
    cfg = config()
    cfg.backends.add(name=GEMINI, schema=config_pb2.Schema(name="GCPVertexAI"), upstream_host="vertex.example")
    first = _Envoy(ANTHROPIC_CLIENT, cfg)
    status, body = immediate_json(await first.answer(GEMINI, MESSAGES))
    assert status == 422 and body["error"]["type"] == "invalid_request_error", body
    retried = _Envoy(ANTHROPIC_CLIENT, cfg)
    await retried.attempt(ANTHROPIC, MESSAGES)  # sent; Anthropic answers 529 and Envoy retries
    status, body = immediate_json(await retried.answer(GEMINI, MESSAGES))
    assert status == 503 and body["type"] == "error", body
    assert body["error"]["message"] == (
        "endpoint /anthropic/v1/messages is not supported by backend schema GCPVertexAI, to which the request "
        "failed over when the backends before it failed"
    )
