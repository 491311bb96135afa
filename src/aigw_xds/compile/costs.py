"""Request costs: an AIGatewayRoute's llmRequestCosts and a GatewayConfig's globalLLMRequestCosts
-> the translator's LLMRequestCost, with each CEL expression checked on sample values."""

from __future__ import annotations

from aigw.translator.v1 import config_pb2

from ..api import kinds
from ..resources import Loaded
from .context import CompileContext

_COST_TYPES = {
    "InputToken": config_pb2.LLMRequestCost.INPUT_TOKEN,
    "OutputToken": config_pb2.LLMRequestCost.OUTPUT_TOKEN,
    "TotalToken": config_pb2.LLMRequestCost.TOTAL_TOKEN,
    "CachedInputToken": config_pb2.LLMRequestCost.CACHED_INPUT_TOKEN,
    "CacheCreationInputToken": config_pb2.LLMRequestCost.CACHE_CREATION_INPUT_TOKEN,
    "ReasoningToken": config_pb2.LLMRequestCost.REASONING_TOKEN,
    "CEL": config_pb2.LLMRequestCost.CEL,
}


def request_costs(
    ctx: CompileContext, at: Loaded, costs: list[kinds.LLMRequestCost], path: str
) -> list[config_pb2.LLMRequestCost]:
    out = []
    for index, cost in enumerate(costs):
        if cost.type == "CEL":
            problem = _cel_problem(cost.cel or "")
            if problem:
                ctx.error(f"invalid CEL expression: {problem}", at, f"{path}[{index}].cel")
                continue
        out.append(
            config_pb2.LLMRequestCost(metadata_key=cost.metadataKey, type=_COST_TYPES[cost.type], cel=cost.cel or "")
        )
    return out


def _cel_problem(expression: str) -> str | None:
    """Why a CEL cost expression is unusable (syntax or unknown variables), or None."""
    import celpy

    env = celpy.Environment()
    try:
        ast = env.compile(expression)
        program = env.program(ast)
        sample = {
            "model": celpy.celtypes.StringType("m"),
            "backend": celpy.celtypes.StringType("b"),
            "route_name": celpy.celtypes.StringType("r"),
        }
        for var in (
            "input_tokens",
            "cached_input_tokens",
            "cache_creation_input_tokens",
            "output_tokens",
            "total_tokens",
            "reasoning_tokens",
        ):
            sample[var] = celpy.celtypes.UintType(1)
        result = program.evaluate(sample)
    except Exception as exc:  # celpy raises many exception types for bad expressions
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(result, Exception):
        return str(result)
    if not isinstance(result, int) or isinstance(result, bool):
        return f"must evaluate to an integer, got {type(result).__name__}"
    return None
