"""Logging helpers: one structlog logger per module, and header redaction so secrets never reach a log."""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterable, Mapping

import structlog

from aigw_contract import CLIENT_AUTH_HEADERS, OVERRIDE_HEADER_PREFIX

_SECRET_HEADERS = frozenset(
    {*CLIENT_AUTH_HEADERS, "proxy-authorization", "cookie", "set-cookie", "x-goog-api-key", "x-amz-security-token"}
)
_SECRET_SUFFIXES = ("-access-key-id", "-secret-access-key", "-session-token")
REDACTED = "[REDACTED]"


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)


def is_secret_header(name: str, extra: Collection[str] = ()) -> bool:
    """Standard credential headers, x-aigw-* overrides, AWS credential headers, and `extra`: the
    configuration's own secret names (custom override headers, every headerMutation.set name; see
    config.RuntimeConfig.secret_headers), lower case."""
    lowered = name.lower()
    return (
        lowered in _SECRET_HEADERS
        or lowered in extra
        or lowered.startswith(OVERRIDE_HEADER_PREFIX)
        or any(lowered.endswith(suffix) for suffix in _SECRET_SUFFIXES)
    )


def redact_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]], extra: Collection[str] = ()
) -> dict[str, str]:
    """A copy of the headers that is safe to log."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {k: (REDACTED if is_secret_header(k, extra) else v) for k, v in items}


class RedactedHeaders:
    """Headers for a log call, redacted only when the entry is actually rendered (debug entries
    are usually filtered out, and redacting every request's headers would cost for nothing)."""

    __slots__ = ("_extra", "_headers")

    def __init__(self, headers: Mapping[str, str], extra: Collection[str] = ()) -> None:
        self._headers = headers
        self._extra = extra

    def redacted(self) -> dict[str, str]:
        return redact_headers(self._headers, self._extra)

    def __repr__(self) -> str:
        return repr(self.redacted())

    __str__ = __repr__


class Stderr:
    """sys.stderr looked up at each write, so that replacing it (pytest's capture, a redirect)
    never leaves loggers writing to a closed stream. Where both the control plane and the
    translator log."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def resolved_format(fmt: str) -> str:
    """A log format as written: `auto` is console when stderr (where both halves log) is a
    terminal, else json."""
    if fmt == "auto":
        return "console" if sys.stderr.isatty() else "json"
    return fmt
