"""Reading one text field (the model) out of a multipart/form-data body without touching it."""

from __future__ import annotations

import re

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_NAME = re.compile(rb'name="([^"]*)"', re.IGNORECASE)


def boundary_of(content_type: str) -> str | None:
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    match = _BOUNDARY.search(content_type)
    return match.group(1) if match else None


def form_field(body: bytes, content_type: str, name: str) -> str | None:
    """The value of a small text field, or None when absent or the body is not multipart."""
    boundary = boundary_of(content_type)
    if boundary is None:
        return None
    delimiter = b"--" + boundary.encode()
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, value = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-disposition:"):
                match = _NAME.search(line)
                if match and match.group(1).decode(errors="replace") == name:
                    if value.endswith(b"\r\n"):
                        value = value[:-2]
                    return value.decode("utf-8", errors="replace")
    return None
