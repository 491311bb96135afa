"""AWS Bedrock through real Envoy with the official openai and anthropic SDKs as clients: Converse
and ConverseStream (tool calls streamed) for OpenAI chat and Anthropic Messages, embeddings through
InvokeModel (Titan, Cohere), Anthropic count_tokens through CountTokens (AWSBedrock and
AWSAnthropic), SigV4 over the final request, usage in the access log, errors in the client's shape
typed by x-amzn-errortype, and cross-provider failover on throttling.

The provider is aigw_fakes.BedrockFake, a stand-in that recomputes every SigV4 signature with
botocore from the request as it arrived (a wrong key, body, path or host is a 403 like AWS's),
validates Converse bodies as Bedrock does, and streams real event-stream frames written in pieces
that cross frame boundaries."""

from __future__ import annotations

import base64
import json
from typing import Any

import anthropic
import openai
import pydantic
import pytest

from aigw_fakes import BedrockFake, OpenAIFake
from aigw_fakes.bedrock import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY
from tests.e2e.harness import resources
from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.providers import handler_provider
from tests.e2e.harness.resources import NAMESPACE, Ref, Route, Rule

MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
OPUS = "us.anthropic.claude-opus-4-7"  # thinks adaptively only: a thinking budget is its 400
OPENAI_KEY = "sk-openai-fallback"
TITAN = "amazon.titan-embed-text-v2:0"
COHERE_EMBED = "cohere.embed-english-v3"
ROUTES = Route(
    "bedrock",
    [
        Rule([MODEL], [Ref("bedrock")]),
        Rule(
            ["nova-then-openai"],
            [Ref("bedrock", model_name_override="amazon.nova-micro-v1:0"), Ref("openai", priority=1)],
        ),
        Rule(["titan"], [Ref("bedrock", model_name_override=TITAN)]),
        Rule(["cohere-embed"], [Ref("bedrock", model_name_override=COHERE_EMBED)]),
        Rule(["claude-invoke"], [Ref("claude", model_name_override=MODEL)]),
        Rule(["opus"], [Ref("bedrock", model_name_override=OPUS)]),
        Rule(["opus-invoke"], [Ref("claude", model_name_override=OPUS)]),
        Rule(["nova"], [Ref("bedrock", model_name_override="amazon.nova-micro-v1:0")]),
    ],
)
CHAT = [{"role": "user", "content": "hello there"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _aws_policy(backend: str, key_id: str, secret: str, region: str = "us-east-1", token: str = "") -> str:
    credentials = f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"
    if token:
        credentials += f"aws_session_token = {token}\n"
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: {backend}-aws, namespace: {NAMESPACE}}}
spec:
  targetRefs:
    - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {backend}}}
  type: AWSCredentials
  awsCredentials:
    region: {region}
    credentialsFile:
      secretRef: {{name: {backend}-aws}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {backend}-aws, namespace: {NAMESPACE}}}
stringData:
  credentials: {json.dumps(credentials)}
"""


def _docs(bedrock_port: int, openai_port: int, secret: str = TEST_SECRET_ACCESS_KEY) -> tuple[str, ...]:
    return (
        ROUTES.yaml(),
        resources.backend("bedrock", bedrock_port, "AWSBedrock"),
        _aws_policy("bedrock", TEST_ACCESS_KEY_ID, secret),
        resources.backend("openai", openai_port),
        resources.api_key("openai", OPENAI_KEY),
        resources.backend("claude", bedrock_port, "AWSAnthropic"),
        _aws_policy("claude", TEST_ACCESS_KEY_ID, secret),
    )


@pytest.fixture
async def providers():
    bedrock = await BedrockFake().start()
    fallback = await OpenAIFake(api_key=OPENAI_KEY).start()
    try:
        yield bedrock, fallback
    finally:
        await bedrock.stop()
        await fallback.stop()


async def test_converse_and_stream_with_tools_signed_and_metered(providers) -> None:
    bedrock, _ = providers
    async with run_gateway(*_docs(bedrock.port, 1)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)
        resp = await client.chat.completions.create(model=MODEL, messages=CHAT)
        assert resp.choices[0].message.content and resp.choices[0].finish_reason == "stop"
        assert resp.usage is not None and resp.usage.prompt_tokens > 0

        stream = await client.chat.completions.create(
            model=MODEL, messages=CHAT, tools=[WEATHER], stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        assert calls and calls[0].function.name == "get_weather"
        arguments = "".join(tc.function.arguments or "" for tc in calls)
        assert json.loads(arguments)["city"]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["tool_calls"]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

        # The answer to the tool call: Bedrock needs toolConfig with the tool history (sent).
        history = [
            *CHAT,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": calls[0].id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
                ],
            },
            {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"},
        ]
        final = await client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER])
        assert final.choices[0].message.content

        assert [c.operation for c in bedrock.calls] == ["Converse", "ConverseStream", "Converse"]
        assert {c.model_id for c in bedrock.calls} == {MODEL}
        assert all(c.access_key_id == TEST_ACCESS_KEY_ID for c in bedrock.calls)
        for seen in bedrock.requests:
            assert seen.header("x-api-key") is None and "client-key" not in json.dumps(seen.headers)
        entries = await gw.access_log.wait_for(3)
        assert [e["gen_ai.usage.input_tokens"] > 0 for e in entries] == [True] * 3
        assert all(e["path"] == "/v1/chat/completions" for e in entries)


class City(pydantic.BaseModel):
    city: str
    population: int


async def test_reasoning_effort_and_structured_output_reach_claude_and_nova(providers) -> None:
    """OpenAI's reasoning_effort becomes adaptive thinking with an effort on Opus 4.7 (Converse and
    InvokeModel alike; a budget would be its 400), and `chat.completions.parse(response_format=...)`
    becomes Converse's outputConfig.textFormat or Claude's output_config.format. An Anthropic
    client's output_config reaches Converse too: before, it was dropped and the answer was prose."""
    bedrock, _ = providers
    async with run_gateway(*_docs(bedrock.port, 1)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        for model, operation in (("opus", "Converse"), ("opus-invoke", "InvokeModel")):
            reply = await client.chat.completions.create(model=model, messages=CHAT, reasoning_effort="xhigh")
            assert reply.choices[0].message.content
            call = bedrock.calls[-1]
            assert call.operation == operation and call.model_id == OPUS
            if operation == "Converse":
                assert call.body["additionalModelRequestFields"]["thinking"] == {"type": "adaptive"}
                assert call.body["outputConfig"] == {"effort": "xhigh"}
            else:
                assert call.body["thinking"] == {"type": "adaptive"}
                assert call.body["output_config"] == {"effort": "xhigh"}

        for model in ("nova", "opus", "opus-invoke"):
            parsed = await client.chat.completions.parse(model=model, messages=CHAT, response_format=City)
            assert isinstance(parsed.choices[0].message.parsed, City), model

        claude_code = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0)
        schema = City.model_json_schema()
        msg = await claude_code.messages.create(
            model="opus",
            max_tokens=512,
            messages=CHAT,
            extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}, "effort": "low"}},
        )
        assert City.model_validate_json(msg.content[-1].text)
        assert bedrock.calls[-1].body["outputConfig"]["effort"] == "low"


async def test_a_wrong_key_is_an_openai_shaped_403(providers) -> None:
    bedrock, _ = providers
    async with run_gateway(*_docs(bedrock.port, 1, secret="not-the-secret")) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await client.chat.completions.create(model=MODEL, messages=CHAT)
        assert "signature" in denied.value.message.lower()
        assert "not-the-secret" not in json.dumps(denied.value.body)


async def test_throttled_bedrock_fails_over_to_openai(providers) -> None:
    """Priority 0 is Bedrock, throttled (429); priority 1 is OpenAI: the client gets OpenAI's answer
    in OpenAI's shape, each provider having seen its own credential only."""
    bedrock, fallback = providers
    bedrock.always_fail(429)
    async with run_gateway(*_docs(bedrock.port, fallback.port)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        resp = await client.chat.completions.create(model="nova-then-openai", messages=CHAT)
        assert resp.choices[0].message.content
        [throttled] = bedrock.requests
        assert throttled.header("authorization", "").startswith("AWS4-HMAC-SHA256 ")
        [served] = fallback.requests
        assert served.header("authorization") == f"Bearer {OPENAI_KEY}"
        assert served.header("x-amz-date") is None and served.header("x-amz-security-token") is None


async def test_openai_embeddings_to_titan_and_cohere(providers) -> None:
    """The openai SDK asks for base64 by default and decodes float32: the vectors it returns are
    Bedrock's, in order, with the usage Bedrock reported (Titan's body, Cohere's header)."""
    bedrock, _ = providers
    async with run_gateway(*_docs(bedrock.port, 1)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)
        titan = await client.embeddings.create(model="titan", input="hello world", dimensions=256)
        assert len(titan.data) == 1 and len(titan.data[0].embedding) == 256
        assert titan.model == TITAN and titan.usage.prompt_tokens > 0
        floats = await client.embeddings.create(
            model="titan", input="hello world", dimensions=256, encoding_format="float"
        )
        assert floats.data[0].embedding == pytest.approx(titan.data[0].embedding, abs=1e-6)
        cohere = await client.embeddings.create(model="cohere-embed", input=["a cat", "a dog"])
        assert [d.index for d in cohere.data] == [0, 1] and len(cohere.data[0].embedding) == 1024
        assert cohere.data[0].embedding != cohere.data[1].embedding
        assert cohere.usage.prompt_tokens > 0
        with pytest.raises(openai.UnprocessableEntityError, match="one text per request"):
            await client.embeddings.create(model="titan", input=["a", "b"])

        titan_call, _, cohere_call = bedrock.calls
        assert (titan_call.operation, titan_call.model_id) == ("InvokeModel", TITAN)
        assert titan_call.body == {"inputText": "hello world", "dimensions": 256, "normalize": True}
        assert cohere_call.body["texts"] == ["a cat", "a dog"] and cohere_call.body["input_type"] == "search_document"
        entries = await gw.access_log.wait_for(4)
        assert [e["gen_ai.usage.input_tokens"] > 0 for e in entries[:3]] == [True] * 3


async def test_anthropic_sdk_messages_stream_with_a_tool_call_to_converse(providers) -> None:
    bedrock, _ = providers
    async with run_gateway(*_docs(bedrock.port, 1)) as gw:
        client = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="client-key", max_retries=0)
        plain = await client.messages.create(model=MODEL, max_tokens=200, messages=CHAT)
        assert plain.content[0].type == "text" and plain.content[0].text == f"Fake {MODEL} reply to: hello there"
        assert plain.stop_reason == "end_turn" and plain.usage.input_tokens > 0

        tool = {
            "name": "get_weather",
            "description": "Weather of a city",
            "input_schema": WEATHER["function"]["parameters"],
        }
        async with client.messages.stream(model=MODEL, max_tokens=300, messages=CHAT, tools=[tool]) as stream:
            kinds = [event.type async for event in stream]
            message = await stream.get_final_message()
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
        [use] = [b for b in message.content if b.type == "tool_use"]
        assert use.name == "get_weather" and use.input["city"]
        assert message.stop_reason == "tool_use" and message.usage.output_tokens > 0

        history = [
            *CHAT,
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
        ]
        final = await client.messages.create(model=MODEL, max_tokens=200, messages=history, tools=[tool])
        assert final.content[-1].type == "text" and final.stop_reason == "end_turn"

        assert [c.operation for c in bedrock.calls] == ["Converse", "ConverseStream", "Converse"]
        assert bedrock.calls[2].body["messages"][2]["content"][0]["toolResult"]["toolUseId"] == use.id
        for seen in bedrock.requests:
            assert seen.header("x-api-key") is None and seen.header("anthropic-version") is None
            assert seen.header("authorization", "").startswith("AWS4-HMAC-SHA256 ")
        entries = await gw.access_log.wait_for(3)
        assert all(e["gen_ai.usage.input_tokens"] > 0 for e in entries)


@pytest.mark.parametrize(("model", "schema_input"), [(MODEL, "converse"), ("claude-invoke", "invokeModel")])
async def test_anthropic_sdk_count_tokens(providers, model: str, schema_input: str) -> None:
    """AWSBedrock counts the Converse input, AWSAnthropic the InvokeModel body; both by the bare
    model id (CountTokens refuses inference profile ids): the count is the one the fake reports for
    the same request."""
    bedrock, _ = providers
    async with run_gateway(*_docs(bedrock.port, 1)) as gw:
        client = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="client-key", max_retries=0)
        counted = await client.messages.count_tokens(model=model, messages=CHAT, system="be brief")
        assert counted.input_tokens > 0
        [call] = bedrock.calls
        assert call.operation == "CountTokens" and call.model_id == "anthropic.claude-3-5-haiku-20241022-v1:0"
        assert set(call.body["input"]) == {schema_input}
        created = await client.messages.create(model=model, max_tokens=50, messages=CHAT, system="be brief")
        assert created.usage.input_tokens == counted.input_tokens


async def test_a_throttled_bedrock_is_a_rate_limit_error_naming_the_bedrock_type(providers) -> None:
    bedrock, _ = providers
    bedrock.always_fail(429)
    async with run_gateway(*_docs(bedrock.port, 1)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model=MODEL, messages=CHAT)
        assert limited.value.status_code == 429
        assert limited.value.code == "ThrottlingException" and limited.value.type == "rate_limit_error"
        with pytest.raises(openai.RateLimitError):
            await client.embeddings.create(model="titan", input="x")
        claude = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0)
        with pytest.raises(anthropic.RateLimitError) as anthropic_limited:
            await claude.messages.create(model=MODEL, max_tokens=10, messages=CHAT)
        assert anthropic_limited.value.body["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ({"x-fake-stream-error-after": "3", "x-fake-stream-error-type": "throttlingException"}, "Too many requests"),
        ({"x-fake-stream-end-after": "3"}, "before the response was complete"),
        # Paced, so that the events before the cut reach the translator (and are metered) first.
        ({"x-fake-stream-abort-after": "3", "x-fake-stream-interval-ms": "50"}, None),
    ],
    ids=["exception-frame", "ended-early", "connection-cut"],
)
async def test_a_broken_converse_stream_never_looks_whole_to_the_anthropic_sdk(
    providers, fault: dict[str, str], words: str | None
) -> None:
    """An exception frame or a stream Bedrock ends early: the anthropic SDK gets an `error` event
    (APIError), never a message_stop that would make the answer look whole. A connection cut
    mid-stream is passed on as a cut (Envoy resets the client's stream). No case hangs."""
    bedrock, _ = providers
    async with run_gateway(*_docs(bedrock.port, 1)) as gw:
        client = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0, timeout=20)
        expected: type[Exception] = anthropic.APIError if words else Exception
        with pytest.raises(expected) as failed:
            async with client.messages.stream(model=MODEL, max_tokens=64, messages=CHAT, extra_headers=fault) as stream:
                await stream.get_final_message()
        assert not isinstance(failed.value, anthropic.APITimeoutError)
        if words:
            assert words in str(failed.value)
        [entry] = await gw.access_log.wait_for(1)
        assert entry["usage_estimated"] is True


async def test_anthropic_sdk_gets_the_matched_stop_sequence(providers) -> None:
    """Converse names the stop sequence that matched only when asked (additionalModelResponseFieldPaths
    ["/stop_sequence"], Claude models): the anthropic SDK sees it in the answer and in the stream."""
    bedrock, _ = providers
    async with run_gateway(*_docs(bedrock.port, 1)) as gw:
        client = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0)
        kw: dict[str, Any] = {"model": MODEL, "max_tokens": 64, "messages": CHAT}
        answer = await client.messages.create(**kw, stop_sequences=["nope", "there"])
        assert (answer.stop_reason, answer.stop_sequence) == ("stop_sequence", "there")
        assert answer.content[0].type == "text" and answer.content[0].text.endswith("hello ")
        async with client.messages.stream(**kw, stop_sequences=["there"]) as stream:
            streamed = await stream.get_final_message()
        assert (streamed.stop_reason, streamed.stop_sequence) == ("stop_sequence", "there")
        unmatched = await client.messages.create(**kw, stop_sequences=["absent"])
        assert (unmatched.stop_reason, unmatched.stop_sequence) == ("end_turn", None)
        plain = await client.messages.create(**kw)
        assert plain.stop_sequence is None
        asked = [c.body.get("additionalModelResponseFieldPaths") for c in bedrock.calls]
        assert asked == [["/stop_sequence"]] * 3 + [None]


def _events_before_metadata(bedrock: BedrockFake) -> int:
    """How many ConverseStream events the fake sends for CHAT (maxTokens 64) before its metadata."""
    body = {"messages": [{"role": "user", "content": [{"text": "hello there"}]}], "inferenceConfig": {"maxTokens": 64}}
    names = [name for name, _ in bedrock.converse_events(bedrock.plan(MODEL, body))]
    assert names[-2:] == ["messageStop", "metadata"]
    return len(names) - 1


async def test_a_converse_stream_cut_before_its_metadata_is_an_error_for_both_sdks(providers) -> None:
    """Bedrock always ends a ConverseStream with metadata (the usage) after messageStop: a stream cut
    between the two is incomplete. Both SDKs get an error event (never [DONE] or message_stop) after
    the answer's text, and the usage is an estimate."""
    bedrock, _ = providers
    cut = {"x-fake-stream-end-after": str(_events_before_metadata(bedrock))}
    async with run_gateway(*_docs(bedrock.port, 1)) as gw:
        claude = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0, timeout=20)
        kinds: list[str] = []
        with pytest.raises(anthropic.APIError, match="before the response was complete"):
            async with claude.messages.stream(model=MODEL, max_tokens=64, messages=CHAT, extra_headers=cut) as stream:
                async for event in stream:
                    kinds.append(event.type)
        assert kinds[-1] == "content_block_stop" and "message_delta" not in kinds and "message_stop" not in kinds
        assert "text" in kinds  # the answer's text went out before the cut

        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=20)
        chunks = []
        with pytest.raises(openai.APIError, match="before the response was complete"):
            chat_stream = await client.chat.completions.create(
                model=MODEL, messages=CHAT, max_tokens=64, stream=True, extra_headers=cut
            )
            async for chunk in chat_stream:
                chunks.append(chunk)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finishes == ["stop"]  # the cut came after messageStop
        entries = await gw.access_log.wait_for(2)
        assert [e["usage_estimated"] for e in entries] == [True, True]
        assert all(e["gen_ai.usage.output_tokens"] > 0 for e in entries)


PDF = b"%PDF-1.4 a stand-in for a PDF document"


def file_part(data: bytes, media_type: str, filename: str) -> dict:
    """An OpenAI chat `file` content part, as the OpenAI SDK's users write it (a base64 data URL)."""
    encoded = base64.b64encode(data).decode()
    return {"type": "file", "file": {"filename": filename, "file_data": f"data:{media_type};base64,{encoded}"}}


async def test_openai_file_parts_reach_converse_as_document_blocks(providers) -> None:
    """Found by review: an OpenAI `file` part (a PDF) was refused (422) for Bedrock, which takes
    documents. Each file is a DocumentBlock of its format, named as Converse allows (the fake refuses
    a name with a dot, as Converse does) and numbered: two documents may not share a name."""
    bedrock, _ = providers
    async with run_gateway(*_docs(bedrock.port, 1)) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)
        content = [
            {"type": "text", "text": "compare these"},
            file_part(PDF, "application/pdf", "report.2025.pdf"),
            file_part(b"plain words", "text/plain", "notes.txt"),
        ]
        reply = await client.chat.completions.create(
            model="nova-then-openai", messages=[{"role": "user", "content": content}]
        )
        assert reply.choices[0].message.content
        with pytest.raises(openai.UnprocessableEntityError) as refused:  # OpenAI's Files API: not Bedrock's
            await client.chat.completions.create(
                model="nova-then-openai",
                messages=[{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}],
            )
        assert "file_id" in refused.value.message
    [sent] = [r for r in bedrock.requests if r.path.endswith("/converse")]
    blocks = sent.body["messages"][0]["content"]
    assert blocks[0] == {"text": "compare these"}
    assert blocks[1]["document"] == {
        "format": "pdf",
        "name": "report 2025 pdf 1",
        "source": {"bytes": base64.b64encode(PDF).decode()},
    }
    assert blocks[2]["document"]["format"] == "txt" and blocks[2]["document"]["name"] == "notes txt 2"


async def test_a_signature_error_quoting_the_request_reaches_the_client_without_credentials() -> None:
    """A security review: AWS's SignatureDoesNotMatch quotes the request it checked, and a proxy
    before Bedrock may quote its headers; the client got the SigV4 Authorization header (access key
    id, signature) and the session token whole, streamed or not, where a configured API key was
    scrubbed. A handler stands in for Bedrock here: it answers AWS's 403 quoting what it was sent."""
    from aiohttp import web

    token = "IQoJb3JpZ2luX2VjEAoaCXVzLWVhc3QtMSJHMEUCIQD-session-token"
    seen: list[dict[str, str]] = []

    async def quoting(request: web.Request) -> web.Response:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        quoted = "\n".join(f"{k.lower()}:{v}" for k, v in request.headers.items())
        message = f"The request signature we calculated does not match. The Canonical String was\n{quoted}"
        headers = {"x-amzn-errortype": "InvalidSignatureException:http://internal.amazon.com/coral/com.amazon.coral/"}
        return web.json_response({"message": message}, status=403, headers=headers)

    async with handler_provider(quoting) as port:
        docs = (
            Route("quoting", [Rule([MODEL], [Ref("bedrock")])]).yaml(),
            resources.backend("bedrock", port, "AWSBedrock"),
            _aws_policy("bedrock", TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, token=token),
        )
        async with run_gateway(*docs) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)
            for stream in (False, True):
                with pytest.raises(openai.APIStatusError) as refused:
                    await client.chat.completions.create(model=MODEL, messages=CHAT, stream=stream)
                assert refused.value.status_code == 403
                text = json.dumps(refused.value.body)
                signature = seen[-1]["authorization"].rsplit("Signature=", 1)[1]
                assert seen[-1]["x-amz-security-token"] == token  # it was sent, and quoted
                for secret in (token, signature, TEST_ACCESS_KEY_ID):
                    assert secret not in text, f"stream={stream}: {text}"
                assert "x-amz-security-token:[REDACTED]" in text and "Signature=[REDACTED]" in text
