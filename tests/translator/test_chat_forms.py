"""Forms of an OpenAI chat request that every translating backend (Anthropic, Bedrock Converse,
Gemini) takes alike, from a provider-API review: a `data:image/jpg` URL (what a client builds from
a .jpg file name), which Gemini refused with 400 "Unsupported MIME type", and OpenAI's deprecated
`functions` / `function_call`, which every path dropped silently (an answer without the functions,
or a history whose call was lost and whose result Gemini refused as orphaned)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from aigw_translator.errors import GatewayError
from aigw_translator.translators.anthropic_bedrock import messages_to_converse
from aigw_translator.translators.anthropic_openai import messages_to_chat
from aigw_translator.translators.base import TranslationError
from aigw_translator.translators.openai_anthropic import chat_to_messages
from aigw_translator.translators.openai_bedrock import chat_to_converse
from aigw_translator.translators.openai_gemini import chat_to_gemini

TRANSLATORS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "anthropic": lambda req: chat_to_messages(req, "claude-sonnet-4-5"),
    "bedrock": lambda req: chat_to_converse(req, "amazon.nova-micro-v1:0"),
    "gemini": lambda req: chat_to_gemini(req, "gemini-2.5-flash"),
}
WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def _image_media_type(backend: str, out: dict[str, Any]) -> str:
    turn = out["contents"][0]["parts"] if backend == "gemini" else out["messages"][0]["content"]
    [part] = [p for p in turn if "image" in p or "inlineData" in p or p.get("type") == "image"]
    if backend == "anthropic":
        return str(part["source"]["media_type"])
    if backend == "bedrock":
        return f"image/{part['image']['format']}"
    return str(part["inlineData"]["mimeType"])


@pytest.mark.parametrize("backend", TRANSLATORS)
@pytest.mark.parametrize("written", ["image/jpg", "image/pjpeg", "IMAGE/JPEG"])
def test_a_jpeg_written_otherwise_is_sent_as_image_jpeg(backend: str, written: str) -> None:
    content = [
        {"type": "text", "text": "what is it?"},
        {"type": "image_url", "image_url": {"url": f"data:{written};base64,/9j/4AAQ"}},
    ]
    out = TRANSLATORS[backend]({"model": "m", "messages": [{"role": "user", "content": content}]})
    assert _image_media_type(backend, out) == "image/jpeg"


@pytest.mark.parametrize("backend", TRANSLATORS)
@pytest.mark.parametrize("fields", [{"function_call": "none"}, {"function_call": "auto"}, {"functions": []}])
def test_a_functions_default_asks_for_nothing(backend: str, fields: dict[str, Any]) -> None:
    """Older clients send function_call "none" or "auto" by default: no functions, nothing refused,
    and no tools sent."""
    out = TRANSLATORS[backend]({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields})
    assert not {"tools", "toolConfig", "tool_choice"} & out.keys()


@pytest.mark.parametrize("backend", TRANSLATORS)
@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"functions": [WEATHER]}, "functions (OpenAI's deprecated form of tools)"),
        ({"functions": [WEATHER], "function_call": {"name": "get_weather"}}, "functions"),
        ({"function_call": {"name": "get_weather"}}, "function_call (OpenAI's deprecated form of tools)"),
        (
            {
                "messages": [
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": "{}"}},
                    {"role": "function", "name": "get_weather", "content": "sunny"},
                ]
            },
            "messages[1].function_call (OpenAI's deprecated form of tool_calls)",
        ),
    ],
)
def test_the_deprecated_functions_form_is_a_422_naming_the_form_to_send(
    backend: str, fields: dict[str, Any], named: str
) -> None:
    req = {"model": "m", "messages": [{"role": "user", "content": "weather in Paris?"}], **fields}
    with pytest.raises(TranslationError) as refused:
        TRANSLATORS[backend](req)
    assert refused.value.status == 422
    assert refused.value.message.startswith(named) and "send tool" in refused.value.message


@pytest.mark.parametrize(
    ("model", "folded"),
    [
        ("amazon.titan-text-premier-v1:0", True),
        ("us.mistral.mixtral-8x7b-instruct-v0:1", True),
        ("cohere.command-text-v14", True),
        ("amazon.nova-micro-v1:0", False),
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", False),
    ],
)
def test_a_bedrock_model_that_takes_no_system_prompt_reads_it_in_the_first_user_turn(model: str, folded: bool) -> None:
    """A provider-API review: Converse refuses `system` for Titan Text, Mistral 7B and Mixtral
    Instruct and Cohere Command (AWS's table of Converse features), so a chat with a system message
    was their 400; their system text goes first in the first user turn instead."""
    req = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": "answer in French"},
            {"role": "user", "content": "hello"},
        ],
    }
    out = chat_to_converse(req, model)
    if folded:
        assert "system" not in out
        assert out["messages"][0]["content"] == [{"text": "be brief\n\nanswer in French"}, {"text": "hello"}]
    else:
        assert out["system"] == [{"text": "be brief"}, {"text": "answer in French"}]
        assert out["messages"][0]["content"] == [{"text": "hello"}]


def test_an_anthropic_client_s_system_prompt_is_placed_alike() -> None:
    """The same on the Anthropic Messages front to Converse (a diff review: only the OpenAI front
    placed it, and Titan refused the Anthropic client's `system`)."""
    req = {"model": "m", "max_tokens": 9, "system": "be brief", "messages": [{"role": "user", "content": "hello"}]}
    titan = messages_to_converse(req, "amazon.titan-text-express-v1")
    assert "system" not in titan
    assert titan["messages"][0]["content"] == [{"text": "be brief"}, {"text": "hello"}]
    assert messages_to_converse(req, "amazon.nova-micro-v1:0")["system"] == [{"text": "be brief"}]


@pytest.mark.parametrize("field", ["metadata", "tool_choice", "thinking", "output_config"])
@pytest.mark.parametrize("translate", [messages_to_chat, messages_to_converse], ids=["openai", "converse"])
def test_an_anthropic_object_field_of_another_type_is_anthropic_s_400(field: str, translate: Any) -> None:
    """A provider-API review: `"metadata": "u1"` was a 422 "request cannot be translated: invalid
    AttributeError" on an OpenAI backend and accepted on Converse, `"tool_choice": "auto"` ignored
    on one and a 422 on the other; Anthropic answers each with a 400."""
    req = {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}], field: "auto"}
    with pytest.raises(GatewayError) as refused:
        translate(req, "claude-sonnet-4-5")
    assert refused.value.status == 400 and refused.value.message.startswith(f"{field}: Input should be a valid dict")
