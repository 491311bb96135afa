"""OpenAI chat completions and embeddings clients -> Gemini on GCP Vertex AI (GCPVertexAI)."""

from __future__ import annotations

import base64
import contextlib
import json
import random
import struct
from typing import Any

import pytest

from aigw.translator.v1 import config_pb2
from aigw_translator.backend_request import backend_request
from aigw_translator.client_stream import ClientStream
from aigw_translator.config import RuntimeConfig
from aigw_translator.endpoints import ClientSchema, Endpoint
from aigw_translator.errors import GatewayError
from aigw_translator.server import ExternalProcessor
from aigw_translator.translators import RequestContext, ResponseContext, get_pair
from aigw_translator.translators.base import TranslationError
from aigw_translator.translators.openai_gemini import (
    GeminiEmbeddingsToOpenAIResponse,
    GeminiToOpenAIResponse,
    GeminiToOpenAIStream,
    chat_to_gemini,
    embeddings_to_predict,
    finish_reason,
    translate_embeddings_request,
    translate_request,
)
from aigw_translator.usage import TokenUsage, from_gemini

from .extproc_helpers import drive, metadata, request_body, request_headers, response_body, response_headers
from .extproc_helpers import set_headers as header_set
from .streams import events, run, splits

MODEL = "gemini-2.5-flash"
PREFIX = "/v1/projects/my-proj/locations/us-central1/publishers/google/models"
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object"}}}


def _backend(project: str = "my-proj", region: str = "us-central1", gcp: bool = True) -> config_pb2.Backend:
    backend = config_pb2.Backend(name="ns/gemini", schema=config_pb2.Schema(name="GCPVertexAI"))
    if gcp:
        backend.auth.gcp_credentials.project_name = project
        backend.auth.gcp_credentials.region = region
    return backend


def _rctx(endpoint: Endpoint = Endpoint.CHAT_COMPLETIONS, model: str = MODEL, **kw: Any) -> RequestContext:
    local = "/v1/embeddings" if endpoint is Endpoint.EMBEDDINGS else "/v1/chat/completions"
    return RequestContext(endpoint, _backend(**kw), local, "", model, {})


def _chat(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}


def _translate(req: dict[str, Any], model: str = MODEL) -> dict[str, Any]:
    tr = translate_request(_rctx(model=model), json.dumps(req).encode())
    assert tr.body is not None
    out: dict[str, Any] = json.loads(tr.body)
    return out


def _sctx(**kw: Any) -> ResponseContext:
    return ResponseContext(Endpoint.CHAT_COMPLETIONS, ClientSchema.OPENAI, "m", MODEL, stream=True, **kw)


def _ctx(**kw: Any) -> ResponseContext:
    return ResponseContext(Endpoint.CHAT_COMPLETIONS, ClientSchema.OPENAI, "m", MODEL, stream=False, **kw)


# ----------------------------------------------------------------------------- registry and path


def test_registry_has_the_gcp_pairs_and_no_anthropic_front_on_gemini() -> None:
    for schema, endpoint in [
        ("GCPVertexAI", Endpoint.CHAT_COMPLETIONS),
        ("GCPVertexAI", Endpoint.EMBEDDINGS),
        ("GCPAnthropic", Endpoint.CHAT_COMPLETIONS),
        ("GCPAnthropic", Endpoint.MESSAGES),
        ("GCPAnthropic", Endpoint.COUNT_TOKENS),
    ]:
        assert get_pair(endpoint, schema) is not None, (schema, endpoint)
    assert get_pair(Endpoint.MESSAGES, "GCPVertexAI") is None
    assert get_pair(Endpoint.EMBEDDINGS, "GCPAnthropic") is None
    assert get_pair(Endpoint.RESPONSES, "GCPVertexAI") is None


@pytest.mark.parametrize(
    ("stream", "path"),
    [
        (False, f"{PREFIX}/{MODEL}:generateContent"),
        (True, f"{PREFIX}/{MODEL}:streamGenerateContent?alt=sse"),
    ],
)
def test_chat_path_and_content_type(stream: bool, path: str) -> None:
    tr = translate_request(_rctx(), json.dumps(_chat(stream=stream)).encode())
    assert tr.path == path
    assert tr.set_headers == {"content-type": "application/json"}
    assert "model" not in json.loads(tr.body or b"{}") and "stream" not in json.loads(tr.body or b"{}")


def test_path_escapes_each_value_as_one_segment_and_keeps_the_at_sign() -> None:
    tr = translate_request(_rctx(model="tuned/x:y@001", project="p q", region="global"), json.dumps(_chat()).encode())
    assert tr.path == "/v1/projects/p%20q/locations/global/publishers/google/models/tuned%2Fx%3Ay@001:generateContent"


@pytest.mark.parametrize(
    ("kw", "missing"),
    [({"gcp": False}, "projectName and region"), ({"project": ""}, "projectName"), ({"region": " "}, "region")],
)
def test_missing_project_or_region_is_a_500_naming_the_backend(kw: dict[str, Any], missing: str) -> None:
    with pytest.raises(GatewayError) as err:
        translate_request(_rctx(**kw), json.dumps(_chat()).encode())
    assert err.value.status == 500
    assert "'ns/gemini'" in err.value.message and f"GCPCredentials {missing}" in err.value.message


# ----------------------------------------------------------------------------- request: messages


def test_messages_map_to_contents_and_system_instruction() -> None:
    req = _chat(
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "and kind"}]},
            {"role": "user", "content": "one"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "gs://bucket/cat.jpg", "detail": "high"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a/dog.webp?x=1"}},
                    {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
                ],
            },
            {"role": "assistant", "content": "I will call"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        "extra_content": {"google": {"thought_signature": "U0lHMQ=="}},
                    },
                    {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21}'},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "noon"}]},
            {"role": "user", "content": ""},
        ]
    )
    body = _translate(req)
    assert body["systemInstruction"] == {"parts": [{"text": "be brief"}, {"text": "and kind"}]}
    assert body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "one"},
                {"text": "look"},
                {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://bucket/cat.jpg"}},
                {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/a/dog.webp?x=1"}},
                {"inlineData": {"mimeType": "audio/wav", "data": "UklG"}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
            ],
        },
        {
            "role": "model",
            "parts": [
                {"text": "I will call"},
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"},
                    "thoughtSignature": "U0lHMQ==",
                },
                {"functionCall": {"name": "get_time", "args": {}, "id": "c2"}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp": 21}, "id": "c1"}},
                {"functionResponse": {"name": "get_time", "response": {"content": "noon"}, "id": "c2"}},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("content", "response"),
    [
        ('{"ok": true}', {"ok": True}),
        ("[1, 2]", {"content": [1, 2]}),
        ("42", {"content": 42}),
        ("plain text", {"content": "plain text"}),
        ("", {"content": ""}),
        (None, {"content": ""}),
    ],
)
def test_tool_result_is_an_object(content: Any, response: dict[str, Any]) -> None:
    req = _chat(
        messages=[
            {"role": "user", "content": "q"},
            {"role": "assistant", "tool_calls": [{"id": "call_7", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_7", "content": content},
        ]
    )
    assert _translate(req)["contents"][-1]["parts"] == [{"functionResponse": {"name": "f", "response": response}}]


def _parallel_calls(first: str, second: str) -> dict[str, Any]:
    """Two parallel calls to one function, answered in the opposite order."""
    calls = [
        {"id": first, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": second, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
    ]
    return _chat(
        messages=[
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": second, "content": '{"temp": 25}'},
            {"role": "tool", "tool_call_id": first, "content": '{"temp": 21}'},
        ]
    )


def test_gemini_call_ids_go_back_on_calls_and_responses_so_parallel_calls_match() -> None:
    contents = _translate(_parallel_calls("fc-paris", "fc-rome"))["contents"]
    assert contents[1]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "fc-paris"}},
        {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}, "id": "fc-rome"}},
    ]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"temp": 25}, "id": "fc-rome"}},
        {"functionResponse": {"name": "get_weather", "response": {"temp": 21}, "id": "fc-paris"}},
    ]


@pytest.mark.parametrize(("first", "second"), [("call_resp-1_0", "call_resp-1_1"), ("call_0", "call_1")])
def test_call_ids_this_translator_made_up_are_not_sent(first: str, second: str) -> None:
    contents = _translate(_parallel_calls(first, second))["contents"]
    assert all("id" not in p["functionCall"] for p in contents[1]["parts"])
    assert all("id" not in p["functionResponse"] for p in contents[2]["parts"])


def test_a_made_up_call_id_round_trips_without_being_sent() -> None:
    """Gemini gave no ids: the translator's own (call_<responseId>_<n>) stay on the client's side."""
    calls = [{"functionCall": {"name": "f", "args": {"n": n}}} for n in (1, 2)]
    answer = {"responseId": "r1", "candidates": [{"content": {"parts": calls}}]}
    message = json.loads(GeminiToOpenAIResponse(_ctx()).body(json.dumps(answer).encode()) or b"")["choices"][0]
    tool_calls = message["message"]["tool_calls"]
    assert [c["id"] for c in tool_calls] == ["call_r1_0", "call_r1_1"]
    history = [{"role": "user", "content": "q"}, message["message"]]
    history += [{"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in tool_calls]
    contents = _translate(_chat(messages=history))["contents"]
    assert [p["functionCall"] for p in contents[1]["parts"]] == [
        {"name": "f", "args": {"n": 1}},
        {"name": "f", "args": {"n": 2}},
    ]
    assert all("id" not in p["functionResponse"] for p in contents[2]["parts"])


def test_tool_result_name_comes_from_the_latest_call_with_that_id() -> None:
    """Ids repeat across turns (e.g. call_0): the latest assistant turn's call is the one answered."""
    call = {"id": "call_0", "function": {"name": "first", "arguments": "{}"}}
    again = {"id": "call_0", "function": {"name": "second", "arguments": "{}"}}
    req = _chat(
        messages=[
            {"role": "user", "content": "q"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_0", "content": "1"},
            {"role": "assistant", "tool_calls": [again]},
            {"role": "tool", "tool_call_id": "call_0", "content": "2"},
        ]
    )
    contents = _translate(req)["contents"]
    assert contents[2]["parts"][0]["functionResponse"]["name"] == "first"
    assert contents[4]["parts"][0]["functionResponse"]["name"] == "second"


@pytest.mark.parametrize(
    ("req", "fragment"),
    [
        (
            _chat(
                messages=[{"role": "user", "content": "q"}, {"role": "tool", "tool_call_id": "nope", "content": "x"}]
            ),
            "'nope' follows no assistant tool call",
        ),
        (
            _chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "gs://b/x"}}]}]),
            "cannot be told from its file extension",
        ),
        (
            _chat(
                messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/a.png"}}]}]
            ),
            "unsupported image URL scheme",
        ),
        (
            _chat(messages=[{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]),
            "cannot read file ids",
        ),
        (_chat(messages=[{"role": "user", "content": ""}]), "no user or assistant messages"),
        (_chat(messages=[{"role": "critic", "content": "x"}]), "role 'critic'"),
        (_chat(logit_bias={"1": 2}), "logit_bias"),
        (_chat(modalities=["text", "audio"]), "audio output"),
        (_chat(prediction={"type": "content", "content": "x"}), "prediction"),
        (_chat(web_search_options={}), "web_search_options"),
        (_chat(tools=[{"type": "custom", "custom": {"name": "x"}}]), "only function tools"),
        (_chat(tools=[TOOL], tool_choice={"type": "allowed_tools"}), "unsupported tool_choice"),
        (_chat(response_format={"type": "grammar"}), "response_format type 'grammar'"),
        (
            _chat(
                messages=[
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": "[1]"}}]},
                ]
            ),
            "must be a JSON object",
        ),
    ],
)
def test_requests_gemini_cannot_take_are_refused_clearly(req: dict[str, Any], fragment: str) -> None:
    with pytest.raises(TranslationError) as err:
        _translate(req)
    assert err.value.status == 422 and fragment in err.value.message


@pytest.mark.parametrize(
    ("req", "fragment"),
    [
        (_chat(reasoning_effort="extreme"), "unsupported reasoning_effort"),
        (_chat(top_logprobs=3), "requires 'logprobs'"),
        (_chat(logprobs=True, top_logprobs=21), "'top_logprobs' must be an integer from 0 to 20"),
        (_chat(logprobs=True, top_logprobs=-1), "'top_logprobs' must be an integer from 0 to 20"),
        (_chat(seed="7"), "'seed' must be an integer"),
        (_chat(n=0), "'n' must be an integer of at least 1"),
        (_chat(temperature="hot"), "'temperature' must be a number"),
    ],
)
def test_malformed_fields_are_400(req: dict[str, Any], fragment: str) -> None:
    with pytest.raises(GatewayError) as err:
        _translate(req)
    assert err.value.status == 400 and fragment in err.value.message


# ----------------------------------------------------------------------------- request: config


def test_generation_config() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    req = _chat(
        temperature=1.5,
        top_p=0.9,
        max_tokens=50,
        max_completion_tokens=99,
        stop=["END", ""],
        n=2,
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}},
        logprobs=True,
        top_logprobs=3,
        user="someone@example.com",
        parallel_tool_calls=False,
        stream_options={"include_usage": True},
    )
    assert _translate(req)["generationConfig"] == {
        "temperature": 1.5,
        "topP": 0.9,
        "presencePenalty": 0.5,
        "frequencyPenalty": -0.5,
        "maxOutputTokens": 99,
        "stopSequences": ["END"],
        "candidateCount": 2,
        "seed": 7,
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
        "responseLogprobs": True,
        "logprobs": 3,
    }


def test_penalties_of_0_are_left_out() -> None:
    """Gemini 2.5 and later refuse presencePenalty and frequencyPenalty unless 0 (reviewers found
    clients sending 0 by default answered with Google's 400): 0 is no penalty, and is left out; the
    fake Vertex refuses others for those models, as Vertex does."""
    from aigw_fakes.vertex import VertexError, VertexFake

    body = _translate(_chat(presence_penalty=0, frequency_penalty=0.0, temperature=0), "gemini-2.5-flash")
    assert body["generationConfig"] == {"temperature": 0}
    VertexFake().validate("gemini-2.5-flash", body)
    penalised = _translate(_chat(presence_penalty=0.5), "gemini-2.5-flash")
    with pytest.raises(VertexError, match=r"Penalty is not enabled for models/gemini-2\.5-flash"):
        VertexFake().validate("gemini-2.5-flash", penalised)
    VertexFake().validate("gemini-2.0-flash", penalised)


def test_top_logprobs_0_asks_for_the_chosen_tokens_only() -> None:
    """Gemini's logprobs counts alternatives from 1 (top_logprobs 0 means none): the field is left out."""
    config = _translate(_chat(logprobs=True, top_logprobs=0))["generationConfig"]
    assert config == {"responseLogprobs": True}


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "json_object"}, {"responseMimeType": "application/json"}),
        ({"type": "text"}, None),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, {"responseMimeType": "application/json"}),
    ],
)
def test_response_format(response_format: dict[str, Any], expected: dict[str, Any] | None) -> None:
    assert _translate(_chat(response_format=response_format)).get("generationConfig") == expected


@pytest.mark.parametrize(
    ("model", "effort", "thinking"),
    [
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0, "includeThoughts": False}),
        ("gemini-2.5-flash-lite", "none", {"thinkingBudget": 0, "includeThoughts": False}),
        # 2.5 Pro cannot turn thinking off: its lowest budget, 128, without thought summaries.
        ("gemini-2.5-pro", "none", {"thinkingBudget": 128, "includeThoughts": False}),
        ("gemini-2.5-pro-preview-06-05", "none", {"thinkingBudget": 128, "includeThoughts": False}),
        ("gemini-2.5-pro", "minimal", {"thinkingBudget": 1024, "includeThoughts": True}),
        ("gemini-2.5-flash-lite", "low", {"thinkingBudget": 1024, "includeThoughts": True}),
        ("gemini-2.0-flash-001", "medium", {"thinkingBudget": 8192, "includeThoughts": True}),
        ("gemini-2.5-pro", "high", {"thinkingBudget": 24576, "includeThoughts": True}),
        # Above high (OpenAI's xhigh and max): high, the largest budget every 2.5 model takes.
        ("gemini-2.5-flash", "xhigh", {"thinkingBudget": 24576, "includeThoughts": True}),
        ("gemini-2.5-pro", "max", {"thinkingBudget": 24576, "includeThoughts": True}),
        ("gemini-3-flash-preview", "xhigh", {"thinkingLevel": "HIGH", "includeThoughts": True}),
        ("gemini-3-pro-preview", "max", {"thinkingLevel": "HIGH", "includeThoughts": True}),
        # Gemini 3 Flash: MINIMAL, LOW, MEDIUM, HIGH.
        ("gemini-3-flash-preview", "none", {"thinkingLevel": "MINIMAL", "includeThoughts": False}),
        ("gemini-3-flash-preview", "minimal", {"thinkingLevel": "MINIMAL", "includeThoughts": True}),
        ("gemini-3-flash", "medium", {"thinkingLevel": "MEDIUM", "includeThoughts": True}),
        # Gemini 3 Pro: LOW and HIGH only.
        ("gemini-3-pro-preview", "none", {"thinkingLevel": "LOW", "includeThoughts": False}),
        ("gemini-3-pro-preview", "minimal", {"thinkingLevel": "LOW", "includeThoughts": True}),
        ("gemini-3-pro-preview", "low", {"thinkingLevel": "LOW", "includeThoughts": True}),
        ("gemini-3-pro-preview", "medium", {"thinkingLevel": "HIGH", "includeThoughts": True}),
        ("gemini-3-pro-preview", "high", {"thinkingLevel": "HIGH", "includeThoughts": True}),
        # Other Gemini 3+ models (3.1 Pro has no MINIMAL): LOW, MEDIUM, HIGH.
        ("gemini-3.1-pro-preview", "none", {"thinkingLevel": "LOW", "includeThoughts": False}),
        ("gemini-3.1-pro-preview", "minimal", {"thinkingLevel": "LOW", "includeThoughts": True}),
        ("gemini-3.1-pro-preview", "medium", {"thinkingLevel": "MEDIUM", "includeThoughts": True}),
        ("gemini-3.5-flash", "medium", {"thinkingLevel": "MEDIUM", "includeThoughts": True}),
        ("gemini-20-ultra", "high", {"thinkingLevel": "HIGH", "includeThoughts": True}),
    ],
)
def test_reasoning_effort_maps_to_thinking_config(model: str, effort: str, thinking: dict[str, Any]) -> None:
    assert _translate(_chat(reasoning_effort=effort), model)["generationConfig"] == {"thinkingConfig": thinking}


def test_no_reasoning_effort_sends_no_thinking_config() -> None:
    assert "generationConfig" not in _translate(_chat())


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        (None, None),
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tools_and_tool_choice(choice: Any, config: dict[str, Any] | None) -> None:
    bare = {"type": "function", "function": {"name": "ping"}}
    body = _translate(_chat(tools=[TOOL, bare], tool_choice=choice))
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {"name": "get_weather", "description": "d", "parametersJsonSchema": {"type": "object"}},
                {"name": "ping"},
            ]
        }
    ]
    assert body.get("toolConfig") == (None if config is None else {"functionCallingConfig": config})


def test_tool_choice_without_tools_sends_neither() -> None:
    body = _translate(_chat(tool_choice="required"))
    assert "tools" not in body and "toolConfig" not in body


# ----------------------------------------------------------------------------- response


GEMINI_ANSWER = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {"text": "Let me think.", "thought": True},
                    {"text": "Calling "},
                    {"text": "now."},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "U0lH"},
                    {"functionCall": {"name": "get_time"}},
                    {"text": "", "thoughtSignature": "VFhU"},
                ],
            },
            "finishReason": "STOP",
            "safetyRatings": [],
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 100,
        "candidatesTokenCount": 20,
        "thoughtsTokenCount": 30,
        "cachedContentTokenCount": 40,
        "totalTokenCount": 150,
    },
    "modelVersion": "gemini-2.5-flash-001",
    "responseId": "resp123",
}


def test_response_maps_text_thoughts_tool_calls_signature_and_usage() -> None:
    tr = GeminiToOpenAIResponse(_ctx())
    out = json.loads(tr.body(json.dumps(GEMINI_ANSWER).encode()) or b"")
    assert out["id"] == "chatcmpl-resp123" and out["object"] == "chat.completion"
    assert out["model"] == "gemini-2.5-flash-001" and tr.response_model == "gemini-2.5-flash-001"
    assert out["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Calling now.",
                "reasoning_content": "Let me think.",
                "tool_calls": [
                    {
                        "id": "call_resp123_0",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        "extra_content": {"google": {"thought_signature": "U0lH"}},
                    },
                    {"id": "call_resp123_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                ],
            },
            "finish_reason": "tool_calls",
            "logprobs": None,
        }
    ]
    assert out["usage"] == {
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 40},
        "completion_tokens_details": {"reasoning_tokens": 30},
    }
    assert tr.usage == TokenUsage(100, 40, 0, 50, 30, 150, known=True)


def test_a_returned_signature_goes_back_on_the_next_request() -> None:
    """The round trip an OpenAI client makes: the assistant message it got, sent back as history."""
    out = json.loads(GeminiToOpenAIResponse(_ctx()).body(json.dumps(GEMINI_ANSWER).encode()) or b"")
    message = out["choices"][0]["message"]
    history = [{"role": "user", "content": "weather?"}, message]
    history += [{"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in message["tool_calls"]]
    contents = _translate(_chat(messages=history))["contents"]
    assert contents[1]["parts"][1:] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "U0lH"},
        {"functionCall": {"name": "get_time", "args": {}}},
    ]
    assert [p["functionResponse"]["name"] for p in contents[2]["parts"]] == ["get_weather", "get_time"]


def test_gemini_function_call_ids_are_kept() -> None:
    answer = {"candidates": [{"content": {"parts": [{"functionCall": {"id": "fc-9", "name": "f", "args": {}}}]}}]}
    out = json.loads(GeminiToOpenAIResponse(_ctx()).body(json.dumps(answer).encode()) or b"")
    assert out["choices"][0]["message"]["tool_calls"][0]["id"] == "fc-9"
    assert out["id"].startswith("chatcmpl-") and out["model"] == MODEL  # no responseId, no modelVersion


@pytest.mark.parametrize(
    ("reason", "calls", "expected"),
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),
        ("MAX_TOKENS", False, "length"),
        ("MAX_TOKENS", True, "length"),
        ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"),
        ("BLOCKLIST", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"),
        ("SPII", False, "content_filter"),
        ("IMAGE_SAFETY", False, "content_filter"),
        # A call the model botched, or one to a tool never declared: said as Envoy AI Gateway says
        # them (they had read as a plain, empty "stop", which an agent cannot tell from an answer).
        ("MALFORMED_FUNCTION_CALL", False, "malformed_function_call"),
        ("UNEXPECTED_TOOL_CALL", True, "unexpected_tool_call"),
        ("FINISH_REASON_UNSPECIFIED", False, "stop"),
        ("SOMETHING_NEW_IN_2027", False, "stop"),
        ("SOMETHING_NEW_IN_2027", True, "tool_calls"),
        (None, False, "stop"),
        (7, False, "stop"),
    ],
)
def test_finish_reasons(reason: Any, calls: bool, expected: str) -> None:
    assert finish_reason(reason, calls) == expected


def test_several_candidates_are_choices_by_index() -> None:
    answer = {
        "candidates": [
            {"index": 1, "content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS"},
            {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"},
        ]
    }
    out = json.loads(GeminiToOpenAIResponse(_ctx()).body(json.dumps(answer).encode()) or b"")
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "a", "stop"),
        (1, "b", "length"),
    ]


def test_blocked_prompt_is_a_content_filter_choice() -> None:
    answer = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 9}}
    tr = GeminiToOpenAIResponse(_ctx())
    out = json.loads(tr.body(json.dumps(answer).encode()) or b"")
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": None},
            "finish_reason": "content_filter",
            "logprobs": None,
        }
    ]
    assert tr.usage.input_tokens == 9 and tr.usage.output_tokens == 0 and tr.usage.known


def test_logprobs_are_mapped() -> None:
    result = {
        "chosenCandidates": [{"token": "Hi", "logProbability": -0.1}, {"token": "!", "logProbability": -0.5}],
        "topCandidates": [
            {"candidates": [{"token": "Hi", "logProbability": -0.1}, {"token": "Hey", "logProbability": -2.5}]},
            {"candidates": [{"token": "!", "logProbability": -0.5}]},
        ],
    }
    answer = {"candidates": [{"content": {"parts": [{"text": "Hi!"}]}, "logprobsResult": result}]}
    out = json.loads(GeminiToOpenAIResponse(_ctx()).body(json.dumps(answer).encode()) or b"")
    assert out["choices"][0]["logprobs"] == {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.1,
                "bytes": [72, 105],
                "top_logprobs": [
                    {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
                    {"token": "Hey", "logprob": -2.5, "bytes": [72, 101, 121]},
                ],
            },
            {
                "token": "!",
                "logprob": -0.5,
                "bytes": [33],
                "top_logprobs": [{"token": "!", "logprob": -0.5, "bytes": [33]}],
            },
        ]
    }


def test_a_success_body_that_is_not_an_object_raises() -> None:
    with pytest.raises(ValueError):
        GeminiToOpenAIResponse(_ctx()).body(b"[]")


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (None, TokenUsage()),
        ({"trafficType": "ON_DEMAND"}, TokenUsage()),
        ({"promptTokenCount": 5, "totalTokenCount": 5}, TokenUsage(5, 0, 0, 0, 0, 5, known=True)),
        (
            {"promptTokenCount": 10, "toolUsePromptTokenCount": 4, "candidatesTokenCount": 3, "totalTokenCount": 17},
            TokenUsage(14, 0, 0, 3, 0, 17, known=True),
        ),
        (
            {"promptTokenCount": 10, "candidatesTokenCount": 3, "thoughtsTokenCount": 2, "cachedContentTokenCount": 8},
            TokenUsage(10, 8, 0, 5, 2, 15, known=True),
        ),
    ],
)
def test_from_gemini(usage: Any, expected: TokenUsage) -> None:
    assert from_gemini(usage) == expected


# ----------------------------------------------------------------------------- stream


def _sse(*objs: Any, crlf: bool = False) -> bytes:
    sep = "\r\n" if crlf else "\n"
    return "".join(f"data: {json.dumps(o)}{sep}{sep}" for o in objs).encode()


STREAM_CHUNKS = [
    {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Thinking about weather", "thought": True}]}}],
        "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
        "modelVersion": "gemini-2.5-flash-001",
        "responseId": "rid7",
    },
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Checking "}]}}], "responseId": "rid7"},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Paris ☀"}]}}], "responseId": "rid7"},
    {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {
                            "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                            "thoughtSignature": "U0lH",
                        },
                        {"functionCall": {"name": "get_time", "args": {}}},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 12,
            "candidatesTokenCount": 9,
            "thoughtsTokenCount": 4,
            "cachedContentTokenCount": 6,
            "totalTokenCount": 25,
        },
        "responseId": "rid7",
    },
]
STREAM = _sse(*STREAM_CHUNKS)


def _expected(include_usage: bool) -> list[Any]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-rid7",
            "object": "chat.completion.chunk",
            "model": "gemini-2.5-flash-001",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    calls = [
        {
            "index": 0,
            "id": "call_rid7_0",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            "extra_content": {"google": {"thought_signature": "U0lH"}},
        },
        {"index": 1, "id": "call_rid7_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    out: list[Any] = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "Thinking about weather"}),
        chunk({"content": "Checking "}),
        chunk({"content": "Paris ☀"}),
        chunk({"tool_calls": [calls[0]]}),
        chunk({"tool_calls": [calls[1]]}),
        chunk({}, "tool_calls"),
    ]
    if include_usage:
        usage = {
            "prompt_tokens": 12,
            "completion_tokens": 13,
            "total_tokens": 25,
            "prompt_tokens_details": {"cached_tokens": 6},
            "completion_tokens_details": {"reasoning_tokens": 4},
        }
        out.append({**chunk({}), "choices": [], "usage": usage})
    return [*out, "[DONE]"]


def _normalised(data: bytes) -> list[Any]:
    return [({k: v for k, v in d.items() if k != "created"} if isinstance(d, dict) else d) for _, d in events(data)]


@pytest.mark.parametrize("chunks", splits(STREAM, 53))
def test_stream_at_any_chunking(chunks: list[bytes]) -> None:
    tr = GeminiToOpenAIStream(_sctx(include_usage=True))
    out = run(tr, chunks)
    assert _normalised(out) == _expected(include_usage=True)
    assert tr.usage == TokenUsage(12, 6, 0, 13, 4, 25, known=True)
    assert tr.response_model == "gemini-2.5-flash-001"
    client = ClientStream(Endpoint.CHAT_COMPLETIONS, ClientSchema.OPENAI)
    client.sent(out)
    assert client.complete


def test_stream_crlf_and_without_the_usage_chunk() -> None:
    tr = GeminiToOpenAIStream(_sctx())
    assert _normalised(run(tr, [_sse(*STREAM_CHUNKS, crlf=True)])) == _expected(include_usage=False)
    assert tr.usage.known


def test_stream_cut_before_a_finish_reason_gets_no_done() -> None:
    tr = GeminiToOpenAIStream(_sctx(include_usage=True))
    out = run(tr, [_sse(*STREAM_CHUNKS[:3])])
    assert b"[DONE]" not in out and len(events(out)) == 4
    assert not tr.usage.known and tr.usage.input_tokens == 12  # reported so far, charged provisionally
    client = ClientStream(Endpoint.CHAT_COMPLETIONS, ClientSchema.OPENAI)
    client.sent(out)
    assert not client.complete


def test_stream_of_two_candidates_is_done_when_both_finished() -> None:
    first = {
        "candidates": [
            {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"},
            {"index": 1, "content": {"parts": [{"text": "b"}]}},
        ]
    }
    second = {"candidates": [{"index": 1, "content": {"parts": [{"text": "c"}]}, "finishReason": "MAX_TOKENS"}]}
    tr = GeminiToOpenAIStream(_sctx())
    assert b"[DONE]" not in run(tr, [_sse(first)])
    tr = GeminiToOpenAIStream(_sctx())
    got = [
        (d["choices"][0]["index"], d["choices"][0]["delta"], d["choices"][0]["finish_reason"])
        for d in _normalised(run(tr, [_sse(first, second)]))[:-1]
    ]
    assert got == [
        (0, {"role": "assistant", "content": ""}, None),
        (0, {"content": "a"}, None),
        (0, {}, "stop"),
        (1, {"role": "assistant", "content": ""}, None),
        (1, {"content": "b"}, None),
        (1, {"content": "c"}, None),
        (1, {}, "length"),
    ]


def test_stream_blocked_prompt_ends_with_content_filter() -> None:
    tr = GeminiToOpenAIStream(_sctx())
    out = _normalised(run(tr, [_sse({"promptFeedback": {"blockReason": "SAFETY"}})]))
    assert [d if d == "[DONE]" else d["choices"][0]["finish_reason"] for d in out] == [None, "content_filter", "[DONE]"]


def test_stream_error_event_ends_the_stream_in_openai_shape() -> None:
    error = {"error": {"code": 429, "message": "Resource exhausted, retry later", "status": "RESOURCE_EXHAUSTED"}}
    tr = GeminiToOpenAIStream(_sctx(include_usage=True))
    out = run(tr, [_sse(STREAM_CHUNKS[0], error, STREAM_CHUNKS[1])])
    evs = events(out)
    assert evs[-1][1] == {
        "error": {
            "message": "Resource exhausted, retry later",
            "type": "rate_limit_error",
            "param": None,
            "code": "RESOURCE_EXHAUSTED",
        }
    }
    assert len(evs) == 3 and b"[DONE]" not in out and not tr.usage.known
    client = ClientStream(Endpoint.CHAT_COMPLETIONS, ClientSchema.OPENAI)
    client.sent(out)
    assert client.complete


def test_stream_logprobs_go_with_the_text() -> None:
    result = {"chosenCandidates": [{"token": "Hi", "logProbability": -0.25}]}
    chunk = {"candidates": [{"content": {"parts": [{"text": "Hi"}]}, "logprobsResult": result, "finishReason": "STOP"}]}
    out = _normalised(run(GeminiToOpenAIStream(_sctx()), [_sse(chunk)]))
    assert out[1]["choices"][0]["logprobs"] == {
        "content": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105], "top_logprobs": []}]
    }


def test_stream_event_of_an_unexpected_shape_is_dropped() -> None:
    tr = GeminiToOpenAIStream(_sctx())
    out = run(tr, [b"data: not json\n\n", b'data: {"candidates": "x"}\n\n', _sse(*STREAM_CHUNKS)])
    assert _normalised(out) == _expected(include_usage=False)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            429,
            {"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}},
            {"message": "Quota exceeded", "type": "rate_limit_error", "param": None, "code": "RESOURCE_EXHAUSTED"},
        ),
        (
            400,
            [{"error": {"code": 400, "message": "Invalid JSON payload", "status": "INVALID_ARGUMENT"}}],
            {
                "message": "Invalid JSON payload",
                "type": "invalid_request_error",
                "param": None,
                "code": "INVALID_ARGUMENT",
            },
        ),
        (
            404,
            {"error": {"code": 404, "message": "Publisher model not found"}},
            {"message": "Publisher model not found", "type": "not_found_error", "param": None, "code": None},
        ),
        (
            503,
            {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}},
            {"message": "The model is overloaded.", "type": "server_error", "param": None, "code": "UNAVAILABLE"},
        ),
    ],
)
def test_google_errors_become_openai_errors(status: int, body: Any, expected: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    for translator in (GeminiToOpenAIResponse(_ctx()), GeminiToOpenAIStream(_sctx()), _embeddings_translator()):
        assert json.loads(translator.error(status, raw)) == {"error": expected}


def test_non_json_error_body_is_wrapped() -> None:
    out = json.loads(GeminiToOpenAIResponse(_ctx()).error(502, b"<html>bad gateway</html>"))
    assert out["error"]["message"] == "<html>bad gateway</html>" and out["error"]["type"] == "server_error"


# ----------------------------------------------------------------------------- embeddings


def _embeddings_translator(base64_embeddings: bool = False) -> GeminiEmbeddingsToOpenAIResponse:
    ctx = ResponseContext(
        Endpoint.EMBEDDINGS, ClientSchema.OPENAI, "m", "text-embedding-005", False, base64_embeddings=base64_embeddings
    )
    return GeminiEmbeddingsToOpenAIResponse(ctx)


def test_embeddings_request() -> None:
    req = {"model": "m", "input": ["a", "b"], "dimensions": 256, "encoding_format": "base64"}
    tr = translate_embeddings_request(_rctx(Endpoint.EMBEDDINGS, "text-embedding-005"), json.dumps(req).encode())
    assert tr.path == f"{PREFIX}/text-embedding-005:predict"
    assert tr.set_headers == {"content-type": "application/json"}
    assert json.loads(tr.body or b"") == {
        "instances": [{"content": "a"}, {"content": "b"}],
        "parameters": {"autoTruncate": False, "outputDimensionality": 256},
    }


@pytest.mark.parametrize(
    ("extra", "instances", "parameters"),
    [
        ({"input": "one"}, [{"content": "one"}], {"autoTruncate": False}),
        ({"input": "one", "auto_truncate": True}, [{"content": "one"}], {"autoTruncate": True}),
        (
            {"input": ["q"], "task_type": "RETRIEVAL_QUERY", "title": "ignored for queries"},
            [{"content": "q", "task_type": "RETRIEVAL_QUERY"}],
            {"autoTruncate": False},
        ),
        (
            {"input": ["d"], "task_type": "RETRIEVAL_DOCUMENT", "title": "Doc"},
            [{"content": "d", "task_type": "RETRIEVAL_DOCUMENT", "title": "Doc"}],
            {"autoTruncate": False},
        ),
        (
            {"input": [{"content": ["x", "y"], "task_type": "RETRIEVAL_DOCUMENT", "title": "T"}, "z"]},
            [
                {"content": "x", "task_type": "RETRIEVAL_DOCUMENT", "title": "T"},
                {"content": "y", "task_type": "RETRIEVAL_DOCUMENT", "title": "T"},
                {"content": "z"},
            ],
            {"autoTruncate": False},
        ),
    ],
)
def test_embeddings_instances(extra: dict[str, Any], instances: list[Any], parameters: dict[str, Any]) -> None:
    expected = {"instances": instances, "parameters": parameters}
    assert embeddings_to_predict({"model": "m", **extra}, "text-embedding-005") == expected


@pytest.mark.parametrize(
    ("req", "status", "fragment"),
    [
        ({"input": [1, 2, 3]}, 422, "token arrays"),
        ({"input": [[1, 2], [3]]}, 422, "token arrays"),
        ({"input": []}, 400, "non-empty"),
        ({"input": ["a", 3]}, 400, "'input' must be"),
        ({"input": "a", "encoding_format": "int8"}, 400, "'encoding_format'"),
        ({"input": "a", "task_type": "SUMMARY"}, 400, "'task_type' must be one of"),
        ({"input": "a", "auto_truncate": "yes"}, 400, "'auto_truncate'"),
        ({"input": "a", "dimensions": 0}, 400, "'dimensions'"),
    ],
)
def test_embeddings_request_errors(req: dict[str, Any], status: int, fragment: str) -> None:
    with pytest.raises(GatewayError) as err:
        embeddings_to_predict(req, "text-embedding-005")
    assert err.value.status == status and fragment in err.value.message


@pytest.mark.parametrize("value", [["a", "b"], [{"content": ["a", "b"]}], ["a", {"content": "b"}]])
def test_gemini_embedding_takes_one_input_per_request(value: Any) -> None:
    with pytest.raises(TranslationError) as err:
        embeddings_to_predict({"input": value}, "gemini-embedding-001")
    assert err.value.status == 422 and "gemini-embedding-001 takes one input per request" in err.value.message
    # One input is fine, and other models take several.
    assert embeddings_to_predict({"input": ["a"]}, "gemini-embedding-001")["instances"] == [{"content": "a"}]
    assert len(embeddings_to_predict({"input": value}, "text-embedding-005")["instances"]) == 2


PREDICTIONS = {
    "predictions": [
        {"embeddings": {"values": [0.5, -1.25, 3], "statistics": {"token_count": 4, "truncated": False}}},
        {"embeddings": {"values": [0.1, 0.2, 0.3], "statistics": {"token_count": 6.0, "truncated": False}}},
    ],
    "metadata": {"billableCharacterCount": 20},
}


def test_embeddings_response_as_floats() -> None:
    tr = _embeddings_translator()
    out = json.loads(tr.body(json.dumps(PREDICTIONS).encode()) or b"")
    assert out == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, -1.25, 3.0]},
            {"object": "embedding", "index": 1, "embedding": [0.1, 0.2, 0.3]},
        ],
        "model": "text-embedding-005",
        "usage": {"prompt_tokens": 10, "total_tokens": 10},
    }
    assert tr.usage == TokenUsage(input_tokens=10, total_tokens=10, known=True)


def test_embeddings_response_as_base64_float32() -> None:
    out = json.loads(_embeddings_translator(base64_embeddings=True).body(json.dumps(PREDICTIONS).encode()) or b"")
    first = struct.unpack("<3f", base64.b64decode(out["data"][0]["embedding"]))
    assert first == (0.5, -1.25, 3.0)
    second = struct.unpack("<3f", base64.b64decode(out["data"][1]["embedding"]))
    assert second == pytest.approx((0.1, 0.2, 0.3), rel=1e-6)


def test_embeddings_without_statistics_have_unknown_usage() -> None:
    tr = _embeddings_translator()
    tr.body(json.dumps({"predictions": [{"embeddings": {"values": [1.0]}}]}).encode())
    assert not tr.usage.known


@pytest.mark.parametrize("body", [{"predictions": [{"embeddings": {"values": ["x"]}}]}, {"nothing": 1}, []])
def test_embeddings_response_of_an_unexpected_shape_raises(body: Any) -> None:
    with pytest.raises(ValueError):
        _embeddings_translator().body(json.dumps(body).encode())


def test_chat_to_gemini_is_the_body_sent() -> None:
    req = _chat(temperature=0.2, tools=[TOOL])
    assert _translate(req) == chat_to_gemini(req, MODEL)


# ----------------------------------------------------------------------------- through the translator


BACKEND = "ns/gemini/route/r/rule/0/ref/0"


def _config() -> config_pb2.TranslatorConfig:
    cfg = config_pb2.TranslatorConfig(name="ns/gw")
    backend = cfg.backends.add(
        name=BACKEND, service_backend="ns/gemini", route_name="ns/r", schema=config_pb2.Schema(name="GCPVertexAI")
    )
    backend.auth.gcp_credentials.project_name = "my-proj"
    backend.auth.gcp_credentials.region = "us-central1"
    backend.auth.credential_override.from_request_headers.header = ""  # the default x-aigw-gcp-access-token
    cfg.global_costs.add(metadata_key="total", type=config_pb2.LLMRequestCost.TOTAL_TOKEN)
    return cfg


def test_backend_request_sends_the_gemini_request_with_the_bearer_token() -> None:
    view = {
        ":path": "/v1/chat/completions",
        ":method": "POST",
        "content-type": "application/json; charset=utf-8",
        "authorization": "Bearer client-key",
        "x-aigw-gcp-access-token": "ya29.token",
    }
    body = json.dumps(_chat(stream=True)).encode()
    sent = backend_request(RuntimeConfig.build(_config()), BACKEND, view, MODEL, {}, body, True)
    assert sent.set_headers[":path"] == f"{PREFIX}/{MODEL}:streamGenerateContent?alt=sse"
    assert sent.set_headers["authorization"] == "Bearer ya29.token"
    assert sent.set_headers["content-type"] == "application/json"
    assert "x-aigw-gcp-access-token" in sent.remove_headers
    assert json.loads(sent.body or b"") == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    assert sent.set_headers["content-length"] == str(len(sent.body or b""))


async def test_router_phase_streams_gemini_as_openai_chunks() -> None:
    req = _chat(model=MODEL, stream=True, stream_options={"include_usage": True})
    path = "/v1/chat/completions"
    out = await drive(
        ExternalProcessor(_config()),
        [
            request_headers({":method": "POST", ":path": path, ":authority": "gw", "content-type": "application/json"}),
            request_body(req),
            response_headers({":status": "200", "content-type": "text/event-stream"}, BACKEND),
            response_body(STREAM[:150], end_of_stream=False),
            response_body(STREAM[150:], end_of_stream=True),
        ],
    )
    sent = b"".join(r.response_body.response.body_mutation.body for r in out[3:])
    assert _normalised(sent) == _expected(include_usage=True)
    assert metadata(out[4])["total"] == 25.0 and metadata(out[4])["usage_estimated"] is False


async def test_router_phase_keeps_a_429_a_429_in_openai_shape() -> None:
    error = {"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}
    out = await drive(
        ExternalProcessor(_config()),
        [
            request_headers({":method": "POST", ":path": "/v1/chat/completions", ":authority": "gw"}),
            request_body(_chat(model=MODEL)),
            response_headers({":status": "429", "content-type": "application/json"}, BACKEND),
            response_body(json.dumps(error).encode()),
        ],
    )
    mutation = out[3].response_body.response
    assert json.loads(mutation.body_mutation.body)["error"]["type"] == "rate_limit_error"
    assert header_set(mutation.header_mutation)[":status"] == "429"


# ----------------------------------------------------------------------------- random shapes


_FUZZ_KEYS = [
    "model", "messages", "role", "content", "type", "text", "tool_calls", "function", "arguments", "name", "id",
    "tools", "tool_choice", "tool_call_id", "image_url", "url", "extra_content", "google", "thought_signature",
    "input", "dimensions", "task_type", "title", "encoding_format", "reasoning_effort", "response_format",
    "candidates", "parts", "functionCall", "args", "thought", "thoughtSignature", "finishReason", "index",
    "usageMetadata", "promptTokenCount", "candidatesTokenCount", "predictions", "embeddings", "values",
    "statistics", "token_count", "logprobsResult", "chosenCandidates", "promptFeedback", "blockReason", "error",
    "code", "status", "message", "stream", "max_tokens", "usage",
]  # fmt: skip
_FUZZ_ATOMS = [None, True, 0, -3, 2.5, "", "user", "assistant", "tool", "system", "text", "function", "image_url",
               "data:x", "gs://b/a.png", "{}", "STOP", "SAFETY", "RETRIEVAL_DOCUMENT", "base64", "low"]  # fmt: skip


def _random(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(4 if depth < 4 else 2)
    if kind < 2:
        return rng.choice(_FUZZ_ATOMS)
    if kind == 2:
        return {rng.choice(_FUZZ_KEYS): _random(rng, depth + 1) for _ in range(rng.randrange(5))}
    return [_random(rng, depth + 1) for _ in range(rng.randrange(4))]


@pytest.mark.parametrize("seed", range(30))
def test_random_shapes_never_crash_the_gcp_translators(seed: int) -> None:
    """Requests may be refused (GatewayError, or a shape error the caller turns into a 422); stream
    translators and error mapping never raise; a success body of the wrong shape may raise what the
    router phase turns into a 502."""
    rng = random.Random(seed)
    shape_errors = (AttributeError, TypeError, KeyError, ValueError, IndexError)
    for schema, endpoint in (
        ("GCPVertexAI", Endpoint.CHAT_COMPLETIONS),
        ("GCPVertexAI", Endpoint.EMBEDDINGS),
        ("GCPAnthropic", Endpoint.CHAT_COMPLETIONS),
        ("GCPAnthropic", Endpoint.MESSAGES),
        ("GCPAnthropic", Endpoint.COUNT_TOKENS),
    ):
        pair = get_pair(endpoint, schema)
        assert pair is not None
        backend = _backend()
        backend.schema.name = schema
        for _ in range(10):
            body = _random(rng)
            if isinstance(body, dict):
                body.setdefault("model", "m")
            ctx = RequestContext(endpoint, backend, "/x", "", rng.choice([MODEL, "gemini-3-pro", "claude@1"]), {})
            with contextlib.suppress(GatewayError, *shape_errors):
                pair.request(ctx, json.dumps(body).encode())
            client = (
                ClientSchema.ANTHROPIC
                if schema == "GCPAnthropic" and endpoint is not Endpoint.CHAT_COMPLETIONS
                else ClientSchema.OPENAI
            )
            for stream in (False, True):
                rctx = ResponseContext(endpoint, client, "m", "m", stream, True, base64_embeddings=rng.random() < 0.5)
                tr = pair.response_translator(rctx)
                if stream:
                    tr.feed(b"".join(b"data: " + json.dumps(_random(rng)).encode() + b"\n\n" for _ in range(6)))
                    tr.finish()
                else:
                    with contextlib.suppress(*shape_errors):
                        tr.body(json.dumps(_random(rng)).encode())
                json.loads(tr.error(rng.choice([400, 429, 500, 503]), json.dumps(_random(rng)).encode()))
