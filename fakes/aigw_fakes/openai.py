"""A stand-in for the OpenAI API (not OpenAI): an aiohttp server on loopback for tests and demos.

It answers deterministically and rejects what OpenAI rejects, with OpenAI's error shape
``{"error": {"message", "type", "param", "code"}}`` and status. What it checks:

* Auth: ``Authorization: Bearer <key>`` must equal the configured key (401 ``invalid_api_key``).
* ``POST {prefix}/chat/completions``: ``model`` (string), ``messages`` (non-empty list of objects;
  roles developer/system/user/assistant/tool/function; content shapes per role; tool messages need
  ``tool_call_id`` and must answer a preceding assistant ``tool_calls``; assistant ``tool_calls`` must
  be well formed and answered before the next non-tool message), ``tools`` / ``tool_choice`` shapes,
  ``n`` (1..128), ``temperature`` (0..2), ``top_p`` (0..1), ``stream_options`` only with ``stream``,
  ``stop`` (at most 4), ``reasoning_effort`` only for o-series and gpt-5 models, ``temperature`` and
  ``top_p`` other than 1 refused by those while they reason (gpt-5.1 and later: unless reasoning_effort
  is none, their default), and unknown top-level fields (``Unrecognized request argument supplied: X``).
  ``out_of_credit``: every authenticated request gets the 429 ``insufficient_quota`` of an account
  without credit.
  Answers: text derived from the model and the last user message, or, with tools and
  ``tool_choice`` not ``none`` (and the last message from the user, or a forced choice), a call
  to the named/first tool with arguments built from its JSON Schema. ``max_tokens`` /
  ``max_completion_tokens`` truncate the text (``finish_reason: length``), ``stop`` ends it before the
  first stop sequence it holds (``finish_reason: stop``, the sequence left out). Streaming sends a
  role chunk, content pieces (or tool-call id/name then argument fragments), a finish chunk, a
  usage chunk with ``choices: []`` only when ``stream_options.include_usage``, then ``[DONE]``.
* ``POST {prefix}/completions``, ``{prefix}/embeddings`` (string / list / token arrays,
  ``encoding_format`` float or base64 = little-endian float32, ``dimensions`` only for
  text-embedding-3 models), ``{prefix}/responses`` (plain and streaming, text or function call),
  ``{prefix}/images/generations`` (``stream`` on gpt-image), ``{prefix}/audio/speech`` (bytes, or
  events with ``stream_format: sse``), the multipart ones (``file``/``image`` + ``model``):
  ``{prefix}/audio/transcriptions`` (``stream`` on gpt-4o-transcribe), ``/audio/translations``,
  ``/images/edits`` and ``/images/variations``, ``GET {prefix}/models`` and ``{prefix}/models/{id}``.

Stream chunks carry OpenAI's random ``obfuscation`` padding field unless
``stream_options.include_obfuscation`` is false (or the fake is built with ``obfuscation=False``).

Usage carries ``prompt_tokens_details.cached_tokens`` and ``completion_tokens_details.reasoning_tokens``
from the constructor (``cached_tokens=``, ``reasoning_tokens=``) so tests can check accounting.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import random
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .common import (
    FORM,
    INTERVAL_HEADER,
    JSON_BODY,
    JSON_ERROR,
    RAW_BODY,
    FakeProvider,
    SSEWriter,
    b64_float32_le,
    count_tokens,
    example_from_schema,
    fake_reply,
    parallel_tool_calls,
    random_id,
    split_fixed,
    split_words,
    stable_id,
    streams,
    truncate_words,
)

CHAT_FIELDS = frozenset(
    {
        "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
        "max_completion_tokens", "max_tokens", "messages", "metadata", "modalities", "model",
        "moderation", "n", "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key",
        "prompt_cache_options", "prompt_cache_retention", "reasoning_effort", "response_format",
        "safety_identifier", "seed", "service_tier", "stop", "store", "stream", "stream_options",
        "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
        "web_search_options",
    }
)  # fmt: skip
COMPLETION_FIELDS = frozenset(
    {
        "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "model", "n",
        "presence_penalty", "prompt", "seed", "stop", "stream", "stream_options", "suffix", "temperature",
        "top_p", "user",
    }
)  # fmt: skip
EMBEDDING_FIELDS = frozenset({"dimensions", "encoding_format", "input", "model", "user"})
RESPONSES_FIELDS = frozenset(
    {
        "access_programs", "background", "background_options", "context_management", "conversation", "image",
        "include", "input", "instructions", "moderation", "prompt_cache_options",
        "max_output_tokens", "max_tool_calls", "metadata", "model", "parallel_tool_calls",
        "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_retention", "reasoning",
        "safety_identifier", "service_tier", "store", "stream", "stream_options", "temperature", "text",
        "tool_choice", "tools", "top_logprobs", "top_p", "truncation", "user",
    }
)  # fmt: skip
ROLES = ("system", "assistant", "user", "function", "tool", "developer")
PART_TYPES = ("text", "image_url", "input_audio", "refusal", "audio", "file")
ROLE_PART_TYPES = {
    "system": ("text",),
    "developer": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
}
DEFAULT_MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1",
    "o3-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
    "gpt-image-1",
    "dall-e-3",
    "tts-1",
    "whisper-1",
    "gpt-3.5-turbo-instruct",
)
SPEECH_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
# 1x1 transparent PNG
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


class FakeAPIError(Exception):
    """An error the fake answers with (status + OpenAI error fields)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code


def _bad(message: str, param: str | None = None, code: str | None = None, status: int = 400) -> FakeAPIError:
    return FakeAPIError(status, message, param=param, code=code)


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _expect(v: Any, kind: str, param: str) -> None:
    ok = {
        "string": isinstance(v, str),
        "object": isinstance(v, dict),
        "array": isinstance(v, list),
        "integer": isinstance(v, int) and not isinstance(v, bool),
        "number": isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": isinstance(v, bool),
    }[kind]
    if not ok:
        article = "an" if kind[0] in "aeiou" else "a"
        got = _type_name(v)
        got_article = "an" if got[0] in "aeiou" else "a"
        raise _bad(
            f"Invalid type for '{param}': expected {article} {kind}, but got {got_article} {got} instead.",
            param,
            "invalid_type",
        )


def _range(v: Any, param: str, lo: float | None, hi: float | None, integer: bool = False) -> None:
    _expect(v, "integer" if integer else "number", param)
    what = "integer" if integer else "decimal"
    if lo is not None and v < lo:
        raise _bad(
            f"Invalid '{param}': {what} below minimum value. Expected a value >= {lo:g}, but got {v} instead.",
            param,
            f"{what}_below_min_value",
        )
    if hi is not None and v > hi:
        raise _bad(
            f"Invalid '{param}': {what} above maximum value. Expected a value <= {hi:g}, but got {v} instead.",
            param,
            f"{what}_above_max_value",
        )


def _supported(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + (", and " if len(quoted) > 2 else " and ") + quoted[-1]


def _invalid_value(v: Any, param: str, values: tuple[str, ...]) -> FakeAPIError:
    return _bad(f"Invalid value: '{v}'. Supported values are: {_supported(values)}.", param, "invalid_value")


def _missing(param: str) -> FakeAPIError:
    return _bad(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


# The most output tokens some of OpenAI's chat models take (what the API refuses above).
_OUTPUT_LIMITS = (
    (r"gpt-4o-2024-05-13$|gpt-4-turbo|gpt-3\.5-turbo", 4096),
    (r"gpt-4o|gpt-5-chat", 16384),
    (r"gpt-4\.1", 32768),
    (r"gpt-5", 128000),
    (r"o1-mini", 65536),
    (r"o1-preview", 32768),
    (r"o[134]", 100000),
)


def _within_output_limit(requested: int, model: str) -> None:
    base = model.rsplit("/", 1)[-1]
    limit = next((limit for pattern, limit in _OUTPUT_LIMITS if re.match(pattern, base)), None)
    if limit is not None and requested > limit:
        raise _bad(
            f"max_tokens is too large: {requested}. This model supports at most {limit} completion tokens, "
            f"whereas you provided {requested}.",
            "max_tokens",
            "invalid_value",
        )


def is_reasoning_model(model: str) -> bool:
    """o-series and gpt-5 models: no max_tokens, only the default temperature."""
    base = model.rsplit("/", 1)[-1]
    return bool(re.match(r"^(o\d|gpt-5)", base))


def text_of(content: Any) -> str:
    """Plain text of an OpenAI message content (string or list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for p in content:
            if isinstance(p, dict):
                if isinstance(p.get("text"), str):
                    out.append(p["text"])
                elif isinstance(p.get("refusal"), str):
                    out.append(p["refusal"])
        return " ".join(out)
    return ""


class OpenAIFake(FakeProvider):
    """Fake OpenAI API. ``fake.url`` is what to give the SDK as ``base_url``."""

    provider = "openai"

    def __init__(
        self,
        *,
        api_key: str | None = "sk-test",
        prefix: str = "/v1",
        name: str | None = None,
        models: list[str] | tuple[str, ...] | None = None,
        check_models: bool = False,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
        reply: str | Callable[[str, dict[str, Any]], str] | None = None,
        obfuscation: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = False,
    ) -> None:
        super().__init__(name=name, host=host, port=port, tls=tls)
        self.obfuscation = obfuscation
        self.api_key = api_key
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.models = list(models) if models is not None else list(DEFAULT_MODELS)
        self.check_models = check_models or models is not None
        self.cached_tokens = cached_tokens
        self.reasoning_tokens = reasoning_tokens
        self.reply = reply
        # Set by a test: speech audio after its first part waits for it (it reaches the client as made).
        self.speech_gate: asyncio.Event | None = None
        # Set by a test: the account has no credit left, and every authenticated request gets the 429
        # OpenAI answers then (insufficient_quota: billing, which retrying does not mend).
        self.out_of_credit = False

    @property
    def url(self) -> str:
        """Base URL including the path prefix (e.g. ``http://127.0.0.1:PORT/v1``)."""
        return self.base_url + self.prefix

    def response_headers(self, request: web.Request) -> dict[str, str]:
        return {"x-request-id": random_id("req_", 32), "openai-processing-ms": "1"}

    # ---- errors / auth ---------------------------------------------------------------------
    def error_response(
        self,
        status: int,
        message: str | None = None,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> web.Response:
        if message is None:
            message, type, code = _status_default(status)
        if type is None:
            type = "invalid_request_error" if status < 500 else "server_error"
        body = {"error": {"message": message, "type": type, "param": param, "code": code}}
        headers = {"x-request-id": random_id("req_", 32)}
        return web.json_response(body, status=status, headers=headers)

    def _api_error(self, e: FakeAPIError) -> web.Response:
        return self.error_response(e.status, e.message, type=e.type, param=e.param, code=e.code)

    def stream_error_event(self) -> tuple[str | None, Any]:
        return None, {
            "error": {
                "message": "The server had an error while processing your request. Sorry about that!",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }

    def check_auth(self, request: web.Request) -> web.Response | None:
        rejected = self._rejected_key(request)
        if rejected is None and self.out_of_credit:
            return self.error_response(
                429,
                "You exceeded your current quota, please check your plan and billing details. For more information "
                "on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
                type="insufficient_quota",
                code="insufficient_quota",
            )
        return rejected

    def _rejected_key(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        auth = request.headers.get("Authorization", "")
        if not auth:
            return self.error_response(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with "
                "blank username) if you're accessing the API from your browser and are prompted for a "
                "username and password. You can obtain an API key from https://platform.openai.com/account/api-keys.",
                type="invalid_request_error",
            )
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.api_key:
            shown = token.strip()
            masked = (shown[:3] + "*" * 4 + shown[-4:]) if len(shown) > 8 else "*" * len(shown)
            return self.error_response(
                401,
                f"Incorrect API key provided: {masked}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                type="invalid_request_error",
                code="invalid_api_key",
            )
        return None

    # ---- routing ---------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        p = self.prefix
        r = app.router
        r.add_post(p + "/chat/completions", self._wrap(self.chat_completions))
        r.add_post(p + "/completions", self._wrap(self.completions))
        r.add_post(p + "/embeddings", self._wrap(self.embeddings))
        r.add_post(p + "/responses", self._wrap(self.responses))
        r.add_post(p + "/images/generations", self._wrap(self.images))
        r.add_post(p + "/audio/speech", self._wrap(self.speech))
        r.add_post(p + "/audio/transcriptions", self._wrap(self.transcriptions, json_body=False))
        r.add_post(p + "/audio/translations", self._wrap(self.translations, json_body=False))
        r.add_post(p + "/images/edits", self._wrap(self.image_edits, json_body=False))
        r.add_post(p + "/images/variations", self._wrap(self.image_variations, json_body=False))
        r.add_get(p + "/models", self._wrap(self.list_models, json_body=False))
        r.add_get(p + "/models/{model:.+}", self._wrap(self.get_model, json_body=False))
        r.add_get("/__fake/image.png", self._image_png)

    def _wrap(self, fn: Callable[..., Any], json_body: bool = True) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            denied = self.check_auth(request)
            if denied is not None:
                return denied
            try:
                if json_body:
                    body = self._json_body(request)
                    return await fn(request, body)
                return await fn(request)
            except FakeAPIError as e:
                return self._api_error(e)

        return handler

    def _json_body(self, request: web.Request) -> dict[str, Any]:
        if request.get(JSON_ERROR) or not request.get(RAW_BODY):
            raise _bad(
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was "
                "not valid JSON. If you have trouble figuring out how to fix this, please contact us through "
                "our help center at help.openai.com.)"
            )
        body = request[JSON_BODY]
        if not isinstance(body, dict):
            raise _bad(f"Invalid type for 'body': expected an object, but got {_type_name(body)} instead.")
        return body

    # ---- shared helpers --------------------------------------------------------------------
    def response_model(self, request: web.Request, body: dict[str, Any]) -> str:
        return body["model"]

    def underlying_model(self, body: dict[str, Any]) -> str:
        """The model whose rules apply (Azure: the deployment's model)."""
        return body["model"]

    def _check_model(self, body: dict[str, Any]) -> None:
        model = body.get("model")
        if model is None:
            raise _bad("you must provide a model parameter")
        _expect(model, "string", "model")
        if self.check_models and model not in self.models:
            raise FakeAPIError(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )

    def _unknown(self, body: dict[str, Any], known: frozenset[str], style: str = "chat") -> None:
        for k in body:
            if k not in known:
                if style == "responses":
                    raise _bad(f"Unknown parameter: '{k}'.", k, "unknown_parameter")
                raise _bad(f"Unrecognized request argument supplied: {k}")

    def make_reply(self, model: str, body: dict[str, Any], prompt: str) -> str:
        return fake_reply(self.reply, model, body, prompt)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        cached = min(self.cached_tokens, prompt_tokens)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": min(self.reasoning_tokens, completion_tokens),
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    # ---- chat validation ---------------------------------------------------------------------
    def validate_chat(self, body: dict[str, Any]) -> None:
        self._unknown(body, CHAT_FIELDS)
        self._check_model(body)
        if "messages" not in body:
            raise _missing("messages")
        msgs = body["messages"]
        _expect(msgs, "array", "messages")
        if not msgs:
            raise _bad(
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty "
                "array instead.",
                "messages",
                "empty_array",
            )
        pending: dict[str, int] = {}  # tool_call_id -> index of assistant message
        pending_from: int | None = None
        for i, m in enumerate(msgs):
            p = f"messages[{i}]"
            _expect(m, "object", p)
            if "role" not in m:
                raise _missing(f"{p}.role")
            role = m["role"]
            if role not in ROLES:
                raise _invalid_value(role, f"{p}.role", ROLES)
            if pending and role != "tool":
                raise _bad(
                    "An assistant message with 'tool_calls' must be followed by tool messages responding to "
                    "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                    + ", ".join(pending),
                    f"messages.[{pending_from}].role",
                )
            content = m.get("content")
            if role in ("system", "developer", "user", "tool") and "content" not in m:
                raise _missing(f"{p}.content")
            if (
                role == "assistant"
                and content is None
                and not m.get("tool_calls")
                and not m.get("function_call")
                and not m.get("audio")
            ):
                raise _missing(f"{p}.content")
            if content is not None:
                self._validate_content(content, role, p)
            if "name" in m:
                _expect(m["name"], "string", f"{p}.name")
            if role == "tool":
                if "tool_call_id" not in m:
                    raise _missing(f"{p}.tool_call_id")
                _expect(m["tool_call_id"], "string", f"{p}.tool_call_id")
                if m["tool_call_id"] not in pending:
                    raise _bad(
                        "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                        "message with 'tool_calls'.",
                        f"messages.[{i}].role",
                    )
                del pending[m["tool_call_id"]]
            if role == "assistant" and m.get("tool_calls") is not None:
                calls = m["tool_calls"]
                _expect(calls, "array", f"{p}.tool_calls")
                if not calls:
                    raise _bad(
                        f"Invalid '{p}.tool_calls': empty array. Expected an array with minimum length 1, "
                        "but got an empty array instead.",
                        f"{p}.tool_calls",
                        "empty_array",
                    )
                for j, tc in enumerate(calls):
                    q = f"{p}.tool_calls[{j}]"
                    _expect(tc, "object", q)
                    for key in ("id", "type"):
                        if key not in tc:
                            raise _missing(f"{q}.{key}")
                    _expect(tc["id"], "string", f"{q}.id")
                    if tc["type"] not in ("function", "custom"):
                        raise _invalid_value(tc["type"], f"{q}.type", ("function", "custom"))
                    if tc["type"] == "function":
                        if "function" not in tc:
                            raise _missing(f"{q}.function")
                        fn = tc["function"]
                        _expect(fn, "object", f"{q}.function")
                        for key in ("name", "arguments"):
                            if key not in fn:
                                raise _missing(f"{q}.function.{key}")
                            _expect(fn[key], "string", f"{q}.function.{key}")
                    pending[tc["id"]] = i
                pending_from = i
        if pending:
            raise _bad(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to "
                "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                + ", ".join(pending),
                f"messages.[{pending_from}].role",
            )
        self._validate_tools(body)
        if "n" in body:
            _range(body["n"], "n", 1, 128, integer=True)
        if body.get("temperature") is not None:
            _range(body["temperature"], "temperature", 0, 2)
        if body.get("top_p") is not None:
            _range(body["top_p"], "top_p", 0, 1)
        for key in ("max_tokens", "max_completion_tokens"):
            if body.get(key) is not None:
                _range(body[key], key, 1, None, integer=True)
                _within_output_limit(body[key], self.underlying_model(body))
        stop = body.get("stop")
        if isinstance(stop, list) and len(stop) > 4:
            raise _bad(
                "Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array "
                f"with length {len(stop)} instead.",
                "stop",
                "array_above_max_length",
            )
        if body.get("reasoning_effort") is not None and not is_reasoning_model(self.underlying_model(body)):
            raise _bad(
                "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                "reasoning_effort",
                "unsupported_parameter",
            )
        if is_reasoning_model(self.underlying_model(body)):
            if body.get("max_tokens") is not None:
                raise _bad(
                    "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                    "'max_completion_tokens' instead.",
                    "max_tokens",
                    "unsupported_parameter",
                )
            # gpt-5.1 and later take other values while they do not reason (effort none, their default).
            later = re.match(r"^gpt-5\.", self.underlying_model(body).rsplit("/", 1)[-1])
            for key in ("temperature", "top_p") if not later or body.get("reasoning_effort", "none") != "none" else ():
                value = body.get(key)
                if value is not None and value != 1:
                    raise _bad(
                        f"Unsupported value: '{key}' does not support {value} with this model. Only the "
                        "default (1) value is supported.",
                        key,
                        "unsupported_value",
                    )
        self._validate_stream(body)
        self._validate_response_format(body)

    def _validate_response_format(self, body: dict[str, Any]) -> None:
        rf = body.get("response_format")
        if rf is None:
            return
        _expect(rf, "object", "response_format")
        kinds = ("text", "json_object", "json_schema")
        if rf.get("type") not in kinds:
            raise _invalid_value(rf.get("type"), "response_format.type", kinds)
        if rf["type"] == "json_schema":
            js = rf.get("json_schema")
            if not isinstance(js, dict):
                raise _missing("response_format.json_schema")
            if "name" not in js:
                raise _missing("response_format.json_schema.name")
        if rf["type"] == "json_object" and not any(
            "json" in text_of(m.get("content")).lower() for m in body["messages"]
        ):
            raise _bad(
                "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
                "messages",
            )

    @staticmethod
    def _apply_response_format(body: dict[str, Any], text: str) -> str:
        rf = body.get("response_format") or {}
        if rf.get("type") == "json_schema":
            schema = rf["json_schema"].get("schema") or {"type": "object"}
            return json.dumps(example_from_schema(schema), separators=(",", ":"))
        if rf.get("type") == "json_object":
            return json.dumps({"reply": text})
        return text

    def _validate_stream(self, body: dict[str, Any]) -> None:
        if "stream" in body and body["stream"] is not None:
            _expect(body["stream"], "boolean", "stream")
        if body.get("stream_options") is not None:
            if not body.get("stream"):
                raise _bad(
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    "stream_options",
                )
            _expect(body["stream_options"], "object", "stream_options")
            inc = body["stream_options"].get("include_usage")
            if inc is not None:
                _expect(inc, "boolean", "stream_options.include_usage")

    def _validate_content(self, content: Any, role: str, p: str) -> None:
        if isinstance(content, str):
            return
        if not isinstance(content, list):
            raise _bad(
                f"Invalid type for '{p}.content': expected one of a string or array of objects, but got "
                f"{_type_name(content)} instead.",
                f"{p}.content",
                "invalid_type",
            )
        if not content and role != "assistant":
            raise _bad(
                f"Invalid '{p}.content': empty array. Expected an array with minimum length 1, but got an "
                "empty array instead.",
                f"{p}.content",
                "empty_array",
            )
        allowed = ROLE_PART_TYPES.get(role, PART_TYPES)
        for k, part in enumerate(content):
            q = f"{p}.content[{k}]"
            _expect(part, "object", q)
            if "type" not in part:
                raise _missing(f"{q}.type")
            t = part["type"]
            if t not in allowed:
                raise _invalid_value(t, f"{q}.type", allowed)
            if t == "text":
                if "text" not in part:
                    raise _missing(f"{q}.text")
                _expect(part["text"], "string", f"{q}.text")
            elif t == "image_url":
                img = part.get("image_url")
                if img is None:
                    raise _missing(f"{q}.image_url")
                _expect(img, "object", f"{q}.image_url")
                if "url" not in img:
                    raise _missing(f"{q}.image_url.url")

    def _validate_tools(self, body: dict[str, Any]) -> None:
        tools = body.get("tools")
        names: list[str] = []
        if tools is not None:
            _expect(tools, "array", "tools")
            for i, t in enumerate(tools):
                p = f"tools[{i}]"
                _expect(t, "object", p)
                if "type" not in t:
                    raise _missing(f"{p}.type")
                if t["type"] not in ("function", "custom"):
                    raise _invalid_value(t["type"], f"{p}.type", ("function", "custom"))
                key = t["type"]
                if key not in t:
                    raise _missing(f"{p}.{key}")
                fn = t[key]
                _expect(fn, "object", f"{p}.{key}")
                if "name" not in fn:
                    raise _missing(f"{p}.{key}.name")
                _expect(fn["name"], "string", f"{p}.{key}.name")
                if not fn["name"] or not all(c.isalnum() or c in "_-" for c in fn["name"]):
                    raise _bad(
                        f"Invalid '{p}.{key}.name': string does not match pattern. Expected a string that "
                        "matches the pattern '^[a-zA-Z0-9_-]+$'.",
                        f"{p}.{key}.name",
                        "invalid_value",
                    )
                if key == "function" and fn.get("parameters") is not None:
                    _expect(fn["parameters"], "object", f"{p}.function.parameters")
                names.append(fn["name"])
        if body.get("parallel_tool_calls") is not None and not tools:
            raise _bad(
                "Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed when 'tools' are "
                "specified.",
                "parallel_tool_calls",
            )
        tc = body.get("tool_choice")
        if tc is None:
            return
        if not tools:
            raise _bad(
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
                "tool_choice",
            )
        if isinstance(tc, str):
            if tc not in ("none", "auto", "required"):
                raise _invalid_value(tc, "tool_choice", ("none", "auto", "required"))
            return
        _expect(tc, "object", "tool_choice")
        if tc.get("type") not in ("function", "custom", "allowed_tools"):
            raise _invalid_value(tc.get("type"), "tool_choice.type", ("function", "custom", "allowed_tools"))
        if tc["type"] in ("function", "custom"):
            fn = tc.get(tc["type"])
            if not isinstance(fn, dict) or "name" not in fn:
                raise _missing(f"tool_choice.{tc['type']}.name")
            if fn["name"] not in names:
                raise _bad(
                    f"Invalid value for 'tool_choice': no function named '{fn['name']}' was specified in "
                    "the 'tools' parameter.",
                    "tool_choice",
                )

    # ---- chat answer -----------------------------------------------------------------------
    def _chat_tool_plan(self, body: dict[str, Any], parallel: bool = False) -> list[dict[str, Any]] | None:
        """The tool calls the fake makes, or None for a text answer: the forced or first tool, or
        with `parallel` (and parallel_tool_calls not false) every tool."""
        tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
        if not tools:
            return None
        tc = body.get("tool_choice", "auto")
        if tc == "none":
            return None
        forced = tc == "required" or isinstance(tc, dict)
        if not forced and body["messages"][-1].get("role") != "user":
            return None
        chosen = tools[:1]
        if isinstance(tc, dict) and tc.get("type") == "function":
            chosen = [next(t for t in tools if t["function"]["name"] == tc["function"]["name"])]
        elif parallel and body.get("parallel_tool_calls") is not False:
            chosen = tools
        seed = json.dumps(body["messages"], sort_keys=True)
        calls = []
        for tool in chosen:
            fn = tool["function"]
            args = example_from_schema(fn.get("parameters") or {"type": "object", "properties": {}})
            arguments = json.dumps(args if isinstance(args, dict) else {}, separators=(",", ":"))
            calls.append(
                {
                    "id": stable_id("call_", fn["name"], seed),
                    "type": "function",
                    "function": {"name": fn["name"], "arguments": arguments},
                }
            )
        return calls

    def _prompt_tokens(self, body: dict[str, Any]) -> int:
        n = 3
        for m in body["messages"]:
            n += 3 + count_tokens(text_of(m.get("content")))
            for tc in m.get("tool_calls") or []:
                n += count_tokens(json.dumps(tc.get("function", {})))
        if body.get("tools"):
            n += count_tokens(json.dumps(body["tools"]))
        return n

    def _last_user_text(self, body: dict[str, Any]) -> str:
        for m in reversed(body["messages"]):
            if m.get("role") == "user":
                return text_of(m.get("content"))
        return ""

    def chat_envelope(self, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": random_id("chatcmpl-", 29),
            "created": int(time.time()),
            "model": self.response_model(request, body),
            "system_fingerprint": "fp_fake0001",
        }

    def decorate_choice(self, choice: dict[str, Any]) -> None:
        """Hook for provider variants (Azure adds content-filter results)."""

    def decorate_completion(self, resp: dict[str, Any]) -> None:
        """Hook for provider variants."""

    def decorate_stream_choice(self, choice: dict[str, Any]) -> None:
        """Hook for provider variants (Azure adds content-filter results to streamed choices)."""

    async def stream_preamble(self, sse: SSEWriter, env: dict[str, Any]) -> None:
        """Hook for provider variants (Azure sends a prompt_filter_results chunk first)."""

    async def chat_completions(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        self.validate_chat(body)
        env = self.chat_envelope(request, body)
        model = env["model"]
        n = body.get("n") or 1
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        calls = self._chat_tool_plan(body, parallel_tool_calls(request))
        choices: list[dict[str, Any]] = []
        completion_tokens = 0
        for idx in range(n):
            if calls is not None:
                msg: dict[str, Any] = {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "annotations": [],
                    "tool_calls": calls,
                }
                finish = "tool_calls"
                completion_tokens += sum(count_tokens(c["function"]["arguments"]) + 3 for c in calls)
            else:
                text = self.make_reply(model, body, self._last_user_text(body))
                if n > 1:
                    text = f"{text} (choice {idx})"
                text = self._apply_response_format(body, text)
                text = cut_at_stop(text, body.get("stop"))
                finish = "stop"
                if limit is not None:
                    text, cut = truncate_words(text, max(limit - self.reasoning_tokens, 0))
                    if cut:
                        finish = "length"
                msg = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
                completion_tokens += count_tokens(text)
            choice = {"index": idx, "message": msg, "logprobs": None, "finish_reason": finish}
            self.decorate_choice(choice)
            choices.append(choice)
        completion_tokens += self.reasoning_tokens
        usage = self.usage(self._prompt_tokens(body), completion_tokens)
        if streams(request, body):
            return await self._stream_chat(request, body, env, choices, usage)
        resp = {**env, "object": "chat.completion", "choices": choices, "usage": usage, "service_tier": "default"}
        self.decorate_completion(resp)
        return web.json_response(resp)

    async def _stream_chat(
        self,
        request: web.Request,
        body: dict[str, Any],
        env: dict[str, Any],
        choices: list[dict[str, Any]],
        usage: dict[str, Any],
    ) -> web.StreamResponse:
        opts = body.get("stream_options") or {}
        include_usage = bool(opts.get("include_usage"))
        obfuscate = self.obfuscation and opts.get("include_obfuscation", True) is not False
        sse = SSEWriter(request, error_event=self.stream_error_event)

        def chunk(choice_list: list[dict[str, Any]]) -> dict[str, Any]:
            c = {**env, "object": "chat.completion.chunk", "service_tier": "default", "choices": choice_list}
            if include_usage:
                c["usage"] = None
            if obfuscate and choice_list:
                # OpenAI pads chunks with a random "obfuscation" string unless include_obfuscation=false
                c["obfuscation"] = random_id("", 1 + sse.sent % 12)
            return c

        def delta(idx: int, d: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            c = {"index": idx, "delta": d, "logprobs": None, "finish_reason": finish}
            self.decorate_stream_choice(c)
            return c

        await self.stream_preamble(sse, env)
        for ch in choices:
            idx, msg = ch["index"], ch["message"]
            if msg.get("tool_calls"):
                for k, tc in enumerate(msg["tool_calls"]):
                    first = {
                        "index": k,
                        "id": tc["id"],
                        "type": "function",
                        "function": {"name": tc["function"]["name"], "arguments": ""},
                    }
                    d: dict[str, Any] = {"tool_calls": [first]}
                    if k == 0:
                        d = {"role": "assistant", "content": None, "refusal": None, **d}
                    await sse.send(chunk([delta(idx, d)]))
                    for frag in split_fixed(tc["function"]["arguments"], 4):
                        await sse.send(
                            chunk([delta(idx, {"tool_calls": [{"index": k, "function": {"arguments": frag}}]})])
                        )
            else:
                await sse.send(chunk([delta(idx, {"role": "assistant", "content": "", "refusal": None})]))
                for piece in split_words(msg["content"] or ""):
                    await sse.send(chunk([delta(idx, {"content": piece})]))
            await sse.send(chunk([delta(idx, {}, ch["finish_reason"])]))
        if include_usage:
            await sse.send({**chunk([]), "usage": usage})
        await sse.send("[DONE]")
        return await sse.finish()

    # ---- legacy completions ------------------------------------------------------------------
    async def completions(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        self._unknown(body, COMPLETION_FIELDS)
        self._check_model(body)
        if "prompt" not in body:
            raise _missing("prompt")
        prompt = body["prompt"]
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(x, str) for x in prompt):
            prompts = prompt
        elif isinstance(prompt, list) and prompt and all(isinstance(x, int) for x in prompt):
            prompts = [" ".join(str(x) for x in prompt)]
        else:
            raise _bad("Invalid type for 'prompt': expected a string or an array of strings.", "prompt", "invalid_type")
        n = body.get("n") or 1
        if "n" in body:
            _range(body["n"], "n", 1, 128, integer=True)
        if body.get("max_tokens") is not None:
            _range(body["max_tokens"], "max_tokens", 0, None, integer=True)
        self._validate_stream(body)
        limit = body.get("max_tokens", 16)
        env = {
            "id": random_id("cmpl-", 29),
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.response_model(request, body),
        }
        choices = []
        ptoks = sum(count_tokens(p) for p in prompts)
        ctoks = 0
        for pi, ptext in enumerate(prompts):
            for j in range(n):
                text = cut_at_stop(self.make_reply(env["model"], body, ptext), body.get("stop"))
                finish = "stop"
                if limit is not None:
                    text, cut = truncate_words(text, limit)
                    finish = "length" if cut else "stop"
                ctoks += count_tokens(text)
                if body.get("echo"):
                    text = ptext + text
                choices.append({"text": text, "index": pi * n + j, "logprobs": None, "finish_reason": finish})
        usage = self.usage(ptoks, ctoks)
        if not streams(request, body):
            return web.json_response({**env, "choices": choices, "usage": usage, "system_fingerprint": None})
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        sse = SSEWriter(request, error_event=self.stream_error_event)
        for ch in choices:
            for piece in split_words(ch["text"]):
                c = {**env, "choices": [{"text": piece, "index": ch["index"], "logprobs": None, "finish_reason": None}]}
                await sse.send(c)
            await sse.send(
                {
                    **env,
                    "choices": [
                        {"text": "", "index": ch["index"], "logprobs": None, "finish_reason": ch["finish_reason"]}
                    ],
                }
            )
        if include_usage:
            await sse.send({**env, "choices": [], "usage": usage})
        await sse.send("[DONE]")
        return await sse.finish()

    # ---- embeddings ------------------------------------------------------------------------
    def native_dims(self, model: str) -> int:
        if "large" in model:
            return 3072
        return 1536

    @staticmethod
    def embedding_vector(model: str, text: str, dims: int) -> list[float]:
        seed = int.from_bytes(hashlib.sha256(f"{model}\x1f{text}".encode()).digest()[:8], "little")
        rng = random.Random(seed)
        v = [rng.uniform(-1.0, 1.0) for _ in range(dims)]
        norm = math.sqrt(sum(x * x for x in v)) or 1.0
        return [x / norm for x in v]

    async def embeddings(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        self._unknown(body, EMBEDDING_FIELDS)
        self._check_model(body)
        if "input" not in body:
            raise _missing("input")
        inp = body["input"]
        invalid = _bad(
            "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
        )
        items: list[tuple[str, int]] = []  # (seed text, tokens)
        if isinstance(inp, str):
            if not inp:
                raise invalid
            items = [(inp, count_tokens(inp))]
        elif isinstance(inp, list) and inp:
            if all(isinstance(x, str) for x in inp):
                if any(not x for x in inp) or len(inp) > 2048:
                    raise invalid
                items = [(x, count_tokens(x)) for x in inp]
            elif all(isinstance(x, int) and not isinstance(x, bool) for x in inp):
                items = [(json.dumps(inp), len(inp))]
            elif all(isinstance(x, list) and x and all(isinstance(y, int) for y in x) for x in inp):
                items = [(json.dumps(x), len(x)) for x in inp]
            else:
                raise invalid
        else:
            raise invalid
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise _invalid_value(fmt, "encoding_format", ("float", "base64"))
        model = body["model"]
        dims = self.native_dims(model)
        if body.get("dimensions") is not None:
            if not model.startswith("text-embedding-3"):
                raise _bad("This model does not support specifying dimensions.", "dimensions")
            _range(body["dimensions"], "dimensions", 1, dims, integer=True)
            dims = body["dimensions"]
        data = []
        for i, (seed_text, _) in enumerate(items):
            vec = self.embedding_vector(model, seed_text, dims)
            emb: Any = b64_float32_le(vec) if fmt == "base64" else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        toks = sum(t for _, t in items)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": self.response_model(request, body),
                "usage": {"prompt_tokens": toks, "total_tokens": toks},
            }
        )

    # ---- responses -------------------------------------------------------------------------
    def _responses_input(self, body: dict[str, Any]) -> tuple[str, str | None, int]:
        """(last user text, role of the last input item, token count)."""
        inp = body.get("input")
        if inp is None:
            raise _missing("input")
        if isinstance(inp, str):
            return inp, "user", count_tokens(inp)
        _expect(inp, "array", "input")
        last_user, last_role, toks = "", None, 0
        for i, item in enumerate(inp):
            _expect(item, "object", f"input[{i}]")
            typ = item.get("type", "message")
            if typ == "message":
                if item.get("role") not in ("user", "assistant", "system", "developer"):
                    raise _invalid_value(
                        item.get("role"), f"input[{i}].role", ("user", "assistant", "system", "developer")
                    )
                content = item.get("content")
                if isinstance(content, list):
                    text = " ".join(
                        c.get("text", "") for c in content if isinstance(c, dict) and isinstance(c.get("text"), str)
                    )
                elif isinstance(content, str):
                    text = content
                else:
                    raise _missing(f"input[{i}].content")
                toks += 3 + count_tokens(text)
                last_role = item["role"]
                if last_role == "user":
                    last_user = text
            else:
                last_role = typ
                toks += count_tokens(json.dumps(item))
        return last_user, last_role, toks

    async def responses(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        self._unknown(body, RESPONSES_FIELDS, style="responses")
        self._check_model(body)
        user_text, last_role, ptoks = self._responses_input(body)
        if body.get("instructions"):
            ptoks += count_tokens(str(body["instructions"]))
        self._validate_stream(body)
        model = self.response_model(request, body)
        resp_id = random_id("resp_", 40)
        tools = body.get("tools") or []
        fn_tools = [t for t in tools if isinstance(t, dict) and t.get("type") == "function"]
        tc = body.get("tool_choice", "auto")
        forced = tc == "required" or isinstance(tc, dict)
        output: list[dict[str, Any]]
        if fn_tools and tc != "none" and (forced or last_role == "user"):
            tool = fn_tools[0]
            if isinstance(tc, dict) and tc.get("name"):
                tool = next((t for t in fn_tools if t.get("name") == tc["name"]), tool)
            args = json.dumps(example_from_schema(tool.get("parameters") or {"type": "object"}))
            output = [
                {
                    "id": random_id("fc_", 40),
                    "type": "function_call",
                    "status": "completed",
                    "arguments": args,
                    "call_id": stable_id("call_", tool.get("name", ""), user_text),
                    "name": tool.get("name"),
                }
            ]
            ctoks = count_tokens(args)
        else:
            text = self.make_reply(model, body, user_text)
            status = "completed"
            if body.get("max_output_tokens"):
                text, cut = truncate_words(text, max(body["max_output_tokens"] - self.reasoning_tokens, 0))
                status = "incomplete" if cut else status
            output = [
                {
                    "id": random_id("msg_", 40),
                    "type": "message",
                    "status": status,
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
                }
            ]
            ctoks = count_tokens(text)
        ctoks += self.reasoning_tokens
        cached = min(self.cached_tokens, ptoks)
        usage = {
            "input_tokens": ptoks,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": ctoks,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": ptoks + ctoks,
        }
        full = {
            "id": resp_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": model,
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}},
            "tool_choice": tc,
            "tools": tools,
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": usage,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }
        if output[0].get("status") == "incomplete":
            full["status"] = "incomplete"
            full["incomplete_details"] = {"reason": "max_output_tokens"}
        if not body.get("stream"):
            return web.json_response(full)
        return await self._stream_responses(request, full)

    async def _stream_responses(self, request: web.Request, full: dict[str, Any]) -> web.StreamResponse:
        def err() -> tuple[str | None, Any]:
            return "error", {
                "type": "error",
                "code": "server_error",
                "message": "The server had an error while processing your request.",
                "param": None,
                "sequence_number": seq,
            }

        sse = SSEWriter(request, error_event=err)
        seq = 0

        async def emit(ev: dict[str, Any]) -> None:
            nonlocal seq
            ev["sequence_number"] = seq
            seq += 1
            await sse.send(ev, event=ev["type"])

        pending = {**full, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
        await emit({"type": "response.created", "response": pending})
        await emit({"type": "response.in_progress", "response": pending})
        for oi, item in enumerate(full["output"]):
            if item["type"] == "message":
                text = item["content"][0]["text"]
                await emit(
                    {
                        "type": "response.output_item.added",
                        "output_index": oi,
                        "item": {**item, "status": "in_progress", "content": []},
                    }
                )
                empty_part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                await emit(
                    {
                        "type": "response.content_part.added",
                        "item_id": item["id"],
                        "output_index": oi,
                        "content_index": 0,
                        "part": empty_part,
                    }
                )
                for piece in split_words(text):
                    await emit(
                        {
                            "type": "response.output_text.delta",
                            "item_id": item["id"],
                            "output_index": oi,
                            "content_index": 0,
                            "delta": piece,
                            "logprobs": [],
                        }
                    )
                await emit(
                    {
                        "type": "response.output_text.done",
                        "item_id": item["id"],
                        "output_index": oi,
                        "content_index": 0,
                        "text": text,
                        "logprobs": [],
                    }
                )
                await emit(
                    {
                        "type": "response.content_part.done",
                        "item_id": item["id"],
                        "output_index": oi,
                        "content_index": 0,
                        "part": item["content"][0],
                    }
                )
            else:
                await emit(
                    {
                        "type": "response.output_item.added",
                        "output_index": oi,
                        "item": {**item, "status": "in_progress", "arguments": ""},
                    }
                )
                for frag in split_fixed(item["arguments"], 3):
                    await emit(
                        {
                            "type": "response.function_call_arguments.delta",
                            "item_id": item["id"],
                            "output_index": oi,
                            "delta": frag,
                        }
                    )
                await emit(
                    {
                        "type": "response.function_call_arguments.done",
                        "item_id": item["id"],
                        "output_index": oi,
                        "name": item["name"],
                        "arguments": item["arguments"],
                    }
                )
            await emit({"type": "response.output_item.done", "output_index": oi, "item": item})
        final_type = "response.completed" if full["status"] == "completed" else "response.incomplete"
        await emit({"type": final_type, "response": full})
        return await sse.finish()

    # ---- images / audio / models -------------------------------------------------------------
    async def images(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if "prompt" not in body:
            raise _missing("prompt")
        _expect(body["prompt"], "string", "prompt")
        model = body.get("model", "dall-e-2")
        _expect(model, "string", "model")
        n = body.get("n", 1)
        _range(n, "n", 1, 1 if model == "dall-e-3" else 10, integer=True)
        gpt_image = model.startswith("gpt-image")
        fmt = body.get("response_format") or ("b64_json" if gpt_image else "url")
        if fmt not in ("url", "b64_json"):
            raise _invalid_value(fmt, "response_format", ("url", "b64_json"))
        if gpt_image and "response_format" in body:
            raise _bad(f"Unknown parameter: 'response_format' is not supported for {model}.", "response_format")
        if body.get("stream") is True:
            if not gpt_image:
                raise _bad(f"Streaming is not supported for {model}.", "stream")
            return await self._image_stream(request, body)
        data = []
        for _ in range(n):
            if fmt == "b64_json":
                data.append({"b64_json": base64.b64encode(PNG_1X1).decode()})
            else:
                data.append({"url": f"{self.base_url}/__fake/image.png", "revised_prompt": body["prompt"]})
        out: dict[str, Any] = {"created": int(time.time()), "data": data}
        if model.startswith("gpt-image"):
            ptoks = count_tokens(body["prompt"])
            out["usage"] = {
                "input_tokens": ptoks,
                "input_tokens_details": {"image_tokens": 0, "text_tokens": ptoks},
                "output_tokens": 272 * n,
                "total_tokens": ptoks + 272 * n,
            }
        return web.json_response(out)

    async def _image_stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        """gpt-image's stream: `partial_images` (0-3) partial images, then the completed one with
        the usage."""
        partials = body.get("partial_images", 0)
        _range(partials, "partial_images", 0, 3, integer=True)
        image = base64.b64encode(PNG_1X1).decode()
        sse = SSEWriter(request)
        for index in range(partials):
            event = {"type": "image_generation.partial_image", "b64_json": image, "partial_image_index": index}
            await sse.send(event, event=event["type"])
        ptoks = count_tokens(body["prompt"])
        done = {
            "type": "image_generation.completed",
            "b64_json": image,
            "created_at": int(time.time()),
            "usage": {
                "input_tokens": ptoks,
                "input_tokens_details": {"image_tokens": 0, "text_tokens": ptoks},
                "output_tokens": 272,
                "total_tokens": ptoks + 272,
            },
        }
        await sse.send(done, event=done["type"])
        return await sse.finish()

    async def _image_png(self, request: web.Request) -> web.Response:
        return web.Response(body=PNG_1X1, content_type="image/png")

    async def speech(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        for key in ("model", "input", "voice"):
            if key not in body:
                raise _missing(key)
        _expect(body["input"], "string", "input")
        if len(body["input"]) > 4096:
            raise _bad(
                "[{'type': 'string_too_long', 'loc': ('body', 'input'), 'msg': 'String should have at most "
                "4096 characters', 'input': '...', 'ctx': {'max_length': 4096}}]",
                "input",
            )
        fmt = body.get("response_format", "mp3")
        if fmt not in SPEECH_TYPES:
            raise _invalid_value(fmt, "response_format", tuple(SPEECH_TYPES))
        digest = hashlib.sha256(f"{body['model']}|{body['voice']}|{body['input']}".encode()).digest()
        header = {"mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00", "wav": b"RIFF\x00\x00\x00\x00WAVE"}.get(fmt, b"")
        audio = header + digest * 8
        stream_format = body.get("stream_format", "audio")
        if stream_format not in ("audio", "sse"):
            raise _invalid_value(stream_format, "stream_format", ("audio", "sse"))
        if stream_format == "sse":
            if str(body["model"]).startswith("tts-1"):
                raise _bad(f"stream_format 'sse' is not supported for {body['model']}.", "stream_format")
            sse = SSEWriter(request)
            for part in (audio[: len(audio) // 2], audio[len(audio) // 2 :]):
                await sse.send({"type": "speech.audio.delta", "audio": base64.b64encode(part).decode()})
            tokens = count_tokens(body["input"])
            usage = {"input_tokens": tokens, "output_tokens": 4 * tokens, "total_tokens": 5 * tokens}
            await sse.send({"type": "speech.audio.done", "usage": usage})
            return await sse.finish()
        # Audio goes out as it is made (chunked), in three parts: `x-fake-stream-interval-ms` apart,
        # and the second not before `speech_gate` opens, when a test set one.
        response = web.StreamResponse(headers={"Content-Type": SPEECH_TYPES[fmt]})
        await response.prepare(request)
        interval = int(request.headers.get(INTERVAL_HEADER, "0") or 0)
        third = len(audio) // 3
        for index, part in enumerate((audio[:third], audio[third : 2 * third], audio[2 * third :])):
            if index and interval:
                await asyncio.sleep(interval / 1000)
            if index == 1 and self.speech_gate is not None:
                await self.speech_gate.wait()
            await response.write(part)
        await response.write_eof()
        return response

    def _form(self, request: web.Request, *required: str) -> dict[str, Any]:
        """A multipart request's form, refused as OpenAI refuses one without its required fields
        (a file, "file" or "image", must be a file part)."""
        if request.content_type != "multipart/form-data":
            raise _bad(
                "Invalid Content-Type header (application/json), expected multipart/form-data. (HINT: If "
                "you're using curl, you can pass -H 'Content-Type: multipart/form-data')"
                if request.content_type == "application/json"
                else f"Invalid Content-Type header ({request.content_type}), expected multipart/form-data."
            )
        form: dict[str, Any] = request.get(FORM) or {}
        for name in required:
            if name not in form or (name in ("file", "image") and not isinstance(form[name], dict)):
                raise _missing(name)
        return form

    async def translations(self, request: web.Request) -> web.StreamResponse:
        """Audio to English text: whisper-1 only."""
        form = self._form(request, "file", "model")
        if form["model"] != "whisper-1":
            raise _bad(f"Invalid model {form['model']}: translations are served by whisper-1 only.", "model")
        f = form["file"]
        return web.json_response({"text": f"Fake translation of {f['filename']} ({len(f['data'])} bytes)."})

    async def image_edits(self, request: web.Request) -> web.StreamResponse:
        """An image edited from a prompt (gpt-image-1, which streams too, or dall-e-2)."""
        form = self._form(request, "prompt")
        image = form.get("image") or form.get("image[]")
        if not isinstance(image, dict):
            raise _missing("image")
        model = str(form.get("model", "dall-e-2"))
        if model not in ("dall-e-2",) and not model.startswith("gpt-image"):
            raise _bad(f"Invalid model {model}: image edits take dall-e-2 or gpt-image-1.", "model")
        png = base64.b64encode(PNG_1X1).decode()
        ptoks = count_tokens(str(form["prompt"]))
        usage = {
            "input_tokens": ptoks + 65,
            "input_tokens_details": {"image_tokens": 65, "text_tokens": ptoks},
            "output_tokens": 272,
            "total_tokens": ptoks + 65 + 272,
        }
        if str(form.get("stream", "false")).lower() == "true":
            if not model.startswith("gpt-image"):
                raise _bad(f"Streaming is not supported for {model}.", "stream")
            sse = SSEWriter(request)
            partial = {"type": "image_edit.partial_image", "b64_json": png, "partial_image_index": 0}
            await sse.send(partial, event=partial["type"])
            done = {"type": "image_edit.completed", "b64_json": png, "created_at": int(time.time()), "usage": usage}
            await sse.send(done, event=done["type"])
            return await sse.finish()
        out: dict[str, Any] = {"created": int(time.time()), "data": [{"b64_json": png}]}
        if model.startswith("gpt-image"):
            out["usage"] = usage
        return web.json_response(out)

    async def image_variations(self, request: web.Request) -> web.StreamResponse:
        """Variations of an image: dall-e-2 only."""
        form = self._form(request, "image")
        model = str(form.get("model", "dall-e-2"))
        if model != "dall-e-2":
            raise _bad(f"Invalid model {model}: image variations are made by dall-e-2 only.", "model")
        return web.json_response({"created": int(time.time()), "data": [{"url": f"{self.base_url}/__fake/image.png"}]})

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        form = self._form(request, "file", "model")
        f = form["file"]
        model = str(form["model"])
        text = f"Fake transcription of {f['filename']} ({len(f['data'])} bytes) by {model}."
        fmt = form.get("response_format", "json")
        # gpt-4o-transcribe and its kin count tokens; whisper-1 seconds.
        tokens = model.startswith("gpt-")
        audio_tokens = max(1, len(f["data"]) // 100)
        usage: dict[str, Any] = (
            {
                "type": "tokens",
                "input_tokens": audio_tokens,
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                "output_tokens": count_tokens(text),
                "total_tokens": audio_tokens + count_tokens(text),
            }
            if tokens
            else {"type": "duration", "seconds": 1}
        )
        if str(form.get("stream", "false")).lower() == "true":
            if not tokens:
                raise _bad(f"Streaming is not supported for the {model} model.", "stream")
            sse = SSEWriter(request)
            for word in text.split(" "):
                await sse.send({"type": "transcript.text.delta", "delta": word + " "})
            await sse.send({"type": "transcript.text.done", "text": text, "usage": usage})
            return await sse.finish()
        if fmt == "text":
            return web.Response(text=text + "\n", content_type="text/plain")
        if fmt in ("srt", "vtt"):
            cue = "00:00:00,000 --> 00:00:01,000" if fmt == "srt" else "00:00:00.000 --> 00:00:01.000"
            prefix = "1\n" if fmt == "srt" else "WEBVTT\n\n"
            return web.Response(text=f"{prefix}{cue}\n{text}\n", content_type="text/plain")
        if fmt == "verbose_json":
            return web.json_response(
                {"task": "transcribe", "language": "english", "duration": 1.0, "text": text, "segments": []}
            )
        if fmt != "json":
            raise _invalid_value(fmt, "response_format", ("json", "text", "srt", "verbose_json", "vtt"))
        return web.json_response({"text": text, "usage": usage})

    def _model_obj(self, m: str) -> dict[str, Any]:
        return {"id": m, "object": "model", "created": 1700000000, "owned_by": "system"}

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"object": "list", "data": [self._model_obj(m) for m in self.models]})

    async def get_model(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info["model"]
        if m not in self.models:
            raise FakeAPIError(404, f"The model '{m}' does not exist", param="model", code="model_not_found")
        return web.json_response(self._model_obj(m))


def _status_default(status: int) -> tuple[str, str, str | None]:
    """Default (message, type, code) OpenAI sends for an injected status."""
    return {
        400: ("Bad request (injected by the fake).", "invalid_request_error", None),
        401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
        403: ("You are not allowed to sample from this model", "invalid_request_error", None),
        404: ("The model does not exist or you do not have access to it.", "invalid_request_error",
              "model_not_found"),
        408: ("Request timed out.", "timeout", None),
        409: ("Conflict (injected by the fake).", "invalid_request_error", None),
        422: ("Unprocessable entity (injected by the fake).", "invalid_request_error", None),
        429: ("Rate limit reached for requests (injected by the fake). Please try again in 1s.", "requests",
              "rate_limit_exceeded"),
        500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
        502: ("Bad gateway.", "server_error", None),
        503: ("The engine is currently overloaded, please try again later", "server_error", None),
        504: ("Gateway timeout.", "server_error", None),
    }.get(status, (f"Injected error {status}.", "server_error" if status >= 500 else "invalid_request_error",
                   None))  # fmt: skip


def cut_at_stop(text: str, stop: Any) -> str:
    """The text up to the first of the stop sequences it holds (OpenAI leaves the sequence out)."""
    sequences = (
        [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str)] if isinstance(stop, list) else []
    )
    found = [at for at in (text.find(seq) for seq in sequences if seq) if at >= 0]
    return text[: min(found)] if found else text
