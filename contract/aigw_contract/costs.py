"""The CEL environment of llmRequestCosts' CEL expressions: one definition of the variables and
their types, used by the control plane to validate an expression when it compiles the resources and
by the translator to evaluate it after every answer, so an expression cannot validate one way and
evaluate another.

Variables: the token counts of TOKEN_VARIABLES, unsigned (`input_tokens * 4u`; Envoy AI Gateway's
cel-go requires that too), and the strings of STRING_VARIABLES. The result must be an integer (int or
uint): a double, a bool or anything else is an error on both sides.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from .cel_engine import celpy as cel_engine

# Token counts, named as the translator's TokenUsage fields.
TOKEN_VARIABLES = (
    "input_tokens",
    "cached_input_tokens",
    "cache_creation_input_tokens",
    "output_tokens",
    "total_tokens",
    "reasoning_tokens",
)
STRING_VARIABLES = ("model", "backend", "route_name")
VARIABLES = (*STRING_VARIABLES, *TOKEN_VARIABLES)
# What validation evaluates an expression on.
SAMPLE_VALUES: Mapping[str, str | int] = {**dict.fromkeys(STRING_VARIABLES, "x"), **dict.fromkeys(TOKEN_VARIABLES, 1)}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class _Cel:
    """celpy and its environments, set up on the first expression: about 16 MB (its grammar and
    parser) that a process whose configuration has no CEL cost never needs."""

    types: Mapping[str, type]  # every variable's CEL type
    environment: Any
    # The compiled runner evaluates about 3x faster than the interpreter (measured: 120 vs 360 us); an
    # expression it cannot compile runs on the interpreter.
    fallback: Any
    bool_type: type


def prepare() -> None:
    """Set celpy up now (about 0.2 s), not on the first expression: the translator does it when it
    loads a configuration with a CEL cost, so that no answer waits for it."""
    _cel()


@cache
def _cel() -> _Cel:
    celpy = cel_engine()
    from celpy import celtypes

    types: dict[str, type] = dict.fromkeys(STRING_VARIABLES, celtypes.StringType)
    types.update(dict.fromkeys(TOKEN_VARIABLES, celtypes.UintType))
    # The compiled runner logs every failed evaluation before raising it; the failure is raised here
    # as a CostExpressionError and reported once by the caller.
    logging.getLogger("celpy.Transpiler").setLevel(logging.CRITICAL)
    compiled = celpy.Environment(annotations=dict(types), runner_class=celpy.CompiledRunner)
    return _Cel(types, compiled, celpy.Environment(annotations=dict(types)), celtypes.BoolType)


class CostExpressionError(ValueError):
    """A CEL cost expression that does not compile, fails to evaluate or is not an integer."""


@lru_cache(maxsize=512)
def compile_cost_expression(expression: str) -> Any:
    """A compiled CEL program; raises CostExpressionError for an expression that does not compile."""
    cel = _cel()
    try:
        ast = cel.environment.compile(expression)
    except Exception as exc:  # celpy raises several types for parse errors
        raise CostExpressionError(f"does not compile: {_parse_problem(exc, expression)}") from None
    try:
        return cel.environment.program(ast)
    except Exception:
        try:
            return cel.fallback.program(ast)
        except Exception as exc:
            raise CostExpressionError(f"does not compile: {_reason(exc)}") from None


@lru_cache(maxsize=512)
def _variables(expression: str) -> tuple[str, ...]:
    found = set(_IDENTIFIER.findall(expression))
    return tuple(v for v in VARIABLES if v in found)


def evaluate_cost_expression(expression: str, values: Mapping[str, str | int]) -> int:
    """The expression's value on `values` (variable -> Python str or int); raises
    CostExpressionError when it does not compile, fails, or is not an integer."""
    program = compile_cost_expression(expression)
    # Only the variables the expression mentions are built: celtypes values are costly to create.
    types = _cel().types
    activation = {name: types[name](values[name]) for name in _variables(expression)}
    try:
        result = program.evaluate(activation)
    except Exception as exc:
        raise CostExpressionError(f"evaluation failed: {_reason(exc)}") from None
    if isinstance(result, BaseException):
        raise CostExpressionError(f"evaluation failed: {_reason(result)}")
    if isinstance(result, bool | _cel().bool_type) or not isinstance(result, int):
        raise CostExpressionError(f"must evaluate to an integer, got {type(result).__name__}")
    return int(result)


# What an evaluation fails with on some usage only (the usage, not the expression, is the cause):
# failing_usage reports those, as warnings, unless every usage fails so. (A division by zero is said
# one way by the compiled runner, another by the interpreter that runs what it cannot compile.)
_USAGE_FAILURES = (
    "evaluation failed: return error for overflow",
    "evaluation failed: divide by zero",
    "evaluation failed: modulus or divide by zero",
)
_UNKNOWN_VARIABLE = re.compile(r"no such member in mapping: '([^']*)'")


@lru_cache(maxsize=512)
def validate_cost_expression(expression: str) -> str | None:
    """Why a CEL cost expression is unusable (syntax, unknown variables, a non-integer result, a
    failure on every usage a response can report), or None. A failure only some usage causes (a
    subtraction below zero, a division by zero) is not one: failing_usage names it."""
    try:
        evaluate_cost_expression(expression, SAMPLE_VALUES)
    except CostExpressionError as exc:
        text = str(exc)
        unknown = _UNKNOWN_VARIABLE.search(text)
        if unknown is not None:
            close = difflib.get_close_matches(unknown[1], VARIABLES, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            return f"unknown variable {unknown[1]!r} ({hint}the variables are {', '.join(VARIABLES)})"
        if "no such overload" in text:
            return f"{text}: an operation on values of types it does not take (the token counts are uint: 4u, not 4.0)"
        if text not in _USAGE_FAILURES:
            return text
        if all(_fails_on(expression, tokens) for tokens in _USAGE_SHAPES.values()):
            return f"{text} on every usage a response can report (it would charge nothing, ever)"
    return None


# Usage a response can report, besides SAMPLE_VALUES: an expression failing on one of them (a
# subtraction below zero, a division by zero) would charge such a response nothing.
_USAGE_SHAPES: Mapping[str, Mapping[str, int]] = {
    "one token of each kind": {},  # SAMPLE_VALUES themselves
    "no tokens at all": dict.fromkeys(TOKEN_VARIABLES, 0),
    "no output tokens (an embedding)": {**dict.fromkeys(TOKEN_VARIABLES, 0), "input_tokens": 100, "total_tokens": 100},
    "more input than output tokens": {
        **dict.fromkeys(TOKEN_VARIABLES, 0),
        **{"input_tokens": 1000, "cached_input_tokens": 500, "cache_creation_input_tokens": 100},
        **{"output_tokens": 10, "total_tokens": 1010},
    },
    "more output than input tokens": {
        **dict.fromkeys(TOKEN_VARIABLES, 0),
        **{"input_tokens": 10, "output_tokens": 1000, "total_tokens": 1010, "reasoning_tokens": 500},
    },
}


@lru_cache(maxsize=512)
def failing_usage(expression: str) -> str | None:
    """For an expression validate_cost_expression takes: the first usage a response can report on
    which it fails, and why ("more input than output tokens: ..."); None when it evaluates on all."""
    for shape, tokens in _USAGE_SHAPES.items():
        problem = _fails_on(expression, tokens)
        if problem:
            return f"{shape}: {problem}"
    return None


def _fails_on(expression: str, tokens: Mapping[str, int]) -> str:
    """Why the expression fails on SAMPLE_VALUES with `tokens` ("" when it does not)."""
    try:
        evaluate_cost_expression(expression, {**SAMPLE_VALUES, **tokens})
    except CostExpressionError as exc:
        return str(exc)
    return ""


# The closing tokens a parse error may be missing, as the expression would show them.
_CLOSING = {"RPAR": ")", "RSQB": "]", "RBRACE": "}", "COLON": ":", "COMMA": ","}


def _parse_problem(exc: BaseException, expression: str) -> str:
    """Where and why an expression does not parse, on one line ("at column 15: unexpected '*' where
    a value is expected"); celpy's own message is the expression with a caret under the column."""
    cause = exc.__cause__ or exc.__context__
    line, column = getattr(exc, "line", None), getattr(exc, "column", None)
    token: Any = getattr(cause, "token", None)
    character = getattr(cause, "char", None)
    if column is None or (token is None and character is None):
        return _reason(exc)
    where = f"at column {column}" + (f" of line {line}" if "\n" in expression else "")
    if character is not None:
        what = f"{character!r} is not allowed here"
    elif token.type == "$END":
        tail = expression.strip()[-30:]
        where, what = "", f"it ends after {tail!r}"
    else:
        what = f"unexpected {str(token)!r}"
    expected = set(getattr(cause, "expected", None) or getattr(cause, "allowed", None) or ())
    closing = [_CLOSING[name] for name in sorted(expected) if name in _CLOSING]
    if closing and len(closing) == len(expected):
        what += f" where {' or '.join(map(repr, closing))} is expected"
    elif "IDENT" in expected:
        what += " where a value is expected"
    return f"{where}: {what}" if where else what


def _reason(exc: BaseException) -> str:
    """The first line of what went wrong, from inside celpy's nested evaluation errors
    (("evaluation error", type, (message, type, args)))."""
    args: Any = exc.args
    while len(args) == 3 and args[0] == "evaluation error" and isinstance(args[2], tuple) and args[2]:
        args = args[2]
    text = str(args[0]) if args and isinstance(args[0], str) else str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
