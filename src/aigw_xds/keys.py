"""ResourceKey: a resource's kind, namespace and name, the key of every resource set, diagnostic,
status condition and IR reference."""

from __future__ import annotations

from typing import NamedTuple


class ResourceKey(NamedTuple):
    """A tuple underneath: hashed and compared in C (an incremental compile looks keys up by the
    hundred thousand)."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def ref(self) -> str:
        """ "namespace/name", the form used in Envoy names and logs."""
        return f"{self.namespace}/{self.name}"
