"""The router-level phase (HCM filter): one instance per ext_proc stream, i.e. per HTTP request.

Envoy has already routed the request on the body's model (json_to_metadata). Two shapes:

- On a route whose rule translates every backend the same way, the route names that backend's
  configuration (contract.ROUTE_BACKEND_METADATA_KEY) and this phase does everything on one stream:
  the request for that backend (path, body, credentials, stripped client headers), then the response.
- Otherwise it prepares the request for the per-attempt phase (x-ai-eg-model,
  x-ai-eg-original-path), and finds the model itself where Envoy could not (a multipart form, a JSON
  body of another content type): it sets x-ai-eg-model and clears the route cache.

Response: learns which backend served the final attempt (the per-attempt phase wrote `backend_name`
to dynamic metadata; on one stream, the endpoint's metadata in the response attributes), translates
the body back into the client's schema, and writes names, usage and costs to dynamic metadata
(namespace io.envoy.ai_gateway).

Metering never waits for the end of the stream: SDKs close the connection as soon as they have read
`[DONE]` (or `message_stop`), and Envoy then never sends the final body chunk. So the names go out
with the response headers, and usage and costs with the very chunk in which they change (Anthropic's
input tokens at `message_start`, the totals before the end marker): Envoy merges each update into
the request's metadata, and what the client was sent is charged even if it hangs up early.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

import aigw_contract as contract
from aigw.translator.v1 import config_pb2

from .backend_request import backend_request
from .client_stream import ClientStream
from .config import RuntimeConfig
from .costs import Cost, compute_costs
from .encoding import DECODABLE, Decoder, decode_all, normalise
from .endpoints import (
    FORM_DEFAULT_MODELS,
    FORM_ENDPOINTS,
    JSON_ENDPOINTS,
    STREAMING_ENDPOINTS,
    TEXT_ENDPOINTS,
    USAGE_OPTION_ENDPOINTS,
    ClientSchema,
    Endpoint,
    ResolvedPath,
    client_schema_of,
    client_schema_of_path,
    model_id_of,
    resolve_path,
    unsupported_path,
)
from .errors import (
    GatewayError,
    client_status,
    credential_rejected,
    gateway_error_body,
    openai_error,
    reply_level,
    to_client_error,
)
from .extproc import (
    duplex_response_mode,
    dynamic_metadata,
    header_mutation,
    immediate,
    is_header_safe,
    streamed_body,
    streamed_response_mode,
)
from .limits import Counted, Request
from .logs import RedactedHeaders, get_logger
from .model_list import PageError, anthropic_models_body, model_body, models_body
from .multipart import form_fields
from .scrub import configured_secrets, scrub_error_body
from .sse import EventTooLarge
from .translators import ResponseContext, ResponseTranslator, get_pair
from .translators.base import load_json
from .upstream_phase import backend_name_from_attributes
from .usage import TokenUsage, estimate_prompt_tokens, provisional
from .whole_as_stream import whole_as_stream

log = get_logger(__name__)

# How long before Envoy's per-try idle timer the translator ends a silent stream itself: a quarter of
# the idle timeout, at most 1 s. The margin covers the ext_proc hop and a busy event loop (both
# absolute delays, hence the cap); a larger one would end healthy slow streams well before the
# configured timeout.
_IDLE_MARGIN_SHARE = 0.25
_IDLE_MARGIN_MAX_S = 1.0


def watchdog_delay(idle_timeout_s: float) -> float:
    """Seconds without an upstream chunk after which the translator ends the client's stream: a
    margin before Envoy's per-try idle timeout (idle_timeout_s) would reset it."""
    return idle_timeout_s - min(idle_timeout_s * _IDLE_MARGIN_SHARE, _IDLE_MARGIN_MAX_S)


# The content type of AWS's binary event stream (Bedrock's ConverseStream, InvokeModelWithResponseStream).
AWS_EVENT_STREAM = "application/vnd.amazon.eventstream"


@dataclass
class ParsedRequest:
    model: str
    stream: bool = False
    # The client asked for the usage-only chunk (OpenAI stream_options.include_usage). The upstream
    # phase asks every backend that supports it for usage; the response side strips the chunk again.
    include_usage: bool = False
    # A rough prompt size, charged if the answer reports no usage (a stream stopped before it, a
    # backend that does not count): for streams, Anthropic Messages (whose client is told a usage),
    # and text generations where requests are charged.
    prompt_estimate: int = 0
    # Embeddings asked for as base64 (encoding_format): translators that build the list pack them.
    base64_embeddings: bool = False


# Room to walk a body as deep as orjson reads it (every process had it as a side effect of building
# celpy's environment at import; celpy is now imported only for a CEL cost, aigw_contract.costs).
sys.setrecursionlimit(max(sys.getrecursionlimit(), contract.RECURSION_LIMIT))


def _load_json(body: bytes) -> Any:
    """The parsed body; GatewayError(400) when it is not JSON or nested deeper than orjson reads."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"malformed JSON request body: {exc}") from None


def _stream_flag(obj: dict[str, Any]) -> bool:
    stream = obj.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise GatewayError(400, f"'stream' must be a boolean, got {type(stream).__name__} {str(stream)[:20]!r}")
    return stream is True


def parse_request(
    resolved: ResolvedPath, body: bytes, content_type: str, metered: bool = False
) -> ParsedRequest | None:
    """Model and streaming flags of a request body, and the estimate of its prompt (ParsedRequest:
    for streams, Messages, and where requests are `metered`, any text generation). Raises
    GatewayError(400) for a malformed body of a known endpoint; None for a passthrough body without
    a model."""
    endpoint = resolved.endpoint
    if endpoint in FORM_ENDPOINTS:
        fields = form_fields(body, content_type, "model", "stream")  # one pass over a body of audio
        model = fields.get("model") or FORM_DEFAULT_MODELS.get(endpoint)
        if not model:
            raise GatewayError(400, "multipart form field 'model' is required (the gateway routes by it)")
        return ParsedRequest(model=model, stream=fields.get("stream", "").lower() == "true")
    if endpoint not in JSON_ENDPOINTS:
        try:
            obj = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict):
            return None
        model = obj.get("model")
        if not isinstance(model, str) or not model:
            return None
        # A passthrough API that streams (e.g. "stream": true) is streamed and metered too.
        stream = obj.get("stream") is True
        return ParsedRequest(model=model, stream=stream, prompt_estimate=estimate_prompt_tokens(obj) if stream else 0)
    obj = _load_json(body)
    if not isinstance(obj, dict):
        raise GatewayError(400, "request body must be a JSON object")
    model = obj.get("model")
    if model is None or model == "":
        raise GatewayError(400, "field 'model' is required")
    if not isinstance(model, str):
        raise GatewayError(400, "field 'model' must be a string")
    if endpoint is Endpoint.AUDIO_SPEECH:
        stream = obj.get("stream_format") == "sse"
    else:
        stream = _stream_flag(obj) and endpoint in STREAMING_ENDPOINTS
    # (Messages always: a backend that reports no usage still owes an Anthropic client a figure.)
    estimated = stream or endpoint is Endpoint.MESSAGES or (metered and endpoint in TEXT_ENDPOINTS)
    parsed = ParsedRequest(model=model, stream=stream, prompt_estimate=estimate_prompt_tokens(obj) if estimated else 0)
    if stream and endpoint in USAGE_OPTION_ENDPOINTS:
        options = obj.get("stream_options")
        parsed.include_usage = isinstance(options, dict) and options.get("include_usage") is True
    parsed.base64_embeddings = endpoint is Endpoint.EMBEDDINGS and obj.get("encoding_format") == "base64"
    return parsed


def _gateway_credential(backend: config_pb2.Backend) -> bool:
    """Whether the gateway puts a credential of its own on this backend's requests (none at all, or
    the client's own through an override, and a 401 is not the gateway's credential rejected)."""
    return backend.auth.WhichOneof("kind") is not None and not backend.auth.HasField("credential_override")


# Backend -> when its credential's rejection was last logged (one line a minute per backend).
_rejections_logged: dict[str, float] = {}
REJECTION_LOG_EVERY_S = 60.0


def _rejects_credential(status: int, client_error: bytes) -> bool:
    """Whether a provider's error (in the client's shape) rejects the credential it was sent: a 401,
    or a 403 of type authentication_error (AWS answers unknown or expired keys and bad signatures
    with 403s: UnrecognizedClientException, InvalidSignatureException, ExpiredTokenException)."""
    if status == 401:
        return True
    if status != 403:
        return False
    obj = load_json(client_error)
    error = obj.get("error") if isinstance(obj, dict) else None
    return isinstance(error, dict) and error.get("type") == "authentication_error"


def _credential_rejected(backend: str, status: int) -> None:
    """A provider's rejection of the gateway's credential: a warning naming the backend, one a
    minute (the client's message says whose credential; the operator must learn which key to fix)."""
    now = time.monotonic()
    if now - _rejections_logged.get(backend, -REJECTION_LOG_EVERY_S) >= REJECTION_LOG_EVERY_S:
        _rejections_logged[backend] = now
        log.warning("backend_credential_rejected", backend=backend, status=status)


class RouterPhase:
    def __init__(
        self, runtime: RuntimeConfig, route_backend: str = "", idle_timeout_s: float = 0.0, first_backend: str = ""
    ) -> None:
        self.runtime = runtime
        # The route's streamIdleTimeout (0: none). With one, a streamed response body is processed
        # in FULL_DUPLEX_STREAMED mode, so the translator can end a silent stream itself.
        self.idle_timeout_s = idle_timeout_s
        self.duplex = False
        # time.monotonic() by which the next upstream chunk must arrive (0.0: not watching), and
        # whether the translator has already ended the client's stream.
        self.idle_deadline = 0.0
        self.ended = False
        # The backend's stream failed in a way no later byte mends (an event too large to hold): the
        # client was told, and what the backend sends after it is dropped.
        self.cut = False
        # The output tokens of a whole text answer that reported no usage, estimated from its text.
        self.answer_estimate: int | None = None
        # Set on a route that translates on one stream: the backend whose translation applies.
        self.route_backend = route_backend
        # The backend the request goes to first, where the stream is told (route_backend; per
        # attempt, the rule's first backend, sent where the rule has budgets): whose route's costs a
        # request is charged by when its client leaves before any response came.
        self.first_backend = route_backend or first_backend
        # The request went on to a backend: admitted, not answered by the gateway (set by the server).
        self.forwarded = False
        self.resolved: ResolvedPath | None = None
        self.client_schema = ClientSchema.OPENAI
        self.headers: dict[str, str] = {}
        self.client_ip = ""  # the client's address, when budgets may look at it
        self.parsed: ParsedRequest | None = None
        self.status = 0
        self.backend_name = ""
        self.translator: ResponseTranslator | None = None
        self.streaming = False
        # The client asked for a stream and the backend answered one complete body (whole_as_stream).
        self.whole_as_stream = False
        # An answer passed on as it comes, untouched: speech's audio, which a client plays as it arrives.
        self.relay = False
        self.encoding = ""
        self.decoder: Decoder | None = None
        self.client_stream: ClientStream | None = None
        # The usage figures last written to dynamic metadata (running totals of a stream).
        self.metered: tuple[bool | int, ...] = ()
        self.started = time.monotonic()
        self.first_token_at = 0.0
        self.last_token_at = 0.0
        # The route's budgets this request was admitted under (charged when the stream ends), and the
        # x-ratelimit-* headers its response gets.
        self.counted: list[Counted] = []
        self.rate_limit_headers: dict[str, str] = {}
        # Admitted without its budgets checked (the store could not be read; failing open).
        self.unchecked = False
        # Refused by the per-attempt phase (contract.REFUSED_HERE_HEADER on its answer), or by Envoy's
        # check of a SecurityPolicy (envoys_refusal: its answer passed on as it is).
        self.refused_here = False
        self.envoys_refusal = False
        # What budgets' conditions look at (headers and the client's address), once admitted.
        self.limit_request = Request({})

    @property
    def local_counted(self) -> list[Counted]:
        """The local budgets among those the request was admitted under."""
        return [c for c in self.counted if c.budget.local]

    # ------------------------------------------------------------------ request

    def request_headers(
        self, headers: dict[str, str], end_of_stream: bool, client_ip: str = ""
    ) -> ep.ProcessingResponse:
        self.headers = headers
        self.client_ip = client_ip
        path = headers.get(":path", "/")
        log.debug("router_request", headers=RedactedHeaders(headers, self.runtime.secret_headers))
        resolved = resolve_path(path, self.runtime.root_prefix)
        if resolved is None:
            root = self.runtime.root_prefix
            body = gateway_error_body(client_schema_of_path(path, root), 404, unsupported_path(path, root))
            return immediate(404, body, details="aigw_unsupported_path")
        self.resolved = resolved
        self.client_schema = client_schema_of(resolved.endpoint, resolved.local_path)
        if resolved.endpoint is Endpoint.MODELS:
            if headers.get(":method", "GET") != "GET":
                body = gateway_error_body(self.client_schema, 405, "method not allowed")
                return immediate(405, body, details="aigw_method_not_allowed")
            # An Anthropic SDK whose base URL lacks /anthropic asks /v1/models too: its
            # anthropic-version header says whose list it reads.
            anthropic = self.client_schema is ClientSchema.ANTHROPIC or "anthropic-version" in headers
            if anthropic:
                self.client_schema = ClientSchema.ANTHROPIC
            authority = headers.get(":authority", "")
            model_id = model_id_of(resolved.local_path)
            if model_id is not None:
                one = model_body(self.runtime.config.models, authority, model_id, anthropic)
                if one is None:
                    message = f"The model '{model_id}' does not exist"
                    if anthropic:
                        body = gateway_error_body(self.client_schema, 404, message)
                    else:  # OpenAI's own answer for an unknown model
                        body = openai_error(404, message, "invalid_request_error", "model", "model_not_found")
                    return immediate(404, body, details="aigw_model_not_found")
                return immediate(200, one, details="aigw_models")
            if not anthropic:
                return immediate(200, models_body(self.runtime.config.models, authority), details="aigw_models")
            try:
                body = anthropic_models_body(self.runtime.config.models, authority, resolved.query)
            except PageError as exc:
                return immediate(400, gateway_error_body(self.client_schema, 400, str(exc)), details="aigw_bad_query")
            return immediate(200, body, details="aigw_models")
        if end_of_stream and (resolved.endpoint in JSON_ENDPOINTS or resolved.endpoint in FORM_ENDPOINTS):
            body = gateway_error_body(self.client_schema, 400, "a request body is required")
            return immediate(400, body, details="aigw_missing_body")
        if end_of_stream and self.route_backend:
            return self._send_to_backend(b"", has_body=False)
        if end_of_stream:
            # No body (e.g. a GET passed through): the original path is all the upstream phase needs.
            return ep.ProcessingResponse(
                request_headers=ep.HeadersResponse(
                    response=ep.CommonResponse(
                        header_mutation=header_mutation({contract.ORIGINAL_PATH_HEADER: path}),
                        clear_route_cache=True,
                    )
                )
            )
        return ep.ProcessingResponse(request_headers=ep.HeadersResponse())

    def request_body(self, body: bytes) -> ep.ProcessingResponse:
        assert self.resolved is not None
        try:
            parsed = parse_request(self.resolved, body, self.headers.get("content-type", ""), self.runtime.metered)
        except GatewayError as err:
            return immediate(err.status, gateway_error_body(self.client_schema, err.status, err.message))
        if parsed is not None and not is_header_safe(parsed.model):
            message = "field 'model' must not contain control characters"
            return immediate(400, gateway_error_body(self.client_schema, 400, message))
        self.parsed = parsed
        if self.route_backend:
            return self._send_to_backend(body, has_body=True)
        set_headers = {contract.ORIGINAL_PATH_HEADER: self.headers.get(":path", "/")}
        if parsed is not None:
            set_headers[contract.MODEL_HEADER] = parsed.model
            # The model's route scope (where a listener's routes come in scopes): Envoy picks the
            # scope again by it as it routes again.
            set_headers[contract.ROUTE_SCOPE_HEADER] = contract.route_scope(parsed.model)
        # Nothing in dynamic metadata before Envoy routes again: the routes Envoy serves alone (or on
        # one stream) match the body's model there, and a request whose model only the translator
        # could read must take the per-attempt routes (matched on the x-ai-eg-model header).
        return ep.ProcessingResponse(
            request_body=ep.BodyResponse(
                response=ep.CommonResponse(header_mutation=header_mutation(set_headers), clear_route_cache=True)
            )
        )

    @property
    def routed_headers(self) -> dict[str, str]:
        """The request's headers as Envoy routes on them: x-ai-eg-model is the body's model (set
        by request_body, whatever the client sent)."""
        if self.parsed is None:
            return self.headers
        return {**self.headers, contract.MODEL_HEADER: self.parsed.model}

    @property
    def request_model(self) -> str:
        """The model the client asked for: the body's, else the x-ai-eg-model header's."""
        return self.parsed.model if self.parsed else self.headers.get(contract.MODEL_HEADER, "")

    def serves(self, backend: config_pb2.Backend) -> bool:
        """Whether `backend` can serve this request's endpoint (its schema translates it; a request
        whose path is not known yet is taken to be served)."""
        return self.resolved is None or get_pair(self.resolved.endpoint, backend.schema.name) is not None

    def _send_to_backend(self, body: bytes, has_body: bool) -> ep.ProcessingResponse:
        """One stream does it all: the request for the route's backend, as the per-attempt phase
        would build it (every backend of the rule is translated alike, so retries reuse it)."""
        # The client's own path: an x-ai-eg-original-path it sent is not trusted.
        view = {**self.headers, contract.ORIGINAL_PATH_HEADER: self.headers.get(":path", "/")}
        try:
            sent = backend_request(self.runtime, self.route_backend, view, self.request_model, {}, body, has_body)
        except GatewayError as err:
            log.log(reply_level(err.status), "route_local_reply", status=err.status, reason=err.message)
            return immediate(err.status, gateway_error_body(self.client_schema, err.status, err.message))
        if sent.answer is not None:
            return immediate(200, sent.answer, details="aigw_answered")
        log.debug(
            "route_request",
            backend=sent.backend_name,
            set_headers=RedactedHeaders(sent.set_headers, self.runtime.secret_headers),
            removed=sent.remove_headers,
        )
        # The client's path stays readable (access log) after :path is rewritten for the backend.
        sent.set_headers[contract.ORIGINAL_PATH_HEADER] = view[contract.ORIGINAL_PATH_HEADER]
        if self.parsed is not None:  # the model that routed it, as on every other route (not a client's own header)
            sent.set_headers[contract.MODEL_HEADER] = self.parsed.model
        common = ep.CommonResponse(header_mutation=header_mutation(sent.set_headers, sent.remove_headers))
        if sent.body is not None:
            common.body_mutation.body = sent.body
        if has_body:
            return ep.ProcessingResponse(request_body=ep.BodyResponse(response=common))
        return ep.ProcessingResponse(request_headers=ep.HeadersResponse(response=common))

    # ------------------------------------------------------------------ response

    def _setup_translator(
        self, metadata: dict[str, dict[str, Any]], attrs: dict[str, Any], headers: dict[str, str]
    ) -> None:
        if self.route_backend:
            # One stream: the endpoint Envoy picked names its backend (all are translated alike).
            self.backend_name = backend_name_from_attributes(attrs) or self.route_backend
        else:
            name = (metadata.get(contract.METADATA_NAMESPACE) or {}).get(contract.BACKEND_NAME_METADATA_KEY)
            self.backend_name = name if isinstance(name, str) else ""
        backend = self.runtime.backends.get(self.backend_name)
        if backend is None or self.resolved is None:
            return
        pair = get_pair(self.resolved.endpoint, backend.schema.name)
        if pair is None:
            return
        request_model = self.parsed.model if self.parsed else ""
        ctx = ResponseContext(
            endpoint=self.resolved.endpoint,
            client_schema=self.client_schema,
            request_model=request_model,
            effective_model=backend.model_name_override or request_model,
            stream=self.streaming,
            include_usage=bool(self.parsed and self.parsed.include_usage),
            response_headers=headers,
            base64_embeddings=bool(self.parsed and self.parsed.base64_embeddings),
            prompt_estimate=self.parsed.prompt_estimate if self.parsed else 0,
        )
        self.translator = pair.response_translator(ctx)

    def response_headers(
        self,
        headers: dict[str, str],
        metadata: dict[str, dict[str, Any]],
        end_of_stream: bool,
        attrs: dict[str, Any] | None = None,
    ) -> ep.ProcessingResponse:
        try:
            self.status = int(headers.get(":status", "0"))
        except ValueError:
            self.status = 0
        details = str((attrs or {}).get(contract.RESPONSE_DETAILS_ATTRIBUTE, ""))
        # Envoy's own refusal of a SecurityPolicy's check: the client's already, as it is.
        self.envoys_refusal = details.startswith(contract.CLIENT_CHECK_REFUSALS)
        self.refused_here = contract.REFUSED_HERE_HEADER in headers or self.envoys_refusal
        ok = 200 <= self.status < 300
        # A backend may answer a streaming request with a plain JSON body: only SSE (or AWS's binary
        # event stream, which the client gets as SSE) is streamed; such a body is translated whole,
        # then sent as the client's stream (whole_as_stream).
        content_type = headers.get("content-type", "").lower()
        aws_stream = AWS_EVENT_STREAM in content_type
        is_sse = not content_type or "event-stream" in content_type or aws_stream
        asked_stream = bool(ok and self.parsed and self.parsed.stream and self.resolved is not None)
        self.streaming = asked_stream and is_sse
        self.whole_as_stream = asked_stream and "json" in content_type
        self.encoding = normalise(headers.get("content-encoding", "identity"))
        if self.encoding not in ("", "identity") and self.encoding not in DECODABLE:
            self.streaming = self.whole_as_stream = False  # an encoding we cannot read passes through untouched
            return ep.ProcessingResponse(response_headers=ep.HeadersResponse())
        self._setup_translator(metadata, attrs or {}, headers)
        resp = ep.ProcessingResponse(response_headers=ep.HeadersResponse())
        if self.refused_here:  # (the gateway's own: not the client's)
            resp.response_headers.response.header_mutation.remove_headers.append(contract.REFUSED_HERE_HEADER)
        speech = self.resolved is not None and self.resolved.endpoint is Endpoint.AUDIO_SPEECH
        self.relay = ok and speech and content_type.startswith("audio/") and not end_of_stream
        if self.relay:
            resp.mode_override.CopyFrom(streamed_response_mode())
        if self.streaming and not end_of_stream:
            assert self.resolved is not None
            self.client_stream = ClientStream(self.resolved.endpoint, self.client_schema)
            self._meter(resp)  # the names now: the access line has them even if the client hangs up
            if self.idle_timeout_s > 0:
                # The watchdog starts with the first chunk: Envoy 1.40 takes a body response only
                # once it has sent one (before, a silent backend meets Envoy's own idle timer).
                self.duplex = True
                resp.mode_override.CopyFrom(duplex_response_mode())
            else:
                resp.mode_override.CopyFrom(streamed_response_mode())
            remove = ["content-length"]
            if self.encoding in DECODABLE:
                self.decoder = Decoder(self.encoding)
                remove.append("content-encoding")
            set_headers = {"content-type": "text/event-stream"} if aws_stream else {}
            resp.response_headers.response.header_mutation.CopyFrom(header_mutation(set_headers, remove))
        if self.rate_limit_headers and "x-ratelimit-limit" not in headers:
            # (A quota's refusal by the per-attempt phase carries its own: they stay.)
            added = header_mutation(self.rate_limit_headers)
            resp.response_headers.response.header_mutation.set_headers.extend(added.set_headers)
        if end_of_stream:
            self._finish(resp)
        return resp

    def _stream_out(self, body: bytes, end_of_stream: bool, incomplete: str = "") -> bytes:
        """A streamed chunk as the client gets it; at the end, an error event in the client's schema
        if the stream did not reach its proper end (`incomplete`: the error's message)."""
        if self.cut:
            return b""
        plain = body
        if self.decoder is not None:
            plain = self.decoder.feed(body) + (self.decoder.finish() if end_of_stream else b"")
        try:
            out = self.translator.feed(plain) if self.translator else plain
            if end_of_stream and self.translator:
                out += self.translator.finish()
        except EventTooLarge as exc:
            return self._cut(str(exc))
        if self.client_stream is not None:
            self.client_stream.sent(out)
            if end_of_stream and not self.client_stream.complete:
                if incomplete:
                    out += self.client_stream.error_event(incomplete)
                else:
                    log.warning("upstream_stream_incomplete", backend=self.backend_name)
                    out += self.client_stream.error_event()
        if out:
            now = time.monotonic()
            self.first_token_at = self.first_token_at or now
            self.last_token_at = now
        return out

    def _cut(self, message: str) -> bytes:
        """The client's stream ended with an error event in its schema, and nothing after it (a
        stream the translator re-encodes: the client has whole events only, and the blank line
        before the error is one more separator; a relayed stream goes on unread, sse.RelayedEvents)."""
        self.cut = True
        log.warning("upstream_stream_failed", backend=self.backend_name, reason=message)
        assert self.translator is not None  # only a translator holds events
        self.translator.usage.known = False  # charged as far as it went (provisional)
        error = self.client_stream.error_event(message) if self.client_stream is not None else b""
        return b"\n\n" + error

    def _arm_watchdog(self) -> None:
        self.idle_deadline = time.monotonic() + watchdog_delay(self.idle_timeout_s)

    def _duplex_body(self, body: bytes, end_of_stream: bool) -> ep.ProcessingResponse:
        """A chunk in FULL_DUPLEX_STREAMED mode: answered with the translated bytes (every chunk is
        answered, an empty one too); the watchdog restarts."""
        if self.ended:
            # The translator already ended the client's stream: what the backend sends late is dropped.
            return streamed_body(b"", False)
        resp = streamed_body(self._stream_out(body, end_of_stream), end_of_stream)
        if end_of_stream:
            self.idle_deadline = 0.0
            self.ended = True
            self._finish(resp)
        else:
            self._arm_watchdog()
            self._meter(resp, only_if_changed=True)
        return resp

    def response_trailers(self) -> list[ep.ProcessingResponse]:
        """Response trailers: only sent in FULL_DUPLEX_STREAMED mode, where they end the body (its
        last chunk had no end of stream), so the rest of the client's stream goes out before them."""
        trailers = ep.ProcessingResponse(response_trailers=ep.TrailersResponse())
        if not self.duplex or self.ended:
            return [trailers]
        self.idle_deadline = 0.0
        self.ended = True
        last = streamed_body(self._stream_out(b"", True), False)
        self._finish(last)
        return [last, trailers]

    def idle_timeout(self) -> ep.ProcessingResponse:
        """The backend sent nothing for nearly the route's streamIdleTimeout: the translator ends the
        client's stream itself, with an error event in its schema (unless the stream had already
        reached its proper end), before Envoy's per-try idle timer would reset it."""
        self.idle_deadline = 0.0
        self.ended = True
        log.warning("upstream_stream_idle", backend=self.backend_name, idle_timeout_s=self.idle_timeout_s)
        message = (
            "the backend stopped sending before the response was complete "
            f"(the route's streamIdleTimeout is {self.idle_timeout_s:g}s)"
        )
        resp = streamed_body(self._stream_out(b"", True, incomplete=message), True)
        self._finish(resp)
        return resp

    def _whole_for_client(self, body: bytes | None) -> bytes | None:
        """A whole body (decoded) as the client gets it; None: as it came. `body` None: an error in
        an encoding the translator cannot read, which cannot be searched for a credential the
        provider may have quoted: the client gets its status, not its body."""
        if self.envoys_refusal:
            return None
        if body is None:
            log.warning("upstream_error_unreadable", backend=self.backend_name, encoding=self.encoding)
            message = f"the backend answered {self.status} in an encoding the gateway cannot read ({self.encoding})"
            return gateway_error_body(self.client_schema, self.status, message)
        try:
            if self.status >= 400 or self.status < 200:
                backend = self.runtime.backends.get(self.backend_name)
                if self.status >= 400:  # before any translation, which may cut or unescape what it holds
                    body = scrub_error_body(body, configured_secrets(backend))
                    self.status = client_status(self.client_schema, self.status, body)
                out = (
                    self.translator.error(self.status, body)
                    if self.translator
                    else to_client_error(self.client_schema, self.status, body)
                )
                # (A refusal of the gateway's own is no provider's rejection of its key.)
                providers = not self.refused_here and backend is not None and _gateway_credential(backend)
                if providers and _rejects_credential(self.status, out):
                    _credential_rejected(self.backend_name, self.status)
                    out = credential_rejected(out, self.status)
                return out
            new = self.translator.body(body) if self.translator else None
            if self.translator and not self.translator.usage.reported and self._estimated:
                self.answer_estimate = estimate_prompt_tokens(load_json(new if new is not None else body))
            if self.whole_as_stream:
                assert self.resolved is not None and self.parsed is not None
                answer = new if new is not None else body
                stream = whole_as_stream(self.resolved.endpoint, answer, self.parsed.include_usage)
                self.whole_as_stream = stream is not None
                new = stream or new
                if stream is not None:  # every token reaches the client now, at once
                    self.first_token_at = self.last_token_at = time.monotonic()
            return new
        except (AttributeError, TypeError, KeyError, ValueError, IndexError, GatewayError):
            # Never a 2xx with an error body: SDKs would parse it as a success.
            log.warning("upstream_body_untranslatable", backend=self.backend_name, status=self.status)
            self.status = 502
            if self.translator is not None:
                self.translator.usage.known = False
            return gateway_error_body(self.client_schema, 502, "the backend response could not be translated")

    def response_body(self, body: bytes, end_of_stream: bool) -> ep.ProcessingResponse:
        if self.duplex:
            return self._duplex_body(body, end_of_stream)
        resp = ep.ProcessingResponse(response_body=ep.BodyResponse())
        common = resp.response_body.response
        if self.relay:
            pass  # each chunk as it came
        elif self.streaming:
            out = self._stream_out(body, end_of_stream)
            if self.decoder is not None or out != body:
                if out:
                    common.body_mutation.body = out
                else:
                    common.body_mutation.clear_body = True
        else:
            if not end_of_stream:
                return resp  # only whole bodies are translated in buffered mode
            original = body
            encoded = self.encoding not in ("", "identity")
            plain = decode_all(self.encoding, body) if self.encoding in DECODABLE else None if encoded else body
            if plain is None and self.status < 400:
                self._finish(resp)  # passed on as it came, for the client to decode
                return resp
            came_as = self.status
            new = self._whole_for_client(plain)
            if new is None and plain is not original:
                pass  # unchanged: the encoded original goes out with its content-encoding
            elif new is not None and (new != original or self.status != came_as):
                common.body_mutation.body = new
                set_headers = {"content-length": str(len(new))}
                if self.status >= 400:
                    set_headers["content-type"] = "application/json"
                    set_headers[":status"] = str(self.status)
                elif self.whole_as_stream:
                    set_headers["content-type"] = "text/event-stream"
                common.header_mutation.CopyFrom(header_mutation(set_headers, ["content-encoding"]))
        if end_of_stream:
            self._finish(resp)
        elif self.streaming:
            self._meter(resp, only_if_changed=True)
        return resp

    def _usage(self) -> TokenUsage | None:
        """The usage to charge now: a stream's provisional usage until the provider's is final; a
        forwarded request's prompt estimate when its client left before the response began (the
        provider read the prompt)."""
        estimate = self.parsed.prompt_estimate if self.parsed else 0
        if self.translator is None:
            if self.forwarded and self.status == 0 and estimate > 0:
                return provisional(TokenUsage(), estimate, 0)
            return None
        if self.client_stream is not None:
            return provisional(self.translator.usage, estimate, self.client_stream.events)
        if self.answer_estimate is not None:
            return provisional(self.translator.usage, estimate, self.answer_estimate)
        return self.translator.usage

    def _meter(self, resp: ep.ProcessingResponse, only_if_changed: bool = False) -> None:
        """Writes the names and the usage so far (with its costs) to dynamic metadata; with
        only_if_changed, only when the usage figures changed since they were last written."""
        usage = self._usage()
        figures = (usage.known, *usage.as_dict().values()) if usage is not None else ()
        if only_if_changed and figures == self.metered:
            return
        fields = self._metadata_fields(usage)
        if fields:
            self.metered = figures
            resp.dynamic_metadata.CopyFrom(dynamic_metadata(contract.METADATA_NAMESPACE, fields))

    def _metadata_fields(self, usage: TokenUsage | None) -> dict[str, Any]:
        """Names of the backend that answered, and usage with its costs once there is any."""
        backend = self.runtime.backends.get(self.backend_name)
        if backend is None:
            return {}
        request_model = self.request_model
        effective = backend.model_name_override or request_model
        fields: dict[str, Any] = {
            contract.REQUEST_MODEL_KEY: request_model,
            contract.BACKEND_NAME_METADATA_KEY: self.backend_name,
            contract.MODEL_NAME_OVERRIDE_KEY: effective,
            contract.ROUTE_NAME_METADATA_KEY: backend.route_name,
            contract.AI_SERVICE_BACKEND_KEY: backend.service_backend,
            contract.RESPONSE_MODEL_KEY: (self.translator.response_model if self.translator else "") or effective,
        }
        if self.unchecked:
            fields[contract.RATE_LIMIT_UNCHECKED_KEY] = True
        if usage is not None and usage.reported:
            fields.update(self._costs(usage, backend, effective))
            fields[contract.INPUT_TOKENS_KEY] = usage.input_tokens
            fields[contract.OUTPUT_TOKENS_KEY] = usage.output_tokens
            fields[contract.USAGE_ESTIMATED_KEY] = not usage.known
        return fields

    def _costs(
        self, usage: TokenUsage, backend: config_pb2.Backend, effective: str, extra: Iterable[Cost] = ()
    ) -> dict[str, int | float]:
        costs = (*self.runtime.costs_for_route(backend.route_name), *extra)
        # CEL's `backend` is the backendRef's full name (ns/name/route/R/rule/i/ref/j), as Envoy AI
        # Gateway's runtime passes it: expressions carried over compute the same.
        return compute_costs(costs, usage, effective, backend.name, backend.route_name)

    @property
    def _estimated(self) -> bool:
        """Whether a whole answer without usage is charged an estimate: text, where requests are charged."""
        return self.runtime.metered and self.resolved is not None and self.resolved.endpoint in TEXT_ENDPOINTS

    @property
    def answering_backend(self) -> config_pb2.Backend | None:
        """The backend whose response this is (None before the response, or for a local reply)."""
        return self.runtime.backends.get(self.backend_name)

    @property
    def effective_model(self) -> str:
        """The model sent to the answering backend."""
        backend = self.answering_backend
        return (backend.model_name_override if backend else "") or self.request_model

    def costs_so_far(self, extra: Iterable[Cost] = ()) -> dict[str, int | float]:
        """The route's request costs (and `extra` ones), by metadata key, of what the response has used
        so far: all of it once it ended, the usage seen until then if the client went away first."""
        usage = self._usage()
        backend = self.answering_backend
        if backend is None and self.status == 0:  # no response: the backend it went to first
            backend = self.runtime.backends.get(self.first_backend)
        if usage is None or backend is None:
            return {}
        return self._costs(usage, backend, backend.model_name_override or self.request_model, extra)

    def _finish(self, resp: ep.ProcessingResponse) -> None:
        """The final metadata: names, usage, costs and, for streams, token latencies."""
        usage = self._usage()
        fields = self._metadata_fields(usage)
        if not fields:
            return
        if (self.streaming or self.whole_as_stream) and self.first_token_at:
            fields[contract.TTFT_KEY] = round((self.first_token_at - self.started) * 1000, 3)
            if usage is not None and usage.known and usage.output_tokens > 1:
                itl = (self.last_token_at - self.first_token_at) * 1000 / (usage.output_tokens - 1)
                fields[contract.ITL_KEY] = round(itl, 3)
        resp.dynamic_metadata.CopyFrom(dynamic_metadata(contract.METADATA_NAMESPACE, fields))
        log.debug(
            "request_done",
            backend=self.backend_name,
            status=self.status,
            usage=usage.as_dict() if usage is not None and usage.known else None,
        )
