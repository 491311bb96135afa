"""Through real Envoy with the official SDKs: requests real providers reject are fixed or refused
clearly, and answers the gateway cannot translate are never a 200 (issue 7, sections 4 and 5)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import anthropic
import openai
import orjson
import pytest

from tests.e2e.harness import resources
from tests.e2e.harness.gateway import run_gateway
from tests.e2e.harness.providers import AZURE_KEY, GLOBAL_COSTS, CannedProvider, Fakes
from tests.e2e.harness.resources import Ref, Route, Rule

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "hi"}]


class Checks:
    """Several independent checks on one gateway (starting one costs seconds): each runs even when
    an earlier one failed, and the test fails naming every check that did."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    @contextlib.contextmanager
    def check(self, name: str) -> Iterator[None]:
        try:
            yield
        except (Exception, pytest.fail.Exception) as exc:  # each is reported below, with its check
            self.failed.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")

    def assert_all_passed(self) -> None:
        assert not self.failed, "\n".join(self.failed)


# Models the standard CHAT route does not have: a reasoning model on the OpenAI fake (it rejects
# max_tokens, as o-series and gpt-5 do) and a classic Azure deployment on an api-version from
# before stream_options existed.
EXTRA = Route(
    "extra",
    [
        Rule(["gpt-5"], [Ref("openai")]),
        Rule(["azure-old"], [Ref("azure-old", model_name_override="gpt-4o-mini")]),
    ],
)


def _extra_resources(fakes: Fakes) -> tuple[str, ...]:
    return (
        EXTRA.yaml(),
        resources.backend("azure-old", fakes.azure.port, "AzureOpenAI", version="2024-06-01", hostname="localhost"),
        resources.api_key("azure-old", AZURE_KEY, "AzureAPIKey"),
    )


async def test_requests_real_providers_reject_are_fixed(fakes: Fakes) -> None:
    checks = Checks()
    async with run_gateway(*fakes.resources(), *_extra_resources(fakes), global_costs=GLOBAL_COSTS) as gw:
        claude_code = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0)
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
        with checks.check("Claude Code on gpt-5: max_completion_tokens, opaque user"):
            msg = await claude_code.messages.create(
                model="gpt-5", max_tokens=64, messages=HI, metadata={"user_id": "user_" + "a" * 64 + "_session_x"}
            )
            assert msg.content[0].text
            sent = fakes.openai.requests[-1].body
            assert sent["max_completion_tokens"] == 64 and "max_tokens" not in sent
            assert sent["user"].startswith("aigw-") and len(sent["user"]) <= 64

        with checks.check("temperature with top_p 1 (as many OpenAI clients send) to Claude"):
            reply = await client.chat.completions.create(
                model="claude", messages=HI, temperature=0.2, top_p=1, user="someone@example.com", stop=["", "END"]
            )
            assert reply.choices[0].message.content
            sent = fakes.anthropic.requests[-1].body
            assert sent["temperature"] == 0.2 and "top_p" not in sent
            assert "@" not in sent["metadata"]["user_id"] and sent["stop_sequences"] == ["END"]

        tools = [{"type": "function", "function": {"name": "get", "parameters": {"type": "object", "properties": {}}}}]
        with checks.check("reasoning_effort with a forced tool_choice to Claude is a clear 422"):
            with pytest.raises(openai.UnprocessableEntityError) as err:
                await client.chat.completions.create(
                    model="claude", messages=HI, reasoning_effort="low", tools=tools, tool_choice="required"
                )
            assert "tool_choice" in err.value.body["message"]

        with checks.check("reasoning_effort in a tool loop to Claude: answered, without thinking"):
            call = {"id": "c1", "type": "function", "function": {"name": "get", "arguments": "{}"}}
            loop = [*HI, {"role": "assistant", "content": None, "tool_calls": [call]}]
            loop.append({"role": "tool", "tool_call_id": "c1", "content": "42"})
            reply = await client.chat.completions.create(
                model="claude", messages=loop, reasoning_effort="medium", tools=tools
            )
            assert reply.choices[0].message.content
            assert "thinking" not in fakes.anthropic.requests[-1].body

        with checks.check("logprobs to Claude is a clear 422, not a silent drop"):
            with pytest.raises(openai.UnprocessableEntityError) as err:
                await client.chat.completions.create(model="claude", messages=HI, logprobs=True)
            assert "logprobs" in err.value.body["message"]

        with checks.check("stream to an Azure api-version from before stream_options"):
            stream = await client.chat.completions.create(model="azure-old", messages=HI, stream=True)
            chunks = [c async for c in stream]
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert "stream_options" not in fakes.azure.requests[-1].body

        with checks.check("an OpenAI client's current parameters to an Azure api-version from before them"):
            # What LangChain's stream usage and o-series clients send; that api-version answers 400.
            stream = await client.chat.completions.create(
                model="azure-old", messages=HI, stream=True, stream_options={"include_usage": True}
            )
            chunks = [c async for c in stream]
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert "stream_options" not in fakes.azure.requests[-1].body
            reply = await client.chat.completions.create(model="azure-old", messages=HI, max_completion_tokens=20)
            assert reply.choices[0].message.content
            sent = fakes.azure.requests[-1].body
            assert sent["max_tokens"] == 20 and "max_completion_tokens" not in sent

        with checks.check("a current Azure api-version is asked for usage; the client is not shown it"):
            stream = await client.chat.completions.create(model="azure-gpt", messages=HI, stream=True)
            chunks = [c async for c in stream]
            assert fakes.azure.requests[-1].body["stream_options"] == {"include_usage": True}
            assert chunks and all(c.usage is None for c in chunks)
    checks.assert_all_passed()


COMPLETION = orjson.dumps(
    {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "big",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
)
# A backend that answers any chat request at once, whatever its size.
BIG = Route("big", [Rule(["big"], [Ref("canned")])])


async def test_client_errors_models_and_untranslatable_answers(fakes: Fakes) -> None:
    # The Anthropic backend answers 200 with a page no translator can read (a proxy's, say).
    checks = Checks()
    canned = await CannedProvider(200, "text/html", b"<html>maintenance</html>").start()
    quick = await CannedProvider(200, "application/json", COMPLETION).start()
    try:
        big_route = (BIG.yaml(), resources.backend("canned", quick.port))
        async with run_gateway(*fakes.resources(anthropic_port=canned.port), *big_route) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
            claude = anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0)
            with checks.check("a 2xx body that cannot be translated is a 502, never a 200"):
                with pytest.raises(openai.APIStatusError) as err:
                    await client.chat.completions.create(model="claude", messages=HI)
                assert err.value.status_code == 502
                assert err.value.body["type"] == "server_error"

            with checks.check('"stream": "true" (a string) is a 400 before anything streams'):
                with pytest.raises(openai.BadRequestError) as err:
                    await client.chat.completions.create(model="gpt-test", messages=HI, extra_body={"stream": "true"})
                assert "'stream' must be a boolean" in err.value.body["message"]

            with checks.check('{"model": 5} says the model must be a string'):
                with pytest.raises(openai.BadRequestError) as err:
                    await client.chat.completions.create(model=5, messages=HI)  # type: ignore[arg-type]
                assert "'model' must be a string" in err.value.body["message"]

            with checks.check("models.retrieve (OpenAI SDK)"):
                model = await client.models.retrieve("claude")
                assert model.id == "claude" and model.object == "model"
                with pytest.raises(openai.NotFoundError) as err:
                    await client.models.retrieve("nope")
                assert err.value.body["code"] == "model_not_found"

            with checks.check("models.retrieve (Anthropic SDK)"):
                info = await claude.models.retrieve("gpt-test")
                assert info.id == "gpt-test" and info.type == "model"
                with pytest.raises(anthropic.NotFoundError) as aerr:
                    await claude.models.retrieve("nope")
                assert aerr.value.body["error"]["type"] == "not_found_error"

            with checks.check("a 40 MiB body (above the old 32 MiB gRPC limit, below the 50 MiB buffer)"):
                big = "x" * (40 * 1024 * 1024)
                reply = await client.chat.completions.create(model="big", messages=[{"role": "user", "content": big}])
                assert reply.choices[0].message.content == "ok"
    finally:
        await canned.stop()
        await quick.stop()
    checks.assert_all_passed()
