"""YAML text -> plain Python documents (dicts, lists, scalars): the parsing half of decoding, with
nothing of the resource models, so that a worker process can import it alone (parse_worker.py).

Safe loading with libyaml's C parser, strict about keys given twice; YAML errors carry the line and
column where the parser found them.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import yaml

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
    # Where the parser was when it met the problem: often where the mistake is. A quote opened on
    # one line is found unclosed at the next document marker, or at the end of the file: the
    # message leads with where it opens (a new user looked at the end of the file first).
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark and (mark is None or context_mark.index != mark.index):
        opened = f" at line {context_mark.line + 1}, column {context_mark.column + 1}"
        if context == "while scanning a quoted scalar":
            return YAMLSyntaxError(f"invalid YAML{opened}: a quoted string is not closed ({problem}{where})")
        problem += f" ({context}{opened})"
    return YAMLSyntaxError(f"invalid YAML{where}: {problem}")


_ALIAS = re.compile(r"\*([^\s,\[\]{}]+)")


_DOCUMENT_START = re.compile(r"^---(?=[ \t\r\n]|$)", re.MULTILINE)


def pieces(text: str) -> list[str]:
    """The text cut before each line that starts a document (`---` at column 0, which YAML allows
    nowhere else): each piece parses alone as it does in the whole text."""
    cuts = [m.start() for m in _DOCUMENT_START.finditer(text) if m.start() > 0]
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True) if b > a]


def has_directives(text: str) -> bool:
    """Whether the text has YAML directives (`%TAG` changes what a tag means in every document
    after it): then it is parsed whole, never in pieces."""
    return text.startswith("%") or "\n%" in text


ParsedPiece = tuple[int, list[tuple[int, Any]]]
# A text's pieces parsed elsewhere (parse_worker.py), by their index and digest (piece_digest: a
# piece parsed elsewhere is used only if it is the same text); None: parse it here.
ParsedPieces = Callable[[int, bytes], ParsedPiece | None]


def piece_digest(text: str) -> bytes:
    """What a piece's text is known by: what an edited file reuses, and how a piece parsed elsewhere
    is checked to be the one meant."""
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def parse_piece(text: str) -> ParsedPiece:
    """A piece's documents (pieces): how many it holds, empty ones counted, and the non-empty ones
    with their 1-based index in the piece. Raises YAMLSyntaxError."""
    count, documents = 0, []
    for count, node, loader in _document_nodes(text):
        doc = _construct(loader, node)
        if doc is not None:
            documents.append((count, doc))
    return count, documents


def parse_pieces(text: str) -> list[tuple[bytes, ParsedPiece]] | None:
    """The text's pieces parsed, each with its digest; None when one does not parse or the text has
    directives (the decoder then parses the text whole, and says where the error is in the file)."""
    if has_directives(text):
        return None
    try:
        return [(piece_digest(piece), parse_piece(piece)) for piece in pieces(text)]
    except YAMLSyntaxError:
        return None
