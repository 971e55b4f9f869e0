"""LibYAML's event stream turned straight into located trees: the fast path of ``compose``.

``EventBuilder`` applies the same rules as ``yaml_nodes._YamlConverter`` (typed
scalars, no duplicate keys, merge keys, core tags only) while reading
LibYAML's events, without composing PyYAML nodes first; that is what makes a
10,000-router file load in a fraction of a second. Whatever it does not
handle raises ``Fallback`` (or LibYAML's own error), and ``yaml_nodes.compose``
reads the text again the pure-Python way, so error messages keep PyYAML's words.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from gateway.config.errors import ConfigError, Origin
from gateway.config.yaml_nodes import (
    _KNOWN_SCALAR_TAGS,
    _MAP_TAGS,
    _MERGE,
    _NULL,
    _RESOLVERS,
    _SEQ_TAGS,
    _STR,
    Entry,
    Map,
    Node,
    Scalar,
    Seq,
    _CParser,
    _resolve,
    _ScalarEvent,
    scalar_value,
)


class Fallback(Exception):
    """Input the event builder leaves to the pure-Python path."""


class EventBuilder:
    """Builds the located tree from LibYAML's events, with ``_YamlConverter``'s rules.

    Anchored or aliased keys, complex keys, undefined or repeated anchors,
    tags outside YAML's core set (LibYAML reads some tags PyYAML refuses) and
    anything LibYAML refuses raise ``Fallback`` or ``yaml.YAMLError``; the
    caller then takes the pure-Python path, which words those errors.
    """

    def __init__(self, text: str, file: str) -> None:
        self.next: Callable[[], Any] = _CParser(text).get_event
        self.file = file
        self.lines: dict[int, Origin] = {}  # one Origin per line, shared
        self.anchors: dict[str, Node] = {}
        self.open: dict[str, Origin] = {}  # anchors of the nodes being built
        self.tags: dict[str, str] = {}  # plain scalar text -> resolved tag

    def origin(self, event: Any) -> Origin:
        line: int = event.start_mark.line
        found = self.lines.get(line)
        if found is None:
            found = self.lines[line] = Origin(self.file, line + 1)
        return found

    def document(self) -> Node | None:
        found: Node | None = None
        self.next()  # stream start
        while not isinstance(self.next(), yaml.StreamEndEvent):  # a document start
            root = self.next()
            if self.empty(root):
                self.next()  # document end
                continue
            if found is not None:
                raise Fallback  # several documents: worded by the pure-Python path
            try:
                found = self.node(root)
            except ConfigError:
                # The pure-Python path composes the whole stream before it
                # converts anything, so its YAML errors come first.
                self.drain()
                raise
            self.next()  # document end
            self.anchors.clear()
            self.open.clear()
        return found

    def empty(self, root: Any) -> bool:
        return type(root) is yaml.ScalarEvent and not root.value and self.tag(root) == _NULL

    def drain(self) -> None:
        """Read to the end; anything the pure-Python path could word differently falls back."""
        while True:
            event = self.next()
            kind = type(event)
            if kind is yaml.StreamEndEvent:
                return
            if kind is yaml.AliasEvent or getattr(event, "anchor", None) is not None:
                raise Fallback
            if kind is yaml.DocumentStartEvent and not self.empty(self.next()):
                raise Fallback

    def tag(self, event: Any) -> str:
        tag: str | None = event.tag
        if tag is not None:
            if tag == "!":
                raise Fallback  # LibYAML and PyYAML resolve "!" differently
            return tag
        if not event.implicit[0]:
            return _STR
        text: str = event.value
        found = self.tags.get(text)
        if found is None:
            found = self.tags[text] = _resolve(yaml.ScalarNode, text, event.implicit)
        return found

    def scalar(self, event: Any) -> Scalar:
        line: int = event.start_mark.line
        origin = self.lines.get(line) or self.line(line)
        text: str = event.value
        if event.tag is None and (
            not event.implicit[0] or (text[:1] not in _RESOLVERS and None not in _RESOLVERS)
        ):
            return Scalar(text, text, origin)  # a string: no resolver applies
        tag = self.tag(event)
        if tag not in _KNOWN_SCALAR_TAGS:
            raise Fallback
        return Scalar(scalar_value(tag, text, origin), text, origin)

    def line(self, line: int) -> Origin:
        found = self.lines[line] = Origin(self.file, line + 1)
        return found

    def node(self, event: Any) -> Node:
        kind = type(event)
        if kind is _ScalarEvent and event.anchor is None:
            return self.scalar(event)
        if kind is yaml.AliasEvent:
            anchor = event.anchor
            if anchor in self.open:
                raise ConfigError("recursive YAML alias", origin=self.open[anchor])
            if anchor not in self.anchors:
                raise Fallback
            return self.anchors[anchor]
        anchor = event.anchor
        if anchor is not None:
            if anchor in self.anchors or anchor in self.open:
                raise Fallback
            self.open[anchor] = self.origin(event)
        node: Node
        if kind is _ScalarEvent:
            node = self.scalar(event)
        elif kind is yaml.MappingStartEvent:
            node = self.mapping(event)
        elif kind is yaml.SequenceStartEvent:
            node = self.sequence(event)
        else:
            raise Fallback
        if anchor is not None:
            del self.open[anchor]
            self.anchors[anchor] = node
        return node

    def sequence(self, start: Any) -> Seq:
        origin = self.origin(start)
        if start.tag is not None and start.tag not in _SEQ_TAGS:
            raise Fallback
        items: list[Node] = []
        next_event, node, scalar = self.next, self.node, self.scalar
        item = next_event()
        while type(item) is not yaml.SequenceEndEvent:
            if type(item) is _ScalarEvent and item.anchor is None:
                items.append(scalar(item))
            else:
                items.append(node(item))
            item = next_event()
        return Seq(tuple(items), origin)

    def mapping(self, start: Any) -> Map:
        origin = self.origin(start)
        if start.tag is not None and start.tag not in _MAP_TAGS:
            raise Fallback
        own: dict[str, Entry] = {}
        merged: dict[str, Entry] = {}
        next_event, node, scalar, lines = self.next, self.node, self.scalar, self.lines
        while True:
            event: Any = next_event()
            if type(event) is not _ScalarEvent or event.anchor is not None:
                if type(event) is yaml.MappingEndEvent:
                    break
                raise Fallback  # an alias, an anchor or a collection as a key
            line: int = event.start_mark.line
            at = lines.get(line) or self.line(line)
            key: str = event.value
            if key == "<<" or event.tag is not None:
                tag = self.tag(event)
                if tag == _MERGE:
                    for entry in self.merge_sources(next_event()):
                        merged.setdefault(entry.key, entry)
                    continue
                if tag not in _KNOWN_SCALAR_TAGS:
                    raise Fallback
            if key in own:
                first = own[key].origin
                number = first.line if first else 0
                raise ConfigError(f'duplicate key "{key}" (first at line {number})', origin=at)
            value = next_event()
            if type(value) is _ScalarEvent and value.anchor is None:
                own[key] = Entry(key, at, scalar(value))
            else:
                own[key] = Entry(key, at, node(value))
        if merged:
            inherited = [e for k, e in merged.items() if k not in own]
            return Map((*inherited, *own.values()), origin)
        return Map(tuple(own.values()), origin)

    def merge_sources(self, event: Any) -> list[Entry]:
        if type(event) is yaml.SequenceStartEvent:
            if event.anchor is not None:
                raise Fallback
            event = self.next()
            sources = []
            while type(event) is not yaml.SequenceEndEvent:
                sources.append(self.merge_source(event))
                event = self.next()
            return [entry for entries in sources for entry in entries]
        return list(self.merge_source(event))

    def merge_source(self, event: Any) -> tuple[Entry, ...]:
        converted = self.node(event)
        if not isinstance(converted, Map):
            raise ConfigError(
                "a merge key (<<) needs a mapping or a list of mappings", origin=converted.origin
            )
        return converted.entries
