"""Building blocks shared by every resource model: the pydantic base classes, object metadata and
the reference types of the Gateway API."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ..keys import DNS_1035_LABEL, DNS_LABEL, DNS_SUBDOMAIN

_object_setattr = object.__setattr__
_GIVEN_FIELDS: dict[frozenset[str], set[str]] = {}


# The Gateway API group (Gateways, HTTPRoutes, ReferenceGrants...).
GATEWAY_API_GROUP = "gateway.networking.k8s.io"

# The validation context under which a model is validated into its compact form (_Resource).
COMPACT: dict[str, bool] = {"compact": True}


def _refuse(*_: object, **__: object) -> Any:
    raise TypeError("the values of a validated resource are not changed")


class _EmptyList(list[Any]):
    """The one empty list compact models hold for every empty list field: each took 72 bytes of
    its own (an empty targetRefs, hostnames, llmRequestCosts: 2 MB at 10,000 routes). Validated
    resources are never changed (the compile memo reuses them across edits); this one refuses it,
    so that a change is an error instead of a change to every resource."""

    __slots__ = ()
    append = extend = insert = remove = pop = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse

    def __reduce__(self) -> tuple[Callable[[type], object], tuple[type]]:
        return _shared_empty, (list,)  # copied or pickled: the shared one again

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: object) -> Self:
        return self


class _EmptyDict(dict[Any, Any]):
    """The one empty dict compact models hold for every empty dict field (metadata's labels and
    annotations: 3 MB at 10,000 routes); refuses changes, as _EmptyList does."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = pop = popitem = clear = update = setdefault = _refuse

    def __reduce__(self) -> tuple[Callable[[type], object], tuple[type]]:
        return _shared_empty, (dict,)

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: object) -> Self:
        return self


_SHARED_EMPTY: dict[type, object] = {list: _EmptyList(), dict: _EmptyDict()}


def _shared_empty(kind: type) -> object:
    return _SHARED_EMPTY[kind]


class _Resource(BaseModel):
    """The base of every model, which keeps less than pydantic would (the models are frozen: nothing
    is assigned to them once validated).

    - Pydantic keeps, per instance, the set of the fields given: a fifth of what a validated
      configuration took (26 MB of the 126,000 models of 10,000 routes). Here it is one set shared
      by every instance given the same fields: pydantic never adds to a frozen model's set
      (model_copy copies it first); pydantic-core needs a set, not a frozenset.
    - Validated with the COMPACT context (what the decoder keeps), a model is a copy of what
      pydantic built whose fields were set one by one on a new instance: pydantic gives each
      instance a dictionary of its own (about 270 bytes for a few fields), the copy's shares its
      keys with the other instances of its class (CPython's key-sharing dictionaries), 130 bytes
      less each: 21 MB less at 10,000 routes. Its nested models were copied as they were validated.
      Its empty lists and dicts are one shared object each (_EmptyList, _EmptyDict), 5 MB less.
      A model built by calling its class is left as pydantic builds it (pydantic does not take
      another instance from __init__)."""

    @model_validator(mode="after")
    def _compact(self, info: ValidationInfo) -> Self:
        if not self.model_config.get("frozen"):  # a model that can be assigned to adds to its set
            return self
        given = self.__pydantic_fields_set__
        given = _GIVEN_FIELDS.setdefault(frozenset(given), given)
        if info.context is not COMPACT:
            _object_setattr(self, "__pydantic_fields_set__", given)
            return self
        cls = type(self)
        copy = cls.__new__(cls)
        for name, value in self.__dict__.items():
            if not value:
                value = _SHARED_EMPTY.get(type(value), value)
            _object_setattr(copy, name, value)
        _object_setattr(copy, "__pydantic_fields_set__", given)
        _object_setattr(copy, "__pydantic_extra__", self.__pydantic_extra__)
        _object_setattr(copy, "__pydantic_private__", self.__pydantic_private__)
        return copy


# defer_build: every model's validator is built when a resource of its kind (or holding it) is
# first validated, not at import. A process that never meets a QuotaPolicy or an MCPRoute does not
# hold their schemas (4.6 MB less imported; 2 MB off the peak of 10,000 routes of four kinds).
# strict: a number or boolean given as a string (`port: "8080"`, `weight: "1"`) is an error, as the
# Kubernetes API server's schema validation makes it, not quietly converted.


class Strict(_Resource):
    """A model whose unknown fields are errors: used for the kinds whose schema we own fully, so a
    misspelt field is reported instead of silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, defer_build=True, strict=True)


class Lenient(_Resource):
    """A model that ignores fields it does not know: used for Gateway API and Envoy Gateway kinds,
    whose full schemas are larger than what aigw-xds uses."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True, defer_build=True, strict=True)


# What each Kubernetes name pattern (keys.py) allows, as an error says it.
_NAME_RULES = {
    DNS_SUBDOMAIN: "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit "
    "(a DNS-1123 subdomain)",
    DNS_LABEL: "at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit "
    "(a DNS-1123 label)",
    DNS_1035_LABEL: "at most 63 lowercase letters, digits and '-', starting with a letter and ending with a "
    "letter or digit (a DNS-1035 label)",
}


def require_name(name: str, pattern: re.Pattern[str], what: str) -> str:
    """name, when `pattern` (one of keys.py's) takes it whole; else ValueError saying what a `what`
    must be."""
    if not pattern.fullmatch(name):
        raise ValueError(f"{name!r} is not a {what}: {_NAME_RULES[pattern]}")
    return name


class ObjectMeta(Lenient):
    """The names are those the Kubernetes API server accepts (a name a DNS-1123 subdomain, a
    namespace a DNS-1123 label), in files too: the names of Envoy resources and fleets are built
    from them with separators ('/', '#') that a name cannot then hold, so one Gateway's resources
    never take another's names."""

    name: str = Field(min_length=1, max_length=253)
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    creationTimestamp: str | None = None
    generation: int | None = None  # set by the API server (Kubernetes mode): what status is about

    _v_name = field_validator("name")(lambda name: require_name(name, DNS_SUBDOMAIN, "Kubernetes object name"))

    @field_validator("namespace", mode="before")
    @classmethod
    def _no_namespace_is_default(cls, namespace: object) -> object:
        """`namespace: ""` (or null) is namespace default, as kubectl takes it (and the key says)."""
        return "default" if namespace in ("", None) else namespace

    _v_namespace = field_validator("namespace")(lambda ns: require_name(ns, DNS_LABEL, "Kubernetes namespace"))


class ParentReference(Lenient):
    """A route's parent: a Gateway (AIGatewayRoute and MCPRoute attach to nothing else)."""

    name: str
    namespace: str | None = None
    group: str = GATEWAY_API_GROUP
    kind: str = "Gateway"
    sectionName: str | None = None
    port: int | None = None

    @field_validator("kind")
    @classmethod
    def _gateway_only(cls, kind: str) -> str:
        if kind != "Gateway":
            raise ValueError(f"parentRefs kind must be Gateway, not {kind}")
        return kind


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
