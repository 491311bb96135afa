"""aigw_fakes.rewrite (what examples/with_fakes.py runs): each runnable example's provider Backends
pointed at loopback fakes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from aigw_fakes import rewrite
from aigw_fakes.annotated import FAKE_PROVIDER_ANNOTATION
from tests.examples.running import EXAMPLES, RUNNABLE


@pytest.mark.parametrize("example", sorted(RUNNABLE))
def test_with_fakes_points_every_provider_backend_at_loopback(example: str):
    rewritten = rewrite.for_fakes(rewrite.load_documents(EXAMPLES / example), listener_port=12345)
    assert set(rewritten.fakes) == RUNNABLE[example]
    kinds = [d["kind"] for d in rewritten.documents if d is not None]
    assert "BackendTLSPolicy" not in kinds
    for doc in filter(None, rewritten.documents):
        if doc["kind"] == "Backend":
            [endpoint] = doc["spec"]["endpoints"]
            assert endpoint["ip"]["address"] == "127.0.0.1"
            assert doc["metadata"]["annotations"][FAKE_PROVIDER_ANNOTATION] in ("openai", "azure", "anthropic")
        if doc["kind"] == "Gateway":
            assert {listener["port"] for listener in doc["spec"]["listeners"]} == {12345}
    assert rewritten.env and set(rewritten.env.values()) == {rewrite.DUMMY_KEY}


def test_an_example_without_a_provider_fake_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    # Every schema has a fake now: an example whose Backend no AIServiceBackend uses has none.
    (tmp_path / "gateway.yaml").write_text((EXAMPLES / "vertex" / "vertex.yaml").read_text().replace("GCP", "Other"))
    assert rewrite.main([str(tmp_path)]) == 1
    assert (
        "fakes exist for OpenAI, AzureOpenAI, Anthropic, AWSBedrock, AWSAnthropic, GCPVertexAI, GCPAnthropic, Cohere, "
        "and MCP servers)" in (capsys.readouterr().err)
    )


def test_a_fake_vertex_gets_a_test_service_account_key_naming_a_loopback_token_endpoint():
    rewritten = rewrite.for_fakes(rewrite.load_documents(EXAMPLES / "vertex"))
    assert {provider for provider, _ in rewritten.fakes.values()} == {"vertex"}
    key = json.loads(rewritten.env["GCP_SERVICE_ACCOUNT_JSON"])
    assert key["type"] == "service_account" and key["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/token", key["token_uri"])
    given = rewrite.for_fakes(rewrite.load_documents(EXAMPLES / "vertex"), keys={"GCP_SERVICE_ACCOUNT_JSON": "{}"})
    assert given.env["GCP_SERVICE_ACCOUNT_JSON"] == "{}"  # a caller's own key (its own token endpoint) is kept


def test_an_example_that_is_not_yaml_is_named_with_its_line_and_column(tmp_path):
    """From a new-user trial: an unclosed quote in an example came back as PyYAML's raw message
    ("in <unicode string>"), naming neither the file nor where."""
    (tmp_path / "gateway.yaml").write_text("kind: Gateway\nmetadata:\n  name: 'open\n")
    with pytest.raises(
        ValueError, match=r"gateway\.yaml: invalid YAML at line 4, column 1: found unexpected end of stream"
    ):
        rewrite.load_documents(tmp_path)


def test_each_file_keeps_its_name_and_each_document_its_number(tmp_path: Path):
    """A new user's trial: errors under with_fakes named one temporary file the example's files
    were merged into, with numbers of its own. Each file is rewritten on its own; a document the
    rewrite drops (a provider Backend's BackendTLSPolicy) leaves an empty one, as does one that
    was empty."""
    (tmp_path / "sub").mkdir()
    shutil.copy(EXAMPLES / "basic" / "gateway.yaml", tmp_path / "gateway.yaml")
    shutil.copy(EXAMPLES / "basic" / "backends.yaml", tmp_path / "sub" / "backends.yaml")
    files = rewrite.load_files(tmp_path)
    assert list(files) == [Path("gateway.yaml"), Path("sub/backends.yaml")]
    _, texts = rewrite.rewrite_files(files)
    assert set(texts) == set(files)
    for path, documents in files.items():
        again = list(yaml.safe_load_all(texts[path]))
        assert len(again) == len(documents)
        for before, after in zip(documents, again, strict=True):
            kind = before.get("kind") if isinstance(before, dict) else None
            assert (after or {}).get("kind") == (None if kind == "BackendTLSPolicy" else kind)
    assert "BackendTLSPolicy" in [d["kind"] for d in files[Path("sub/backends.yaml")]]


def test_a_missing_example_is_said_missing(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    """A new user's trial: a mistyped example path said no Backend of it had a fake."""
    assert rewrite.main([str(tmp_path / "multi_provider")]) == 1
    assert capsys.readouterr().err == f"with_fakes: error: {tmp_path / 'multi_provider'}: no such file or directory\n"
