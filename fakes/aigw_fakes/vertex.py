"""A stand-in for Google Vertex AI's prediction API (a test stand-in, not Google): Gemini, text
embeddings and Claude on Vertex, on loopback.

    POST /v1/projects/{p}/locations/{r}/publishers/google/models/{m}:generateContent
    POST /v1/projects/{p}/locations/{r}/publishers/google/models/{m}:streamGenerateContent?alt=sse
    POST /v1/projects/{p}/locations/{r}/publishers/google/models/{m}:predict          (text embeddings)
    POST /v1/projects/{p}/locations/{r}/publishers/google/models/{m}:countTokens
    POST /v1/projects/{p}/locations/{r}/publishers/anthropic/models/{m}:rawPredict
    POST /v1/projects/{p}/locations/{r}/publishers/anthropic/models/{m}:streamRawPredict
    POST /v1/projects/{p}/locations/{r}/publishers/anthropic/models/count-tokens:rawPredict

**Auth**: ``Authorization: Bearer <token>`` where the token is one ``token_validator`` accepts (a
``google_auth.GoogleAuthFake``, which issues expiring tokens) or equals ``token=``; otherwise 401
``UNAUTHENTICATED`` in Google's error shape ``{"error": {"code", "message", "status"}}``. A user's
token (``user_tokens``, e.g. ``GoogleAuthFake.user_token``: gcloud's application default
credentials) without an ``x-goog-user-project`` header is 403 ``PERMISSION_DENIED`` "...requires a
quota project...", as Google APIs answer user credentials that name no quota project. With
``project=`` / ``region=`` set, another project or region in the path is 403 ``PERMISSION_DENIED``
/ 400 ``INVALID_ARGUMENT``, as Vertex answers. Fault injection (``common``): 429 is
``RESOURCE_EXHAUSTED``, 503 ``UNAVAILABLE``, 500 ``INTERNAL``, and so on.

**Gemini** (GenerateContentRequest; proto JSON, so lowerCamel and snake_case field names are both
accepted, as Vertex's parser does): unknown fields at the top level, in ``generationConfig``, in
contents and parts are 400 ``Invalid JSON payload received. Unknown name "x"...``; ``contents``
required and non-empty; roles ``user``/``model`` that alternate, starting with ``user``; every
content has non-empty ``parts``, each part exactly one of text / inlineData / fileData /
functionCall / functionResponse (plus ``thought`` / ``thoughtSignature``); a ``functionResponse``
must follow a model turn's ``functionCall`` of the same name (and, when it carries an ``id``, one of
that turn's ``functionCall.id``); ``tools[].functionDeclarations`` need
valid names (unique) and only one of ``parameters`` / ``parametersJsonSchema``;
``toolConfig.functionCallingConfig.mode`` AUTO/ANY/NONE/VALIDATED with ``allowedFunctionNames`` only
for ANY/VALIDATED; generationConfig ranges (temperature 0..2, topP 0..1, candidateCount 1..8,
maxOutputTokens >= 1); no presencePenalty or frequencyPenalty but 0 for gemini-2.5 and later
(``Penalty is not enabled for models/...``). ``thinkingConfig`` takes ``thinkingBudget`` or ``thinkingLevel``, not both;
the model's own limits: gemini-2.5-pro cannot turn thinking off (budget 128..32768, or -1 dynamic),
gemini-3-pro takes only LOW and HIGH levels, gemini-3.1-pro no MINIMAL. For ``gemini-3*`` models, a
model turn's ``functionCall`` parts of the current turn must carry the ``thoughtSignature`` the fake
gave them (400 otherwise, as Gemini 3 requires), or the validator-skipping signature Google
documents for turns the model did not produce (``skip_thought_signature_validator``), and any other
signature the fake never gave is 400 ``Corrupted thought signature``.

Answers are deterministic: text ``Fake <model> reply to: <last user text>``, or with
``responseMimeType: application/json`` a JSON value satisfying ``responseJsonSchema`` (or
``responseSchema``; an object without either); a ``functionCall`` (args
built from the declaration's schema) when tools are declared and the mode is ANY (always, as Gemini
constrains ANY to function calls: the one the last user text names, else the first), VALIDATED and
the last turn is not function responses, or AUTO and the last user text names a declared function
(otherwise text: a last turn of function responses gets text but in ANY mode); thought parts
(``thought: true``) first when ``thinkingConfig.includeThoughts`` is true, and
``usageMetadata.thoughtsTokenCount`` whenever ``thinkingConfig`` asks for thinking (budget not 0);
``maxOutputTokens`` truncates (``MAX_TOKENS``), ``stopSequences`` cut, ``candidateCount`` gives several
candidates; with ``responseLogprobs`` each candidate has its ``logprobsResult`` (a word a token, the
chosen ones, and with ``logprobs: N`` the N likeliest at each step) and ``avgLogprobs`` (not streamed).
The SSE stream sends each thought and text part in several ``data:`` events, a function
call whole in one, and ``finishReason`` + ``usageMetadata`` in the last; without ``alt=sse`` the
stream is a JSON array of the same chunks.

**Embeddings** (``:predict``): ``instances: [{content, task_type?, title?}]`` (at most 250; one
for ``gemini-embedding-*`` models, as Vertex documents, 400 otherwise),
``parameters: {outputDimensionality?, autoTruncate?}``; answers ``predictions[].embeddings {values,
statistics {token_count, truncated}}`` and ``metadata.billableCharacterCount``.

**countTokens** (Gemini): a CountTokensRequest ``{contents, systemInstruction?, tools?,
generationConfig?, model?, instances?}``, unknown fields 400 as above; ``contents`` required and
non-empty, each content and part checked as for generateContent (turn order is not: Vertex counts
any), systemInstruction, generationConfig and tools too.
Answers ``{totalTokens, totalBillableCharacters, promptTokensDetails: [{modality: "TEXT",
tokenCount}]}``, totalTokens counted as generateContent's ``usageMetadata.promptTokenCount``.

**Claude on Vertex** (rawPredict): the Anthropic Messages body with ``anthropic_version`` required and
``vertex-2023-10-16`` (Google's documented value) or a dated API version such as the anthropic SDK's
Vertex client sends by default (``2026-10-21`` in anthropic 2.15); ``model`` in the body is
rejected (the model is in the URL) except on count-tokens, where it is required; an
``anthropic-beta`` value Vertex does not take is a 400 (CLAUDE_BETAS); then the Anthropic
fake's validation and answers (Anthropic errors and SSE events, ``streamRawPredict`` or ``stream: true`` streams).
"""

from __future__ import annotations

import datetime
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .anthropic import COUNT_FIELDS, MESSAGES_FIELDS, AnthropicError, AnthropicFake
from .common import (
    JSON_BODY,
    JSON_ERROR,
    RAW_BODY,
    FakeProvider,
    SSEWriter,
    count_tokens,
    example_from_schema,
    fake_reply,
    is_num,
    random_id,
    split_words,
    stable_id,
    truncate_words,
)
from .openai import OpenAIFake

ANTHROPIC_VERSION = "vertex-2023-10-16"
# Dated Anthropic API versions (YYYY-MM-DD), which the anthropic SDK's Vertex client sends by default.
DATED_VERSION = re.compile(r"^20\d\d-\d\d-\d\d$")
_PATH = re.compile(
    r"^/v1/projects/([^/]+)/locations/([^/]+)/publishers/(google|anthropic)/models/([^/:]+):([A-Za-z]+)$"
)
GOOGLE_METHODS = ("generateContent", "streamGenerateContent", "predict", "countTokens")
# The embedding task types Vertex takes (an instance's task_type).
_TASK_TYPES = frozenset(
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
ANTHROPIC_METHODS = ("rawPredict", "streamRawPredict")
# The anthropic-beta values Claude on Vertex takes; any other is its 400 "Unexpected value(s)"
# (first-party betas such as effort-2025-11-24 or prompt-caching-scope-2026-01-05 among them), and
# token counting takes no web search.
CLAUDE_BETAS = frozenset(
    {
        "computer-use-2024-10-22",
        "computer-use-2025-01-24",
        "token-efficient-tools-2025-02-19",
        "interleaved-thinking-2025-05-14",
        "output-128k-2025-02-19",
        "context-1m-2025-08-07",
        "context-management-2025-06-27",
        "web-search-2025-03-05",
    }
)
CLAUDE_COUNT_TOKENS_BETAS = CLAUDE_BETAS - {"web-search-2025-03-05"}
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
STATUS_MESSAGES = {
    429: "Resource exhausted. Please try again later. Please refer to "
    "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.",
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
    504: "Deadline exceeded.",
}
UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid "
    "authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
QUOTA_HEADER = "x-goog-user-project"
SKIP_SIGNATURE = "skip_thought_signature_validator"
QUOTA_PROJECT_REQUIRED = (
    "Your application is authenticating by using local Application Default Credentials. The "
    "aiplatform.googleapis.com API requires a quota project, which is not set by default. To learn how to set your "
    "quota project, see https://cloud.google.com/docs/authentication/adc-troubleshooting/user-creds ."
)


def _fields(*names: str) -> dict[str, str]:
    """Proto JSON names -> canonical lowerCamel: each lowerCamel name and its snake_case form."""
    out = {}
    for name in names:
        out[name] = name
        out[re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)] = name
    return out


REQUEST_FIELDS = _fields(
    "contents", "systemInstruction", "tools", "toolConfig", "safetySettings", "generationConfig",
    "cachedContent", "labels", "modelArmorConfig",
)  # fmt: skip
# CountTokensRequest (v1): `model` / `instances` (for non-Gemini models) are accepted and unused.
COUNT_REQUEST_FIELDS = _fields("contents", "systemInstruction", "tools", "generationConfig", "model", "instances")
CONTENT_FIELDS = _fields("role", "parts")
# The image types Gemini reads; another ("image/jpg", "image/gif") is its 400 "Unsupported MIME type".
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
PART_DATA = _fields(
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode", "codeExecutionResult"
)
PART_FIELDS = {**PART_DATA, **_fields("thought", "thoughtSignature", "videoMetadata", "mediaResolution")}
GENERATION_FIELDS = _fields(
    "temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences", "presencePenalty",
    "frequencyPenalty", "seed", "responseMimeType", "responseSchema", "responseJsonSchema", "responseLogprobs",
    "logprobs", "responseModalities", "thinkingConfig", "mediaResolution", "speechConfig", "audioTimestamp",
    "routingConfig", "enableAffectiveDialog", "imageConfig", "modelConfig",
)  # fmt: skip
THINKING_FIELDS = _fields("thinkingBudget", "includeThoughts", "thinkingLevel")
TOOL_FIELDS = _fields(
    "functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution", "retrieval", "urlContext",
    "enterpriseWebSearch", "googleMaps", "computerUse",
)  # fmt: skip
DECLARATION_FIELDS = _fields("name", "description", "parameters", "parametersJsonSchema", "response",
                             "responseJsonSchema", "behavior")  # fmt: skip
FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")
MODES = ("MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED")
# Claude on Vertex: the Messages fields minus the model (in the URL) and what Vertex does not offer,
# plus the version key.
RAW_PREDICT_FIELDS = (
    MESSAGES_FIELDS - {"model", "container", "mcp_servers", "service_tier", "inference_geo", "speed", "diagnostics",
                       "user_profile_id", "workspace_id"}
) | {"anthropic_version"}  # fmt: skip
COUNT_TOKENS_FIELDS = COUNT_FIELDS | {"anthropic_version"}


@dataclass
class VertexError(Exception):
    """An answer in Google's error shape."""

    status: int
    message: str


def _invalid(message: str) -> VertexError:
    return VertexError(400, message)


def _unknown(name: str, where: str) -> VertexError:
    at = f" at '{where}'" if where else ""
    return _invalid(f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.')


def _canonical(obj: Any, names: dict[str, str], where: str) -> dict[str, Any]:
    """An object with its proto JSON field names made lowerCamel; an unknown one is a 400."""
    if not isinstance(obj, dict):
        raise _invalid(f"Invalid JSON payload received. Expected an object{' at ' + repr(where) if where else ''}.")
    out = {}
    for key, value in obj.items():
        if key not in names:
            raise _unknown(key, where)
        out[names[key]] = value
    return out


class VertexFake(FakeProvider):
    """Fake Vertex AI; point a Backend (or ``google-genai`` / ``anthropic.AnthropicVertex`` with
    ``base_url``) at ``fake.base_url``."""

    provider = "vertex"

    def __init__(
        self,
        *,
        token: str | None = None,
        token_validator: Callable[[str], bool] | None = None,
        user_tokens: Callable[[str], bool] | None = None,
        project: str | None = None,
        region: str | None = None,
        reply: str | Callable[[str, dict[str, Any]], str] | None = None,
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(name=name, host=host, port=port)
        self.token = token
        self.token_validator = token_validator
        self.user_tokens = user_tokens
        self.project = project
        self.region = region
        self.reply = reply
        self._signatures: set[str] = set()  # the thoughtSignatures this fake gave
        # The Anthropic rules and answers for rawPredict bodies (never started).
        self._anthropic = AnthropicFake(api_key=None, reply=reply)

    @property
    def url(self) -> str:
        return self.base_url

    # ---- errors / auth -----------------------------------------------------------------------
    def error_response(self, status: int, message: str | None = None, **_: Any) -> web.Response:
        name = STATUS_NAMES.get(status, "UNKNOWN" if status >= 500 else "FAILED_PRECONDITION")
        text = message or STATUS_MESSAGES.get(status, f"Injected error {status} (by the fake).")
        return web.json_response({"error": {"code": status, "message": text, "status": name}}, status=status)

    def not_found_response(self, request: web.Request) -> web.Response:
        return web.Response(status=404, text="Not Found")

    def check_auth(self, request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            if self.token is not None and token == self.token:
                return None
            if self.token_validator is not None and self.token_validator(token):
                if self.user_tokens is not None and self.user_tokens(token) and not request.headers.get(QUOTA_HEADER):
                    return self.error_response(403, QUOTA_PROJECT_REQUIRED)
                return None
        return self.error_response(401, UNAUTHENTICATED)

    def stream_error_event(self) -> tuple[str | None, Any]:
        return None, {"error": {"code": 503, "message": STATUS_MESSAGES[503], "status": "UNAVAILABLE"}}

    # ---- routing -----------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/projects/{rest:.+}", self._dispatch)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        match = _PATH.match(request.path)
        if match is None:
            return self.not_found_response(request)
        project, region, publisher, model, method = match.groups()
        if method not in (GOOGLE_METHODS if publisher == "google" else ANTHROPIC_METHODS):
            return self.not_found_response(request)
        denied = self.check_auth(request)
        if denied is not None:
            return denied
        resource = f"projects/{project}/locations/{region}/publishers/{publisher}/models/{model}"
        if self.project is not None and project != self.project:
            return self.error_response(
                403, f"Permission 'aiplatform.endpoints.predict' denied on resource '//aiplatform.googleapis.com/"
                f"{resource}' (or it may not exist)."
            )  # fmt: skip
        if self.region is not None and region != self.region:
            return self.error_response(400, f"Location {region} is not supported by this endpoint ({self.region}).")
        if request.get(JSON_ERROR) or not request.get(RAW_BODY):
            return self.error_response(400, "Invalid JSON payload received.")
        body = request[JSON_BODY]
        if publisher == "anthropic":
            return await self._claude(request, model, method, body)
        try:
            if not isinstance(body, dict):
                raise _invalid("Invalid JSON payload received. Expected an object.")
            if method == "predict":
                return self._predict(model, body)
            if method == "countTokens":
                return self._count_tokens(body)
            stream = method == "streamGenerateContent"
            return await self._generate(request, model, body, stream=stream)
        except VertexError as e:
            return self.error_response(e.status, e.message)

    # ---- Gemini ------------------------------------------------------------------------------
    def validate(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        """A GenerateContentRequest checked as Vertex does; returns it with canonical field names
        (contents, parts, generationConfig, tools, toolConfig)."""
        req = _canonical(body, REQUEST_FIELDS, "")
        contents = req.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _invalid(
                "Unable to submit request because it must include at least one parts field, which describes the "
                "prompt input. Learn more: https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/gemini"
            )  # fmt: skip
        req["contents"] = [self._content(c, i) for i, c in enumerate(contents)]
        if "systemInstruction" in req:
            req["systemInstruction"] = self._system_instruction(req["systemInstruction"])
        self._check_turns(req["contents"])
        req["generationConfig"] = self._generation_config(req.get("generationConfig", {}))
        _check_thinking(model, req["generationConfig"].get("thinkingConfig", {}))
        _check_penalties(model, req["generationConfig"])
        req["tools"] = self._tools(req.get("tools", []))
        req["toolConfig"] = self._tool_config(req.get("toolConfig"), req["tools"])
        if model.startswith("gemini-3"):
            self._check_signatures(req["contents"])
        return req

    def _system_instruction(self, value: Any) -> dict[str, Any]:
        system = _canonical(value, CONTENT_FIELDS, "system_instruction")
        system["parts"] = self._parts(system.get("parts"), "system_instruction")
        return system

    def _content(self, content: Any, i: int) -> dict[str, Any]:
        where = f"contents[{i}]"
        c = _canonical(content, CONTENT_FIELDS, where)
        role = c.get("role", "user")
        if role not in ("user", "model"):
            raise _invalid(f"Please use a valid role: user, model. (got {role!r} in {where})")
        return {"role": role, "parts": self._parts(c.get("parts"), where)}

    def _parts(self, parts: Any, where: str) -> list[dict[str, Any]]:
        if not isinstance(parts, list) or not parts:
            raise _invalid(
                "Unable to submit request because it must include at least one parts field, which describes the "
                f"prompt input. ({where}.parts is empty)"
            )  # fmt: skip
        out = []
        for j, part in enumerate(parts):
            p = _canonical(part, PART_FIELDS, f"{where}.parts[{j}]")
            data = [k for k in p if k in PART_DATA.values()]
            if len(data) != 1:
                raise _invalid(f"{where}.parts[{j}]: a part must hold exactly one of {', '.join(sorted(PART_DATA))}.")
            if "text" in p and (not isinstance(p["text"], str) or not p["text"]):
                raise _invalid(
                    "Unable to submit request because it has an empty text parameter. Add a value to the parameter "
                    "and try again."
                )  # fmt: skip
            if "inlineData" in p:
                inline = p["inlineData"]
                if not isinstance(inline, dict) or (not inline.get("mimeType") and not inline.get("mime_type")):
                    raise _invalid(f"{where}.parts[{j}].inline_data: mime_type is required.")
                mime = str(inline.get("mimeType") or inline.get("mime_type"))
                if mime.startswith("image/") and mime not in IMAGE_TYPES:
                    raise _invalid(f"Unsupported MIME type: {mime}")
            if "fileData" in p:
                file = p["fileData"]
                if not isinstance(file, dict) or not (file.get("fileUri") or file.get("file_uri")):
                    raise _invalid(f"{where}.parts[{j}].file_data: file_uri is required.")
            for key in ("functionCall", "functionResponse"):
                if key in p:
                    value = p[key]
                    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
                        raise _invalid(f"{where}.parts[{j}].{key}: name is required.")
            if "functionResponse" in p and not isinstance(p["functionResponse"].get("response", {}), dict):
                raise _invalid(
                    f"Invalid value at '{where}.parts[{j}].function_response.response': expected a \"Struct\"."
                )
            if "functionCall" in p and not isinstance(p["functionCall"].get("args", {}), dict):
                raise _invalid(f"Invalid value at '{where}.parts[{j}].function_call.args': expected a \"Struct\".")
            out.append(p)
        return out

    @staticmethod
    def _check_turns(contents: list[dict[str, Any]]) -> None:
        if contents[0]["role"] != "user":
            raise _invalid(
                "Please ensure that multiturn requests alternate between user and model, starting with user."
            )
        for prev, cur in itertools.pairwise(contents):
            if prev["role"] == cur["role"]:
                raise _invalid("Please ensure that multiturn requests alternate between user and model.")
            responses = [p["functionResponse"]["name"] for p in cur["parts"] if "functionResponse" in p]
            if responses:
                calls = [p["functionCall"]["name"] for p in prev["parts"] if "functionCall" in p]
                if sorted(responses) != sorted(calls):
                    raise _invalid(
                        "Please ensure that the number of function response parts is equal to the number of function "
                        "call parts of the function call turn."
                    )  # fmt: skip
                call_ids = {p["functionCall"].get("id") for p in prev["parts"] if "functionCall" in p}
                for p in cur["parts"]:
                    answered = p.get("functionResponse", {}).get("id")
                    if answered is not None and answered not in call_ids:
                        raise _invalid(f"Function response id {answered!r} matches no function call id of the "
                                       "function call turn.")  # fmt: skip
        if any("functionResponse" in p for p in contents[0]["parts"]):
            raise _invalid("Please ensure that function response turn comes immediately after a function call turn.")

    def _check_signatures(self, contents: list[dict[str, Any]]) -> None:
        """Gemini 3: the function calls of the current turn (since the last user text) keep their
        signature, and a signature sent back must be one this fake gave."""
        start = max((i for i, c in enumerate(contents) if c["role"] == "user" and any("text" in p for p in c["parts"])),
                    default=0)  # fmt: skip
        for i, c in enumerate(contents[start:], start):
            calls = [p for p in c["parts"] if "functionCall" in p]
            for j, part in enumerate(c["parts"]):
                signature = part.get("thoughtSignature")
                if signature is not None:
                    with self._lock:
                        known = signature in self._signatures or signature == SKIP_SIGNATURE
                    if not known:
                        raise _invalid(f"Corrupted thought signature. Position in request: contents[{i}].parts[{j}].")
            if c["role"] == "model" and calls and not calls[0].get("thoughtSignature"):
                raise _invalid(
                    f"Function call is missing a thought_signature in functionCall parts. This is required for tools "
                    f"to work correctly, and missing thought_signature may lead to degraded model performance. "
                    f"Position in request: contents[{i}].parts[0]."
                )  # fmt: skip

    @staticmethod
    def _generation_config(config: Any) -> dict[str, Any]:
        g = _canonical(config, GENERATION_FIELDS, "generation_config")
        for key, lo, hi in (("temperature", 0, 2), ("topP", 0, 1)):
            if key in g and (not is_num(g[key]) or not lo <= g[key] <= hi):
                raise _invalid(f"Unable to submit request because it has a {key} value of {g[key]} but the supported "
                               f"range is from {lo} (inclusive) to {hi + 0.000001} (exclusive).")  # fmt: skip
        if "candidateCount" in g and (not isinstance(g["candidateCount"], int) or not 1 <= g["candidateCount"] <= 8):
            raise _invalid("Unable to submit request because candidateCount must be in the range 1 to 8.")
        if "maxOutputTokens" in g and (not isinstance(g["maxOutputTokens"], int) or g["maxOutputTokens"] < 1):
            raise _invalid("Unable to submit request because it has a maxOutputTokens value below 1.")
        stops = g.get("stopSequences", [])
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > 5:
            raise _invalid("Unable to submit request because stopSequences must be at most 5 strings.")
        if "thinkingConfig" in g:
            g["thinkingConfig"] = _canonical(g["thinkingConfig"], THINKING_FIELDS, "generation_config.thinking_config")
        return g

    @staticmethod
    def _tools(tools: Any) -> list[dict[str, Any]]:
        if not isinstance(tools, list):
            raise _invalid("Invalid value at 'tools': expected a list.")
        declarations: list[dict[str, Any]] = []
        for i, tool in enumerate(tools):
            t = _canonical(tool, TOOL_FIELDS, f"tools[{i}]")
            for j, decl in enumerate(t.get("functionDeclarations") or []):
                d = _canonical(decl, DECLARATION_FIELDS, f"tools[{i}].function_declarations[{j}]")
                name = d.get("name")
                if not isinstance(name, str) or not FUNCTION_NAME.match(name):
                    raise _invalid(
                        f"* GenerateContentRequest.tools[{i}].function_declarations[{j}].name: Invalid function name. "
                        "Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores "
                        "(_), dots (.), colons (:) or dashes (-), with a maximum length of 128."
                    )  # fmt: skip
                if "parameters" in d and "parametersJsonSchema" in d:
                    raise _invalid(
                        f"tools[{i}].function_declarations[{j}]: parameters and parameters_json_schema are exclusive."
                    )
                if any(x["name"] == name for x in declarations):
                    raise _invalid(f"Duplicate function declaration found: {name}")
                declarations.append(d)
        return declarations

    @staticmethod
    def _tool_config(config: Any, declarations: list[dict[str, Any]]) -> dict[str, Any]:
        if config is None:
            return {"mode": "AUTO", "allowed": []}
        tc = _canonical(config, _fields("functionCallingConfig", "retrievalConfig"), "tool_config")
        fcc = _canonical(
            tc.get("functionCallingConfig", {}), _fields("mode", "allowedFunctionNames"),
            "tool_config.function_calling_config",
        )  # fmt: skip
        mode = fcc.get("mode", "AUTO")
        if mode not in MODES:
            raise _invalid(f"Invalid value at 'tool_config.function_calling_config.mode' ({mode}).")
        allowed = fcc.get("allowedFunctionNames", [])
        if allowed and mode not in ("ANY", "VALIDATED"):
            raise _invalid(
                "Unable to submit request because function calling config's allowed_function_names can only be set "
                "when mode is ANY or VALIDATED."
            )  # fmt: skip
        names = {d["name"] for d in declarations}
        for name in allowed:
            if name not in names:
                raise _invalid(f"allowed_function_names contains {name!r}, which is not a declared function.")
        return {"mode": "AUTO" if mode == "MODE_UNSPECIFIED" else mode, "allowed": allowed}

    def _plan(self, model: str, req: dict[str, Any], index: int) -> tuple[list[dict[str, Any]], str, int, int]:
        """One candidate: (parts, finishReason, candidates tokens, thoughts tokens)."""
        last = req["contents"][-1]
        user_text = " ".join(p["text"] for p in last["parts"] if "text" in p) if last["role"] == "user" else ""
        g = req["generationConfig"]
        thinking = g.get("thinkingConfig", {})
        thinks = bool(thinking) and thinking.get("thinkingBudget", -1) != 0
        parts: list[dict[str, Any]] = []
        thoughts_tokens = 0
        if thinks:
            thought = f"Fake reasoning about: {user_text[:80]}".strip()
            thoughts_tokens = count_tokens(thought)
            if thinking.get("includeThoughts"):
                parts.append({"text": thought, "thought": True})
        call = self._function_to_call(req, user_text)
        if call is not None:
            part: dict[str, Any] = {"functionCall": call}
            if thinks or model.startswith("gemini-3"):
                part["thoughtSignature"] = stable_id("", call["name"], json.dumps(req["contents"]), length=40)
                with self._lock:
                    self._signatures.add(part["thoughtSignature"])
            parts.append(part)
            return parts, "STOP", 3 + count_tokens(json.dumps(call["args"])), thoughts_tokens
        if g.get("responseMimeType") == "application/json":
            # Structured output: JSON satisfying the schema asked for (an object when none).
            schema = g.get("responseJsonSchema") or _lower_types(g.get("responseSchema")) or {"type": "object"}
            text = json.dumps(example_from_schema(schema))
        else:
            text = fake_reply(self.reply, model, req, user_text)
        if index and not text.startswith(("{", "[")):
            text = f"{text} (candidate {index})"
        finish = "STOP"
        for seq in g.get("stopSequences", []):
            if seq and seq in text:
                text = text[: text.index(seq)]
                break
        if "maxOutputTokens" in g:
            text, cut = truncate_words(text, max(g["maxOutputTokens"] - thoughts_tokens, 0))
            finish = "MAX_TOKENS" if cut else finish
        if text:
            parts.append({"text": text})
        return parts, finish, count_tokens(text), thoughts_tokens

    @staticmethod
    def _function_to_call(req: dict[str, Any], user_text: str) -> dict[str, Any] | None:
        declarations, config = req["tools"], req["toolConfig"]
        if not declarations or config["mode"] == "NONE":
            return None
        last = req["contents"][-1]
        candidates = [d for d in declarations if not config["allowed"] or d["name"] in config["allowed"]]
        named = [d for d in candidates if d["name"].lower() in user_text.lower()]
        answered = any("functionResponse" in p for p in last["parts"])
        if config["mode"] == "ANY":  # Gemini always predicts a function call, results given or not
            chosen = (named or candidates)[0]
        elif config["mode"] == "VALIDATED" and not answered:
            chosen = candidates[0]
        elif named:
            chosen = named[0]
        else:
            return None
        schema = chosen.get("parametersJsonSchema") or chosen.get("parameters") or {"type": "object"}
        args = example_from_schema(_lower_types(schema))
        return {"name": chosen["name"], "args": args if isinstance(args, dict) else {}}

    def _prompt_tokens(self, req: dict[str, Any]) -> int:
        texts = [json.dumps(c["parts"]) for c in req["contents"]]
        if "systemInstruction" in req:
            texts.append(json.dumps(req["systemInstruction"]["parts"]))
        if req["tools"]:
            texts.append(json.dumps(req["tools"]))
        return max(1, sum(count_tokens(t) for t in texts))

    def answer(self, model: str, req: dict[str, Any]) -> dict[str, Any]:
        """The GenerateContentResponse of a validated request."""
        n = req["generationConfig"].get("candidateCount", 1)
        candidates, out_tokens, thought_tokens = [], 0, 0
        config = req["generationConfig"]
        for i in range(n):
            parts, finish, tokens, thoughts = self._plan(model, req, i)
            candidate = {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": i}
            if config.get("responseLogprobs"):
                candidate.update(logprobs_result(parts, config.get("logprobs", 0)))
            candidates.append(candidate)
            out_tokens, thought_tokens = out_tokens + tokens, thought_tokens + thoughts
        prompt = self._prompt_tokens(req)
        usage: dict[str, Any] = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": out_tokens,
            "totalTokenCount": prompt + out_tokens + thought_tokens,
            "trafficType": "ON_DEMAND",
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
            "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": out_tokens}],
        }
        if thought_tokens:
            usage["thoughtsTokenCount"] = thought_tokens
        return {
            "candidates": candidates,
            "usageMetadata": usage,
            "modelVersion": model,
            "createTime": datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
            "responseId": random_id("", 22),
        }

    async def _generate(
        self, request: web.Request, model: str, body: dict[str, Any], *, stream: bool
    ) -> web.StreamResponse:
        answer = self.answer(model, self.validate(model, body))
        if not stream:
            return web.json_response(answer)
        chunks = list(stream_chunks(answer))
        if request.query.get("alt") != "sse":
            return web.json_response(chunks)
        sse = SSEWriter(request, error_event=self.stream_error_event)
        for chunk in chunks:
            await sse.send(chunk)
        return await sse.finish()

    def _predict(self, model: str, body: dict[str, Any]) -> web.Response:
        body = _canonical(body, _fields("instances", "parameters"), "")
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            raise _invalid("instances must be a non-empty list.")
        if len(instances) > 250:
            raise _invalid("Unable to submit request because the number of instances is above the limit of 250.")
        if model.startswith("gemini-embedding-") and len(instances) > 1:
            raise _invalid(f"Unable to submit request because {model} supports only one instance per request.")
        params = _canonical(body.get("parameters", {}), _fields("outputDimensionality", "autoTruncate"), "parameters")
        # gemini-embedding models make up to 3072 dimensions (and that many unless asked); the
        # text-embedding and text-multilingual-embedding ones 768.
        most = 3072 if model.startswith("gemini-embedding-") else 768
        dims = params.get("outputDimensionality", most)
        if not isinstance(dims, int) or not 1 <= dims <= most:
            raise _invalid(f"outputDimensionality must be between 1 and {most} for {model}.")
        task_type = next((i.get("task_type") for i in instances if isinstance(i, dict) and "task_type" in i), None)
        if task_type is not None and task_type not in _TASK_TYPES:
            raise _invalid(f"Unsupported task_type {task_type!r}; expected one of {', '.join(sorted(_TASK_TYPES))}.")
        predictions, characters = [], 0
        for i, instance in enumerate(instances):
            inst = _canonical(instance, {"content": "content", "task_type": "task_type", "title": "title"},
                              f"instances[{i}]")  # fmt: skip
            content = inst.get("content")
            if not isinstance(content, str) or not content:
                raise _invalid(f"instances[{i}].content must be a non-empty string.")
            characters += len(content.replace(" ", ""))
            predictions.append(
                {
                    "embeddings": {
                        "values": OpenAIFake.embedding_vector(model, content, dims),
                        "statistics": {"token_count": float(count_tokens(content)), "truncated": False},
                    }
                }
            )
        return web.json_response({"predictions": predictions, "metadata": {"billableCharacterCount": characters}})

    def _count_tokens(self, body: dict[str, Any]) -> web.Response:
        req = _canonical(body, COUNT_REQUEST_FIELDS, "")
        contents = req.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _invalid("contents is required and must not be empty.")
        counted: dict[str, Any] = {"contents": [self._content(c, i) for i, c in enumerate(contents)]}
        if "systemInstruction" in req:
            counted["systemInstruction"] = self._system_instruction(req["systemInstruction"])
        self._generation_config(req.get("generationConfig", {}))
        counted["tools"] = self._tools(req.get("tools", []))
        total = self._prompt_tokens(counted)
        texts = [p["text"] for c in counted["contents"] for p in c["parts"] if isinstance(p.get("text"), str)]
        return web.json_response(
            {
                "totalTokens": total,
                "totalBillableCharacters": sum(len(t) for t in texts),
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}],
            }
        )

    # ---- Claude on Vertex --------------------------------------------------------------------
    async def _claude(self, request: web.Request, model: str, method: str, body: Any) -> web.StreamResponse:
        try:
            if not isinstance(body, dict):
                raise AnthropicError(400, "Input should be a valid dictionary")
            count = model == "count-tokens"
            if count and method != "rawPredict":
                return self.not_found_response(request)
            allowed = COUNT_TOKENS_FIELDS if count else RAW_PREDICT_FIELDS
            for key in body:
                if key not in allowed:
                    raise AnthropicError(400, f"{key}: Extra inputs are not permitted")
            betas = [b.strip() for b in request.headers.get("anthropic-beta", "").split(",") if b.strip()]
            unexpected = [b for b in betas if b not in (CLAUDE_COUNT_TOKENS_BETAS if count else CLAUDE_BETAS)]
            if unexpected:
                raise AnthropicError(
                    400,
                    f"Unexpected value(s) {', '.join(f'`{b}`' for b in unexpected)} for the `anthropic-beta` header. "
                    "Please consult our documentation at docs.anthropic.com or try again without the header.",
                )
            version = body.get("anthropic_version")
            if version is None:
                raise AnthropicError(400, "anthropic_version: Field required")
            if version != ANTHROPIC_VERSION and not (isinstance(version, str) and DATED_VERSION.match(version)):
                raise AnthropicError(400, f"anthropic_version: Input should be '{ANTHROPIC_VERSION}'")
            rest = {k: v for k, v in body.items() if k != "anthropic_version"}
            if count:
                return await self._anthropic.count_tokens(request, rest)
            stream = method == "streamRawPredict" or bool(rest.get("stream"))
            return await self._anthropic.messages(request, {**rest, "model": model, "stream": stream})
        except AnthropicError as e:
            return self._anthropic.error_response(e.status, e.message, type=e.type)


def _check_penalties(model: str, config: dict[str, Any]) -> None:
    """Gemini 2.5 and later refuse presence and frequency penalties other than 0 (which is no
    penalty, and passes)."""
    if re.match(r"gemini-(2\.5|[3-9])", model) and any(config.get(k) for k in ("presencePenalty", "frequencyPenalty")):
        raise _invalid(f"Penalty is not enabled for models/{model}")


def _check_thinking(model: str, thinking: dict[str, Any]) -> None:
    """What Vertex refuses in a thinkingConfig for the model (the documented limits of 2.5 Pro, 3 Pro
    and 3.1 Pro; other models take any budget or level here)."""
    budget, level = thinking.get("thinkingBudget"), thinking.get("thinkingLevel")
    if budget is not None and level is not None:
        raise _invalid("thinking_budget and thinking_level cannot be set together.")
    if model.startswith("gemini-2.5-pro") and budget is not None and budget != -1:
        if budget == 0:
            raise _invalid("Budget 0 is invalid. This model only works in thinking mode.")
        if not isinstance(budget, int) or not 128 <= budget <= 32768:
            raise _invalid(f"The thinking budget {budget} is invalid. Please choose a value between 128 and 32768.")
    offered = (
        ("LOW", "HIGH") if re.match(r"gemini-3-pro(-|$)", model)
        else ("LOW", "MEDIUM", "HIGH") if model.startswith("gemini-3.1-pro")
        else None
    )  # fmt: skip
    if level is not None and offered is not None and level not in offered:
        raise _invalid(f"Thinking level {level} is not supported for this model. Supported: {', '.join(offered)}.")


def _lower_types(schema: Any) -> Any:
    """An OpenAPI-style schema (``"type": "OBJECT"``, as Vertex's ``parameters`` takes) as JSON Schema."""
    if isinstance(schema, dict):
        return {k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_lower_types(v) for v in schema]
    return schema


def logprobs_result(parts: list[dict[str, Any]], top: int) -> dict[str, Any]:
    """A candidate's logprobsResult (and avgLogprobs) for its text, a word a token: each chosen one
    with a deterministic log probability, and with `top` (1-20) the `top` likeliest at each step,
    the chosen one first, as Vertex answers responseLogprobs and logprobs."""
    words = [w for p in parts if "text" in p and not p.get("thought") for w in split_words(p["text"])]
    chosen = [{"token": w, "tokenId": i, "logProbability": -0.05 * (1 + i % 7)} for i, w in enumerate(words)]
    result: dict[str, Any] = {"chosenCandidates": chosen}
    if top:
        result["topCandidates"] = [
            {
                "candidates": [
                    c,
                    *({"token": f"alt{k}", "logProbability": c["logProbability"] - k} for k in range(1, top)),
                ]
            }
            for c in chosen
        ]
    average = sum(c["logProbability"] for c in chosen) / len(chosen) if chosen else 0.0
    return {"logprobsResult": result, "avgLogprobs": average}


def stream_chunks(answer: dict[str, Any]) -> Any:
    """The streamGenerateContent chunks of an answer: thought and text parts in several pieces, a
    function call whole, finishReason and usageMetadata on the last chunk only."""
    pieces: list[tuple[int, dict[str, Any]]] = []
    for cand in answer["candidates"]:
        for part in cand["content"]["parts"]:
            if "text" in part:
                pieces.extend((cand["index"], {**part, "text": t}) for t in split_words(part["text"]))
            else:
                pieces.append((cand["index"], part))
    common = {"modelVersion": answer["modelVersion"], "createTime": answer["createTime"],
              "responseId": answer["responseId"]}  # fmt: skip
    last = pieces.pop() if pieces else None
    for index, part in pieces:
        yield {"candidates": [{"content": {"role": "model", "parts": [part]}, "index": index}], **common}
    final = []
    for cand in answer["candidates"]:
        entry: dict[str, Any] = {"finishReason": cand["finishReason"], "index": cand["index"]}
        if last is not None and last[0] == cand["index"]:
            entry["content"] = {"role": "model", "parts": [last[1]]}
        final.append(entry)
    yield {"candidates": final, "usageMetadata": answer["usageMetadata"], **common}
