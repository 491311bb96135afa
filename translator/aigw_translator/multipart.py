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


def _locate(body: bytes, content_type: str, name: str) -> tuple[list[bytes], int, bytes, bytes] | None:
    """The body split on its delimiter, the index of the named field's part, the part's head
    (through the blank line) and its value (with the line break before the next delimiter)."""
    boundary = boundary_of(content_type)
    if boundary is None:
        return None
    parts = body.split(b"--" + boundary.encode())
    for i, part in enumerate(parts[1:], start=1):
        if part.startswith(b"--"):
            break
        head, sep, value = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-disposition:"):
                match = _NAME.search(line)
                if match and match.group(1).decode(errors="replace") == name:
                    return parts, i, head + sep, value
    return None


def form_field(body: bytes, content_type: str, name: str) -> str | None:
    """The value of a small text field, or None when absent or the body is not multipart."""
    found = _locate(body, content_type, name)
    if found is None:
        return None
    value = found[3]
    if value.endswith(b"\r\n"):
        value = value[:-2]
    return value.decode("utf-8", errors="replace")


def replace_form_field(body: bytes, content_type: str, name: str, value: str) -> bytes | None:
    """The body with a small text field's value replaced (the model override), or None when the
    field is absent or the body is not multipart. Every other byte is kept."""
    found = _locate(body, content_type, name)
    if found is None:
        return None
    parts, index, head, old = found
    parts[index] = head + value.encode() + (b"\r\n" if old.endswith(b"\r\n") else b"")
    boundary = boundary_of(content_type)
    assert boundary is not None
    return (b"--" + boundary.encode()).join(parts)
