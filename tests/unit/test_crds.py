"""The CRDs `aigw-xds crds` prints: Envoy AI Gateway's names, structural schemas (checked here by the
rules the API server applies to a CRD, written from the Kubernetes documentation, independent of
aigw_xds.crds), and every aigateway.envoyproxy.io object of Envoy AI Gateway's published examples
valid against the schema of its apiVersion."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs installed (types-jsonschema)
import pytest
import re2
import yaml

from aigw_xds import crds
from aigw_xds.cli import main
from aigw_xds.sources import kube_kinds

COMPAT = Path("/work/shared/compat/envoy-ai-gateway-examples")
if not COMPAT.is_dir():  # a checkout beside the shared folder
    COMPAT = Path(__file__).resolve().parents[3] / "shared" / "compat" / "envoy-ai-gateway-examples"

# Envoy AI Gateway's CRDs (manifests/charts/ai-gateway-crds-helm/templates at v1.1.0), as read by
# hand: kind -> (plural, singular, short names, served versions with the storage one first).
ENVOY_AI_GATEWAY = {
    "AIGatewayRoute": ("aigatewayroutes", "aigatewayroute", [], ["v1beta1", "v1alpha1"]),
    "AIServiceBackend": ("aiservicebackends", "aiservicebackend", [], ["v1beta1", "v1alpha1"]),
    "BackendSecurityPolicy": ("backendsecuritypolicies", "backendsecuritypolicy", [], ["v1beta1", "v1alpha1"]),
    "GatewayConfig": ("gatewayconfigs", "gatewayconfig", ["gwconfig"], ["v1beta1", "v1alpha1"]),
    "MCPRoute": ("mcproutes", "mcproute", [], ["v1beta1", "v1alpha1"]),
    "QuotaPolicy": ("quotapolicies", "quotapolicy", [], ["v1alpha1"]),
}

# --------------------------------------------------------------------------------------------
# Kubernetes' rules for a CRD's schema (apiextensions.k8s.io/v1): "Specifying a structural schema"
# and the validation of JSONSchemaProps. Stricter than the API server in two places, both marked.

_TYPES = {"object", "array", "string", "integer", "number", "boolean"}
_JSON_SCHEMA_PROPS = {
    "id", "$schema", "$ref", "description", "type", "format", "title", "default", "maximum",
    "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems",
    "minItems", "uniqueItems", "multipleOf", "enum", "maxProperties", "minProperties", "required", "items",
    "allOf", "oneOf", "anyOf", "not", "properties", "additionalProperties", "patternProperties",
    "dependencies", "additionalItems", "definitions", "externalDocs", "example", "nullable",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string",
    "x-kubernetes-list-map-keys", "x-kubernetes-list-type", "x-kubernetes-map-type", "x-kubernetes-validations",
}  # fmt: skip
_FORBIDDEN_IN_CRDS = {"$ref", "$schema", "id", "definitions", "patternProperties", "dependencies", "additionalItems"}
_JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
_NOT_IN_JUNCTORS = {"description", "type", "default", "additionalProperties", "nullable"}
_FORMATS = {
    "bsonobjectid", "uri", "email", "hostname", "ipv4", "ipv6", "cidr", "mac", "uuid", "uuid3", "uuid4",
    "uuid5", "isbn", "isbn10", "isbn13", "creditcard", "ssn", "hexcolor", "rgbcolor", "byte", "password",
    "date", "duration", "datetime", "date-time", "int32", "int64", "float", "double",
}  # fmt: skip
_INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]


def structural_problems(schema: dict[str, Any]) -> list[str]:
    """Why the API server would refuse schema as a CRD version's openAPIV3Schema (empty: it is
    structural and valid)."""
    problems: list[str] = []
    if schema.get("type") != "object":
        problems.append("(root): type must be object")
    _check(schema, "(root)", problems, specified=True)
    metadata = schema.get("properties", {}).get("metadata")
    if metadata is not None:
        extra = set(metadata) - {"type", "description", "properties"}
        fields = set(metadata.get("properties", {})) - {"name", "generateName"}
        if extra or fields or metadata.get("type") != "object":
            problems.append("metadata: only type object and restrictions of name and generateName are allowed")
    return problems


def _check(node: Any, where: str, problems: list[str], *, specified: bool, in_junctor: bool = False) -> None:
    if not isinstance(node, dict):
        problems.append(f"{where}: a schema must be an object, not {node!r}")
        return
    for key in sorted(set(node) - _JSON_SCHEMA_PROPS):
        problems.append(f"{where}: {key} is not a JSONSchemaProps field")
    for key in sorted(set(node) & _FORBIDDEN_IN_CRDS):
        problems.append(f"{where}: {key} is forbidden in a CRD schema")
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if preserve is not None and preserve is not True:
        problems.append(f"{where}: x-kubernetes-preserve-unknown-fields must be true or absent")
    kind = node.get("type")
    if in_junctor:
        for key in sorted(set(node) & _NOT_IN_JUNCTORS):
            problems.append(f"{where}: {key} must not be set inside allOf/anyOf/oneOf/not")
    elif specified and not kind and not int_or_string and preserve is not True:
        problems.append(f"{where}: no type (needed unless x-kubernetes-int-or-string or preserve-unknown-fields)")
    if kind is not None and kind not in _TYPES:
        problems.append(f"{where}: type {kind!r} is not one of {sorted(_TYPES)}")
    if int_or_string:
        if kind is not None:
            problems.append(f"{where}: x-kubernetes-int-or-string takes no type")
        for junctor in ("anyOf", "allOf"):
            if junctor in node and node[junctor] != _INT_OR_STRING:
                problems.append(f"{where}: x-kubernetes-int-or-string allows only {junctor} {_INT_OR_STRING}")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{where}: properties and additionalProperties are mutually exclusive")
    if node.get("additionalProperties") is False:
        problems.append(f"{where}: additionalProperties cannot be false (unknown fields are pruned instead)")
    if node.get("uniqueItems") is True:
        problems.append(f"{where}: uniqueItems cannot be true (use x-kubernetes-list-type: set)")
    if "format" in node and node["format"] not in _FORMATS:  # stricter: the API server ignores it
        problems.append(f"{where}: unknown format {node['format']!r}")
    if "pattern" in node:  # the API server compiles it with Go's regexp (RE2)
        try:
            re2.compile(node["pattern"])
        except re2.error:
            problems.append(f"{where}: pattern {node['pattern']!r} is not RE2")
    if kind == "array" and not isinstance(node.get("items"), dict) and not in_junctor:
        problems.append(f"{where}: an array needs items (one schema, not a list)")
    if kind != "object" and ("x-kubernetes-map-type" in node or "properties" in node):
        problems.append(f"{where}: properties and x-kubernetes-map-type belong to objects")
    if node.get("x-kubernetes-map-type") not in (None, "granular", "atomic"):
        problems.append(f"{where}: x-kubernetes-map-type must be granular or atomic")
    _check_list_type(node, where, problems)
    if node.get("x-kubernetes-embedded-resource") is True and kind != "object":
        problems.append(f"{where}: x-kubernetes-embedded-resource needs type object")
    for name, child in node.get("properties", {}).items():
        _check(child, f"{where}.{name}", problems, specified=not in_junctor, in_junctor=in_junctor)
    if isinstance(node.get("additionalProperties"), dict):
        _check(node["additionalProperties"], f"{where}.*", problems, specified=True, in_junctor=in_junctor)
    if isinstance(node.get("items"), dict):
        _check(node["items"], f"{where}[]", problems, specified=not in_junctor, in_junctor=in_junctor)
    for junctor in _JUNCTORS:
        branches = node.get(junctor)
        if branches is None:
            continue
        for i, branch in enumerate(branches if isinstance(branches, list) else [branches]):
            if int_or_string and branch in _INT_OR_STRING:
                continue
            _check(branch, f"{where}.{junctor}[{i}]", problems, specified=False, in_junctor=True)
            for name in branch.get("properties", {}) if isinstance(branch, dict) else ():
                if name not in node.get("properties", {}):
                    problems.append(f"{where}.{junctor}[{i}]: field {name} must also be specified outside {junctor}")
            if isinstance(branch, dict) and "items" in branch and "items" not in node:
                problems.append(f"{where}.{junctor}[{i}]: items must also be specified outside {junctor}")


def _check_list_type(node: dict[str, Any], where: str, problems: list[str]) -> None:
    list_type = node.get("x-kubernetes-list-type")
    keys = node.get("x-kubernetes-list-map-keys")
    if list_type is None and keys is None:
        return
    if node.get("type") != "array":
        problems.append(f"{where}: x-kubernetes-list-type belongs to arrays")
        return
    items = node.get("items", {})
    if list_type not in ("atomic", "set", "map"):
        problems.append(f"{where}: x-kubernetes-list-type must be atomic, set or map")
    if keys is not None and list_type != "map":
        problems.append(f"{where}: x-kubernetes-list-map-keys needs x-kubernetes-list-type map")
    if list_type == "set" and items.get("type") in ("object", "array"):
        problems.append(f"{where}: a set's items must be scalars")
    if list_type == "map":
        if items.get("type") != "object" or not keys:
            problems.append(f"{where}: a map list needs object items and x-kubernetes-list-map-keys")
        for key in keys or ():
            field = items.get("properties", {}).get(key)
            if field is None or field.get("type") not in ("string", "integer", "number", "boolean"):
                problems.append(f"{where}: map key {key} must be a scalar field of the items")
            elif key not in items.get("required", ()) and "default" not in field:
                problems.append(f"{where}: map key {key} must be required or defaulted")


# --------------------------------------------------------------------------------------------
# An object against a CRD schema, as the API server checks it after `kubectl apply` (strict field
# validation, kubectl's default since 1.27: a field the schema would prune is an error).


def json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI v3 CRD schema as a draft 4 JSON schema for jsonschema."""
    out: dict[str, Any] = {
        k: v for k, v in node.items() if not k.startswith("x-kubernetes-") and k not in ("nullable", "description")
    }
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in node:
        out["properties"] = {name: json_schema(child) for name, child in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = json_schema(node["additionalProperties"])
    if isinstance(node.get("items"), dict):
        out["items"] = json_schema(node["items"])
    return out


def without_nulls(value: Any, schema: dict[str, Any]) -> Any:
    """value with the nulls of fields that are not nullable dropped, as the API server does."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        out = {}
        for key, child in value.items():
            sub = props.get(key) or (schema.get("additionalProperties") or {})
            if child is None and not sub.get("nullable"):
                continue
            out[key] = without_nulls(child, sub)
        return out
    if isinstance(value, list):
        return [without_nulls(v, schema.get("items", {})) for v in value]
    return value


def schema_errors(obj: dict[str, Any], by_kind: dict[str, dict[str, Any]]) -> list[str]:
    """Why the API server would refuse obj (empty: it is accepted)."""
    group, _, version = obj["apiVersion"].partition("/")
    crd = by_kind[obj["kind"]]
    assert crd["spec"]["group"] == group
    served = {v["name"]: v for v in crd["spec"]["versions"] if v["served"]}
    if version not in served:
        return [f"{obj['apiVersion']} is not a served version of {obj['kind']}"]
    schema = served[version]["schema"]["openAPIV3Schema"]
    validator = jsonschema.Draft4Validator(json_schema(schema))
    return [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(without_nulls(obj, schema))
    ]


def compat_objects() -> list[tuple[str, dict[str, Any]]]:
    """(file, object) of every aigateway.envoyproxy.io object of the published examples."""
    out = []
    for path in sorted(COMPAT.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith(f"{crds.GROUP}/"):
                out.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


@pytest.fixture(scope="module")
def generated() -> list[dict[str, Any]]:
    return crds.crds()


@pytest.fixture(scope="module")
def by_kind(generated: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["spec"]["names"]["kind"]: c for c in generated}


# --------------------------------------------------------------------------------------------


def test_one_crd_per_kind_with_envoy_ai_gateways_names(by_kind: dict[str, dict[str, Any]]):
    assert set(by_kind) == set(ENVOY_AI_GATEWAY)
    for kind, (plural, singular, short, versions) in ENVOY_AI_GATEWAY.items():
        spec = by_kind[kind]["spec"]
        assert by_kind[kind]["metadata"]["name"] == f"{plural}.aigateway.envoyproxy.io"
        assert spec["group"] == "aigateway.envoyproxy.io"
        assert spec["scope"] == "Namespaced"
        assert spec["names"] == {
            "kind": kind,
            "listKind": f"{kind}List",
            "plural": plural,
            "singular": singular,
            **({"shortNames": short} if short else {}),
        }
        assert [v["name"] for v in spec["versions"]] == versions
        storage = [v["name"] for v in spec["versions"] if v["storage"]]
        assert storage == versions[:1], kind
        for version in spec["versions"]:
            assert version["served"] is True
            assert version.get("deprecated", False) is (not version["storage"]), (kind, version["name"])
            assert version["subresources"] == {"status": {}}


def test_plurals_and_storage_versions_are_the_kube_kinds_table(by_kind: dict[str, dict[str, Any]]):
    """What the Kubernetes source lists and watches is what the CRDs serve."""
    table = {k.kind: k for k in kube_kinds.WATCHED if k.group == crds.GROUP}
    assert set(table) == set(by_kind)
    for kind, row in table.items():
        spec = by_kind[kind]["spec"]
        assert spec["names"]["plural"] == row.plural
        assert [v["name"] for v in spec["versions"] if v["storage"]] == [row.version]
        assert spec["scope"] == ("Namespaced" if row.namespaced else "Cluster")


def test_every_version_is_structural(generated: list[dict[str, Any]]):
    for crd in generated:
        for version in crd["spec"]["versions"]:
            schema = version["schema"]["openAPIV3Schema"]
            assert structural_problems(schema) == [], (crd["metadata"]["name"], version["name"])


def test_spec_required_status_conditions_and_printer_columns(by_kind: dict[str, dict[str, Any]]):
    for kind, crd in by_kind.items():
        for version in crd["spec"]["versions"]:
            schema = version["schema"]["openAPIV3Schema"]
            assert schema["required"] == ["spec"], kind
            assert schema["properties"]["metadata"] == {"type": "object"}
            conditions = schema["properties"]["status"]["properties"]["conditions"]
            condition = conditions["items"]
            assert set(condition["required"]) == {"type", "status", "reason", "message", "lastTransitionTime"}
            assert condition["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
            assert condition["properties"]["lastTransitionTime"]["format"] == "date-time"
            assert condition["properties"]["observedGeneration"]["type"] == "integer"
            columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
            assert columns["Status"]["jsonPath"] == '.status.conditions[?(@.type=="Accepted")].reason'
            assert columns["Age"] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def test_spec_fields_are_the_models(by_kind: dict[str, dict[str, Any]]):
    """Every field of a kind's spec model (by its wire name) is in the schema, required as in the model."""
    for row in crds.crd_kinds():
        spec_model = row.model.model_fields["spec"].annotation
        assert isinstance(spec_model, type)
        fields = {f.alias or name: f for name, f in spec_model.model_fields.items()}
        schema = by_kind[row.kube.kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        assert set(schema["properties"]) == set(fields), row.kube.kind
        assert set(schema.get("required", [])) == {n for n, f in fields.items() if f.is_required()}


def test_schemas_keep_enums_bounds_and_preserve_only_what_the_models_accept(by_kind: dict[str, dict[str, Any]]):
    backend = by_kind["AIServiceBackend"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert "OpenAI" in backend["properties"]["schema"]["properties"]["name"]["enum"]
    route = by_kind["AIGatewayRoute"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    backend_ref = route["properties"]["rules"]["items"]["properties"]["backendRefs"]["items"]
    assert backend_ref["properties"]["weight"] == {"type": "integer", "minimum": 0, "maximum": 1000000}
    assert route["properties"]["rules"]["minItems"] == 1
    quota = by_kind["QuotaPolicy"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    limit = quota["properties"]["serviceQuota"]["properties"]["quota"]["properties"]["limit"]
    assert limit == {"type": "integer", "minimum": 1}  # gt=0
    # a free-form field keeps what it is given; Gateway API references do not
    assert route["properties"]["filterConfig"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert "x-kubernetes-preserve-unknown-fields" not in route["properties"]["parentRefs"]["items"]
    text = json.dumps(list(by_kind.values()))
    assert '"additionalProperties": false' not in text
    assert "$ref" not in text and '"default"' not in text and '"title"' not in text


def test_every_published_example_object_is_valid(by_kind: dict[str, dict[str, Any]]):
    objects = compat_objects()
    assert len(objects) >= 20 and {o["kind"] for _, o in objects} >= {
        "AIGatewayRoute",
        "AIServiceBackend",
        "BackendSecurityPolicy",
        "GatewayConfig",
        "MCPRoute",
    }
    failures = {where: errors for where, obj in objects if (errors := schema_errors(obj, by_kind))}
    assert failures == {}


def _backend() -> dict[str, Any]:
    return {
        "apiVersion": "aigateway.envoyproxy.io/v1beta1",
        "kind": "AIServiceBackend",
        "metadata": {"name": "openai"},
        "spec": {"schema": {"name": "OpenAI"}, "backendRef": {"name": "openai", "kind": "Backend"}},
    }


def _edited(path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(_backend())
    *parents, last = path.split(".")
    node = obj
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return obj


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        ("spec.schema.name", 123, "123 is not of type 'string'"),
        ("spec.schema.name", "OpenAl", "is not one of"),
        ("spec.backendRef", _DELETE, "'backendRef' is a required property"),
        ("spec", _DELETE, "'spec' is a required property"),
        ("spec.backendRef.port", "eighty", "is not of type 'integer'"),
        ("spec.backendRef.name", "", "should be non-empty"),
        ("spec.backendRefs", [], "Additional properties are not allowed ('backendRefs' was unexpected)"),
        ("apiVersion", "aigateway.envoyproxy.io/v2", "not a served version"),
    ],
)
def test_invalid_objects_are_refused(by_kind: dict[str, dict[str, Any]], path: str, value: Any, error: str):
    assert schema_errors(_backend(), by_kind) == []
    errors = schema_errors(_edited(path, value), by_kind)
    assert any(error in e for e in errors), errors


def test_a_null_optional_field_is_dropped_and_a_foreign_oidc_field_is_kept(by_kind: dict[str, dict[str, Any]]):
    assert schema_errors(_edited("spec.headerMutation", None), by_kind) == []
    policy = {
        "apiVersion": "aigateway.envoyproxy.io/v1beta1",
        "kind": "BackendSecurityPolicy",
        "metadata": {"name": "aws"},
        "spec": {
            "type": "AWSCredentials",
            "awsCredentials": {
                "region": "us-east-1",
                "oidcExchangeToken": {
                    "oidc": {
                        "provider": {"issuer": "https://idp", "authorizationEndpoint": "https://idp/auth"},
                        "clientID": "id",
                        "clientSecret": {"name": "s"},
                        "redirectURL": "https://gw/callback",
                    }
                },
            },
        },
    }
    assert schema_errors(policy, by_kind) == []


def test_quota_policy_is_served_as_v1alpha1_only(by_kind: dict[str, dict[str, Any]]):
    policy: dict[str, Any] = {
        "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
        "kind": "QuotaPolicy",
        "metadata": {"name": "q"},
        "spec": {
            "targetRefs": [{"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": "b"}],
            "perModelQuotas": [
                {"modelName": "m", "quota": {"mode": "Shared", "defaultBucket": {"limit": 10, "duration": "1h"}}}
            ],
        },
    }
    assert schema_errors(policy, by_kind) == []
    assert schema_errors({**policy, "apiVersion": "aigateway.envoyproxy.io/v1beta1"}, by_kind) != []
    policy["spec"]["perModelQuotas"][0]["quota"]["mode"] = "Exclusive"
    assert any("is not one of ['Shared']" in e for e in schema_errors(policy, by_kind))


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "object", "properties": {"a": {"$ref": "#/definitions/x"}}}, "$ref is forbidden"),
        ({"type": "object", "properties": {"a": {"description": "no type"}}}, "a: no type"),
        ({"type": "object", "properties": {"a": {"type": "array", "items": {}}}}, "a[]: no type"),
        ({"type": "object", "properties": {"a": {"type": "object", "additionalProperties": False}}}, "cannot be false"),
        (
            {"type": "object", "properties": {"a": {"type": "object", "properties": {}, "additionalProperties": {}}}},
            "mutually exclusive",
        ),
        (
            {"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}}},
            "type must not be set inside",
        ),
        (
            {"type": "object", "properties": {"a": {"type": "object", "anyOf": [{"properties": {"b": {}}}]}}},
            "field b must also be specified outside",
        ),
        ({"type": "object", "properties": {"a": {"type": "string", "x-kubernetes-int-or-string": True}}}, "no type"),
        ({"type": "object", "properties": {"a": {"type": "null"}}}, "type 'null'"),
        ({"type": "object", "properties": {"a": {"const": "x", "type": "string"}}}, "const is not a JSONSchemaProps"),
        ({"type": "object", "properties": {"metadata": {"type": "object", "properties": {"labels": {}}}}}, "metadata"),
        ({"type": "object", "properties": {"a": {"type": "string", "pattern": "(?=x)"}}}, "is not RE2"),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "array", "items": {"type": "object"}, "x-kubernetes-list-type": "map"}},
            },
            "map list needs",
        ),
        ({"type": "string"}, "(root): type must be object"),
    ],
)
def test_the_structural_checker_finds_what_the_api_server_refuses(schema: dict[str, Any], problem: str):
    problems = structural_problems(schema)
    assert any(problem in p for p in problems), problems


def test_the_structural_checker_accepts_int_or_string_and_preserved_fields():
    schema = {
        "type": "object",
        "properties": {
            "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "free": {"x-kubernetes-preserve-unknown-fields": True},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    assert structural_problems(schema) == []


def test_the_command_prints_them_stable_as_yaml_and_json(capsys, generated: list[dict[str, Any]]):
    assert main(["crds"]) == 0
    text = capsys.readouterr().out
    assert main(["crds"]) == 0
    assert capsys.readouterr().out == text
    assert text.startswith("---\n")
    assert list(yaml.safe_load_all(text)) == generated
    assert [d["metadata"]["name"] for d in generated] == sorted(d["metadata"]["name"] for d in generated)
    assert main(["crds", "-o", "json"]) == 0  # a v1 List: kubectl takes no bare JSON array
    assert json.loads(capsys.readouterr().out) == {"apiVersion": "v1", "kind": "List", "items": generated}


def test_a_union_without_a_structural_form_is_an_error():
    from pydantic import BaseModel

    class Odd(BaseModel):
        apiVersion: str
        kind: str
        metadata: dict[str, Any]
        spec: int | list[str]

    with pytest.raises(ValueError, match=r"spec: a union of \['array', 'integer'\] has no structural schema"):
        crds.object_schema(Odd)


def test_the_conversion_of_each_form_a_model_field_takes():
    """nullable only for a required field that takes null; str | int as int-or-string; a float's
    exclusive bound as minimum + exclusiveMinimum; a Lenient model keeps unknown fields; a Strict
    one is pruned; descriptions from docstrings and fields; no defaults."""
    from pydantic import BaseModel, Field

    from aigw_xds.api.base import Lenient, Strict

    class Part(Lenient):
        """Part of a foreign
        type."""

        known: str

    class Spec(Strict):
        must: str | None = Field(description="required, may be null")
        may: str | None = None
        port: str | int = 80
        ratio: float = Field(default=1.0, gt=0, le=2)
        part: Part | None = None
        labels: dict[str, str] = Field(default_factory=dict)

    class Thing(BaseModel):
        apiVersion: str
        kind: str
        metadata: dict[str, Any]
        spec: Spec

    schema = crds.object_schema(Thing)
    assert structural_problems(schema) == []
    spec = schema["properties"]["spec"]
    assert spec["properties"]["must"] == {"type": "string", "description": "required, may be null", "nullable": True}
    assert spec["properties"]["may"] == {"type": "string"}
    assert spec["properties"]["port"] == {"x-kubernetes-int-or-string": True, "anyOf": _INT_OR_STRING}
    assert spec["properties"]["ratio"] == {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 2}
    assert spec["properties"]["part"] == {
        "type": "object",
        "description": "Part of a foreign type.",
        "properties": {"known": {"type": "string"}},
        "required": ["known"],
        "x-kubernetes-preserve-unknown-fields": True,
    }
    assert spec["properties"]["labels"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert spec["required"] == ["must"]
    assert "x-kubernetes-preserve-unknown-fields" not in spec
    by_kind = {
        "Thing": {
            "spec": {
                "group": "x.io",
                "versions": [{"name": "v1", "served": True, "schema": {"openAPIV3Schema": schema}}],
            }
        }
    }
    thing = {"apiVersion": "x.io/v1", "kind": "Thing", "metadata": {"name": "t"}}
    assert (
        schema_errors({**thing, "spec": {"must": None, "port": "http", "part": {"known": "k", "extra": 1}}}, by_kind)
        == []
    )
    assert schema_errors({**thing, "spec": {"must": "m", "port": 8080, "ratio": 2}}, by_kind) == []
    assert schema_errors({**thing, "spec": {"must": "m", "ratio": 0}}, by_kind) != []
    assert schema_errors({**thing, "spec": {"must": "m", "port": 1.5}}, by_kind) != []
    assert schema_errors({**thing, "spec": {"must": "m", "typo": 1}}, by_kind) != []
