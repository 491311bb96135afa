"""The name of one backendRef of one route rule: what the control plane stamps on the endpoint
(contract.BACKEND_NAME_KEY), the translator's Backend is keyed by, and the translator writes back as
contract.BACKEND_NAME_METADATA_KEY (the access log's gen_ai.provider.name):

    <namespace>/<AIServiceBackend>/route/<AIGatewayRoute>/rule/<rule index>/ref/<backendRef index>

Kubernetes names hold no "/", so the name parses back unambiguously.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendName:
    namespace: str
    service_backend: str
    route: str
    rule: int
    ref: int

    def __str__(self) -> str:
        return f"{self.namespace}/{self.service_backend}/route/{self.route}/rule/{self.rule}/ref/{self.ref}"

    @classmethod
    def parse(cls, text: str) -> BackendName | None:
        """The parts of a backend name; None for anything not in the format."""
        parts = text.split("/")
        if len(parts) != 8 or (parts[2], parts[4], parts[6]) != ("route", "rule", "ref"):
            return None
        if not all(parts[i] for i in (0, 1, 3)) or not (parts[5].isdigit() and parts[7].isdigit()):
            return None
        return cls(parts[0], parts[1], parts[3], int(parts[5]), int(parts[7]))
