"""The route's protocol version, capabilities and merged lists (merge.py): pure functions."""

from __future__ import annotations

from aigw.translator.v1 import config_pb2
from aigw_translator.mcp import merge, names


def test_versions_spoken_are_kept_and_others_get_the_newest() -> None:
    assert merge.negotiated_version("2025-03-26") == "2025-03-26"
    assert merge.negotiated_version("2025-06-18") == "2025-06-18"
    assert merge.negotiated_version("2099-01-01") == merge.PROTOCOL_VERSIONS[-1]
    assert merge.negotiated_version(None) == merge.PROTOCOL_VERSIONS[-1]


def test_capabilities_are_the_union_of_what_the_proxy_serves() -> None:
    alpha = merge.capabilities_of({"capabilities": {"tools": {"listChanged": True}, "prompts": {}, "experimental": {}}})
    beta = merge.capabilities_of({"capabilities": {"resources": {"subscribe": True}, "logging": {}}})
    assert alpha == {"tools", "prompts"}
    merged = merge.merged_capabilities([alpha, beta])
    assert merged == {
        "tools": {"listChanged": False},
        "prompts": {"listChanged": False},
        "resources": {"subscribe": False, "listChanged": False},
        "logging": {},
    }


def test_initialize_result_names_the_gateway() -> None:
    result = merge.initialize_result("2025-06-18", [frozenset({"tools"})])
    assert result["protocolVersion"] == "2025-06-18"
    assert result["serverInfo"]["name"] == merge.SERVER_NAME
    assert result["capabilities"] == {"tools": {"listChanged": False}}


def test_tools_are_prefixed_selected_and_kept_in_backend_order() -> None:
    hide_b = names.selector_of(
        config_pb2.MCPBackend(name="beta", tool_selector=config_pb2.MCPToolSelector(exclude=["b"]))
    )
    merged = merge.merged_list(
        merge.LIST_METHODS["tools/list"],
        [
            ("alpha", names.ALL_TOOLS.allows, [{"name": "z", "inputSchema": {}}, {"name": "a"}]),
            ("beta", hide_b.allows, [{"name": "b"}, {"name": "c", "description": "kept"}, {"no": "name"}]),
        ],
    )
    assert merged == {
        "tools": [
            {"name": "alpha__z", "inputSchema": {}},
            {"name": "alpha__a"},
            {"name": "beta__c", "description": "kept"},
        ]
    }


def test_resources_and_templates_carry_their_backend_in_the_uri() -> None:
    resources = merge.merged_list(
        merge.LIST_METHODS["resources/list"], [("docs", names.ALL_TOOLS.allows, [{"uri": "file:///r", "name": "r"}])]
    )
    assert resources == {"resources": [{"uri": "docs+file:///r", "name": "docs__r"}]}
    templates = merge.merged_list(
        merge.LIST_METHODS["resources/templates/list"],
        [("docs", names.ALL_TOOLS.allows, [{"uriTemplate": "file:///{x}", "name": "t"}])],
    )
    assert templates == {"resourceTemplates": [{"uriTemplate": "docs+file:///{x}", "name": "docs__t"}]}
