#!/usr/bin/env python3
"""A minimal, fast HTTP/1.1 upstream for benchmarks (not a faithful provider: see aigw_fakes for
that). It answers OpenAI chat completions and Anthropic messages with canned bodies, streamed as SSE
when the request asks for "stream": true, so the gateway's own cost dominates what is measured. An
Anthropic request that carries "tools" gets an answer with a tool_use block (stop_reason tool_use).

Usage: hack/fast_upstream.py PORT
"""

from __future__ import annotations

import asyncio
import json
import sys

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-20250514"
OPENAI = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": OPENAI_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the benchmark upstream."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 250, "completion_tokens": 8, "total_tokens": 258},
    }
).encode()
TEXT = "Hello from the benchmark upstream."
TOOL_USE = {"type": "tool_use", "id": "toolu_bench", "name": "get_weather", "input": {"city": "Paris", "unit": "c"}}


def _anthropic(content: list[dict], stop_reason: str) -> bytes:
    message = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": ANTHROPIC_MODEL,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 250, "output_tokens": 8},
    }
    return json.dumps(message).encode()


def _openai_stream() -> bytes:
    chunks = []
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": OPENAI_MODEL}
    chunks.append({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    for word in ("Hello", "from", "the", "benchmark", "upstream", "."):
        chunks.append({**base, "choices": [{"index": 0, "delta": {"content": word + " "}}]})
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append({**base, "choices": [], "usage": {"prompt_tokens": 250, "completion_tokens": 8, "total_tokens": 258}})
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def _anthropic_stream(tools: bool) -> bytes:
    start: dict = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": ANTHROPIC_MODEL,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 250, "output_tokens": 1},
    }
    events: list[dict] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    for word in ("Hello", "from", "the", "benchmark", "upstream", "."):
        events.append({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word + " "}})
    events.append({"type": "content_block_stop", "index": 0})
    if tools:
        block = {**TOOL_USE, "input": {}}
        events.append({"type": "content_block_start", "index": 1, "content_block": block})
        for part in ('{"city": ', '"Paris", ', '"unit": "c"}'):
            delta = {"type": "input_json_delta", "partial_json": part}
            events.append({"type": "content_block_delta", "index": 1, "delta": delta})
        events.append({"type": "content_block_stop", "index": 1})
    stop_reason = "tool_use" if tools else "end_turn"
    events += [
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": 8},
        },
        {"type": "message_stop"},
    ]
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


# (provider, stream, tools) -> (content type, body)
JSON, SSE = b"application/json", b"text/event-stream"
ANSWERS = {
    ("openai", False, False): (JSON, OPENAI),
    ("openai", True, False): (SSE, _openai_stream()),
    ("anthropic", False, False): (JSON, _anthropic([{"type": "text", "text": TEXT}], "end_turn")),
    ("anthropic", True, False): (SSE, _anthropic_stream(tools=False)),
    ("anthropic", False, True): (JSON, _anthropic([{"type": "text", "text": TEXT}, TOOL_USE], "tool_use")),
    ("anthropic", True, True): (SSE, _anthropic_stream(tools=True)),
}


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                return b"".join(p[:-2] for p in parts)
    length = int(headers.get("content-length", "0"))
    return await reader.readexactly(length) if length else b""


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await read_body(reader, headers)
            kind = "anthropic" if path.endswith("/messages") else "openai"
            stream = b'"stream":true' in body.replace(b" ", b"")
            tools = kind == "anthropic" and b'"tools"' in body
            content_type, payload = ANSWERS[(kind, stream, tools)]
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: "
                + content_type
                + b"\r\ncontent-length: "
                + str(len(payload)).encode()
                + b"\r\n\r\n"
                + payload
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main(int(sys.argv[1])))
    except ImportError:
        asyncio.run(main(int(sys.argv[1])))
