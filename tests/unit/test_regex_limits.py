"""RegularExpression header matches are checked as Envoy checks them: RE2 syntax and RE2's program
size against Envoy's default limit (100). A regex Envoy rejects takes the whole route table down."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from aigw_xds.api.kinds import ENVOY_MAX_REGEX_PROGRAM_SIZE, envoy_regex_problem
from aigw_xds.autoconfig import ANTHROPIC_MODEL_PATTERN, ANY_MODEL_PATTERN, BEDROCK_MODEL_PATTERN
from aigw_xds.cli import main
from aigw_xds.envoy.process import envoy_binary
from tests.resource_text import backend, gateway, route

# The Bedrock pattern autoconfig generated before: Envoy said "RE2 program size of 118 > 100".
OLD_BEDROCK_PATTERN = (
    r"((us|eu|apac|us-gov|ca|jp|au|global)\.)?"
    r"(amazon|anthropic|ai21|cohere|deepseek|meta|mistral|openai|qwen|stability|twelvelabs|writer)\..+"
)


def _envoy_accepts(pattern: str, tmp_path: Path) -> bool:
    """envoy --mode validate on a static route with this safe_regex header match."""
    route_config = {
        "virtual_hosts": [
            {
                "name": "v",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {
                            "prefix": "/",
                            "headers": [{"name": "m", "string_match": {"safe_regex": {"regex": pattern}}}],
                        },
                        "direct_response": {"status": 200},
                    }
                ],
            }
        ]
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager",
        "stat_prefix": "x",
        "route_config": route_config,
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    listener = {
        "name": "l",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
        ],
    }
    path = tmp_path / "regex.json"
    path.write_text(json.dumps({"static_resources": {"listeners": [listener]}}))
    checked = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if checked.returncode != 0:
        assert "program size" in checked.stderr or "regex" in checked.stderr, checked.stderr[-2000:]
    return checked.returncode == 0


def test_autoconfig_patterns_fit_envoys_limit():
    for pattern in (BEDROCK_MODEL_PATTERN, ANTHROPIC_MODEL_PATTERN, ANY_MODEL_PATTERN):
        assert envoy_regex_problem(pattern) is None, pattern


@pytest.mark.parametrize(
    "pattern",
    [OLD_BEDROCK_PATTERN, BEDROCK_MODEL_PATTERN, "(x)" + "y" * 93 + "(z)(w)", "(x)" + "y" * 92 + "(z)(w)"],
    ids=["old-bedrock", "bedrock", "just-over", "at-limit"],
)
def test_the_check_rejects_what_envoy_rejects(pattern: str, tmp_path: Path):
    """Never looser than Envoy: whatever the check accepts, Envoy accepts."""
    problem = envoy_regex_problem(pattern)
    envoy_accepts = _envoy_accepts(pattern, tmp_path)
    assert problem is None or f"> {ENVOY_MAX_REGEX_PROGRAM_SIZE}" in problem
    if problem is None:
        assert envoy_accepts, pattern
    if not envoy_accepts:
        assert problem is not None, pattern


def test_validate_reports_a_regex_envoy_would_reject(tmp_path: Path, capsys):
    text = gateway() + route("r", {"m": "b"}) + backend("b", 9000)
    text = text.replace("type: Exact", "type: RegularExpression").replace(
        "value: m}", f"value: '{OLD_BEDROCK_PATTERN}'}}"
    )
    assert OLD_BEDROCK_PATTERN in text
    (tmp_path / "gw.yaml").write_text(text)
    assert main(["validate", "--config", str(tmp_path)]) == 1
    report = capsys.readouterr().out
    assert "is too complex for Envoy: RE2 program size" in report and "> 100" in report


def test_re2_syntax_python_accepts_is_an_error():
    problem = envoy_regex_problem("(?=lookahead)x")
    assert problem is not None and "RE2 syntax" in problem
