"""The Anthropic fake, driven by the official anthropic SDK and raw HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from aigw_fakes import AnthropicFake

from ._fakehttp import raw, sse_events

KEY = "sk-ant-test-1"
MODEL = "claude-sonnet-5"
BUDGET_MODEL = "claude-sonnet-4-5"  # takes thinking with a budget (Sonnet 5 only adaptive thinking)
HI = [{"role": "user", "content": "Hello there"}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def fake() -> Iterator[AnthropicFake]:
    with AnthropicFake(api_key=KEY, name="anthropic-a", cache_read_input_tokens=11, cache_creation_input_tokens=5) as f:
        yield f


@pytest.fixture(autouse=True)
def _reset(fake: AnthropicFake) -> None:
    fake.reset()


@pytest.fixture
def client(fake: AnthropicFake) -> anthropic.Anthropic:
    # The SDK sends the key as "Authorization: Bearer"; the real API (and the fake) wants x-api-key.
    return anthropic.Anthropic(api_key=KEY, base_url=fake.url, max_retries=0, default_headers={"x-api-key": KEY})


def _headers(**extra: str) -> dict[str, str]:
    return {"x-api-key": KEY, "anthropic-version": "2023-06-01", **extra}


def test_sdk_bearer_only_is_rejected_and_x_api_key_accepted(fake: AnthropicFake) -> None:
    plain = anthropic.Anthropic(api_key=KEY, base_url=fake.url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        plain.messages.create(model=MODEL, max_tokens=50, messages=HI)
    sent = fake.last_request
    assert sent.header("authorization") == f"Bearer {KEY}" and sent.header("x-api-key") is None
    assert e.value.body["type"] == "error"
    assert e.value.body["error"] == {"type": "authentication_error", "message": "x-api-key header is required"}
    assert e.value.response.headers["request-id"] == e.value.body["request_id"]

    ok = anthropic.Anthropic(api_key=KEY, base_url=fake.url, max_retries=0, default_headers={"x-api-key": KEY})
    assert ok.messages.create(model=MODEL, max_tokens=50, messages=HI).content[0].text


def test_bad_key_and_missing_version(fake: AnthropicFake) -> None:
    bad = anthropic.Anthropic(api_key="x", base_url=fake.url, max_retries=0, default_headers={"x-api-key": "wrong"})
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model=MODEL, max_tokens=50, messages=HI)
    assert e.value.body["error"]["message"] == "invalid x-api-key"
    body = {"model": MODEL, "max_tokens": 10, "messages": HI}
    status, headers, payload = raw("POST", fake.url + "/v1/messages", body, {"x-api-key": KEY})
    assert status == 400
    assert json.loads(payload)["error"] == {
        "type": "invalid_request_error",
        "message": "anthropic-version: header is required",
    }
    assert headers["request-id"].startswith("req_")


def test_messages_basic(client: anthropic.Anthropic, fake: AnthropicFake) -> None:
    resp = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=100, system="be brief", messages=HI, extra_body={"temperature": 0.5}
    )
    assert resp.headers["x-fake-id"] == "anthropic-a"
    assert resp.headers["request-id"].startswith("req_")
    m = resp.parse()
    assert m.type == "message" and m.role == "assistant" and m.model == MODEL
    assert [b.type for b in m.content] == ["text"]
    assert m.content[0].text == f"Fake {MODEL} reply to: Hello there"
    assert m.stop_reason == "end_turn" and m.stop_sequence is None
    assert m.usage.cache_read_input_tokens == 11
    assert m.usage.cache_creation_input_tokens == 5
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0
    rec = fake.last_request
    assert rec.path == "/v1/messages" and rec.body["system"] == "be brief"
    assert rec.header("anthropic-version")


def test_structured_output_is_json_of_the_schema_and_a_bad_output_config_is_refused(
    client: anthropic.Anthropic,
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    m = client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=HI,
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}, "effort": "low"}},
    )
    assert isinstance(json.loads(m.content[0].text)["city"], str)
    for config in ({"format": {"type": "text"}}, {"format": {"type": "json_schema"}}, {"effort": "huge"}):
        with pytest.raises(anthropic.BadRequestError, match="output_config"):
            client.messages.create(model=MODEL, max_tokens=100, messages=HI, extra_body={"output_config": config})


def test_consecutive_same_role_turns_are_merged(client: anthropic.Anthropic) -> None:
    msgs = [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
    assert client.messages.create(model=MODEL, max_tokens=100, messages=msgs).stop_reason == "end_turn"


def test_stop_reasons(client: anthropic.Anthropic) -> None:
    m = client.messages.create(model=MODEL, max_tokens=3, messages=HI)
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens <= 3
    m2 = client.messages.create(model=MODEL, max_tokens=100, messages=HI, stop_sequences=["there"])
    assert m2.stop_reason == "stop_sequence" and m2.stop_sequence == "there"
    assert "there" not in m2.content[0].text


def test_stream_event_sequence_raw(fake: AnthropicFake) -> None:
    body = {"model": MODEL, "max_tokens": 100, "messages": HI, "stream": True}
    status, headers, payload = raw("POST", fake.url + "/v1/messages", body, _headers())
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse_events(payload)
    datas = [json.loads(d) for _, d in events]
    assert all(name == d["type"] for (name, _), d in zip(events, datas, strict=True))
    names = [n for n, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-4:] == ["content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    start = datas[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["cache_read_input_tokens"] == 11
    text = "".join(d["delta"]["text"] for d in datas if d["type"] == "content_block_delta")
    assert text == f"Fake {MODEL} reply to: Hello there"
    delta = datas[-2]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] > 1


def test_stream_with_sdk(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=100, messages=HI) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == f"Fake {MODEL} reply to: Hello there"
    assert final.usage.cache_read_input_tokens == 11


def test_tools(client: anthropic.Anthropic) -> None:
    m = client.messages.create(model=MODEL, max_tokens=200, messages=HI, tools=[WEATHER])
    assert m.stop_reason == "tool_use"
    assert [b.type for b in m.content] == ["text", "tool_use"]  # tool_choice auto: a preamble first
    tu = m.content[1]
    assert tu.name == "get_weather" and tu.id.startswith("toolu_")
    assert tu.input == {"city": "example city"}

    forced = client.messages.create(
        model=MODEL, max_tokens=200, messages=HI, tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"}
    )
    assert [b.type for b in forced.content] == ["tool_use"]
    none = client.messages.create(
        model=MODEL, max_tokens=200, messages=HI, tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert none.stop_reason == "end_turn"

    follow: list[Any] = [
        *HI,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tu.id, "content": "sunny"}]},
    ]
    after = client.messages.create(model=MODEL, max_tokens=200, messages=follow, tools=[WEATHER])
    assert after.stop_reason == "end_turn" and after.content[0].type == "text"


def test_tools_stream(client: anthropic.Anthropic, fake: AnthropicFake) -> None:
    with client.messages.stream(model=MODEL, max_tokens=200, messages=HI, tools=[WEATHER]) as s:
        final = s.get_final_message()
    assert final.content[1].input == {"city": "example city"}
    body = {"model": MODEL, "max_tokens": 200, "messages": HI, "tools": [WEATHER], "stream": True}
    _, _, payload = raw("POST", fake.url + "/v1/messages", body, _headers())
    datas = [json.loads(d) for _, d in sse_events(payload)]
    starts = [d for d in datas if d["type"] == "content_block_start"]
    assert [s["index"] for s in starts] == [0, 1]
    assert starts[1]["content_block"]["type"] == "tool_use" and starts[1]["content_block"]["input"] == {}
    frags = [d["delta"]["partial_json"] for d in datas if d.get("delta", {}).get("type") == "input_json_delta"]
    assert len(frags) >= 3
    assert json.loads("".join(frags)) == {"city": "example city"}
    assert datas[-2]["delta"]["stop_reason"] == "tool_use"


def test_count_tokens(client: anthropic.Anthropic) -> None:
    r = client.messages.count_tokens(model=MODEL, messages=HI, system="sys")
    assert r.input_tokens > 11 + 5
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.count_tokens(model=MODEL, messages=HI, extra_body={"max_tokens": 5})
    assert e.value.body["error"]["message"] == "max_tokens: Extra inputs are not permitted"


def _post(fake: AnthropicFake, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, _, payload = raw("POST", fake.url + "/v1/messages", body, _headers())
    return status, json.loads(payload)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": MODEL, "messages": HI}, "max_tokens: Field required"),
        ({"max_tokens": 5, "messages": HI}, "model: Field required"),
        ({"model": MODEL, "max_tokens": 5, "messages": []}, "messages: at least one message is required"),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}, *HI]},
            'messages: Unexpected role "system". The Messages API accepts a top-level `system` parameter, '
            'not "system" as an input message role.',
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x"}]}],
            },
            "messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_x. Each "
            "`tool_result` block must have a corresponding `tool_use` block in the previous message.",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": [
                    *HI,
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
                    {"role": "user", "content": "no result"},
                ],
            },
            "messages.2: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1. "
            "Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": [
                    *HI,
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]},
                ],
            },
            "Requests which include `tool_use` or `tool_result` blocks must define tools.",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "tools": [WEATHER],
                "messages": [
                    *HI,
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "here:"},
                            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"},
                        ],
                    },
                ],
            },
            "messages.2: Did not find 1 `tool_result` block(s) at the beginning of this message.",
        ),
        ({"model": MODEL, "max_tokens": 5, "messages": HI, "temperature": 1.5}, "temperature: Input should be"),
        ({"model": MODEL, "max_tokens": 5, "messages": HI, "frob": 1}, "frob: Extra inputs are not permitted"),
        (
            {"model": MODEL, "max_tokens": 5, "messages": HI, "tools": [{"name": "t"}]},
            "tools.0.custom.input_schema: Field required",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": HI,
                "tools": [{"name": "t", "input_schema": {"type": "array"}}],
            },
            "tools.0.custom.input_schema.type: Input should be 'object'",
        ),
        (
            {"model": MODEL, "max_tokens": 5, "messages": HI, "tools": [WEATHER], "tool_choice": {"type": "maybe"}},
            "tool_choice: Input tag 'maybe'",
        ),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "messages.0.content.0: Input tag 'video'",
        ),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [*HI, {"role": "assistant", "content": "Sure, "}]},
            "messages: final assistant content cannot end with trailing whitespace",
        ),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": ""}]},
            "messages: all messages must have non-empty content",
        ),
    ],
)
def test_rejections(fake: AnthropicFake, body: dict[str, Any], message: str) -> None:
    status, err = _post(fake, body)
    assert status == 400
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert err["error"]["message"].startswith(message)
    assert err["request_id"].startswith("req_")


def test_sdk_rejections(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "system", "content": "x"}])  # type: ignore[list-item]
    assert "top-level `system` parameter" in e.value.body["error"]["message"]
    bad_result = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_nope", "content": "x"}]}]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=MODEL, max_tokens=10, messages=bad_result)  # type: ignore[arg-type]


def test_faults(client: anthropic.Anthropic, fake: AnthropicFake) -> None:
    fake.fail_next(1, 529)
    with pytest.raises(anthropic.APIStatusError) as e:
        client.messages.create(model=MODEL, max_tokens=10, messages=HI)
    assert e.value.status_code == 529
    assert e.value.body["error"]["type"] == "overloaded_error"
    # in-stream error event
    body = {"model": MODEL, "max_tokens": 100, "messages": HI, "stream": True}
    _, _, payload = raw("POST", fake.url + "/v1/messages", body, _headers(**{"x-fake-stream-error-after": "3"}))
    events = sse_events(payload)
    assert [n for n, _ in events] == ["message_start", "content_block_start", "ping", "error"]
    assert json.loads(events[-1][1])["error"]["type"] == "overloaded_error"
    with (
        pytest.raises(anthropic.APIStatusError),
        client.messages.stream(
            model=MODEL, max_tokens=100, messages=HI, extra_headers={"x-fake-stream-error-after": "3"}
        ) as s,
    ):
        for _ in s:
            pass
    # abort: the connection is cut mid-body, no message_delta arrives. The SDK does not wrap a
    # mid-stream transport error, so the httpx2 RemoteProtocolError surfaces as is.
    seen: list[str] = []
    with (
        pytest.raises(Exception, match=r"incomplete chunked read|Connection error"),
        client.messages.stream(
            model=MODEL, max_tokens=100, messages=HI, extra_headers={"x-fake-stream-abort-after": "4"}
        ) as s,
    ):
        seen.extend(ev.type for ev in s)
    assert "message_delta" not in seen


async def test_async_client() -> None:
    async with AnthropicFake(api_key=KEY) as f:
        c = anthropic.AsyncAnthropic(api_key=KEY, base_url=f.url, max_retries=0, default_headers={"x-api-key": KEY})
        m = await c.messages.create(model=MODEL, max_tokens=100, messages=HI)
        assert m.content[0].text
        async with c.messages.stream(model=MODEL, max_tokens=100, messages=HI, tools=[WEATHER]) as s:
            final = await s.get_final_message()
        assert final.stop_reason == "tool_use"
        await c.close()


def test_thinking_blocks(client: anthropic.Anthropic, fake: AnthropicFake) -> None:
    thinking = {"type": "enabled", "budget_tokens": 1024}
    m = client.messages.create(model=BUDGET_MODEL, max_tokens=2000, messages=HI, thinking=thinking)
    assert [b.type for b in m.content] == ["thinking", "text"]
    assert m.content[0].signature
    body = {"model": BUDGET_MODEL, "max_tokens": 2000, "messages": HI, "thinking": thinking, "stream": True}
    _, _, payload = raw("POST", fake.url + "/v1/messages", body, _headers())
    deltas = [json.loads(d)["delta"]["type"] for n, d in sse_events(payload) if n == "content_block_delta"]
    assert deltas[0] == "thinking_delta" and "signature_delta" in deltas and deltas[-1] == "text_delta"
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=BUDGET_MODEL, max_tokens=1000, messages=HI, thinking=thinking)
    assert "must be greater than `thinking.budget_tokens`" in e.value.body["error"]["message"]


@pytest.mark.parametrize(
    ("model", "thinking", "effort", "message"),
    [
        ("claude-opus-4-7", {"type": "enabled", "budget_tokens": 1024}, None, "thinking.type.enabled is not supported"),
        ("claude-sonnet-4-5", {"type": "adaptive"}, None, "thinking.type.adaptive is not supported"),
        ("claude-sonnet-4-6", {"type": "adaptive"}, "xhigh", "'xhigh' is not supported for this model"),
        ("claude-opus-4-7", {"type": "adaptive"}, "extreme", "output_config.effort: Input should be"),
    ],
)
def test_thinking_follows_the_model(
    client: anthropic.Anthropic, model: str, thinking: dict[str, Any], effort: str | None, message: str
) -> None:
    """What each family takes (Anthropic's adaptive-thinking and effort pages)."""
    extra = {"output_config": {"effort": effort}} if effort else {}
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=model, max_tokens=2000, messages=HI, thinking=thinking, extra_body=extra)
    assert message in e.value.body["error"]["message"]
    adaptive = {"output_config": {"effort": "xhigh"}}
    m = client.messages.create(
        model="claude-opus-4-7", max_tokens=2000, messages=HI, thinking={"type": "adaptive"}, extra_body=adaptive
    )
    assert [b.type for b in m.content] == ["thinking", "text"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"temperature": 0.5, "top_p": 1}, "`temperature` and `top_p` cannot both be specified"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]}, "must be non-empty"),
        ({"messages": [{"role": "user", "content": "  "}]}, "non-whitespace text"),
        ({"system": [{"type": "text", "text": " "}]}, "non-whitespace text"),
        ({"stop_sequences": ["\n"]}, "each stop sequence must contain non-whitespace"),
        ({"metadata": {"user_id": "u" * 257}}, "at most 256 characters"),
    ],
)
def test_rejects_what_the_real_api_rejects(client: anthropic.Anthropic, extra: dict[str, Any], message: str) -> None:
    fields = dict(extra)
    messages = fields.pop("messages", HI)
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=MODEL, max_tokens=50, messages=messages, extra_body=fields)
    assert message in e.value.body["error"]["message"]


THINKING = {"type": "enabled", "budget_tokens": 1024}
TOOL_LOOP = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "P"}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]},
]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"tool_choice": {"type": "any"}}, "Thinking may not be enabled when tool_choice forces tool use."),
        ({"tool_choice": {"type": "tool", "name": "get_weather"}}, "Thinking may not be enabled when tool_choice"),
        ({"messages": TOOL_LOOP}, "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`"),
    ],
)
def test_thinking_rejects_forced_tools_and_a_tool_loop_without_its_thinking_block(
    client: anthropic.Anthropic, extra: dict[str, Any], message: str
) -> None:
    body: dict[str, Any] = {"max_tokens": 2000, "messages": HI, "tools": [WEATHER], "thinking": THINKING, **extra}
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=BUDGET_MODEL, **body)
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert message in e.value.body["error"]["message"]


def test_thinking_accepts_a_tool_loop_that_keeps_its_thinking_block(client: anthropic.Anthropic) -> None:
    thought = {"type": "thinking", "thinking": "call the tool", "signature": "sig"}
    loop = [TOOL_LOOP[0], {"role": "assistant", "content": [thought, *TOOL_LOOP[1]["content"]]}, TOOL_LOOP[2]]
    m = client.messages.create(model=BUDGET_MODEL, max_tokens=2000, messages=loop, tools=[WEATHER], thinking=THINKING)
    assert m.content
    # Without thinking the same history is fine; so is a finished loop followed by a new question.
    client.messages.create(model=BUDGET_MODEL, max_tokens=2000, messages=TOOL_LOOP, tools=[WEATHER])
    done = [*TOOL_LOOP, {"role": "assistant", "content": "Sunny."}, {"role": "user", "content": "Thanks"}]
    client.messages.create(model=BUDGET_MODEL, max_tokens=2000, messages=done, tools=[WEATHER], thinking=THINKING)
    client.messages.create(
        model=BUDGET_MODEL,
        max_tokens=2000,
        messages=HI,
        tools=[WEATHER],
        thinking=THINKING,
        tool_choice={"type": "auto"},
    )
