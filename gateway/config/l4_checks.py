"""Cross-reference and range checks on the decoded TCP and UDP configuration.

The decoder (``gateway.config.l4``) checks each value's shape; this module
checks what only the whole, merged configuration can tell, the way
``gateway.config.validate`` does for HTTP: every reference resolves (router
to service, middlewares, entry points of the right protocol and TLS options;
weighted service to its members; load balancer to its serversTransport),
rules parse, server addresses are ``host:port``, weighted services form no
loop, and numbers are in range. It returns every problem found, each located
by the origin recorded for its key path (or the nearest enclosing one).

Rules Traefik enforces and Sluice keeps: a ``HostSNI`` other than ``*`` needs
TLS on the router (a plain connection has no server name); PROXY protocol is
version 1 or 2. Sluice additions: a load balancer needs at least one server,
and two UDP routers of one entry point may not tie on rule and priority
(Traefik picks one of several UDP routers at random and warns).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.config.dynamic import DynamicConfig, WRRService
from gateway.config.errors import ConfigError, suggestion
from gateway.config.l4 import (
    L4Config,
    OriginFinder,
    ProxyProtocol,
    TCPHealthCheck,
    TCPRouter,
    UDPRouter,
    decode_l4,
    parse_server_address,
)
from gateway.config.rule import Expr, Matcher, Not, RuleSyntaxError
from gateway.config.tcp_rule import default_priority, parse_tcp, parse_udp

__all__ = ["check_all", "check_l4", "validate_l4"]

# The built-in transport every Traefik configuration may name; it has the defaults.
_DEFAULT_TRANSPORT = "default@internal"


def check_l4(
    config: DynamicConfig, *, entry_points: Mapping[str, str]
) -> tuple[L4Config | None, list[ConfigError]]:
    """Decode and validate ``config``'s tcp and udp sections.

    ``entry_points`` maps each static entry point to its protocol, e.g.
    ``{n: ep.protocol for n, ep in static.entry_points.items()}``. Returns
    the decoded sections (None if they do not decode) and every problem.
    """
    try:
        l4 = decode_l4(config)
    except ConfigError as exc:
        return None, [exc]
    return l4, validate_l4(config, l4, entry_points=entry_points)


def check_all(
    config: DynamicConfig, *, entry_points: Mapping[str, str]
) -> tuple[L4Config | None, list[ConfigError]]:
    """Every check of a merged configuration, HTTP and L4, against its entry points.

    ``entry_points`` maps each entry point (static and dynamic) to its
    protocol; HTTP routers may use the TCP ones only.
    """
    from gateway.config.validate import validate

    errors = validate(
        config,
        entry_points=[n for n, p in entry_points.items() if p == "tcp"],
        udp_entry_points=[n for n, p in entry_points.items() if p == "udp"],
    )
    l4, l4_errors = check_l4(config, entry_points=entry_points)
    return l4, errors + l4_errors


def validate_l4(
    config: DynamicConfig, l4: L4Config, *, entry_points: Mapping[str, str]
) -> list[ConfigError]:
    """Every cross-reference and range problem in ``l4`` (decoded from ``config``)."""
    checker = _Checker(config, l4, entry_points)
    checker.tcp_routers()
    checker.udp_routers()
    checker.services()
    return checker.errors


class _Checker:
    def __init__(
        self, config: DynamicConfig, l4: L4Config, entry_points: Mapping[str, str]
    ) -> None:
        self.config = config
        self.l4 = l4
        self.entry_points = entry_points
        self.errors: list[ConfigError] = []
        self.origin = OriginFinder(config.origins)

    def fail(self, path: str, message: str) -> None:
        self.errors.append(ConfigError(message, origin=self.origin(path), path=path))

    def unknown(self, path: str, what: str, name: str, known: Iterable[str]) -> None:
        self.fail(path, f'unknown {what} "{name}"{suggestion(name, known)}')

    # --- routers ------------------------------------------------------------

    def common(
        self,
        base: str,
        proto: str,
        router: TCPRouter | UDPRouter,
        services: Mapping[str, Any],
        mws: Mapping[str, Any],
    ) -> None:
        """What TCP and UDP routers share: service, middlewares, entry points."""
        if router.service not in services:
            self.unknown(f"{base}.service", f"{proto} service", router.service, services)
        for i, name in enumerate(router.middlewares):
            if name not in mws:
                self.unknown(f"{base}.middlewares[{i}]", f"{proto} middleware", name, mws)
        for i, name in enumerate(router.entry_points):
            path = f"{base}.entryPoints[{i}]"
            has = self.entry_points.get(name)
            if has is None:
                self.unknown(path, "entry point", name, self.entry_points)
            elif has != proto:
                hint = ' (an address ending in "/udp")' if proto == "udp" else ""
                self.fail(
                    path,
                    f'entry point "{name}" is {has.upper()}; {proto.upper()} routers need '
                    f"a {proto.upper()} entry point{hint}",
                )

    def tcp_routers(self) -> None:
        tcp = self.l4.tcp
        tls_options = self.config.tls.options
        for name, router in tcp.routers.items():
            base = f"tcp.routers.{name}"
            self.common(base, "tcp", router, tcp.services, tcp.middlewares)
            if router.rule_syntax not in ("", "v3"):
                self.fail(
                    f"{base}.ruleSyntax",
                    f'unsupported rule syntax "{router.rule_syntax}": write the rule in v3 syntax',
                )
            try:
                expr = parse_tcp(router.rule)
            except RuleSyntaxError as exc:
                self.fail(f"{base}.rule", f"column {exc.column}: {exc.message}")
            else:
                self.sni_needs_tls(base, router, expr)
            options = router.tls.options if router.tls is not None else ""
            if options not in ("", "default") and options not in tls_options:
                self.unknown(f"{base}.tls.options", "TLS options", options, tls_options)

    def sni_needs_tls(self, base: str, router: TCPRouter, expr: Expr) -> None:
        if router.tls is not None:
            return
        names = [n for n in _host_sni_names(expr) if n != "*"]
        if names:
            self.fail(
                f"{base}.rule",
                f"HostSNI(`{names[0]}`) needs TLS on the router (tls: {{}} to terminate, "
                "tls.passthrough: true to pass it through); only HostSNI(`*`) matches "
                "plain TCP",
            )

    def udp_routers(self) -> None:
        udp = self.l4.udp
        udp_points = [n for n, p in self.entry_points.items() if p == "udp"]
        taken: dict[tuple[str, int, str], str] = {}
        for name, router in udp.routers.items():
            base = f"udp.routers.{name}"
            self.common(base, "udp", router, udp.services, udp.middlewares)
            expr: Expr | None = None
            if router.rule.strip():
                try:
                    expr = parse_udp(router.rule)
                except RuleSyntaxError as exc:
                    self.fail(f"{base}.rule", f"column {exc.column}: {exc.message}")
                    continue
            priority = router.priority or default_priority(router.rule, expr)
            rule = router.rule.strip()
            for point in router.entry_points or udp_points:
                other = taken.setdefault((point, priority, rule), name)
                if other != name:
                    self.fail(
                        base,
                        f'takes the same datagrams as udp router "{other}" on entry point '
                        f'"{point}" (same rule and priority): give one a ClientIP rule '
                        "or a higher priority",
                    )
                    break

    # --- services -----------------------------------------------------------

    def services(self) -> None:
        tcp, udp = self.l4.tcp, self.l4.udp
        for name, service in tcp.services.items():
            base = f"tcp.services.{name}"
            if service.load_balancer is not None:
                lb = service.load_balancer
                base_lb = f"{base}.loadBalancer"
                self.servers(base_lb, lb.servers)
                self.proxy_protocol(f"{base_lb}.proxyProtocol", lb.proxy_protocol)
                if lb.health_check is not None:
                    self.health_check(f"{base_lb}.healthCheck", lb.health_check)
                transports = tcp.servers_transports
                ref = lb.servers_transport
                if ref and ref != _DEFAULT_TRANSPORT and ref not in transports:
                    self.unknown(f"{base_lb}.serversTransport", "serversTransport", ref, transports)
            if service.weighted is not None:
                self.weighted(f"{base}.weighted", service.weighted.services, tcp.services)
        for name, transport in tcp.servers_transports.items():
            base = f"tcp.serversTransports.{name}"
            self.proxy_protocol(f"{base}.proxyProtocol", transport.proxy_protocol)
            if transport.dial_timeout < 0:
                self.fail(f"{base}.dialTimeout", f"must be >= 0, got {transport.dial_timeout:g}s")
        for name, udp_service in udp.services.items():
            base = f"udp.services.{name}"
            if udp_service.load_balancer is not None:
                self.servers(f"{base}.loadBalancer", udp_service.load_balancer.servers)
            if udp_service.weighted is not None:
                self.weighted(f"{base}.weighted", udp_service.weighted.services, udp.services)
        for proto, services in (("tcp", tcp.services), ("udp", udp.services)):
            graph = {
                n: [m.name for m in s.weighted.services if m.name in services]
                for n, s in services.items()
                if s.weighted is not None
            }
            for loop in _cycles(graph):
                self.fail(
                    f"{proto}.services.{loop[0]}.weighted.services",
                    "services form a cycle: " + " -> ".join(loop),
                )

    def servers(self, base: str, servers: tuple[Any, ...]) -> None:
        if not servers:
            self.fail(f"{base}.servers", "no servers: add at least one server address")
        for i, server in enumerate(servers):
            try:
                parse_server_address(server.address)
            except ValueError as exc:
                self.fail(
                    f"{base}.servers[{i}].address", f'invalid address "{server.address}": {exc}'
                )
            if server.weight < 0:
                self.fail(f"{base}.servers[{i}].weight", f"must be >= 0, got {server.weight}")

    def weighted(
        self, base: str, members: tuple[WRRService, ...], services: Mapping[str, Any]
    ) -> None:
        if not members:
            self.fail(f"{base}.services", "no services: add at least one name and weight")
        for i, member in enumerate(members):
            if member.name not in services:
                self.unknown(f"{base}.services[{i}].name", "service", member.name, services)
            if member.weight < 0:
                self.fail(f"{base}.services[{i}].weight", f"must be >= 0, got {member.weight}")
            if member.middlewares:
                self.fail(
                    f"{base}.services[{i}].middlewares",
                    "middlewares on a weighted member are for HTTP services only",
                )

    def proxy_protocol(self, path: str, proxy: ProxyProtocol | None) -> None:
        if proxy is not None and proxy.version not in (1, 2):
            self.fail(
                f"{path}.version", f"PROXY protocol version must be 1 or 2, got {proxy.version}"
            )

    def health_check(self, base: str, check: TCPHealthCheck) -> None:
        for key, value in (("interval", check.interval), ("timeout", check.timeout)):
            if value <= 0:
                self.fail(f"{base}.{key}", f"must be > 0, got {value:g}s")
        if check.unhealthy_interval < 0:
            self.fail(
                f"{base}.unhealthyInterval", f"must be >= 0, got {check.unhealthy_interval:g}s"
            )
        if not 0 <= check.port <= 65535:
            self.fail(f"{base}.port", f"must be a port from 1 to 65535 (or 0), got {check.port}")


def _host_sni_names(expr: Expr) -> list[str]:
    """Every HostSNI argument in the rule, as Traefik's ``ParseHostSNI`` collects them."""
    if isinstance(expr, Matcher):
        return [expr.args[0]] if expr.name == "HostSNI" else []
    if isinstance(expr, Not):
        return _host_sni_names(expr.expr)
    return _host_sni_names(expr.left) + _host_sni_names(expr.right)


def _cycles(graph: Mapping[str, list[str]]) -> list[list[str]]:
    """Each loop of the graph once, as the path that closes it (``[a, b, a]``)."""
    loops: list[list[str]] = []
    done: set[str] = set()
    for start in graph:
        if start in done:
            continue
        trail = [start]
        on_trail = {start}
        pending = [iter(graph[start])]
        while pending:
            nxt = next(pending[-1], None)
            if nxt is None:
                finished = trail.pop()
                on_trail.discard(finished)
                done.add(finished)
                pending.pop()
            elif nxt in on_trail:
                loops.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in done and nxt in graph:
                trail.append(nxt)
                on_trail.add(nxt)
                pending.append(iter(graph[nxt]))
    return loops
