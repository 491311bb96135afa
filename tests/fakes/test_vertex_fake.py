"""The fake Vertex AI (Gemini, embeddings, Claude on Vertex) and the fake Google token services it
takes tokens from: what they accept and reject, checked with raw HTTP, google-auth and the official
anthropic SDK's Vertex client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from google.auth.exceptions import RefreshError
from google.auth.transport.requests import Request
from google.oauth2 import service_account

from aigw_fakes.google_auth import GoogleAuthFake
from aigw_fakes.service_account_key import make_service_account_key
from aigw_fakes.vertex import VertexFake

from ._fakehttp import raw, sse_events

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
BASE = "/v1/projects/proj/locations/us-central1/publishers"


@pytest.fixture
def tokens() -> Iterator[GoogleAuthFake]:
    with GoogleAuthFake() as fake:
        yield fake


@pytest.fixture
def vertex(tokens: GoogleAuthFake) -> Iterator[VertexFake]:
    with VertexFake(token_validator=tokens, project="proj", region="us-central1") as fake:
        yield fake


def token_for(key: dict[str, Any]) -> str:
    creds = service_account.Credentials.from_service_account_info(key, scopes=[SCOPE])
    creds.refresh(Request())
    return str(creds.token)


@pytest.fixture
def token(tokens: GoogleAuthFake) -> str:
    return token_for(tokens.make_key())


def post(vertex: VertexFake, path: str, body: Any, token: str) -> tuple[int, dict[str, str], Any]:
    status, headers, payload = raw("POST", vertex.base_url + path, body, {"authorization": f"Bearer {token}"})
    is_json = headers.get("content-type", "").startswith("application/json")
    return status, headers, json.loads(payload) if is_json else payload


def gemini(vertex: VertexFake, body: Any, token: str, method: str = "generateContent", model: str = "gemini-2.5-flash"):
    return post(vertex, f"{BASE}/google/models/{model}:{method}", body, token)


HELLO = {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}


# ---- tokens ----------------------------------------------------------------------------------


def test_google_auth_gets_a_token_for_a_registered_key_and_vertex_takes_it(vertex: VertexFake, token: str) -> None:
    status, _, body = gemini(vertex, HELLO, token)
    assert status == 200
    assert body["candidates"][0]["content"]["parts"][0]["text"] == "Fake gemini-2.5-flash reply to: hello there"


def test_an_unknown_key_is_refused_as_google_does(tokens: GoogleAuthFake) -> None:
    with pytest.raises(RefreshError, match="invalid_grant"):
        token_for(make_service_account_key(tokens.token_uri))


def test_a_token_signed_by_another_key_is_an_invalid_signature(tokens: GoogleAuthFake) -> None:
    key = tokens.make_key()
    other = make_service_account_key(tokens.token_uri)
    forged = {**key, "private_key": other["private_key"]}
    with pytest.raises(RefreshError, match="Invalid JWT Signature"):
        token_for(forged)


def test_vertex_refuses_missing_unknown_and_expired_tokens(tokens: GoogleAuthFake, vertex: VertexFake) -> None:
    for token in ("", "ya29.made-up"):
        status, _, body = gemini(vertex, HELLO, token)
        assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED"
    tokens.lifetime = 0.5
    token = token_for(tokens.make_key())
    assert gemini(vertex, HELLO, token)[0] == 200
    time.sleep(0.6)
    assert gemini(vertex, HELLO, token)[0] == 401


def test_another_project_is_permission_denied(vertex: VertexFake, token: str) -> None:
    path = "/v1/projects/other/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
    status, _, body = post(vertex, path, HELLO, token)
    assert status == 403 and body["error"]["status"] == "PERMISSION_DENIED"


def test_impersonation_needs_a_valid_bearer_and_an_allowed_account(tokens: GoogleAuthFake, token: str) -> None:
    url = tokens.base_url + "/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateAccessToken"
    status, _, _ = raw("POST", url, {"scope": [SCOPE]}, {"authorization": "Bearer nope"})
    assert status == 401
    status, _, body = raw("POST", url, {"scope": [SCOPE]}, {"authorization": f"Bearer {token}"})
    assert status == 403 and b"PERMISSION_DENIED" in body
    tokens.allow_impersonation("sa@p.iam.gserviceaccount.com")
    status, _, body = raw("POST", url, {"scope": [SCOPE], "lifetime": "600s"}, {"authorization": f"Bearer {token}"})
    answer = json.loads(body)
    assert status == 200 and tokens.validate(answer["accessToken"])
    assert answer["expireTime"].endswith("Z")


def test_impersonating_an_email_naming_a_project_number_is_not_found(tokens: GoogleAuthFake, token: str) -> None:
    email = "sa@123456789012.iam.gserviceaccount.com"  # a project number: no service account has such an email
    with pytest.raises(ValueError, match="project number"):
        tokens.allow_impersonation(email)
    url = tokens.base_url + f"/v1/projects/-/serviceAccounts/{email}:generateAccessToken"
    status, _, body = raw("POST", url, {"scope": [SCOPE]}, {"authorization": f"Bearer {token}"})
    assert status == 404 and json.loads(body)["error"]["status"] == "NOT_FOUND"


# ---- Gemini ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**HELLO, "model": "gemini"}, 'Unknown name "model"'),
        ({**HELLO, "generationConfig": {"max_tokens": 5}}, 'Unknown name "max_tokens"'),
        ({"contents": []}, "at least one parts"),
        ({"contents": [{"role": "user", "parts": []}]}, "at least one parts"),
        ({"contents": [{"role": "user", "parts": [{"text": ""}]}]}, "empty text parameter"),
        ({"contents": [{"role": "model", "parts": [{"text": "hi"}]}]}, "alternate"),
        (
            {"contents": [{"role": "user", "parts": [{"text": "a"}]}, {"role": "user", "parts": [{"text": "b"}]}]},
            "alternate",
        ),
        ({"contents": [{"role": "assistant", "parts": [{"text": "a"}]}]}, "valid role"),
        ({**HELLO, "generationConfig": {"temperature": 3}}, "temperature"),
        ({**HELLO, "toolConfig": {"functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["f"]}}}, "ANY"),
        *(
            (
                {"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": mime, "data": "/9j/4AAQ"}}]}]},
                f"Unsupported MIME type: {mime}",
            )
            for mime in ("image/jpg", "image/gif")
        ),
    ],
)
def test_gemini_rejects_what_vertex_rejects(vertex: VertexFake, token: str, body: Any, message: str) -> None:
    status, _, answer = gemini(vertex, body, token)
    assert status == 400, answer
    assert answer["error"]["status"] == "INVALID_ARGUMENT"
    assert message in answer["error"]["message"]


def test_snake_case_field_names_are_accepted_as_proto_json(vertex: VertexFake, token: str) -> None:
    body = {**HELLO, "system_instruction": {"parts": [{"text": "be brief"}]}, "generation_config": {"top_p": 0.5}}
    assert gemini(vertex, body, token)[0] == 200


def test_structured_output_is_json_of_the_schema(vertex: VertexFake, token: str) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    for config in (
        {"responseMimeType": "application/json", "responseJsonSchema": schema},
        {"responseMimeType": "application/json", "responseSchema": {**schema, "type": "OBJECT"}},
    ):
        status, _, answer = gemini(vertex, {**HELLO, "generationConfig": config}, token)
        assert status == 200, answer
        text = answer["candidates"][0]["content"]["parts"][0]["text"]
        assert isinstance(json.loads(text)["city"], str)


WEATHER = {
    "functionDeclarations": [
        {
            "name": "get_weather",
            "description": "weather",
            "parametersJsonSchema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
}


def test_a_function_call_when_the_prompt_asks_and_text_after_the_function_response(
    vertex: VertexFake, token: str
) -> None:
    ask: dict[str, Any] = {
        "contents": [{"role": "user", "parts": [{"text": "call get_weather for Paris"}]}],
        "tools": [WEATHER],
    }
    status, _, body = gemini(vertex, ask, token)
    part = body["candidates"][0]["content"]["parts"][0]
    assert status == 200 and part["functionCall"] == {"name": "get_weather", "args": {"city": "example city"}}
    turn = [
        *ask["contents"],
        {"role": "model", "parts": [part]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 20}}}]},
    ]
    status, _, body = gemini(vertex, {"contents": turn, "tools": [WEATHER]}, token)
    assert status == 200 and "text" in body["candidates"][0]["content"]["parts"][0]
    no_ask = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}], "tools": [WEATHER]}
    assert "text" in gemini(vertex, no_ask, token)[2]["candidates"][0]["content"]["parts"][0]
    # ANY: Gemini always predicts a function call, after function responses too (an OpenAI client's
    # tool_choice "required" in a tool loop).
    forced = {"functionCallingConfig": {"mode": "ANY"}}
    for contents in (turn, no_ask["contents"]):
        status, _, body = gemini(vertex, {"contents": contents, "tools": [WEATHER], "toolConfig": forced}, token)
        assert status == 200 and body["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == "get_weather"


def test_gemini_3_wants_the_thought_signature_back(vertex: VertexFake, token: str) -> None:
    ask: dict[str, Any] = {
        "contents": [{"role": "user", "parts": [{"text": "get_weather please"}]}],
        "tools": [WEATHER],
    }
    _, _, body = gemini(vertex, ask, token, model="gemini-3-pro-preview")
    part = body["candidates"][0]["content"]["parts"][0]
    assert part["thoughtSignature"]
    reply = {"functionResponse": {"name": "get_weather", "response": {"t": 1}}}
    unsigned = {"functionCall": part["functionCall"]}
    forged = {**part, "thoughtSignature": "Zm9yZ2Vk"}
    for call, expected in ((unsigned, 400), (forged, 400), (part, 200)):
        turn = [*ask["contents"], {"role": "model", "parts": [call]}, {"role": "user", "parts": [reply]}]
        status, _, _ = gemini(vertex, {"contents": turn, "tools": [WEATHER]}, token, model="gemini-3-pro-preview")
        assert status == expected


def test_thoughts_and_usage_when_thinking_is_asked(vertex: VertexFake, token: str) -> None:
    body = {**HELLO, "generationConfig": {"thinkingConfig": {"thinkingBudget": 512, "includeThoughts": True}}}
    _, _, answer = gemini(vertex, body, token)
    parts = answer["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True and "text" in parts[1]
    usage = answer["usageMetadata"]
    assert usage["thoughtsTokenCount"] > 0
    assert (
        usage["totalTokenCount"]
        == usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
    )
    plain = gemini(vertex, HELLO, token)[2]
    assert "thoughtsTokenCount" not in plain["usageMetadata"]


@pytest.mark.parametrize(
    ("model", "thinking", "status"),
    [
        ("gemini-2.5-pro", {"thinkingBudget": 0}, 400),  # 2.5 Pro cannot turn thinking off
        ("gemini-2.5-pro", {"thinkingBudget": 64}, 400),
        ("gemini-2.5-pro", {"thinkingBudget": 128}, 200),
        ("gemini-2.5-pro", {"thinkingBudget": -1}, 200),
        ("gemini-2.5-flash", {"thinkingBudget": 0}, 200),
        ("gemini-3-pro-preview", {"thinkingLevel": "MINIMAL"}, 400),  # 3 Pro: LOW and HIGH only
        ("gemini-3-pro-preview", {"thinkingLevel": "MEDIUM"}, 400),
        ("gemini-3-pro-preview", {"thinkingLevel": "LOW"}, 200),
        ("gemini-3.1-pro-preview", {"thinkingLevel": "MINIMAL"}, 400),
        ("gemini-3.1-pro-preview", {"thinkingLevel": "MEDIUM"}, 200),
        ("gemini-3-flash-preview", {"thinkingLevel": "MINIMAL"}, 200),
        ("gemini-3-flash-preview", {"thinkingLevel": "LOW", "thinkingBudget": 128}, 400),
    ],
)
def test_thinking_settings_the_model_refuses(
    vertex: VertexFake, token: str, model: str, thinking: dict[str, Any], status: int
) -> None:
    body = {**HELLO, "generationConfig": {"thinkingConfig": thinking}}
    assert gemini(vertex, body, token, model=model)[0] == status


def test_a_function_response_id_must_name_a_call_of_the_previous_turn(vertex: VertexFake, token: str) -> None:
    calls = [{"functionCall": {"name": "get_weather", "args": {"city": c}, "id": f"fc-{c}"}} for c in ("a", "b")]

    def turn(*ids: str) -> dict[str, Any]:
        replies = [{"functionResponse": {"name": "get_weather", "response": {}, "id": i}} for i in ids]
        contents = [HELLO["contents"][0], {"role": "model", "parts": calls}, {"role": "user", "parts": replies}]
        return {"contents": contents, "tools": [WEATHER]}

    assert gemini(vertex, turn("fc-b", "fc-a"), token)[0] == 200
    status, _, answer = gemini(vertex, turn("fc-a", "fc-x"), token)
    assert status == 400 and "'fc-x'" in answer["error"]["message"]


def test_max_output_tokens_truncates(vertex: VertexFake, token: str) -> None:
    _, _, answer = gemini(vertex, {**HELLO, "generationConfig": {"maxOutputTokens": 2}}, token)
    assert answer["candidates"][0]["finishReason"] == "MAX_TOKENS"


def test_the_sse_stream_comes_in_several_events_with_usage_last(vertex: VertexFake, token: str) -> None:
    status, headers, payload = gemini(vertex, HELLO, token, method="streamGenerateContent?alt=sse")
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    chunks = [json.loads(data) for _, data in sse_events(payload)]
    assert len(chunks) >= 3
    text = "".join(p.get("text", "") for c in chunks for p in c["candidates"][0].get("content", {}).get("parts", []))
    assert text == "Fake gemini-2.5-flash reply to: hello there"
    assert all("usageMetadata" not in c for c in chunks[:-1])
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP" and chunks[-1]["usageMetadata"]


def test_rate_limit_is_resource_exhausted(vertex: VertexFake, token: str) -> None:
    vertex.fail_next(1, 429)
    status, _, body = gemini(vertex, HELLO, token)
    assert status == 429 and body["error"]["status"] == "RESOURCE_EXHAUSTED"


def test_embeddings_predict(vertex: VertexFake, token: str) -> None:
    body = {"instances": [{"content": "a"}, {"content": "b b"}], "parameters": {"outputDimensionality": 8}}
    status, _, answer = gemini(vertex, body, token, method="predict", model="text-embedding-005")
    assert status == 200
    assert [len(p["embeddings"]["values"]) for p in answer["predictions"]] == [8, 8]
    assert answer["predictions"][1]["embeddings"]["statistics"]["token_count"] == 2
    assert gemini(vertex, {"instances": [{"text": "a"}]}, token, method="predict")[0] == 400


def test_gemini_embedding_takes_one_instance_per_request(vertex: VertexFake, token: str) -> None:
    one, two = {"instances": [{"content": "a"}]}, {"instances": [{"content": "a"}, {"content": "b"}]}
    assert gemini(vertex, one, token, method="predict", model="gemini-embedding-001")[0] == 200
    status, _, answer = gemini(vertex, two, token, method="predict", model="gemini-embedding-001")
    assert status == 400 and "only one instance per request" in answer["error"]["message"]


# ---- Claude on Vertex ------------------------------------------------------------------------


def test_the_anthropic_vertex_sdk_is_answered(vertex: VertexFake, token: str) -> None:
    """The SDK as users run it: its default anthropic_version (a dated API version in this release,
    not Google's documented vertex-2023-10-16) is accepted, as the real service must accept it."""
    client = anthropic.AnthropicVertex(
        region="us-central1", project_id="proj", access_token=token, base_url=vertex.base_url + "/v1"
    )
    hi: list[Any] = [{"role": "user", "content": "hi"}]
    message = client.messages.create(
        model="claude-3-5-haiku@20241022",
        max_tokens=50,
        messages=hi,
    )
    assert message.content[0].text == "Fake claude-3-5-haiku@20241022 reply to: hi"  # type: ignore[union-attr]
    with client.messages.stream(
        model="claude-3-5-haiku@20241022",
        max_tokens=50,
        messages=hi,
    ) as stream:
        assert "".join(stream.text_stream) == "Fake claude-3-5-haiku@20241022 reply to: hi"
    assert vertex.requests[-1].path.endswith("/publishers/anthropic/models/claude-3-5-haiku@20241022:streamRawPredict")
    counted = client.messages.count_tokens(model="claude-3-5-haiku@20241022", messages=hi)
    assert counted.input_tokens > 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, "anthropic_version: Field required"),
        (
            {
                "anthropic_version": "bedrock-2023-05-31",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
            },
            "vertex-2023-10-16",
        ),
        (
            {
                "anthropic_version": "vertex-2023-10-16",
                "model": "claude",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
            },
            "model: Extra inputs are not permitted",
        ),
        ({"anthropic_version": "vertex-2023-10-16", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ],
)
def test_raw_predict_rejects_what_vertex_rejects(vertex: VertexFake, token: str, body: Any, message: str) -> None:
    status, _, answer = post(vertex, f"{BASE}/anthropic/models/claude-3-5-haiku@20241022:rawPredict", body, token)
    assert status == 400
    assert answer["type"] == "error" and message in answer["error"]["message"]


@pytest.mark.parametrize(
    ("model", "betas", "refused"),
    [
        ("claude-3-5-haiku@20241022", "interleaved-thinking-2025-05-14,web-search-2025-03-05", ""),
        (
            "claude-3-5-haiku@20241022",
            "claude-code-20250219, effort-2025-11-24",
            "`claude-code-20250219`, `effort-2025-11-24`",
        ),
        ("count-tokens", "web-search-2025-03-05", "`web-search-2025-03-05`"),
    ],
)
def test_raw_predict_refuses_the_betas_vertex_does_not_take(
    vertex: VertexFake, token: str, model: str, betas: str, refused: str
) -> None:
    body = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    if model == "count-tokens":
        body = {
            "anthropic_version": "vertex-2023-10-16",
            "model": "claude-3-5-haiku@20241022",
            "messages": body["messages"],
        }
    headers = {"authorization": f"Bearer {token}", "anthropic-beta": betas}
    status, _, payload = raw("POST", f"{vertex.base_url}{BASE}/anthropic/models/{model}:rawPredict", body, headers)
    answer = json.loads(payload)
    if not refused:
        assert status == 200, answer
        return
    assert status == 400 and answer["error"]["message"].startswith(
        f"Unexpected value(s) {refused} for the `anthropic-beta`"
    )


def test_gemini_count_tokens_counts_as_generate_content_does(vertex: VertexFake, token: str) -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": "how many tokens is this sentence"}]}],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
    }
    status, _, counted = gemini(vertex, body, token, method="countTokens")
    assert status == 200, counted
    assert set(counted) == {"totalTokens", "totalBillableCharacters", "promptTokensDetails"}
    generated = gemini(vertex, body, token)[2]
    assert counted["totalTokens"] == generated["usageMetadata"]["promptTokenCount"] > 0
    assert counted["promptTokensDetails"] == [{"modality": "TEXT", "tokenCount": counted["totalTokens"]}]
    assert counted["totalBillableCharacters"] == len("how many tokens is this sentence")
    # The system instruction is counted.
    without = gemini(vertex, {"contents": body["contents"]}, token, method="countTokens")[2]
    assert without["totalTokens"] < counted["totalTokens"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "contents is required"),
        ({"contents": []}, "contents is required"),
        ({"contents": [{"parts": [{"text": "hi"}]}], "max_tokens": 3}, 'Unknown name "max_tokens"'),
        ({"contents": [{"parts": [{"txt": "hi"}]}]}, 'Unknown name "txt"'),
        ({"contents": [{"role": "user", "parts": []}]}, "at least one parts field"),
        ({"contents": [{"parts": [{"text": "hi"}]}], "systemInstruction": {"parts": [{"x": 1}]}}, 'Unknown name "x"'),
    ],
)
def test_gemini_count_tokens_rejects_what_vertex_rejects(
    vertex: VertexFake, token: str, body: dict[str, Any], message: str
) -> None:
    status, _, err = gemini(vertex, body, token, method="countTokens")
    assert status == 400
    assert err["error"]["status"] == "INVALID_ARGUMENT"
    assert message in err["error"]["message"]
