"""How the proxy names what its backends own, and which tools a backend shows.

Clients see "<backend>__<name>" for tools and prompts, "<backend>+<uri>" for resources and resource
templates, and "<backend>__<id as JSON>" for the ids of requests a backend sends them (sampling,
elicitation, roots), so that what they send back finds its backend again.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import re2

import aigw_contract as contract
from aigw.translator.v1 import config_pb2

from ..logs import get_logger

log = get_logger(__name__)

SEPARATOR = contract.MCP_NAME_SEPARATOR
URI_SEPARATOR = "+"


def prefixed(backend: str, name: str) -> str:
    """The name clients see for a backend's tool or prompt."""
    return f"{backend}{SEPARATOR}{name}"


def split(name: str) -> tuple[str, str] | None:
    """(backend, the backend's own name) of a name clients use, or None when it has no backend part.
    Backend names (Kubernetes names) hold no "_", so the first separator ends the backend's part."""
    backend, sep, own = name.partition(SEPARATOR)
    if not sep or not backend or not own:
        return None
    return backend, own


def prefixed_uri(backend: str, uri: str) -> str:
    """The URI (or URI template) clients see for a backend's resource."""
    return f"{backend}{URI_SEPARATOR}{uri}"


def split_uri(uri: str) -> tuple[str, str] | None:
    """(backend, the backend's own URI) of a URI clients use, or None."""
    backend, sep, own = uri.partition(URI_SEPARATOR)
    if not sep or not backend or not own:
        return None
    return backend, own


def prefixed_request_id(backend: str, request_id: object) -> str:
    """The id clients see on a request a backend sends them."""
    return f"{backend}{SEPARATOR}{json.dumps(request_id)}"


def split_request_id(request_id: object) -> tuple[str, str | int] | None:
    """(backend, the backend's own id) of the id of a client's answer, or None."""
    if not isinstance(request_id, str) or (parts := split(request_id)) is None:
        return None
    backend, raw = parts
    try:
        own = json.loads(raw)
    except ValueError:
        return None
    if isinstance(own, bool) or not isinstance(own, str | int):
        return None
    return backend, own


@dataclass(frozen=True, slots=True)
class ToolSelector:
    """A backend's MCPToolSelector, compiled. Exclusions win; with no inclusion (exact or regex)
    every tool not excluded is shown. Regular expressions are RE2's and match anywhere in the name,
    as Envoy AI Gateway matches them (anchor them, `^get_.*$`, to match a whole name)."""

    include: frozenset[str] = frozenset()
    include_regex: tuple[Any, ...] = ()  # re2 patterns
    exclude: frozenset[str] = frozenset()
    exclude_regex: tuple[Any, ...] = ()
    # A pattern that does not compile shows nothing rather than more than was meant.
    broken: bool = False

    def allows(self, tool: str) -> bool:
        if self.broken:
            return False
        if tool in self.exclude or any(p.search(tool) for p in self.exclude_regex):
            return False
        if not self.include and not self.include_regex:
            return True
        return tool in self.include or any(p.search(tool) for p in self.include_regex)


ALL_TOOLS = ToolSelector()


def selector_of(backend: config_pb2.MCPBackend) -> ToolSelector:
    """The compiled selector of a backend (ALL_TOOLS when it has none); compiled once per content."""
    if not backend.HasField("tool_selector"):
        return ALL_TOOLS
    s = backend.tool_selector
    return _compiled(tuple(s.include), tuple(s.include_regex), tuple(s.exclude), tuple(s.exclude_regex))


@functools.lru_cache(maxsize=1024)
def _compiled(
    include: tuple[str, ...], include_regex: tuple[str, ...], exclude: tuple[str, ...], exclude_regex: tuple[str, ...]
) -> ToolSelector:
    try:
        return ToolSelector(
            include=frozenset(include),
            include_regex=tuple(re2.compile(p) for p in include_regex),
            exclude=frozenset(exclude),
            exclude_regex=tuple(re2.compile(p) for p in exclude_regex),
        )
    except re2.error as exc:
        log.warning("mcp_tool_selector_broken", reason=str(exc))
        return ToolSelector(broken=True)
