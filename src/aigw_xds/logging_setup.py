"""Logging setup: structlog, console output for people, JSON for machines."""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.typing import EventDict, WrappedLogger

from aigw_contract import CLIENT_AUTH_HEADERS, OVERRIDE_HEADER_PREFIX
from aigw_translator.logs import Stderr, resolved_format

from .diagnostics import SPELLED_OUT_IN_TEXT


def _redact(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    for key in list(event):
        lowered = key.lower()
        if lowered in CLIENT_AUTH_HEADERS or lowered.startswith(OVERRIDE_HEADER_PREFIX):
            event[key] = "[redacted]"
    return event


def _text_for_people(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Console only: an entry with a `text` field (a diagnostic: the whole human-readable line)
    shows that line after its event name, in place of the fields the line spells out."""
    text = event.pop("text", None)
    if text is not None:
        for key in SPELLED_OUT_IN_TEXT:
            event.pop(key, None)
        event["event"] = f"{event['event']} {text}"
    return event


_configured = {"format": "json"}  # what configure() chose, for the processes this one starts


def configure(level: str = "info", fmt: str = "auto") -> None:
    fmt = resolved_format(fmt)
    _configured["format"] = fmt
    renderer = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback)
        if fmt == "console"
        else (structlog.processors.JSONRenderer())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            *([_text_for_people] if fmt == "console" else []),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # WriteLogger writes an entry and its newline in one write (PrintLogger's print makes two, between
        # which another writer's line could land). It only calls write and flush on its file, but its
        # annotation asks for a whole TextIO.
        logger_factory=structlog.WriteLoggerFactory(file=Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def log_format() -> str:
    """The log format this process writes ("console" or "json"): the translator workers it starts
    write theirs the same way, to the same output."""
    return _configured["format"]
