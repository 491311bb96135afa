"""celpy, as every CEL expression of aigw-xds is run with it: its sums keeping CEL's types.

celpy 0.5.0 adds two strings, byte strings or lists as Python does, and the sum is a plain Python
value without CEL's methods: `("," + request.headers["x"] + ",").contains(...)`, Envoy AI Gateway's
own example of an MCPRoute backendSelector, failed to evaluate ("'str' object has no attribute
'contains'"), and so did a cost expression such as `(model + "-x").contains("gpt")`. Both of its
runners (the interpreter, and the compiled runner that turns an expression into Python calling
`operator.add`) add through the values' own `+`, which is where the type is kept.

Its one parser is made here too, for both runners (celpy() says why).
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any


@functools.cache
def celpy() -> ModuleType:
    """The celpy module, imported (about 0.2 s) and set up once."""
    import celpy as module
    from celpy import celtypes

    for kind, base in ((celtypes.StringType, str), (celtypes.BytesType, bytes), (celtypes.ListType, list)):
        _keep_type_on_add(kind, base)
    # celpy has one parser for the process, made by its first Environment with the parse-tree class
    # of that one's runner: made by the interpreter's (an MCP rule's, first), its trees could not be
    # compiled, and every cost expression after it ran on the slower interpreter. The compiled
    # runner's trees serve both.
    module.Environment(runner_class=module.CompiledRunner)
    return module


def _keep_type_on_add(kind: Any, base: Any) -> None:
    def add(self: Any, other: Any) -> Any:
        total = base.__add__(self, other)
        return total if total is NotImplemented else kind(total)

    def added_to(self: Any, other: Any) -> Any:
        if not isinstance(other, base):
            return NotImplemented
        return kind(base.__add__(other, self))

    kind.__add__ = add
    kind.__radd__ = added_to
