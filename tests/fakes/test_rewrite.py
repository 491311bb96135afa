"""aigw_fakes.rewrite (what examples/with_fakes.py runs): each runnable example's provider Backends
pointed at loopback fakes."""

from __future__ import annotations

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


def test_an_example_without_a_provider_fake_is_refused(capsys: pytest.CaptureFixture[str]):
    assert rewrite.main([str(EXAMPLES / "vertex")]) == 1
    assert "has a fake (fakes exist for OpenAI, AzureOpenAI, Anthropic, AWSBedrock, AWSAnthropic, Cohere)" in (
        capsys.readouterr().err
    )
