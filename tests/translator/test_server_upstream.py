"""The upstream-level phase driven with ProcessingRequest protos (no Envoy)."""

from __future__ import annotations

import json

import pytest

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_translator.server import ExternalProcessor

from .extproc_helpers import (
    drive,
    immediate_json,
    metadata,
    request_body,
    request_headers,
    set_headers,
    upstream_attributes,
)

ANTHROPIC = "ns/claude/route/r/rule/0/ref/0"
OPENAI = "ns/gpt/route/r/rule/0/ref/1"
AZURE = "ns/azure/route/r/rule/0/ref/2"
OVERRIDE = "ns/byok/route/r/rule/0/ref/3"


def config() -> config_pb2.TranslatorConfig:
    cfg = config_pb2.TranslatorConfig(name="ns/gw")
    a = cfg.backends.add(
        name=ANTHROPIC, route_name="ns/r", schema=config_pb2.Schema(name="Anthropic"), model_name_override="claude-x"
    )
    a.auth.anthropic_api_key.key = "sk-ant"
    o = cfg.backends.add(name=OPENAI, route_name="ns/r", schema=config_pb2.Schema(name="OpenAI"))
    o.auth.api_key.key = "sk-openai"
    o.header_mutation.set.add(name="X-Team", value="blue")
    o.header_mutation.remove.append("x-drop-me")
    o.body_mutation.set.add(path="service_tier", value='"flex"')
    o.body_mutation.remove.append("user")
    z = cfg.backends.add(
        name=AZURE, schema=config_pb2.Schema(name="AzureOpenAI", version="2024-10-21"), model_name_override="dep1"
    )
    z.auth.azure_api_key.key = "az-key"
    b = cfg.backends.add(name=OVERRIDE, schema=config_pb2.Schema(name="OpenAI"))
    b.auth.api_key.key = ""
    b.auth.credential_override.from_request_headers.header = ""
    return cfg


ROUTED = {
    ":method": "POST",
    ":path": "/v1/chat/completions",
    ":authority": "gw",
    "content-type": "application/json",
    "content-length": "40",
    "authorization": "Bearer client-key",
    contract.MODEL_HEADER: "claude",
    contract.ORIGINAL_PATH_HEADER: "/v1/chat/completions",
}
CHAT = {"model": "claude", "messages": [{"role": "user", "content": "hi"}], "user": "u"}


async def _attempt(hdrs: dict, backend: str, body: dict | bytes | None = CHAT, cluster: str = ""):
    attrs = upstream_attributes(host_backend=backend, cluster_backend=cluster)
    reqs = [request_headers(hdrs, end_of_stream=body is None, attributes=attrs)]
    if body is not None:
        reqs.append(request_body(body))
    return await drive(ExternalProcessor(config()), reqs)


async def test_openai_to_anthropic_attempt() -> None:
    out = await _attempt(ROUTED, ANTHROPIC)
    assert out[0].WhichOneof("response") == "request_headers"
    assert not out[0].request_headers.HasField("response")
    common = out[1].request_body.response
    body = common.body_mutation.body
    hdrs = set_headers(common.header_mutation)
    assert hdrs[":path"] == "/v1/messages"
    assert hdrs["x-api-key"] == "sk-ant"
    assert hdrs["anthropic-version"] == "2023-06-01"
    assert hdrs["content-length"] == str(len(body))
    assert {"authorization", "api-key"} <= set(common.header_mutation.remove_headers)
    assert json.loads(body)["model"] == "claude-x"
    fields = metadata(out[1])
    assert fields.pop(contract.SEALED_ORIGINAL_HEADERS_KEY)  # what attempt 1 changed, sealed for a retry
    assert fields == {"backend_name": ANTHROPIC, "content_length": str(len(body))}


async def test_retry_attempt_ignores_leftovers_of_earlier_attempt() -> None:
    """Attempt 1 (Anthropic) rewrote :path, content-length and set x-api-key on the shared header
    map; attempt 2 (OpenAI) must start from x-ai-eg-original-path and replace the credential."""
    leftovers = {
        **ROUTED,
        ":path": "/v1/messages",
        "content-length": "999",
        "x-api-key": "sk-ant",
        "anthropic-version": "2023-06-01",
    }
    leftovers.pop("authorization")
    out = await _attempt(leftovers, OPENAI, body={"model": "claude", "messages": [], "user": "u"})
    common = out[1].request_body.response
    hdrs = set_headers(common.header_mutation)
    assert hdrs[":path"] == "/v1/chat/completions"
    assert hdrs["authorization"] == "Bearer sk-openai"
    assert "x-api-key" in common.header_mutation.remove_headers
    # backend header and body mutations
    assert hdrs["x-team"] == "blue"
    assert "x-drop-me" in common.header_mutation.remove_headers
    body = json.loads(common.body_mutation.body)
    assert body == {"model": "claude", "messages": [], "service_tier": "flex"}
    assert hdrs["content-length"] == str(len(common.body_mutation.body))


async def test_unchanged_body_still_gets_correct_content_length() -> None:
    raw = json.dumps({"model": "gpt", "messages": []}).encode()
    cfg_hdrs = {**ROUTED, "content-length": "999"}
    attrs = upstream_attributes(host_backend=OVERRIDE)
    out = await drive(
        ExternalProcessor(config()),
        [request_headers({**cfg_hdrs, "x-aigw-api-key": "user-key"}, attributes=attrs), request_body(raw)],
    )
    common = out[1].request_body.response
    assert not common.HasField("body_mutation")
    hdrs = set_headers(common.header_mutation)
    assert hdrs["content-length"] == str(len(raw))
    assert hdrs["authorization"] == "Bearer user-key"
    assert "x-aigw-api-key" in common.header_mutation.remove_headers


async def test_missing_override_is_401_in_client_schema() -> None:
    out = await _attempt(
        {**ROUTED, contract.ORIGINAL_PATH_HEADER: "/anthropic/v1/messages"}, OVERRIDE, body={"model": "m"}
    )
    code, obj = immediate_json(out[1])
    assert code == 401
    assert obj["type"] == "error" and obj["error"]["type"] == "authentication_error"
    assert "client-key" not in json.dumps(obj)


async def test_azure_attempt_and_cluster_metadata_fallback() -> None:
    out = await _attempt(ROUTED, "", cluster=AZURE)
    hdrs = set_headers(out[1].request_body.response.header_mutation)
    assert hdrs[":path"] == "/openai/deployments/dep1/chat/completions?api-version=2024-10-21"
    assert hdrs["api-key"] == "az-key"


@pytest.mark.parametrize(
    ("backend", "original", "body", "status"),
    [
        # Its configuration has not reached this translator (yet, or it follows another fleet).
        ("unknown/backend", "/v1/chat/completions", CHAT, 503),
        (ANTHROPIC, "/v1/embeddings", {"model": "m", "input": "x"}, 422),
        (ANTHROPIC, "/v1/chat/completions", {**CHAT, "n": 3}, 422),
        (ANTHROPIC, "/v1/chat/completions", b"{bad", 400),
    ],
)
async def test_local_replies(backend: str, original: str, body, status: int) -> None:
    out = await _attempt({**ROUTED, contract.ORIGINAL_PATH_HEADER: original}, backend, body=body)
    code, obj = immediate_json(out[-1])
    assert code == status
    assert "error" in obj


@pytest.mark.parametrize(
    ("backend", "body", "level"), [("unknown/backend", CHAT, "warning"), (ANTHROPIC, b"{bad", "info")]
)
async def test_a_local_reply_is_a_warning_when_the_gateway_is_at_fault(backend: str, body, level: str) -> None:
    """A 5xx the gateway answers itself is its operator's to look at (a translator following
    another fleet than its Envoy's: a new user saw only an info line); a client's 4xx is info."""
    import structlog

    with structlog.testing.capture_logs() as logs:
        await _attempt({**ROUTED, contract.ORIGINAL_PATH_HEADER: "/v1/chat/completions"}, backend, body=body)
    [reply] = [e for e in logs if e["event"] == "upstream_local_reply"]
    assert reply["log_level"] == level


async def test_bodyless_request_is_handled_at_headers() -> None:
    hdrs = {
        ":method": "GET",
        ":path": "/v1/files",
        ":authority": "gw",
        contract.ORIGINAL_PATH_HEADER: "/v1/files?limit=1",
    }
    out = await _attempt(hdrs, OPENAI, body=None)
    assert len(out) == 1
    common = out[0].request_headers.response
    hdrs_set = set_headers(common.header_mutation)
    assert hdrs_set[":path"] == "/v1/files?limit=1"
    assert hdrs_set["authorization"] == "Bearer sk-openai"
    assert "content-length" in common.header_mutation.remove_headers
    assert metadata(out[0]).get("backend_name") == OPENAI
