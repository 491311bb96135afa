"""The Bedrock fake: SigV4 checked like AWS (requests signed here with botocore), Converse and
ConverseStream answers and validation, event-stream frames decoded by botocore's own parser, and
InvokeModel with an Anthropic body."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer

from aigw_fakes import BedrockFake
from aigw_fakes.annotated import fake_providers, start_annotated
from aigw_fakes.bedrock import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, encode_message
from aigw_xds.sources.files import FileSource
from tests.examples.running import EXAMPLES

from ._fakehttp import raw

MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
WIRE_MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1%3A0"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
HI = [{"role": "user", "content": [{"text": "Hello there"}]}]
WEATHER = {
    "toolSpec": {
        "name": "get_weather",
        "description": "Weather for a city",
        "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    }
}
CORAL_AUTH = "http://internal.amazon.com/coral/com.amazon.coral.service/"
CORAL_BEDROCK = "http://internal.amazon.com/coral/com.amazon.bedrock/"
KEYS = Credentials(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY)


@pytest.fixture(scope="module")
def fake() -> Iterator[BedrockFake]:
    with BedrockFake(name="bedrock-a") as f:
        yield f


@pytest.fixture(autouse=True)
def _reset(fake: BedrockFake) -> None:
    fake.reset()


def signed(
    fake: BedrockFake,
    path: str,
    body: Any,
    *,
    creds: Credentials = KEYS,
    region: str = "us-east-1",
    service: str = "bedrock",
    headers: dict[str, str] | None = None,
) -> tuple[str, bytes, dict[str, str]]:
    """(url, body bytes, headers) of a request signed by botocore for the fake."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    url = fake.base_url + path
    request = AWSRequest(
        method="POST", url=url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    SigV4Auth(creds, service, region).add_auth(request)
    return url, data, dict(request.headers.items())


def post(fake: BedrockFake, path: str, body: Any, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    url, data, headers = signed(fake, path, body, **kw)
    return raw("POST", url, data, headers)


def converse(
    fake: BedrockFake, body: dict[str, Any], model: str = WIRE_MODEL, **kw: Any
) -> tuple[int, dict[str, str], Any]:
    status, headers, payload = post(fake, f"/model/{model}/converse", body, **kw)
    return status, headers, json.loads(payload)


def frames(payload: bytes, seed: int = 0) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The (headers, JSON payload) of every event-stream message, fed to botocore in random chunks."""
    rng, buffer, out, i = random.Random(seed), EventStreamBuffer(), [], 0
    while i < len(payload):
        step = rng.randint(1, 40)
        buffer.add_data(payload[i : i + step])
        out += [(m.headers, json.loads(m.payload)) for m in buffer]
        i += step
    return out


def stream(fake: BedrockFake, body: dict[str, Any], **kw: Any) -> list[tuple[str, dict[str, Any]]]:
    status, headers, payload = post(fake, f"/model/{WIRE_MODEL}/converse-stream", body, **kw)
    assert status == 200, payload
    assert headers["content-type"] == "application/vnd.amazon.eventstream"
    out = frames(payload)
    assert all(h[":message-type"] == "event" and h[":content-type"] == "application/json" for h, _ in out)
    return [(h[":event-type"], p) for h, p in out]


# ---- SigV4 ------------------------------------------------------------------------------------


def test_a_botocore_signed_converse_is_answered_and_recorded(fake: BedrockFake) -> None:
    status, headers, body = converse(fake, {"messages": HI, "inferenceConfig": {"maxTokens": 100}})
    assert status == 200
    assert body["output"] == {
        "message": {"role": "assistant", "content": [{"text": f"Fake {MODEL} reply to: Hello there"}]}
    }
    assert body["stopReason"] == "end_turn"
    usage = body["usage"]
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"] and usage["outputTokens"] > 0
    assert body["metrics"] == {"latencyMs": 120}
    assert headers["x-fake-id"] == "bedrock-a" and headers["x-amzn-requestid"]
    [call] = fake.calls
    assert (call.operation, call.model_id, call.access_key_id) == ("Converse", MODEL, TEST_ACCESS_KEY_ID)
    assert call.raw_path == f"/model/{WIRE_MODEL}/converse"
    assert fake.last_request.header("authorization").startswith(f"AWS4-HMAC-SHA256 Credential={TEST_ACCESS_KEY_ID}/")


def test_the_botocore_client_works_end_to_end_with_an_arn_and_a_session_token() -> None:
    arn = f"arn:aws:bedrock:eu-west-1:123456789012:inference-profile/{MODEL}"
    with BedrockFake("AKIDTEMP", "temp-secret", "eu-west-1", session_token="tok") as f:
        client = botocore.session.get_session().create_client(
            "bedrock-runtime",
            region_name="eu-west-1",
            endpoint_url=f.url,
            aws_access_key_id="AKIDTEMP",
            aws_secret_access_key="temp-secret",
            aws_session_token="tok",
        )
        r = client.converse(modelId=arn, messages=HI)
        assert r["output"]["message"]["content"][0]["text"] == f"Fake {arn} reply to: Hello there"
        assert f.calls[-1].model_id == arn and "%2F" in f.calls[-1].raw_path and "%3A" in f.calls[-1].raw_path
        events = list(client.converse_stream(modelId=MODEL, messages=HI)["stream"])
        assert [next(iter(e)) for e in events][-2:] == ["messageStop", "metadata"]
        anthropic_body = {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "yo"}],
        }
        r = client.invoke_model(modelId=CLAUDE, body=json.dumps(anthropic_body))
        assert json.loads(r["body"].read())["content"][0]["text"] == "Fake claude-3-haiku-20240307 reply to: yo"
        untokened = botocore.session.get_session().create_client(
            "bedrock-runtime",
            region_name="eu-west-1",
            endpoint_url=f.url,
            aws_access_key_id="AKIDTEMP",
            aws_secret_access_key="temp-secret",
        )
        with pytest.raises(client.exceptions.ClientError, match="UnrecognizedClientException"):
            untokened.converse(modelId=MODEL, messages=HI)


def _tamper_body(url: str, data: bytes, headers: dict[str, str]) -> tuple[str, bytes, dict[str, str]]:
    return url, data.replace(b"Hello", b"Howdy"), headers


def _tamper_path(url: str, data: bytes, headers: dict[str, str]) -> tuple[str, bytes, dict[str, str]]:
    return url.replace("v1%3A0", "v2%3A0"), data, headers


def _tamper_encoding(url: str, data: bytes, headers: dict[str, str]) -> tuple[str, bytes, dict[str, str]]:
    return url.replace("v1%3A0", "v1:0"), data, headers  # the same model id, decoded: another canonical URI


def _tamper_header(url: str, data: bytes, headers: dict[str, str]) -> tuple[str, bytes, dict[str, str]]:
    return url, data, {**headers, "Content-Type": "text/plain"}


@pytest.mark.parametrize("tamper", [_tamper_body, _tamper_path, _tamper_encoding, _tamper_header])
def test_a_request_changed_after_signing_is_refused(fake: BedrockFake, tamper: Any) -> None:
    url, data, headers = tamper(*signed(fake, f"/model/{WIRE_MODEL}/converse", {"messages": HI}))
    status, resp_headers, payload = raw("POST", url, data, headers)
    assert status == 403
    assert resp_headers["x-amzn-errortype"] == f"InvalidSignatureException:{CORAL_AUTH}"
    message = json.loads(payload)["message"]
    assert message.startswith("The request signature we calculated does not match the signature you provided.")
    assert "The Canonical String for this request should have been" in message
    assert fake.calls == []


@pytest.mark.parametrize(
    ("kw", "name", "message"),
    [
        ({"creds": Credentials(TEST_ACCESS_KEY_ID, "wrong")}, "InvalidSignatureException", "The request signature we"),
        (
            {"creds": Credentials("AKIDOTHER", TEST_SECRET_ACCESS_KEY)},
            "UnrecognizedClientException",
            "The security token",
        ),
        ({"creds": Credentials(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, "tok")}, "UnrecognizedClientException", ""),
        ({"region": "us-west-2"}, "InvalidSignatureException", "Credential should be scoped to a valid region."),
        ({"service": "bedrock-runtime"}, "InvalidSignatureException", "Credential should be scoped to correct service"),
    ],
)
def test_bad_credentials_and_scopes_are_refused(fake: BedrockFake, kw: dict[str, Any], name: str, message: str) -> None:
    status, headers, body = converse(fake, {"messages": HI}, **kw)
    assert status == 403
    assert headers["x-amzn-errortype"] == f"{name}:{CORAL_AUTH}"
    assert body["message"].startswith(message)


@pytest.mark.parametrize(
    ("headers", "name", "message"),
    [
        ({}, "MissingAuthenticationTokenException", "Missing Authentication Token"),
        (
            {"Authorization": "AWS4-HMAC-SHA256 Credential=x"},
            "IncompleteSignatureException",
            "Authorization header requires 'Signature'",
        ),
        ({"Authorization": "Bearer some-api-key"}, "UnrecognizedClientException", "The security token"),
    ],
)
def test_missing_or_malformed_authorization(
    fake: BedrockFake, headers: dict[str, str], name: str, message: str
) -> None:
    status, resp_headers, payload = raw(
        "POST", f"{fake.base_url}/model/{WIRE_MODEL}/converse", {"messages": HI}, headers
    )
    assert status == 403 and resp_headers["x-amzn-errortype"] == f"{name}:{CORAL_AUTH}"
    assert json.loads(payload)["message"].startswith(message)


def test_a_signature_more_than_five_minutes_off_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    later = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=6)
    with BedrockFake(clock=lambda: later, api_key="bedrock-api-key") as f:
        status, _, body = converse(f, {"messages": HI})
        assert status == 403 and body["message"].startswith("Signature expired: ")
        assert body["message"].endswith(" - 5 min.)")
        # a Bedrock API key (Bearer) is not a signature
        url = f"{f.base_url}/model/{WIRE_MODEL}/converse"
        assert raw("POST", url, {"messages": HI}, {"Authorization": "Bearer bedrock-api-key"})[0] == 200
        assert f.calls[-1].access_key_id is None


# ---- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "name", "message"),
    [
        (429, "ThrottlingException", "Too many requests, please wait before trying again."),
        (400, "ValidationException", None),
        (403, "AccessDeniedException", None),
        (404, "ResourceNotFoundException", None),
        (500, "InternalServerException", None),
        (503, "ServiceUnavailableException", None),
    ],
)
def test_injected_errors_have_the_aws_shape(fake: BedrockFake, status: int, name: str, message: str | None) -> None:
    got, headers, body = converse(fake, {"messages": HI}, headers={"x-fake-status": str(status)})
    assert got == status
    assert headers["x-amzn-errortype"] == f"{name}:{CORAL_BEDROCK}"
    assert list(body) == ["message"] and body["message"]
    if message:
        assert body["message"] == message


def test_an_injected_401_is_aws_s_answer_to_unknown_credentials(fake: BedrockFake) -> None:
    """AWS answers no 401: a 401 asked of the fake is the 403 UnrecognizedClientException of AWS's
    auth service (it was a 401 typed ValidationException, which a client's error type followed)."""
    got, headers, body = converse(fake, {"messages": HI}, headers={"x-fake-status": "401"})
    assert got == 403 and headers["x-amzn-errortype"].startswith("UnrecognizedClientException:")
    assert body == {"message": "The security token included in the request is invalid."}


# ---- Converse validation -------------------------------------------------------------------------


def _tool_turns(result: bool = True) -> list[dict[str, Any]]:
    use = {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}}
    turns = [*HI, {"role": "assistant", "content": [use]}]
    if result:
        turns.append(
            {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_1", "content": [{"json": {"t": 21}}]}}]}
        )
    return turns


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": HI, "model": "x"}, "Malformed input request: extraneous key [model] is not permitted"),
        ({}, "1 validation error detected: Value null at 'messages'"),
        ({"messages": []}, "1 validation error detected: Value '[]' at 'messages'"),
        (
            {"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]},
            "A conversation must start with a user message.",
        ),
        ({"messages": [*HI, *HI]}, "A conversation must alternate between user and assistant roles."),
        (
            {"messages": [{"role": "system", "content": [{"text": "hi"}]}]},
            "1 validation error detected: Value 'system'",
        ),
        (
            {"messages": [{"role": "user", "content": [{"text": "  "}]}]},
            "The text field in the ContentBlock object at messages.0.content.0 is blank.",
        ),
        (
            {"messages": [{"role": "user", "content": []}]},
            "The content field in the Message object at messages.0 is empty.",
        ),
        (
            {"messages": _tool_turns()},
            "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
        ),
        (
            {"messages": [*_tool_turns(False), *HI], "toolConfig": {"tools": [WEATHER]}},
            "Expected toolResult blocks at messages.2.content for the following Ids: tooluse_1",
        ),
        (
            {"messages": [{"role": "user", "content": [{"image": {"format": "bmp", "source": {"bytes": "AAAA"}}}]}]},
            "1 validation error detected: Value 'bmp'",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": "not base64!"}}}]}
                ]
            },
            "Invalid base64",
        ),
        (
            {"messages": HI, "inferenceConfig": {"maxTokens": 0}},
            "1 validation error detected: Value '0' at 'inferenceConfig.maxTokens'",
        ),
        (
            {"messages": HI, "inferenceConfig": {"temperature": 1.5}},
            "1 validation error detected: Value '1.5' at 'inferenceConfig.temperature'",
        ),
        (
            {"messages": HI, "inferenceConfig": {"max_tokens": 5}},
            "Malformed input request: extraneous key [max_tokens]",
        ),
        (
            {"messages": HI, "toolConfig": {"tools": []}},
            "1 validation error detected: Value '[]' at 'toolConfig.tools'",
        ),
        (
            {"messages": HI, "toolConfig": {"tools": [WEATHER], "toolChoice": {"tool": {"name": "nope"}}}},
            "The tool nope in toolChoice",
        ),
        (
            {"messages": HI, "toolConfig": {"tools": [WEATHER], "toolChoice": {"none": {}}}},
            "The toolChoice field must set exactly one of auto, any, tool.",
        ),
        (
            {"messages": HI, "system": [{"text": ""}]},
            "The text field in the SystemContentBlock object at system.0 is blank.",
        ),
        ({"messages": HI, "additionalModelRequestFields": "thinking"}, "The value at additionalModelRequestFields"),
        (
            {"messages": HI, "additionalModelResponseFieldPaths": [""]},
            "1 validation error detected: Value '' at 'additionalModelResponseFieldPaths.1.member'",
        ),
        (
            {"messages": HI, "additionalModelResponseFieldPaths": ["stop_sequence"]},
            "The additionalModelResponseFieldPaths value 'stop_sequence' is not a valid JSON Pointer.",
        ),
        (
            {"messages": HI, "additionalModelResponseFieldPaths": ["/a~2b"]},
            "The additionalModelResponseFieldPaths value '/a~2b' is not a valid JSON Pointer.",
        ),
        (
            {"messages": HI, "additionalModelResponseFieldPaths": ["/x"] * 11},
            "1 validation error detected: Value",
        ),
        ({"messages": HI, "additionalModelResponseFieldPaths": "/stop_sequence"}, "The value at additionalModel"),
        (
            {"messages": HI, "outputConfig": {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {}}}}},
            "1 validation error detected: Value null at 'outputConfig.textFormat.structure.jsonSchema.schema'",
        ),
        ({"messages": HI, "outputConfig": {"format": {}}}, "Malformed input request: outputConfig takes only"),
    ],
)
def test_converse_validation_errors(fake: BedrockFake, body: dict[str, Any], message: str) -> None:
    status, headers, payload = converse(fake, body)
    assert status == 400, payload
    assert headers["x-amzn-errortype"] == f"ValidationException:{CORAL_BEDROCK}"
    assert payload["message"].startswith(message), payload["message"]


def test_structured_output_and_claudes_thinking_by_model(fake: BedrockFake) -> None:
    """outputConfig.textFormat answers JSON of its schema (a string, as Bedrock takes it); Opus 4.7
    thinks adaptively only, as the Anthropic fake has it."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    text_format = {"type": "json_schema", "structure": {"jsonSchema": {"schema": json.dumps(schema), "name": "p"}}}
    status, _, payload = converse(fake, {"messages": HI, "outputConfig": {"textFormat": text_format}})
    assert status == 200, payload
    assert set(json.loads(payload["output"]["message"]["content"][0]["text"])) == {"city"}
    budget = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    opus = "us.anthropic.claude-opus-4-7"
    status, _, payload = converse(fake, {"messages": HI, "additionalModelRequestFields": budget}, model=opus)
    assert status == 400 and "thinking.type.enabled is not supported" in payload["message"]
    adaptive = {"messages": HI, "additionalModelRequestFields": {"thinking": {"type": "adaptive"}}}
    status, _, payload = converse(fake, {**adaptive, "outputConfig": {"effort": "xhigh"}}, model=opus)
    assert status == 200 and "reasoningContent" in payload["output"]["message"]["content"][0]


@pytest.mark.parametrize(
    ("model", "refused"),
    [
        ("amazon.titan-text-express-v1", True),
        ("mistral.mistral-7b-instruct-v0:2", True),
        ("mistral.mixtral-8x7b-instruct-v0:1", True),
        ("cohere.command-light-text-v14", True),
        ("amazon.nova-micro-v1:0", False),
        ("mistral.mistral-large-2407-v1:0", False),
    ],
)
def test_a_system_prompt_is_refused_by_the_models_that_take_none(fake: BedrockFake, model: str, refused: bool) -> None:
    status, _, payload = converse(fake, {"messages": HI, "system": [{"text": "be brief"}]}, model=model)
    assert (status, "doesn't support system messages" in str(payload)) == ((400, True) if refused else (200, False))


def test_valid_rich_content_is_accepted(fake: BedrockFake) -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    messages = [
        {"role": "user", "content": [{"text": "Look"}, {"image": {"format": "png", "source": {"bytes": png}}}]},
        {
            "role": "assistant",
            "content": [{"reasoningContent": {"reasoningText": {"text": "hm", "signature": "s"}}}, {"text": "ok"}],
        },
        {"role": "user", "content": [{"text": "Thanks"}]},
    ]
    body = {
        "messages": messages,
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {"temperature": 0.2, "topP": 0.9},
    }
    assert converse(fake, body)[0] == 200


# ---- answers --------------------------------------------------------------------------------------


def test_tool_use_then_the_tool_result_is_answered_with_text(fake: BedrockFake) -> None:
    status, _, body = converse(fake, {"messages": HI, "toolConfig": {"tools": [WEATHER]}})
    assert status == 200 and body["stopReason"] == "tool_use"
    content = body["output"]["message"]["content"]
    assert content[0] == {"text": "I'll use the get_weather tool."}
    use = content[1]["toolUse"]
    assert use["name"] == "get_weather" and use["input"] == {"city": "example city"}
    assert use["toolUseId"].startswith("tooluse_")
    follow = {"messages": _tool_turns(), "toolConfig": {"tools": [WEATHER]}}
    status, _, body = converse(fake, follow)
    assert status == 200 and body["stopReason"] == "end_turn"
    assert list(body["output"]["message"]["content"][0]) == ["text"]
    forced = {"messages": HI, "toolConfig": {"tools": [WEATHER], "toolChoice": {"tool": {"name": "get_weather"}}}}
    assert [list(b) for b in converse(fake, forced)[2]["output"]["message"]["content"]] == [["toolUse"]]


def test_reasoning_max_tokens_and_stop_sequences(fake: BedrockFake) -> None:
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    sonnet = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"  # 3.5 Haiku does not think
    body = converse(fake, {"messages": HI, "additionalModelRequestFields": thinking}, model=sonnet)[2]
    first = body["output"]["message"]["content"][0]["reasoningContent"]["reasoningText"]
    assert first["text"].startswith("Fake reasoning about") and first["signature"]
    short = converse(fake, {"messages": HI, "inferenceConfig": {"maxTokens": 2}})[2]
    assert short["stopReason"] == "max_tokens" and short["output"]["message"]["content"][0]["text"] == "Fake"
    cut = converse(fake, {"messages": HI, "inferenceConfig": {"stopSequences": ["reply"]}})[2]
    assert cut["stopReason"] == "stop_sequence"
    assert cut["output"]["message"]["content"][0]["text"] == f"Fake {MODEL} "
    assert "additionalModelResponseFields" not in cut


@pytest.mark.parametrize(
    ("model", "stops", "paths", "fields"),
    [
        (WIRE_MODEL, ["reply"], ["/stop_sequence"], {"stop_sequence": "reply"}),
        (WIRE_MODEL, ["never there"], ["/stop_sequence"], {"stop_sequence": None}),
        (WIRE_MODEL, ["reply"], ["/stop_sequence", "/unknown~1field"], {"stop_sequence": "reply"}),
        (WIRE_MODEL, ["reply"], ["/unknown"], None),  # a field the answer lacks is ignored
        ("us.amazon.nova-pro-v1%3A0", ["reply"], ["/stop_sequence"], None),  # not Claude: no such field
    ],
)
def test_additional_model_response_field_paths_return_the_matched_stop_sequence(
    fake: BedrockFake, model: str, stops: list[str], paths: list[str], fields: dict[str, Any] | None
) -> None:
    body = {"messages": HI, "inferenceConfig": {"stopSequences": stops}, "additionalModelResponseFieldPaths": paths}
    status, _, answer = converse(fake, body, model=model)
    assert status == 200, answer
    assert answer.get("additionalModelResponseFields") == fields
    assert answer["stopReason"] == ("stop_sequence" if "reply" in stops else "end_turn")
    if model != WIRE_MODEL:
        return
    events = stream(fake, body)
    assert [n for n, _ in events][-2:] == ["messageStop", "metadata"]
    for name, payload in events:
        if name == "messageStop":
            assert payload.get("additionalModelResponseFields") == fields
            assert payload["stopReason"] == answer["stopReason"]
        else:
            assert "additionalModelResponseFields" not in payload


# ---- ConverseStream ------------------------------------------------------------------------------


def test_converse_stream_frames_decode_and_end_with_metadata(fake: BedrockFake) -> None:
    events = stream(fake, {"messages": HI})
    names = [n for n, _ in events]
    assert names[0] == "messageStart" and events[0][1] == {"role": "assistant"}
    assert names[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert (
        "".join(p["delta"]["text"] for n, p in events if n == "contentBlockDelta")
        == f"Fake {MODEL} reply to: Hello there"
    )
    assert all(p["contentBlockIndex"] == 0 for n, p in events if n.startswith("contentBlock"))
    assert events[-2][1] == {"stopReason": "end_turn"}
    metadata = events[-1][1]
    assert set(metadata["usage"]) == {"inputTokens", "outputTokens", "totalTokens"}
    assert metadata["metrics"] == {"latencyMs": 120}


def test_converse_stream_tool_use_and_reasoning(fake: BedrockFake) -> None:
    body = {
        "messages": HI,
        "toolConfig": {"tools": [WEATHER], "toolChoice": {"any": {}}},
        "additionalModelRequestFields": {"reasoning_config": {"type": "enabled", "budget_tokens": 1024}},
    }
    events = stream(fake, body)
    reasoning = [
        p["delta"]["reasoningContent"] for n, p in events if n == "contentBlockDelta" and p["contentBlockIndex"] == 0
    ]
    assert "".join(r.get("text", "") for r in reasoning).startswith("Fake reasoning") and "signature" in reasoning[-1]
    [start] = [p for n, p in events if n == "contentBlockStart"]
    assert start["contentBlockIndex"] == 1 and start["start"]["toolUse"]["name"] == "get_weather"
    fragments = [
        p["delta"]["toolUse"]["input"] for n, p in events if n == "contentBlockDelta" and p["contentBlockIndex"] == 1
    ]
    assert len(fragments) > 1 and json.loads("".join(fragments)) == {"city": "example city"}
    assert [p for n, p in events if n == "messageStop"] == [{"stopReason": "tool_use"}]


def _chunk_sizes(fake: BedrockFake, path: str, body: dict[str, Any]) -> tuple[list[int], bytes]:
    """The HTTP/1.1 chunk sizes of a streamed answer (one per write of the fake) and the body."""
    url, data, headers = signed(fake, path, body)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{fake.port}\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + f"Content-Length: {len(data)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as s:
        s.sendall(head.encode() + data)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    rest = received.split(b"\r\n\r\n", 1)[1]
    sizes, out = [], b""
    while True:
        line, rest = rest.split(b"\r\n", 1)
        size = int(line, 16)
        if size == 0:
            return sizes, out
        sizes.append(size)
        out, rest = out + rest[:size], rest[size + 2 :]


def test_the_stream_is_written_in_pieces_that_cross_frame_boundaries(fake: BedrockFake) -> None:
    sizes, payload = _chunk_sizes(fake, f"/model/{WIRE_MODEL}/converse-stream", {"messages": HI})
    assert sizes[:5] == [1, 7, 13, 64, 1]
    assert frames(payload, seed=1)[-1][0][":event-type"] == "metadata"
    boundaries, offset = set(), 0
    buffer = EventStreamBuffer()
    buffer.add_data(payload)
    for message in buffer:
        offset += message.prelude.total_length
        boundaries.add(offset)
    ends, offset = set(), 0
    for size in sizes:
        offset += size
        ends.add(offset)
    assert boundaries - ends, "some frame ends inside a write"


def test_stream_faults(fake: BedrockFake) -> None:
    path = f"/model/{WIRE_MODEL}/converse-stream"
    status, _, payload = post(fake, path, {"messages": HI}, headers={"x-fake-stream-error-after": "2"})
    decoded = frames(payload)
    assert [h[":message-type"] for h, _ in decoded] == ["event", "event", "exception"]
    assert decoded[-1][0][":exception-type"] == "modelStreamErrorException"
    throttled = post(
        fake,
        path,
        {"messages": HI},
        headers={"x-fake-stream-error-after": "1", "x-fake-stream-error-type": "throttlingException"},
    )
    [_, (headers, body)] = frames(throttled[2])
    assert headers[":exception-type"] == "throttlingException" and body["message"].startswith("Too many requests")
    ended = frames(post(fake, path, {"messages": HI}, headers={"x-fake-stream-end-after": "3"})[2])
    assert [h[":event-type"] for h, _ in ended] == ["messageStart", "contentBlockDelta", "contentBlockDelta"]
    with pytest.raises(http.client.IncompleteRead) as cut:
        post(fake, path, {"messages": HI}, headers={"x-fake-stream-abort-after": "2"})
    assert [h[":event-type"] for h, _ in frames(cut.value.partial)] == ["messageStart", "contentBlockDelta"]


def test_padding_and_the_encoder() -> None:
    message = encode_message({":event-type": "x", ":message-type": "event"}, b'{"a":1}')
    buffer = EventStreamBuffer()
    buffer.add_data(message)
    [decoded] = list(buffer)
    assert decoded.headers == {":event-type": "x", ":message-type": "event"} and decoded.payload == b'{"a":1}'
    with BedrockFake(padding=True, split_writes=None) as f:
        events = stream(f, {"messages": HI})
        assert all(isinstance(p.get("p"), str) for _, p in events)


# ---- InvokeModel (Anthropic on Bedrock) ----------------------------------------------------------


def _anthropic(**extra: Any) -> dict[str, Any]:
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hi"}],
        **extra,
    }


def test_invoke_model_answers_anthropic_messages(fake: BedrockFake) -> None:
    status, headers, payload = post(fake, f"/model/{CLAUDE}/invoke", _anthropic())
    body = json.loads(payload)
    assert status == 200 and body["type"] == "message" and body["model"] == "claude-3-haiku-20240307"
    assert body["content"] == [{"type": "text", "text": "Fake claude-3-haiku-20240307 reply to: Hi"}]
    assert headers["x-amzn-bedrock-output-token-count"] == str(body["usage"]["output_tokens"])
    assert fake.calls[-1].operation == "InvokeModel"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]},
            "Malformed input request: #: required key [anthropic_version] not found",
        ),
        (_anthropic(model="claude"), "Malformed input request: #: extraneous key [model] is not permitted"),
        (_anthropic(stream=True), "Malformed input request: #: extraneous key [stream] is not permitted"),
        (_anthropic(messages=[]), "messages: at least one message is required"),
        (_anthropic(anthropic_beta=["oauth-2025-04-20"]), "invalid beta flag"),
    ],
)
def test_invoke_model_validation(fake: BedrockFake, body: dict[str, Any], message: str) -> None:
    status, headers, payload = post(fake, f"/model/{CLAUDE}/invoke", body)
    assert status == 400 and headers["x-amzn-errortype"].startswith("ValidationException:")
    assert json.loads(payload)["message"].startswith(message)


def test_invoke_with_response_stream_sends_anthropic_events_in_chunks(fake: BedrockFake) -> None:
    status, _, payload = post(fake, f"/model/{CLAUDE}/invoke-with-response-stream", _anthropic())
    decoded = frames(payload)
    assert status == 200 and {h[":event-type"] for h, _ in decoded} == {"chunk"}
    events = [json.loads(base64.b64decode(p["bytes"])) for _, p in decoded]
    assert [e["type"] for e in events][:2] == ["message_start", "content_block_start"]
    assert [e["type"] for e in events][-2:] == ["message_delta", "message_stop"]
    assert events[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == events[-2]["usage"]["output_tokens"]


def test_unknown_operations_are_404(fake: BedrockFake) -> None:
    status, headers, _ = post(fake, f"/model/{WIRE_MODEL}/chat", {"messages": HI})
    assert status == 404 and headers["x-amzn-errortype"].startswith("UnknownOperationException:")


# ---- `aigw-xds run` --------------------------------------------------------------------------------


def test_an_annotated_bedrock_backend_gets_a_fake_with_the_region_and_test_keys(tmp_path: Path) -> None:
    port = _free_port()
    text = _annotated_example(port).replace("region: us-east-1", "region: eu-central-1")
    (tmp_path / "bedrock.yaml").write_text(text)
    resources = FileSource(tmp_path).load()
    [spec] = fake_providers(resources)
    assert spec.provider == "bedrock" and spec.aws is not None and spec.aws.region == "eu-central-1"
    assert (spec.aws.access_key_id, spec.aws.secret_access_key) == (TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY)
    running = start_annotated(resources)
    try:
        [f] = running.fakes
        assert isinstance(f, BedrockFake) and f.port == port
        assert converse(f, {"messages": HI}, region="eu-central-1")[0] == 200
    finally:
        running.stop()


def _annotated_example(port: int) -> str:
    """examples/bedrock with its Backend on 127.0.0.1:port, annotated for the bedrock fake."""
    text = (EXAMPLES / "bedrock" / "bedrock.yaml").read_text()
    endpoint = "    - fqdn:\n        hostname: bedrock-runtime.us-east-1.amazonaws.com\n        port: 443\n"
    backend = "kind: Backend\nmetadata:\n  name: bedrock\n"
    assert endpoint in text and backend in text
    text = text.replace(endpoint, f"    - ip:\n        address: 127.0.0.1\n        port: {port}\n", 1)
    return text.replace(backend, backend + "  annotations:\n    aigw-xds.dev/fake-provider: bedrock\n", 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_credentials_file_in_the_policy_gives_the_fake_its_keys(tmp_path: Path) -> None:
    text = _annotated_example(19999)
    policy = "  awsCredentials:\n    region: us-east-1\n"
    assert policy in text
    text = text.replace(
        policy, policy + "    credentialsFile:\n      secretRef: {name: aws-credentials}\n      profile: ci\n"
    )
    text += (
        "\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: aws-credentials, namespace: default}\nstringData:\n"
        "  credentials: |\n    [ci]\n    aws_access_key_id = AKIDFILE\n    aws_secret_access_key = file-secret\n"
        "    aws_session_token = file-token\n"
    )
    (tmp_path / "bedrock.yaml").write_text(text)
    [spec] = fake_providers(FileSource(tmp_path).load())
    assert spec.aws == ("us-east-1", "AKIDFILE", "file-secret", "file-token")


# ---- embeddings and CountTokens (the official botocore client as the oracle of the wire shapes) ----


@pytest.fixture
def runtime(fake: BedrockFake) -> Any:
    return botocore.session.get_session().create_client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=fake.url,
        aws_access_key_id=TEST_ACCESS_KEY_ID,
        aws_secret_access_key=TEST_SECRET_ACCESS_KEY,
    )


def _invoke_json(runtime: Any, model: str, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    r = runtime.invoke_model(modelId=model, body=json.dumps(body))
    return json.loads(r["body"].read()), r["ResponseMetadata"]["HTTPHeaders"]


def test_titan_v2_embeddings(runtime: Any) -> None:
    answer, headers = _invoke_json(
        runtime, "amazon.titan-embed-text-v2:0", {"inputText": "hello world", "dimensions": 256, "normalize": True}
    )
    assert len(answer["embedding"]) == 256 and answer["embeddingsByType"] == {"float": answer["embedding"]}
    assert abs(sum(v * v for v in answer["embedding"]) - 1) < 1e-9
    assert answer["inputTextTokenCount"] > 0
    assert headers["x-amzn-bedrock-input-token-count"] == str(answer["inputTextTokenCount"])
    again, _ = _invoke_json(runtime, "amazon.titan-embed-text-v2:0", {"inputText": "hello world", "dimensions": 256})
    assert again["embedding"] == answer["embedding"]  # deterministic


@pytest.mark.parametrize("embedding_types", [None, ["float", "int8"]])
def test_cohere_embeddings(runtime: Any, embedding_types: list[str] | None) -> None:
    body: dict[str, Any] = {"texts": ["a cat", "a dog"], "input_type": "search_document"}
    if embedding_types:
        body["embedding_types"] = embedding_types
    answer, headers = _invoke_json(runtime, "cohere.embed-english-v3", body)
    assert answer["texts"] == ["a cat", "a dog"] and int(headers["x-amzn-bedrock-input-token-count"]) > 0
    if embedding_types is None:
        assert answer["response_type"] == "embeddings_floats" and len(answer["embeddings"]) == 2
        assert len(answer["embeddings"][0]) == 1024
    else:
        assert answer["response_type"] == "embeddings_by_type"
        assert set(answer["embeddings"]) == {"float", "int8"} and len(answer["embeddings"]["int8"][1]) == 1024


@pytest.mark.parametrize(
    ("model", "body", "words"),
    [
        ("amazon.titan-embed-text-v2:0", {"inputText": "x", "encoding_format": "float"}, "extraneous key"),
        ("amazon.titan-embed-text-v2:0", {"inputText": "x", "dimensions": 300}, "dimensions"),
        ("amazon.titan-embed-text-v2:0", {"texts": ["x"]}, "extraneous key"),
        ("amazon.titan-embed-text-v1", {"inputText": "x", "dimensions": 256}, "extraneous key"),
        ("amazon.titan-embed-text-v2:0", {}, "inputText"),
        ("cohere.embed-english-v3", {"texts": ["x"]}, "input_type"),
        ("cohere.embed-english-v3", {"texts": ["x"] * 97, "input_type": "search_query"}, "maximum item count"),
        ("cohere.embed-english-v3", {"texts": ["x"], "input_type": "search_query", "output_dimension": 256}, "extra"),
        ("cohere.embed-v4:0", {"texts": ["x"], "input_type": "search_query", "output_dimension": 100}, "output_dim"),
        ("cohere.embed-english-v3", {"texts": ["x"], "input_type": "search_query", "truncate": "MID"}, "truncate"),
    ],
)
def test_embedding_bodies_are_validated_as_bedrock_does(
    runtime: Any, model: str, body: dict[str, Any], words: str
) -> None:
    with pytest.raises(runtime.exceptions.ValidationException, match=words):
        runtime.invoke_model(modelId=model, body=json.dumps(body))


def test_embedding_models_do_not_stream(fake: BedrockFake) -> None:
    status, headers, _ = post(fake, "/model/cohere.embed-english-v3/invoke-with-response-stream", {"texts": ["x"]})
    assert status == 400 and headers["x-amzn-errortype"].startswith("ValidationException:")


def test_count_tokens_converse_and_invoke_model_match_the_calls(runtime: Any) -> None:
    converse_tokens = runtime.count_tokens(modelId=CLAUDE, input={"converse": {"messages": HI}})["inputTokens"]
    assert converse_tokens == runtime.converse(modelId=CLAUDE, messages=HI)["usage"]["inputTokens"]
    anthropic_body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "count me"}],
    }
    blob = json.dumps(anthropic_body).encode()  # botocore base64-encodes the blob itself
    counted = runtime.count_tokens(modelId=CLAUDE, input={"invokeModel": {"body": blob}})["inputTokens"]
    answer, _ = _invoke_json(runtime, CLAUDE, anthropic_body)
    assert counted == answer["usage"]["input_tokens"] > 0


@pytest.mark.parametrize(
    ("model", "union", "words"),
    [
        (MODEL, {"converse": {"messages": HI}}, "doesn't support counting tokens"),  # inference profile
        ("amazon.nova-micro-v1:0", {"converse": {"messages": HI}}, "doesn't support counting tokens"),
        (CLAUDE, {"invokeModel": {"body": b'{"messages":[]}'}}, "anthropic_version"),
    ],
)
def test_count_tokens_validation(runtime: Any, model: str, union: dict[str, Any], words: str) -> None:
    with pytest.raises(runtime.exceptions.ValidationException, match=words):
        runtime.count_tokens(modelId=model, input=union)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"input": {"converse": {"messages": HI, "inferenceConfig": {"maxTokens": 5}}}}, "extraneous key"),
        ({"input": {"converse": {"messages": []}}}, "messages"),
        ({"input": {"converse": {"messages": HI}, "invokeModel": {"body": "e30="}}}, "exactly one"),
        ({"input": {"invokeModel": {"body": "not base64!"}}}, "base64"),
        ({"input": {"converse": {"messages": HI}}, "modelId": CLAUDE}, "extraneous key"),
    ],
)
def test_count_tokens_bodies_the_sdk_would_not_send(fake: BedrockFake, body: dict[str, Any], words: str) -> None:
    status, headers, payload = post(fake, f"/model/{CLAUDE}/count-tokens", body)
    assert status == 400 and headers["x-amzn-errortype"].startswith("ValidationException:")
    assert words in json.loads(payload)["message"]


def test_count_tokens_throttled_carries_the_error_type(fake: BedrockFake) -> None:
    fake.fail_next(1, 429)
    status, headers, payload = post(fake, f"/model/{CLAUDE}/count-tokens", {"input": {"converse": {"messages": HI}}})
    assert status == 429 and headers["x-amzn-errortype"].startswith("ThrottlingException:")
    assert json.loads(payload)["message"]
