"""Building blocks shared by every resource model: the pydantic base classes, object metadata and
the reference types of the Gateway API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """A model whose unknown fields are errors: used for the kinds whose schema we own fully, so a
    misspelt field is reported instead of silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Lenient(BaseModel):
    """A model that ignores fields it does not know: used for Gateway API and Envoy Gateway kinds,
    whose full schemas are larger than what aigw-xds uses."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class ObjectMeta(Lenient):
    name: str = Field(min_length=1, max_length=253)
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    creationTimestamp: str | None = None
    generation: int | None = None  # set by the API server (Kubernetes mode): what status is about


class ParentReference(Lenient):
    name: str
    namespace: str | None = None
    group: str = "gateway.networking.k8s.io"
    kind: str = "Gateway"
    sectionName: str | None = None
    port: int | None = None


class LocalObjectReference(Lenient):
    """A reference to an object in the same namespace (Gateway API LocalObjectReference /
    LocalPolicyTargetReference)."""

    name: str
    group: str = ""
    kind: str = ""


class SecretObjectReference(Lenient):
    name: str
    namespace: str | None = None
    group: str = ""
    kind: str = "Secret"
