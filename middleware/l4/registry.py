"""TCP and UDP middleware factories by configuration key: built-ins and plugins.

The same scheme as the HTTP registry (``middleware/registry.py``), with one
table per protocol because a key means a different thing on each
(``rateLimit`` counts connections on TCP, datagrams on UDP). Built-ins are
named ``module:Class`` and imported on first use. Plugins register under the
entry-point groups ``sluice.tcp_middleware`` and ``sluice.udp_middleware``::

    [project.entry-points."sluice.tcp_middleware"]
    geoBlock = "sluice_geoblock:TCPGeoBlock"

A plugin may not reuse a built-in key of its protocol (startup fails, as for
HTTP). Lookups try the exact key, then the key ignoring case, because
Traefik's label and CRD spellings (``ipallowlist``) are lower-cased.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from gateway.config.errors import ConfigError
from middleware.l4.contract import Proto, TCPMiddlewareType, UDPMiddlewareType

ENTRY_POINT_GROUPS: dict[Proto, str] = {
    "tcp": "sluice.tcp_middleware",
    "udp": "sluice.udp_middleware",
}

# Traefik v3's TCP middlewares, plus rateLimit (Traefik has none for TCP).
TCP_BUILTINS: dict[str, str] = {
    "inFlightConn": "middleware.l4.in_flight:InFlightConn",
    "ipAllowList": "middleware.l4.ip_allowlist:TCPIPAllowList",
    # Traefik v3 still accepts its pre-3.0 name, deprecated; so do we.
    "ipWhiteList": "middleware.l4.ip_allowlist:TCPIPAllowList",
    "rateLimit": "middleware.l4.rate_limit:TCPRateLimit",
}

# Traefik has no UDP middleware at all; these are Sluice's.
UDP_BUILTINS: dict[str, str] = {
    "ipAllowList": "middleware.l4.ip_allowlist:UDPIPAllowList",
    "rateLimit": "middleware.l4.rate_limit:UDPRateLimit",
}

# ``plugin: {NAME: {options}}`` names a plugin as the HTTP configuration does.
PLUGIN = "plugin"

F = TypeVar("F", TCPMiddlewareType, UDPMiddlewareType)


class L4Registry(Mapping[str, F], Generic[F]):
    """One protocol's middleware factories by key, resolved on first use."""

    def __init__(self, protocol: Proto, factories: Mapping[str, F | str]) -> None:
        self.protocol: Proto = protocol
        self._factories: dict[str, F | str] = dict(factories)
        self._lower = {k.lower(): k for k in self._factories}

    def __getitem__(self, kind: str) -> F:
        factory = self._factories[kind]
        if isinstance(factory, str):
            factory = self._factories[kind] = _instantiate(_import(factory))
        return factory

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)

    def canonical(self, kind: str) -> str | None:
        """The registered spelling of ``kind`` (exact, else ignoring case), or None."""
        if kind in self._factories:
            return kind
        return self._lower.get(kind.lower())

    def with_factories(self, extra: Mapping[str, F | str]) -> L4Registry[F]:
        """A copy with ``extra`` added (tests and embedders register middleware this way)."""
        return L4Registry(self.protocol, {**self._factories, **extra})


def _import(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _instantiate(factory: Any) -> Any:
    return factory() if isinstance(factory, type) else factory


def _factories(protocol: Proto, builtins: Mapping[str, str], plugins: bool) -> dict[str, Any]:
    factories: dict[str, Any] = dict(builtins)
    if not plugins:
        return factories
    taken = {k.lower() for k in builtins} | {PLUGIN}
    group = ENTRY_POINT_GROUPS[protocol]
    for ep in entry_points(group=group):
        if ep.name.lower() in taken:
            raise ConfigError(
                f"plugin {ep.value!r} registers {protocol} middleware {ep.name!r}, "
                f"which is a built-in (entry-point group {group})"
            )
        factories[ep.name] = ep.value
    return factories


def load_tcp_registry(*, plugins: bool = True) -> L4Registry[TCPMiddlewareType]:
    """TCP built-ins plus installed plugins; a plugin shadowing a built-in is an error."""
    return L4Registry("tcp", _factories("tcp", TCP_BUILTINS, plugins))


def load_udp_registry(*, plugins: bool = True) -> L4Registry[UDPMiddlewareType]:
    """UDP built-ins plus installed plugins; a plugin shadowing a built-in is an error."""
    return L4Registry("udp", _factories("udp", UDP_BUILTINS, plugins))
