"""Pure decoding: YAML text -> documents -> validated resource models, with precise diagnostics."""

from __future__ import annotations

import difflib
import hashlib
import re
import sys
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ..diagnostics import Diagnostic, Origin, error, warning
from ..keys import ResourceKey
from .base import COMPACT
from .registry import IGNORED_KINDS, KUBERNETES_KINDS, MODELS
from .substitution import substitute_secret

R = TypeVar("R", bound=BaseModel)


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

    @property
    def resource(self) -> BaseModel | None:
        return self.loaded.resource if self.loaded is not None else None


if TYPE_CHECKING:
    _SafeLoader = yaml.SafeLoader
else:  # libyaml's C loader when PyYAML was built with it; same interface
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):
    """Safe loading (libyaml's C parser when present, about ten times faster) that refuses a key
    given twice in one mapping: YAML leaves that undefined and PyYAML silently keeps the last one,
    so `weight: 1` followed by `weight: 100` would serve a value the author may not have meant."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if (key_node.tag, key_node.value) in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r} in one mapping", key_node.start_mark
                )
            seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep)

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Merge keys for the general path, as `_mapping` merges them: a key of the mapping itself
        wins, then the earlier merged mapping (PyYAML 6.0.4 compares keys by identity, so a later
        merged mapping can win). Leaves each key once, so a merged mapping merged again stays right."""
        own = [(k, v) for k, v in node.value if k.tag != _MERGE]
        seen = {_key_of_node(k) for k, _ in own}
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                continue
            if isinstance(value_node, yaml.MappingNode):
                sources = [value_node]
            elif isinstance(value_node, yaml.SequenceNode):
                sources = value_node.value
            else:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"expected a mapping or list of mappings for merging, but found {value_node.id}",
                    value_node.start_mark,
                )
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"expected a mapping for merging, but found {source.id}",
                        source.start_mark,
                    )
                self.flatten_mapping(source)
                for pair in source.value:
                    key = _key_of_node(pair[0])
                    if key not in seen:
                        seen.add(key)
                        merged.append(pair)
        for key_node, _ in own:
            if key_node.tag == "tag:yaml.org,2002:value":  # PyYAML's `=` key reads as a string
                key_node.tag = _STR
        node.value = merged + own

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """A scalar its tag cannot read (`!!int abc`, `!!bool maybe`) is a YAML error at its place,
        not a bare ValueError."""
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} is not a valid {node.tag.rsplit(':', 1)[-1]}", node.start_mark
            ) from exc

    def construct_document(self, node: yaml.Node) -> Any:
        """The documents resources are (mappings, sequences, strings, numbers, booleans; anchors,
        aliases and merge keys) built directly: PyYAML's general construction costs most of reading
        10,000 routes. Anything else (recursive structures, sets, other tags, errors) takes the
        general path, and so do documents nested deeper than Python's recursion limit allows this
        (PyYAML's construction is iterative; libyaml refuses what is deeper than 1,000 levels)."""
        try:
            return self._plain(node, {})
        except (_NotPlain, RecursionError):
            return super().construct_document(node)

    def _plain(self, node: yaml.Node, built: dict[int, Any]) -> Any:
        """`built`: the collections built so far, by node (an alias is the anchored node again, and
        stands for the same object, as in PyYAML); None while a node is being built."""
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _STR:
                # One object per distinct short text (a kind, a namespace, a header name, a group:
                # repeated in every document), not one per occurrence: 7 MB less at 10,000 routes.
                text: str = node.value
                return _intern(text) if len(text) <= 64 else text
            construct = _PLAIN_SCALARS.get(node.tag)
            if construct is None:
                raise _NotPlain
            try:
                return construct(self, node)
            except Exception as exc:  # `!!int abc`: the general path names the value and its place
                raise _NotPlain from exc
        if id(node) in built:
            if built[id(node)] is None:  # a node inside itself
                raise _NotPlain
            return built[id(node)]
        built[id(node)] = None
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
            value: Any = [self._plain(item, built) for item in node.value]
        elif isinstance(node, yaml.MappingNode) and node.tag == _MAP:
            value = self._mapping(node, built)
        else:
            raise _NotPlain
        built[id(node)] = value
        return value

    def _mapping(self, node: yaml.MappingNode, built: dict[int, Any]) -> dict[Any, Any]:
        """A mapping, its merge keys (`<<: *a` or `<<: [*a, *b]`) as YAML defines them: a key of the
        mapping itself wins over merged ones, and an earlier merged mapping over a later one."""
        merged: dict[Any, Any] = {}
        own: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _NotPlain
            if key_node.tag == _MERGE:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        raise _NotPlain  # the general path says what is wrong
                    for key, value in self._plain(source, built).items():
                        merged.setdefault(key, value)
                continue
            key = self._plain(key_node, built)
            if key in own:  # the general path names the key and its position
                raise _NotPlain
            own[key] = self._plain(value_node, built)
        if not merged:
            return own
        merged.update(own)
        return merged

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: Any) -> str:
        """The tag of an untagged node, as the resolver finds it. A scalar that is quoted, or whose
        first character starts no implicit type (most names: `b12`, `default`, `model-7`), is a
        string without trying the resolver's patterns; the others are remembered when short (most of
        a file's are the same few words: kinds, API versions, booleans, ports)."""
        if self.yaml_path_resolvers:
            return self._resolve(kind, value, implicit)
        if kind is not yaml.ScalarNode:  # a collection's default tag (as the resolver gives it)
            return _MAP if kind is yaml.MappingNode else _SEQ
        if not isinstance(value, str):
            return self._resolve(kind, value, implicit)
        if not implicit[0] or (value[:1] not in _FIRST_CHARACTERS and not _ANY_FIRST_CHARACTER):
            return _STR
        if len(value) > 64:
            return self._resolve(kind, value, implicit)
        key = (value, tuple(implicit))
        tag = _RESOLVED.get(key)
        if tag is None:
            if len(_RESOLVED) >= 50_000:
                _RESOLVED.clear()
            tag = _RESOLVED[key] = self._resolve(kind, value, implicit)
        return tag

    def _resolve(self, kind: type[yaml.Node], value: Any, implicit: Any) -> str:
        return str(super().resolve(kind, value, implicit))  # type: ignore[no-untyped-call]


def _key_of_node(node: yaml.Node) -> object:
    """What tells merged keys apart: a scalar's tag and text; any other key node is itself."""
    return (node.tag, node.value) if isinstance(node, yaml.ScalarNode) else id(node)


class _NotPlain(Exception):
    """The document needs PyYAML's general construction."""


_intern = sys.intern  # interned strings go when nothing refers to them any more
_STR, _SEQ, _MAP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"
_PLAIN_SCALARS = {
    tag: _SafeLoader.yaml_constructors[tag]
    for tag in (
        "tag:yaml.org,2002:null",
        "tag:yaml.org,2002:bool",
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float",
        "tag:yaml.org,2002:binary",
        "tag:yaml.org,2002:timestamp",
    )
}
_RESOLVED: dict[tuple[str, tuple[bool, bool]], str] = {}
# The first characters of the plain scalars some implicit type (bool, int, float, null, timestamp,
# merge, ...) may match: any other plain scalar is a string. A resolver keyed by None would apply
# to every scalar (the safe loader has none): then none is taken for a string this way.
_FIRST_CHARACTERS: frozenset[str | None] = frozenset(_SafeLoader.yaml_implicit_resolvers)
_ANY_FIRST_CHARACTER = None in _FIRST_CHARACTERS


class YAMLSyntaxError(ValueError):
    """The text is not valid YAML; the message names the line and column (the file is named by
    the diagnostic's origin)."""


def split_documents(text: str) -> list[tuple[int, Any]]:
    """The YAML documents of a file with their 1-based index; empty documents are skipped."""
    documents = ((index, _construct(loader, node)) for index, node, loader in _document_nodes(text))
    return [(index, doc) for index, doc in documents if doc is not None]


def _document_nodes(text: str) -> Iterator[tuple[int, yaml.Node, _StrictLoader]]:
    """Each document's node (1-based index, empty documents counted) and the loader to build it with."""
    loader = _StrictLoader(text)
    try:
        index = 0
        while loader.check_node():
            index += 1
            node = loader.get_node()
            assert node is not None  # check_node said there is one
            yield index, node, loader
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, text) from exc
    finally:
        loader.dispose()


def _construct(loader: _StrictLoader, node: yaml.Node) -> Any:
    try:
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _syntax_error(exc) from exc


def _syntax_error(exc: yaml.YAMLError, text: str = "") -> YAMLSyntaxError:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc)
    if mark and problem == "found undefined alias":  # libyaml's message leaves the name out
        alias = _ALIAS.match(text, mark.index)
        if alias:
            problem += f" {alias.group(1)!r}"
    # Where the parser was when it met the problem: often where the mistake is (a quote opened on
    # one line is found unclosed at the next document marker, or at the end of the file).
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark and (mark is None or context_mark.index != mark.index):
        problem += f" ({context} at line {context_mark.line + 1}, column {context_mark.column + 1})"
    return YAMLSyntaxError(f"invalid YAML{where}: {problem}")


_ALIAS = re.compile(r"\*([^\s,\[\]{}]+)")


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
    *,
    substitute: bool = True,
) -> Decoded:
    """Validate one parsed document against the model of its kind. Secrets get their
    substitutions (environment variables, files) applied first, unless `substitute` is off (objects
    read from the Kubernetes API: the control plane's own environment and files are not theirs)."""
    if not isinstance(doc, dict):
        return Decoded(origin, None, None, (error(f"a document must be a mapping, got {type(doc).__name__}", origin),))
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    key = _key_of(doc)
    if not isinstance(kind, str) or not isinstance(api_version, str):
        missing = "kind" if not isinstance(kind, str) else "apiVersion"
        return Decoded(origin, key, None, (error(f"{missing} is missing", origin, key, missing),))
    if kind in IGNORED_KINDS or kind in KUBERNETES_KINDS:
        reason = IGNORED_KINDS.get(kind, "Kubernetes workload kinds are not read by aigw-xds")
        return Decoded(origin, key, None, (warning(f"ignored ({reason})", origin, key),))
    if kind not in MODELS:
        return Decoded(origin, key, None, (warning(f"unknown kind {kind} ({api_version}), skipped", origin, key),))
    versions, model = MODELS[kind]
    if api_version not in versions:
        msg = f"unknown apiVersion {api_version} for {kind} (expected one of {', '.join(versions)})"
        return Decoded(origin, key, None, (error(msg, origin, key, "apiVersion"),))
    if key is None:
        return Decoded(origin, None, None, (error(f"{kind}: metadata.name is missing", origin, None, "metadata.name"),))
    if kind == "Secret" and substitute:
        doc = substitute_secret(doc, env or {}, read_file)
    try:
        resource = model.model_validate(doc, context=COMPACT)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        diags = tuple(error(_message(e, model), origin, key, field_path(e["loc"])) for e in errors)
        return Decoded(origin, key, None, diags)
    return Decoded(origin, key, Loaded(key, resource, origin))


def _message(err: ErrorDetails, model: type[BaseModel]) -> str:
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "extra_forbidden":
        given = err["loc"][-1] if err["loc"] else None
        close = difflib.get_close_matches(str(given), _fields_at(model, err["loc"][:-1]), n=1, cutoff=0.75)
        return f"unknown field (did you mean {close[0]}?)" if close else "unknown field"
    return msg


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The fields (as written: their aliases) of the model found at `loc` under `model`; none when
    the way there is not one of models (a union's member, a dict's key)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):  # an item of the list the previous field holds
            continue
        fields = current.model_fields if isinstance(current, type) and issubclass(current, BaseModel) else {}
        found = next((f for name, f in fields.items() if part in (name, f.alias)), None)
        if found is None:
            return []
        current = _model_in(found.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _model_in(annotation: Any) -> Any:
    """The model an annotation names: itself, or the one inside an Optional or a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [m for m in map(_model_in, typing.get_args(annotation)) if m is not None]
    return models[0] if len(models) == 1 else None


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


_DOCUMENT_START = re.compile(r"^---(?=[ \t\r\n]|$)", re.MULTILINE)


def _pieces(text: str) -> list[str]:
    cuts = [m.start() for m in _DOCUMENT_START.finditer(text) if m.start() > 0]
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True) if b > a]


def decode_file(
    text: str,
    file: str,
    env: Mapping[str, str] | None = None,
    read_file: Callable[[str], str] | None = None,
    earlier: DecodedFile | None = None,
) -> DecodedFile:
    """decode_text, reusing what `earlier` (the same file's last decoding) decoded unchanged pieces
    to. Raises YAMLSyntaxError when the file does not parse."""
    if text.startswith("%") or "\n%" in text:
        return _decoded_whole(text, file, env, read_file)
    kept = {p.digest: p for p in earlier.pieces if p.reusable} if earlier is not None else {}
    documents: list[Decoded] = []
    pieces: list[_Piece] = []
    for piece_text in _pieces(text):
        digest = hashlib.blake2b(piece_text.encode(), digest_size=16).digest()
        before = pieces[-1].first + pieces[-1].count - 1 if pieces else 0  # documents before it
        piece = kept.get(digest)
        if piece is None or piece.first != before + 1:
            try:
                piece = _decode_piece(piece_text, digest, before, file, env, read_file)
            except YAMLSyntaxError:
                # The file as one stream: raises the error where the file has it (the piece's line
                # is relative), or reads what a piece alone cannot (a directive after a BOM or a
                # line break other than \n).
                return _decoded_whole(text, file, env, read_file)
        documents.extend(piece.documents)
        pieces.append(piece)
    return DecodedFile(tuple(documents), tuple(pieces))


def _decoded_whole(
    text: str, file: str, env: Mapping[str, str] | None, read_file: Callable[[str], str] | None
) -> DecodedFile:
    """Every document of the file parsed as one stream (nothing kept for the next read)."""
    whole = (decode_document(doc, Origin(file, index), env, read_file) for index, doc in split_documents(text))
    return DecodedFile(tuple(whole))


def _decode_piece(
    text: str,
    digest: bytes,
    before: int,
    file: str,
    env: Mapping[str, str] | None,
    read_file: Callable[[str], str] | None,
) -> _Piece:
    documents = []
    count = 0
    for count, node, loader in _document_nodes(text):  # count: how many documents it holds
        doc = _construct(loader, node)
        if doc is not None:
            documents.append(decode_document(doc, Origin(file, before + count), env, read_file))
    reusable = all(d.key is None or d.key.kind != "Secret" for d in documents)
    return _Piece(digest, before + 1, count, tuple(documents), reusable)
