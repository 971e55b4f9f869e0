"""Compile the decoded ``tcp`` and ``udp`` sections into what TCP and UDP entry points run.

``L4Compiler.compile`` turns one validated configuration (``L4Config`` from
``gateway.config.l4_checks.check_l4``) into ``L4Compiled``: a ``TCPRoutes``
per TCP entry point, a UDP ``route`` function per UDP entry point, the TCP
servers with their health checks, and the middleware compilers (kept so
the next generation carries unchanged middlewares' state over).

TCP servers are reused across reloads when their service, address and
dialling settings are unchanged, so a server found down stays down until
its check passes, as for HTTP.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.config.dynamic import DynamicConfig
from gateway.config.errors import ConfigError
from gateway.config.l4 import (
    L4Config,
    TCPServersTransport,
    TCPServersTransportTLS,
    TCPService,
    UDPService,
    effective_transport,
)
from gateway.config.static import StaticConfig
from gateway.config.tcp_rule import tcp_rule, udp_rule
from gateway.l4.relay import RelaySettings
from gateway.l4.tcp_health import TCPHealthChecker
from gateway.l4.tcp_routing import (
    Picker,
    TCPRouterRuntime,
    TCPRoutes,
    TCPServer,
    TCPServicePool,
    TCPWeightedPool,
)
from gateway.l4.udp import Route, Target
from gateway.l4.udp_balancer import Address, ServerPool, WeightedPool, split_address
from middleware.l4.compiler import TCPChainCompiler, UDPChainCompiler
from middleware.l4.config import tcp_compiler, udp_compiler
from middleware.l4.contract import TCPMiddlewareType, UDPMiddlewareType
from middleware.l4.registry import L4Registry

log = logging.getLogger(__name__)

_DEFAULT_TRANSPORT = "default@internal"


@dataclass(slots=True, eq=False)
class TCPHealthJob:
    service: str
    checker: TCPHealthChecker


@dataclass(slots=True, eq=False)
class UDPRouterRuntime:
    """A UDP router as its entry point runs it (``target`` is what sessions hold)."""

    name: str
    match: Callable[[str], bool]
    priority: int
    target: Target


@dataclass(slots=True, eq=False)
class L4Compiled:
    tcp: dict[str, TCPRoutes] = field(default_factory=dict)
    udp: dict[str, Route] = field(default_factory=dict)
    udp_routers: dict[str, tuple[UDPRouterRuntime, ...]] = field(default_factory=dict)
    servers: dict[tuple[str, str], TCPServer] = field(default_factory=dict)
    health: list[TCPHealthJob] = field(default_factory=list)
    tcp_middlewares: TCPChainCompiler | None = None
    udp_middlewares: UDPChainCompiler | None = None

    def tcp_entry_points(self) -> frozenset[str]:
        """Entry points with at least one TCP router."""
        return frozenset(ep for ep, routes in self.tcp.items() if routes)


def udp_route(routers: Sequence[UDPRouterRuntime]) -> Route:
    """The ``route(client_ip, client_port)`` of one UDP entry point."""
    ordered = tuple(sorted(routers, key=lambda r: (-r.priority, r.name)))
    if len(ordered) == 1 and ordered[0].priority < 0:
        only = ordered[0].target
        return lambda ip, port: only

    def route(ip: str, port: int) -> Target | None:
        for router in ordered:
            if router.match(ip):
                return router.target
        return None

    return route


class L4Compiler:
    """Builds ``L4Compiled`` generations; keeps the previous one to reuse servers and state."""

    def __init__(
        self,
        static: StaticConfig,
        *,
        tcp_registry: L4Registry[TCPMiddlewareType] | None = None,
        udp_registry: L4Registry[UDPMiddlewareType] | None = None,
        on_server_change: Callable[[TCPServer, bool], None] | None = None,
    ) -> None:
        self.static = static
        self.tcp_registry = tcp_registry
        self.udp_registry = udp_registry
        self.on_server_change = on_server_change
        self.previous: L4Compiled | None = None

    def compile(self, config: DynamicConfig, l4: L4Config, generation: int = 0) -> L4Compiled:
        """Compile ``l4`` (validated); raises ``ConfigError`` for what only building finds."""
        previous = self.previous
        out = L4Compiled()
        out.tcp_middlewares = tcp_compiler(
            config,
            registry=self.tcp_registry,
            previous=previous.tcp_middlewares if previous else None,
        )
        out.udp_middlewares = udp_compiler(
            config,
            registry=self.udp_registry,
            previous=previous.udp_middlewares if previous else None,
        )
        out.tcp_middlewares.validate_all()
        out.udp_middlewares.validate_all()
        self._tcp(l4, out, generation)
        self._udp(l4, out)
        return out

    def commit(self, compiled: L4Compiled) -> None:
        self.previous = compiled

    # -- TCP ----------------------------------------------------------------------------

    def _tcp(self, l4: L4Config, out: L4Compiled, generation: int) -> None:
        tcp = l4.tcp
        old = self.previous.servers if self.previous else {}
        pickers: dict[str, Picker] = {}

        def picker(name: str) -> Picker:
            found = pickers.get(name)
            if found is None:
                found = pickers[name] = self._tcp_service(
                    name, tcp.services[name], tcp.servers_transports, old, out, picker
                )
            return found

        eps = [n for n, ep in self.static.entry_points.items() if ep.protocol == "tcp"]
        routers: dict[str, list[TCPRouterRuntime]] = {ep: [] for ep in eps}
        assert out.tcp_middlewares is not None
        for name, router in tcp.routers.items():
            rule = tcp_rule(router.rule)
            tls = router.tls
            runtime = TCPRouterRuntime(
                name=name,
                service=router.service,
                rule=rule,
                priority=router.priority or rule.priority,
                pick=picker(router.service),
                tls=None if tls is None else ("passthrough" if tls.passthrough else "terminate"),
                tls_options=(tls.options if tls is not None and tls.options else "default"),
                chain=out.tcp_middlewares.chain(router.middlewares),
            )
            for ep in router.entry_points or eps:
                if ep in routers:
                    routers[ep].append(runtime)
        out.tcp = {ep: TCPRoutes.build(rs, generation) for ep, rs in routers.items()}

    def _tcp_service(
        self,
        name: str,
        service: TCPService,
        transports: Mapping[str, TCPServersTransport],
        old: Mapping[tuple[str, str], TCPServer],
        out: L4Compiled,
        picker: Callable[[str], Picker],
    ) -> Picker:
        if service.weighted is not None:
            children = [(picker(ref.name), ref.weight) for ref in service.weighted.services]
            return TCPWeightedPool(name, children).pick
        lb = service.load_balancer
        assert lb is not None
        transport = effective_transport(lb, transports)
        delay = transport.termination_delay
        settings = RelaySettings(
            connect_timeout=transport.dial_timeout or 30.0,
            termination_delay=delay if delay is not None and delay >= 0 else None,
        )
        tls_settings: RelaySettings | None = None
        version = transport.proxy_protocol.version if transport.proxy_protocol else 0
        members: list[TCPServer] = []
        for cfg in lb.servers:
            server_settings = settings
            if cfg.tls:
                if tls_settings is None:
                    tls_settings = RelaySettings(
                        connect_timeout=settings.connect_timeout,
                        termination_delay=settings.termination_delay,
                        tls=_client_tls(transport.tls),
                        server_hostname=transport.tls.server_name if transport.tls else None,
                    )
                server_settings = tls_settings
            key = (name, cfg.address)
            server = old.get(key)
            host, port = split_address(cfg.address)
            if (
                server is None
                or server.weight != cfg.weight
                or server.proxy_version != version
                or not _same_settings(server.settings, server_settings)
            ):
                server = TCPServer(
                    service=name,
                    address=cfg.address,
                    host=host,
                    port=port,
                    weight=cfg.weight,
                    settings=server_settings,
                    proxy_version=version,
                    healthy=server.healthy if server is not None else True,
                )
            out.servers[key] = server
            members.append(server)
        if lb.health_check is not None and members:
            out.health.append(self._health_job(name, lb.health_check, members, transport))
        return TCPServicePool(name, members).pick

    def _health_job(
        self,
        service: str,
        check: object,
        members: list[TCPServer],
        transport: TCPServersTransport,
    ) -> TCPHealthJob:
        by_target = {(s.host, s.port): s for s in members}
        notify = self.on_server_change

        def on_change(target: tuple[str, int], up: bool) -> None:
            server = by_target.get(target)
            if server is not None:
                server.healthy = up
                if notify is not None:
                    notify(server, up)

        needs_tls = any(s.settings.tls is not None for s in members)
        checker = TCPHealthChecker(
            check,  # type: ignore[arg-type]
            list(by_target),
            on_change,
            service=service,
            initial_status={t: s.healthy for t, s in by_target.items()},
            ssl_context=_client_tls(transport.tls) if needs_tls else None,
        )
        return TCPHealthJob(service=service, checker=checker)

    # -- UDP ----------------------------------------------------------------------------

    def _udp(self, l4: L4Config, out: L4Compiled) -> None:
        udp = l4.udp
        pickers: dict[str, Callable[[], Address | None]] = {}

        def picker(name: str) -> Callable[[], Address | None]:
            found = pickers.get(name)
            if found is None:
                found = pickers[name] = _udp_service(name, udp.services[name], picker)
            return found

        eps = [n for n, ep in self.static.entry_points.items() if ep.protocol == "udp"]
        routers: dict[str, list[UDPRouterRuntime]] = {ep: [] for ep in eps}
        assert out.udp_middlewares is not None
        for name, router in udp.routers.items():
            rule = udp_rule(router.rule)
            chain = out.udp_middlewares.chain(router.middlewares)
            runtime = UDPRouterRuntime(
                name=name,
                match=rule.match,
                priority=router.priority or rule.priority,
                target=Target(
                    router=name,
                    service=router.service,
                    pick=picker(router.service),
                    admit=chain.admit if chain is not None else None,
                ),
            )
            for ep in router.entry_points or eps:
                if ep in routers:
                    routers[ep].append(runtime)
        out.udp_routers = {ep: tuple(rs) for ep, rs in routers.items()}
        out.udp = {ep: udp_route(rs) for ep, rs in routers.items()}


def _udp_service(
    name: str, service: UDPService, picker: Callable[[str], Callable[[], Address | None]]
) -> Callable[[], Address | None]:
    if service.weighted is not None:
        return WeightedPool(
            name, [(picker(ref.name), ref.weight) for ref in service.weighted.services]
        ).pick
    lb = service.load_balancer
    assert lb is not None
    return ServerPool(name, [(s.address, s.weight) for s in lb.servers]).pick


def _same_settings(a: RelaySettings, b: RelaySettings) -> bool:
    # SSL contexts compare by identity; a new generation builds new ones, so
    # compare what they were built from through the other fields only.
    return (
        a.connect_timeout == b.connect_timeout
        and a.termination_delay == b.termination_delay
        and (a.tls is None) == (b.tls is None)
        and a.server_hostname == b.server_hostname
    )


def _client_tls(config: TCPServersTransportTLS | None) -> ssl.SSLContext:
    """The context a TCP serversTransport dials ``tls: true`` servers with."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return context
    try:
        if config.root_c_as:
            for ca in config.root_c_as:
                context.load_verify_locations(cafile=ca)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        for cert in config.certificates:
            context.load_cert_chain(cert.cert_file, cert.key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"serversTransport tls: {exc}") from None
    if config.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
