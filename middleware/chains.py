"""Compiling routers' ``middlewares`` lists into runnable chains.

``ChainCompiler`` is made once per configuration. It decodes every defined
middleware's options up front (so a bad option is an error at reload time,
naming the middleware, file, line and key, even for a middleware no router
uses yet), expands ``chain`` middlewares into their members, and builds one
``Chain`` per router and list of names.

A chain made only of ``Filter`` middlewares also carries a ``FilterChain``:
the proxy runs those inline in its protocol callbacks. Every chain carries a
``Handler`` too (filters adapted), for the task-based path that the other
middleware shape needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.config.dynamic import MiddlewareConfig
from gateway.config.errors import ConfigError, suggestion
from gateway.config.loader import decode_value
from middleware.contract import BuildContext, Filter, Handler, MiddlewareType, Request, Response
from middleware.registry import CHAIN, PLUGIN


class MiddlewareFailed(Exception):
    """A middleware raised; carries its name for the log line and the counter."""

    def __init__(self, name: str) -> None:
        super().__init__(f"middleware {name} failed")
        self.name = name


OnError = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class FilterChain:
    """Filters in request order, with the ones that edit responses picked out."""

    filters: tuple[Filter, ...]
    names: tuple[str, ...]
    # Indexes into ``filters`` of those overriding ``response``, innermost first.
    responders: tuple[int, ...]
    # Their bound ``response`` methods, in that order: what a response from
    # the upstream passes through.
    hooks: tuple[Callable[[Request, Response], None], ...] = ()
    # Counts a failure against the middleware's name (as the handler path does).
    on_error: OnError | None = None

    def failed(self, index: int) -> str:
        """Count a failure of filter ``index``; its name, for the log."""
        name = self.names[index]
        if self.on_error is not None:
            self.on_error(name)
        return name

    def respond_from(self, below: int, request: Request, response: Response) -> None:
        """Run the response hooks of the filters before index ``below``, inside out."""
        filters = self.filters
        for i in self.responders:
            if i < below:
                try:
                    filters[i].response(request, response)
                except Exception:
                    self.failed(i)
                    raise


@dataclass(frozen=True, slots=True)
class Chain:
    """One router's compiled middleware list."""

    handler: Handler
    filters: FilterChain | None
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Decoded:
    kind: str
    factory: MiddlewareType
    options: Any
    config: MiddlewareConfig




class ChainCompiler:
    """Builds chains for one configuration's ``http.middlewares``."""

    def __init__(
        self,
        definitions: Mapping[str, MiddlewareConfig],
        registry: Mapping[str, MiddlewareType],
        terminal: Handler,
        context_for: Callable[[str], BuildContext],
        *,
        on_error: OnError | None = None,
    ) -> None:
        self.definitions = definitions
        self.registry = registry
        self.terminal = terminal
        self.context_for = context_for
        self.on_error = on_error
        self._decoded: dict[str, _Decoded | None] = {}
        self._chains: dict[tuple[str, tuple[str, ...]], Chain] = {}

    def validate_all(self) -> None:
        """Decode every definition's options; raises the first ConfigError."""
        for name in self.definitions:
            self._decode(name)

    def chain(self, names: Sequence[str], router: str = "") -> Chain | None:
        """The chain running ``names`` then the terminal; None for no middleware.

        Each router gets its own instances, as in Traefik: a rateLimit or
        circuitBreaker attached to two routers keeps separate state for each.
        """
        expanded = self.expand(names)
        if not expanded:
            return None
        key = (router, expanded)
        found = self._chains.get(key)
        if found is None:
            found = self._chains[key] = self._build(expanded)
        return found

    def expand(self, names: Sequence[str], stack: tuple[str, ...] = ()) -> tuple[str, ...]:
        """``names`` with every ``chain`` middleware replaced by its members."""
        out: list[str] = []
        for name in names:
            decoded = self._decode(name)
            if decoded is not None:
                out.append(name)
                continue
            if name in stack:
                cycle = " -> ".join((*stack, name))
                raise self._error(name, f"chain includes itself: {cycle}")
            members = self._chain_members(name)
            out.extend(self.expand(members, (*stack, name)))
        return tuple(out)

    # -- decoding ---------------------------------------------------------------

    def _decode(self, name: str) -> _Decoded | None:
        """The decoded middleware, or None for a ``chain`` (expanded instead)."""
        if name in self._decoded:
            return self._decoded[name]
        config = self.definitions.get(name)
        if config is None:
            raise ConfigError(f"unknown middleware {name!r}{suggestion(name, self.definitions)}")
        kind, raw = config.kind, config.options
        path = f"http.middlewares.{_bare(name)}"
        if kind == CHAIN:
            self._chain_members(name)
            self._decoded[name] = None
            return None
        if kind == PLUGIN:
            if len(raw) != 1:
                raise ConfigError(
                    "plugin takes exactly one plugin name with its options",
                    origin=config.origin,
                    path=f"{path}.plugin",
                )
            kind, raw = next(iter(raw.items()))
            path = f"{path}.plugin"
        factory = self.registry.get(kind)
        if factory is None:
            raise ConfigError(
                f"unknown middleware type {kind!r}{suggestion(kind, self.registry)}",
                origin=config.origin,
                path=path,
            )
        options = decode_value(
            factory.options, raw or {}, origin=config.origin, path=f"{path}.{kind}"
        )
        decoded = self._decoded[name] = _Decoded(kind, factory, options, config)
        return decoded

    def _chain_members(self, name: str) -> tuple[str, ...]:
        config = self.definitions[name]
        members = config.options.get("middlewares")
        if not isinstance(members, (list, tuple)) or not all(isinstance(m, str) for m in members):
            raise self._error(name, "chain needs middlewares: a list of middleware names")
        _, at, provider = name.partition("@")
        # Members name middlewares of the chain's own provider unless they say otherwise.
        qualified = tuple(m if "@" in m or not at else f"{m}@{provider}" for m in members)
        for member in qualified:
            if member not in self.definitions:
                raise self._error(
                    name,
                    f"chain member {member!r} is not defined{suggestion(member, self.definitions)}",
                )
        return qualified

    def _error(self, name: str, message: str) -> ConfigError:
        config = self.definitions[name]
        return ConfigError(message, origin=config.origin, path=f"http.middlewares.{_bare(name)}")

    # -- building ---------------------------------------------------------------

    def _build(self, names: tuple[str, ...]) -> Chain:
        handler = self.terminal
        filters: list[Filter] = []
        for name in reversed(names):
            decoded = self._decode(name)
            assert decoded is not None
            try:
                built = decoded.factory.build(decoded.options, handler, self.context_for(name))
            except ConfigError as exc:
                if exc.origin is not None:
                    raise
                raise ConfigError(
                    exc.message,
                    origin=decoded.config.origin,
                    path=exc.path or f"http.middlewares.{_bare(name)}.{decoded.kind}",
                ) from None
            except (ValueError, OSError) as exc:
                raise ConfigError(
                    str(exc),
                    origin=decoded.config.origin,
                    path=f"http.middlewares.{_bare(name)}.{decoded.kind}",
                ) from None
            if isinstance(built, Filter):
                filters.append(built)
                handler = _adapt(name, built, handler, self.on_error)
            else:
                handler = _guard(name, built, self.on_error)
        filter_chain = None
        if len(filters) == len(names):
            filters.reverse()
            responders = tuple(
                i for i in reversed(range(len(filters))) if _edits_responses(filters[i])
            )
            filter_chain = FilterChain(
                tuple(filters),
                names,
                responders,
                tuple(filters[i].response for i in responders),
                self.on_error,
            )
        return Chain(handler=handler, filters=filter_chain, names=names)


def _bare(name: str) -> str:
    return name.partition("@")[0]


def _edits_responses(f: Filter) -> bool:
    return type(f).response is not Filter.response


def _guard(name: str, handler: Handler, on_error: OnError | None) -> Handler:
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


def _adapt(name: str, f: Filter, next: Handler, on_error: OnError | None) -> Handler:
    """A filter as a handler, for chains that also hold handler-shaped middleware."""
    edits = _edits_responses(f)

    async def filtered(request: Request) -> Response:
        try:
            result = f.request(request)
            if result is not None and not isinstance(result, Response):
                result = await result
        except Exception as exc:
            if on_error is not None:
                on_error(name)
            raise MiddlewareFailed(name) from exc
        if result is not None:
            return result
        response = await next(request)
        if edits:
            try:
                f.response(request, response)
            except Exception as exc:
                if on_error is not None:
                    on_error(name)
                raise MiddlewareFailed(name) from exc
        return response

    return filtered
