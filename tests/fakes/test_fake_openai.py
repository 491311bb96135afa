"""The OpenAI fake, driven by the official openai SDK (and raw HTTP where the SDK hides details)."""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import openai
import pytest

from aigw_fakes import OpenAIFake

from ._fakehttp import raw, sse_events

KEY = "sk-test-openai"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["city", "unit"],
        },
    },
}
USER_HI = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[OpenAIFake]:
    with OpenAIFake(api_key=KEY, name="openai-a", cached_tokens=2, reasoning_tokens=3) as f:
        yield f


@pytest.fixture(autouse=True)
def _reset(fake: OpenAIFake) -> None:
    fake.reset()


@pytest.fixture
def client(fake: OpenAIFake) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=fake.url, max_retries=0)


def _bad_request(exc: pytest.ExceptionInfo[openai.APIStatusError]) -> dict:
    assert exc.value.status_code == 400
    return exc.value.body  # the "error" object


# ---- chat --------------------------------------------------------------------------------------


def test_chat_sync(client: openai.OpenAI, fake: OpenAIFake) -> None:
    raw_resp = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=USER_HI)
    assert raw_resp.headers["x-fake-id"] == "openai-a"
    r = raw_resp.parse()
    assert r.object == "chat.completion"
    assert r.model == "gpt-4o-mini"
    assert r.choices[0].message.content == "Fake gpt-4o-mini reply to: Hello there"
    assert r.choices[0].finish_reason == "stop"
    u = r.usage
    assert u is not None
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_tokens_details.cached_tokens == 2
    assert u.completion_tokens_details.reasoning_tokens == 3
    # deterministic
    again = client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI)
    assert again.choices[0].message.content == r.choices[0].message.content
    assert again.usage == r.usage
    rec = fake.requests[0]
    assert rec.method == "POST" and rec.path == "/v1/chat/completions"
    assert rec.header("authorization") == f"Bearer {KEY}"
    assert rec.body["messages"] == USER_HI


def test_chat_stops_before_the_first_stop_sequence(client: openai.OpenAI) -> None:
    """As OpenAI does: the text ends before the first stop sequence it holds, which is left out
    (found by review: the fake ignored `stop`, so the mapping of Anthropic's stop_sequences into an
    OpenAI backend was never exercised)."""
    r = client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI, stop=["nothing", " reply"])
    assert r.choices[0].message.content == "Fake gpt-4o-mini" and r.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI, stop="to:", stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "Fake gpt-4o-mini reply "


async def test_chat_async() -> None:
    async with OpenAIFake(api_key=KEY, name="async-fake") as f:
        client = openai.AsyncOpenAI(api_key=KEY, base_url=f.url, max_retries=0)
        r = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "developer", "content": "be brief"}, *USER_HI], n=2
        )
        assert [c.index for c in r.choices] == [0, 1]
        assert r.choices[1].message.content.endswith("(choice 1)")
        stream = await client.chat.completions.create(model="gpt-4o", messages=USER_HI, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "Fake gpt-4o reply to: Hello there"
        await client.close()


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=USER_HI, stream=True, stream_options={"include_usage": True}
        )
    )
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Fake gpt-4o-mini reply to: Hello there"
    )
    assert chunks[-2].choices[0].finish_reason == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 2
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_stream_raw_framing(fake: OpenAIFake) -> None:
    status, headers, body = raw(
        "POST",
        fake.url + "/chat/completions",
        {"model": "gpt-4o-mini", "messages": USER_HI, "stream": True},
        {"authorization": f"Bearer {KEY}"},
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse_events(body)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert all("usage" not in c for c in chunks)  # no include_usage: no usage key, no usage chunk
    assert all(isinstance(c["obfuscation"], str) for c in chunks)  # on by default, like OpenAI
    _, _, body = raw(
        "POST",
        fake.url + "/chat/completions",
        {"model": "gpt-4o-mini", "messages": USER_HI, "stream": True, "stream_options": {"include_obfuscation": False}},
        {"authorization": f"Bearer {KEY}"},
    )
    assert all("obfuscation" not in json.loads(d) for _, d in sse_events(body)[:-1])
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_chat_tool_call(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI, tools=[WEATHER_TOOL])
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls"
    assert ch.message.content is None
    (call,) = ch.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"city": "example city", "unit": "celsius"}

    # answering the call gives a text answer
    follow = [
        *USER_HI,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    r2 = client.chat.completions.create(model="gpt-4o-mini", messages=follow, tools=[WEATHER_TOOL])
    assert r2.choices[0].finish_reason == "stop" and r2.choices[0].message.content

    # tool_choice none → text; named tool → that tool even after a tool result
    r3 = client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI, tools=[WEATHER_TOOL], tool_choice="none")
    assert r3.choices[0].message.tool_calls is None
    r4 = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=follow,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert r4.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_chat_tool_call_stream(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI, tools=[WEATHER_TOOL], stream=True)
    )
    first = chunks[0].choices[0].delta
    assert first.role == "assistant"
    tc0 = first.tool_calls[0]
    assert tc0.index == 0 and tc0.id.startswith("call_") and tc0.function.name == "get_weather"
    assert tc0.function.arguments == ""
    frags = [c.choices[0].delta.tool_calls[0] for c in chunks[1:] if c.choices and c.choices[0].delta.tool_calls]
    assert len(frags) >= 2 and all(f.id is None and f.index == 0 for f in frags)
    assert json.loads("".join(f.function.arguments for f in frags))["unit"] == "celsius"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # and the SDK's stream helper accumulates it
    with client.chat.completions.stream(model="gpt-4o-mini", messages=USER_HI, tools=[WEATHER_TOOL]) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_chat_max_tokens_truncates(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI, max_completion_tokens=5)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens <= 5


# ---- chat rejections ---------------------------------------------------------------------------


def test_reject_unknown_field(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI, extra_body={"frobnicate": 1})
    assert _bad_request(e) == {
        "message": "Unrecognized request argument supplied: frobnicate",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_reject_bad_key(fake: OpenAIFake) -> None:
    c = openai.OpenAI(api_key="sk-wrong-key-0000", base_url=fake.url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        c.chat.completions.create(model="gpt-4o-mini", messages=USER_HI)
    assert e.value.status_code == 401
    assert e.value.body["code"] == "invalid_api_key"
    assert e.value.body["type"] == "invalid_request_error"
    assert e.value.body["message"].startswith("Incorrect API key provided")
    status, _, body = raw("POST", fake.url + "/chat/completions", {"model": "m", "messages": USER_HI})
    assert status == 401 and "didn't provide an API key" in json.loads(body)["error"]["message"]


@pytest.mark.parametrize(
    ("kwargs", "param", "code", "needle"),
    [
        ({"messages": []}, "messages", "empty_array", "empty array"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "invalid_value", "'wizard'"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "missing_required_parameter", "Missing"),
        (
            {"messages": [*USER_HI, {"role": "tool", "content": "x"}]},
            "messages[1].tool_call_id",
            "missing_required_parameter",
            "tool_call_id",
        ),
        (
            {"messages": [*USER_HI, {"role": "tool", "tool_call_id": "call_x", "content": "x"}]},
            "messages.[1].role",
            None,
            "must be a response to a preceeding message with 'tool_calls'",
        ),
        (
            {
                "messages": [
                    *USER_HI,
                    {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f"}}]},
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
            "missing_required_parameter",
            "Missing",
        ),
        (
            {
                "messages": [
                    *USER_HI,
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                    },
                    {"role": "user", "content": "next"},
                ]
            },
            "messages.[1].role",
            None,
            "did not have response messages: c1",
        ),
        ({"messages": USER_HI, "stream_options": {"include_usage": True}}, "stream_options", None, "only allowed"),
        ({"messages": USER_HI, "n": 0}, "n", "integer_below_min_value", ">= 1"),
        ({"messages": USER_HI, "temperature": 2.5}, "temperature", "decimal_above_max_value", "<= 2"),
        ({"messages": USER_HI, "tools": [{"type": "function", "function": {}}]}, "tools[0].function.name", None, ""),
        ({"messages": USER_HI, "tool_choice": "auto"}, "tool_choice", None, "only allowed when 'tools'"),
        ({"messages": USER_HI, "parallel_tool_calls": False}, "parallel_tool_calls", None, "only allowed when"),
        ({"messages": USER_HI, "stop": list("abcde")}, "stop", "array_above_max_length", "maximum length 4"),
        ({"messages": USER_HI, "max_completion_tokens": 32000}, "max_tokens", "invalid_value", "at most 16384"),
        # gpt-4o-mini is not a reasoning model
        (
            {"messages": USER_HI, "reasoning_effort": "low"},
            "reasoning_effort",
            "unsupported_parameter",
            "not supported",
        ),
    ],
)
def test_chat_rejections(client: openai.OpenAI, kwargs: dict, param: str, code: str | None, needle: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-4o-mini", **kwargs)
    err = _bad_request(e)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    if code is not None:
        assert err["code"] == code
    assert needle in err["message"]


def test_reject_missing_model_and_bad_json(fake: OpenAIFake) -> None:
    auth = {"authorization": f"Bearer {KEY}"}
    status, _, body = raw("POST", fake.url + "/chat/completions", {"messages": USER_HI}, auth)
    assert status == 400 and json.loads(body)["error"]["message"] == "you must provide a model parameter"
    status, _, body = raw(
        "POST", fake.url + "/chat/completions", b"{not json", {**auth, "content-type": "application/json"}
    )
    assert status == 400 and "could not parse the JSON body" in json.loads(body)["error"]["message"]
    status, _, body = raw("POST", fake.url + "/nope", {"model": "x"}, auth)
    assert status == 404 and json.loads(body)["error"]["message"] == "Invalid URL (POST /v1/nope)"


# ---- embeddings ----------------------------------------------------------------------------------


def test_embeddings_float_and_base64(client: openai.OpenAI, fake: OpenAIFake) -> None:
    fl = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float")
    assert [d.index for d in fl.data] == [0, 1]
    assert len(fl.data[0].embedding) == 1536
    assert fl.usage.prompt_tokens == 2
    # the SDK asks for base64 by default and decodes little-endian float32 itself
    b64 = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    assert fake.last_request.body["encoding_format"] == "base64"
    for f, b in zip(fl.data, b64.data, strict=True):
        assert b.embedding == pytest.approx(f.embedding, abs=1e-6)
    # raw check of the wire format
    status, _, body = raw(
        "POST",
        fake.url + "/embeddings",
        {"model": "text-embedding-3-small", "input": "alpha", "encoding_format": "base64", "dimensions": 8},
        {"authorization": f"Bearer {KEY}"},
    )
    assert status == 200
    blob = base64.b64decode(json.loads(body)["data"][0]["embedding"])
    assert len(blob) == 8 * 4
    vec = struct.unpack("<8f", blob)
    assert sum(x * x for x in vec) == pytest.approx(1.0, rel=1e-5)


def test_embeddings_inputs_and_rejections(client: openai.OpenAI) -> None:
    r = client.embeddings.create(model="text-embedding-3-large", input=[[1, 2, 3], [4, 5]], dimensions=4)
    assert [len(d.embedding) for d in r.data] == [4, 4]
    assert r.usage.prompt_tokens == 5
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="text-embedding-ada-002", input="x", dimensions=4)
    assert "does not support specifying dimensions" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="text-embedding-3-small", input="")
    assert "'$.input' is invalid" in e.value.body["message"]


# ---- other endpoints -------------------------------------------------------------------------------


def test_responses_plain_and_stream(client: openai.OpenAI) -> None:
    r = client.responses.create(model="gpt-4o-mini", input="Hello there", instructions="be kind")
    assert r.status == "completed"
    assert r.output_text == "Fake gpt-4o-mini reply to: Hello there"
    assert r.usage.input_tokens_details.cached_tokens == 2
    assert r.usage.output_tokens_details.reasoning_tokens == 3
    with client.responses.stream(model="gpt-4o-mini", input="Hello there") as s:
        types = [ev.type for ev in s]
        final = s.get_final_response()
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "response.output_text.delta" in types
    assert final.output_text == r.output_text and final.usage.output_tokens == r.usage.output_tokens
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="gpt-4o-mini", input="x", extra_body={"bogus": 1})
    assert e.value.body["code"] == "unknown_parameter" and e.value.body["param"] == "bogus"


def test_responses_function_call(client: openai.OpenAI) -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER_TOOL["function"]["parameters"]}
    r = client.responses.create(model="gpt-4o-mini", input="weather?", tools=[tool])
    (item,) = r.output
    assert item.type == "function_call" and item.name == "get_weather"
    assert json.loads(item.arguments)["city"] == "example city"


def test_completions_images_audio_models(client: openai.OpenAI, fake: OpenAIFake) -> None:
    c = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    assert c.object == "text_completion" and c.choices[0].text.startswith("Fake gpt-3.5-turbo-instruct")
    streamed = "".join(
        ch.choices[0].text
        for ch in client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", stream=True)
    )
    assert streamed == c.choices[0].text

    img = client.images.generate(model="gpt-image-1", prompt="a cat")
    assert base64.b64decode(img.data[0].b64_json).startswith(b"\x89PNG")
    url = client.images.generate(model="dall-e-3", prompt="a cat").data[0].url
    assert url.startswith(fake.base_url)

    speech = client.audio.speech.with_raw_response.create(model="tts-1", input="hello", voice="alloy")
    assert speech.headers["content-type"] == "audio/mpeg"
    assert speech.content.startswith(b"ID3")

    tr = client.audio.transcriptions.create(model="whisper-1", file=("clip.mp3", b"\x00" * 100))
    assert tr.text == "Fake transcription of clip.mp3 (100 bytes) by whisper-1."
    assert fake.last_request.body["file"] == {"filename": "clip.mp3", "content_type": "audio/mpeg", "size": 100}

    ids = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in ids
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"


def test_prefix_for_azure_v1_style() -> None:
    with OpenAIFake(api_key=KEY, prefix="/openai/v1") as f:
        assert f.url.endswith("/openai/v1")
        c = openai.OpenAI(api_key=KEY, base_url=f.url, max_retries=0)
        assert c.chat.completions.create(model="gpt-4o", messages=USER_HI).choices[0].message.content
        assert f.requests[0].path == "/openai/v1/chat/completions"


def test_model_allow_list() -> None:
    with OpenAIFake(api_key=KEY, models=["only-model"]) as f:
        c = openai.OpenAI(api_key=KEY, base_url=f.url, max_retries=0)
        with pytest.raises(openai.NotFoundError) as e:
            c.chat.completions.create(model="gpt-4o", messages=USER_HI)
        assert e.value.body["code"] == "model_not_found"


# ---- controls ----------------------------------------------------------------------------------------


def test_status_header_and_failure_plan(client: openai.OpenAI, fake: OpenAIFake) -> None:
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI, extra_headers={"x-fake-status": "503"})
    assert e.value.status_code == 503 and e.value.body["type"] == "server_error"
    assert e.value.response.headers["x-fake-id"] == "openai-a"

    fake.fail_next(2, 429)
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as e2:
            client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI)
        assert e2.value.body["code"] == "rate_limit_exceeded"
    assert client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI).choices

    fake.always_fail(500)
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            client.models.list()
    fake.always_fail(None)
    assert client.models.list().data
    assert len(fake.requests) == 1 + 3 + 3 + 1


def test_delay_header(client: openai.OpenAI) -> None:
    t0 = time.monotonic()
    client.models.list(extra_headers={"x-fake-delay-ms": "300"})
    assert time.monotonic() - t0 >= 0.3


def test_stream_abort_and_stream_error(client: openai.OpenAI, fake: OpenAIFake) -> None:
    got = []
    with pytest.raises(openai.APIConnectionError):
        for c in client.chat.completions.create(
            model="gpt-4o-mini",
            messages=USER_HI,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-fake-stream-abort-after": "3"},
        ):
            got.append(c)
    assert len(got) == 3 and all(c.usage is None for c in got)

    status, _, body = raw(
        "POST",
        fake.url + "/chat/completions",
        {"model": "gpt-4o-mini", "messages": USER_HI, "stream": True},
        {"authorization": f"Bearer {KEY}", "x-fake-stream-error-after": "2"},
    )
    assert status == 200
    events = sse_events(body)
    assert len(events) == 3 and json.loads(events[-1][1])["error"]["type"] == "server_error"
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model="gpt-4o-mini", messages=USER_HI, stream=True, extra_headers={"x-fake-stream-error-after": "2"}
        ):
            pass


def test_http_control_endpoints(fake: OpenAIFake, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI)
    status, _, body = raw("GET", fake.base_url + "/__fake/requests")
    assert status == 200
    recs = json.loads(body)
    assert recs[-1]["path"] == "/v1/chat/completions" and recs[-1]["body"]["model"] == "gpt-4o-mini"
    raw("POST", fake.base_url + "/__fake/fail", {"n": 1, "status": 502})
    with pytest.raises(openai.APIStatusError) as e:
        client.models.list()
    assert e.value.status_code == 502
    raw("POST", fake.base_url + "/__fake/reset", {})
    assert fake.requests == []


def test_cli_entry_point() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aigw_fakes",
            "--provider",
            "openai",
            "--port",
            "0",
            "--api-key",
            "K",
            "--name",
            "cli",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        base = line.removeprefix("listening on ")
        status, headers, _ = raw("GET", base + "/v1/models", headers={"authorization": "Bearer K"})
        assert status == 200 and headers["x-fake-id"] == "cli"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_reasoning_model_rules(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="o3-mini", messages=USER_HI, max_tokens=10)
    assert e.value.body["code"] == "unsupported_parameter" and e.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-5", messages=USER_HI, temperature=0.2)
    assert e.value.body["code"] == "unsupported_value"
    assert client.chat.completions.create(model="o3-mini", messages=USER_HI, max_completion_tokens=50).choices


def test_gzip_and_stream_interval(fake: OpenAIFake) -> None:
    auth = {"authorization": f"Bearer {KEY}", "accept-encoding": "gzip"}
    status, headers, body = raw("GET", fake.url + "/models", headers={**auth, "x-fake-gzip": "1"})
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(body))["object"] == "list"
    t0 = time.monotonic()
    status, headers, body = raw(
        "POST",
        fake.url + "/chat/completions",
        {"model": "gpt-4o-mini", "messages": USER_HI, "stream": True},
        {**auth, "x-fake-stream-interval-ms": "40", "x-fake-gzip": "1"},
    )
    assert status == 200 and headers["content-encoding"] == "gzip"
    n = len(sse_events(gzip.decompress(body)))
    assert n > 3 and time.monotonic() - t0 >= 0.04 * (n - 1)


def test_response_format(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    r = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=USER_HI,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    assert json.loads(r.choices[0].message.content) == {"name": "example name", "age": 1}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI, response_format={"type": "json_object"})
    assert "must contain the word 'json'" in e.value.body["message"]


def test_a_client_gone_mid_stream_ends_the_stream_quietly(
    client: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that closes a stream early: the fake's next write meets the closed connection and
    ends the stream without aiohttp's traceback (found by review, on `run`'s console)."""
    import logging

    with caplog.at_level(logging.ERROR):
        stream = client.chat.completions.create(
            model="gpt-4o", messages=USER_HI, stream=True, extra_headers={"x-fake-stream-interval-ms": "50"}
        )
        next(iter(stream))
        stream.close()
        time.sleep(1.0)  # the fake's remaining writes, 50 ms apart, meet the closed connection
    assert [r.getMessage() for r in caplog.records if r.name.startswith("aiohttp")] == []
