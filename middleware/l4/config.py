"""From a dynamic configuration to L4 chains: the functions the L4 runtime calls.

``DynamicConfig`` keeps ``tcp`` and ``udp`` as raw mappings (their schema
arrives with the L4 routers), so ``middleware_section`` finds
``tcp.middlewares`` / ``udp.middlewares`` in them itself, matching the key
ignoring case as the merger does and keeping its spelling for origins.

Per configuration the runtime makes one compiler per protocol
(``tcp_compiler``/``udp_compiler``, passing the previous one so unchanged
middlewares keep their state), calls ``validate_all`` at reload and
``chain(router.middlewares)`` per router. ``compile_l4_middlewares`` is the
one-shot form for a single list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, overload

from gateway.config.dynamic import DynamicConfig
from gateway.config.errors import ConfigError, Origin
from gateway.config.model import EMPTY
from middleware.l4.chains import ConnectionChain, DatagramChain
from middleware.l4.compiler import TCPChainCompiler, UDPChainCompiler
from middleware.l4.contract import Proto, TCPMiddlewareType, UDPMiddlewareType
from middleware.l4.registry import L4Registry, load_tcp_registry, load_udp_registry


def middleware_section(config: DynamicConfig, protocol: Proto) -> tuple[str, Mapping[str, Any]]:
    """``(key path, definitions)`` of ``tcp.middlewares`` or ``udp.middlewares``.

    The key is matched ignoring case, as the merger does; the path is spelled
    as the file spelled it, so origins can be looked up with it.
    """
    raw = getattr(config, protocol)
    if not raw:
        return f"{protocol}.middlewares", EMPTY
    for written, value in raw.items():
        if written.lower() == "middlewares":
            path = f"{protocol}.{written}"
            if value is None:
                return path, EMPTY
            if not isinstance(value, Mapping):
                raise ConfigError(
                    "must be a mapping of middleware names to definitions",
                    origin=config.origins.get(path),
                    path=path,
                )
            return path, value
    return f"{protocol}.middlewares", EMPTY


def tcp_compiler(
    config: DynamicConfig,
    *,
    registry: L4Registry[TCPMiddlewareType] | None = None,
    previous: TCPChainCompiler | None = None,
) -> TCPChainCompiler:
    """The TCP chain compiler for ``config`` (call ``validate_all`` at reload)."""
    section, definitions = middleware_section(config, "tcp")
    return TCPChainCompiler(
        definitions,
        registry=registry if registry is not None else load_tcp_registry(),
        origins=config.origins,
        section=section,
        previous=previous,
    )


def udp_compiler(
    config: DynamicConfig,
    *,
    registry: L4Registry[UDPMiddlewareType] | None = None,
    previous: UDPChainCompiler | None = None,
) -> UDPChainCompiler:
    """The UDP chain compiler for ``config`` (call ``validate_all`` at reload)."""
    section, definitions = middleware_section(config, "udp")
    return UDPChainCompiler(
        definitions,
        registry=registry if registry is not None else load_udp_registry(),
        origins=config.origins,
        section=section,
        previous=previous,
    )


@overload
def compile_l4_middlewares(
    kind: Literal["tcp"],
    definitions: Mapping[str, Mapping[str, Any]],
    names: Sequence[str],
    *,
    origins: Mapping[str, Origin] = ...,
    registry: L4Registry[TCPMiddlewareType] | None = ...,
) -> ConnectionChain | None: ...


@overload
def compile_l4_middlewares(
    kind: Literal["udp"],
    definitions: Mapping[str, Mapping[str, Any]],
    names: Sequence[str],
    *,
    origins: Mapping[str, Origin] = ...,
    registry: L4Registry[UDPMiddlewareType] | None = ...,
) -> DatagramChain | None: ...


def compile_l4_middlewares(
    kind: Proto,
    definitions: Mapping[str, Mapping[str, Any]],
    names: Sequence[str],
    *,
    origins: Mapping[str, Origin] = EMPTY,
    registry: Any = None,
) -> ConnectionChain | DatagramChain | None:
    """One chain for ``names`` over ``definitions`` (``tcp.middlewares`` as loaded).

    Every definition is validated, used or not. For many routers, make one
    ``tcp_compiler``/``udp_compiler`` per configuration instead: its chains
    share one instance per middleware name and keep state across reloads.
    """
    compiler: TCPChainCompiler | UDPChainCompiler
    if kind == "tcp":
        compiler = TCPChainCompiler(
            definitions,
            registry=registry if registry is not None else load_tcp_registry(),
            origins=origins,
        )
    else:
        compiler = UDPChainCompiler(
            definitions,
            registry=registry if registry is not None else load_udp_registry(),
            origins=origins,
        )
    compiler.validate_all()
    return compiler.chain(names)
