"""llmRequestCosts: the numbers written to dynamic metadata for rate limiting and access logs."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import celpy
from celpy import celtypes

from aigw.translator.v1 import config_pb2

from .logs import get_logger
from .usage import TokenUsage

log = get_logger(__name__)

Cost = config_pb2.LLMRequestCost

# The compiled runner evaluates about 3x faster than the interpreter (measured: 120 vs 360 us).
_ENV = celpy.Environment(runner_class=celpy.CompiledRunner)
_FALLBACK_ENV = celpy.Environment()


class CELError(ValueError):
    pass


@lru_cache(maxsize=512)
def compile_cel(expression: str) -> Any:
    """A compiled CEL program; raises CELError for an expression that does not compile."""
    try:
        ast = _ENV.compile(expression)
    except Exception as exc:  # celpy raises several types for parse errors
        raise CELError(f"invalid CEL expression: {exc}") from None
    try:
        return _ENV.program(ast)
    except Exception:
        try:
            return _FALLBACK_ENV.program(ast)
        except Exception as exc:
            raise CELError(f"invalid CEL expression: {exc}") from None


_VARIABLES = (
    "model",
    "backend",
    "route_name",
    "input_tokens",
    "cached_input_tokens",
    "cache_creation_input_tokens",
    "output_tokens",
    "total_tokens",
    "reasoning_tokens",
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@lru_cache(maxsize=512)
def _variables(expression: str) -> tuple[str, ...]:
    found = set(_IDENTIFIER.findall(expression))
    return tuple(v for v in _VARIABLES if v in found)


def evaluate_cel(expression: str, usage: TokenUsage, model: str, backend: str, route_name: str) -> int | float:
    program = compile_cel(expression)
    strings = {"model": model, "backend": backend, "route_name": route_name}
    # Only the variables the expression mentions are built: celtypes values are costly to create.
    activation: dict[str, Any] = {}
    for name in _variables(expression):
        if name in strings:
            activation[name] = celtypes.StringType(strings[name])
        else:
            activation[name] = celtypes.UintType(getattr(usage, name))
    try:
        result = program.evaluate(activation)
    except Exception as exc:
        raise CELError(f"CEL evaluation failed: {exc}") from None
    if isinstance(result, bool | celtypes.BoolType | BaseException):
        raise CELError(f"CEL expression did not return a number: {result!r}")
    if isinstance(result, int):
        return int(result)
    if isinstance(result, float):
        return float(result)
    raise CELError(f"CEL expression did not return a number: {result!r}")


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
