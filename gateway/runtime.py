"""Compile a validated dynamic configuration into the data path's run-time objects.

``Compiler.compile`` turns one merged ``DynamicConfig`` into a ``Compiled``:
an ``HTTPState`` per entry point (router table with middleware chains bound
to services), the services' balancers and upstream servers, and the health
checks to run. It runs off the hot path; the app swaps the result in.

Upstream servers are reused across reloads when their service and URL are
unchanged, so keep-alive pools and health state survive a reload: a reload
under load neither reconnects every backend nor forgets a dead server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.config.dynamic import (
    DynamicConfig,
    HealthCheck,
    HTTPConfig,
    HTTPService,
    ServersTransport,
    WeightedService,
)
from gateway.config.errors import ConfigError
from gateway.config.merge import collection_paused
from gateway.config.rule import RuleSyntaxError
from gateway.config.static import StaticConfig
from gateway.http.balancer import Balancer, Failover, StatusBalancer, StickyCookie
from gateway.http.health import HealthChecker, HealthTarget
from gateway.http.member_split import build_split, member_middlewares
from gateway.http.middleware_path import proxy_terminal
from gateway.http.router_table import RouterTable, RouteSpec
from gateway.http.routing import HTTPState, RouterRuntime, ServiceRuntime
from gateway.http.tls import build_client_tls
from gateway.http.upstream import UpstreamServer
from gateway.middleware_context import GenerationContext, MiddlewareResources
from middleware.chains import Chain, ChainCompiler
from middleware.contract import Handler, MiddlewareType

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class HealthJob:
    """An active health check to run for one service, built (and so validated) at compile time."""

    service: str
    checker: HealthChecker
    servers: list[UpstreamServer]


@dataclass(slots=True, eq=False)
class Compiled:
    """The run-time form of one configuration generation."""

    states: dict[str, HTTPState]
    services: dict[str, ServiceRuntime]
    servers: dict[tuple[str, str], UpstreamServer]
    health: list[HealthJob] = field(default_factory=list)
    tls_entry_points: frozenset[str] = frozenset()
    # TLS entry points that also have plain routers: their table for plain
    # connections (``states`` then holds the TLS routers).
    plain_states: dict[str, HTTPState] = field(default_factory=dict)
    # Cleanups the generation's middlewares registered; run when it is replaced.
    context: GenerationContext | None = None


class Compiler:
    """Builds ``Compiled`` generations, reusing servers from the previous one."""

    def __init__(
        self,
        static: StaticConfig,
        registry: Mapping[str, MiddlewareType],
        *,
        resources: MiddlewareResources | None = None,
        on_middleware_error: Callable[[str], None] | None = None,
        on_server_change: Callable[[UpstreamServer, bool], None] | None = None,
    ) -> None:
        self.static = static
        self.registry = registry
        self.resources = resources if resources is not None else MiddlewareResources()
        self.on_middleware_error = on_middleware_error
        self.on_server_change = on_server_change
        self.generation = 0
        self.previous: Compiled | None = None
        self.current: DynamicConfig | None = None

    def compile(self, config: DynamicConfig) -> Compiled:
        """Compile ``config``; raises ConfigError for what validation cannot see."""
        context = GenerationContext({}, self.resources)
        try:
            with collection_paused():
                return self._compile(config, context)
        except BaseException:
            context.close()
            raise

    def _compile(self, config: DynamicConfig, context: GenerationContext) -> Compiled:
        self.generation += 1
        self.current = config
        old_servers = self.previous.servers if self.previous else {}
        servers: dict[tuple[str, str], UpstreamServer] = {}
        services: dict[str, ServiceRuntime] = {}
        balancers: dict[str, Balancer] = {}
        health: list[HealthJob] = []
        http = config.http

        def balancer_for(name: str, stack: tuple[str, ...] = ()) -> Balancer:
            if name in balancers:
                return balancers[name]
            if name in stack:
                raise ConfigError(f"service {name!r} includes itself", path=f"http.services.{name}")
            svc = http.services.get(name)
            if svc is None:
                raise ConfigError(f"unknown service {name!r}", path=f"http.services.{name}")
            balancer = self._balancer(name, svc, old_servers, servers, health, balancer_for, stack)
            balancers[name] = balancer
            return balancer

        for name, svc in http.services.items():
            lb = svc.load_balancer
            services[name] = ServiceRuntime(
                name=name,
                balancer=balancer_for(name),
                pass_host_header=lb.pass_host_header if lb else True,
                response_header_timeout=self._response_header_timeout(
                    lb.servers_transport if lb else "", config
                ),
            )

        context.services = services
        chains = ChainCompiler(
            http.middlewares,
            self.registry,
            proxy_terminal,
            context.for_middleware,
            on_error=self.on_middleware_error,
        )
        chains.validate_all()
        entry_names = [n for n, ep in self.static.entry_points.items() if ep.protocol == "tcp"]
        specs: dict[str, list[RouteSpec[RouterRuntime]]] = {ep: [] for ep in entry_names}
        tls_eps: set[str] = set()
        for name, router in http.routers.items():
            service = services.get(router.service)
            if service is None:
                raise ConfigError(
                    f"unknown service {router.service!r}",
                    origin=config.origins.get(f"http.routers.{name}.service"),
                    path=f"http.routers.{name}.service",
                )
            shared: RouterRuntime | None = None
            for ep in router.entry_points or entry_names:
                if ep not in specs:
                    continue
                if router.tls is not None:
                    tls_eps.add(ep)
                # Entry-point middlewares run first, as in Traefik; a router on
                # entry points with different ones gets a runtime per chain.
                names = (*self._entry_middlewares(ep), *router.middlewares)
                if names == router.middlewares and shared is not None:
                    runtime = shared
                elif member_middlewares(_weighted(http, router.service)):
                    runtime = self._split_router(
                        name, names, service, router.tls is not None, config, services, context
                    )
                else:
                    chain = self._chain(names, name, config, chains)
                    runtime = RouterRuntime(
                        name=name,
                        service=service,
                        chain=chain.handler if chain else None,
                        filters=chain.filters if chain else None,
                        middleware_names=names,
                        tls=router.tls is not None,
                    )
                    if names == router.middlewares:
                        shared = runtime
                specs[ep].append(
                    RouteSpec(name=name, rule=router.rule, priority=router.priority, target=runtime)
                )
        states: dict[str, HTTPState] = {}
        plain_states: dict[str, HTTPState] = {}
        for ep, routes in specs.items():
            if ep in tls_eps and self.static.entry_points[ep].http.tls is None:
                # As Traefik does: TLS and plain routers share the port, told
                # apart by the first byte each connection sends (the TCP
                # entry peeks); plain routers get a table of their own.
                plain = [r for r in routes if not r.target.tls]
                if plain:
                    plain_states[ep] = HTTPState(
                        table=self._table(plain), generation=self.generation
                    )
                    routes = [r for r in routes if r.target.tls]
            states[ep] = HTTPState(table=self._table(routes), generation=self.generation)
        compiled = Compiled(
            states=states,
            plain_states=plain_states,
            services=services,
            servers=servers,
            health=health,
            tls_entry_points=frozenset(tls_eps),
            context=context,
        )
        return compiled

    def _split_router(
        self,
        name: str,
        names: tuple[str, ...],
        service: ServiceRuntime,
        tls: bool,
        config: DynamicConfig,
        services: dict[str, ServiceRuntime],
        context: GenerationContext,
    ) -> RouterRuntime:
        """A router to a weighted service whose members have middlewares (``member_split``)."""
        http = config.http

        def build_chain(
            chain_names: Sequence[str], terminal: Handler, label: str
        ) -> Handler | None:
            compiler = ChainCompiler(
                http.middlewares,
                self.registry,
                terminal,
                context.for_middleware,
                on_error=self.on_middleware_error,
            )
            chain = self._chain(tuple(chain_names), label, config, compiler)
            return chain.handler if chain else None

        runtime = RouterRuntime(
            name=name, service=service, middleware_names=names, tls=tls
        )
        weighted = _weighted(http, service.name)
        assert weighted is not None
        split, member_routers = build_split(runtime, weighted, services, build_chain)
        runtime.chain = build_chain(names, split, name) or split
        for member_router in member_routers:
            member_router.chain = runtime.chain
        return runtime

    @staticmethod
    def _table(routes: list[RouteSpec[RouterRuntime]]) -> RouterTable[RouterRuntime]:
        try:
            return RouterTable.build(routes)
        except RuleSyntaxError as exc:
            where = "; ".join(getattr(exc, "__notes__", ()))
            raise ConfigError(f"rule: {exc}" + (f" ({where})" if where else "")) from None

    def commit(self, compiled: Compiled) -> None:
        """Record ``compiled`` as live; servers it dropped close their pools."""
        if self.previous is not None:
            for key, server in self.previous.servers.items():
                if compiled.servers.get(key) is not server:
                    server.close()
            if self.previous.context is not None:
                self.previous.context.close()
        self.previous = compiled

    def _health_job(
        self,
        service: str,
        config: HealthCheck,
        members: list[UpstreamServer],
        insecure: bool,
        root_cas: tuple[str, ...],
    ) -> HealthJob:
        by_url = {s.url: s for s in members}
        on_server_change = self.on_server_change

        def on_change(target: HealthTarget, up: bool) -> None:
            server = by_url.get(target.url)
            if server is not None:
                server.set_healthy(up)
                if on_server_change is not None:
                    on_server_change(server, up)

        needs_tls = any(s.scheme == "https" for s in members) or config.scheme == "https"
        checker = HealthChecker(
            config,
            [HealthTarget(url=s.url) for s in members],
            on_change,
            service=service,
            ssl_context=build_client_tls(insecure, root_cas, "") if needs_tls else None,
            # A server found down before a reload stays down until a check passes.
            initial_status={HealthTarget(url=s.url): s.healthy for s in members},
        )
        return HealthJob(service=service, checker=checker, servers=members)

    def _entry_middlewares(self, ep: str) -> tuple[str, ...]:
        names = self.static.entry_points[ep].http.middlewares
        for mw in names:
            if "@" not in mw:
                raise ConfigError(
                    f"entry point middleware {mw!r} needs its provider, as in {mw}@file",
                    path=f"entryPoints.{ep}.http.middlewares",
                )
        return names

    def _chain(
        self, names: tuple[str, ...], router: str, config: DynamicConfig, chains: ChainCompiler
    ) -> Chain | None:
        """The compiled chain for ``names`` (None when empty), shared between routers."""
        try:
            return chains.chain(names, router)
        except ConfigError as exc:
            if exc.path:
                raise
            raise ConfigError(
                exc.message,
                origin=config.origins.get(f"http.routers.{router}.middlewares"),
                path=f"http.routers.{router}.middlewares",
            ) from None

    def _transport(self, name: str) -> ServersTransport:
        """A service's serversTransport: the named dynamic one, else the static default."""
        if name and self.current is not None:
            found = self.current.http.servers_transports.get(name)
            if found is not None:
                return found
        return self.static.servers_transport

    def _response_header_timeout(self, transport: str, config: DynamicConfig) -> float:
        if transport:
            st = config.http.servers_transports.get(transport)
            if st is not None:
                return st.forwarding_timeouts.response_header_timeout
        return self.static.servers_transport.forwarding_timeouts.response_header_timeout

    def _balancer(
        self,
        name: str,
        svc: HTTPService,
        old: Mapping[tuple[str, str], UpstreamServer],
        servers: dict[tuple[str, str], UpstreamServer],
        health: list[HealthJob],
        balancer_for: Callable[[str, tuple[str, ...]], Balancer],
        stack: tuple[str, ...],
    ) -> Balancer:
        if svc.weighted is not None:
            w = svc.weighted
            children = [balancer_for(ref.name, (*stack, name)) for ref in w.services]
            sticky = (
                StickyCookie(w.sticky.cookie, f"_{name.split('@')[0]}")
                if w.sticky and w.sticky.cookie
                else None
            )
            return Balancer(name, children, [ref.weight for ref in w.services], sticky=sticky)
        if svc.status is not None:
            return StatusBalancer(name, svc.status.code)
        if svc.failover is not None:
            f = svc.failover
            inner = (*stack, name)
            return Failover(name, balancer_for(f.service, inner), balancer_for(f.fallback, inner))
        lb = svc.load_balancer
        assert lb is not None
        transport = self._transport(lb.servers_transport)
        insecure, root_cas = transport.insecure_skip_verify, transport.root_c_as
        timeouts = transport.forwarding_timeouts
        passive = lb.passive_health_check
        ssl_ctx = None
        members: list[UpstreamServer] = []
        for server_cfg in lb.servers:
            key = (name, server_cfg.url)
            server = old.get(key)
            if server is None or server.weight != server_cfg.weight or (
                server.transport != transport
            ):
                if server_cfg.url.startswith("https:") and ssl_ctx is None:
                    ssl_ctx = build_client_tls(insecure, root_cas, transport.server_name)
                server = UpstreamServer(
                    server_cfg.url,
                    weight=server_cfg.weight,
                    service=name,
                    ssl_context=ssl_ctx,
                    max_idle=transport.max_idle_conns_per_host,
                    dial_timeout=timeouts.dial_timeout,
                    idle_timeout=timeouts.idle_conn_timeout,
                )
                server.transport = transport
            if passive is not None:
                server.max_failures = max(1, passive.max_failed_attempts)
                server.failure_window = passive.failure_window
            servers[key] = server
            members.append(server)
        if lb.health_check is not None:
            health.append(self._health_job(name, lb.health_check, members, insecure, root_cas))
        sticky = (
            StickyCookie(lb.sticky.cookie, f"_{name.split('@')[0]}")
            if lb.sticky and lb.sticky.cookie
            else None
        )
        return Balancer(name, members, [s.weight for s in members], sticky=sticky)


def _weighted(http: HTTPConfig, name: str) -> WeightedService | None:
    service = http.services.get(name)
    return service.weighted if service is not None else None
