"""The contract (aigw_contract): one CEL cost environment for compile-time validation and the
translator's evaluation, the backend-name format both halves read, and a package that imports
neither half."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aigw.translator.v1 import config_pb2
from aigw_contract.backend_name import BackendName
from aigw_contract.costs import VARIABLES, failing_usage, validate_cost_expression
from aigw_translator.costs import CELError, compute_costs, evaluate_cel
from aigw_translator.usage import TokenUsage
from aigw_xds.compile import compile_resources
from tests.resource_text import backend, gateway, resources, route
from tests.translator.test_costs import USAGE


def _compile_cost(expression: str):
    costs = f'  llmRequestCosts:\n    - {{metadataKey: c, type: CEL, cel: "{expression}"}}\n'
    return compile_resources(resources(gateway() + route("r", {"m": "b"}, extra=costs) + backend("b", 1)))


@pytest.mark.parametrize(
    "expression",
    [
        "(input_tokens + 4u * output_tokens) * (model == 'gpt-4o' ? 10u : 1u)",
        "input_tokens * uint(2) + output_tokens",
        "cached_input_tokens + cache_creation_input_tokens + reasoning_tokens + total_tokens",
        "backend.startsWith('default/') && route_name == 'default/r' ? 1 : 2",
        "input_tokens == uint(3) ? 100000000 : 0",  # Envoy AI Gateway's token_ratelimit example
        # A sum of strings (or lists) keeps CEL's methods (celpy's own sum is a plain Python value).
        "(model + '-' + backend).contains('gpt-4o-default/') && (['a'] + ['b']).size() == 2 ? 1 : 0",
    ],
)
def test_an_expression_valid_at_compile_time_evaluates_in_the_translator(expression: str) -> None:
    result = _compile_cost(expression)
    assert result.errors == []
    [route_costs] = result.gateways["default/gw"].translator.route_costs
    [backend_config] = result.gateways["default/gw"].translator.backends
    out = compute_costs(route_costs.costs, USAGE, "gpt-4o", backend_config.name, route_costs.route_name)
    assert set(out) == {"c"} and type(out["c"]) is int


@pytest.mark.parametrize(
    "expression",
    ["double(input_tokens) * 0.5", "1.5", "true", "model", "input_tokens > 1u"],
)
def test_a_result_that_is_not_an_integer_is_refused_on_both_sides(expression: str) -> None:
    [err] = _compile_cost(expression).errors
    assert err.field == "spec.llmRequestCosts[0].cel" and "integer" in err.message
    with pytest.raises(CELError, match="integer"):
        evaluate_cel(expression, USAGE, "m", "b", "r")
    cost = config_pb2.LLMRequestCost(metadata_key="c", type=config_pb2.LLMRequestCost.CEL, cel=expression)
    assert compute_costs([cost], USAGE, "m", "b", "r") == {}


@pytest.mark.parametrize(
    ("expression", "shape"),
    [
        ("output_tokens - input_tokens", "no output tokens (an embedding)"),
        ("input_tokens - output_tokens", "more output than input tokens"),
        ("input_tokens / output_tokens", "no tokens at all"),
        ("total_tokens % (reasoning_tokens + cached_input_tokens)", "no tokens at all"),
    ],
)
def test_an_expression_that_fails_for_some_responses_is_a_warning_naming_them(expression: str, shape: str) -> None:
    """Valid on the sample (all ones), failing for usage real responses report: such a response
    would be charged nothing for the cost (found by review: a budget on `output_tokens -
    input_tokens` let every request through), so compile says which responses, as a warning (Envoy
    AI Gateway takes the expression too)."""
    compiled = _compile_cost(expression)
    assert not compiled.errors
    [warned] = [d for d in compiled.diagnostics if d.field == "spec.llmRequestCosts[0].cel"]
    assert not warned.is_error and f"on a response with {shape}:" in warned.message, warned.message
    assert failing_usage("input_tokens + 4u * output_tokens") is None


@pytest.mark.parametrize("expression", ["input_tokens +", "unknown_var + 1", "input_tokens * 2.0"])
def test_an_expression_invalid_at_compile_time_fails_in_the_translator(expression: str) -> None:
    assert validate_cost_expression(expression) is not None
    with pytest.raises(CELError):
        evaluate_cel(expression, USAGE, "m", "b", "r")


def test_the_cel_variables_are_the_translators_token_usage_and_names() -> None:
    assert set(VARIABLES) - {"model", "backend", "route_name"} <= set(TokenUsage.__dataclass_fields__)


def test_backend_name_round_trip() -> None:
    name = BackendName("ns", "openai", "chat", 2, 1)
    assert str(name) == "ns/openai/route/chat/rule/2/ref/1"
    assert BackendName.parse(str(name)) == name
    compiled = _compile_cost("1")
    [target] = compiled.gateways["default/gw"].rules[0].backends
    assert BackendName.parse(target.name) == BackendName("default", "b", "r", 0, 0)


@pytest.mark.parametrize(
    "text", ["", "ns/b", "ns/b/route/r/rule/x/ref/0", "ns/b/rule/r/route/0/ref/0", "/b/route/r/rule/0/ref/0"]
)
def test_backend_name_parse_refuses_other_text(text: str) -> None:
    assert BackendName.parse(text) is None


def test_the_contract_imports_neither_half_and_the_translator_not_the_control_plane() -> None:
    code = """
import importlib, pkgutil, sys

def load_all(name):
    package = importlib.import_module(name)
    for info in pkgutil.walk_packages(package.__path__, name + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    return {m.split(".")[0] for m in sys.modules}

assert not load_all("aigw_contract") & {"aigw_xds", "aigw_translator"}
assert "aigw_xds" not in load_all("aigw_translator")
"""
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("input_tokens +", "does not compile: it ends after 'input_tokens +' where a value is expected"),
        ("input_tokens ** 2u", "does not compile: at column 15: unexpected '*' where a value is expected"),
        ("(input_tokens + 1u", "does not compile: it ends after '(input_tokens + 1u' where ')' is expected"),
        ("input_tokens > 3u ? 1u", "does not compile: it ends after 'input_tokens > 3u ? 1u'"),
        ("input_tokens +\n  output_tokens ** 2u", "does not compile: at column 18 of line 2: unexpected '*'"),
        ("input_tokens + 'a", 'does not compile: at column 16: "\'" is not allowed here'),
    ],
)
def test_a_parse_error_says_where_and_what_is_expected(expression: str, problem: str) -> None:
    """From a new-user trial: the error repeated the expression's first line, without where it fails."""
    found = validate_cost_expression(expression)
    assert found is not None and found.startswith(problem), found


def test_a_failure_only_some_usage_causes_is_a_warning_and_an_unknown_variable_is_named() -> None:
    """From a new-user trial: `output_tokens - input_tokens * 2u` was an error ("evaluation failed:
    return error for overflow") because it fails on the one usage validation tried, while
    `output_tokens - input_tokens` was a warning; both fail for some usage only. A misspelt variable
    now says which variables there are."""
    for expression in ("output_tokens - input_tokens * 2u", "10u / (output_tokens - 1u)"):
        assert validate_cost_expression(expression) is None
        failing = failing_usage(expression)
        assert failing is not None and failing.startswith("one token of each kind: "), failing
    problem = validate_cost_expression("output_tokenz + 1u")
    assert problem is not None and problem.startswith("unknown variable 'output_tokenz' (did you mean output_tokens?")


def test_an_expression_failing_on_every_usage_is_an_error_and_a_variable_named_like_a_failure_is_unknown() -> None:
    """Found by review: `1u - 2u` or `input_tokens / 0u` (never charging anything) validated with a
    warning, and a misspelt `overflow_tokens` passed as a failure of some usage."""
    for expression in ("1u - 2u", "input_tokens / 0u"):
        problem = validate_cost_expression(expression)
        assert problem is not None and problem.endswith(
            "on every usage a response can report (it would charge nothing, ever)"
        )
    problem = validate_cost_expression("overflow_tokens * 2u")
    assert problem is not None and problem.startswith("unknown variable 'overflow_tokens'")


def test_cost_expressions_compile_whether_an_mcp_rule_or_a_cost_set_celpy_up_first() -> None:
    """celpy makes one parser per process, with the tree class of the first Environment's runner:
    an MCP rule's interpreter first left every cost expression after it uncompilable (run on the
    slower interpreter, its failures said otherwise: an unknown variable was no longer named). A
    process of its own: the parser is the process's."""
    import subprocess
    import sys

    script = (
        "from aigw_translator.mcp import client_auth\n"
        "client_auth._program('request.mcp.backend == \"a\"')\n"
        "from aigw_contract import costs\n"
        "print(type(costs.compile_cost_expression('10u / (output_tokens - 2u)')).__name__)\n"
        "print(costs.validate_cost_expression('output_tokenz + 1u'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    runner, problem = done.stdout.splitlines()
    assert runner == "CompiledRunner", done.stderr
    assert problem.startswith("unknown variable 'output_tokenz' (did you mean output_tokens?")
