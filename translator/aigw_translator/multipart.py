"""Reading text fields (the model, stream) out of a multipart/form-data body without touching it."""

from __future__ import annotations

import re
from collections.abc import Iterator

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_NAME = re.compile(rb'name="([^"]*)"', re.IGNORECASE)


def boundary_of(content_type: str) -> str | None:
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    match = _BOUNDARY.search(content_type)
    return match.group(1) if match else None


def _named_parts(parts: list[bytes]) -> Iterator[tuple[int, str, bytes, bytes]]:
    """Each field of a body split on its delimiter: its index, name, head (through the blank line)
    and value (with the line break before the next delimiter)."""
    for i, part in enumerate(parts[1:], start=1):
        if part.startswith(b"--"):
            break
        head, sep, value = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-disposition:"):
                match = _NAME.search(line)
                if match:
                    yield i, match.group(1).decode(errors="replace"), head + sep, value


def _split(body: bytes, content_type: str) -> list[bytes] | None:
    boundary = boundary_of(content_type)
    return body.split(b"--" + boundary.encode()) if boundary is not None else None


def form_fields(body: bytes, content_type: str, *names: str) -> dict[str, str]:
    """The values of small text fields (each present one by name), read in one pass over the body:
    an empty dict when the body is not multipart."""
    parts = _split(body, content_type)
    found: dict[str, str] = {}
    for _, name, _, value in _named_parts(parts or []):
        if name in names and name not in found:
            found[name] = value.removesuffix(b"\r\n").decode("utf-8", errors="replace")
    return found


def form_field(body: bytes, content_type: str, name: str) -> str | None:
    """The value of a small text field, or None when absent or the body is not multipart."""
    return form_fields(body, content_type, name).get(name)


def replace_form_field(body: bytes, content_type: str, name: str, value: str) -> bytes | None:
    """The body with a small text field's value replaced (the model override), or None when the
    field is absent or the body is not multipart. Every other byte is kept."""
    parts = _split(body, content_type)
    if parts is None:
        return None
    for index, field, head, old in _named_parts(parts):
        if field == name:
            parts[index] = head + value.encode() + (b"\r\n" if old.endswith(b"\r\n") else b"")
            boundary = boundary_of(content_type)
            assert boundary is not None
            return (b"--" + boundary.encode()).join(parts)
    return None
