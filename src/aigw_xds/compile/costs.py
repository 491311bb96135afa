"""Request costs: an AIGatewayRoute's llmRequestCosts and a GatewayConfig's globalLLMRequestCosts
-> the translator's LLMRequestCost, with each CEL expression checked in the contract's CEL
environment (the one the translator evaluates it in)."""

from __future__ import annotations

from typing import Any

from aigw.translator.v1 import config_pb2
from aigw_contract.costs import failing_usage, validate_cost_expression

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


# Said of an expression that fails for some responses: they are charged nothing for that cost.
FAILS_FOR = "this CEL expression fails, charging nothing for it, on a response with"


def request_costs(
    ctx: CompileContext, at: Loaded[Any], costs: list[kinds.LLMRequestCost], path: str
) -> list[config_pb2.LLMRequestCost]:
    out = []
    for index, cost in enumerate(costs):
        if cost.type == "CEL":
            problem = validate_cost_expression(cost.cel or "")
            if problem:
                ctx.error(f"invalid CEL expression: {problem}", at, f"{path}[{index}].cel")
                continue
            if (failing := failing_usage(cost.cel or "")) is not None:
                ctx.warn(f"{FAILS_FOR} {failing}", at, f"{path}[{index}].cel")
        out.append(
            config_pb2.LLMRequestCost(metadata_key=cost.metadataKey, type=_COST_TYPES[cost.type], cel=cost.cel or "")
        )
    return out
