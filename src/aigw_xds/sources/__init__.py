"""Sources: where resources come from (files, the Kubernetes API)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from ..resources import ResourceSet

log = structlog.get_logger(__name__)


async def reload(
    load: Callable[[], Awaitable[ResourceSet]], on_change: Callable[[ResourceSet], Awaitable[None]]
) -> None:
    """on_change(await load()) for a source's watch. A failure of either is a defect, not an error of the
    configuration (those are diagnostics): logged, and the watch goes on while the last good
    configuration keeps serving. Raised, it ended the watch, and no later change was applied."""
    try:
        await on_change(await load())
    except Exception:
        log.exception("configuration_reload_failed")
