"""Logging helpers: one structlog logger per module, and header redaction so secrets never reach a log."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import structlog

_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie"})
_SECRET_SUFFIXES = ("-access-key-id", "-secret-access-key", "-session-token")
REDACTED = "[REDACTED]"


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)


def is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return (
        lowered in _SECRET_HEADERS
        or lowered.startswith("x-aigw-")
        or any(lowered.endswith(suffix) for suffix in _SECRET_SUFFIXES)
    )


def redact_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """A copy of the headers that is safe to log."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {k: (REDACTED if is_secret_header(k) else v) for k, v in items}


class RedactedHeaders:
    """Headers for a log call, redacted only when the entry is actually rendered (debug entries
    are usually filtered out, and redacting every request's headers would cost for nothing)."""

    __slots__ = ("_headers",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = headers

    def redacted(self) -> dict[str, str]:
        return redact_headers(self._headers)

    def __repr__(self) -> str:
        return repr(self.redacted())

    __str__ = __repr__
