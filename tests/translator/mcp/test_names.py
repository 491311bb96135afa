"""Naming what backends own and selecting a backend's tools (names.py): pure functions."""

from __future__ import annotations

import pytest

from aigw.translator.v1 import config_pb2
from aigw_translator.mcp import names


def _selector(**fields: list[str]) -> names.ToolSelector:
    backend = config_pb2.MCPBackend(name="b", tool_selector=config_pb2.MCPToolSelector(**fields))
    return names.selector_of(backend)


def test_tool_names_are_prefixed_and_split_at_the_first_separator() -> None:
    assert names.prefixed("github", "create_issue") == "github__create_issue"
    assert names.split("github__create_issue") == ("github", "create_issue")
    assert names.split("github__a__b") == ("github", "a__b")
    for bad in ("create_issue", "__x", "github__", ""):
        assert names.split(bad) is None


def test_resource_uris_are_prefixed_and_split() -> None:
    assert names.prefixed_uri("docs", "file:///a+b") == "docs+file:///a+b"
    assert names.split_uri("docs+file:///a+b") == ("docs", "file:///a+b")
    assert names.split_uri("file:///a") is None


@pytest.mark.parametrize("own_id", [7, "abc", "a__b"])
def test_backend_request_ids_round_trip(own_id: int | str) -> None:
    assert names.split_request_id(names.prefixed_request_id("alpha", own_id)) == ("alpha", own_id)


def test_foreign_request_ids_are_not_split() -> None:
    for bad in (3, "plain", "alpha__not json", "alpha__true", "alpha__[1]"):
        assert names.split_request_id(bad) is None


def test_no_selector_shows_every_tool() -> None:
    assert names.selector_of(config_pb2.MCPBackend(name="b")).allows("anything")


def test_include_is_exact() -> None:
    selector = _selector(include=["search"])
    assert selector.allows("search")
    assert not selector.allows("search2")
    assert not selector.allows("other")


def test_regexes_match_anywhere_in_the_name_as_envoy_ai_gateway_matches_them() -> None:
    """Go's regexp MatchString (Envoy AI Gateway's) finds a match anywhere: the same YAML selects
    the same tools here. Anchors select whole names."""
    selector = _selector(include_regex=["get_.*"])
    assert selector.allows("get_user") and selector.allows("forget_user")
    anchored = _selector(include_regex=["^get_.*$"])
    assert anchored.allows("get_user") and not anchored.allows("forget_user")
    excluded = _selector(exclude_regex=["^del$"])
    assert excluded.allows("delete")
    assert not excluded.allows("del")
    assert not _selector(exclude_regex=["del"]).allows("delete")


def test_exclusions_win_over_inclusions() -> None:
    selector = _selector(include_regex=["get_.*"], exclude=["get_secret"], exclude_regex=[".*_admin"])
    assert selector.allows("get_user")
    assert not selector.allows("get_secret")
    assert not selector.allows("get_admin")


def test_exclude_only_shows_the_rest() -> None:
    selector = _selector(exclude=["drop"])
    assert selector.allows("keep")
    assert not selector.allows("drop")


def test_a_pattern_that_does_not_compile_shows_nothing() -> None:
    selector = _selector(exclude_regex=["("])
    assert not selector.allows("anything")
