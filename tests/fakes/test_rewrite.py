"""aigw_fakes.rewrite (what examples/with_fakes.py runs): each runnable example's provider Backends
pointed at loopback fakes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from aigw_fakes import rewrite
from aigw_fakes.annotated import FAKE_PROVIDER_ANNOTATION
from tests.examples.running import EXAMPLES, RUNNABLE


@pytest.mark.parametrize("example", sorted(RUNNABLE))
def test_with_fakes_points_every_provider_backend_at_loopback(example: str):
    rewritten = rewrite.for_fakes(rewrite.load_documents(EXAMPLES / example), listener_port=12345)
    assert set(rewritten.fakes) == RUNNABLE[example]
    kinds = [d["kind"] for d in rewritten.documents]
    assert "BackendTLSPolicy" not in kinds
    for doc in rewritten.documents:
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
        "fakes exist for OpenAI, AzureOpenAI, Anthropic, AWSBedrock, AWSAnthropic, GCPVertexAI, GCPAnthropic, Cohere)"
        in (capsys.readouterr().err)
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
