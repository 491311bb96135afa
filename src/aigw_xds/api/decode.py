"""Pure decoding: YAML text -> documents -> validated resource models, with precise diagnostics."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ..diagnostics import Diagnostic, Origin, error, warning
from ..keys import ResourceKey
from .base import COMPACT, GATEWAY_API_GROUP
from .registry import IGNORED_KINDS, KUBERNETES_KINDS, MODELS
from .spelling import CLOSENESS, misspelt_fields, model_in
from .substitution import substitute_secret
from .yaml_text import (
    ParsedPieces,
    YAMLSyntaxError,
    has_directives,
    parse_piece,
    piece_digest,
    pieces,
    split_documents,
)

R = TypeVar("R", bound=BaseModel)


def _kinds_by_group() -> dict[str, list[str]]:
    """The kinds aigw-xds reads, by API group (gateway.networking.k8s.io, aigateway.envoyproxy.io...)."""
    out: dict[str, list[str]] = {}
    for kind, (versions, _) in MODELS.items():
        for group in sorted({version.split("/", 1)[0] for version in versions if "/" in version}):
            out.setdefault(group, []).append(kind)
    return out


_KINDS_BY_GROUP = _kinds_by_group()
# Real kinds of those groups that aigw-xds does not read, close to one it does: skipped, never taken
# for a misspelling (BackendLBPolicy is not BackendTLSPolicy).
_OTHER_KINDS = frozenset(
    {
        "TCPRoute",
        "TLSRoute",
        "UDPRoute",
        "GRPCRoute",
        "BackendLBPolicy",
        "ListenerSet",
        "XListenerSet",
        "XBackendTrafficPolicy",
        "XMesh",
        "InferencePoolImport",
        "InferenceModelRewrite",
    }
)


@dataclass(frozen=True, slots=True)
class Loaded(Generic[R]):
    """A valid resource: what the resource set holds of it (resources.py)."""

    key: ResourceKey
    resource: R
    origin: Origin


@dataclass(frozen=True, slots=True)
class Decoded:
    """One YAML document turned into a resource, or into the reason it could not be."""

    origin: Origin
    key: ResourceKey | None
    # The resource when it is valid, as the resource set takes it (one object for both).
    loaded: Loaded[Any] | None
    diagnostics: tuple[Diagnostic, ...] = ()
    # A document that did not validate: what its targetRefs (or targetRef) name, as far as they read
    # (a policy that applies to nothing must not leave what it targets served without it), or its
    # parentRefs (a route refused at its creation is told why, in its parent Gateway's status).
    targets: tuple[ResourceKey, ...] = ()

    @property
    def resource(self) -> BaseModel | None:
        return self.loaded.resource if self.loaded is not None else None


def field_path(loc: tuple[Any, ...]) -> str:
    """pydantic's error location as a Kubernetes-style field path: spec.rules[0].backendRefs[1].name."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = "schema" if part == "schema_" else ("from" if part == "from_" else str(part))
            out += ("." if out else "") + name
    return out


def _key_of(doc: dict[str, Any]) -> ResourceKey | None:
    meta = doc.get("metadata")
    kind = doc.get("kind")
    if not isinstance(meta, dict) or not isinstance(kind, str) or not isinstance(meta.get("name"), str):
        return None
    namespace = meta.get("namespace") or "default"
    return ResourceKey(kind, str(namespace), meta["name"])


def decode_document(
    doc: Any,
    origin: Origin,
    env: Mapping[str, str] | None = None,
    read_file: Callable[[str], str] | None = None,
) -> Decoded:
    """Validate one parsed document against the model of its kind; a field it ignores that looks
    like a typo of one it reads is a warning (spelling.py). Secrets get their substitutions
    (environment variables, files) applied first. Neither for an object read from the Kubernetes
    API (Origin.from_api_server)."""
    if not isinstance(doc, dict):
        return Decoded(origin, None, None, (error(f"a document must be a mapping, got {type(doc).__name__}", origin),))
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    key = _key_of(doc)
    if not isinstance(kind, str) or not isinstance(api_version, str):
        missing = "kind" if not isinstance(kind, str) else "apiVersion"
        message = f"{missing} is missing{_written_as(missing, doc)}"
        if kind is None and api_version is None and message == "kind is missing":
            # Neither: another tool's YAML (a bootstrap written beside the resources, a compose file).
            message += ": this document is not a Kubernetes resource (every YAML file of the path is read)"
        return Decoded(origin, key, None, (error(message, origin, key, missing),))
    if kind in IGNORED_KINDS or kind in KUBERNETES_KINDS:
        reason = IGNORED_KINDS.get(kind, "Kubernetes workload kinds are not read by aigw-xds")
        return Decoded(origin, key, None, (warning(f"ignored ({reason})", origin, key),))
    if kind not in MODELS:
        same_group = _KINDS_BY_GROUP.get(api_version.split("/", 1)[0], [])
        like = [] if kind in _OTHER_KINDS else difflib.get_close_matches(kind, same_group, n=1, cutoff=CLOSENESS)
        if like:
            # Close to a kind aigw-xds reads of the same group: a typo, not another controller's
            # resource (skipped, what it meant would silently be missing). A kind close to none (a
            # newer release's, another project's) stays a warning.
            # Taken for the kind it is close to: what it targets is not served without it.
            message = f"unknown kind {kind} in {api_version} (did you mean {like[0]}?)"
            meant = key._replace(kind=like[0]) if key is not None else None
            targets = _raw_targets(doc, key.namespace) if key is not None else ()
            return Decoded(origin, meant, None, (error(message, origin, meant, "kind"),), targets)
        return Decoded(origin, key, None, (warning(f"unknown kind {kind} ({api_version}), skipped", origin, key),))
    versions, model = MODELS[kind]
    if api_version not in versions:
        msg = f"unknown apiVersion {api_version} for {kind} (expected one of {', '.join(versions)})"
        targets = _raw_targets(doc, key.namespace) if key is not None else ()
        return Decoded(origin, key, None, (error(msg, origin, key, "apiVersion"),), targets)
    if key is None:
        message = f"{kind}: metadata.name is missing{_written_as('metadata', doc) if 'metadata' not in doc else ''}"
        return Decoded(origin, None, None, (error(message, origin, None, "metadata.name"),))
    if kind == "Secret" and not origin.from_api_server:
        doc = substitute_secret(doc, env or {}, read_file)
    typos = () if origin.from_api_server else misspelt_fields(model, doc)
    strict = kind in TYPOS_ARE_ERRORS
    said = tuple(
        (error if strict else warning)(
            f"unknown field{'' if strict else ', ignored'} (did you mean {close}?)", origin, key, path
        )
        for path, close in typos
    )
    try:
        resource = model.model_validate(doc, context=COMPACT)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        diags = tuple(error(_message(e, model, doc), origin, key, field_path(e["loc"])) for e in errors)
        # A misspelt field first: an error it leads to (a field said to be missing) reads as its own.
        return Decoded(origin, key, None, said + diags, _raw_targets(doc, key.namespace))
    if strict and said:
        return Decoded(origin, key, None, said, _raw_targets(doc, key.namespace))
    return Decoded(origin, key, Loaded(key, resource, origin), said)


# The kinds a misspelt field fails (their other unknown fields are Envoy Gateway's, warned where
# they are read): a ClientTrafficPolicy's `clientValidaton` would serve an HTTPS listener without
# the client certificates its author asked for. What the policy targets is not served without it.
TYPOS_ARE_ERRORS = frozenset({"ClientTrafficPolicy"})


def _raw_targets(doc: dict[str, Any], namespace: str) -> tuple[ResourceKey, ...]:
    """What a document that did not validate points at, read leniently: a policy's
    spec.targetRefs / spec.targetRef, a route's spec.parentRefs (Gateways)."""
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return ()
    refs = spec.get("targetRefs")
    given = [*(refs if isinstance(refs, list) else []), spec.get("targetRef")]
    named = [
        r for r in given if isinstance(r, dict) and isinstance(r.get("kind"), str) and isinstance(r.get("name"), str)
    ]
    parents = spec.get("parentRefs")
    gateways = [
        ResourceKey("Gateway", p["namespace"] if isinstance(p.get("namespace"), str) else namespace, p["name"])
        for p in (parents if isinstance(parents, list) else [])
        if isinstance(p, dict)
        and isinstance(p.get("name"), str)
        and p.get("kind", "Gateway") == "Gateway"
        and p.get("group", GATEWAY_API_GROUP) == GATEWAY_API_GROUP
    ]
    targets = (ResourceKey(_meant_kind(r["kind"]), namespace, r["name"]) for r in named)
    selectors = spec.get("targetSelectors")
    selected = [  # Gateways taken by their labels: any of the namespace's, as far as it reads
        ResourceKey("Gateway", namespace, ANY_NAME)
        for s in (selectors if isinstance(selectors, list) else [])
        if isinstance(s, dict) and _meant_kind(str(s.get("kind"))) == "Gateway"
    ]
    return tuple(dict.fromkeys([*targets, *gateways, *selected]))


# The name of a target that stands for any object of its kind in its namespace (a policy selecting
# Gateways by label that does not validate: which it selects is not read).
ANY_NAME = "*"


def _meant_kind(kind: str) -> str:
    """A target's kind, or the kind aigw-xds reads it is close to (a typo: `AIServiceBackends`), so
    that what a policy that did not validate is meant for is not served without it."""
    if kind in MODELS or kind in ("HTTPRoute", "Service"):
        return kind
    close = difflib.get_close_matches(kind, list(MODELS), n=1, cutoff=CLOSENESS)
    return close[0] if close else kind


def _written_as(field: str, doc: dict[str, Any]) -> str:
    """ " (written `apiversion`?)" when a key of the document looks like the missing top-level field."""
    close = difflib.get_close_matches(field, [str(k) for k in doc], n=1, cutoff=0.75)
    return f" (written {close[0]!r}?)" if close else ""


def _message(err: ErrorDetails, model: type[BaseModel], doc: dict[str, Any]) -> str:
    msg = err["msg"]
    if err["type"] == "missing" and err["loc"]:  # hostname: required, and `hostnme` given beside it
        at = _model_at(model, err["loc"][:-1])
        if at is not None and at.model_config.get("extra") != "forbid":  # else: `hostnme` is an error of its own
            known = set(_fields_at(at))
            written = {k: v for k, v in _mapping_at(doc, err["loc"][:-1]).items() if k not in known}
            return msg + _written_as(str(err["loc"][-1]), written)
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "literal_error" and isinstance(err.get("input"), str):
        expected = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        same = [value for value in expected if value.lower() == err["input"].lower()]
        # `openai` for OpenAI; `Minutes` for Minute
        close = same or difflib.get_close_matches(err["input"], expected, n=1, cutoff=CLOSENESS)
        if close:
            return f"{msg} (did you mean {close[0]}?)"
    if err["type"] in _STRICT_TYPES and isinstance(err.get("input"), str):  # port: "8080"
        quoted = _plain_scalar(err["input"]) is not str
        return f"{msg}, not the string {err['input']!r}" + (" (written in quotes?)" if quoted else "")
    # version: 2024-10-21 is a date to YAML, on: yes a boolean, 0755 a number; and minVersion: 1.3 a
    # number where the field takes the string "1.3".
    unquoted = (int, float, bool, date) if err["type"] == "string_type" else (int, float, bool)
    if err["type"] in ("string_type", "literal_error") and isinstance(err.get("input"), unquoted):
        return f"{msg}: YAML read {_yaml_text(err['input'])} as a {type(err['input']).__name__} (quote it)"
    if err["type"] == "model_type":  # connectionLimit: 2 for connectionLimit: {value: 2}
        given = err.get("input")
        what = "a list" if isinstance(given, list) else repr(given) if isinstance(given, str) else _yaml_text(given)
        return f"should be a mapping of its fields (key: value), not {what}"
    if err["type"] == "extra_forbidden":
        given = err["loc"][-1] if err["loc"] else None
        close = difflib.get_close_matches(str(given), _fields_at(_model_at(model, err["loc"][:-1])), n=1, cutoff=0.75)
        return f"unknown field (did you mean {close[0]}?)" if close else "unknown field"
    return msg


def _mapping_at(doc: dict[str, Any], loc: tuple[Any, ...]) -> dict[str, Any]:
    """The mapping of the document found at pydantic's error location; empty when the way there
    passes something else (a union member's tag, a value that is not a mapping)."""
    current: Any = doc
    for part in loc:
        in_list = isinstance(part, int) and isinstance(current, list) and 0 <= part < len(current)
        if in_list or (isinstance(current, dict) and part in current):  # (fields by alias: as written)
            current = current[part]
        else:
            return {}
    return current if isinstance(current, dict) else {}


def _plain_scalar(text: str) -> type:
    """The type YAML gives `text` written without quotes (str when it is not another one)."""
    try:
        return type(yaml.safe_load(text)) if text.strip() else str
    except yaml.YAMLError:
        return str


def _yaml_text(value: Any) -> str:
    """A plain scalar's value as it was most likely written."""
    if isinstance(value, date):
        return value.isoformat()
    return str(value).lower() if isinstance(value, bool) else str(value)


# The types a string is not taken for (the models are strict, as the Kubernetes API server is).
_STRICT_TYPES = frozenset({"int_type", "float_type", "bool_type"})


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model found at `loc` under `model`; none when the way there is not one of models (a
    union's member, a dict's key)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):  # an item of the list the previous field holds
            continue
        fields = current.model_fields if isinstance(current, type) and issubclass(current, BaseModel) else {}
        found = next((f for name, f in fields.items() if part in (name, f.alias)), None)
        if found is None:
            return None
        current = model_in(found.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _fields_at(model: type[BaseModel] | None) -> list[str]:
    """A model's fields as written (their aliases)."""
    return [f.alias or name for name, f in model.model_fields.items()] if model is not None else []


def decode_text(
    text: str, file: str, env: Mapping[str, str] | None = None, read_file: Callable[[str], str] | None = None
) -> list[Decoded]:
    """Every document of a YAML file, decoded. Raises YAMLSyntaxError when the file does not parse."""
    return list(decode_file(text, file, env, read_file).documents)


@dataclass(frozen=True, slots=True)
class _Piece:
    """A piece of a file's text: from the start, or from a line that starts a document (`---` at
    column 0, which YAML allows nowhere else: a piece parses alone as it does in the file)."""

    digest: bytes  # of its text
    first: int  # the index its first document has in the file
    count: int  # the documents it holds (empty ones too)
    documents: tuple[Decoded, ...]
    reusable: bool  # what it decoded to may be taken again (no Secret)


@dataclass(frozen=True)
class DecodedFile:
    """A file's documents, decoded, and the pieces they came from. Read again, a piece whose text
    is unchanged and whose documents keep their indexes is not parsed, built or validated again: an
    edit of one route in a file of a hundred parses and validates one, and the other ninety-nine
    stay the very objects what was compiled from them is keyed on. Secrets are always decoded again
    (their values may come from the environment or from files), and a file with YAML directives
    (`%TAG` changes what a tag means in every document) is decoded whole every time."""

    documents: tuple[Decoded, ...] = ()
    pieces: tuple[_Piece, ...] = field(default=(), repr=False)


def decode_file(
    text: str,
    file: str,
    env: Mapping[str, str] | None = None,
    read_file: Callable[[str], str] | None = None,
    earlier: DecodedFile | None = None,
    parsed: ParsedPieces | None = None,
) -> DecodedFile:
    """decode_text, reusing what `earlier` (the same file's last decoding) decoded unchanged pieces
    to; `parsed`: the pieces parsed elsewhere (in a worker process: parse_worker.py), by index.
    Raises YAMLSyntaxError when the file does not parse."""
    if has_directives(text):
        return _decoded_whole(text, file, env, read_file)
    # By text and place: pieces of the same text (empty documents) are each kept at their own.
    kept = {(p.digest, p.first): p for p in earlier.pieces if p.reusable} if earlier is not None else {}
    documents: list[Decoded] = []
    decoded: list[_Piece] = []
    for at, piece_text in enumerate(pieces(text)):
        digest = piece_digest(piece_text)
        before = decoded[-1].first + decoded[-1].count - 1 if decoded else 0  # documents before it
        piece = kept.get((digest, before + 1))
        if piece is None:
            try:
                done = parsed(at, digest) if parsed is not None else None
                count, docs = done if done is not None else parse_piece(piece_text)
            except YAMLSyntaxError:
                # The file as one stream: raises the error where the file has it (the piece's line
                # is relative), or reads what a piece alone cannot (a directive after a BOM or a
                # line break other than \n).
                return _decoded_whole(text, file, env, read_file)
            piece = _decoded_piece(count, docs, digest, before, file, env, read_file)
        documents.extend(piece.documents)
        decoded.append(piece)
    return DecodedFile(tuple(documents), tuple(decoded))


def _decoded_whole(
    text: str, file: str, env: Mapping[str, str] | None, read_file: Callable[[str], str] | None
) -> DecodedFile:
    """Every document of the file parsed as one stream (nothing kept for the next read)."""
    whole = (decode_document(doc, Origin(file, index), env, read_file) for index, doc in split_documents(text))
    return DecodedFile(tuple(whole))


def _decoded_piece(
    count: int,
    docs: list[tuple[int, Any]],
    digest: bytes,
    before: int,
    file: str,
    env: Mapping[str, str] | None,
    read_file: Callable[[str], str] | None,
) -> _Piece:
    """A piece's parsed documents (yaml_text.parse_piece), validated."""
    documents = [decode_document(doc, Origin(file, before + index), env, read_file) for index, doc in docs]
    reusable = all(d.key is None or d.key.kind != "Secret" for d in documents)
    return _Piece(digest, before + 1, count, tuple(documents), reusable)
