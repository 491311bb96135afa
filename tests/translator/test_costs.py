from __future__ import annotations

import pytest

from aigw.translator.v1 import config_pb2
from aigw_translator.config import RuntimeConfig
from aigw_translator.costs import CELError, compute_costs, evaluate_cel
from aigw_translator.usage import TokenUsage, from_openai

C = config_pb2.LLMRequestCost
USAGE = TokenUsage(
    input_tokens=100,
    cached_input_tokens=30,
    cache_creation_input_tokens=20,
    output_tokens=50,
    reasoning_tokens=10,
    total_tokens=150,
    known=True,
)


@pytest.mark.parametrize(
    ("cost_type", "expected"),
    [
        (C.INPUT_TOKEN, 100),
        (C.OUTPUT_TOKEN, 50),
        (C.TOTAL_TOKEN, 150),
        (C.CACHED_INPUT_TOKEN, 30),
        (C.CACHE_CREATION_INPUT_TOKEN, 20),
        (C.REASONING_TOKEN, 10),
    ],
)
def test_token_types(cost_type: int, expected: int) -> None:
    assert compute_costs([C(metadata_key="k", type=cost_type)], USAGE, "m", "b", "r") == {"k": expected}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("input_tokens + output_tokens * 2", 200),
        ("model == 'gpt' ? total_tokens : uint(0)", 150),
        ("backend == 'ns/b' ? 1 : 2", 1),
        ("route_name.startsWith('ns/') ? cached_input_tokens : 0", 30),
        ("cache_creation_input_tokens + reasoning_tokens", 30),
    ],
)
def test_cel(expr: str, expected: int) -> None:
    assert evaluate_cel(expr, USAGE, "gpt", "ns/b", "ns/route") == expected


# A double is not a cost (the control plane rejects it too: the contract's CEL environment).
@pytest.mark.parametrize("expr", ["input_tokens +", "model", "true", "unknown_var + 1", "double(input_tokens) * 0.5"])
def test_cel_errors(expr: str) -> None:
    with pytest.raises(CELError):
        evaluate_cel(expr, USAGE, "gpt", "b", "r")


def test_failing_cel_is_left_out_and_unknown_usage_gives_nothing() -> None:
    costs = [C(metadata_key="bad", type=C.CEL, cel="model + 1"), C(metadata_key="t", type=C.TOTAL_TOKEN)]
    assert compute_costs(costs, USAGE, "m", "b", "r") == {"t": 150}
    assert compute_costs(costs, TokenUsage(), "m", "b", "r") == {}


def test_route_costs_override_global_costs_of_same_key() -> None:
    cfg = config_pb2.TranslatorConfig()
    cfg.global_costs.add(metadata_key="total", type=C.TOTAL_TOKEN)
    cfg.global_costs.add(metadata_key="in", type=C.INPUT_TOKEN)
    rc = cfg.route_costs.add(route_name="ns/r")
    rc.costs.add(metadata_key="total", type=C.OUTPUT_TOKEN)
    runtime = RuntimeConfig.build(cfg)
    assert compute_costs(runtime.costs_for_route("ns/r"), USAGE, "m", "b", "ns/r") == {"total": 50, "in": 100}
    assert compute_costs(runtime.costs_for_route("other"), USAGE, "m", "b", "other") == {"total": 150, "in": 100}


def test_negative_usage_from_a_provider_costs_nothing_and_raises_nothing() -> None:
    usage = from_openai({"prompt_tokens": -10, "completion_tokens": 2})
    costs = [config_pb2.LLMRequestCost(metadata_key="c", type=config_pb2.LLMRequestCost.CEL, cel="input_tokens + 1")]
    assert compute_costs(costs, usage, "m", "b", "r") == {"c": 1}


def test_celpy_is_set_up_when_a_configuration_with_a_cel_cost_is_loaded() -> None:
    """Not by the first answer with a CEL cost: setting celpy up takes about 0.2 s, on the event
    loop, every stream of the process waiting. A configuration without one does not set it up."""
    from aigw_contract import costs

    Cost = config_pb2.LLMRequestCost
    costs._cel.cache_clear()
    RuntimeConfig.build(config_pb2.TranslatorConfig(global_costs=[Cost(metadata_key="i", type=Cost.INPUT_TOKEN)]))
    assert costs._cel.cache_info().currsize == 0
    route = config_pb2.RouteCosts(
        route_name="r", costs=[Cost(metadata_key="w", type=Cost.CEL, cel="output_tokens * 3u")]
    )
    RuntimeConfig.build(config_pb2.TranslatorConfig(route_costs=[route]))
    assert costs._cel.cache_info().currsize == 1
