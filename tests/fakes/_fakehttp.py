"""Tiny stdlib HTTP helpers for raw checks of the fakes (no SDK in the way)."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit


def raw(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """Send one request; returns (status, lower-cased headers, body bytes).

    A truncated (aborted) body raises http.client.IncompleteRead.
    """
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    data: bytes | None
    hdrs = dict(headers or {})
    if body is None:
        data = None
    elif isinstance(body, bytes | str):
        data = body.encode() if isinstance(body, str) else body
    else:
        data = json.dumps(body).encode()
        hdrs.setdefault("content-type", "application/json")
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload
    finally:
        conn.close()


def sse_events(payload: bytes) -> list[tuple[str | None, str]]:
    """Parse an SSE body into [(event name or None, data)]."""
    out: list[tuple[str | None, str]] = []
    for frame in payload.decode().split("\n\n"):
        if not frame.strip():
            continue
        event = None
        data = []
        for line in frame.split("\n"):
            if line.startswith("event:"):
                event = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:") :].strip())
        out.append((event, "\n".join(data)))
    return out
