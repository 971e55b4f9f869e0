"""Loading static and dynamic configuration from YAML, with located errors.

This module owns the public entry points; the decoding rules live in
``decoder`` and the located value trees in ``yaml_nodes``. Every failure is a
``ConfigError`` naming the file (or ``<command line>``), the 1-based line and
the dotted key path (``http.routers.api.service``).

Decisions kept here:

* one YAML document per file: a second ``---`` document is an error, not a
  silent merge (an empty trailing document is fine);
* an empty file is an empty configuration;
* command-line overrides are Traefik-style dotted keys whose values are typed
  as YAML scalars, applied on top of the file; their key segments match the
  model ignoring case (Traefik's own flags are written ``--entrypoints.web``);
* several dynamic files combine the way Traefik's file provider combines a
  directory, except that a name defined twice is an error naming both places
  instead of a warning that keeps the first.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import yaml

from gateway.config.decoder import (
    Decoder,
    class_spec,
    field_type,
    is_model,
    join,
    parse_duration,
)
from gateway.config.dynamic import DynamicConfig
from gateway.config.errors import ConfigError, Origin
from gateway.config.merge import collection_paused, combine
from gateway.config.static import StaticConfig
from gateway.config.yaml_nodes import (
    COMMAND_LINE,
    Entry,
    Map,
    Node,
    Scalar,
    compose,
    from_python,
    from_yaml,
    is_null,
    scalar_from_text,
)

__all__ = [
    "decode",
    "decode_value",
    "load_dynamic_paths",
    "load_static",
    "parse_duration",
    "parse_dynamic",
    "parse_static",
    "read_text",
]

T = TypeVar("T")


def decode(cls: type[T], node: yaml.Node | None, *, file: str, path: str = "") -> T:
    """Decode a composed PyYAML node (or ``None``: all defaults) into ``cls``."""
    tree = from_yaml(node, file) if node is not None else Map((), Origin(file))
    result: T = Decoder().decode(cls, tree, path, tree.origin)
    return result


def decode_value(cls: type[T], value: Any, *, origin: Origin | None, path: str) -> T:
    """Decode already-loaded plain data (such as raw middleware options).

    Same rules and messages as for YAML; every error names ``origin`` (plain
    data has no lines of its own) and the key path below ``path``.
    """
    result: T = Decoder().decode(cls, from_python(value, origin), path, origin)
    return result


# --- Static configuration ------------------------------------------------------


def parse_static(text: str, file: str, overrides: Sequence[tuple[str, str]] = ()) -> StaticConfig:
    """The static configuration in ``text``, with command-line overrides on top."""
    tree = compose(text, file) or Map((), Origin(file))
    for key, value in overrides:
        tree = _override(tree, StaticConfig, key, value)
    result: StaticConfig = Decoder().decode(StaticConfig, tree, "", tree.origin)
    return result


def load_static(path: str | Path, overrides: Sequence[tuple[str, str]] = ()) -> StaticConfig:
    """Read and parse a static configuration file."""
    return parse_static(read_text(Path(path)), str(path), overrides)


def read_text(path: Path) -> str:
    """A configuration file's text, or a ConfigError naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason}", origin=Origin(str(path))) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot read: {reason}", origin=Origin(str(path))) from None


def _override(tree: Node, cls: type, key: str, value: str) -> Node:
    segments = key.split(".")
    if not key or any(not s for s in segments):
        raise ConfigError(f'invalid override key "{key}"', origin=COMMAND_LINE, path=key)
    leaf = scalar_from_text(value, COMMAND_LINE, flag=True)
    return _set(tree, cls, segments, leaf, "")


def _set(node: Node | None, tp: Any, segments: list[str], leaf: Scalar, path: str) -> Node:
    """``node`` with the value at ``segments`` replaced by ``leaf``."""
    if not segments:
        if isinstance(node, Map) and leaf.value is True:
            return node  # "--api=true" must not wipe api settings from the file
        return leaf
    if node is None or is_null(node):
        node = Map((), COMMAND_LINE)
    if not isinstance(node, Map):
        raise ConfigError(
            f"cannot set {'.'.join(segments)}: {path} is not a mapping here",
            origin=COMMAND_LINE,
            path=path,
        )
    head, rest = segments[0], segments[1:]
    tp = field_type(tp)
    child_type: Any = Any
    matches = _exact_key(head)
    if is_model(tp):
        spec = class_spec(tp).find(head)
        if spec is not None:
            head = spec.key
            child_type = spec.type
            matches = _field_key(spec.key)
    elif typing.get_origin(tp) in (Mapping, dict):
        child_type = typing.get_args(tp)[1]  # named children keep their spelling
    sub = join(path, head)
    entries = list(node.entries)
    for index, entry in enumerate(entries):
        if matches(entry.key):
            # The key keeps its file line unless the command line sets it outright.
            origin = entry.origin if rest else COMMAND_LINE
            entries[index] = Entry(
                entry.key, origin, _set(entry.value, child_type, rest, leaf, sub)
            )
            return Map(tuple(entries), node.origin)
    entries.append(Entry(head, COMMAND_LINE, _set(None, child_type, rest, leaf, sub)))
    return Map(tuple(entries), node.origin)


def _exact_key(name: str) -> Callable[[str], bool]:
    return lambda key: key == name


def _field_key(name: str) -> Callable[[str], bool]:
    lowered = name.lower()
    return lambda key: key.lower() == lowered


# --- Dynamic configuration -----------------------------------------------------


def parse_dynamic(text: str, file: str) -> DynamicConfig:
    """One dynamic configuration file, with the origin of every key path."""
    tree = compose(text, file)
    if tree is None:
        return DynamicConfig()
    origins: dict[str, Origin] = {}
    config: DynamicConfig = Decoder(origins).decode(DynamicConfig, tree, "", tree.origin)
    # The dict is this call's own: wrapping it read-only spares a copy of
    # every key path (50,000 for 10,000 routers).
    return dataclasses.replace(config, origins=MappingProxyType(origins))


def load_dynamic_paths(paths: Sequence[Path]) -> DynamicConfig:
    """Parse several dynamic files, in the order given, into one snapshot."""
    with collection_paused():
        return combine([parse_dynamic(read_text(p), str(p)) for p in paths])
