"""A stand-in for the AWS Bedrock Runtime API (a test stand-in, not AWS): an aiohttp server on loopback.

Endpoints (``{modelId}`` is one percent-encoded path segment, as SDKs send it: ``...-v1%3A0``, ARNs with
``%3A`` and ``%2F``; the fake decodes it)::

    POST /model/{modelId}/converse                      Converse (JSON)
    POST /model/{modelId}/converse-stream               ConverseStream (application/vnd.amazon.eventstream)
    POST /model/{modelId}/invoke                        InvokeModel, Anthropic-on-Bedrock body
    POST /model/{modelId}/invoke-with-response-stream   InvokeModelWithResponseStream, same body
    POST /model/{modelId}/invoke                        InvokeModel, Titan / Cohere embedding bodies
    POST /model/{modelId}/count-tokens                  CountTokens (Converse or base64 InvokeModel input)

**Authentication** is AWS Signature Version 4, verified as AWS does: the ``Authorization`` header
(``AWS4-HMAC-SHA256 Credential=<akid>/<yyyymmdd>/<region>/bedrock/aws4_request, SignedHeaders=...,
Signature=...``), ``X-Amz-Date`` within 5 minutes of now, ``X-Amz-Security-Token`` when the fake has a
session token, and the signature recomputed with botocore's ``SigV4Auth`` over the request as received
(method, ``Host`` header, raw path with its percent-encoding, query, the signed headers' values, the exact
body bytes). Rejections are 403 with AWS's error names: ``MissingAuthenticationTokenException``,
``IncompleteSignatureException``, ``UnrecognizedClientException`` (unknown key or token),
``InvalidSignatureException`` (wrong scope, expired date, signature mismatch; the mismatch message carries
the canonical request and string to sign AWS expected). ``api_key=`` also accepts a Bedrock API key as
``Authorization: Bearer <key>``. ``accept_credentials(...)`` adds temporary credentials (the STS fake
calls it for the credentials it issues), refused once expired with 403 ``ExpiredTokenException``.

**Errors** are ``{"message": "..."}`` with ``x-amzn-errortype: <Name>:http://internal.amazon.com/coral/
com.amazon.bedrock/`` (``.../com.amazon.coral.service/`` for the signature layer) and an
``x-amzn-requestid``. ``x-fake-status`` (see ``common``) maps 401 to AWS's answer for unknown credentials
(403 UnrecognizedClientException: AWS answers no 401), 400 ValidationException, 403
AccessDeniedException, 404 ResourceNotFoundException, 408 ModelTimeoutException, 424 ModelErrorException,
429 ThrottlingException, 500 InternalServerException, 503 ServiceUnavailableException.

**Converse validation** (400 ValidationException): unknown top-level keys, ``messages`` required and
non-empty, roles user/assistant alternating and starting with user, content blocks (``text`` non-blank,
``image`` format and base64 bytes, ``document``, ``toolUse``, ``toolResult``, ``reasoningContent``,
``cachePoint``, ``guardContent``; exactly one member each), toolUse only from the assistant and toolResult
only from the user, every toolUse answered by the next user turn and no toolResult without its toolUse,
``toolConfig`` required when the conversation holds tool blocks, ``system`` blocks (none for the models
that take no system prompt: Titan Text, Mistral 7B and Mixtral Instruct, Cohere Command), ``inferenceConfig``
(maxTokens >= 1, temperature and topP in 0..1, stopSequences strings), ``toolConfig`` (tools non-empty,
``toolSpec`` name pattern and ``inputSchema.json`` object, ``toolChoice`` auto/any/tool with a known name),
``additionalModelRequestFields`` an object (a Claude model's ``thinking`` as the Anthropic fake takes
it for that model), ``outputConfig`` (``textFormat`` json_schema with its schema as a JSON string,
``effort``), ``additionalModelResponseFieldPaths`` at most 10 non-empty JSON Pointers (RFC 6901);
by model family (AWS's feature tables), ``cachePoint`` refused (403) by the families without prompt
caching and Claude before 3.7 Sonnet and 3.5 Haiku, and in Nova's tools (400); a ``toolResult``'s
``status`` or images only for Claude and Nova; a user message with a document needs a text block.

**Answers** are deterministic: ``Fake <modelId> reply to: <last user text>`` (JSON of the schema
when ``outputConfig.textFormat`` asks for one); with tools and a last user
turn that is not tool results (or a forced ``toolChoice``) a ``toolUse`` block calling the first (or the
chosen) tool with input built from its schema, after a short text block for ``auto``
(``stopReason: tool_use``); a ``reasoningContent`` block first when ``additionalModelRequestFields`` asks
for ``thinking`` or ``reasoning_config``; ``maxTokens`` truncates (``max_tokens``), ``stopSequences`` cut
(``stop_sequence``). For Claude models (``anthropic.`` in the id), ``additionalModelResponseFieldPaths``
``["/stop_sequence"]`` adds ``additionalModelResponseFields: {"stop_sequence": <the matched sequence or
null>}`` (in ConverseStream, to ``messageStop``); other paths, and other models, add nothing.

**Streams** are real event-stream frames (prelude, CRC32s, string headers ``:event-type``,
``:content-type``, ``:message-type``), written in pieces of 1, 7, 13 and 64 bytes that cross frame
boundaries (``split_writes=None`` writes whole frames). ConverseStream sends ``messageStart``, per block
``contentBlockStart`` (tool use only), ``contentBlockDelta`` (text, ``toolUse.input`` fragments,
``reasoningContent`` text then signature) and ``contentBlockStop``, then ``messageStop`` and ``metadata``
(usage, metrics) last. The stream fault headers of ``common`` apply per event; ``x-fake-stream-error-after``
sends an exception frame (``:message-type: exception``) whose ``:exception-type`` is
``x-fake-stream-error-type`` (default ``modelStreamErrorException``). ``padding=True`` adds the
undocumented ``"p"`` field real Bedrock puts in stream payloads.

**InvokeModel** takes an Anthropic Messages body with ``anthropic_version: "bedrock-2023-05-31"`` and
no ``model`` or ``stream`` key (validated further by the Anthropic fake's rules) and answers Anthropic
Messages JSON; the stream variant sends ``:event-type: chunk`` frames whose payload is
``{"bytes": "<base64 of one Anthropic stream event>"}``, the last (``message_stop``) with
``amazon-bedrock-invocationMetrics``.

**Embeddings** (InvokeModel, by model id; a ``us.``-style prefix or a foundation-model ARN allowed):
Titan Text Embeddings V2 ``{inputText, dimensions (256/512/1024), normalize, embeddingTypes}`` (G1: only
``inputText``) answers ``{embedding, embeddingsByType, inputTextTokenCount}``; Cohere Embed v3/v4
``{texts (1..96, 2048 characters each), input_type (required), truncate, embedding_types}`` (v4 also
``output_dimension``...) answers ``embeddings_floats`` or ``embeddings_by_type``. Any other key is a
ValidationException. Vectors are deterministic unit vectors; the input token count is in
``x-amzn-bedrock-input-token-count``.

**CountTokens** takes ``{"input": {"converse": {messages, system, toolConfig,
additionalModelRequestFields}}}`` or ``{"input": {"invokeModel": {"body": "<base64 of an Anthropic
InvokeModel body>"}}}`` for Claude models by bare foundation-model id (an inference profile id or
another family: ValidationException "The provided model doesn't support counting tokens.") and answers
``{"inputTokens": N}``, the count the same Converse or InvokeModel request would report.

Records: ``fake.requests`` (every request, from ``common``) and ``fake.calls`` (``BedrockCall``: the
operation, the decoded model id, the raw path, the access key id and the parsed body).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hmac
import itertools
import json
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

from .annotated import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY
from .anthropic import (
    MESSAGES_FIELDS,
    AnthropicError,
    AnthropicFake,
    claude_effort_refusal,
    claude_thinking_refusal,
    message_events,
)
from .common import (
    JSON_BODY,
    JSON_ERROR,
    RAW_BODY,
    FakeProvider,
    SSEWriter,
    StreamAborted,
    count_tokens,
    example_from_schema,
    fake_reply,
    is_int,
    is_num,
    random_id,
    split_fixed,
    split_words,
    stable_id,
    truncate_words,
)
from .openai import OpenAIFake

# The credentials `aigw-xds run` gives an annotated Bedrock fake (AWS's documentation example keys).
SERVICE = "bedrock"  # the SigV4 service name, although the host is bedrock-runtime.<region>...
ALGORITHM = "AWS4-HMAC-SHA256"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_SKEW = dt.timedelta(minutes=5)
CORAL_AUTH = "http://internal.amazon.com/coral/com.amazon.coral.service/"
CORAL_BEDROCK = "http://internal.amazon.com/coral/com.amazon.bedrock/"
EVENTSTREAM = "application/vnd.amazon.eventstream"
ANTHROPIC_VERSION = "bedrock-2023-05-31"
SPLIT_WRITES = (1, 7, 13, 64)

STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("ValidationException", "Malformed input request, please reformat your input and try again."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    404: ("ResourceNotFoundException", "Could not resolve the foundation model from the provided model identifier."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request. Try your request again."),
    424: ("ModelErrorException", "The model returned an error (injected by the fake)."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an internal error while processing the request."),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}
STREAM_ERRORS: dict[str, dict[str, Any]] = {
    "modelStreamErrorException": {
        "message": "Model stream error (injected by the fake).",
        "originalStatusCode": 529,
        "originalMessage": "Overloaded",
    },
    "throttlingException": {"message": "Too many requests, please wait before trying again."},
    "internalServerException": {"message": "The server encountered an internal error."},
    "serviceUnavailableException": {"message": "Bedrock is unable to process your request."},
    "validationException": {"message": "Validation error (injected by the fake)."},
}
STREAM_ERROR_TYPE_HEADER = "x-fake-stream-error-type"
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
    "Access Key and signing method. Consult the service documentation for details."
)
INVALID_TOKEN = "The security token included in the request is invalid."

CONVERSE_FIELDS = frozenset(
    {
        "messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig", "additionalModelRequestFields",
        "additionalModelResponseFieldPaths", "performanceConfig", "promptVariables", "requestMetadata",
        "serviceTier", "outputConfig",
    }
)  # fmt: skip
BLOCK_MEMBERS = frozenset(
    {
        "text", "image", "document", "video", "toolUse", "toolResult", "guardContent", "cachePoint",
        "reasoningContent", "citationsContent", "searchResult",
    }
)  # fmt: skip
IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")
DOCUMENT_FORMATS = ("pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md")
DOCUMENT_NAME = re.compile(r"[A-Za-z0-9\s\-()\[\]]+")
INFERENCE_FIELDS = frozenset({"maxTokens", "temperature", "topP", "stopSequences"})
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# InvokeModel with an Anthropic body: the Messages fields minus what Bedrock takes elsewhere (model in the
# path, streaming by operation) or does not offer, plus Bedrock's own version and beta keys.
INVOKE_FIELDS = (
    MESSAGES_FIELDS
    - {"model", "stream", "container", "mcp_servers", "service_tier", "inference_geo", "speed", "diagnostics",
       "user_profile_id", "workspace_id"}
) | {"anthropic_version", "anthropic_beta"}  # fmt: skip
# The anthropic_beta values Claude on Bedrock takes (AWS's documentation); InvokeModel answers 400
# "invalid beta flag" for any other, failing the whole request.
SUPPORTED_BETAS = frozenset(
    {
        "computer-use-2024-10-22",
        "computer-use-2025-01-24",
        "token-efficient-tools-2025-02-19",
        "interleaved-thinking-2025-05-14",
        "output-128k-2025-02-19",
        "dev-full-thinking-2025-05-14",
        "context-1m-2025-08-07",
        "context-management-2025-06-27",
        "effort-2025-11-24",
        "tool-search-tool-2025-10-19",
        "tool-examples-2025-10-29",
    }
)
_PATH = re.compile(r"^/model/([^/]+)/(converse|converse-stream|invoke|invoke-with-response-stream|count-tokens)$")
OPERATIONS = {
    "converse": "Converse",
    "converse-stream": "ConverseStream",
    "invoke": "InvokeModel",
    "invoke-with-response-stream": "InvokeModelWithResponseStream",
    "count-tokens": "CountTokens",
}
# InvokeModel bodies of the embedding models (AWS's "Model inference parameters" pages).
TITAN_V2_FIELDS = frozenset({"inputText", "dimensions", "normalize", "embeddingTypes"})
TITAN_V2_DIMENSIONS = (256, 512, 1024)
TITAN_MAX_CHARS = 50_000
COHERE_FIELDS = frozenset({"texts", "images", "input_type", "truncate", "embedding_types"})
COHERE_V4_FIELDS = COHERE_FIELDS | {"inputs", "output_dimension", "max_tokens"}
COHERE_V4_DIMENSIONS = (256, 512, 1024, 1536)
COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering", "image")
COHERE_TRUNCATE = ("NONE", "START", "END")
COHERE_EMBEDDING_TYPES = ("float", "int8", "uint8", "binary", "ubinary")
COHERE_MAX_TEXTS, COHERE_MAX_CHARS = 96, 2048
# CountTokens: {"input": {"converse": {...}} | {"invokeModel": {"body": <base64>}}}; the Converse
# input takes the conversation only (no inferenceConfig).
CONVERSE_TOKENS_FIELDS = frozenset({"messages", "system", "toolConfig", "additionalModelRequestFields"})
NO_TOKEN_COUNTING = "The provided model doesn't support counting tokens."
# Cross-region inference profile prefixes: CountTokens takes bare foundation-model ids only.
_PROFILE_PREFIX = re.compile(r"^(us|eu|apac|us-gov|ca|jp|au|global)\.")


class BedrockError(Exception):
    """An AWS error answer: status, error name (x-amzn-errortype) and message."""

    def __init__(self, status: int, name: str, message: str, namespace: str = CORAL_BEDROCK) -> None:
        super().__init__(message)
        self.status, self.name, self.message, self.namespace = status, name, message, namespace


def _invalid(message: str) -> BedrockError:
    return BedrockError(400, "ValidationException", message)


def _auth_error(name: str, message: str) -> BedrockError:
    return BedrockError(403, name, message, CORAL_AUTH)


def _constraint(value: Any, path: str, constraint: str) -> BedrockError:
    shown = "null" if value is None else f"'{value}'"
    return _invalid(
        f"1 validation error detected: Value {shown} at '{path}' failed to satisfy constraint: {constraint}"
    )


@dataclass
class BedrockCall:
    """One authenticated Bedrock operation as the fake received it."""

    operation: str  # Converse, ConverseStream, InvokeModel, InvokeModelWithResponseStream
    model_id: str  # percent-decoded
    raw_path: str  # as received, percent-encoding kept
    access_key_id: str | None  # None for a Bedrock API key (Bearer)
    body: Any


# --------------------------------------------------------------------------------------------
# AWS event-stream encoding
# --------------------------------------------------------------------------------------------


def encode_headers(headers: dict[str, str]) -> bytes:
    """Event-stream headers, all of type 7 (string): name length, name, type, value length, value."""
    out = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        out += struct.pack("!B", len(n)) + n + b"\x07" + struct.pack("!H", len(v)) + v
    return out


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total and headers length, CRC32), headers, payload, CRC32."""
    encoded = encode_headers(headers)
    prelude = struct.pack("!II", 16 + len(encoded) + len(payload), len(encoded))
    message = prelude + struct.pack("!I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack("!I", zlib.crc32(message))


def _json_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def event_message(event_type: str, payload: dict[str, Any]) -> bytes:
    """An event message (``:message-type: event``) with a JSON payload."""
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, _json_bytes(payload))


def exception_message(exception_type: str, payload: dict[str, Any]) -> bytes:
    """A modeled in-stream error (``:message-type: exception``)."""
    headers = {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"}
    return encode_message(headers, _json_bytes(payload))


def padding(payload: dict[str, Any]) -> str:
    """The ``p`` filler real Bedrock adds to stream payloads (length varies with the payload)."""
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return letters[: 5 + len(json.dumps(payload)) % 40]


class EventStreamWriter(SSEWriter):
    """Writes event-stream messages with the fault plan of ``SSEWriter`` (one message per event), in
    pieces of ``split`` sizes (cycled) that do not line up with message boundaries."""

    def __init__(
        self,
        request: web.Request,
        *,
        error_message: Callable[[], bytes],
        split: tuple[int, ...] | None,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            request,
            error_event=lambda: (None, error_message()),
            extra_headers={"Content-Type": EVENTSTREAM, **(extra_headers or {})},
        )
        self.split = split
        self._pending = b""
        self._piece = 0

    async def send(self, data: Any, event: str | None = None) -> None:
        try:
            await super().send(data, event)
        except StreamAborted as e:
            if e.clean:
                await self.flush()
            raise
        if self.interval_ms:
            await self.flush()  # the event is visible before the pause

    async def _write(self, data: Any, event: str | None) -> None:
        self._pending += data
        await self._drain(final=self.split is None)

    async def _drain(self, *, final: bool) -> None:
        while self._pending:
            size = self.split[self._piece % len(self.split)] if self.split else len(self._pending)
            if len(self._pending) < size and not final:
                return
            piece, self._pending = self._pending[:size], self._pending[size:]
            self._piece += 1
            await self.put(piece)
            await asyncio.sleep(0)  # a separate write on the socket

    async def flush(self) -> None:
        await self._drain(final=True)

    async def _abort(self) -> None:
        await self.flush()
        await super()._abort()

    async def finish(self) -> web.StreamResponse:
        await self.start()
        await self.flush()
        return await super().finish()


# --------------------------------------------------------------------------------------------
# SigV4 verification
# --------------------------------------------------------------------------------------------


class _ReceivedSigV4(SigV4Auth):
    """botocore's signer, with the headers to sign being exactly those the client listed."""

    def __init__(self, credentials: Credentials, region: str, signed: HTTPHeaders) -> None:
        super().__init__(credentials, SERVICE, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        return self._signed


def parse_authorization(value: str) -> tuple[str, dict[str, str]]:
    """``AWS4-HMAC-SHA256 Credential=a, SignedHeaders=b, Signature=c`` -> (algorithm, parameters)."""
    algorithm, _, rest = value.strip().partition(" ")
    params = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if sep:
            params[key] = val
    return algorithm, params


@dataclass
class SigV4Keys:
    """The credentials a fake accepts."""

    access_key_id: str
    secret_access_key: str
    region: str
    session_token: str | None = None


def verify_sigv4(keys: SigV4Keys, request: web.Request, body: bytes, now: dt.datetime | None = None) -> str:
    """Check a request's SigV4 signature like AWS; returns the access key id or raises BedrockError."""
    header = request.headers.get("Authorization")
    if not header:
        raise _auth_error("MissingAuthenticationTokenException", "Missing Authentication Token")
    algorithm, params = parse_authorization(header)
    if algorithm != ALGORITHM:
        raise _auth_error("IncompleteSignatureException", f"Unsupported Authorization Type. Authorization={header}")
    amz_date = request.headers.get("X-Amz-Date")
    _require_parts(params, amz_date, header)
    when = _parse_amz_date(amz_date or "")
    scope = params["Credential"].split("/")
    if len(scope) != 5:
        raise _auth_error(
            "IncompleteSignatureException",
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, "
            f"got '{params['Credential']}'",
        )
    _check_key(keys, scope[0], request.headers.get("X-Amz-Security-Token"))
    _check_scope(keys, scope, amz_date or "")
    signed_names = [n.strip().lower() for n in params["SignedHeaders"].split(";") if n.strip()]
    if "host" not in signed_names:
        raise _auth_error(
            "InvalidSignatureException", "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
        )
    _check_skew(when, amz_date or "", now or dt.datetime.now(dt.UTC).replace(tzinfo=None))
    _check_signature(keys, request, body, amz_date or "", signed_names, params["Signature"])
    return scope[0]


def _require_parts(params: dict[str, str], amz_date: str | None, header: str) -> None:
    missing = [
        f"Authorization header requires '{p}' parameter." for p in ("Credential", "Signature", "SignedHeaders")
        if not params.get(p)
    ]  # fmt: skip
    if not amz_date:  # the fake takes the signing time from X-Amz-Date only, as every AWS SDK sends it
        missing.append("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
    if missing:
        raise _auth_error("IncompleteSignatureException", " ".join(missing) + f" Authorization={header}")


def _parse_amz_date(value: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(value, AMZ_DATE_FORMAT)
    except ValueError:
        raise _auth_error(
            "IncompleteSignatureException",
            f"Date must be in ISO-8601 'basic format'. Got '{value}'. See http://en.wikipedia.org/wiki/ISO_8601",
        ) from None


def _check_key(keys: SigV4Keys, access_key_id: str, token: str | None) -> None:
    if access_key_id != keys.access_key_id:
        raise _auth_error("UnrecognizedClientException", INVALID_TOKEN)
    if token != keys.session_token:
        raise _auth_error("UnrecognizedClientException", INVALID_TOKEN)


def _check_scope(keys: SigV4Keys, scope: list[str], amz_date: str) -> None:
    _, day, region, service, terminator = scope
    if day != amz_date[:8]:
        raise _auth_error(
            "InvalidSignatureException",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{day}' != '{amz_date[:8]}', from ISO-8601 string '{amz_date}'.",
        )
    if region != keys.region:
        raise _auth_error("InvalidSignatureException", "Credential should be scoped to a valid region. ")
    if service != SERVICE:
        raise _auth_error("InvalidSignatureException", f"Credential should be scoped to correct service: '{SERVICE}'. ")
    if terminator != "aws4_request":
        raise _auth_error(
            "InvalidSignatureException",
            f"Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'. ",
        )


def _check_skew(when: dt.datetime, amz_date: str, now: dt.datetime) -> None:
    def stamp(t: dt.datetime) -> str:
        return t.strftime(AMZ_DATE_FORMAT)

    if when < now - MAX_SKEW:
        raise _auth_error(
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is now earlier than {stamp(now - MAX_SKEW)} ({stamp(now)} - 5 min.)",
        )
    if when > now + MAX_SKEW:
        raise _auth_error(
            "InvalidSignatureException",
            f"Signature not yet current: {amz_date} is still later than {stamp(now + MAX_SKEW)} "
            f"({stamp(now)} + 5 min.)",
        )


def _check_signature(
    keys: SigV4Keys, request: web.Request, body: bytes, amz_date: str, names: list[str], signature: str
) -> None:
    signed = HTTPHeaders()
    for name in names:
        values = request.headers.getall(name, [""])
        for value in values:
            signed[name] = value
    url = f"{request.scheme}://{request.headers.get('Host', '')}{request.raw_path}"
    aws_request = AWSRequest(method=request.method, url=url, data=body)
    aws_request.context["timestamp"] = amz_date
    credentials = Credentials(keys.access_key_id, keys.secret_access_key, keys.session_token)
    signer = _ReceivedSigV4(credentials, keys.region, signed)
    canonical = signer.canonical_request(aws_request)
    to_sign = signer.string_to_sign(aws_request, canonical)
    if not hmac.compare_digest(signer.signature(to_sign, aws_request), signature):
        raise _auth_error(
            "InvalidSignatureException",
            f"{SIGNATURE_MISMATCH}\n\nThe Canonical String for this request should have been\n'{canonical}'\n\n"
            f"The String-to-Sign should have been\n'{to_sign}'\n",
        )


# --------------------------------------------------------------------------------------------
# Converse validation
# --------------------------------------------------------------------------------------------


# Model families Converse takes no system prompt for (AWS's table of Converse features).
NO_SYSTEM_PROMPT = (
    "amazon.titan-text", "mistral.mistral-7b-instruct", "mistral.mixtral-8x7b-instruct", "cohere.command-text",
    "cohere.command-light-text",
)  # fmt: skip


def validate_converse(body: dict[str, Any], model_id: str = "") -> None:
    """Reject a Converse body the way Bedrock does (ValidationException); `model_id` decides what
    Claude's thinking may be (the Anthropic fake's rules)."""
    for key in body:
        if key not in CONVERSE_FIELDS:
            raise _invalid(
                f"Malformed input request: extraneous key [{key}] is not permitted, please reformat your input "
                "and try again."
            )
    messages = body.get("messages")
    if messages is None:
        raise _constraint(None, "messages", "Member must not be null")
    if not isinstance(messages, list) or not messages:
        raise _constraint("[]", "messages", "Member must have length greater than or equal to 1")
    for i, message in enumerate(messages):
        _validate_message(message, i)
    _validate_turns(messages)
    _validate_tool_pairs(messages)
    _validate_system(body.get("system"))
    if body.get("system") and any(family in model_id for family in NO_SYSTEM_PROMPT):
        raise _invalid(
            "This model doesn't support system messages. Try again without system messages or use a model that "
            "supports system messages."
        )
    _validate_inference(body.get("inferenceConfig"))
    names = _validate_tool_config(body.get("toolConfig"))
    if names is None and any(_tool_blocks(m) for m in messages):
        raise _invalid("The toolConfig field must be defined when using toolUse and toolResult content blocks.")
    extra = body.get("additionalModelRequestFields")
    if extra is not None and not isinstance(extra, dict):
        raise _invalid("The value at additionalModelRequestFields must be a JSON object.")
    thinking = (extra or {}).get("thinking")
    if isinstance(thinking, dict) and "anthropic." in model_id:
        refusal = claude_thinking_refusal(model_id, str(thinking.get("type")))
        if refusal:
            raise _invalid(refusal)
    _validate_output_config(body.get("outputConfig"), model_id)
    _validate_response_paths(body.get("additionalModelResponseFieldPaths"))
    _validate_model_features(body, model_id)


# The provider part of a model id of a family that takes neither prompt caching nor a tool result's
# status or images; an id naming none (an application inference profile) is taken as it comes.
_OTHER_FAMILIES = re.compile(
    r"(?:^|[.:/])(?:meta|mistral|cohere|ai21|deepseek|qwen|openai|writer|twelvelabs|luma|stability|amazon\.titan)[.-]"
)
_CLAUDE_WITHOUT_CACHING = re.compile(r"claude-(?:v2|instant|3-(?:haiku|sonnet|opus)|3-5-sonnet-2024)")


def _validate_model_features(body: dict[str, Any], model_id: str) -> None:
    """What only some model families take (AWS's Converse feature tables): prompt caching's cache
    points (refused with a 403 by the families without it and Claude before 3.7 Sonnet and 3.5
    Haiku; by Nova in its tools, as an extraneous key), a tool result's ``status`` and images
    (Claude and Nova only), and a user message with a document needs a text block beside it."""
    for i, message in enumerate(body["messages"]):
        kinds = {next(iter(b)) for b in message["content"]}
        if "document" in kinds and "text" not in kinds:
            raise _invalid(f"A text block must be included when using documents (messages.{i}).")
    lowered = model_id.lower()
    other = _OTHER_FAMILIES.search(lowered) is not None
    tools = (body.get("toolConfig") or {}).get("tools") or []
    blocks = [b for m in body["messages"] for b in m["content"]]
    if other or _CLAUDE_WITHOUT_CACHING.search(lowered):
        if any("cachePoint" in b for b in [*tools, *(body.get("system") or []), *blocks]):
            raise BedrockError(
                403,
                "AccessDeniedException",
                "You invoked an unsupported model or your request did not allow prompt caching. See the "
                "documentation for more information.",
            )
    elif "amazon.nova" in lowered:
        for n, tool in enumerate(tools):
            if "cachePoint" in tool:
                raise _invalid(
                    f"Malformed input request: #/toolConfig/tools/{n}: extraneous key [cachePoint] is not "
                    "permitted, please reformat your input and try again."
                )
    if not other:
        return
    for b in blocks:
        result = b.get("toolResult")
        if not isinstance(result, dict):
            continue
        if "status" in result:
            raise _invalid(
                "This model doesn't support the toolResult.status field. Remove toolResult.status and try again."
            )
        if any("image" in item for item in result.get("content") or []):
            raise _invalid("This model doesn't support images in tool results.")


def _validate_output_config(config: Any, model_id: str) -> None:
    """``outputConfig``: ``textFormat`` (type json_schema, ``structure.jsonSchema.schema`` a string
    holding a JSON object) and ``effort`` (Claude's levels)."""
    if config is None:
        return
    if not isinstance(config, dict) or set(config) - {"textFormat", "effort"}:
        raise _invalid("Malformed input request: outputConfig takes only textFormat and effort.")
    text_format = config.get("textFormat")
    if text_format is not None:
        if not isinstance(text_format, dict) or text_format.get("type") != "json_schema":
            raise _constraint(None, "outputConfig.textFormat.type", "Member must satisfy enum value set: [json_schema]")
        definition = (text_format.get("structure") or {}).get("jsonSchema")
        schema = definition.get("schema") if isinstance(definition, dict) else None
        if not isinstance(schema, str):
            raise _constraint(None, "outputConfig.textFormat.structure.jsonSchema.schema", "Member must not be null")
        try:
            parsed = json.loads(schema)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise _invalid("The JSON schema in outputConfig.textFormat is not a valid JSON object.")
    refusal = claude_effort_refusal(model_id, config.get("effort"))
    if refusal:
        raise _invalid(refusal)


# A JSON Pointer (RFC 6901) that is not empty: "/"-prefixed tokens, "~" only as "~0" or "~1".
_JSON_POINTER = re.compile(r"(?:/(?:[^/~]|~[01])*)+")


def _validate_response_paths(paths: Any) -> None:
    """additionalModelResponseFieldPaths: at most 10 JSON Pointers of 1..256 characters; Bedrock
    rejects an empty or malformed pointer with a 400 (the message here is the fake's own words)."""
    if paths is None:
        return
    name = "additionalModelResponseFieldPaths"
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise _invalid(f"The value at {name} must be a list of strings.")
    if len(paths) > 10:
        raise _constraint(paths, name, "Member must have length less than or equal to 10")
    for i, path in enumerate(paths):
        if not path:
            raise _constraint(path, f"{name}.{i + 1}.member", "Member must have length greater than or equal to 1")
        if len(path) > 256:
            raise _constraint(path, f"{name}.{i + 1}.member", "Member must have length less than or equal to 256")
        if not _JSON_POINTER.fullmatch(path):
            raise _invalid(f"The {name} value {path[:64]!r} is not a valid JSON Pointer.")


def _tool_blocks(message: dict[str, Any]) -> bool:
    return any("toolUse" in b or "toolResult" in b for b in message["content"])


def _validate_message(message: Any, i: int) -> None:
    if not isinstance(message, dict):
        raise _invalid(f"The message at messages.{i} must be a JSON object.")
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise _constraint(role, f"messages.{i}.member.role", "Member must satisfy enum value set: [user, assistant]")
    content = message.get("content")
    if content is None:
        raise _constraint(None, f"messages.{i}.member.content", "Member must not be null")
    if not isinstance(content, list) or not content:
        raise _invalid(
            f"The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the "
            "content field and try again."
        )
    for j, block in enumerate(content):
        _validate_block(block, role, f"messages.{i}.content.{j}")


def _validate_block(block: Any, role: str, path: str) -> None:
    if not isinstance(block, dict) or len(block) != 1:
        raise _invalid(f"The ContentBlock object at {path} must set exactly one of its members.")
    ((member, value),) = block.items()
    if member not in BLOCK_MEMBERS:
        raise _invalid(f"Malformed input request: extraneous key [{member}] is not permitted at {path}.")
    checks: dict[str, Callable[[Any, str], None]] = {
        "text": _check_text,
        "image": _check_image,
        "document": _check_document,
        "toolUse": _check_tool_use,
        "toolResult": _check_tool_result,
        "reasoningContent": _check_reasoning,
    }
    if member in checks:
        checks[member](value, path)
    if member == "toolUse" and role != "assistant":
        raise _invalid(f"The toolUse block at {path} is only allowed in an assistant message.")
    if member == "toolResult" and role != "user":
        raise _invalid(f"The toolResult block at {path} is only allowed in a user message.")


def _check_text(value: Any, path: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _invalid(f"The text field in the ContentBlock object at {path} is blank. Add text to the text field, "
                       "and try again.")  # fmt: skip


def _check_bytes(value: Any, path: str) -> bytes:
    if not isinstance(value, str):
        raise _constraint(None, path, "Member must not be null")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"Invalid base64 value at {path}.") from None
    if not data:
        raise _constraint("", path, "Member must have length greater than or equal to 1")
    return data


def _check_image(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise _constraint(None, f"{path}.image", "Member must not be null")
    if value.get("format") not in IMAGE_FORMATS:
        raise _constraint(
            value.get("format"),
            f"{path}.image.format",
            f"Member must satisfy enum value set: [{', '.join(IMAGE_FORMATS)}]",
        )
    source = value.get("source")
    if not isinstance(source, dict) or len(source) != 1 or not ({"bytes", "s3Location"} & source.keys()):
        raise _invalid(f"The image source at {path}.image.source must set exactly one of bytes, s3Location.")
    if "bytes" in source:
        _check_bytes(source["bytes"], f"{path}.image.source.bytes")


def _check_document(value: Any, path: str) -> None:
    """As Converse checks a DocumentBlock: its format, a name of the characters it allows, one source."""
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("name"), str)
        or not isinstance(value.get("source"), dict)
    ):
        raise _invalid(f"The document at {path}.document needs a name and a source.")
    if value.get("format", "txt") not in DOCUMENT_FORMATS:
        allowed = f"Member must satisfy enum value set: {list(DOCUMENT_FORMATS)}"
        raise _constraint(value.get("format"), f"{path}.document.format", allowed)
    name = value["name"]
    if not name or not DOCUMENT_NAME.fullmatch(name) or "  " in name:
        raise _invalid(
            "The document file name can only contain alphanumeric characters, whitespace characters, hyphens, "
            "parentheses, and square brackets. The name can't contain more than one consecutive whitespace "
            "character."
        )
    source = value["source"]
    if len(source) != 1 or not ({"bytes", "s3Location", "text", "content"} & source.keys()):
        raise _invalid(f"The document source at {path}.document.source must set exactly one member.")
    if "bytes" in source:
        _check_bytes(source["bytes"], f"{path}.document.source.bytes")


def _check_tool_use(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise _constraint(None, f"{path}.toolUse", "Member must not be null")
    for key in ("toolUseId", "name"):
        if not isinstance(value.get(key), str) or not value[key]:
            raise _constraint(value.get(key), f"{path}.toolUse.{key}", "Member must not be null")
    if "input" not in value:
        raise _constraint(None, f"{path}.toolUse.input", "Member must not be null")


def _check_tool_result(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise _constraint(None, f"{path}.toolResult", "Member must not be null")
    if not isinstance(value.get("toolUseId"), str) or not value["toolUseId"]:
        raise _constraint(value.get("toolUseId"), f"{path}.toolResult.toolUseId", "Member must not be null")
    status = value.get("status")
    if status is not None and status not in ("success", "error"):
        raise _constraint(status, f"{path}.toolResult.status", "Member must satisfy enum value set: [success, error]")
    content = value.get("content")
    if not isinstance(content, list):
        raise _constraint(None, f"{path}.toolResult.content", "Member must not be null")
    for k, item in enumerate(content):
        where = f"{path}.toolResult.content.{k}"
        if not isinstance(item, dict) or len(item) != 1:
            raise _invalid(f"The ToolResultContentBlock at {where} must set exactly one of its members.")
        ((member, inner),) = item.items()
        if member not in ("text", "json", "image", "document", "video"):
            raise _invalid(f"Malformed input request: extraneous key [{member}] is not permitted at {where}.")
        if member == "text" and not isinstance(inner, str):
            raise _constraint(None, f"{where}.text", "Member must not be null")
    if status == "error" and not content:
        raise _invalid(f"The toolResult at {path} has status error and no content. Add content and try again.")


def _check_reasoning(value: Any, path: str) -> None:
    if not isinstance(value, dict) or len(value) != 1:
        raise _invalid(f"The reasoningContent at {path} must set exactly one of reasoningText, redactedContent.")
    if "reasoningText" in value:
        text = value["reasoningText"]
        if not isinstance(text, dict) or not isinstance(text.get("text"), str):
            raise _constraint(None, f"{path}.reasoningContent.reasoningText.text", "Member must not be null")
    elif "redactedContent" in value:
        _check_bytes(value["redactedContent"], f"{path}.reasoningContent.redactedContent")
    else:
        raise _invalid(f"The reasoningContent at {path} must set exactly one of reasoningText, redactedContent.")


def _validate_turns(messages: list[dict[str, Any]]) -> None:
    if messages[0]["role"] != "user":
        raise _invalid("A conversation must start with a user message. Try again with a conversation that starts "
                       "with a user message.")  # fmt: skip
    for prev, cur in itertools.pairwise(messages):
        if prev["role"] == cur["role"]:
            raise _invalid("A conversation must alternate between user and assistant roles. Make sure the "
                           "conversation alternates between user and assistant roles and try again.")  # fmt: skip


def _validate_tool_pairs(messages: list[dict[str, Any]]) -> None:
    """Every toolUse is answered by a toolResult in the next message; no toolResult without its toolUse."""
    for k, message in enumerate(messages):
        uses = [b["toolUse"]["toolUseId"] for b in message["content"] if "toolUse" in b]
        results = [b["toolResult"]["toolUseId"] for b in message["content"] if "toolResult" in b]
        previous = [b["toolUse"]["toolUseId"] for b in messages[k - 1]["content"] if "toolUse" in b] if k else []
        if results and (len(results) > len(previous) or set(results) - set(previous)):
            raise _invalid(f"The number of toolResult blocks at messages.{k}.content exceeds the number of toolUse "
                           "blocks of previous turn.")  # fmt: skip
        if uses and k + 1 < len(messages):
            answered = {b["toolResult"]["toolUseId"] for b in messages[k + 1]["content"] if "toolResult" in b}
            missing = [u for u in uses if u not in answered]
            if missing:
                raise _invalid(f"Expected toolResult blocks at messages.{k + 1}.content for the following Ids: "
                               f"{', '.join(missing)}")  # fmt: skip


def _validate_system(system: Any) -> None:
    if system is None:
        return
    if not isinstance(system, list):
        raise _invalid("The system field must be a list of SystemContentBlock objects.")
    for i, block in enumerate(system):
        if (
            not isinstance(block, dict)
            or len(block) != 1
            or next(iter(block)) not in ("text", "cachePoint", "guardContent")
        ):
            raise _invalid(
                f"The SystemContentBlock at system.{i} must set exactly one of text, cachePoint, guardContent."
            )
        if "text" in block and (not isinstance(block["text"], str) or not block["text"].strip()):
            raise _invalid(f"The text field in the SystemContentBlock object at system.{i} is blank. Add text to the "
                           "text field, and try again.")  # fmt: skip


def _validate_inference(config: Any) -> None:
    if config is None:
        return
    if not isinstance(config, dict):
        raise _invalid("The inferenceConfig field must be a JSON object.")
    for key in config:
        if key not in INFERENCE_FIELDS:
            raise _invalid(f"Malformed input request: extraneous key [{key}] is not permitted in inferenceConfig.")
    max_tokens = config.get("maxTokens")
    if max_tokens is not None and (not is_int(max_tokens) or max_tokens < 1):
        raise _constraint(max_tokens, "inferenceConfig.maxTokens", "Member must have value greater than or equal to 1")
    for key in ("temperature", "topP"):
        value = config.get(key)
        if value is None:
            continue
        if not is_num(value) or value < 0:
            raise _constraint(value, f"inferenceConfig.{key}", "Member must have value greater than or equal to 0")
        if value > 1:
            raise _constraint(value, f"inferenceConfig.{key}", "Member must have value less than or equal to 1")
    stops = config.get("stopSequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops)):
        raise _constraint(stops, "inferenceConfig.stopSequences", "Member must be a list of non-empty strings")


def _validate_tool_config(config: Any) -> list[str] | None:
    """The tool names, or None without a toolConfig."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise _invalid("The toolConfig field must be a JSON object.")
    tools = config.get("tools")
    if tools is None:
        raise _constraint(None, "toolConfig.tools", "Member must not be null")
    if not isinstance(tools, list) or not tools:
        raise _constraint("[]", "toolConfig.tools", "Member must have length greater than or equal to 1")
    names = [name for i, tool in enumerate(tools) if (name := _check_tool(tool, i)) is not None]
    _check_tool_choice(config.get("toolChoice"), names)
    return names


def _check_tool(tool: Any, i: int) -> str | None:
    if not isinstance(tool, dict) or len(tool) != 1 or next(iter(tool)) not in ("toolSpec", "cachePoint"):
        raise _invalid(f"The Tool at toolConfig.tools.{i} must set exactly one of toolSpec, cachePoint.")
    spec = tool.get("toolSpec")
    if spec is None:
        return None
    path = f"toolConfig.tools.{i}.member.toolSpec"
    name = spec.get("name") if isinstance(spec, dict) else None
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise _constraint(name, f"{path}.name", "Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+")
    schema = spec.get("inputSchema")
    if not isinstance(schema, dict) or not isinstance(schema.get("json"), dict):
        raise _constraint(None, f"{path}.inputSchema.json", "Member must not be null")
    description = spec.get("description")
    if description is not None and (not isinstance(description, str) or not description):
        raise _constraint(description, f"{path}.description", "Member must have length greater than or equal to 1")
    return name


def _check_tool_choice(choice: Any, names: list[str]) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict) or len(choice) != 1 or next(iter(choice)) not in ("auto", "any", "tool"):
        raise _invalid("The toolChoice field must set exactly one of auto, any, tool.")
    if "tool" in choice:
        name = choice["tool"].get("name") if isinstance(choice["tool"], dict) else None
        if name not in names:
            raise _invalid(f"The tool {name} in toolChoice is not defined in toolConfig.tools.")


# --------------------------------------------------------------------------------------------
# the fake
# --------------------------------------------------------------------------------------------


def reasoning_requested(body: dict[str, Any]) -> bool:
    """``additionalModelRequestFields.thinking`` (Claude) or ``reasoning_config`` (Claude, Nova) enabled."""
    extra = body.get("additionalModelRequestFields") or {}
    for key in ("thinking", "reasoning_config"):
        value = extra.get(key)
        if isinstance(value, dict) and value.get("type", "enabled") in ("enabled", "adaptive"):
            return True
    return False


def _texts(blocks: list[dict[str, Any]]) -> str:
    out = []
    for b in blocks:
        if isinstance(b.get("text"), str):
            out.append(b["text"])
        elif "toolResult" in b:
            out.append(_texts(b["toolResult"].get("content") or []))
        elif "json" in b:
            out.append(json.dumps(b["json"]))
        elif "toolUse" in b:
            out.append(json.dumps(b["toolUse"].get("input")))
    return " ".join(out)


def response_fields(model_id: str, paths: list[str] | None, stop_sequence: str | None) -> dict[str, Any] | None:
    """additionalModelResponseFields: the requested fields of the model's native answer that exist.
    The fake knows one, Claude's ``/stop_sequence`` (the matched stop sequence, null when none
    matched); a path naming a field the answer lacks is ignored, as Bedrock does."""
    if "anthropic." not in model_id or "/stop_sequence" not in (paths or []):
        return None
    return {"stop_sequence": stop_sequence}


def anthropic_model_name(model_id: str) -> str:
    """The ``model`` an Anthropic-on-Bedrock answer names: ``us.anthropic.claude-x-v1:0`` -> ``claude-x``."""
    name = model_id.rsplit("/", 1)[-1]
    name = name.split("anthropic.", 1)[-1]
    return re.sub(r"-v\d+(:\d+)?$", "", name)


class BedrockFake(FakeProvider):
    """Fake Bedrock Runtime. Sign requests for ``fake.base_url`` with SigV4 (service ``bedrock``, the fake's
    region) and the fake's keys, e.g. ``boto3.client("bedrock-runtime", endpoint_url=fake.url, ...)``."""

    provider = "bedrock"

    def __init__(
        self,
        access_key_id: str = TEST_ACCESS_KEY_ID,
        secret_access_key: str = TEST_SECRET_ACCESS_KEY,
        region: str = "us-east-1",
        session_token: str | None = None,
        *,
        api_key: str | None = None,
        name: str | None = None,
        models: list[str] | tuple[str, ...] | None = None,
        reply: str | Callable[[str, dict[str, Any]], str] | None = None,
        tool_preamble: bool = True,
        latency_ms: int = 120,
        cache_read_input_tokens: int = 0,
        cache_write_input_tokens: int = 0,
        split_writes: tuple[int, ...] | None = SPLIT_WRITES,
        padding: bool = False,
        clock: Callable[[], dt.datetime] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(name=name, host=host, port=port)
        self.keys = SigV4Keys(access_key_id, secret_access_key, region, session_token)
        # Temporary credentials (aws_sts.AWSSTSFake issues them): access key id -> (keys, expiry).
        self._temporary: dict[str, tuple[SigV4Keys, float]] = {}
        self.api_key = api_key
        self.models = list(models) if models is not None else None
        self.reply = reply
        self.tool_preamble = tool_preamble
        self.latency_ms = latency_ms
        self.cache_read_input_tokens = cache_read_input_tokens
        self.cache_write_input_tokens = cache_write_input_tokens
        self.split_writes = split_writes
        self.padding = padding
        self.clock = clock  # naive UTC "now" for the 5-minute check (tests)
        self._calls: list[BedrockCall] = []
        self._calls_lock = threading.Lock()
        # The Anthropic rules and answers for InvokeModel bodies (never started).
        self._anthropic = AnthropicFake(api_key=None, reply=reply, tool_preamble=tool_preamble)

    @property
    def url(self) -> str:
        """The endpoint URL for an AWS SDK (``endpoint_url=``)."""
        return self.base_url

    @property
    def region(self) -> str:
        return self.keys.region

    # ---- records -----------------------------------------------------------------------------
    @property
    def calls(self) -> list[BedrockCall]:
        """The authenticated operations, oldest first."""
        with self._calls_lock:
            return list(self._calls)

    def clear_requests(self) -> None:
        super().clear_requests()
        with self._calls_lock:
            self._calls.clear()

    def reset(self) -> None:
        super().reset()
        with self._calls_lock:
            self._calls.clear()

    # ---- errors / auth -----------------------------------------------------------------------
    def error_response(
        self, status: int, message: str | None = None, *, name: str | None = None, namespace: str = CORAL_BEDROCK,
        **_: Any,
    ) -> web.Response:  # fmt: skip
        if status == 401:  # AWS has no 401: an unauthenticated request is its 403 of the auth service
            status, name, namespace = 403, name or "UnrecognizedClientException", CORAL_AUTH
            message = message or INVALID_TOKEN
        default_name, default_message = STATUS_ERRORS.get(
            status, ("InternalServerException" if status >= 500 else "ValidationException", f"Injected error {status}.")
        )
        return web.json_response(
            {"message": message or default_message},
            status=status,
            headers={"x-amzn-errortype": f"{name or default_name}:{namespace}"},
        )

    def _error(self, e: BedrockError) -> web.Response:
        return self.error_response(e.status, e.message, name=e.name, namespace=e.namespace)

    def not_found_response(self, request: web.Request) -> web.Response:
        return self.error_response(404, "Unknown operation", name="UnknownOperationException", namespace=CORAL_AUTH)

    def response_headers(self, request: web.Request) -> dict[str, str]:
        return {"x-amzn-requestid": random_id("", 32)}

    def authenticate(self, request: web.Request) -> str | None:
        """The access key id (None for a Bedrock API key); raises BedrockError when AWS would refuse."""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            if self.api_key is not None and hmac.compare_digest(header[7:].strip(), self.api_key):
                return None
            raise _auth_error("UnrecognizedClientException", INVALID_TOKEN)
        now = self.clock() if self.clock else None
        return verify_sigv4(self._keys_for(header), request, request.get(RAW_BODY, b""), now)

    def accept_credentials(
        self, access_key_id: str, secret_access_key: str, session_token: str, expires_at: float
    ) -> None:
        """Also accept these temporary credentials (with their session token) until ``expires_at``
        (``time.time()``); after it, requests signed with them are refused as AWS refuses them: 403
        ``ExpiredTokenException``."""
        keys = SigV4Keys(access_key_id, secret_access_key, self.keys.region, session_token)
        with self._calls_lock:
            self._temporary[access_key_id] = (keys, expires_at)

    def _keys_for(self, authorization: str) -> SigV4Keys:
        """The keys of the access key id a SigV4 Authorization header names (the fake's own by default)."""
        access_key_id = parse_authorization(authorization)[1].get("Credential", "").split("/", 1)[0]
        with self._calls_lock:
            temporary = self._temporary.get(access_key_id)
        if temporary is None:
            return self.keys
        keys, expires_at = temporary
        if time.time() >= expires_at:
            raise _auth_error("ExpiredTokenException", "The security token included in the request is expired")
        return keys

    def check_auth(self, request: web.Request) -> web.Response | None:
        try:
            self.authenticate(request)
        except BedrockError as e:
            return self._error(e)
        return None

    # ---- routing -----------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/model/{tail:.+}", self._dispatch)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.raw_path.split("?", 1)[0]
        match = _PATH.match(raw_path)
        if match is None or request.method != "POST":
            return self.not_found_response(request)
        try:
            akid = self.authenticate(request)
            model_id = unquote(match.group(1))
            body = self._json_body(request)
            operation = OPERATIONS[match.group(2)]
            with self._calls_lock:
                self._calls.append(BedrockCall(operation, model_id, raw_path, akid, body))
            if self.models is not None and model_id not in self.models:
                raise _invalid("The provided model identifier is invalid.")
            if operation == "CountTokens":
                return self.count_tokens(model_id, body)
            if operation.startswith("Converse"):
                return await self.converse(request, model_id, body, stream=operation == "ConverseStream")
            if embedding_family(model_id) is not None:
                if operation != "InvokeModel":
                    raise _invalid("The model is unsupported for streaming.")
                return self.embed(model_id, body)
            return await self.invoke(request, model_id, body, stream=operation != "InvokeModel")
        except BedrockError as e:
            return self._error(e)

    @staticmethod
    def _json_body(request: web.Request) -> dict[str, Any]:
        if request.get(JSON_ERROR) or not request.get(RAW_BODY):
            raise _invalid("Malformed input request, please reformat your input and try again.")
        body = request[JSON_BODY]
        if not isinstance(body, dict):
            raise _invalid("Malformed input request: the request body must be a JSON object.")
        return body

    # ---- Converse ----------------------------------------------------------------------------
    def make_reply(self, model_id: str, body: dict[str, Any], prompt: str) -> str:
        """The answer's text: JSON of the schema when ``outputConfig.textFormat`` asks for one."""
        definition = (((body.get("outputConfig") or {}).get("textFormat") or {}).get("structure") or {}).get(
            "jsonSchema"
        )
        if definition:
            return json.dumps(example_from_schema(json.loads(definition["schema"])))
        return fake_reply(self.reply, model_id, body, prompt)

    def _input_tokens(self, body: dict[str, Any]) -> int:
        n = sum(count_tokens(b.get("text", "")) for b in body.get("system") or [])
        n += sum(3 + count_tokens(_texts(m["content"])) for m in body["messages"])
        if body.get("toolConfig"):
            n += count_tokens(json.dumps(body["toolConfig"].get("tools")))
        return max(n, 1)

    def _tool_call(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The tool to call, when the model would call one."""
        config = body.get("toolConfig") or {}
        specs = [t["toolSpec"] for t in config.get("tools") or [] if "toolSpec" in t]
        if not specs:
            return None
        choice = config.get("toolChoice") or {"auto": {}}
        last = body["messages"][-1]
        answered = last["role"] == "user" and any("toolResult" in b for b in last["content"])
        if last["role"] != "user" or ("auto" in choice and answered):
            return None
        if "tool" in choice:
            return next(s for s in specs if s["name"] == choice["tool"]["name"])
        return specs[0]

    def plan(self, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """The answer to a valid Converse body: content blocks, stopReason and usage."""
        last_user = next(m for m in reversed(body["messages"]) if m["role"] == "user")
        user_text = " ".join(b["text"] for b in last_user["content"] if isinstance(b.get("text"), str))
        config = body.get("inferenceConfig") or {}
        budget = config.get("maxTokens", 4096)
        content: list[dict[str, Any]] = []
        if reasoning_requested(body):
            thought = f"Fake reasoning about: {user_text[:80]}".strip()
            signature = stable_id("sig", thought, length=40)
            content.append({"reasoningContent": {"reasoningText": {"text": thought, "signature": signature}}})
            budget -= count_tokens(thought)
        stop_reason, matched = "end_turn", None
        tool = self._tool_call(body)
        if tool is not None:
            if self.tool_preamble and "auto" in (body["toolConfig"].get("toolChoice") or {"auto": {}}):
                content.append({"text": f"I'll use the {tool['name']} tool."})
            tool_input = example_from_schema(tool["inputSchema"]["json"])
            tool_id = stable_id("tooluse_", tool["name"], json.dumps(body["messages"], sort_keys=True), length=22)
            tool_use = {
                "toolUseId": tool_id,
                "name": tool["name"],
                "input": tool_input if isinstance(tool_input, dict) else {},
            }
            content.append({"toolUse": tool_use})
            stop_reason = "tool_use"
        else:
            text = self.make_reply(model_id, body, user_text)
            for seq in config.get("stopSequences") or []:
                if seq in text:
                    text, stop_reason, matched = text[: text.index(seq)], "stop_sequence", seq
                    break
            text, cut = truncate_words(text, max(budget, 0))
            if cut:
                stop_reason = "max_tokens"
            content.append({"text": text})
        plan = {"content": content, "stopReason": stop_reason, "usage": self._usage(body, content)}
        fields = response_fields(model_id, body.get("additionalModelResponseFieldPaths"), matched)
        if fields is not None:
            plan["additionalModelResponseFields"] = fields
        return plan

    def _usage(self, body: dict[str, Any], content: list[dict[str, Any]]) -> dict[str, Any]:
        output = 0
        for b in content:
            if "text" in b:
                output += count_tokens(b["text"])
            elif "reasoningContent" in b:
                output += count_tokens(b["reasoningContent"]["reasoningText"]["text"])
            else:
                output += 3 + count_tokens(json.dumps(b["toolUse"]["input"]))
        inputs = self._input_tokens(body)
        usage = {"inputTokens": inputs, "outputTokens": max(output, 1), "totalTokens": inputs + max(output, 1)}
        if self.cache_read_input_tokens or self.cache_write_input_tokens:
            usage["cacheReadInputTokens"] = self.cache_read_input_tokens
            usage["cacheWriteInputTokens"] = self.cache_write_input_tokens
            usage["totalTokens"] += self.cache_read_input_tokens + self.cache_write_input_tokens
        return usage

    async def converse(
        self, request: web.Request, model_id: str, body: dict[str, Any], *, stream: bool
    ) -> web.StreamResponse:
        validate_converse(body, model_id)
        plan = self.plan(model_id, body)
        if stream:
            return await self._converse_stream(request, plan)
        return web.json_response(
            {
                "output": {"message": {"role": "assistant", "content": plan["content"]}},
                "stopReason": plan["stopReason"],
                "usage": plan["usage"],
                "metrics": {"latencyMs": self.latency_ms},
                **{k: v for k, v in plan.items() if k == "additionalModelResponseFields"},
            }
        )

    def converse_events(self, plan: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The ConverseStream events of a plan: (event type, payload)."""
        events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
        for i, block in enumerate(plan["content"]):
            events += [("contentBlockDelta", {"contentBlockIndex": i, "delta": d}) for d in _deltas(block, i, events)]
            events.append(("contentBlockStop", {"contentBlockIndex": i}))
        stop = {"stopReason": plan["stopReason"]}
        if "additionalModelResponseFields" in plan:
            stop["additionalModelResponseFields"] = plan["additionalModelResponseFields"]
        events.append(("messageStop", stop))
        events.append(("metadata", {"usage": plan["usage"], "metrics": {"latencyMs": self.latency_ms}}))
        return events

    def _writer(self, request: web.Request, extra_headers: dict[str, str] | None = None) -> EventStreamWriter:
        kind = request.headers.get(STREAM_ERROR_TYPE_HEADER, "modelStreamErrorException")
        payload = STREAM_ERRORS.get(kind, {"message": f"{kind} (injected by the fake)."})
        return EventStreamWriter(
            request,
            error_message=lambda: exception_message(kind, payload),
            split=self.split_writes,
            extra_headers=extra_headers,
        )

    async def _converse_stream(self, request: web.Request, plan: dict[str, Any]) -> web.StreamResponse:
        writer = self._writer(request)
        for event_type, payload in self.converse_events(plan):
            if self.padding:
                payload = {**payload, "p": padding(payload)}
            await writer.send(event_message(event_type, payload))
        return await writer.finish()

    # ---- InvokeModel (Anthropic on Bedrock) ----------------------------------------------------
    def _anthropic_body(self, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Check the Bedrock-specific keys; returns the body as the Anthropic API would take it."""
        if "anthropic." not in model_id:
            raise _invalid(f"The fake speaks InvokeModel for Anthropic models only, not {model_id}.")
        for key in body:
            if key not in INVOKE_FIELDS:
                raise _invalid(f"Malformed input request: #: extraneous key [{key}] is not permitted, please "
                               "reformat your input and try again.")  # fmt: skip
        for key in ("anthropic_version", "max_tokens", "messages"):
            if key not in body:
                raise _invalid(f"Malformed input request: #: required key [{key}] not found, please reformat your "
                               "input and try again.")  # fmt: skip
        if body["anthropic_version"] != ANTHROPIC_VERSION:
            raise _invalid(f"Malformed input request: #/anthropic_version: {body['anthropic_version']} is not a valid "
                           "enum value, please reformat your input and try again.")  # fmt: skip
        betas = body.get("anthropic_beta", [])
        if not isinstance(betas, list) or any(b not in SUPPORTED_BETAS for b in betas):
            raise _invalid("invalid beta flag")
        rest = {k: v for k, v in body.items() if k not in ("anthropic_version", "anthropic_beta")}
        return {**rest, "model": anthropic_model_name(model_id)}

    async def invoke(
        self, request: web.Request, model_id: str, body: dict[str, Any], *, stream: bool
    ) -> web.StreamResponse:
        anthropic_body = self._anthropic_body(model_id, body)
        try:
            turns = self._anthropic.validate(anthropic_body)
        except AnthropicError as e:
            raise _invalid(e.message) from None
        plan = self._anthropic._plan(anthropic_body, turns)
        usage = {
            "input_tokens": self._anthropic._input_tokens(anthropic_body, turns),
            "cache_creation_input_tokens": self.cache_write_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "output_tokens": plan["output_tokens"],
        }
        msg = {
            "id": random_id("msg_bdrk_01", 22),
            "type": "message",
            "role": "assistant",
            "model": anthropic_body["model"],
            "content": plan["content"],
            "stop_reason": plan["stop_reason"],
            "stop_sequence": plan["stop_sequence"],
            "usage": usage,
        }
        if stream:
            return await self._invoke_stream(request, msg)
        headers = {
            "x-amzn-bedrock-input-token-count": str(usage["input_tokens"]),
            "x-amzn-bedrock-output-token-count": str(usage["output_tokens"]),
            "x-amzn-bedrock-invocation-latency": str(self.latency_ms),
        }
        return web.json_response(msg, headers=headers)

    async def _invoke_stream(self, request: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
        writer = self._writer(request, {"x-amzn-bedrock-content-type": "application/json"})
        for event in message_events(msg):
            if event["type"] == "ping":
                continue
            if event["type"] == "message_stop":
                event = {**event, "amazon-bedrock-invocationMetrics": self._invocation_metrics(msg)}
            chunk = base64.b64encode(_json_bytes(event)).decode()
            payload: dict[str, Any] = {"bytes": chunk}
            if self.padding:
                payload["p"] = padding(payload)
            await writer.send(event_message("chunk", payload))
        return await writer.finish()

    def _invocation_metrics(self, msg: dict[str, Any]) -> dict[str, int]:
        return {
            "inputTokenCount": msg["usage"]["input_tokens"],
            "outputTokenCount": msg["usage"]["output_tokens"],
            "invocationLatency": self.latency_ms,
            "firstByteLatency": self.latency_ms // 2,
        }

    # ---- InvokeModel (embedding models) ----------------------------------------------------------
    def embed(self, model_id: str, body: dict[str, Any]) -> web.Response:
        """Titan Text Embeddings or Cohere Embed: the body validated as Bedrock does, deterministic
        unit vectors per text, the input token count in ``x-amzn-bedrock-input-token-count`` (and, for
        Titan, in the body's ``inputTextTokenCount``; Cohere's body has none)."""
        kind = embedding_family(model_id)
        if kind in ("titan-v1", "titan-v2"):
            text, dims, types = validate_titan(body, kind)
            vector = OpenAIFake.embedding_vector(model_id, text, dims)
            tokens = count_tokens(text)
            answer: dict[str, Any] = {"embedding": vector, "inputTextTokenCount": tokens}
            if kind == "titan-v2":
                answer["embeddingsByType"] = {t: _typed(vector, t) for t in types}
        else:
            texts, dims, by_type = validate_cohere(body, kind == "cohere-v4")
            vectors = [OpenAIFake.embedding_vector(model_id, t, dims) for t in texts]
            tokens = sum(count_tokens(t) for t in texts)
            answer = {"id": random_id("", 36), "texts": texts}
            if by_type is None:
                answer.update(embeddings=vectors, response_type="embeddings_floats")
            else:
                answer.update(
                    embeddings={t: [_typed(v, t) for v in vectors] for t in by_type},
                    response_type="embeddings_by_type",
                )
        headers = {"x-amzn-bedrock-input-token-count": str(tokens), "x-amzn-bedrock-invocation-latency": "20"}
        return web.json_response(answer, headers=headers)

    # ---- CountTokens -----------------------------------------------------------------------------
    def count_tokens(self, model_id: str, body: dict[str, Any]) -> web.Response:
        """``{"input": {"converse": …}}`` or ``{"input": {"invokeModel": {"body": <base64>}}}`` -> the
        ``{"inputTokens": N}`` the same Converse or InvokeModel request would report. Claude models by
        bare foundation-model id only (an inference profile, or another family, is refused as AWS does)."""
        for key in body:
            if key != "input":
                raise _invalid(f"Malformed input request: extraneous key [{key}] is not permitted.")
        union = body.get("input")
        if not isinstance(union, dict) or len(union) != 1 or next(iter(union)) not in ("converse", "invokeModel"):
            raise _invalid("The input field must set exactly one of converse, invokeModel.")
        if "anthropic." not in model_id or _PROFILE_PREFIX.match(model_id) or ":inference-profile/" in model_id:
            raise _invalid(NO_TOKEN_COUNTING)
        if "converse" in union:
            converse = union["converse"]
            if not isinstance(converse, dict):
                raise _invalid("The converse field must be a JSON object.")
            for key in converse:
                if key not in CONVERSE_TOKENS_FIELDS:
                    raise _invalid(f"Malformed input request: extraneous key [{key}] is not permitted in converse.")
            validate_converse(converse, model_id)
            return web.json_response({"inputTokens": self._input_tokens(converse)})
        invoke = union["invokeModel"]
        if not isinstance(invoke, dict) or set(invoke) != {"body"} or not isinstance(invoke["body"], str):
            raise _invalid("The invokeModel field must hold exactly a base64 body.")
        try:
            decoded = json.loads(base64.b64decode(invoke["body"], validate=True))
        except (binascii.Error, ValueError):
            raise _invalid("Malformed input request: the invokeModel body is not base64 of a JSON object.") from None
        if not isinstance(decoded, dict):
            raise _invalid("Malformed input request: the invokeModel body is not a JSON object.")
        anthropic_body = self._anthropic_body(model_id, decoded)
        try:
            turns = self._anthropic.validate(anthropic_body)
        except AnthropicError as e:
            raise _invalid(e.message) from None
        return web.json_response({"inputTokens": self._anthropic._input_tokens(anthropic_body, turns)})


def _deltas(block: dict[str, Any], i: int, events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The deltas of one content block; a tool use block first appends its contentBlockStart to events."""
    if "text" in block:
        return [{"text": piece} for piece in split_words(block["text"]) or [""]]
    if "reasoningContent" in block:
        reasoning = block["reasoningContent"]["reasoningText"]
        pieces = [{"reasoningContent": {"text": piece}} for piece in split_words(reasoning["text"])]
        return [*pieces, {"reasoningContent": {"signature": reasoning["signature"]}}]
    tool_use = block["toolUse"]
    start = {"toolUse": {"toolUseId": tool_use["toolUseId"], "name": tool_use["name"]}}
    events.append(("contentBlockStart", {"contentBlockIndex": i, "start": start}))
    return [{"toolUse": {"input": fragment}} for fragment in split_fixed(json.dumps(tool_use["input"]), 3)]


# --------------------------------------------------------------------------------------------
# embedding models
# --------------------------------------------------------------------------------------------


def embedding_family(model_id: str) -> str | None:
    """``titan-v2``, ``titan-v1``, ``cohere-v3`` or ``cohere-v4`` for the embedding models the fake serves
    (by base id, inference profile or foundation-model ARN); None for any other model."""
    base = model_id.rsplit("/", 1)[-1].lower()
    base = _PROFILE_PREFIX.sub("", base)
    if base.startswith("amazon.titan-embed-text-v2"):
        return "titan-v2"
    if base.startswith(("amazon.titan-embed-text-v1", "amazon.titan-embed-g1-text")):
        return "titan-v1"
    if base.startswith("cohere.embed-v4"):
        return "cohere-v4"
    if base.startswith(("cohere.embed-english-v3", "cohere.embed-multilingual-v3")):
        return "cohere-v3"
    return None


def _extraneous(body: dict[str, Any], allowed: frozenset[str]) -> None:
    for key in body:
        if key not in allowed:
            raise _invalid(f"Malformed input request: #: extraneous key [{key}] is not permitted, please reformat "
                           "your input and try again.")  # fmt: skip


def validate_titan(body: dict[str, Any], kind: str) -> tuple[str, int, list[str]]:
    """(text, dimensions, embedding types) of a valid Titan Text Embeddings body (G1 takes inputText only)."""
    _extraneous(body, TITAN_V2_FIELDS if kind == "titan-v2" else frozenset({"inputText"}))
    text = body.get("inputText")
    if not isinstance(text, str):
        raise _invalid("Malformed input request: #: required key [inputText] not found, please reformat your input "
                       "and try again.")  # fmt: skip
    if not text or len(text) > TITAN_MAX_CHARS:
        raise _invalid(f"Malformed input request: #/inputText: expected length between 1 and {TITAN_MAX_CHARS}.")
    if kind == "titan-v1":
        return text, 1536, ["float"]
    dims = body.get("dimensions", 1024)
    if dims not in TITAN_V2_DIMENSIONS or not is_int(dims):
        raise _invalid(f"Malformed input request: #/dimensions: {dims} is not a valid enum value, please reformat "
                       "your input and try again.")  # fmt: skip
    if "normalize" in body and not isinstance(body["normalize"], bool):
        raise _invalid("Malformed input request: #/normalize: expected type: Boolean.")
    types = body.get("embeddingTypes", ["float"])
    if not isinstance(types, list) or not types or any(t not in ("float", "binary") for t in types):
        raise _invalid("Malformed input request: #/embeddingTypes: each value must be one of float, binary.")
    return text, dims, types


def validate_cohere(body: dict[str, Any], v4: bool) -> tuple[list[str], int, list[str] | None]:
    """(texts, dimensions, embedding types or None) of a valid Cohere Embed body (texts only)."""
    _extraneous(body, COHERE_V4_FIELDS if v4 else COHERE_FIELDS)
    texts = body.get("texts")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise _invalid("Malformed input request: #/texts: expected a non-empty array of strings.")
    if len(texts) > COHERE_MAX_TEXTS:
        raise _invalid(f"Malformed input request: #/texts: expected maximum item count: {COHERE_MAX_TEXTS}, "
                       f"found: {len(texts)}, please reformat your input and try again.")  # fmt: skip
    if any(len(t) > COHERE_MAX_CHARS for t in texts):
        raise _invalid(f"Malformed input request: #/texts: expected maxLength: {COHERE_MAX_CHARS}.")
    if body.get("input_type") not in COHERE_INPUT_TYPES:
        raise _invalid("Malformed input request: #: required key [input_type] not found or not one of "
                       f"{', '.join(COHERE_INPUT_TYPES)}, please reformat your input and try again.")  # fmt: skip
    if "truncate" in body and body["truncate"] not in COHERE_TRUNCATE:
        raise _invalid(f"Malformed input request: #/truncate: {body['truncate']} is not a valid enum value.")
    types = body.get("embedding_types")
    if types is not None and (
        not isinstance(types, list) or not types or any(t not in COHERE_EMBEDDING_TYPES for t in types)
    ):
        raise _invalid(f"Malformed input request: #/embedding_types: each value must be one of "
                       f"{', '.join(COHERE_EMBEDDING_TYPES)}.")  # fmt: skip
    dims = body.get("output_dimension", 1536 if v4 else 1024)
    if v4 and (not is_int(dims) or dims not in COHERE_V4_DIMENSIONS):
        raise _invalid(f"Malformed input request: #/output_dimension: {dims} is not a valid enum value.")
    return texts, dims, types


def _typed(vector: list[float], kind: str) -> list[Any]:
    """A unit vector as Bedrock's embedding types: floats, int8/uint8 scaled, or packed sign bits."""
    if kind == "float":
        return vector
    if kind == "int8":
        return [round(v * 127) for v in vector]
    if kind == "uint8":
        return [round((v + 1) * 127.5) for v in vector]
    bits = [1 if v > 0 else 0 for v in vector]
    packed = [int("".join(map(str, bits[i : i + 8])).ljust(8, "0"), 2) for i in range(0, len(bits), 8)]
    return packed if kind == "ubinary" else [p - 128 for p in packed]
