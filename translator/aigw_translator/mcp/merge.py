"""What the proxy answers for the route as a whole: the protocol version, the capabilities, and the
lists (tools, prompts, resources, resource templates) made of every backend's, renamed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import names

# Protocol versions of the initialize handshake over Streamable HTTP that the proxy speaks, oldest
# first; a client asking for another one is offered the newest.
PROTOCOL_VERSIONS = ("2025-03-26", "2025-06-18", "2025-11-25")
SERVER_NAME = "aigw-xds"
SERVER_VERSION = "0.1.0"

# The capabilities the proxy serves when a backend of the session has them.
CAPABILITIES = ("tools", "prompts", "resources", "logging", "completions")


def negotiated_version(requested: object) -> str:
    """The version the proxy answers a client's initialize with: the one asked for when spoken,
    else the newest (the client then decides whether to go on)."""
    return requested if isinstance(requested, str) and requested in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[-1]


def capabilities_of(result: Mapping[str, Any]) -> frozenset[str]:
    """The capabilities (of CAPABILITIES) a backend's InitializeResult declares."""
    declared = result.get("capabilities")
    if not isinstance(declared, dict):
        return frozenset()
    return frozenset(c for c in CAPABILITIES if isinstance(declared.get(c), dict))


def merged_capabilities(backends: list[frozenset[str]]) -> dict[str, Any]:
    """The route's capabilities: each one some backend has. No list_changed and no resource
    subscriptions: the proxy has no server-initiated stream (GET) to carry them."""
    present = frozenset().union(*backends)
    merged: dict[str, Any] = {}
    for capability in CAPABILITIES:
        if capability in present:
            merged[capability] = {}
    if "tools" in merged:
        merged["tools"] = {"listChanged": False}
    if "prompts" in merged:
        merged["prompts"] = {"listChanged": False}
    if "resources" in merged:
        merged["resources"] = {"subscribe": False, "listChanged": False}
    return merged


def initialize_result(protocol_version: str, backends: list[frozenset[str]]) -> dict[str, Any]:
    return {
        "protocolVersion": protocol_version,
        "capabilities": merged_capabilities(backends),
        "serverInfo": {"name": SERVER_NAME, "version": SERVER_VERSION},
    }


# Whether the client is shown a tool of the backend (by the tool's own name): its selector allows
# it, and the route's authorization lets the client call it.
Shown = Callable[[str], bool]
Rename = Callable[[str, dict[str, Any], Shown], dict[str, Any] | None]


def _tool(backend: str, item: dict[str, Any], shown: Shown) -> dict[str, Any] | None:
    name = item.get("name")
    if not isinstance(name, str) or not shown(name):
        return None
    return {**item, "name": names.prefixed(backend, name)}


def _prompt(backend: str, item: dict[str, Any], _: Shown) -> dict[str, Any] | None:
    name = item.get("name")
    if not isinstance(name, str):
        return None
    return {**item, "name": names.prefixed(backend, name)}


def _resource(backend: str, item: dict[str, Any], _: Shown) -> dict[str, Any] | None:
    uri, name = item.get("uri"), item.get("name")
    if not isinstance(uri, str):
        return None
    renamed = {**item, "uri": names.prefixed_uri(backend, uri)}
    if isinstance(name, str):
        renamed["name"] = names.prefixed(backend, name)
    return renamed


def _template(backend: str, item: dict[str, Any], _: Shown) -> dict[str, Any] | None:
    template, name = item.get("uriTemplate"), item.get("name")
    if not isinstance(template, str):
        return None
    renamed = {**item, "uriTemplate": names.prefixed_uri(backend, template)}
    if isinstance(name, str):
        renamed["name"] = names.prefixed(backend, name)
    return renamed


@dataclass(frozen=True, slots=True)
class ListMethod:
    """A list method the proxy answers by asking every backend with `capability`."""

    capability: str
    # The key of the result's list.
    key: str
    rename: Rename


LIST_METHODS: dict[str, ListMethod] = {
    "tools/list": ListMethod("tools", "tools", _tool),
    "prompts/list": ListMethod("prompts", "prompts", _prompt),
    "resources/list": ListMethod("resources", "resources", _resource),
    "resources/templates/list": ListMethod("resources", "resourceTemplates", _template),
}


def merged_list(method: ListMethod, pages: list[tuple[str, Shown, list[dict[str, Any]]]]) -> dict[str, Any]:
    """The result of a list method: each backend's items (backend, the tools it shows, its items, in
    the order given), renamed; the tools not shown and malformed items left out."""
    items: list[dict[str, Any]] = []
    for backend, shown, backend_items in pages:
        for item in backend_items:
            if isinstance(item, dict) and (renamed := method.rename(backend, item, shown)) is not None:
                items.append(renamed)
    return {method.key: items}
