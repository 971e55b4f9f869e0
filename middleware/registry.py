"""The middleware registry: built-ins in one explicit table, plugins by entry point.

Built-ins and plugins are found the same way, by the key a configuration
uses (``headers``, ``basicAuth``); a plugin registers under the entry-point
group ``sluice.middleware`` and may not reuse a built-in's key. ``build_chain``
turns a router's ordered ``middlewares`` list into one handler, validating
each middleware's options as it goes, so errors surface at reload time with
the middleware's name, file and line, never on a request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any, Protocol

from gateway.config.dynamic import MiddlewareConfig
from gateway.config.errors import ConfigError
from gateway.config.loader import decode_value
from middleware.contract import Handler, Request, Response
from middleware.headers import HeadersMiddleware

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "sluice.middleware"


class MiddlewareFactory(Protocol):
    """What the registry holds: a key, an options class, and ``build``."""

    key: str
    options: type[Any]

    def build(self, options: Any, next: Handler) -> Handler: ...


BUILTINS: dict[str, MiddlewareFactory] = {
    HeadersMiddleware.key: HeadersMiddleware(),
}


def load_registry(*, plugins: bool = True) -> dict[str, MiddlewareFactory]:
    """Built-ins plus installed plugins; a plugin shadowing a built-in is an error."""
    registry = dict(BUILTINS)
    if not plugins:
        return registry
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTINS:
            raise ConfigError(
                f"plugin {ep.value!r} registers middleware {ep.name!r}, which is a built-in"
            )
        factory = ep.load()
        registry[ep.name] = factory() if isinstance(factory, type) else factory
    return registry


def build_chain(
    names: Sequence[str],
    definitions: Mapping[str, MiddlewareConfig],
    terminal: Handler,
    *,
    registry: Mapping[str, MiddlewareFactory],
    on_error: Callable[[str], None] | None = None,
) -> Handler:
    """One handler running ``names`` in order, then ``terminal``."""
    handler = terminal
    for name in reversed(names):
        config = definitions.get(name)
        if config is None:
            raise ConfigError(f"unknown middleware {name!r}")
        kind = config.kind
        if kind == "plugin" and len(config.options) == 1:
            kind = next(iter(config.options))
            raw = config.options[kind]
        else:
            raw = config.options
        factory = registry.get(kind)
        if factory is None:
            from gateway.config.errors import suggestion

            raise ConfigError(
                f"unknown middleware type {kind!r}{suggestion(kind, registry)}",
                origin=config.origin,
                path=f"http.middlewares.{name}",
            )
        options = decode_value(
            factory.options, raw, origin=config.origin, path=f"http.middlewares.{name}.{kind}"
        )
        handler = _guard(name, factory.build(options, handler), on_error)
    return handler


def _guard(name: str, handler: Handler, on_error: Callable[[str], None] | None) -> Handler:
    """Tag exceptions with the middleware's name; the exchange turns them into a 500."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except MiddlewareFailed:
            raise
        except Exception as exc:
            if on_error is not None:
                on_error(name)
            raise MiddlewareFailed(name) from exc

    return guarded


class MiddlewareFailed(Exception):
    """A middleware raised; carries its name for the log line and the counter."""

    def __init__(self, name: str) -> None:
        super().__init__(f"middleware {name} failed")
        self.name = name
