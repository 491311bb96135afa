"""llmRequestCosts: the numbers written to dynamic metadata for rate limiting and access logs."""

from __future__ import annotations

from collections.abc import Iterable

from aigw.translator.v1 import config_pb2
from aigw_contract.costs import TOKEN_VARIABLES, CostExpressionError, evaluate_cost_expression

from .logs import get_logger
from .usage import TokenUsage

log = get_logger(__name__)

Cost = config_pb2.LLMRequestCost
# The contract's error, under the name the translator's callers know.
CELError = CostExpressionError


def evaluate_cel(expression: str, usage: TokenUsage, model: str, backend: str, route_name: str) -> int:
    """A CEL cost expression on one answer's usage, in the contract's environment (the one the
    control plane validated it in)."""
    values: dict[str, str | int] = {"model": model, "backend": backend, "route_name": route_name}
    values.update((name, getattr(usage, name)) for name in TOKEN_VARIABLES)
    return evaluate_cost_expression(expression, values)


_BY_TYPE = {
    Cost.INPUT_TOKEN: "input_tokens",
    Cost.OUTPUT_TOKEN: "output_tokens",
    Cost.TOTAL_TOKEN: "total_tokens",
    Cost.CACHED_INPUT_TOKEN: "cached_input_tokens",
    Cost.CACHE_CREATION_INPUT_TOKEN: "cache_creation_input_tokens",
    Cost.REASONING_TOKEN: "reasoning_tokens",
}


def compute_costs(
    costs: Iterable[Cost], usage: TokenUsage, model: str, backend: str, route_name: str
) -> dict[str, int | float]:
    """metadata_key -> value for each configured cost. Nothing when no usage was reported; a cost
    whose CEL fails is left out (and logged) rather than failing the request."""
    if not usage.reported:
        return {}
    out: dict[str, int | float] = {}
    for cost in costs:
        if not cost.metadata_key:
            continue
        attr = _BY_TYPE.get(cost.type)
        if attr is not None:
            out[cost.metadata_key] = getattr(usage, attr)
        elif cost.type == Cost.CEL:
            try:
                out[cost.metadata_key] = evaluate_cel(cost.cel, usage, model, backend, route_name)
            except CELError as exc:
                log.warning("cost_cel_failed", metadata_key=cost.metadata_key, error=str(exc))
    return out
