"""The typed decoder: located value trees into frozen configuration classes.

Decoding is driven only by the declarations in ``gateway.config.model`` and
the classes built with it: field types, ``yaml_key()``, ``Duration``,
``REQUIRED`` and ``ONE_OF``. No configuration class has a hand-written
parser, so a new field needs nothing here.

Rules kept for every input (YAML files, command-line overrides, raw options):

* keys match a field's YAML key exactly or, failing that, ignoring case, as
  Traefik's own decoder does (its documentation writes both ``healthCheck``
  and ``healthcheck``); anything else is an error with a suggestion;
* a null value means "not set": the field keeps its default, and a nested
  model given null gets its defaults;
* ints are never bools, durations are Go durations or numbers of seconds;
* every error is a ``ConfigError`` naming the origin and dotted key path, and
  a decoder given an ``origins`` dict records where each key path came from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Union

from gateway.config.dynamic import MiddlewareConfig
from gateway.config.errors import ConfigError, Origin, suggestion
from gateway.config.model import DurationMarker, frozen_map, yaml_key
from gateway.config.yaml_nodes import (
    Map,
    Node,
    Scalar,
    Seq,
    describe,
    is_null,
    scalar_from_text,
    to_raw,
)

_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string ("1h2m3.5s", "250ms", "0", "-1.5h").

    Raises ``ValueError`` for anything Go's ``time.ParseDuration`` rejects.
    """
    body = text.strip()
    sign = 1.0
    if body[:1] in ("+", "-"):
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(text)
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            raise ValueError(text)
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return sign * total


def join(path: str, key: str) -> str:
    """The dotted key path of ``key`` under ``path``."""
    return f"{path}.{key}" if path else key


# How one type is decoded: (decoder, node, key path, origin of the holding entry).
Plan = Callable[["Decoder", Node, str, "Origin | None"], Any]


@dataclasses.dataclass(frozen=True, slots=True)
class FieldSpec:
    """One decodable field: attribute name, YAML key, resolved type and its plan."""

    name: str
    key: str
    type: Any
    plan: Plan = dataclasses.field(compare=False, repr=False)


@dataclasses.dataclass(frozen=True, slots=True)
class ClassSpec:
    by_key: Mapping[str, FieldSpec]
    by_lower: Mapping[str, FieldSpec]
    required: tuple[FieldSpec, ...]
    one_of: tuple[FieldSpec, ...]

    def find(self, key: str) -> FieldSpec | None:
        return self.by_key.get(key) or self.by_lower.get(key.lower())


@functools.cache
def class_spec(cls: type) -> ClassSpec:
    """The decodable fields of a configuration class, resolved once."""
    hints = typing.get_type_hints(cls, include_extras=True)
    by_key: dict[str, FieldSpec] = {}
    by_name: dict[str, FieldSpec] = {}
    for f in dataclasses.fields(cls):
        # Origins are recorded by the loader, never read from the file.
        if not f.init or _mentions(hints[f.name], Origin):
            continue
        tp = hints[f.name]
        spec = FieldSpec(f.name, yaml_key(f), tp, plan(tp))
        by_key[spec.key] = spec
        by_name[f.name] = spec
    return ClassSpec(
        by_key=by_key,
        by_lower={k.lower(): s for k, s in by_key.items()},
        required=tuple(by_name[n] for n in getattr(cls, "REQUIRED", ())),
        one_of=tuple(by_name[n] for n in getattr(cls, "ONE_OF", ())),
    )


def _mentions(tp: Any, target: type) -> bool:
    return tp is target or any(_mentions(arg, target) for arg in typing.get_args(tp))


def _unwrap_optional(tp: Any) -> Any | None:
    """``X`` for ``X | None``, else None."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"unsupported union {tp!r}")
        return rest[0]
    return None


def field_type(tp: Any) -> Any:
    """The type a value is decoded as, with ``| None`` and ``Annotated`` removed."""
    inner = _unwrap_optional(tp)
    if inner is not None:
        tp = inner
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def is_model(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


@functools.cache
def plan(tp: Any) -> Plan:
    """How values of ``tp`` are decoded, worked out once per type.

    Reading the type on every value (``get_origin``, unions, ``Annotated``)
    cost more than decoding a 10,000-router file's values themselves.
    """
    if tp is Any:
        return lambda d, node, path, where: d.raw(node, path)
    inner = _unwrap_optional(tp)
    if inner is not None:
        return _optional(plan(inner), is_model(inner))
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *marks = typing.get_args(tp)
        if DurationMarker in marks:
            return lambda d, node, path, where: d.duration(node, path)
        return plan(base)
    if origin is tuple:
        item = plan(typing.get_args(tp)[0])
        return lambda d, node, path, where: d.sequence(item, node, path)
    if origin in (Mapping, dict):
        value_type = typing.get_args(tp)[1]
        if value_type is Any:
            return lambda d, node, path, where: d.raw_map(node, path)
        value = plan(value_type)
        return lambda d, node, path, where: d.named(value, node, path)
    if tp is MiddlewareConfig:
        return lambda d, node, path, where: d.middleware(node, path, where)
    if is_model(tp):
        return lambda d, node, path, where: d.model(tp, node, path, where)
    if tp in (str, int, float, bool):
        return lambda d, node, path, where: d.scalar(tp, node, path)

    def unknown(d: Decoder, node: Node, path: str, where: Origin | None) -> Any:
        raise TypeError(f"cannot decode {tp!r} at {path}")

    return unknown


def _optional(inner: Plan, of_model: bool) -> Plan:
    def optional(d: Decoder, node: Node, path: str, where: Origin | None) -> Any:
        if type(node) is Scalar:
            if node.value is None:
                return None
            if node.flag and node.value is False and of_model:
                return None
        return inner(d, node, path, where)

    return optional


class Decoder:
    """Decodes one tree; records key-path origins into ``origins`` if given."""

    def __init__(self, origins: dict[str, Origin] | None = None) -> None:
        self.origins = origins

    def record(self, path: str, origin: Origin | None) -> None:
        if self.origins is not None and origin is not None:
            self.origins.setdefault(path, origin)

    def decode(self, tp: Any, node: Node, path: str, where: Origin | None) -> Any:
        """Decode ``node`` as ``tp``; ``where`` is the entry that holds it."""
        return plan(tp)(self, node, path, where)

    # --- containers ---------------------------------------------------------

    def expect_map(self, node: Node, path: str) -> Map:
        if isinstance(node, Map):
            return node
        if is_null(node):
            return Map((), node.origin)
        raise ConfigError(
            f"expected a mapping, got {describe(node)}", origin=node.origin, path=path
        )

    def model(self, cls: type, node: Node, path: str, where: Origin | None) -> Any:
        if type(node) is Scalar and node.flag and node.value is True:
            node = Map((), node.origin)  # "--api=true" switches a section on
        mapping = node if type(node) is Map else self.expect_map(node, path)
        spec = class_spec(cls)
        by_key = spec.by_key
        origins = self.origins
        kwargs: dict[str, Any] = {}
        seen: dict[str, str] = {}
        for entry in mapping.entries:
            key = entry.key
            found = by_key.get(key) or spec.by_lower.get(key.lower())
            if found is None:
                hint = suggestion(key, by_key)
                raise ConfigError(f'unknown key "{key}"{hint}', origin=entry.origin, path=path)
            if found.key in seen:
                raise ConfigError(
                    f'"{key}" repeats "{seen[found.key]}"', origin=entry.origin, path=path
                )
            seen[found.key] = key
            sub = f"{path}.{found.key}" if path else found.key
            value = entry.value
            if origins is not None and entry.origin is not None:
                origins.setdefault(sub, entry.origin)
            if type(value) is Scalar and value.value is None:
                continue
            kwargs[found.name] = found.plan(self, value, sub, entry.origin)
        at = where or mapping.origin
        for required in spec.required:
            if required.name not in kwargs:
                raise ConfigError(f'missing required key "{required.key}"', origin=at, path=path)
        if spec.one_of:
            chosen = [f.key for f in spec.one_of if kwargs.get(f.name) is not None]
            if len(chosen) != 1:
                wanted = ", ".join(f'"{f.key}"' for f in spec.one_of)
                problem = (
                    f"only one of {wanted} may be set, got " + " and ".join(chosen)
                    if chosen
                    else f"expected one of {wanted}"
                )
                raise ConfigError(problem, origin=at, path=path)
        return cls(**kwargs)

    def named(self, value: Plan, node: Node, path: str) -> Mapping[str, Any]:
        mapping = node if type(node) is Map else self.expect_map(node, path)
        origins = self.origins
        out: dict[str, Any] = {}
        for entry in mapping.entries:
            sub = f"{path}.{entry.key}" if path else entry.key
            if origins is not None and entry.origin is not None:
                origins.setdefault(sub, entry.origin)
            out[entry.key] = value(self, entry.value, sub, entry.origin)
        return frozen_map(out)

    def sequence(self, item: Plan, node: Node, path: str) -> tuple[Any, ...]:
        if isinstance(node, Scalar) and node.flag and isinstance(node.value, str | int | float):
            # Command-line lists are comma-separated, as in Traefik's flags.
            parts = [p.strip() for p in node.text.split(",")]
            node = Seq(
                tuple(scalar_from_text(p, node.origin, flag=True) for p in parts), node.origin
            )
        if is_null(node):
            return ()
        if not isinstance(node, Seq):
            raise ConfigError(
                f"expected a list, got {describe(node)}", origin=node.origin, path=path
            )
        origins = self.origins
        out = []
        for index, value in enumerate(node.items):
            sub = f"{path}[{index}]"
            if origins is not None and value.origin is not None:
                origins.setdefault(sub, value.origin)
            out.append(item(self, value, sub, value.origin))
        return tuple(out)

    def middleware(self, node: Node, path: str, where: Origin | None) -> MiddlewareConfig:
        mapping = self.expect_map(node, path)
        if len(mapping.entries) != 1:
            got = ", ".join(f'"{e.key}"' for e in mapping.entries) or "none"
            raise ConfigError(
                f"a middleware needs exactly one type key (like basicAuth), got {got}",
                origin=where or mapping.origin,
                path=path,
            )
        entry = mapping.entries[0]
        sub = join(path, entry.key)
        self.record(sub, entry.origin)
        options = self.expect_map(entry.value, sub)
        return MiddlewareConfig(
            kind=entry.key, options=self.raw(options, sub), origin=where or entry.origin
        )

    def raw_map(self, node: Node, path: str) -> Any:
        self.expect_map(node, path)
        return self.raw(node, path)

    def raw(self, node: Node, path: str) -> Any:
        if self.origins is not None:
            self.record_tree(node, path)
        return to_raw(node)

    def record_tree(self, node: Node, path: str) -> None:
        if isinstance(node, Map):
            for entry in node.entries:
                sub = join(path, entry.key)
                self.record(sub, entry.origin)
                self.record_tree(entry.value, sub)
        elif isinstance(node, Seq):
            for index, item in enumerate(node.items):
                sub = f"{path}[{index}]"
                self.record(sub, item.origin)
                self.record_tree(item, sub)

    # --- scalars ------------------------------------------------------------

    def scalar(self, tp: type, node: Node, path: str) -> Any:
        value = node.value if isinstance(node, Scalar) else None
        if isinstance(node, Scalar) and value is not None:
            if tp is str:
                # A string field takes any scalar as written (port: 80, value: no).
                return value if isinstance(value, str) else node.text
            if tp is bool and isinstance(value, bool):
                return value
            if tp is int and isinstance(value, int) and not isinstance(value, bool):
                return value
            if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        wanted = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
        raise ConfigError(
            f"expected {wanted[tp]}, got {describe(node)}", origin=node.origin, path=path
        )

    def duration(self, node: Node, path: str) -> float:
        if isinstance(node, Scalar):
            value = node.value
            seconds: float | None = None
            if isinstance(value, int | float) and not isinstance(value, bool):
                seconds = float(value)
            elif isinstance(value, str):
                with contextlib.suppress(ValueError):
                    seconds = parse_duration(value)
            if seconds is not None and math.isfinite(seconds):
                return seconds
        raise ConfigError(
            f'expected a duration like "10s", "1m30s" or "250ms" (or seconds), '
            f"got {describe(node)}",
            origin=node.origin,
            path=path,
        )
