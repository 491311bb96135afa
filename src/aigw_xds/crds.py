"""CustomResourceDefinitions of the aigateway.envoyproxy.io kinds, generated from the pydantic models
(pure: models in, CRD dicts out; `aigw-xds crds` prints them).

Names, plurals, short names and scope are Envoy AI Gateway's, so objects written for it apply
unchanged and `kubectl get aigatewayroutes` answers the same. Each served version gets the model's
schema as a structural OpenAPI v3 schema (what the API server requires of a CRD):

- every `$ref` inlined (a CRD schema cannot refer to anything);
- `X | None` is the plain X: an optional field is one that may be left out (the API server drops a
  null it was sent for a field that is not nullable); `nullable: true` only where the model requires
  the field and takes null;
- `str | int` is `x-kubernetes-int-or-string: true`; a field of any JSON (`Any`, `dict[Any, Any]`) is
  `x-kubernetes-preserve-unknown-fields: true`;
- no `additionalProperties: false`: the API server prunes unknown fields instead (and `kubectl apply`
  refuses them: server-side field validation is strict by default). A Lenient model (which ignores
  fields it does not know because it reads only part of a larger foreign type, e.g. Envoy Gateway's
  OIDC) keeps what it does not know (`x-kubernetes-preserve-unknown-fields: true`), so an object
  written for Envoy AI Gateway is stored whole; the Gateway API references it uses are modelled
  completely and are pruned like every strict model;
- enums, bounds, lengths and item counts are kept; defaults are not (the models apply their defaults
  when they read an object: the API server storing them would only change what the user wrote);
  descriptions come from docstrings and field descriptions.

The two versions Envoy AI Gateway serves (v1beta1, the storage version, and the deprecated v1alpha1)
get the same schema: our models read both (a v1alpha1-only field such as AIGatewayRoute's
`targetRefs` is part of the model), and without a conversion webhook the API server stores an object
as written whatever version it was sent in.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from .api import base, registry
from .sources import kube_kinds

GROUP = kube_kinds.AI_GATEWAY

# Envoy AI Gateway's short names (its CRDs declare no categories).
SHORT_NAMES: dict[str, tuple[str, ...]] = {"GatewayConfig": ("gwconfig",)}

# Lenient models that are complete copies of a Gateway API type: unknown fields are pruned, as for
# Envoy AI Gateway's CRDs (which embed the same types), not kept.
_COMPLETE_LENIENT = frozenset(
    m.__name__ for m in (base.ParentReference, base.LocalObjectReference, base.SecretObjectReference)
)

# Keywords of a pydantic JSON schema this module carries over to OpenAPI v3 as they are.
_KEPT = ("type", "format", "description", "enum", "pattern")
_BOUNDS = ("minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems")
# Keywords it drops on purpose (see the module docstring); any other keyword is an error, so a
# constraint a model gains is never lost silently.
_DROPPED = ("title", "default")

_CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)


@dataclass(frozen=True)
class CRDKind:
    """One aigateway.envoyproxy.io kind as a CRD: its table row, model and served versions."""

    kube: kube_kinds.KubeKind
    model: type[BaseModel]
    versions: tuple[str, ...]  # served; the storage version (kube.version) among them

    @property
    def name(self) -> str:
        return f"{self.kube.plural}.{GROUP}"


def crd_kinds() -> tuple[CRDKind, ...]:
    """Every aigateway.envoyproxy.io kind we read (kube_kinds.WATCHED), with the versions and model
    api/registry gives it, in the table's order."""
    out = []
    for kube in kube_kinds.WATCHED:
        if kube.group != GROUP:
            continue
        api_versions, model = registry.MODELS[kube.kind]
        versions = tuple(v.removeprefix(f"{GROUP}/") for v in api_versions if v.startswith(f"{GROUP}/"))
        if kube.version not in versions:
            raise ValueError(f"{kube.kind}: storage version {kube.version} is not one the model reads {versions}")
        out.append(CRDKind(kube, model, versions))
    return tuple(out)


def crds() -> list[dict[str, Any]]:
    """The CustomResourceDefinitions (apiextensions.k8s.io/v1), sorted by name."""
    return sorted((crd(kind) for kind in crd_kinds()), key=lambda c: str(c["metadata"]["name"]))


def crd(kind: CRDKind) -> dict[str, Any]:
    kube = kind.kube
    schema = object_schema(kind.model)
    versions = []
    for version in sorted(kind.versions, key=_version_priority, reverse=True):
        entry: dict[str, Any] = {
            "name": version,
            "served": True,
            "storage": version == kube.version,
        }
        if version != kube.version:
            entry["deprecated"] = True
            entry["deprecationWarning"] = f"{GROUP}/{version} {kube.kind} is deprecated; use {kube.api_version}"
        entry["schema"] = {"openAPIV3Schema": copy.deepcopy(schema)}
        entry["subresources"] = {"status": {}}
        entry["additionalPrinterColumns"] = _printer_columns()
        versions.append(entry)
    names: dict[str, Any] = {
        "kind": kube.kind,
        "listKind": f"{kube.kind}List",
        "plural": kube.plural,
        "singular": kube.kind.lower(),
    }
    if kube.kind in SHORT_NAMES:
        names["shortNames"] = list(SHORT_NAMES[kube.kind])
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.name, "labels": {"app.kubernetes.io/part-of": "aigw-xds"}},
        "spec": {
            "group": GROUP,
            "names": names,
            "scope": "Namespaced" if kube.namespaced else "Cluster",
            "versions": versions,
        },
    }


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' version priority: GA over beta over alpha, then the higher numbers."""
    major, _, rest = version.removeprefix("v").partition("alpha" if "alpha" in version else "beta")
    stability = 0 if "alpha" in version else 1 if "beta" in version else 2
    return (stability, int(major), int(rest or 0))


def _printer_columns() -> list[dict[str, Any]]:
    return [
        {
            "name": "Status",
            "type": "string",
            "description": "Reason of the Accepted condition (Accepted, or why not)",
            "jsonPath": '.status.conditions[?(@.type=="Accepted")].reason',
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def object_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The openAPIV3Schema of a kind's objects: the model's spec and the rest, metadata left to the
    API server, and the status we write."""
    generated = model.model_json_schema(by_alias=True)
    defs = generated.pop("$defs", {})
    converted = _Converter(defs).node(generated, required=True)
    properties = converted["properties"]
    unexpected = set(properties) - {"apiVersion", "kind", "metadata", "spec", "status"}
    if unexpected:
        raise ValueError(f"{model.__name__}: top-level fields a CRD cannot hold: {sorted(unexpected)}")
    out: dict[str, Any] = {"type": "object"}
    if "description" in converted:
        out["description"] = converted["description"]
    out["properties"] = {
        "apiVersion": {"type": "string", "description": "The versioned schema of this object."},
        "kind": {"type": "string", "description": "The REST resource this object represents."},
        "metadata": {"type": "object"},
        "spec": properties["spec"],
        "status": status_schema(model.__name__),
    }
    if "spec" in converted.get("required", ()):
        out["required"] = ["spec"]
    return out


def status_schema(kind: str) -> dict[str, Any]:
    """status.conditions as metav1.Condition, one per type."""
    condition = {
        "type": "object",
        "description": "One aspect of the object's state (metav1.Condition).",
        "properties": {
            "type": {"type": "string", "maxLength": 316, "pattern": _CONDITION_TYPE_PATTERN},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {
                "type": "string",
                "minLength": 1,
                "maxLength": 1024,
                "pattern": r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
            },
            "message": {"type": "string", "maxLength": 32768},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
        },
        "required": ["type", "status", "reason", "message", "lastTransitionTime"],
    }
    return {
        "type": "object",
        "description": f"What aigw-xds observed of this {kind}; written by the leader replica only.",
        "properties": {
            "conditions": {
                "type": "array",
                "description": "Accepted (and ResolvedRefs), with the message `aigw-xds validate` prints.",
                "maxItems": 8,
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            }
        },
    }


class _Converter:
    """pydantic's JSON schema (draft 2020-12, with $defs) -> a structural OpenAPI v3 schema."""

    def __init__(self, defs: dict[str, Any]) -> None:
        self._defs = defs

    def node(self, node: dict[str, Any], *, required: bool, where: str = "") -> dict[str, Any]:
        node = self._resolved(node)
        if "anyOf" in node:
            return self._union(node, required=required, where=where)
        unknown = (
            set(node)
            - set(_KEPT)
            - set(_BOUNDS)
            - set(_DROPPED)
            - {
                "properties",
                "required",
                "additionalProperties",
                "items",
                "const",
                "exclusiveMinimum",
                "exclusiveMaximum",
                "__model__",
            }
        )
        if unknown:
            raise ValueError(f"{where or '(root)'}: JSON schema keywords with no CRD conversion: {sorted(unknown)}")
        out: dict[str, Any] = {k: node[k] for k in _KEPT if k in node}
        if "description" in out:
            out["description"] = _prose(out["description"])
        if "const" in node:
            out["enum"] = [node["const"]]
            out.setdefault("type", _json_type(node["const"]))
        out.update({k: node[k] for k in _BOUNDS if k in node})
        self._exclusive_bounds(node, out)
        kind = out.get("type")
        if kind == "object" or "properties" in node:
            self._object(node, out, where)
        elif kind == "array":
            out["items"] = self.node(node.get("items", {}), required=True, where=f"{where}[]")
        elif "type" not in out and not node.get("enum"):
            # Any: whatever JSON the user writes is kept.
            return {**out, "x-kubernetes-preserve-unknown-fields": True}
        return out

    def _resolved(self, node: dict[str, Any]) -> dict[str, Any]:
        """node with its $ref replaced by the definition (the node's own keywords, such as a field's
        description, win)."""
        if "$ref" not in node:
            return node
        name = node["$ref"].rsplit("/", 1)[-1]
        target = dict(self._resolved(self._defs[name]))
        target["__model__"] = name
        target.update({k: v for k, v in node.items() if k != "$ref"})
        return target

    def _union(self, node: dict[str, Any], *, required: bool, where: str) -> dict[str, Any]:
        variants = [self._resolved(v) for v in node["anyOf"]]
        takes_null = any(v.get("type") == "null" for v in variants)
        variants = [v for v in variants if v.get("type") != "null"]
        outer = {k: v for k, v in node.items() if k not in ("anyOf", *_DROPPED)}
        types = sorted(str(v.get("type")) for v in variants)
        if len(variants) == 1:
            out = self.node({**variants[0], **outer}, required=required, where=where)
        elif types == ["integer", "string"]:
            out = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
            if "description" in outer:
                out["description"] = _prose(outer["description"])
        else:
            raise ValueError(f"{where}: a union of {types} has no structural schema")
        if takes_null and required:
            out["nullable"] = True
        return out

    def _object(self, node: dict[str, Any], out: dict[str, Any], where: str) -> None:
        out["type"] = "object"
        properties = node.get("properties")
        extra = node.get("additionalProperties")
        if properties:
            wanted = set(node.get("required", ()))
            out["properties"] = {
                name: self.node(value, required=name in wanted, where=f"{where}.{name}".lstrip("."))
                for name, value in properties.items()
            }
            if wanted:
                out["required"] = [name for name in properties if name in wanted]
            lenient = extra is None and node.get("__model__") not in _COMPLETE_LENIENT
            if lenient and "__model__" in node:
                out["x-kubernetes-preserve-unknown-fields"] = True
        elif isinstance(extra, dict) and extra:
            out["additionalProperties"] = self.node(extra, required=True, where=f"{where}.*")
        else:  # a dict of anything
            out["x-kubernetes-preserve-unknown-fields"] = True

    @staticmethod
    def _exclusive_bounds(node: dict[str, Any], out: dict[str, Any]) -> None:
        """JSON schema's numeric exclusiveMinimum/-Maximum -> OpenAPI v3's inclusive bound (integers)
        or bound plus boolean flag (numbers)."""
        for exclusive, bound, step in (("exclusiveMinimum", "minimum", 1), ("exclusiveMaximum", "maximum", -1)):
            if exclusive not in node:
                continue
            if node.get("type") == "integer":
                out[bound] = node[exclusive] + step
            else:
                out[bound] = node[exclusive]
                out[exclusive] = True


def _prose(text: str) -> str:
    """A docstring's paragraphs, each on one line (the source's line breaks are only wrapping)."""
    paragraphs = (" ".join(p.split()) for p in text.strip().split("\n\n"))
    return "\n\n".join(p for p in paragraphs if p)


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    raise ValueError(f"no OpenAPI type for the constant {value!r}")


def dump(documents: Iterable[dict[str, Any]], output: str = "yaml") -> str:
    """Multi-document YAML (or, in JSON, a v1 List of them: what `kubectl apply -f -` takes) of the
    CRDs, stable byte for byte."""
    import json

    docs = list(documents)
    if output == "json":
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}, indent=2) + "\n"
    import yaml

    return "".join("---\n" + yaml.safe_dump(doc, sort_keys=False, width=120) for doc in docs)
