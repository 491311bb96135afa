"""The state shared by every part of compiling one Gateway: the resource set, the status book,
the closure of resources the Gateway is built from, its diagnostics and models, and the helpers
that record a use, look a resource up, or report a problem."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aigw.translator.v1 import config_pb2

from ..diagnostics import Diagnostic, error, warning
from ..keys import ResourceKey
from ..resources import Loaded, ResourceSet
from .status import StatusBook


@dataclass
class CompileContext:
    """The state of compiling one Gateway: what it touched and what went wrong."""

    resources: ResourceSet
    status: StatusBook
    closure: set[ResourceKey] = field(default_factory=set)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    models: dict[str, config_pb2.Model] = field(default_factory=dict)
    # True for validate/translate: an unresolved secret value is a warning and a placeholder.
    placeholder_secrets: bool = False
    seal_secret: bytes = field(default=b"", repr=False)

    def use(self, loaded: Loaded[Any]) -> None:
        self.closure.add(loaded.key)

    def use_grants(self, from_ns: str, to_ns: str) -> None:
        """A cross-namespace reference depends on the ReferenceGrants of the target namespace."""
        if from_ns != to_ns:
            for grant in self.resources.of_kind("ReferenceGrant"):
                if grant.key.namespace == to_ns:
                    self.use(grant)

    def lookup(self, kind: str, namespace: str, name: str) -> Loaded[Any] | None:
        key = ResourceKey(kind, namespace, name)
        self.closure.add(key)
        loaded = self.resources.items.get(key)
        return loaded

    def error(self, message: str, at: Loaded[Any], field_path: str = "") -> None:
        self.diagnostics.append(error(message, at.origin, at.key, field_path))

    def warn(self, message: str, at: Loaded[Any], field_path: str = "") -> None:
        self.diagnostics.append(warning(message, at.origin, at.key, field_path))

    @property
    def failed(self) -> bool:
        return any(d.is_error for d in self.diagnostics) or bool(self.closure & self.resources.bad_keys)
