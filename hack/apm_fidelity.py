#!/usr/bin/env python3
"""How faithful is Envoy 1.40's own transcoder (ai_protocol_manager) to our translator, for an
OpenAI chat client and an Anthropic Messages backend? Requests and responses, JSON and SSE.

The script starts a static-config Envoy (--use-dynamic-base-id, admin on a free port) with the APM
transcoder layout tested in the Envoy fast-path notes ("Native translation fidelity, 1.40": APM
read_model + set_filter_state to route on the model, APM transcode with transcoder TO_IR/FROM_IR
pairs; the APM and transcoder configs emitted as xds.type.v3.TypedStruct, as xds-protos lacks
them) in front of a recording upstream: a small HTTP server in this process that records every
request it receives and answers a canned Anthropic response chosen per case (text, tool_use,
thinking, max_tokens, stop_sequence, refusal, context window, cached usage, 429 error; JSON, or
SSE when the request streams). For every case it then compares:

  request   what the upstream received from Envoy  vs  our translate_request() for the same body
  response  what the client received from Envoy    vs  our response translator on the same answer
            (JSON: the parsed body; SSE: the sequence of parsed chunks; top-level id and created
            are ignored, they are generated)

Cases come from the translator's own table tests (tests/translator/test_openai_anthropic.py: the
request inputs of its parametrized tables, read from the pytest marks, and its ANTHROPIC_STREAM),
plus a few shapes those tables lack (multi-turn, stream without include_usage, unknown fields, ...).
The official `openai` SDK is also run against Envoy for the plain-text cases, streaming and not.

A candidate native gate is measured alongside (column "gate"): a `transform` filter copies
`messages` (as JSON) and a few fields into headers, and a route header match with RE2 admits only
plain-text chats (see GATE_MESSAGES and DENIED). Every case is transcoded either way; the route the
gate picks only labels the answer, so the summary can say whether every admitted case is faithful.

Output: a Markdown table (case, request, response, SDK, verdict), the differences in detail, and a
summary of which request shapes are faithful in both directions.

Usage:
  .venv/bin/python hack/apm_fidelity.py [--only SUBSTRING] [--keep] [--details N]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the `tests` package: the table tests' inputs

from aigw.translator.v1 import config_pb2  # noqa: E402
from aigw_translator.endpoints import ClientSchema, Endpoint  # noqa: E402
from aigw_translator.errors import GatewayError  # noqa: E402
from aigw_translator.sse import SSEParser  # noqa: E402
from aigw_translator.translators import RequestContext, ResponseContext, get_pair  # noqa: E402

MODEL = "claude-3-5-haiku"
CASE_HEADER = "x-fidelity-case"
TEST_MODULE = "tests.translator.test_openai_anthropic"
# The tables whose first column is an OpenAI chat request.
TEST_TABLES = (
    "test_request",
    "test_untranslatable_requests_are_422",
    "test_request_that_anthropic_would_reject_is_fixed",
    "test_request_that_cannot_be_honoured_is_a_clear_error",
    "test_reasoning_effort_with_tools",
)
TYPED_STRUCT = "type.googleapis.com/xds.type.v3.TypedStruct"
APM = "type.googleapis.com/envoy.extensions.filters.http.ai_protocol_manager.v3.AiProtocolManager"
APM_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ai_protocol_manager.v3.AiProtocolManagerPerRoute"
REQUEST_INFO = "type.googleapis.com/envoy.extensions.http.ai_filters.request_info.v3.RequestInfo"
TRANSCODER = "type.googleapis.com/envoy.extensions.http.ai_filters.transcoder.v3.Transcoder"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TRANSFORM = "type.googleapis.com/envoy.extensions.filters.http.transform.v3.TransformConfig"

# A candidate native gate, measured alongside: the `transform` filter copies body fields into
# headers (%REQUEST_BODY(messages)% is the array as JSON with sorted keys; an absent key, and an
# empty string, give an empty value), and the route matches them with RE2. Admitted: every message
# is {"content": <non-blank string>, "role": system|user|assistant}, the last one is a user turn; max_tokens and
# max_completion_tokens absent or positive; none of DENIED present. Keys outside DENIED cannot be
# enumerated, so unknown keys pass this gate (see the summary).
_TEXT = r'(?:\s|\\[nrt])*(?:[^"\\\s]|\\[^nrt])(?:[^"\\]|\\.)*'
_MESSAGE = r'\{"content":"' + _TEXT + r'","role":"(?:%s)"\}'
GATE_MESSAGES = r"\[(?:" + _MESSAGE % "system|user|assistant" + r",)*" + _MESSAGE % "user" + r"\]"
GATE_TOKENS = r"(?:[1-9][0-9]{0,8})?"
DENIED = (
    "n", "stream", "stream_options", "stop", "temperature", "top_p", "tools", "tool_choice",
    "parallel_tool_calls", "functions", "function_call", "response_format", "logprobs", "top_logprobs",
    "logit_bias", "frequency_penalty", "presence_penalty", "modalities", "audio", "reasoning_effort", "user",
    "seed", "store", "metadata", "service_tier", "prediction", "web_search_options", "verbosity",
    "prompt_cache_key", "safety_identifier",
)  # fmt: skip
GATE_HEADER = "x-native-gate"


# ---------------------------------------------------------------- canned Anthropic answers


def _message(content: list[dict[str, Any]], stop: str, **usage: int) -> dict[str, Any]:
    return {
        "id": "msg_fidelity",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        # As the API reports it today: cache counters and service tier even when nothing is cached.
        "usage": {
            "input_tokens": 12,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 7,
            "service_tier": "standard",
            **usage,
        },
    }


TEXT = "Hello there, how can I help?"
TOOL_USE = {"type": "tool_use", "id": "toolu_01", "name": "f", "input": {"a": 1, "b": ["x"]}}
THINKING = {"type": "thinking", "thinking": "Let me think.", "signature": "sig"}
MESSAGES: dict[str, dict[str, Any]] = {
    "text": _message([{"type": "text", "text": TEXT}], "end_turn"),
    "tool_use": _message([{"type": "text", "text": "Checking."}, TOOL_USE], "tool_use"),
    "thinking": _message([THINKING, {"type": "text", "text": TEXT}], "end_turn"),
    "max_tokens": _message([{"type": "text", "text": "Hello th"}], "max_tokens"),
    "stop_sequence": _message([{"type": "text", "text": "Hello"}], "stop_sequence"),
    "refusal": _message([{"type": "text", "text": "I can't help with that."}], "refusal"),
    "context_window": _message([{"type": "text", "text": "Hello"}], "model_context_window_exceeded"),
    "cached": _message(
        [{"type": "text", "text": TEXT}], "end_turn", cache_read_input_tokens=3, cache_creation_input_tokens=2
    ),
}
ERROR_BODY = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}


def _event(kind: str, **obj: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **obj})}\n\n".encode()


def message_events(msg: dict[str, Any]) -> list[bytes]:
    """The SSE events an Anthropic backend streams for `msg`, one delta per block (two for text)."""
    start = {**msg, "content": [], "stop_reason": None, "usage": {**msg["usage"], "output_tokens": 1}}
    out = [_event("message_start", message=start), _event("ping")]
    for i, block in enumerate(msg["content"]):
        kind = block["type"]
        if kind == "text":
            out.append(_event("content_block_start", index=i, content_block={"type": "text", "text": ""}))
            half = len(block["text"]) // 2
            for piece in (block["text"][:half], block["text"][half:]):
                out.append(_event("content_block_delta", index=i, delta={"type": "text_delta", "text": piece}))
        elif kind == "thinking":
            out.append(_event("content_block_start", index=i, content_block={"type": "thinking", "thinking": ""}))
            delta = {"type": "thinking_delta", "thinking": block["thinking"]}
            out.append(_event("content_block_delta", index=i, delta=delta))
            delta = {"type": "signature_delta", "signature": block["signature"]}
            out.append(_event("content_block_delta", index=i, delta=delta))
        elif kind == "tool_use":
            out.append(_event("content_block_start", index=i, content_block={**block, "input": {}}))
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            out.append(_event("content_block_delta", index=i, delta=delta))
        out.append(_event("content_block_stop", index=i))
    usage = {"output_tokens": msg["usage"]["output_tokens"]}
    out.append(_event("message_delta", delta={"stop_reason": msg["stop_reason"], "stop_sequence": None}, usage=usage))
    out.append(_event("message_stop"))
    return out


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    chunks: list[bytes]

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def answer_for(kind: str, stream: bool) -> Answer:
    if kind == "error":
        return Answer(429, "application/json", [json.dumps(ERROR_BODY).encode()])
    if kind == "table_stream":  # the translator test suite's own Anthropic stream
        test_module = __import__(TEST_MODULE, fromlist=["ANTHROPIC_STREAM"])
        data = test_module.ANTHROPIC_STREAM
        return Answer(200, "text/event-stream", [data[i : i + 97] for i in range(0, len(data), 97)])
    if stream:
        return Answer(200, "text/event-stream", message_events(MESSAGES[kind]))
    return Answer(200, "application/json", [json.dumps(MESSAGES[kind]).encode()])


# ---------------------------------------------------------------- cases


@dataclass
class Case:
    key: str  # sent in CASE_HEADER: the upstream answers and records by it
    name: str
    request: dict[str, Any]
    answer: str  # a MESSAGES key, "error" or "table_stream"
    source: str  # where the request comes from

    @property
    def stream(self) -> bool:
        return bool(self.request.get("stream"))

    @property
    def plain_text(self) -> bool:
        """The SDK is run on these: string contents, roles system/user/assistant, few other fields."""
        if set(self.request) - {"model", "messages", "stream", "stream_options", "max_tokens", "temperature"}:
            return False
        for msg in self.request.get("messages") or []:
            if msg.get("role") not in ("system", "user", "assistant") or set(msg) - {"role", "content"}:
                return False
            if not isinstance(msg.get("content"), str):
                return False
        return True


def describe(req: dict[str, Any]) -> str:
    """A short name for a request: its message shape and its other fields."""
    shape = []
    for msg in req.get("messages") or []:
        content = msg.get("content")
        if isinstance(content, list):
            parts = "+".join(str(p.get("type")) for p in content if isinstance(p, dict))
            kind = f"[{parts}]"
        else:
            kind = "null" if content is None else "str" if content.strip() else "blank"
        extra = sorted(set(msg) - {"role", "content", "tool_calls"})
        kind += "".join(f"+{key}" for key in extra) + ("+calls" if msg.get("tool_calls") else "")
        shape.append(f"{msg.get('role')}:{kind}")
    extras = []
    for key, value in req.items():
        if key in ("model", "messages"):
            continue
        text = json.dumps(value, separators=(",", ":"))
        extras.append(f"{key}={text if len(text) <= 24 else text[:21] + '...'}")
    return " ".join([f"msgs({', '.join(shape)})", *extras]).replace("|", "/")


def answer_kind(req: dict[str, Any]) -> str:
    if req.get("tools"):
        return "table_stream" if req.get("stream") else "tool_use"
    if req.get("reasoning_effort") not in (None, "none", "minimal"):
        return "thinking"
    return "text"


def table_test_requests() -> Iterator[tuple[str, dict[str, Any]]]:
    """The first column of each parametrized table in the translator's tests."""
    module = __import__(TEST_MODULE, fromlist=list(TEST_TABLES))
    for table in TEST_TABLES:
        for mark in getattr(module, table).pytestmark:
            if mark.name != "parametrize":
                continue
            for row in mark.args[1]:
                if isinstance(row, dict):  # a one-column table
                    yield table, row
                else:  # a tuple, or a pytest.param whose .values is one
                    yield table, (row.values if type(row).__name__ == "ParameterSet" else row)[0]


def _req(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}


TOOL = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}
# Shapes the tables lack.
EXTRA_REQUESTS: list[dict[str, Any]] = [
    _req(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], max_tokens=50),
    _req(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "and?"},
        ]
    ),
    _req(messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
    _req(stream=True),
    _req(stream=True, max_tokens=50),
    _req(stream=True, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]),
    _req(max_completion_tokens=50),
    _req(temperature=0.5),
    _req(temperature=1.5),
    _req(top_p=0.5),
    _req(n=1),
    _req(response_format={"type": "text"}),
    _req(response_format={"type": "json_object"}),
    _req(logprobs=True, top_logprobs=2),
    _req(seed=3, metadata={"k": "v"}, x_unknown_field=1),
    _req(x_unknown_field=1),
    _req(messages=[{"role": "user", "content": "hi", "name": "bob"}]),
    _req(messages=[{"role": "user", "content": "\n"}, {"role": "user", "content": "hi"}]),
    _req(
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        tools=[TOOL],
    ),
    _req(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}]),
    _req(tools=[TOOL], stream=True, stream_options={"include_usage": True}),
]
# Requests answered with another canned response than answer_kind() picks: the response side.
RESPONSE_CASES = [
    ("max_tokens", False),
    ("max_tokens", True),
    ("stop_sequence", False),
    ("refusal", False),
    ("refusal", True),
    ("context_window", False),
    ("cached", False),
    ("cached", True),
    ("thinking", False),
    ("thinking", True),
    ("error", False),
]


def build_cases() -> list[Case]:
    seen: set[str] = set()
    cases: list[Case] = []

    def add(req: dict[str, Any], source: str, answer: str | None = None) -> None:
        req = {**req, "model": MODEL}
        key = json.dumps([req, answer], sort_keys=True)
        if key in seen:
            return
        seen.add(key)
        kind = answer or answer_kind(req)
        name = describe(req) + ("" if answer is None else f" → answer {answer}")
        cases.append(Case(f"case-{len(cases) + 1}", f"{len(cases) + 1}. {name}", req, kind, source))

    for table, req in table_test_requests():
        add(req, table)
    for req in EXTRA_REQUESTS:
        add(req, "extra")
    for kind, stream in RESPONSE_CASES:
        add(_req(stream=True, stream_options={"include_usage": True}) if stream else _req(), "response", kind)
    return cases


# ---------------------------------------------------------------- the recording upstream


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answers: dict[str, Answer]) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.answers = answers
        self.received: dict[str, tuple[str, dict[str, str], bytes]] = {}


class RecordingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Recorder

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def do_POST(self) -> None:
        body = self._body()
        case = self.headers.get(CASE_HEADER, "")
        self.server.received[case] = (self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        answer = self.server.answers.get(case) or answer_for("text", False)
        self.send_response(answer.status)
        self.send_header("content-type", answer.content_type)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for chunk in answer.chunks:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


# ---------------------------------------------------------------- Envoy


def typed_struct(type_url: str, value: dict[str, Any]) -> dict[str, Any]:
    """An extension's config as TypedStruct: Envoy converts it with its own descriptors."""
    return {"@type": TYPED_STRUCT, "type_url": type_url, "value": value}


def http_filters() -> list[dict[str, Any]]:
    """§3.1's tested layout: APM read_model publishes the model, set_filter_state re-picks the
    route, APM transcode converts OpenAI chat <-> IR <-> Anthropic Messages."""
    request_info = {"name": "envoy.http.ai_filters.request_info", "typed_config": typed_struct(REQUEST_INFO, {})}

    def transcoder(request: str, response: str) -> dict[str, Any]:
        value = {"request_handling": request, "response_handling": response}
        return {"name": "envoy.http.ai_filters.transcoder", "typed_config": typed_struct(TRANSCODER, value)}

    read_model = {
        "request_handling": {"parse_unconfigured_routes": True, "reserialize_body": "DISABLE"},
        "filters": [request_info],
    }
    transcode = {
        "request_handling": {},
        "response_handling": {"token_usage": {}},
        "filters": [transcoder("TO_IR", "FROM_IR"), transcoder("FROM_IR", "TO_IR")],
    }
    set_filter_state = "type.googleapis.com/envoy.extensions.filters.http.set_filter_state.v3.Config"

    def copy(header: str, value: str) -> dict[str, Any]:
        return {"append": {"header": {"key": header, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}

    gate_inputs = {
        "request_transformation": {
            "headers_mutations": [
                copy("x-gate-messages", "%REQUEST_BODY(messages)%"),
                copy("x-gate-max-tokens", "%REQUEST_BODY(max_tokens)%"),
                copy("x-gate-max-completion-tokens", "%REQUEST_BODY(max_completion_tokens)%"),
                copy("x-gate-denied", ",".join(f"%REQUEST_BODY({key})%" for key in DENIED)),
            ]
        },
        "clear_route_cache": True,
    }
    return [
        {"name": "read_model", "typed_config": typed_struct(APM, read_model)},
        {
            "name": "envoy.filters.http.set_filter_state",
            "typed_config": {"@type": set_filter_state, "clear_route_cache": True},
        },
        {"name": "envoy.filters.http.transform", "typed_config": {"@type": TRANSFORM, **gate_inputs}},
        {"name": "transcode", "typed_config": typed_struct(APM, transcode)},
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        },
    ]


def gate_headers() -> list[dict[str, Any]]:
    def regex(name: str, pattern: str) -> dict[str, Any]:
        match = {"name": name, "string_match": {"safe_regex": {"regex": pattern}}}
        return {**match, "treat_missing_header_as_empty": True}

    return [
        regex("x-gate-messages", GATE_MESSAGES),
        regex("x-gate-max-tokens", GATE_TOKENS),
        regex("x-gate-max-completion-tokens", GATE_TOKENS),
        {"name": "x-gate-denied", "string_match": {"exact": "," * (len(DENIED) - 1)}},
    ]


def native_route(gate: bool) -> dict[str, Any]:
    """The model's route with the transcoder; both routes transcode, the gate only labels answers."""
    per_route = {
        "request": {"llm_protocol": "OPENAI_CHAT_COMPLETIONS"},
        "response": {"llm_protocol": "ANTHROPIC_MESSAGES"},
    }
    model = {"key": "envoy.ai.model.request", "string_match": {"exact": MODEL}}
    match: dict[str, Any] = {"prefix": "/v1/chat/completions", "filter_state": [model]}
    if gate:
        match["headers"] = gate_headers()
    return {
        "name": "claude-native-gated" if gate else "claude-native",
        "match": match,
        "route": {"cluster": "recorder", "prefix_rewrite": "/v1/messages", "timeout": "10s"},
        "request_headers_to_remove": ["authorization", "x-gate-messages", "x-gate-denied"],
        "request_headers_to_add": [
            {"header": {"key": "x-api-key", "value": "sk-ant-fidelity"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
            {"header": {"key": "anthropic-version", "value": "2023-06-01"}},
        ],
        "response_headers_to_add": [{"header": {"key": GATE_HEADER, "value": "admit" if gate else "refuse"}}],
        "typed_per_filter_config": {"transcode": typed_struct(APM_PER_ROUTE, per_route)},
    }


def routes() -> list[dict[str, Any]]:
    return [
        native_route(gate=True),
        native_route(gate=False),
        {
            "name": "no-model",
            "match": {"prefix": "/"},
            "direct_response": {"status": 404, "body": {"inline_string": "no model route"}},
            "typed_per_filter_config": {
                "read_model": typed_struct(APM_PER_ROUTE, {"request": {"llm_protocol": "OPENAI_CHAT_COMPLETIONS"}})
            },
        },
    ]


def bootstrap(listen: int, admin: int, upstream: int) -> dict[str, Any]:
    def address(port: int) -> dict[str, Any]:
        return {"socket_address": {"address": "127.0.0.1", "port_value": port}}

    hcm = {
        "@type": HCM,
        "stat_prefix": "fidelity",
        "route_config": {"name": "r", "virtual_hosts": [{"name": "vh", "domains": ["*"], "routes": routes()}]},
        "http_filters": http_filters(),
    }
    endpoint = {"endpoint": {"address": address(upstream)}}
    return {
        "node": {"id": "apm-fidelity", "cluster": "apm-fidelity"},
        "admin": {"address": address(admin)},
        # The gate's RE2 program is ~130 instructions; Envoy refuses more than 100 by default.
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {"re2.max_program_size.error_level": 1000}}]},
        "static_resources": {
            "listeners": [
                {
                    "name": "fidelity",
                    "address": address(listen),
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "recorder",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {"cluster_name": "recorder", "endpoints": [{"lb_endpoints": [endpoint]}]},
                }
            ],
        },
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def envoy_binary() -> str:
    beside = Path(sys.executable).parent / "envoy"
    return str(beside) if beside.is_file() else shutil.which("envoy") or "envoy"


def envoy_version() -> str:
    out = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True).stdout
    found = re.search(r"version: (\S+)", out)
    return found.group(1) if found else "unknown"


@contextlib.contextmanager
def running_envoy(workdir: Path, upstream: int) -> Iterator[int]:
    """Envoy on a free port (admin on another) for as long as the block runs; yields the port."""
    listen, admin = free_port(), free_port()
    config = workdir / "envoy.json"
    config.write_text(json.dumps(bootstrap(listen, admin, upstream), indent=1))
    log = workdir / "envoy.log"
    args = [envoy_binary(), "-c", str(config), "--use-dynamic-base-id", "--concurrency", "1", "-l", "warning"]
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(admin, process, log)
        yield listen
    finally:
        stop(process)


def wait_ready(admin: int, process: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"Envoy exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=1)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                return
        time.sleep(0.05)
    raise SystemExit(f"Envoy not ready after {timeout:.0f} s; log {log}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group this script created, SIGKILL after 10 s."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def post(port: int, case: Case) -> tuple[int, str, bytes, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    headers = {"content-type": "application/json", "authorization": "Bearer sk-client", CASE_HEADER: case.key}
    conn.request("POST", "/v1/chat/completions", body=json.dumps(case.request).encode(), headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, response.getheader("content-type") or "", body, response.getheader(GATE_HEADER) or "-"


# ---------------------------------------------------------------- our translator


def backend() -> config_pb2.Backend:
    return config_pb2.Backend(name="anthropic", schema=config_pb2.Schema(name="Anthropic"))


def ours_request(case: Case) -> tuple[int, str, Any]:
    """(status, path, Anthropic request) as our translator sends it; status != 200 when it refuses."""
    pair = get_pair(Endpoint.CHAT_COMPLETIONS, "Anthropic")
    assert pair is not None
    ctx = RequestContext(Endpoint.CHAT_COMPLETIONS, backend(), "/v1/chat/completions", "", MODEL, {})
    try:
        translated = pair.request(ctx, json.dumps(case.request).encode())
    except GatewayError as err:
        return err.status, "", err.message
    return 200, translated.path, json.loads(translated.body or b"{}")


def ours_response(case: Case, answer: Answer) -> bytes:
    pair = get_pair(Endpoint.CHAT_COMPLETIONS, "Anthropic")
    assert pair is not None
    include_usage = bool((case.request.get("stream_options") or {}).get("include_usage"))
    ctx = ResponseContext(Endpoint.CHAT_COMPLETIONS, ClientSchema.OPENAI, MODEL, MODEL, case.stream, include_usage)
    translator = pair.response_translator(ctx)
    if answer.status != 200:
        return translator.error(answer.status, answer.body)
    if case.stream:
        return b"".join(translator.feed(c) for c in answer.chunks) + translator.finish()
    return translator.body(answer.body) or answer.body


# ---------------------------------------------------------------- comparison


def diff(ours: Any, envoy: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Differing JSON paths (key order ignored); a key missing on one side shows as <absent>."""
    if isinstance(ours, dict) and isinstance(envoy, dict):
        out = []
        for key in sorted(ours.keys() | envoy.keys()):
            sub = f"{path}.{key}" if path else key
            out += diff(ours.get(key, ABSENT), envoy.get(key, ABSENT), sub)
        return out
    if isinstance(ours, list) and isinstance(envoy, list) and len(ours) == len(envoy):
        return [d for i, (a, b) in enumerate(zip(ours, envoy, strict=True)) for d in diff(a, b, f"{path}[{i}]")]
    return [] if ours == envoy else [(path or ".", ours, envoy)]


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _Absent()


def anthropic_equivalent(req: Any) -> Any:
    """Anthropic reads a string `content` or `system` as one text block: written as blocks here."""
    if not isinstance(req, dict):
        return req
    out = dict(req)
    if isinstance(out.get("system"), str):
        out["system"] = [{"type": "text", "text": out["system"]}]
    messages = out.get("messages")
    if isinstance(messages, list):
        out["messages"] = [
            {**m, "content": [{"type": "text", "text": m["content"]}]}
            if isinstance(m, dict) and isinstance(m.get("content"), str)
            else m
            for m in messages
        ]
    return out


def openai_equivalent(obj: Any) -> Any:
    """For an OpenAI client a null field is an absent one, and a zero token detail is no detail."""
    if isinstance(obj, list):
        return [openai_equivalent(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: openai_equivalent(v) for k, v in obj.items() if v is not None}
    for key in ("prompt_tokens_details", "completion_tokens_details"):
        if isinstance(out.get(key), dict):
            out[key] = {k: v for k, v in out[key].items() if v != 0}
            if not out[key]:
                del out[key]
    return out


def sse_items(data: bytes) -> list[Any]:
    parser = SSEParser()
    out: list[Any] = []
    for event in [*parser.feed(data), *parser.finish()]:
        try:
            out.append(json.loads(event.data))
        except ValueError:
            out.append(event.data)
    return out


def without_ids(obj: Any) -> Any:
    """Top-level id and created are generated per response: not compared."""
    if isinstance(obj, dict):
        return {k: v for k, v in obj.items() if k not in ("id", "created")}
    return obj


def assembled(items: list[Any]) -> dict[str, Any]:
    """What a client makes of a chunk stream: text, reasoning, tool calls, finish reasons, usage."""
    text, reasoning, calls, finishes, usage = "", "", {}, [], []
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("usage"):
            usage.append(item["usage"])
        for choice in item.get("choices") or []:
            delta = choice.get("delta") or {}
            text += delta.get("content") or ""
            reasoning += delta.get("reasoning_content") or ""
            for call in delta.get("tool_calls") or []:
                entry = calls.setdefault(call.get("index"), {"id": "", "name": "", "arguments": ""})
                entry["id"] += call.get("id") or ""
                entry["name"] += (call.get("function") or {}).get("name") or ""
                entry["arguments"] += (call.get("function") or {}).get("arguments") or ""
            if choice.get("finish_reason"):
                finishes.append(choice["finish_reason"])
    return {"text": text, "reasoning": reasoning, "tool_calls": calls, "finish": finishes, "usage": usage}


def short(value: Any, limit: int = 90) -> str:
    text = value if isinstance(value, str | _Absent) else json.dumps(value, separators=(",", ":"))
    text = str(text).replace("|", "/").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- one case


@dataclass
class Result:
    case: Case
    envoy_status: int = 0
    upstream_reached: bool = False
    envoy_error: str = ""
    envoy_type: str = ""  # content-type of Envoy's answer
    ours_status: int = 200
    ours_error: str = ""
    request_raw_same: bool = False  # byte-for-byte the same JSON (key order aside)
    request_diffs: list[tuple[str, Any, Any]] = field(default_factory=list)  # after the equivalences
    response_raw_same: bool = False
    response_diffs: list[tuple[str, Any, Any]] = field(default_factory=list)
    response_assembled_same: bool | None = None
    sdk: str = "-"
    gate: str = "-"  # what the candidate native gate decided (GATE_HEADER)

    @property
    def verdict(self) -> str:
        if not self.upstream_reached and self.ours_status != 200:
            return f"both refuse (Envoy {self.envoy_status} {self.envoy_type}, ours {self.ours_status} OpenAI error)"
        if not self.upstream_reached:
            return f"rejected by Envoy ({self.envoy_status}; ours translates it)"
        if self.ours_status != 200:
            return f"diverges: ours refuses ({self.ours_status}), Envoy forwards"
        if self.request_diffs or self.response_diffs or self.sdk.startswith("FAIL"):
            return "diverges"
        return "faithful"


def run_case(port: int, recorder: Recorder, case: Case) -> Result:
    answer = answer_for(case.answer, case.stream)
    recorder.answers[case.key] = answer
    result = Result(case)
    result.envoy_status, result.envoy_type, body, result.gate = post(port, case)
    received = recorder.received.get(case.key)
    result.upstream_reached = received is not None
    result.ours_status, our_path, our_request = ours_request(case)
    if result.ours_status != 200:
        result.ours_error = str(our_request)
    if received is None:
        result.envoy_error = body.decode(errors="replace")
        return result
    path, _, sent = received
    if result.ours_status == 200:
        try:
            envoy_request = json.loads(sent)
        except ValueError:
            envoy_request = sent.decode(errors="replace")
        ours_sent, envoy_sent = {"path": our_path, "body": our_request}, {"path": path, "body": envoy_request}
        result.request_raw_same = not diff(ours_sent, envoy_sent)
        ours_sent["body"], envoy_sent["body"] = anthropic_equivalent(our_request), anthropic_equivalent(envoy_request)
        result.request_diffs = diff(ours_sent, envoy_sent)
        compare_response(result, answer, body)
    return result


def compare_response(result: Result, answer: Answer, body: bytes) -> None:
    ours = ours_response(result.case, answer)
    if result.case.stream and answer.status == 200:
        mine = [without_ids(x) for x in sse_items(ours)]
        theirs = [without_ids(x) for x in sse_items(body)]
        result.response_raw_same = mine == theirs
        mine, theirs = openai_equivalent(mine), openai_equivalent(theirs)
        result.response_diffs = diff(mine, theirs)
        if len(mine) != len(theirs):
            result.response_diffs = [(f"{len(mine)} vs {len(theirs)} chunks", short(mine[-2:]), short(theirs[-2:]))]
        result.response_assembled_same = assembled(mine) == assembled(theirs)
        if not result.response_assembled_same:
            result.response_diffs += [("assembled." + p, a, b) for p, a, b in diff(assembled(mine), assembled(theirs))]
        return
    try:
        theirs = without_ids(json.loads(body))
    except ValueError:
        theirs = body.decode(errors="replace")
    mine = without_ids(json.loads(ours))
    status = [] if result.envoy_status == answer.status else [("status", answer.status, result.envoy_status)]
    result.response_raw_same = not status and mine == theirs
    result.response_diffs = status + diff(openai_equivalent(mine), openai_equivalent(theirs))


# ---------------------------------------------------------------- the official SDK


def sdk_check(port: int, case: Case) -> str:
    """The `openai` SDK parses Envoy's answer, and what it parses is the canned text."""
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-client", max_retries=0, timeout=15)
    extra = {k: v for k, v in case.request.items() if k not in ("model", "messages", "stream")}
    headers = {CASE_HEADER: case.key}
    expected = "".join(b.get("text", "") for b in MESSAGES[case.answer]["content"])
    try:
        if case.stream:
            text, finish = "", None
            stream = client.chat.completions.create(
                model=MODEL, messages=case.request["messages"], stream=True, extra_body=extra, extra_headers=headers
            )
            for chunk in stream:
                for choice in chunk.choices:
                    text += choice.delta.content or ""
                    finish = choice.finish_reason or finish
        else:
            completion = client.chat.completions.create(
                model=MODEL, messages=case.request["messages"], extra_body=extra, extra_headers=headers
            )
            text, finish = completion.choices[0].message.content or "", completion.choices[0].finish_reason
    except Exception as exc:  # the point is to record what the SDK does
        return f"FAIL {type(exc).__name__}: {short(str(exc), 60)}"
    if text != expected:
        return f"FAIL text {short(text, 30)!r}"
    return f"ok ({'stream' if case.stream else 'json'}, {finish})"


# ---------------------------------------------------------------- report


def _paths(diffs: list[tuple[str, Any, Any]], limit: int = 4) -> str:
    shown = ", ".join(short(p, 40) for p, _, _ in diffs[:limit])
    return shown + (f" (+{len(diffs) - limit})" if len(diffs) > limit else "")


def cell_request(r: Result) -> str:
    if not r.upstream_reached:
        return "- (not forwarded)"
    if r.ours_status != 200:
        return f"ours {r.ours_status}: {short(r.ours_error, 50)}"
    if not r.request_diffs:
        return "identical" if r.request_raw_same else "equivalent"
    return _paths(r.request_diffs)


def cell_response(r: Result) -> str:
    if not r.upstream_reached or r.ours_status != 200:
        return "-"
    if not r.response_diffs:
        return "identical" if r.response_raw_same else "equivalent"
    assembled_diffs = [d for d in r.response_diffs if d[0].startswith("assembled.")]
    if r.response_assembled_same:
        return "chunks differ, assembled same: " + _paths(r.response_diffs)
    return _paths(assembled_diffs or r.response_diffs)


def print_table(results: list[Result]) -> None:
    print("| case | source | request identical? | response identical? | SDK ok? | gate | verdict |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        cells = [r.case.name, r.case.source, cell_request(r), cell_response(r), r.sdk, r.gate, r.verdict]
        print("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    print(
        "\n*equivalent*: equal once Anthropic's string `content`/`system` is read as one text block (request) "
        "and null fields as absent, zero counts in `prompt_tokens_details` as absent (response). "
        "*gate*: what the candidate native gate (transform + RE2 route match, see GATE_MESSAGES) decided."
    )


def print_details(results: list[Result], limit: int) -> None:
    print("\n## Differences (ours -> Envoy)\n")
    for r in results:
        lines = []
        if not r.upstream_reached:
            lines.append(f"Envoy answered {r.envoy_status}: {short(r.envoy_error, 200)}")
        if r.ours_status != 200:
            lines.append(f"ours refuses ({r.ours_status}): {short(r.ours_error, 200)}")
        for label, diffs in (("request", r.request_diffs), ("response", r.response_diffs)):
            for p, a, b in diffs[:limit]:
                lines.append(f"{label} `{p}`: ours `{short(a)}` -> Envoy `{short(b)}`")
            if len(diffs) > limit:
                lines.append(f"{label}: {len(diffs) - limit} more")
        if lines:
            print(f"- **{r.case.name}**")
            print("\n".join(f"  - {line}" for line in lines))


def verdict_class(r: Result) -> str:
    return r.verdict.split(" (")[0].split(":")[0]


def print_summary(results: list[Result]) -> None:
    counts: dict[str, int] = {}
    for r in results:
        counts[verdict_class(r)] = counts.get(verdict_class(r), 0) + 1
    print("\n## Summary\n")
    print(f"{len(results)} cases: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())))
    print("\nFaithful in both directions (request and response identical or equivalent, SDK ok where run):")
    for r in results:
        if r.verdict == "faithful":
            print(f"- {r.case.name}")
    admitted = [r for r in results if r.gate == "admit"]
    unsafe = [r for r in admitted if r.verdict != "faithful"]
    print(f"\nCandidate native gate: admits {len(admitted)} cases, {len(admitted) - len(unsafe)} of them faithful.")
    for r in unsafe:
        print(f"- admitted but not faithful: {r.case.name}: {r.verdict}")
    missed = [r for r in results if r.verdict == "faithful" and r.gate != "admit"]
    for r in missed:
        print(f"- faithful but refused by the gate: {r.case.name}")


def machine_line() -> str:
    model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    return (
        f"machine: {os.cpu_count()} CPUs, {model.group(1).strip() if model else platform.processor()}, "
        f"{platform.machine()}, Linux {platform.release()}; Python {platform.python_version()}; "
        f"Envoy {envoy_version()}"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="run only the cases whose name contains this")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (Envoy config and log)")
    parser.add_argument("--details", type=int, default=6, help="differences listed per case and side")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # Our translator's debug lines would interleave with the report.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    cases = [c for c in build_cases() if args.only in c.name]
    workdir = Path(tempfile.mkdtemp(prefix="apm-fidelity-"))
    recorder = Recorder({})
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    results = []
    try:
        with running_envoy(workdir, recorder.server_address[1]) as port:
            for case in cases:
                result = run_case(port, recorder, case)
                if case.plain_text and case.answer == "text" and result.upstream_reached:
                    result.sdk = sdk_check(port, case)
                results.append(result)
    finally:
        recorder.shutdown()
        if args.keep:
            print(f"work directory: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"# Envoy ai_protocol_manager transcoder vs our translator (OpenAI chat → Anthropic)\n\n{machine_line()}\n")
    print_table(results)
    print_details(results, args.details)
    print_summary(results)


if __name__ == "__main__":
    main()
