"""A minimal in-test fake provider (OpenAI chat completions and Anthropic messages) that records
what it receives. Realistic provider fakes live elsewhere; this one only checks the basics."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeProvider:
    fail_status: int | None = None
    # When set, streams pause after their first event until the test releases the gate: a test
    # that reads the first token before releasing it proves nothing is buffered to the end.
    gate: asyncio.Event | None = None
    # (status, content-type, body) answered verbatim to every request when set.
    canned: tuple[int, str, bytes] | None = None
    requests: list[Seen] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(Seen(request.method, request.path_qs, headers, body))
        if len(body) != int(headers.get("content-length", len(body))):
            return web.json_response({"error": {"message": "content-length mismatch"}}, status=400)
        if self.canned is not None:
            status, content_type, canned = self.canned
            return web.Response(status=status, body=canned, content_type=content_type)
        if self.fail_status:
            return web.json_response(
                {"error": {"message": "backend unavailable", "type": "server_error"}}, status=self.fail_status
            )
        if request.path.endswith("/messages/count_tokens"):
            return web.json_response({"input_tokens": 7})
        if request.path.endswith("/embeddings"):
            return self._embeddings(json.loads(body))
        if request.path.endswith("/chat/completions"):
            return await self._openai(request, json.loads(body))
        if request.path.endswith("/messages"):
            return await self._anthropic(request, headers, json.loads(body))
        return web.json_response({"path": request.path_qs})

    # ------------------------------------------------------------------ OpenAI

    @staticmethod
    def _embeddings(req: dict[str, Any]) -> web.Response:
        vector = [0.5, -1.0, 2.0]
        if req.get("encoding_format") == "base64":
            embedding: Any = base64.b64encode(struct.pack("<3f", *vector)).decode()
        else:
            embedding = vector
        return web.json_response(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": embedding}],
                "model": req["model"],
                "usage": {"prompt_tokens": 4, "total_tokens": 4},
            }
        )

    async def _openai(self, request: web.Request, req: dict[str, Any]) -> web.StreamResponse:
        model = req["model"]
        wants_tool = bool(req.get("tools"))
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        if not req.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": None if wants_tool else "hello from openai"}
            if wants_tool:
                message["tool_calls"] = [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ]
            return web.json_response(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": model,
                    "choices": [
                        {"index": 0, "message": message, "finish_reason": "tool_calls" if wants_tool else "stop"}
                    ],
                    "usage": usage,
                }
            )
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)

        def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
            obj = {
                "id": "chatcmpl-2",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        await resp.write(chunk({"role": "assistant", "content": ""}))
        if self.gate is not None:
            await self.gate.wait()
        if wants_tool:
            first = chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ]
                }
            )
            await resp.write(first)
            args = chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}) + chunk(
                {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}
            )
            await resp.write(args[:17])  # an awkward split inside an event
            await resp.write(args[17:])
            await resp.write(chunk({}, "tool_calls"))
        else:
            for word in ("hello", " from", " openai"):
                await resp.write(chunk({"content": word}))
            await resp.write(chunk({}, "stop"))
        if (req.get("stream_options") or {}).get("include_usage"):
            await resp.write(chunk(None, usage=usage))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    # ------------------------------------------------------------------ Anthropic

    async def _anthropic(
        self, request: web.Request, headers: dict[str, str], req: dict[str, Any]
    ) -> web.StreamResponse:
        problems = []
        if "x-api-key" not in headers:
            problems.append("missing x-api-key")
        if "authorization" in headers:
            problems.append("authorization must not be forwarded")
        if "anthropic-version" not in headers:
            problems.append("missing anthropic-version")
        if not isinstance(req.get("max_tokens"), int):
            problems.append("max_tokens is required")
        if any(m.get("role") not in ("user", "assistant") for m in req.get("messages", [])):
            problems.append("messages roles must be user/assistant")
        if problems:
            return web.json_response(
                {"type": "error", "error": {"type": "invalid_request_error", "message": "; ".join(problems)}},
                status=400,
            )
        model = req["model"]
        wants_tool = bool(req.get("tools"))
        usage = {"input_tokens": 5, "output_tokens": 9, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 2}
        if not req.get("stream"):
            content: list[dict[str, Any]] = [{"type": "text", "text": "hello from claude"}]
            if wants_tool:
                content.append({"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}})
            return web.json_response(
                {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": "tool_use" if wants_tool else "end_turn",
                    "stop_sequence": None,
                    "usage": usage,
                }
            )
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)

        def ev(kind: str, obj: dict[str, Any]) -> bytes:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **obj})}\n\n".encode()

        start_usage = {**usage, "output_tokens": 1}
        msg = {
            "id": "msg_2",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        }
        await resp.write(ev("message_start", {"message": msg}))
        if self.gate is not None:
            await self.gate.wait()
        await resp.write(ev("ping", {}))
        await resp.write(ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}))
        for word in ("hello", " from", " claude"):
            await resp.write(ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": word}}))
        await resp.write(ev("content_block_stop", {"index": 0}))
        if wants_tool:
            block = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
            data = ev("content_block_start", {"index": 1, "content_block": block})
            data += ev(
                "content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"city": '}}
            )
            data += ev(
                "content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}}
            )
            data += ev("content_block_stop", {"index": 1})
            for i in range(0, len(data), 23):  # arbitrary chunk boundaries
                await resp.write(data[i : i + 23])
        stop = "tool_use" if wants_tool else "end_turn"
        await resp.write(
            ev("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 9}})
        )
        await resp.write(ev("message_stop", {}))
        await resp.write_eof()
        return resp
