"""Located value trees: YAML text or plain data, with an ``Origin`` on every node.

The loader decodes typed configuration from these trees instead of from
PyYAML's nodes or plain dicts, so one set of decoding rules (and one set of
error messages) serves YAML files, command-line overrides and the raw options
that middleware types decode later.

Invariants kept here:

* scalars are typed the YAML 1.1 way PyYAML resolves them (null, bool, int,
  float), every other plain scalar stays text (timestamps included), and each
  scalar keeps its source spelling so a string field can take ``80`` or ``no``
  literally, as Go's YAML decoder does;
* a mapping never holds the same key twice (PyYAML would keep the last one
  silently; Go's yaml.v3 rejects it), and merge keys (``<<: *base``) are
  expanded with explicit keys taking precedence;
* tags outside YAML's core set are rejected: configuration never constructs
  Python objects;
* YAML text is read by LibYAML when PyYAML has it, and the tree is the one
  the pure-Python reader builds (only an empty value in a flow mapping may sit
  on another line); what LibYAML refuses, or the fast path leaves alone, is
  read again the pure-Python way, so errors keep PyYAML's words.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from gateway.config.errors import ConfigError, Origin
from gateway.config.model import frozen_map

COMMAND_LINE = Origin("<command line>")

_YAML = "tag:yaml.org,2002:"
_MERGE = _YAML + "merge"
_TEXT_TAGS = frozenset({_YAML + "str", _YAML + "timestamp", _YAML + "binary", _MERGE})
_MAP_TAGS = frozenset({_YAML + "map", _YAML + "set"})
_SEQ_TAGS = frozenset({_YAML + "seq", _YAML + "omap", _YAML + "pairs"})
_NULL = _YAML + "null"
_STR = _YAML + "str"
_constructor = SafeConstructor()
_CONSTRUCT: dict[str, Callable[[yaml.ScalarNode], object]] = {
    _YAML + "bool": _constructor.construct_yaml_bool,
    _YAML + "int": _constructor.construct_yaml_int,
    _YAML + "float": _constructor.construct_yaml_float,
}
_KNOWN_SCALAR_TAGS = _TEXT_TAGS | {_NULL, *_CONSTRUCT}
# types-PyYAML leaves Resolver.resolve untyped.
_resolve: Callable[[type[yaml.Node], str, tuple[bool, bool]], str] = (
    yaml.resolver.Resolver().resolve
)
# Implicit resolvers by the first character of the plain scalars they may type
# (the empty one is null); a plain scalar no resolver applies to is a string.
_RESOLVERS = yaml.resolver.Resolver.yaml_implicit_resolvers
# LibYAML's parser, when PyYAML was built with it (pip's wheels are).
_CParser: Any = getattr(yaml, "CSafeLoader", None)
# Events come from LibYAML untyped; ``type(e) is _ScalarEvent`` is the hot test.
_ScalarEvent: type[Any] = yaml.ScalarEvent


@dataclass(frozen=True, slots=True)
class Scalar:
    """A null, bool, int, float or str, with its source spelling."""

    value: object
    text: str
    origin: Origin | None
    # From a command-line override: lists may be written "a,b" and a section
    # may be switched on with "true", as Traefik's flags allow.
    flag: bool = False


@dataclass(frozen=True, slots=True)
class Seq:
    items: tuple[Node, ...]
    origin: Origin | None


@dataclass(frozen=True, slots=True)
class Entry:
    """One ``key: value`` pair; ``origin`` is where the key is written."""

    key: str
    origin: Origin | None
    value: Node


@dataclass(frozen=True, slots=True)
class Map:
    entries: tuple[Entry, ...]
    origin: Origin | None


Node = Scalar | Seq | Map


def is_null(node: Node) -> bool:
    return isinstance(node, Scalar) and node.value is None


def describe(node: Node) -> str:
    """How a node is named in "expected X, got Y" messages."""
    if isinstance(node, Map):
        return "a mapping"
    if isinstance(node, Seq):
        return "a list"
    value = node.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({node.text})"
    if isinstance(value, int):
        return f"an integer ({node.text})"
    if isinstance(value, float):
        return f"a number ({node.text})"
    return f'"{node.text}"'


# --- YAML ---------------------------------------------------------------------


def compose(text: str, file: str) -> Node | None:
    """Parse one YAML document; ``None`` for an empty file.

    A stream of several documents is refused rather than silently merged:
    Traefik's file provider reads one document per file, and a stray ``---``
    is more often a mistake than an intent. Empty documents (a trailing
    ``---``) are ignored.

    With LibYAML, the tree is built straight from its event stream: composing
    PyYAML nodes first (or using the pure-Python scanner) made a 10,000-router
    file take seconds. LibYAML reads a little more than PyYAML's scanner does
    (a tab as separating space, ``?`` inside a flow scalar); Go's yaml.v3,
    which Traefik uses, is a port of LibYAML, so those files now load as they
    do in Traefik.
    """
    # A byte-order mark past the start is text to PyYAML, not to LibYAML.
    if _CParser is not None and text.find("\ufeff", 1) < 0:
        # Imported here: the event builder reuses this module's rules.
        from gateway.config.yaml_events import EventBuilder, Fallback

        try:
            return EventBuilder(text, file).document()
        except (yaml.YAMLError, Fallback):
            pass
    return _compose_python(text, file)


def _compose_python(text: str, file: str) -> Node | None:
    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        raise syntax_error(exc, file) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", origin=Origin(file)) from None
    documents = [d for d in documents if not _empty_document(d)]
    if not documents:
        return None
    if len(documents) > 1:
        raise _several_documents(_origin(documents[1], file))
    return from_yaml(documents[0], file)


def _several_documents(origin: Origin) -> ConfigError:
    return ConfigError(
        "several YAML documents in one file are not supported; split them into separate files",
        origin=origin,
    )


def syntax_error(exc: yaml.MarkedYAMLError, file: str) -> ConfigError:
    """A ConfigError carrying PyYAML's problem text and 1-based line."""
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 0
    problem = exc.problem or "syntax error"
    if exc.context:
        problem = f"{exc.context}: {problem}"
    return ConfigError(f"invalid YAML: {problem}", origin=Origin(file, line))


def _empty_document(node: yaml.Node | None) -> bool:
    return node is None or (
        isinstance(node, yaml.ScalarNode) and node.tag == _NULL and not node.value
    )


def _origin(node: yaml.Node, file: str) -> Origin:
    return Origin(file, node.start_mark.line + 1)


def from_yaml(node: yaml.Node, file: str) -> Node:
    """Convert a composed PyYAML node (aliases expanded) into a located tree."""
    return _YamlConverter(file).convert(node)


class _YamlConverter:
    def __init__(self, file: str) -> None:
        self.file = file
        # Nodes being converted: an alias back into one of them is a cycle.
        self.active: set[int] = set()

    def convert(self, node: yaml.Node) -> Node:
        origin = _origin(node, self.file)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, origin)
        if id(node) in self.active:
            raise ConfigError("recursive YAML alias", origin=origin)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                self.check_tag(node, _SEQ_TAGS, origin)
                return Seq(tuple(self.convert(item) for item in node.value), origin)
            if isinstance(node, yaml.MappingNode):
                self.check_tag(node, _MAP_TAGS, origin)
                return Map(self.entries(node), origin)
        finally:
            self.active.discard(id(node))
        raise ConfigError(f"unsupported YAML node {type(node).__name__}", origin=origin)

    def check_tag(self, node: yaml.Node, allowed: frozenset[str], origin: Origin) -> None:
        if node.tag not in allowed:
            raise ConfigError(f"unsupported YAML tag {node.tag}", origin=origin)

    def scalar(self, node: yaml.ScalarNode, origin: Origin) -> Scalar:
        return Scalar(scalar_value(node.tag, node.value, origin), str(node.value), origin)

    def entries(self, node: yaml.MappingNode) -> tuple[Entry, ...]:
        own: dict[str, Entry] = {}
        merged: dict[str, Entry] = {}
        for key_node, value_node in node.value:
            origin = _origin(key_node, self.file)
            if key_node.tag == _MERGE:
                for entry in self.merge_sources(value_node):
                    merged.setdefault(entry.key, entry)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError("mapping keys must be plain scalars", origin=origin)
            key = str(key_node.value)
            if key in own:
                first = own[key].origin
                line = first.line if first else 0
                raise ConfigError(f'duplicate key "{key}" (first at line {line})', origin=origin)
            own[key] = Entry(key, origin, self.convert(value_node))
        inherited = [e for k, e in merged.items() if k not in own]
        return (*inherited, *own.values())

    def merge_sources(self, node: yaml.Node) -> list[Entry]:
        # YAML merge: a mapping or a list of mappings; earlier ones win.
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        found: list[Entry] = []
        for source in sources:
            converted = self.convert(source)
            if not isinstance(converted, Map):
                raise ConfigError(
                    "a merge key (<<) needs a mapping or a list of mappings",
                    origin=converted.origin,
                )
            found.extend(converted.entries)
        return found


def scalar_value(tag: str, text: str, origin: Origin | None) -> object:
    """The value of a scalar with resolved ``tag``; other tags are errors."""
    if tag in _TEXT_TAGS:
        return text
    if tag == _NULL:
        return None
    construct = _CONSTRUCT.get(tag)
    if construct is None:
        raise ConfigError(f"unsupported YAML tag {tag}", origin=origin)
    try:
        return construct(yaml.ScalarNode(tag, text))
    except (ValueError, KeyError, IndexError):  # a tag its text does not fit: !!int abc
        raise ConfigError(f'"{text}" is not a valid !!{tag[len(_YAML) :]}', origin=origin) from None


# --- Plain Python -------------------------------------------------------------


def from_python(value: Any, origin: Origin | None) -> Node:
    """Wrap already-loaded data (mappings, sequences, scalars) as a tree.

    Every node gets the same ``origin``: plain data has no lines of its own.
    """
    if isinstance(value, Mapping):
        return Map(
            tuple(Entry(str(k), origin, from_python(v, origin)) for k, v in value.items()),
            origin,
        )
    if isinstance(value, (list, tuple)):
        return Seq(tuple(from_python(v, origin) for v in value), origin)
    if value is None:
        return Scalar(None, "null", origin)
    if isinstance(value, bool):
        return Scalar(value, "true" if value else "false", origin)
    if isinstance(value, (int, float, str)):
        return Scalar(value, str(value), origin)
    raise ConfigError(f"unsupported value of type {type(value).__name__}", origin=origin)


def scalar_from_text(text: str, origin: Origin | None, *, flag: bool = False) -> Scalar:
    """Type a bare string the way YAML types a plain scalar ("3" → 3)."""
    tag = _resolve(yaml.ScalarNode, text, (True, False))
    return Scalar(scalar_value(tag, text, origin or COMMAND_LINE), text, origin, flag)


def to_raw(node: Node) -> Any:
    """Plain frozen data: mappings become read-only maps, lists tuples."""
    if isinstance(node, Map):
        return frozen_map({e.key: to_raw(e.value) for e in node.entries})
    if isinstance(node, Seq):
        return tuple(to_raw(item) for item in node.items)
    return node.value
