"""The state shared by every part of compiling one Gateway: the resource set, the status book,
the closure of resources the Gateway is built from, its diagnostics and models, and the helpers
that record a use, look a resource up, or report a problem."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aigw.translator.v1 import config_pb2
from aigw_translator.config_parts import merge_model

from ..diagnostics import Diagnostic, error, warning
from ..keys import ResourceKey
from ..resources import Loaded, ResourceView, found_key
from .references import absent, grant_allows
from .status import StatusBook

if TYPE_CHECKING:
    from .incremental import CompileMemo


@dataclass(frozen=True)
class IssuerMetadata:
    """What the control plane learnt from an OAuth issuer's metadata (RFC 8414, OpenID Connect
    discovery), for an MCPRoute that names no jwks: its jwks_uri, or why it is not known (the
    control plane fetches it again later). Compiling reads no network: it is given these."""

    jwks_uri: str = ""
    problem: str = ""


@dataclass
class CompileContext:
    """The state of compiling one Gateway: what it touched and what went wrong."""

    resources: ResourceView
    status: StatusBook
    closure: set[ResourceKey] = field(default_factory=set)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    models: dict[str, config_pb2.Model] = field(default_factory=dict)
    # True for validate/translate: an unresolved secret value is a warning and a placeholder.
    placeholder_secrets: bool = False
    seal_secret: bytes = field(default=b"", repr=False)
    # Route units kept from earlier compiles (incremental.py); None: compile everything.
    memo: CompileMemo | None = None
    # What parts of this Gateway's compile share (incremental.shared): computed once per compile.
    shared: dict[Hashable, Any] = field(default_factory=dict, repr=False)
    # The metadata of the OAuth issuers MCPRoutes name without jwks, by issuer URL (absent: not
    # fetched yet).
    issuers: Mapping[str, IssuerMetadata] = field(default_factory=dict)

    def use(self, loaded: Loaded[Any]) -> None:
        self.closure.add(loaded.key)

    def reference_allowed(
        self,
        source: Loaded[Any],
        source_group: str,
        target_group: str,
        target_kind: str,
        namespace: str,
        name: str,
        source_kind: str = "",
    ) -> bool:
        """True when `source` may reference the target: same namespace, or a ReferenceGrant in the
        target's namespace allows it (from `source_group` and `source_kind`, by default the source's
        own kind). An allowed cross-namespace reference makes the Gateway depend on the
        ReferenceGrants of that namespace."""
        if namespace == source.key.namespace:
            return True
        allowed = grant_allows(
            self.resources,
            from_group=source_group,
            from_kind=source_kind or source.key.kind,
            from_namespace=source.key.namespace,
            to_group=target_group,
            to_kind=target_kind,
            to_namespace=namespace,
            to_name=name,
        )
        if allowed:
            for grant in self.resources.of_kind("ReferenceGrant"):
                if grant.key.namespace == namespace:
                    self.use(grant)
        return allowed

    def merge_model(self, model: config_pb2.Model) -> None:
        merge_model(self.models, model)

    def lookup(self, kind: str, namespace: str, name: str) -> Loaded[Any] | None:
        loaded = self.resources.get(kind, namespace, name)
        self.closure.add(found_key(loaded, kind, namespace, name))
        return loaded

    def absent(self, kind: str, namespace: str, name: str) -> str:
        """references.absent: what a lookup that found nothing found."""
        return absent(self.resources, kind, namespace, name)

    def error(self, message: str, at: Loaded[Any], field_path: str = "") -> None:
        self.diagnostics.append(error(message, at.origin, at.key, field_path))

    def warn(self, message: str, at: Loaded[Any], field_path: str = "") -> None:
        self.diagnostics.append(warning(message, at.origin, at.key, field_path))
