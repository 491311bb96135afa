"""A stand-in for Cohere's v2 API (not Cohere): an aiohttp server on loopback for tests and demos.

Endpoints: ``POST /v2/chat`` (plain and streaming), ``POST /v2/embed``, ``POST /v2/rerank``. Every
error has Cohere's shape ``{"message": "..."}``; the status tells its kind (Cohere's SDKs map 400,
401, 404, 422, 429, 500... to their error classes and keep the body).

What it checks, like the real API:

* ``Authorization: Bearer <key>`` must carry the configured key: missing → 401 ``no api key
  supplied``, another → 401 ``invalid api token``.
* The body is a JSON object; fields the endpoint does not know → 400 ``invalid request: unknown
  field: parameter '<name>' is not a valid field``; ``model`` and each endpoint's required fields
  present and typed (400 ``invalid request: ...``).
* chat: ``messages`` a non-empty list of ``system``/``user``/``assistant``/``tool`` messages (user
  and system content a string or text parts; tool messages need ``tool_call_id``); ``max_tokens``
  a positive integer; ``temperature`` ≥ 0; ``p`` in 0.01..0.99; ``k`` in 0..500; at most 5
  ``stop_sequences``; ``stream`` a boolean.
* embed: ``input_type`` one of Cohere's; exactly one of ``texts``/``images``/``inputs`` (at most 96
  texts); ``embedding_types`` among float, int8, uint8, binary, ubinary, base64; ``truncate``
  NONE/START/END.
* rerank: ``query`` a non-empty string; ``documents`` a non-empty list of strings; ``top_n`` and
  ``max_tokens_per_doc`` positive integers.
* With ``models=`` given, an unknown model → 404 ``model '<m>' not found, ...``.

Answers are deterministic. chat: text from the model and the last user message (``max_tokens``
truncates, finish_reason ``MAX_TOKENS``), ``usage`` with ``billed_units`` and ``tokens`` (tokens
input = billed input + a fixed prompt-template overhead, as Cohere counts its template) and
``cached_tokens`` when configured. Tools are accepted but the fake always answers text. A stream is
``message-start``, ``content-start``, ``content-delta``..., ``content-end``, ``message-end`` (with
finish_reason and usage), each as ``event: <type>`` + ``data: {"type": <type>, ...}``; the in-stream
error (``x-fake-stream-error-after``) is a ``message-end`` with finish_reason ``ERROR``. embed:
vectors of ``dimensions`` derived from each text, ``meta.billed_units.input_tokens``. rerank: results
ordered by word overlap with the query, ``meta.billed_units.search_units`` (one per 100 documents)
and ``meta.tokens.input_tokens``. Cohere's answers name no model, and neither do these.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from .common import (
    JSON_BODY,
    JSON_ERROR,
    RAW_BODY,
    FakeProvider,
    SSEWriter,
    count_tokens,
    fake_reply,
    is_int,
    is_num,
    random_id,
    split_words,
    truncate_words,
)

CHAT_FIELDS = frozenset(
    {
        "model", "messages", "tools", "strict_tools", "documents", "citation_options", "response_format",
        "safety_mode", "max_tokens", "stop_sequences", "temperature", "seed", "frequency_penalty",
        "presence_penalty", "k", "p", "logprobs", "tool_choice", "thinking", "priority", "stream",
    }
)  # fmt: skip
EMBED_FIELDS = frozenset(
    {
        "model", "input_type", "texts", "images", "inputs", "max_tokens", "output_dimension", "embedding_types",
        "truncate", "priority",
    }
)  # fmt: skip
RERANK_FIELDS = frozenset({"model", "query", "documents", "top_n", "max_tokens_per_doc", "priority"})
INPUT_TYPES = frozenset({"search_document", "search_query", "classification", "clustering", "image"})
EMBEDDING_TYPES = frozenset({"float", "int8", "uint8", "binary", "ubinary", "base64"})
ROLES = frozenset({"system", "user", "assistant", "tool"})
# Tokens Cohere's prompt template adds to a chat's input (counted in usage.tokens, not billed).
TEMPLATE_TOKENS = 7
API_VERSION = {"version": "2"}

ERROR_MESSAGES = {
    400: "invalid request (injected by the fake)",
    401: "invalid api token",
    402: "Please add or update your payment method",
    403: "Forbidden (injected by the fake)",
    404: "Not Found",
    422: "unprocessable entity (injected by the fake)",
    429: "You are using a Trial key, which is limited to 10 API calls / minute.",
    500: "internal server error, this has been reported to our developers",
    503: "service unavailable (injected by the fake)",
}


class CohereError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _bad(message: str) -> CohereError:
    return CohereError(400, f"invalid request: {message}")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _words(text: str) -> set[str]:
    return {w for w in "".join(c.lower() if c.isalnum() else " " for c in text).split() if w}


def _unit_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic vector in [-1, 1) per dimension from the text's hash."""
    out: list[float] = []
    counter = 0
    while len(out) < dimensions:
        digest = hashlib.sha256(f"{counter}\x1f{text}".encode()).digest()
        out.extend(b / 128.0 - 1.0 for b in digest)
        counter += 1
    return [round(v, 6) for v in out[:dimensions]]


class CohereFake(FakeProvider):
    """Fake Cohere v2 API; give ``fake.base_url`` to ``cohere.ClientV2(base_url=...)`` (or post to
    ``fake.base_url + "/v2/rerank"`` with ``Authorization: Bearer <api_key>``)."""

    provider = "cohere"

    def __init__(
        self,
        *,
        api_key: str | None = "co-test-key",
        name: str | None = None,
        models: list[str] | tuple[str, ...] | None = None,
        dimensions: int = 8,
        cached_tokens: int = 0,
        reply: str | Callable[[str, dict[str, Any]], str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(name=name, host=host, port=port)
        self.api_key = api_key
        self.models = list(models) if models is not None else None
        self.dimensions = dimensions
        self.cached_tokens = cached_tokens
        self.reply = reply

    @property
    def url(self) -> str:
        return self.base_url

    # ---- errors / auth -----------------------------------------------------------------------
    def error_response(self, status: int, message: str | None = None, **_: Any) -> web.Response:
        return web.json_response({"message": message or ERROR_MESSAGES.get(status, f"error {status}")}, status=status)

    def not_found_response(self, request: web.Request) -> web.Response:
        return self.error_response(404, "Not Found")

    def check_auth(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        value = request.headers.get("Authorization", "")
        if not value.strip():
            return self.error_response(401, "no api key supplied")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.api_key:
            return self.error_response(401, "invalid api token")
        return None

    def stream_error_event(self) -> tuple[str | None, Any]:
        end = {"type": "message-end", "delta": {"finish_reason": "ERROR", "error": "internal server error"}}
        return "message-end", end

    # ---- routing -----------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/chat", self._wrap(self.chat, CHAT_FIELDS))
        app.router.add_post("/v2/embed", self._wrap(self.embed, EMBED_FIELDS))
        app.router.add_post("/v2/rerank", self._wrap(self.rerank, RERANK_FIELDS))

    def _wrap(self, fn: Callable[..., Any], fields: frozenset[str]) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            denied = self.check_auth(request)
            if denied is not None:
                return denied
            try:
                if request.get(JSON_ERROR) or not request.get(RAW_BODY):
                    raise _bad("could not parse the request body as JSON")
                body = request[JSON_BODY]
                if not isinstance(body, dict):
                    raise _bad("the request body must be a JSON object")
                for key in body:
                    if key not in fields:
                        raise _bad(f"unknown field: parameter '{key}' is not a valid field")
                model = body.get("model")
                if not isinstance(model, str) or not model:
                    raise _bad("model must be a non-empty string")
                if self.models is not None and model not in self.models:
                    raise CohereError(
                        404,
                        f"model '{model}' not found, make sure the correct model ID was used and that you "
                        "have access to the model.",
                    )
                return await fn(request, body)
            except CohereError as e:
                return self.error_response(e.status, e.message)

        return handler

    # ---- chat --------------------------------------------------------------------------------
    def _validate_chat(self, body: dict[str, Any]) -> str:
        """The last user text of a valid chat request."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad("messages must be a non-empty list")
        last_user = ""
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict):
                raise _bad(f"messages[{i}] must be an object")
            role = msg.get("role")
            if role not in ROLES:
                raise _bad(f"messages[{i}].role must be one of system, user, assistant, tool")
            content = msg.get("content")
            if role in ("system", "user"):
                if not isinstance(content, str | list) or (role == "system" and not _text_of(content)):
                    raise _bad(f"messages[{i}].content is required")
                if isinstance(content, list) and any(not isinstance(p, dict) or "type" not in p for p in content):
                    raise _bad(f"messages[{i}].content parts must be objects with a type")
                if role == "user":
                    if isinstance(content, str) and not content.strip():
                        raise _bad(f"messages[{i}].content must not be empty")
                    last_user = _text_of(content)
            elif role == "tool":
                if not isinstance(msg.get("tool_call_id"), str) or not msg["tool_call_id"]:
                    raise _bad(f"messages[{i}].tool_call_id is required")
            elif content is None and not msg.get("tool_calls"):
                raise _bad(f"messages[{i}] must have content or tool_calls")
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and (not is_int(max_tokens) or max_tokens < 1):
            raise _bad("max_tokens must be a positive integer")
        temperature = body.get("temperature")
        if temperature is not None and (not is_num(temperature) or temperature < 0):
            raise _bad("temperature must be a non-negative number")
        p = body.get("p")
        if p is not None and (not is_num(p) or not 0.01 <= p <= 0.99):
            raise _bad("p must be between 0.01 and 0.99")
        k = body.get("k")
        if k is not None and (not is_int(k) or not 0 <= k <= 500):
            raise _bad("k must be between 0 and 500")
        stops = body.get("stop_sequences")
        if stops is not None and (not isinstance(stops, list) or len(stops) > 5):
            raise _bad("stop_sequences must be a list of at most 5 strings")
        if "stream" in body and not isinstance(body["stream"], bool):
            raise _bad("stream must be a boolean")
        return last_user

    def _chat_answer(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = self._validate_chat(body)
        text = fake_reply(self.reply, body["model"], body, prompt)
        finish = "COMPLETE"
        if body.get("max_tokens") is not None:
            text, cut = truncate_words(text, body["max_tokens"])
            finish = "MAX_TOKENS" if cut else finish
        billed_in = sum(count_tokens(_text_of(m.get("content"))) for m in body["messages"])
        billed_out = count_tokens(text)
        usage: dict[str, Any] = {
            "billed_units": {"input_tokens": billed_in, "output_tokens": billed_out},
            "tokens": {"input_tokens": billed_in + TEMPLATE_TOKENS, "output_tokens": billed_out},
        }
        if self.cached_tokens:
            usage["cached_tokens"] = min(self.cached_tokens, billed_in + TEMPLATE_TOKENS)
        return {
            "id": random_id("", 32),
            "finish_reason": finish,
            "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
            "usage": usage,
        }

    async def chat(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        answer = self._chat_answer(body)
        if body.get("stream") is not True:
            return web.json_response(answer)
        sse = SSEWriter(request, error_event=self.stream_error_event)
        for event in chat_events(answer):
            await sse.send(event, event=event["type"])
        return await sse.finish()

    # ---- embed -------------------------------------------------------------------------------
    async def embed(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if body.get("input_type") not in INPUT_TYPES:
            raise _bad(f"input_type must be one of {', '.join(sorted(INPUT_TYPES))}")
        given = [k for k in ("texts", "images", "inputs") if body.get(k) is not None]
        if len(given) != 1:
            raise _bad("exactly one of texts, images or inputs must be given")
        items = body[given[0]]
        if not isinstance(items, list) or not items:
            raise _bad(f"{given[0]} must be a non-empty list")
        if given[0] == "texts":
            if any(not isinstance(t, str) for t in items):
                raise _bad("texts must be a list of strings")
            if len(items) > 96:
                raise _bad("too many texts - maximum number of texts is 96")
            texts = items
        else:
            texts = [str(item)[:200] for item in items]
        types = body.get("embedding_types", ["float"])
        if not isinstance(types, list) or not types or any(t not in EMBEDDING_TYPES for t in types):
            raise _bad(f"embedding_types must be a non-empty list of {', '.join(sorted(EMBEDDING_TYPES))}")
        if body.get("truncate") not in (None, "NONE", "START", "END"):
            raise _bad("truncate must be one of NONE, START, END")
        vectors = [_unit_vector(t, self.dimensions) for t in texts]
        embeddings = {kind: [_as_type(v, kind) for v in vectors] for kind in types}
        answer: dict[str, Any] = {
            "id": random_id("", 32),
            "embeddings": embeddings,
            "texts": texts if given[0] == "texts" else [],
            "meta": {"api_version": API_VERSION, "billed_units": {"input_tokens": sum(map(count_tokens, texts))}},
            "response_type": "embeddings_by_type",
        }
        return web.json_response(answer)

    # ---- rerank ------------------------------------------------------------------------------
    async def rerank(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise _bad("query must be a non-empty string")
        documents = body.get("documents")
        if not isinstance(documents, list) or not documents:
            raise _bad("documents must be a non-empty list")
        if any(not isinstance(d, str) for d in documents):
            raise _bad("documents must be a list of strings")
        for key in ("top_n", "max_tokens_per_doc"):
            value = body.get(key)
            if value is not None and (not is_int(value) or value < 1):
                raise _bad(f"{key} must be a positive integer")
        wanted = _words(query)
        scored = []
        for index, doc in enumerate(documents):
            words = _words(doc)
            overlap = len(wanted & words) / max(len(wanted | words), 1)
            scored.append((round(0.05 + 0.9 * overlap, 6), index))
        scored.sort(key=lambda s: (-s[0], s[1]))
        top_n = body.get("top_n") or len(scored)
        input_tokens = sum(count_tokens(query) + count_tokens(doc) for doc in documents)
        answer = {
            "id": random_id("", 32),
            "results": [{"index": index, "relevance_score": score} for score, index in scored[:top_n]],
            "meta": {
                "api_version": API_VERSION,
                "billed_units": {"search_units": -(-len(documents) // 100)},
                "tokens": {"input_tokens": input_tokens, "output_tokens": 0},
            },
        }
        return web.json_response(answer)


def _as_type(vector: list[float], kind: str) -> Any:
    if kind == "float":
        return vector
    if kind == "int8":
        return [max(-128, min(127, int(v * 128))) for v in vector]
    if kind == "uint8":
        return [max(0, min(255, int((v + 1) * 128))) for v in vector]
    if kind == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    bits = [1 if v >= 0 else 0 for v in vector]
    packed = [int("".join(map(str, bits[i : i + 8])).ljust(8, "0"), 2) for i in range(0, len(bits), 8)]
    return packed if kind == "ubinary" else [b - 256 if b > 127 else b for b in packed]


def chat_events(answer: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The v2 stream events of a chat answer, in Cohere's order."""
    text = answer["message"]["content"][0]["text"]
    start = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
    yield {"id": answer["id"], "type": "message-start", "delta": {"message": start}}
    yield {"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}}
    for piece in split_words(text):
        yield {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": piece}}}}
    yield {"type": "content-end", "index": 0}
    yield {"type": "message-end", "delta": {"finish_reason": answer["finish_reason"], "usage": answer["usage"]}}
