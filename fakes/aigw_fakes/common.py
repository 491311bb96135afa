"""Shared machinery for the fake LLM providers (test stand-ins, not real providers).

Every fake is an aiohttp application bound to loopback. This module gives them:

* ``FakeProvider``: the base class, with async ``start()``/``stop()`` (binds ``127.0.0.1:0`` by
  default and exposes ``.port``/``.base_url``), a background-thread runner for synchronous code
  (``start_in_thread()``/``stop_thread()``, or ``with Fake(...) as fake:``), and ``async with``.
* A record of every provider request (method, path, query, headers, parsed body), readable in
  process through ``fake.requests`` and over HTTP through ``GET /__fake/requests``.
* Fault injection, controlled per request by headers or per instance by methods:

  ``x-fake-status: 503``            answer this status with the provider's error shape
  ``x-fake-delay-ms: 250``          sleep before answering (headers are sent after the delay)
  ``x-fake-stream-abort-after: N``  cut a streamed answer after N events (connection closed
                                    without the terminating chunk, so no usage, no ``[DONE]``)
  ``x-fake-stream-error-after: N``  after N events send the provider's in-stream error event and
                                    end the stream
  ``x-fake-stream-end-after: N``    end a streamed answer cleanly after N events, without its
                                    final events (no usage, no ``[DONE]``/``message_stop``)
  ``x-fake-stream-linger-ms: 20``   wait that long after the last event before ending the
                                    response, as a provider behind a real network does: a client
                                    that stops reading at ``[DONE]`` hangs up before the end
  ``x-fake-stream-interval-ms: 50`` sleep between streamed events (idle-timeout tests)
  ``x-fake-gzip: 1``                gzip-compress the answer (Content-Encoding: gzip)
  ``x-fake-parallel-tool-calls: 1`` call every tool the request declares, in one answer, unless it
                                    forces one or turns parallel calls off (OpenAI chat, Anthropic
                                    messages): as models that call tools in parallel do
  ``x-fake-stream-ignored: 1``      answer a streaming request with the complete JSON body, as a
                                    server that ignores ``stream`` does (OpenAI chat and
                                    completions, Anthropic messages)
  ``fail_next(n, status)``          the next n requests fail with ``status``
  ``always_fail(status)``           every request fails (``always_fail(None)`` to stop)

  The same controls exist over HTTP for out-of-process fakes: ``POST /__fake/fail``
  ``{"n": 2, "status": 503}`` or ``{"always": 503}`` / ``{"always": null}``, and
  ``POST /__fake/reset`` (clears the record and any failure plan).

* Every answer carries ``x-fake-id: <instance name>`` so a test can tell which upstream answered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.parser
import email.policy
import hashlib
import itertools
import json
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from aiohttp import web
from aiohttp.web_response import ContentCoding

CONTROL_PREFIX = "/__fake"
FAKE_ID_HEADER = "x-fake-id"
STATUS_HEADER = "x-fake-status"
DELAY_HEADER = "x-fake-delay-ms"
ABORT_HEADER = "x-fake-stream-abort-after"
STREAM_ERROR_HEADER = "x-fake-stream-error-after"
STREAM_END_HEADER = "x-fake-stream-end-after"
LINGER_HEADER = "x-fake-stream-linger-ms"
INTERVAL_HEADER = "x-fake-stream-interval-ms"
GZIP_HEADER = "x-fake-gzip"
STREAM_IGNORED_HEADER = "x-fake-stream-ignored"
PARALLEL_TOOLS_HEADER = "x-fake-parallel-tool-calls"

_name_counter = itertools.count(1)

# what the middleware stores on each request for the handlers
RAW_BODY = web.RequestKey("fake_raw_body", bytes)
JSON_BODY = web.RequestKey("fake_json_body", object)
JSON_ERROR = web.RequestKey("fake_json_error", bool)
FORM = web.RequestKey("fake_form", dict)


@dataclass
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, a dict for multipart forms, text, or None
    raw_body: bytes = b""
    time: float = field(default_factory=time.time)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
            "time": self.time,
        }


class StreamAborted(Exception):
    """Raised inside a handler when the fault plan cut or ended the stream early."""

    def __init__(self, response: web.StreamResponse, *, clean: bool) -> None:
        super().__init__("stream ended by fault plan")
        self.response = response
        self.clean = clean


# --------------------------------------------------------------------------------------------
# deterministic helpers shared by the providers
# --------------------------------------------------------------------------------------------


def count_tokens(text: str) -> int:
    """A deterministic stand-in tokenizer: words plus punctuation runs, at least 1 for non-empty."""
    if not text:
        return 0
    n = 0
    in_word = False
    for ch in text:
        if ch.isalnum():
            if not in_word:
                n += 1
                in_word = True
        else:
            in_word = False
            if not ch.isspace():
                n += 1
    return max(n, 1)


def split_words(text: str, max_pieces: int = 6) -> list[str]:
    """Split text into at most max_pieces consecutive fragments (whitespace kept) for streaming."""
    if not text:
        return []
    words = text.split(" ")
    pieces = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
    if len(pieces) <= max_pieces:
        return [p for p in pieces if p]
    size = -(-len(pieces) // max_pieces)
    return ["".join(pieces[i : i + size]) for i in range(0, len(pieces), size)]


def split_fixed(text: str, parts: int = 3) -> list[str]:
    """Split text into `parts` roughly equal fragments (used for JSON argument fragments)."""
    if not text:
        return [""]
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def truncate_words(text: str, limit: int) -> tuple[str, bool]:
    """Keep at most `limit` tokens (by count_tokens) of text; returns (text, truncated)."""
    if count_tokens(text) <= limit:
        return text, False
    words = text.split(" ")
    out: list[str] = []
    for w in words:
        candidate = " ".join([*out, w])
        if count_tokens(candidate) > limit:
            break
        out.append(w)
    return " ".join(out), True


def example_from_schema(schema: Any, name: str = "value", depth: int = 0) -> Any:
    """Build a deterministic JSON value that satisfies a simple JSON Schema."""
    if not isinstance(schema, dict) or depth > 6:
        return "example"
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example_from_schema(schema[key][0], name, depth + 1)
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "null")
    if typ is None and "properties" in schema:
        typ = "object"
    if typ == "object":
        props = schema.get("properties") or {}
        required = schema.get("required")
        keys = list(required) if isinstance(required, list) and required else list(props)
        return {k: example_from_schema(props.get(k, {}), k, depth + 1) for k in keys}
    if typ == "array":
        item = example_from_schema(schema.get("items", {}), name, depth + 1)
        return [item] * int(schema.get("minItems", 1) or 1)
    if typ == "integer":
        return int(schema.get("minimum", 1))
    if typ == "number":
        return float(schema.get("minimum", 1.5))
    if typ == "boolean":
        return True
    if typ == "null":
        return None
    return f"example {name}"


def is_int(v: Any) -> bool:
    """A JSON integer (a JSON true/false is not one, though Python's bool is an int)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    """A JSON number (not true/false)."""
    return isinstance(v, int | float) and not isinstance(v, bool)


def stable_id(prefix: str, *parts: str, length: int = 24) -> str:
    h = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"{prefix}{h[:length]}"


def random_id(prefix: str, length: int = 24) -> str:
    return f"{prefix}{uuid.uuid4().hex[:length]}"


def parse_multipart(raw: bytes, content_type: str) -> dict[str, Any]:
    """Parse a multipart/form-data body into {name: str | {"filename", "content_type", "data"}}."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + raw
    )
    out: dict[str, Any] = {}
    if not msg.is_multipart():
        return out
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        filename = part.get_filename()
        data = part.get_payload(decode=True) or b""
        if filename is not None:
            out[name] = {
                "filename": filename,
                "content_type": part.get_content_type(),
                "data": data,
            }
        else:
            out[name] = data.decode("utf-8", "replace")
    return out


def _jsonable_form(form: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in form.items():
        if isinstance(v, dict) and "data" in v:
            out[k] = {"filename": v["filename"], "content_type": v["content_type"], "size": len(v["data"])}
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------------------------
# SSE writer with fault injection
# --------------------------------------------------------------------------------------------


class SSEWriter:
    """Writes server-sent events and applies the stream fault plan of the request."""

    def __init__(
        self,
        request: web.Request,
        *,
        error_event: Callable[[], tuple[str | None, Any]] | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        self.request = request
        self.response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                **(extra_headers or {}),
            },
        )
        self.sent = 0
        self.abort_after = _int_header(request, ABORT_HEADER)
        self.error_after = _int_header(request, STREAM_ERROR_HEADER)
        self.end_after = _int_header(request, STREAM_END_HEADER)
        self.linger_ms = _int_header(request, LINGER_HEADER)
        self.interval_ms = _int_header(request, INTERVAL_HEADER)
        self._error_event = error_event
        self._started = False

    async def start(self) -> None:
        if not self._started:
            self._started = True
            if wants_gzip(self.request):
                self.response.enable_compression(ContentCoding.gzip)
            await self.response.prepare(self.request)

    async def send(self, data: Any, event: str | None = None) -> None:
        await self.start()
        if self.interval_ms and self.sent:
            await asyncio.sleep(self.interval_ms / 1000)
        if self.abort_after is not None and self.sent >= self.abort_after:
            await self._abort()
        if self.error_after is not None and self.sent >= self.error_after and self._error_event:
            ev, payload = self._error_event()
            await self._write(payload, ev)
            self.error_after = None
            raise StreamAborted(self.response, clean=True)
        if self.end_after is not None and self.sent >= self.end_after:
            raise StreamAborted(self.response, clean=True)
        await self._write(data, event)
        self.sent += 1

    async def _write(self, data: Any, event: str | None) -> None:
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        frame = ""
        if event is not None:
            frame += f"event: {event}\n"
        frame += f"data: {text}\n\n"
        await self.put(frame.encode())

    async def put(self, data: bytes) -> None:
        """Bytes onto the response; a client gone meanwhile ends the stream quietly (the handler
        returns the response as the fault plan's cut does), not with aiohttp's traceback."""
        try:
            await self.response.write(data)
        except ConnectionResetError:
            raise StreamAborted(self.response, clean=False) from None

    async def _abort(self) -> None:
        # Cut the connection without the terminating chunk: the client sees a truncated body.
        transport = self.request.transport
        if transport is not None:
            transport.close()
        raise StreamAborted(self.response, clean=False)

    async def finish(self) -> web.StreamResponse:
        await self.start()
        if self.linger_ms:
            await asyncio.sleep(self.linger_ms / 1000)
        await self.response.write_eof()
        return self.response


def wants_gzip(request: web.Request) -> bool:
    return request.headers.get(GZIP_HEADER, "").lower() in ("1", "true", "yes")


def streams(request: web.Request, body: dict[str, Any]) -> bool:
    """Whether to answer `body` as a stream: it asks for one, and the request does not say to ignore it."""
    return bool(body.get("stream")) and request.headers.get(STREAM_IGNORED_HEADER) != "1"


def parallel_tool_calls(request: web.Request) -> bool:
    """Whether the request asks the fake to call every declared tool at once."""
    return request.headers.get(PARALLEL_TOOLS_HEADER) == "1"


def _int_header(request: web.Request, name: str) -> int | None:
    v = request.headers.get(name)
    if v is None:
        return None
    try:
        return int(v)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# base class
# --------------------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def fake_reply(reply: Any, model: str, body: dict[str, Any], prompt: str) -> str:
    """A fake's answer text: its `reply` (a fixed text, or a callable of the model and body), else
    "Fake <model> reply to: <the prompt, whitespace folded, at most 200 characters>"."""
    if callable(reply):
        return reply(model, body)
    if isinstance(reply, str):
        return reply
    prompt = " ".join(prompt.split())
    if len(prompt) > 200:
        prompt = prompt[:200] + "..."
    return f"Fake {model} reply to: {prompt}" if prompt else f"Fake {model} reply."


class InThread:
    """A fake with async ``start()`` and ``stop()``, which synchronous code runs on its own event
    loop in a daemon thread (``start_in_thread()``/``stop_thread()``, or ``with``)."""

    name: str
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    async def stop(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def start_in_thread(self, timeout: float = 10.0) -> Self:
        """Run the fake on its own event loop in a daemon thread; returns once it is listening."""
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"fake-{self.name}", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout)
        except BaseException:
            self.stop_thread()
            raise
        return self

    def stop_thread(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start_in_thread()

    def __exit__(self, *exc: object) -> None:
        self.stop_thread()


class FakeProvider(InThread):
    """Base class of the fakes. Subclasses implement ``add_routes``, ``error_response`` and
    ``not_found_response``; they may override ``check_auth``."""

    provider = "fake"

    def __init__(self, *, name: str | None = None, host: str = "127.0.0.1", port: int = 0, tls: bool = False) -> None:
        self.name = name or f"{self.provider}-{next(_name_counter)}"
        self.host = host
        self._want_port = port
        self.port: int = 0
        # Served over TLS, with a certificate of its own for localhost and 127.0.0.1 (self-signed:
        # its PEM is in ca_file once started).
        self.tls = tls
        self.ca_file = ""
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._fail_plan: list[int] = []
        self._always_fail: int | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- subclass hooks -------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def error_response(
        self, status: int, message: str | None = None, **kw: Any
    ) -> web.Response:  # pragma: no cover - abstract
        raise NotImplementedError

    def not_found_response(self, request: web.Request) -> web.Response:
        return self.error_response(404, f"Invalid URL ({request.method} {request.path})")

    def check_auth(self, request: web.Request) -> web.Response | None:
        return None

    def response_headers(self, request: web.Request) -> dict[str, str]:
        """Headers added to every answer (after x-fake-id)."""
        return {}

    # ---- URLs ------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """Scheme, host and port (no path prefix)."""
        if self.tls and self.port:
            return f"https://localhost:{self.port}"
        if not self.port:
            raise RuntimeError(f"fake {self.name} is not started")
        return f"http://{self.host}:{self.port}"

    # ---- records ---------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest | None:
        with self._lock:
            return self._requests[-1] if self._requests else None

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # ---- failure plan ----------------------------------------------------------------------
    def fail_next(self, n: int = 1, status: int = 503) -> None:
        """The next ``n`` provider requests are answered with ``status`` (provider error shape)."""
        with self._lock:
            self._fail_plan.extend([status] * n)

    def always_fail(self, status: int | None = 503) -> None:
        """Answer every provider request with ``status``; ``None`` turns this off."""
        with self._lock:
            self._always_fail = status

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._fail_plan.clear()
            self._always_fail = None

    def _planned_failure(self) -> int | None:
        with self._lock:
            if self._fail_plan:
                return self._fail_plan.pop(0)
            return self._always_fail

    # ---- app -------------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_get(CONTROL_PREFIX + "/requests", self._ctl_requests)
        app.router.add_delete(CONTROL_PREFIX + "/requests", self._ctl_clear)
        app.router.add_post(CONTROL_PREFIX + "/reset", self._ctl_reset)
        app.router.add_post(CONTROL_PREFIX + "/fail", self._ctl_fail)
        app.router.add_get(CONTROL_PREFIX + "/health", self._ctl_health)
        self.add_routes(app)
        app.on_response_prepare.append(self._on_prepare)
        return app

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers[FAKE_ID_HEADER] = self.name
        for k, v in self.response_headers(request).items():
            response.headers.setdefault(k, v)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX + "/"):
            return await handler(request)
        raw = await request.read()
        request[RAW_BODY] = raw
        body: Any = None
        ctype = request.content_type
        if raw:
            if ctype == "multipart/form-data":
                try:
                    form = parse_multipart(raw, request.headers.get("Content-Type", ""))
                except Exception:
                    form = {}
                request[FORM] = form
                body = _jsonable_form(form)
            else:
                try:
                    body = json.loads(raw)
                    request[JSON_BODY] = body
                except ValueError:
                    request[JSON_ERROR] = True
                    body = raw.decode("utf-8", "replace")
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            raw_body=raw,
        )
        with self._lock:
            self._requests.append(rec)

        delay = _int_header(request, DELAY_HEADER)
        if delay:
            await asyncio.sleep(delay / 1000)

        status = _int_header(request, STATUS_HEADER)
        if status is None:
            status = self._planned_failure()
        if status is not None and status >= 400:
            return self._maybe_gzip(request, self.error_response(status))

        try:
            return self._maybe_gzip(request, await handler(request))
        except web.HTTPNotFound:
            return self.not_found_response(request)
        except web.HTTPMethodNotAllowed:
            return self.not_found_response(request)
        except StreamAborted as e:
            if e.clean:
                await e.response.write_eof()
            else:
                e.response.force_close()
            return e.response

    @staticmethod
    def _maybe_gzip(request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
        if not resp.prepared and wants_gzip(request):
            resp.enable_compression(ContentCoding.gzip)
        return resp

    # ---- control endpoints -----------------------------------------------------------------
    async def _ctl_requests(self, request: web.Request) -> web.Response:
        return web.json_response([r.to_json() for r in self.requests])

    async def _ctl_clear(self, request: web.Request) -> web.Response:
        self.clear_requests()
        return web.json_response({"ok": True})

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _ctl_fail(self, request: web.Request) -> web.Response:
        try:
            spec = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be JSON"}, status=400)
        if "always" in spec:
            self.always_fail(spec["always"])
        if "n" in spec:
            self.fail_next(int(spec["n"]), int(spec.get("status", 503)))
        return web.json_response({"ok": True})

    async def _ctl_health(self, request: web.Request) -> web.Response:
        return web.json_response({"name": self.name, "provider": self.provider})

    # ---- lifecycle (async) -----------------------------------------------------------------
    async def start(self) -> Self:
        if self._runner is not None:
            return self
        context = self._ssl_context() if self.tls else None
        runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._want_port, reuse_address=True, ssl_context=context)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self._runner, self._site = runner, site
        return self

    def _ssl_context(self) -> ssl.SSLContext:
        """A fresh self-signed certificate for localhost and 127.0.0.1 (written to ca_file)."""
        from .certificates import self_signed

        cert, key = self_signed("localhost", "127.0.0.1")
        directory = Path(tempfile.mkdtemp(prefix=f"aigw-fake-{self.provider}-"))
        cert_file, key_file = directory / "cert.pem", directory / "key.pem"
        cert_file.write_bytes(cert)
        key_file.write_bytes(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self.ca_file = str(cert_file)
        return context

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner, self._site = self._runner, None, None
            await runner.cleanup()
        if self.ca_file:
            shutil.rmtree(Path(self.ca_file).parent, ignore_errors=True)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def b64_float32_le(values: list[float]) -> str:
    import struct

    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
