"""OpenAI chat completions and embeddings clients -> Gemini on GCP Vertex AI (schema GCPVertexAI).

Requests (path: vertex.vertex_path, publisher `google`; always `content-type: application/json`):

- Chat: `POST …/publishers/google/models/{model}:generateContent`, or when the client streams
  `…:streamGenerateContent?alt=sse`. Body `{contents, systemInstruction?, generationConfig?, tools?,
  toolConfig?}`:
  - system and developer messages -> `systemInstruction {parts: [{text}]}` (text only);
  - user -> role `user`, assistant -> role `model`; consecutive turns of one role are merged (Gemini
    wants alternating turns). Parts: `{text}` (empty text is left out); images: data URLs ->
    `{inlineData {mimeType, data}}`, `gs://` and http(s) URLs -> `{fileData {mimeType, fileUri}}`
    with the type guessed from the URL's file extension (refused, 422, when it cannot be);
    `input_audio` (wav, mp3) -> inlineData; `file` parts with `file_data` (a base64 data URL, e.g. a
    PDF) -> inlineData (a `file_id` is refused);
  - assistant tool_calls -> `{functionCall {name, args, id?}}` parts (args a JSON object), after
    the text; `id` is the tool call's id when Gemini gave it (functionCall.id), never one this
    translator made up (`call_<responseId>_<n>`, `call_<n>`), so that Gemini matches parallel calls
    to one function with their responses by id; a call's `extra_content.google.thought_signature`
    (how Google's own OpenAI-compatible endpoint carries Gemini's thought signatures, and how this
    translator returns them) goes back as the part's `thoughtSignature`, which Gemini 3 requires on
    the calls of the current turn. For Gemini 3 and later, a model turn whose first call carries
    none (a client that rebuilds tool_calls from id, type and function, as most frameworks do; a
    history from another model after a failover) gets the validator-skipping signature Google
    documents for turns it did not produce (SKIP_SIGNATURE), instead of Gemini's 400;
  - tool messages -> `{functionResponse {name, response, id?}}` parts in a `user` turn, the name
    looked up from the earlier tool call with the message's tool_call_id (422 when none has it), the
    id echoed as on the functionCall; the response is the tool output when it is a JSON object, else
    `{"content": <JSON value or text>}`;
  - generationConfig: temperature, top_p -> topP, max_completion_tokens / max_tokens ->
    maxOutputTokens, stop -> stopSequences, n -> candidateCount, seed, presence_penalty ->
    presencePenalty, frequency_penalty -> frequencyPenalty, response_format json_object ->
    responseMimeType application/json, json_schema -> the same plus responseJsonSchema (the
    schema), logprobs / top_logprobs -> responseLogprobs / logprobs (left out for top_logprobs 0:
    the chosen tokens' logprobs only, which responseLogprobs alone gives);
  - reasoning_effort -> thinkingConfig, never a setting the model rejects. Gemini 1.x/2.x models
    take a token budget (thinkingBudget; Google's own OpenAI mapping): none 0 (off), minimal and low
    1024, medium 8192, high (and xhigh, max) 24576; except that Gemini 2.5 Pro cannot turn thinking off (its budget
    is 128 to 32768), so none is its minimum, 128. Gemini 3 and later models take a level
    (thinkingLevel) of those the model offers: the wanted level (none and minimal MINIMAL, low LOW,
    medium MEDIUM, high, xhigh and max HIGH), else the nearest higher one the model offers, else its
    highest:

        reasoning_effort   none     minimal  low  medium  high
        gemini-3-flash*    MINIMAL  MINIMAL  LOW  MEDIUM  HIGH   (MINIMAL, LOW, MEDIUM, HIGH)
        gemini-3-pro*      LOW      LOW      LOW  HIGH    HIGH   (LOW and HIGH only)
        other (3.1 Pro..)  LOW      LOW      LOW  MEDIUM  HIGH   (LOW, MEDIUM, HIGH: MINIMAL is not
                                                                  offered by every model)

    includeThoughts is set (except for none) so the thought summaries come back as reasoning;
  - tools -> `[{functionDeclarations: [{name, description?, parametersJsonSchema?}]}]` (function
    tools only); tool_choice auto/none/required/{function} -> `toolConfig.functionCallingConfig`
    {mode AUTO, NONE, ANY, ANY + allowedFunctionNames};
  - refused (422): logit_bias, audio output, prediction, web_search_options, non-function tools.
    Dropped: parallel_tool_calls, user, store, metadata, service_tier, stream_options, image detail.
- Embeddings: `POST …/publishers/google/models/{model}:predict` with `{instances: [{content,
  task_type?, title?}], parameters: {autoTruncate, outputDimensionality?}}`, one instance per input
  text; gemini-embedding-* models take one instance per request (Vertex's limit; other models take
  up to 250), so several inputs for one are refused (422) rather than sent to be refused or split.
  `dimensions` -> outputDimensionality. autoTruncate is false unless the request says
  `auto_truncate: true` (OpenAI refuses an over-long input rather than embedding part of it).
  `task_type` and `title` (request extensions, as Envoy AI Gateway takes them; the title only with
  RETRIEVAL_DOCUMENT) apply to every instance; input items may also be objects `{content,
  task_type?, title?}`. Token arrays are refused (422).
- Tokenize (vLLM's `POST /tokenize`): `POST …/publishers/google/models/{model}:countTokens` with
  `{contents, systemInstruction?, tools?}`: `{prompt}` as one user turn of text, `{messages,
  tools?}` converted as for chat. vLLM's other fields (add_special_tokens,
  add_generation_prompt, return_token_strs, chat_template...) are tokenizer options with no
  Gemini counterpart and are ignored; a request with both or neither of prompt and messages, or an
  empty prompt (Gemini counts no empty text), is a 400.

Responses:

- generateContent -> chat.completion: each candidate is a choice (its `index`); text parts ->
  `content`; `thought: true` parts -> `reasoning_content` (not in OpenAI's schema: the field
  DeepSeek, vLLM and LiteLLM use, as the other translators here); functionCall parts ->
  `tool_calls` (id: Gemini's functionCall.id, else `call_<responseId>_<n>` (`call_<n>` without a
  responseId), n counting the choice's calls; arguments the JSON of `args`; a part's
  thoughtSignature -> `extra_content.google.thought_signature`). Thought signatures on text parts
  cannot be carried by an OpenAI client and are dropped. finishReason: STOP -> stop (tool_calls
  when the choice has calls), MAX_TOKENS -> length, SAFETY, RECITATION, BLOCKLIST,
  PROHIBITED_CONTENT, SPII, IMAGE_SAFETY and the other filters -> content_filter, anything else ->
  stop. A prompt Gemini blocked (no candidates, promptFeedback.blockReason) is one choice with no
  content and finish_reason content_filter. usageMetadata -> usage (usage.from_gemini); the model is
  modelVersion, else the request's model. logprobsResult -> OpenAI logprobs.
- streamGenerateContent?alt=sse: each `data:` GenerateContentResponse -> chat.completion.chunk
  events (the role first per choice, then content / reasoning_content / tool_calls deltas with
  their index, then the finish_reason). The stream is complete once every choice had its
  finishReason: when it ends, the usage chunk (with include_usage) and `[DONE]` go out. An error
  object in the stream ends it with an OpenAI error event; a stream that ends before a finishReason
  gets no [DONE] from here (the router phase adds its error event).
- :predict -> OpenAI embedding list, each vector as floats or, for encoding_format base64,
  little-endian float32 in base64 (base.embedding_value); usage: the sum of the predictions'
  statistics.token_count.
- :countTokens `{totalTokens, ...}` -> vLLM's TokenizeResponse `{"count": totalTokens,
  "max_model_len": null, "tokens": []}`: Vertex counts tokens but gives neither the token ids nor
  the model's context length, so `tokens` is empty and `max_model_len` null (never made up).
- Errors: Google's JSON error -> OpenAI error with the same status (vertex.vertex_openai_error).
"""

from __future__ import annotations

import mimetypes
import re
import time
import uuid
from typing import Any
from urllib.parse import urlparse

import orjson

from ..errors import GatewayError
from ..sse import Event, encode_event
from ..usage import TokenUsage, from_gemini, to_openai_chat
from .base import (
    InvalidRequest,
    RequestContext,
    ResponseContext,
    ResponseTranslator,
    SSEResponseTranslator,
    TranslatedRequest,
    TranslationError,
    append_turn,
    base64_data_url,
    chat_chunk,
    dump_json,
    embedding_value,
    load_json,
    max_output_tokens,
    number,
    parse_request_json,
    positive_int,
    reject_legacy_functions,
    success_json,
    tool_call_arguments,
    tool_call_function,
)
from .vertex import GOOGLE, vertex_openai_error, vertex_path

BACKEND = "GCP Vertex AI Gemini backends"
GENERATE = "generateContent"
STREAM_GENERATE = "streamGenerateContent"
PREDICT = "predict"
COUNT_TOKENS = "countTokens"

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MODEL_ARMOR": "content_filter",
    # No OpenAI value says these: Envoy AI Gateway's names (an agent can tell them from an answer).
    "MALFORMED_FUNCTION_CALL": "malformed_function_call",
    "UNEXPECTED_TOOL_CALL": "unexpected_tool_call",
}

# reasoning_effort -> thinkingBudget for Gemini 1.x/2.x, thinkingLevel for later models. Above high
# (OpenAI's xhigh and max) is high: 24,576 is the largest budget every 2.5 model takes (Flash's top).
THINKING_BUDGETS = {
    "none": 0,
    "minimal": 1024,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": 24576,
    "max": 24576,
}
THINKING_LEVELS = {"none": "MINIMAL", "minimal": "MINIMAL", "low": "LOW", "medium": "MEDIUM"} | dict.fromkeys(
    ("high", "xhigh", "max"), "HIGH"
)
_BUDGET_MODELS = re.compile(r"(?:^|/)gemini-[12](?:[.\-]|$)")
# The lowest budget of models that cannot turn thinking off (Gemini 2.5 Pro: 128 to 32768).
_MIN_BUDGETS = ((re.compile(r"(?:^|/)gemini-2\.5-pro(?:-|$)"), 128),)
# Levels in rising order, and the levels each Gemini 3+ model offers (first match; the last is the rest).
LEVEL_ORDER = ("MINIMAL", "LOW", "MEDIUM", "HIGH")
_MODEL_LEVELS = (
    (re.compile(r"(?:^|/)gemini-3-flash(?:-|$)"), ("MINIMAL", "LOW", "MEDIUM", "HIGH")),
    (re.compile(r"(?:^|/)gemini-3-pro(?:-|$)"), ("LOW", "HIGH")),
    (re.compile(r""), ("LOW", "MEDIUM", "HIGH")),
)
# Embedding models that take a single instance per :predict request.
_ONE_INSTANCE_MODELS = re.compile(r"(?:^|/)gemini-embedding-")
# The thoughtSignature Google documents for a function call Gemini did not produce itself (another
# model's turn, a hand-built history): Gemini 3 skips checking it rather than answer 400.
SKIP_SIGNATURE = "skip_thought_signature_validator"
# Tool call ids this translator makes up when Gemini gives none (never sent back to Gemini).
_MADE_UP_CALL_ID = re.compile(r"call_(?:[A-Za-z0-9_\-]{1,128}_)?[0-9]+")

_AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mp3"}
_EMBEDDING_TASK_TYPES = frozenset(
    {
        "RETRIEVAL_QUERY",
        "RETRIEVAL_DOCUMENT",
        "SEMANTIC_SIMILARITY",
        "CLASSIFICATION",
        "CLUSTERING",
        "QUESTION_ANSWERING",
        "FACT_VERIFICATION",
        "CODE_RETRIEVAL_QUERY",
    }
)


def uses_thinking_budget(model: str) -> bool:
    """Gemini 1.x and 2.x models take thinkingBudget; later ones thinkingLevel."""
    return _BUDGET_MODELS.search(model.lower()) is not None


def thinking_budget(effort: str, model: str) -> int:
    """The thinkingBudget of a reasoning_effort, raised to the model's minimum when it has one."""
    budget = THINKING_BUDGETS[effort]
    lowered = model.lower()
    floor = next((low for pattern, low in _MIN_BUDGETS if pattern.search(lowered)), 0)
    return max(budget, floor)


def thinking_level(effort: str, model: str) -> str:
    """The thinkingLevel of a reasoning_effort among those the model offers: the wanted level, else
    the nearest higher one, else the model's highest."""
    lowered = model.lower()
    offered = next(levels for pattern, levels in _MODEL_LEVELS if pattern.search(lowered))
    wanted = LEVEL_ORDER.index(THINKING_LEVELS[effort])
    return next((level for level in offered if LEVEL_ORDER.index(level) >= wanted), offered[-1])


# ----------------------------------------------------------------------------- request: parts


def _data_url(url: str, what: str) -> dict[str, Any]:
    mime, data = base64_data_url(url, what)
    if not mime:
        raise TranslationError(f"{what} data URL without a media type")
    return {"inlineData": {"mimeType": mime, "data": data}}


def _media_part(url: Any, what: str) -> dict[str, Any]:
    if not isinstance(url, str) or not url:
        raise TranslationError(f"{what} without url")
    if url.startswith("data:"):
        return _data_url(url, what)
    if url.startswith(("gs://", "https://", "http://")):
        mime, _ = mimetypes.guess_type(urlparse(url).path)
        if mime is None:
            raise TranslationError(
                f"the media type of {what} URL {url[:100]!r} cannot be told from its file extension, which "
                f"{BACKEND} need (fileData.mimeType): use a URL ending in e.g. .png or .jpg, or a base64 data URL"
            )
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise TranslationError(f"unsupported {what} URL scheme (data:, gs:// and https:// are taken)")


def _text_parts(content: Any, what: str) -> list[dict[str, Any]]:
    """Text content (a string or text parts) as text parts; empty text is left out."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequest(f"invalid {what} content")
    parts = []
    for part in content:
        if isinstance(part, str):
            text = part
        elif isinstance(part, dict) and part.get("type") in ("text", "refusal"):
            text = str(part.get("text", part.get("refusal", "")) or "")
        else:
            raise TranslationError(f"{what} content supports text parts only")
        if text:
            parts.append({"text": text})
    return parts


def _user_parts(content: Any) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return _text_parts(content, "user")
    if not isinstance(content, list):
        raise InvalidRequest("invalid user message content")
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.extend(_text_parts([part], "user"))
        elif kind == "image_url":
            image = part.get("image_url")
            parts.append(_media_part(image.get("url") if isinstance(image, dict) else image, "image"))
        elif kind == "input_audio":
            audio = part.get("input_audio") if isinstance(part.get("input_audio"), dict) else {}
            mime = _AUDIO_FORMATS.get(str(audio.get("format", "")))
            if mime is None or not isinstance(audio.get("data"), str):
                raise TranslationError("input_audio needs base64 data and a format of wav or mp3")
            parts.append({"inlineData": {"mimeType": mime, "data": audio["data"]}})
        elif kind == "file":
            file = part.get("file") if isinstance(part.get("file"), dict) else {}
            if not isinstance(file.get("file_data"), str):
                raise TranslationError(f"file parts need file_data (a base64 data URL): {BACKEND} cannot read file ids")
            parts.append(_media_part(file["file_data"], "file"))
        else:
            raise TranslationError(f"content part type {kind!r} cannot be sent to {BACKEND}")
    return parts


def thought_signature(call: dict[str, Any]) -> str | None:
    """A tool call's Gemini thought signature, as Google's OpenAI-compatible API carries it."""
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) and signature else None


def _function_call_part(call: Any) -> tuple[str, str, dict[str, Any]]:
    """(call id, function name, functionCall part) of an assistant tool call."""
    fn = tool_call_function(call)
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise TranslationError("a tool call needs a function name")
    parsed = tool_call_arguments(fn)
    call_id = call.get("id") if isinstance(call.get("id"), str) else ""
    part: dict[str, Any] = {"functionCall": {"name": name, "args": parsed}}
    if gemini_call_id(call_id):
        part["functionCall"]["id"] = call_id
    signature = thought_signature(call)
    if signature is not None:
        part["thoughtSignature"] = signature
    return call_id, name, part


def _sign_unsigned_calls(contents: list[dict[str, Any]]) -> None:
    """Gemini 3+: the first functionCall of each model turn that carries no thoughtSignature gets
    SKIP_SIGNATURE (Gemini checks the first call of a step; parallel calls after it carry none)."""
    for content in contents:
        if content["role"] != "model":
            continue
        first = next((part for part in content["parts"] if "functionCall" in part), None)
        if first is not None and not first.get("thoughtSignature"):
            first["thoughtSignature"] = SKIP_SIGNATURE


def gemini_call_id(call_id: Any) -> bool:
    """Whether a tool call id may be Gemini's own functionCall.id (sent back to Gemini), rather than
    one this translator made up for a call Gemini gave no id (`call_<responseId>_<n>`)."""
    return isinstance(call_id, str) and bool(call_id) and _MADE_UP_CALL_ID.fullmatch(call_id) is None


def _function_response(output: Any) -> dict[str, Any]:
    """A tool's output as functionResponse.response, which must be an object."""
    if isinstance(output, str):
        try:
            value: Any = orjson.loads(output)
        except orjson.JSONDecodeError:
            value = output
    else:
        value = output
    return value if isinstance(value, dict) else {"content": value}


def _tool_result_part(msg: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    call_id = msg.get("tool_call_id")
    name = names.get(call_id) if isinstance(call_id, str) else None
    if name is None and isinstance(msg.get("name"), str) and msg["name"]:
        name = msg["name"]  # role "function" (OpenAI's older shape) names the function itself
    if name is None:
        raise TranslationError(
            f"tool message for tool_call_id {str(call_id)[:64]!r} follows no assistant tool call with that id: "
            f"{BACKEND} need the function's name"
        )
    content = msg.get("content")
    output = "".join(p["text"] for p in _text_parts(content, "tool")) if isinstance(content, list) else content
    response: dict[str, Any] = {"name": name, "response": _function_response(output if output is not None else "")}
    if gemini_call_id(call_id):
        response["id"] = call_id
    return {"functionResponse": response}


def _convert_messages(raw: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents) of OpenAI chat messages."""
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("messages must be a non-empty array")
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name, from the assistant turns so far
    for msg in raw:
        if not isinstance(msg, dict):
            raise InvalidRequest("invalid message")
        role = msg.get("role")
        content = msg.get("content")
        if role in ("system", "developer"):
            system.extend(_text_parts(content, str(role)))
        elif role == "user":
            append_turn(contents, "user", _user_parts(content), "parts")
        elif role == "assistant":
            parts = _text_parts(content, "assistant")
            calls = msg.get("tool_calls") or []
            if not isinstance(calls, list):
                raise InvalidRequest("tool_calls must be an array")
            for call in calls:
                call_id, name, part = _function_call_part(call)
                if call_id:
                    names[call_id] = name
                parts.append(part)
            append_turn(contents, "model", parts, "parts")
        elif role in ("tool", "function"):
            append_turn(contents, "user", [_tool_result_part(msg, names)], "parts")
        else:
            raise TranslationError(f"message role {role!r} cannot be sent to {BACKEND}")
    if not contents:
        raise TranslationError("no user or assistant messages with content")
    return system, contents


# ----------------------------------------------------------------------------- request: config


def _convert_tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise InvalidRequest("tools must be an array")
    declarations = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise TranslationError(f"only function tools can be sent to {BACKEND}")
        fn = tool.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise TranslationError("a function tool needs a name")
        declaration: dict[str, Any] = {"name": fn["name"]}
        if isinstance(fn.get("description"), str) and fn["description"]:
            declaration["description"] = fn["description"]
        if fn.get("parameters") is not None:
            declaration["parametersJsonSchema"] = fn["parameters"]
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else []


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        config: dict[str, Any] = {"mode": "AUTO"}
    elif choice == "none":
        config = {"mode": "NONE"}
    elif choice == "required":
        config = {"mode": "ANY"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict) and choice["function"].get("name"):
        config = {"mode": "ANY", "allowedFunctionNames": [str(choice["function"]["name"])]}
    else:
        raise TranslationError("unsupported tool_choice")
    return {"functionCallingConfig": config}


def _thinking_config(effort: Any, model: str) -> dict[str, Any] | None:
    if effort is None:
        return None
    if not isinstance(effort, str) or effort not in THINKING_BUDGETS:
        raise GatewayError(400, f"unsupported reasoning_effort {str(effort)[:20]!r}")
    if uses_thinking_budget(model):
        return {"thinkingBudget": thinking_budget(effort, model), "includeThoughts": effort != "none"}
    return {"thinkingLevel": thinking_level(effort, model), "includeThoughts": effort != "none"}


def _response_format(value: Any, config: dict[str, Any]) -> None:
    if value is None:
        return
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
        return
    if kind == "json_schema":
        spec = value.get("json_schema")
        config["responseMimeType"] = "application/json"
        if isinstance(spec, dict) and spec.get("schema") is not None:
            config["responseJsonSchema"] = spec["schema"]
        return
    raise TranslationError(f"response_format type {str(kind)[:30]!r} is not supported by {BACKEND}")


def _stop_sequences(stop: Any) -> list[str]:
    raw = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    return [s for s in raw if isinstance(s, str) and s]


def _generation_config(req: dict[str, Any], model: str) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for key, target in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        value = number(req, key)
        # A penalty of 0 is none, and left out: Gemini 2.5 and later refuse any other (many clients
        # send 0 by default); another value goes on, for Google to judge by the model.
        if value is not None and not (value == 0 and target.endswith("Penalty")):
            config[target] = value
    max_tokens = max_output_tokens(req)
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = _stop_sequences(req.get("stop"))
    if stop:
        config["stopSequences"] = stop
    n = positive_int(req, "n")
    if n is not None:
        config["candidateCount"] = n
    seed = req.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise GatewayError(400, "'seed' must be an integer")
        config["seed"] = seed
    _response_format(req.get("response_format"), config)
    top_logprobs = req.get("top_logprobs")
    if req.get("logprobs") is True:
        config["responseLogprobs"] = True
        if top_logprobs is not None:
            if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int) or not 0 <= top_logprobs <= 20:
                raise GatewayError(400, "'top_logprobs' must be an integer from 0 to 20")
            if top_logprobs:
                config["logprobs"] = top_logprobs
    elif top_logprobs is not None:
        raise GatewayError(400, "'top_logprobs' requires 'logprobs' to be true")
    thinking = _thinking_config(req.get("reasoning_effort"), model)
    if thinking is not None:
        config["thinkingConfig"] = thinking
    return config


def _reject_unsupported(req: dict[str, Any]) -> None:
    reject_legacy_functions(req, BACKEND)
    if req.get("logit_bias"):
        raise TranslationError(f"logit_bias is not supported by {BACKEND}")
    modalities = req.get("modalities")
    if req.get("audio") is not None or (isinstance(modalities, list) and "audio" in modalities):
        raise TranslationError(f"audio output is not supported by {BACKEND}")
    if req.get("prediction") is not None:
        raise TranslationError(f"predicted outputs (prediction) are not supported by {BACKEND}")
    if req.get("web_search_options") is not None:
        raise TranslationError(f"web_search_options is not supported by {BACKEND}")


def chat_to_gemini(req: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat completions request as a Gemini GenerateContentRequest (`model`, the effective
    model, goes in the path; here it only decides the thinking parameter)."""
    _reject_unsupported(req)
    system, contents = _convert_messages(req.get("messages"))
    if not uses_thinking_budget(model):
        _sign_unsigned_calls(contents)
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    config = _generation_config(req, model)
    if config:
        out["generationConfig"] = config
    tools = _convert_tools(req.get("tools"))
    if tools:
        out["tools"] = tools
        tool_config = _tool_config(req.get("tool_choice"))
        if tool_config is not None:
            out["toolConfig"] = tool_config
    return out


def translate_request(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    req = parse_request_json(body)
    out = chat_to_gemini(req, ctx.model)
    stream = req.get("stream") is True
    path = vertex_path(ctx.backend, GOOGLE, ctx.model, STREAM_GENERATE if stream else GENERATE)
    return TranslatedRequest(
        path=path + ("?alt=sse" if stream else ""),
        body=dump_json(out),
        set_headers={"content-type": "application/json"},
    )


# ----------------------------------------------------------------------------- request: embeddings


def _task_type(value: Any) -> str | None:
    if value is None:
        return None
    if value not in _EMBEDDING_TASK_TYPES:
        raise GatewayError(400, f"'task_type' must be one of {', '.join(sorted(_EMBEDDING_TASK_TYPES))}")
    return str(value)


def _instance(content: Any, task_type: str | None, title: Any) -> dict[str, Any]:
    if not isinstance(content, str):
        raise GatewayError(400, "'input' must be a string, an array of strings, or items {content, task_type, title}")
    instance: dict[str, Any] = {"content": content}
    if task_type is not None:
        instance["task_type"] = task_type
        # Vertex takes a title only for documents.
        if task_type == "RETRIEVAL_DOCUMENT" and isinstance(title, str) and title:
            instance["title"] = title
    return instance


def _instances(req: dict[str, Any]) -> list[dict[str, Any]]:
    value = req.get("input")
    items = [value] if isinstance(value, str | dict) else value
    if not isinstance(items, list) or not items:
        raise GatewayError(400, "'input' must be a string or a non-empty array of strings")
    if all(isinstance(i, int) and not isinstance(i, bool) for i in items) or all(isinstance(i, list) for i in items):
        raise TranslationError(f"token arrays are not supported by {BACKEND}: send text")
    task_type = _task_type(req.get("task_type"))
    out = []
    for item in items:
        if isinstance(item, dict):
            item_type = task_type or _task_type(item.get("task_type"))
            texts = item.get("content")
            for text in texts if isinstance(texts, list) else [texts]:
                out.append(_instance(text, item_type, item.get("title", req.get("title"))))
        else:
            out.append(_instance(item, task_type, req.get("title")))
    return out


def embeddings_to_predict(req: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI embeddings request as the text-embedding `:predict` body of `model`."""
    if req.get("encoding_format") not in (None, "float", "base64"):
        raise GatewayError(400, "'encoding_format' must be 'float' or 'base64'")
    auto_truncate = req.get("auto_truncate", False)
    if not isinstance(auto_truncate, bool):
        raise GatewayError(400, "'auto_truncate' must be a boolean")
    parameters: dict[str, Any] = {"autoTruncate": auto_truncate}
    dimensions = positive_int(req, "dimensions")
    if dimensions is not None:
        parameters["outputDimensionality"] = dimensions
    instances = _instances(req)
    if len(instances) > 1 and _ONE_INSTANCE_MODELS.search(model.lower()):
        raise TranslationError(
            f"{model} takes one input per request on {BACKEND}, got {len(instances)}: send them one by one"
        )
    return {"instances": instances, "parameters": parameters}


def translate_embeddings_request(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    req = parse_request_json(body)
    out = embeddings_to_predict(req, ctx.model)
    return TranslatedRequest(
        path=vertex_path(ctx.backend, GOOGLE, ctx.model, PREDICT),
        body=dump_json(out),
        set_headers={"content-type": "application/json"},
    )


# ----------------------------------------------------------------------------- request: tokenize


def tokenize_to_count_tokens(req: dict[str, Any]) -> dict[str, Any]:
    """A vLLM tokenize request ({prompt} or {messages, tools?}) as a Vertex CountTokensRequest."""
    prompt, messages = req.get("prompt"), req.get("messages")
    if (prompt is None) == (messages is None):
        raise GatewayError(400, "exactly one of 'prompt' or 'messages' is required")
    if prompt is not None:
        if not isinstance(prompt, str) or not prompt:
            raise GatewayError(400, "'prompt' must be a non-empty string")
        return {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    system, contents = _convert_messages(messages)
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools = _convert_tools(req.get("tools"))
    if tools:
        out["tools"] = tools
    return out


def translate_tokenize_request(ctx: RequestContext, body: bytes) -> TranslatedRequest:
    req = parse_request_json(body)
    out = tokenize_to_count_tokens(req)
    return TranslatedRequest(
        path=vertex_path(ctx.backend, GOOGLE, ctx.model, COUNT_TOKENS),
        body=dump_json(out),
        set_headers={"content-type": "application/json"},
    )


# ----------------------------------------------------------------------------- response


def finish_reason(reason: Any, has_tool_calls: bool) -> str:
    """A Gemini finishReason as an OpenAI finish_reason; unknown values are "stop"."""
    mapped = FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"
    return "tool_calls" if has_tool_calls and mapped == "stop" else mapped


def _call_id(response_id: str, n: int) -> str:
    return f"call_{response_id}_{n}" if response_id else f"call_{n}"


def tool_call(part: dict[str, Any], n: int, response_id: str) -> dict[str, Any]:
    """A functionCall part as the n-th OpenAI tool call of its choice."""
    fc = part["functionCall"]
    call_id = fc.get("id") if isinstance(fc.get("id"), str) and fc.get("id") else _call_id(response_id, n)
    call: dict[str, Any] = {
        "id": call_id,
        "type": "function",
        "function": {"name": str(fc.get("name") or ""), "arguments": dump_json(fc.get("args") or {}).decode()},
    }
    signature = part.get("thoughtSignature")
    if isinstance(signature, str) and signature:
        call["extra_content"] = {"google": {"thought_signature": signature}}
    return call


def _logprob(token: Any, logprob: Any) -> dict[str, Any]:
    text = token if isinstance(token, str) else ""
    value = logprob if isinstance(logprob, int | float) and not isinstance(logprob, bool) else 0.0
    return {"token": text, "logprob": float(value), "bytes": list(text.encode("utf-8"))}


def openai_logprobs(result: Any) -> dict[str, Any] | None:
    """Gemini's logprobsResult as OpenAI's choice logprobs ({"content": [...]})."""
    if not isinstance(result, dict):
        return None
    chosen = result.get("chosenCandidates")
    if not isinstance(chosen, list):
        return None
    raw_top = result.get("topCandidates")
    top: list[Any] = raw_top if isinstance(raw_top, list) else []
    content = []
    for i, candidate in enumerate(chosen):
        if not isinstance(candidate, dict):
            continue
        entry = _logprob(candidate.get("token"), candidate.get("logProbability"))
        alternatives = top[i].get("candidates") if i < len(top) and isinstance(top[i], dict) else None
        entry["top_logprobs"] = [
            _logprob(a.get("token"), a.get("logProbability"))
            for a in (alternatives if isinstance(alternatives, list) else [])
            if isinstance(a, dict)
        ]
        content.append(entry)
    return {"content": content}


def _parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _index(candidate: dict[str, Any]) -> int:
    """A candidate's index; Google's JSON leaves out the default, 0."""
    index = candidate.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) and index >= 0 else 0


def candidate_to_choice(candidate: dict[str, Any], response_id: str) -> dict[str, Any]:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in _parts(candidate):
        text = part.get("text")
        if part.get("thought") is True:
            if isinstance(text, str):
                thoughts.append(text)
        elif isinstance(text, str):
            texts.append(text)
        elif isinstance(part.get("functionCall"), dict):
            calls.append(tool_call(part, len(calls), response_id))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    return {
        "index": _index(candidate),
        "message": message,
        "finish_reason": finish_reason(candidate.get("finishReason"), bool(calls)),
        "logprobs": openai_logprobs(candidate.get("logprobsResult")),
    }


def _blocked(resp: dict[str, Any]) -> bool:
    feedback = resp.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def _response_id(resp: dict[str, Any]) -> str:
    value = resp.get("responseId")
    return value if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_\-]{1,128}", value) else ""


def _completion_id(response_id: str) -> str:
    return "chatcmpl-" + (response_id or uuid.uuid4().hex)


def gemini_to_chat(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """A GenerateContentResponse as a chat.completion (`model`: the one to name when Gemini names none)."""
    response_id = _response_id(resp)
    candidates = [c for c in resp.get("candidates") or [] if isinstance(c, dict)]
    choices = [candidate_to_choice(c, response_id) for c in candidates]
    if not choices:
        reason = "content_filter" if _blocked(resp) else "stop"
        choices = [
            {"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": reason, "logprobs": None}
        ]
    version = resp.get("modelVersion")
    return {
        "id": _completion_id(response_id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": version if isinstance(version, str) and version else model,
        "choices": sorted(choices, key=lambda c: c["index"]),
        "usage": to_openai_chat(from_gemini(resp.get("usageMetadata"))),
    }


class GeminiToOpenAIResponse(ResponseTranslator):
    """generateContent's GenerateContentResponse -> chat.completion."""

    def body(self, body: bytes) -> bytes | None:
        resp = success_json(body)
        out = gemini_to_chat(resp, self.ctx.effective_model)
        self.usage = from_gemini(resp.get("usageMetadata"))
        self.response_model = out["model"]
        return dump_json(out)

    def error(self, status: int, body: bytes) -> bytes:
        return vertex_openai_error(status, body)


class GeminiToOpenAIStream(SSEResponseTranslator):
    """streamGenerateContent?alt=sse -> OpenAI chat.completion.chunk events (see the module
    docstring for when the stream counts as complete)."""

    def __init__(self, ctx: ResponseContext) -> None:
        super().__init__(ctx)
        self.response_model = ctx.effective_model
        self._id = ""
        self._response_id = ""
        self._created = int(time.time())
        self._started: set[int] = set()  # choices whose role chunk went out
        self._finished: set[int] = set()  # choices whose finish_reason went out
        self._calls: dict[int, int] = {}  # choice -> tool calls so far
        self._usage_seen = False
        self._done = False  # [DONE] or an error event went out

    def _chunk(
        self, index: int, delta: dict[str, Any], finish: str | None = None, logprobs: dict[str, Any] | None = None
    ) -> bytes:
        choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish}
        if logprobs is not None:
            choice["logprobs"] = logprobs
        return self._event([choice])

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return chat_chunk(self._id, self._created, self.response_model, choices, **extra)

    def on_event(self, event: Event) -> bytes:
        if self._done:
            return b""
        obj = load_json(event.data.encode())
        if isinstance(obj, list) and len(obj) == 1:
            obj = obj[0]
        if not isinstance(obj, dict):
            return b""
        if isinstance(obj.get("error"), dict):
            self._done = True
            self.usage.known = False
            code = obj["error"].get("code")
            status = code if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600 else 500
            return encode_event(vertex_openai_error(status, dump_json(obj)))
        raw = obj.get("candidates")
        candidates = [c for c in raw if isinstance(c, dict)] if isinstance(raw, list) else []
        blocked = not candidates and _blocked(obj)
        if not self._id and (candidates or blocked):
            self._response_id = _response_id(obj)
            self._id = _completion_id(self._response_id)
            version = obj.get("modelVersion")
            if isinstance(version, str) and version:
                self.response_model = version
        usage = from_gemini(obj.get("usageMetadata"))
        if usage.known:
            usage.known = False  # final only once the stream is whole (on_end)
            self.usage = usage
            self._usage_seen = True
        out = [self._candidate(c) for c in candidates]
        if blocked and 0 not in self._finished:
            out.append(self._start(0))
            self._finished.add(0)
            out.append(self._chunk(0, {}, "content_filter"))
        return b"".join(out)

    def _start(self, index: int) -> bytes:
        if index in self._started:
            return b""
        self._started.add(index)
        return self._chunk(index, {"role": "assistant", "content": ""})

    def _candidate(self, candidate: dict[str, Any]) -> bytes:
        index = _index(candidate)
        if index in self._finished:
            return b""
        out = [self._start(index)]
        logprobs = openai_logprobs(candidate.get("logprobsResult"))
        for part in _parts(candidate):
            text = part.get("text")
            if part.get("thought") is True:
                if isinstance(text, str) and text:
                    out.append(self._chunk(index, {"reasoning_content": text}))
            elif isinstance(text, str):
                if text:
                    out.append(self._chunk(index, {"content": text}, logprobs=logprobs))
                    logprobs = None  # a chunk's logprobs go out once, with its first text
            elif isinstance(part.get("functionCall"), dict):
                n = self._calls.get(index, 0)
                self._calls[index] = n + 1
                call = {"index": n, **tool_call(part, n, self._response_id)}
                out.append(self._chunk(index, {"tool_calls": [call]}))
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and reason:
            self._finished.add(index)
            out.append(self._chunk(index, {}, finish_reason(reason, index in self._calls)))
        return b"".join(out)

    def on_end(self) -> bytes:
        if self._done or not self._finished or self._started - self._finished:
            return b""  # cut short: the router phase ends the client's stream with an error event
        self._done = True
        if self._usage_seen:
            self.usage.known = True
        out = b""
        if self.ctx.include_usage and self.usage.known:
            out += self._event([], usage=to_openai_chat(self.usage))
        return out + b"data: [DONE]\n\n"

    def error(self, status: int, body: bytes) -> bytes:
        return vertex_openai_error(status, body)


def _prediction_vector(prediction: Any) -> tuple[list[float], int | None]:
    embeddings = prediction.get("embeddings") if isinstance(prediction, dict) else None
    values = embeddings.get("values") if isinstance(embeddings, dict) else None
    if not isinstance(values, list) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise ValueError("a prediction holds no embedding values")
    assert isinstance(embeddings, dict)
    stats = embeddings.get("statistics")
    count = stats.get("token_count") if isinstance(stats, dict) else None
    tokens = int(count) if isinstance(count, int | float) and not isinstance(count, bool) and count >= 0 else None
    return [float(v) for v in values], tokens


class GeminiEmbeddingsToOpenAIResponse(ResponseTranslator):
    """:predict's predictions -> OpenAI's embedding list."""

    def body(self, body: bytes) -> bytes | None:
        resp = load_json(body)
        predictions = resp.get("predictions") if isinstance(resp, dict) else None
        if not isinstance(predictions, list):
            raise ValueError("the backend's answer holds no predictions")
        data = []
        counts: list[int] = []
        for i, prediction in enumerate(predictions):
            values, tokens = _prediction_vector(prediction)
            if tokens is not None:
                counts.append(tokens)
            data.append(
                {"object": "embedding", "index": i, "embedding": embedding_value(values, self.ctx.base64_embeddings)}
            )
        tokens_total = sum(counts)
        if counts:
            self.usage = TokenUsage(input_tokens=tokens_total, total_tokens=tokens_total, known=True)
        self.response_model = self.ctx.effective_model
        out = {
            "object": "list",
            "data": data,
            "model": self.response_model,
            "usage": {"prompt_tokens": tokens_total, "total_tokens": tokens_total},
        }
        return dump_json(out)

    def error(self, status: int, body: bytes) -> bytes:
        return vertex_openai_error(status, body)


class GeminiCountTokensToTokenizeResponse(ResponseTranslator):
    """:countTokens' totalTokens -> vLLM's TokenizeResponse (no token ids: Vertex gives none)."""

    def body(self, body: bytes) -> bytes | None:
        resp = load_json(body)
        total = resp.get("totalTokens", 0) if isinstance(resp, dict) else None
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise ValueError("the backend's countTokens answer has no totalTokens")
        self.response_model = self.ctx.effective_model
        return dump_json({"count": total, "max_model_len": None, "tokens": []})

    def error(self, status: int, body: bytes) -> bytes:
        return vertex_openai_error(status, body)
