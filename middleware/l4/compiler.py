"""Compiling ``tcp.middlewares`` / ``udp.middlewares`` definitions into chains.

The definitions are the raw ``tcp.middlewares`` mapping, Traefik's spelling
(``config`` finds it in a ``DynamicConfig``)::

    tcp:
      middlewares:
        allow:
          ipAllowList: {sourceRange: ["10.0.0.0/8"]}

A compiler is made once per configuration and protocol. ``validate_all``
decodes and builds every definition, so a bad option is a reload error even
before a router uses it. Each named middleware is built once per
configuration and that one instance serves every chain naming it: an
``inFlightConn`` named ``lim`` counts a client's connections across all the
routers using ``lim``. (Traefik builds one per router; one per name is what
the name promises, and lets the runtime report one set of counters per
middleware.) ``chain(names)`` returns the same chain for the same list.

Errors are ``ConfigError``s naming the file and line of the exact key at
fault (from the configuration's ``origins``) and the key path with the name
as written (``tcp.middlewares.allow.ipAllowList.sourceRange[1]``).

Given the compiler of the configuration it replaces (``previous``), a
middleware whose type and options are unchanged keeps its built instance
and so its state: an unrelated reload neither forgets rate-limit buckets
nor lets a client past ``inFlightConn`` by zeroing the counts of
connections still open. Connections admitted under the old configuration
are released on the instance that admitted them either way.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gateway.config.decoder import Decoder
from gateway.config.errors import ConfigError, Origin, suggestion
from gateway.config.loader import decode_value
from gateway.config.model import EMPTY
from gateway.config.yaml_nodes import Entry, Map, Node, Seq, from_python
from middleware.l4.chains import ConnectionChain, DatagramChain
from middleware.l4.contract import (
    ConnectionFilter,
    DatagramFilter,
    L4BuildContext,
    Proto,
    TCPMiddlewareType,
    UDPMiddlewareType,
)
from middleware.l4.registry import PLUGIN, L4Registry

F = TypeVar("F", TCPMiddlewareType, UDPMiddlewareType)
C = TypeVar("C", ConnectionChain, DatagramChain)

# "sourceRange[1]: reason" -> ("sourceRange[1]", "reason"): build's ValueError convention.
_KEYED = re.compile(r"([A-Za-z_]\w*(?:\[\d+\])*(?:\.[A-Za-z_]\w*(?:\[\d+\])*)*): (.+)", re.S)


@dataclass(frozen=True, slots=True)
class _Decoded:
    kind: str
    factory: Any
    options: Any
    at: str  # key path of the type key as origins spell it (qualified name)
    shown: str  # the same path as the file writes it (bare name)


class _Compiler(ABC, Generic[F, C]):
    protocol: Proto
    filter_type: type[Any]

    def __init__(
        self,
        definitions: Mapping[str, Any],
        *,
        registry: L4Registry[F],
        origins: Mapping[str, Origin] = EMPTY,
        section: str = "",
        previous: _Compiler[F, C] | None = None,
    ) -> None:
        self.definitions = definitions
        self.registry: L4Registry[F] = registry
        self.origins = origins
        self.section = section or f"{self.protocol}.middlewares"
        self._decoded: dict[str, _Decoded] = {}
        self._built: dict[str, Any] = {}
        # The previous generation's maps, not the compiler: holding the
        # compiler would chain every configuration ever loaded together.
        self._was_decoded = previous._decoded if previous is not None else {}
        self._was_built = previous._built if previous is not None else {}
        self._chains: dict[tuple[str, ...], C] = {}

    def validate_all(self) -> None:
        """Decode and build every definition; raises the first ConfigError."""
        for name in self.definitions:
            self._filter(name)

    def chain(self, names: Sequence[str]) -> C | None:
        """The chain running ``names`` in order; None when the list is empty."""
        key = tuple(names)
        if not key:
            return None
        found = self._chains.get(key)
        if found is None:
            found = self._chains[key] = self._wrap(tuple(self._filter(n) for n in key), key)
        return found

    @abstractmethod
    def _wrap(self, filters: tuple[Any, ...], names: tuple[str, ...]) -> C:
        """The protocol's chain object over ``filters``."""

    # -- decoding ---------------------------------------------------------------

    def _decode(self, name: str) -> _Decoded:
        found = self._decoded.get(name)
        if found is not None:
            return found
        if name not in self.definitions:
            raise ConfigError(
                f"unknown {self.protocol} middleware {name!r}{suggestion(name, self.definitions)}"
            )
        raw = self.definitions[name]
        at, shown = f"{self.section}.{name}", f"{self.section}.{name.partition('@')[0]}"
        written, raw = self._only_entry(raw, at, shown, "a middleware needs exactly one type key")
        at, shown = f"{at}.{written}", f"{shown}.{written}"
        if written.lower() == PLUGIN:
            written, raw = self._only_entry(raw, at, shown, "plugin takes exactly one plugin name")
            at, shown = f"{at}.{written}", f"{shown}.{written}"
        kind = self.registry.canonical(written)
        if kind is None:
            raise ConfigError(
                f"unknown {self.protocol} middleware type {written!r}"
                f"{suggestion(written, self.registry)}",
                origin=self._origin(at),
                path=shown,
            )
        factory = self.registry[kind]
        raw = {} if raw is None else raw
        try:
            options = decode_value(factory.options, raw, origin=None, path=shown)
        except ConfigError:
            # Reading the merged origins renames every key path of the
            # configuration once, so it is left to this error path.
            origin = self._origin(at)
            Decoder().decode(factory.options, self._located(raw, at, origin), shown, origin)
            raise
        decoded = self._decoded[name] = _Decoded(kind, factory, options, at, shown)
        return decoded

    def _only_entry(self, raw: Any, at: str, shown: str, what: str) -> tuple[str, Any]:
        if isinstance(raw, Mapping) and len(raw) == 1:
            ((written, value),) = raw.items()
            return str(written), value
        got = ", ".join(f'"{k}"' for k in raw) if isinstance(raw, Mapping) else "no mapping"
        example = "ipAllowList" if self.protocol == "tcp" else "rateLimit"
        raise ConfigError(
            f"{what} (like {example}), got {got or 'none'}",
            origin=self._origin(at),
            path=shown,
        )

    def _located(self, value: Any, at: str, parent: Origin | None) -> Node:
        """``value`` as a decoder tree, each key on the line the origins give it.

        ``decode_value`` puts one origin on every node; raw options kept
        their lines in the configuration's origins, so errors can name them.
        """
        here = self.origins.get(at) or parent
        if isinstance(value, Mapping):
            entries = []
            for k, v in value.items():
                sub = f"{at}.{k}"
                entries.append(
                    Entry(str(k), self.origins.get(sub) or here, self._located(v, sub, here))
                )
            return Map(tuple(entries), here)
        if isinstance(value, (list, tuple)):
            return Seq(
                tuple(self._located(v, f"{at}[{i}]", here) for i, v in enumerate(value)), here
            )
        return from_python(value, here)

    def _origin(self, at: str) -> Origin | None:
        """The origin of ``at``, else of the nearest enclosing key path that has one."""
        while at:
            found = self.origins.get(at)
            if found is not None:
                return found
            cut = max(at.rfind("."), at.rfind("["))
            at = at[:cut] if cut > 0 else ""
        return None

    def _relocated(self, exc: ConfigError, at: str, shown: str) -> ConfigError:
        """``exc`` (raised by ``build`` without an origin) located in the definition."""
        path = exc.path or shown
        if path.startswith(shown):
            at = at + path[len(shown) :]
        return ConfigError(exc.message, origin=self._origin(at), path=path)

    # -- building ---------------------------------------------------------------

    def _filter(self, name: str) -> Any:
        built = self._built.get(name)
        if built is None:
            decoded = self._decode(name)
            built = self._carried_over(name, decoded)
            if built is None:
                built = self._build(name, decoded)
            self._built[name] = built
        return built

    def _carried_over(self, name: str, new: _Decoded) -> Any:
        was = self._was_decoded.get(name)
        if (
            was is None
            or was.kind != new.kind
            or type(was.factory) is not type(new.factory)
            or was.options != new.options
        ):
            return None
        return self._was_built.get(name)

    def _build(self, name: str, d: _Decoded) -> Any:
        context = L4BuildContext(name=name, protocol=self.protocol)
        try:
            built = d.factory.build(d.options, context)
        except ConfigError as exc:
            if exc.origin is not None:
                raise
            raise self._relocated(exc, d.at, d.shown) from None
        except (ValueError, OSError) as exc:
            raise self._build_error(str(exc), d) from None
        if not isinstance(built, self.filter_type):
            raise ConfigError(
                f"{d.kind}: build returned {type(built).__name__}, "
                f"not a {self.filter_type.__name__}",
                origin=self._origin(d.at),
                path=d.shown,
            )
        return built

    def _build_error(self, message: str, d: _Decoded) -> ConfigError:
        keyed = _KEYED.fullmatch(message)
        if keyed is None:
            return ConfigError(message, origin=self._origin(d.at), path=d.shown)
        option, reason = keyed.groups()
        return ConfigError(
            reason, origin=self._origin(f"{d.at}.{option}"), path=f"{d.shown}.{option}"
        )


class TCPChainCompiler(_Compiler[TCPMiddlewareType, ConnectionChain]):
    """Builds ``ConnectionChain``s from one configuration's ``tcp.middlewares``."""

    protocol = "tcp"
    filter_type = ConnectionFilter

    def _wrap(self, filters: tuple[Any, ...], names: tuple[str, ...]) -> ConnectionChain:
        return ConnectionChain(filters, names)


class UDPChainCompiler(_Compiler[UDPMiddlewareType, DatagramChain]):
    """Builds ``DatagramChain``s from one configuration's ``udp.middlewares``."""

    protocol = "udp"
    filter_type = DatagramFilter

    def _wrap(self, filters: tuple[Any, ...], names: tuple[str, ...]) -> DatagramChain:
        return DatagramChain(filters, names)
