"""Every example under examples/ compiles with no error and no warning (its substituted variables
set to dummies), and keeps its keys out of the YAML (tests/fakes/test_rewrite.py: the rewrite of each runnable one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigw_fakes import rewrite
from aigw_xds.compile import compile_resources
from aigw_xds.sources.files import FileSource

from .running import EXAMPLES, RUNNABLE, example_dirs


def _substituted(example: Path) -> dict[str, str]:
    """The variables the example's Secrets substitute, each with the value with_fakes.py gives it (a
    service-account key for GCP_SERVICE_ACCOUNT_JSON: a dummy string is no key, and says so)."""
    return rewrite.for_fakes(rewrite.load_documents(example)).env


def test_the_examples_are_all_there():
    assert {p.name for p in example_dirs()} >= set(RUNNABLE) | {"basic", "quickstart", "bedrock", "vertex"}


@pytest.mark.parametrize("example", example_dirs(), ids=lambda p: p.name)
def test_example_compiles_without_errors_or_warnings(example: Path, monkeypatch: pytest.MonkeyPatch):
    for variable, value in _substituted(example).items():
        monkeypatch.setenv(variable, value)
    result = compile_resources(FileSource(example).load())
    assert [str(d) for d in result.diagnostics] == []
    assert len(result.gateways) == 1


@pytest.mark.parametrize("example", [p.name for p in example_dirs() if p.name != "basic"])
def test_example_has_a_readme_with_a_run_command(example: str):
    readme = (EXAMPLES / example / "README.md").read_text()
    assert f"aigw-xds run examples/{example}" in readme


def test_missing_key_variable_fails_the_gateway_naming_the_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    result = compile_resources(FileSource(EXAMPLES / "anthropic").load())
    assert result.gateways == {}
    assert any("ANTHROPIC_API_KEY" in str(d) for d in result.errors)
