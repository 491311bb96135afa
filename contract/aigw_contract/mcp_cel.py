"""The CEL of an MCPRoute's authorization and backendSelector rules, as the control plane checks it
and the MCP proxy runs it: on one variable, `request`, whose fields are REQUEST_FIELDS.

`problem(expression)` says why an expression cannot be a rule's (the compile refuses it): it does
not parse; it names another variable (a typo would fail at every call, and a Deny rule never
match), a field `request` does not have, or a function CEL does not; it constructs an object or
names a leading-dot one; a name begins with "_" (celpy runs expressions as Python: none of its
internals); or a macro's expression reads `request` beyond request.mcp's backend, tool or method
(each of its steps would walk the request again: the cost would grow as the square of the
arguments), which keeps a rule's cost linear in the request's size.

`unset_at_selection(expression)` says what of request.mcp's method, tool or params a
backendSelector rule reads, which a session's start does not have (empty: a warning).

`reads_params(tree)` says whether an expression may read the tool call's arguments
(`request.mcp.params`), which the proxy converts for CEL only then: never false for one that does.
"""

from __future__ import annotations

import difflib
from typing import Any

from .cel_engine import celpy as cel_engine

VARIABLE = "request"
# The fields of `request`, by the path to them (below headers, claims and params: the request's own).
REQUEST_FIELDS: dict[tuple[str, ...], frozenset[str]] = {
    (): frozenset({"method", "host", "path", "headers", "headers_all", "auth", "mcp"}),
    ("auth",): frozenset({"jwt"}),
    ("auth", "jwt"): frozenset({"claims", "scopes"}),
    ("mcp",): frozenset({"method", "backend", "tool", "params"}),
}
# The macros that bind a variable (their first argument) in their expression.
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
# What request.mcp may be followed by without reading the arguments.
_NOT_PARAMS = frozenset({"method", "backend", "tool"})
# What of request.mcp a session's start does not have when its backends are selected.
_UNSET_AT_SELECTION = frozenset({"method", "tool", "params"})


def parse(expression: str) -> Any:
    """The expression's parse tree (celpy's); celpy.CELParseError when it does not parse."""
    return cel_engine().Environment().compile(expression)  # (celpy is slow to import: only for a rule with CEL)


def problem(expression: str) -> str | None:
    """Why `expression` cannot be an authorization rule's CEL, or None."""
    celpy = cel_engine()
    from celpy import evaluation

    try:
        tree = parse(expression)
    except celpy.CELParseError as exc:
        where = f" at line {exc.line}, column {exc.column}" if exc.line is not None else ""
        return f"it does not parse{where}"
    functions = {name for name in evaluation.base_functions if name.isidentifier()} | MACROS | {"has"}
    for node in tree.iter_subtrees():
        if node.data in ("member_object", "dot_ident", "dot_ident_arg"):
            return "it constructs an object or names a leading-dot one, which a rule cannot"
        name = _name_of(node)
        if name.startswith("_"):
            return f"it names {name!r}: no name of a rule's CEL begins with _"
        if node.data in ("member_dot_arg", "ident_arg") and name not in functions:
            return f"it calls {name}, not a CEL function{_close(name, functions)}"
        body = node.children[2] if _is_macro(node) else None
        if body is not None and VARIABLE in _free_names(body, frozenset()) and _walks_request(body):
            return (
                f"a macro's expression ({name}) reads {VARIABLE}: give it the loop variable, literals and "
                f"{VARIABLE}.mcp's backend, tool or method only"
            )
        chain = _chain(node) if node.data == "member_dot" else None
        if chain and chain[0] == VARIABLE and (wrong := _unknown_field(chain)) is not None:
            return wrong
    unknown = [name for name in dict.fromkeys(_free_names(tree, frozenset())) if name != VARIABLE]
    if unknown:
        return f"it names {unknown[0]!r}, not a variable of the rule's: {VARIABLE}{_close(unknown[0], [VARIABLE])}"
    return None


def unset_at_selection(expression: str) -> str | None:
    """What of request.mcp an expression reads that is empty when backends are selected (a
    session's start, before any call: request.mcp.backend alone is set): "request.mcp.tool", or
    None. For one that parses (problem() says so)."""
    for node in parse(expression).iter_subtrees():
        chain = _chain(node) if node.data == "member_dot" else None
        if chain and chain[:2] == [VARIABLE, "mcp"] and len(chain) > 2 and chain[2] in _UNSET_AT_SELECTION:
            return ".".join(chain[:3])
    return None


def reads_params(tree: Any) -> bool:
    """Whether the expression may read request.mcp.params: it names `request` other than as a
    chain of fields that ends clear of it (request.headers..., request.mcp.tool, ...)."""
    chain = _chain(tree)
    if chain is not None and chain[0] == VARIABLE:
        return len(chain) < 2 or (chain[1] == "mcp" and (len(chain) < 3 or chain[2] not in _NOT_PARAMS))
    return any(reads_params(child) for child in tree.children if hasattr(child, "data"))


def _walks_request(node: Any) -> bool:
    """Whether an expression reads `request` other than as one of its short strings
    (request.mcp.backend, .tool, .method: a macro's step reads one at no cost)."""
    chain = _chain(node)
    if chain is not None and chain[0] == VARIABLE:
        return not (len(chain) == 3 and chain[1] == "mcp" and chain[2] in _NOT_PARAMS)
    return any(_walks_request(child) for child in node.children if hasattr(child, "data"))


def _name_of(node: Any) -> str:
    """The name a node names (an identifier, a field, a function), or ""."""
    if node.data in ("ident", "ident_arg", "dot_ident", "dot_ident_arg"):
        return str(node.children[0])
    if node.data in ("member_dot", "member_dot_arg"):
        return str(node.children[1])
    return ""


def _chain(node: Any) -> list[str] | None:
    """The names of a chain of field selections from an identifier (request.mcp.tool), or None."""
    if node.data == "ident":
        return [str(node.children[0])]
    if node.data == "member_dot":
        inner = _chain(node.children[0])
        return [*inner, str(node.children[1])] if inner is not None else None
    children = [child for child in node.children if hasattr(child, "data")]
    if len(children) == 1 and len(node.children) == 1:  # a node that only wraps another (member, primary, ...)
        return _chain(children[0])
    return None


def _unknown_field(chain: list[str]) -> str | None:
    for depth in range(1, len(chain)):
        fields = REQUEST_FIELDS.get(tuple(chain[1:depth]))
        if fields is None:  # below headers, claims, params: the request's own
            return None
        if chain[depth] not in fields:
            path = ".".join(chain[:depth])
            return f"{path} has no field {chain[depth]!r} ({', '.join(sorted(fields))}){_close(chain[depth], fields)}"
    return None


def _is_macro(node: Any) -> bool:
    return bool(node.data == "member_dot_arg" and len(node.children) == 3 and str(node.children[1]) in MACROS)


def _free_names(node: Any, bound: frozenset[str]) -> list[str]:
    """The identifiers a parse tree reads that no macro around them binds, in order."""
    if node.data == "ident":
        name = str(node.children[0])
        return [] if name in bound else [name]
    children = [child for child in node.children if hasattr(child, "data")]
    if _is_macro(node) and len(children) == 2:
        target, arguments = children
        variable = arguments.children[0] if arguments.children else None
        names = list(variable.scan_values(lambda _: True)) if variable is not None else []
        inner = bound | {str(names[0])} if len(names) == 1 else bound
        return _free_names(target, bound) + [n for a in arguments.children[1:] for n in _free_names(a, inner)]
    return [name for child in children for name in _free_names(child, bound)]


def _close(name: str, known: Any) -> str:
    match = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {match[0]}?)" if match else ""
