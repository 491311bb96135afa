"""ResourceKey: a resource's kind, namespace and name, the key of every resource set, diagnostic,
status condition and IR reference."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class ResourceKey:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def ref(self) -> str:
        """ "namespace/name", the form used in Envoy names and logs."""
        return f"{self.namespace}/{self.name}"
