"""Cross-reference checks on a merged dynamic configuration.

The loader checks each value's shape; this module checks what only the
whole, merged configuration can tell: that every reference resolves (router
to service, middlewares, entry points and TLS options; weighted service to
its members; load balancer to its serversTransport), that rules parse, that
server URLs are usable and that numbers are in range. It never raises for
bad input: it returns every problem found, each located by the origin the
loader recorded for its key path (or the nearest enclosing one).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from urllib.parse import urlsplit

from gateway.config.dynamic import DynamicConfig, ServersLoadBalancer, WeightedService
from gateway.config.errors import ConfigError, Origin, suggestion
from gateway.config.merge import collection_paused
from gateway.config.rule import RuleSyntaxError, parse

_SCHEMES = ("http", "https", "h2c")


def validate(
    config: DynamicConfig,
    *,
    entry_points: Collection[str],
    udp_entry_points: Collection[str] = (),
) -> list[ConfigError]:
    """Every cross-reference and range problem in ``config``, in file order.

    ``entry_points`` are the TCP entry points HTTP routers may use; naming one
    of ``udp_entry_points`` gets an error saying so.
    """
    checker = _Checker(config, entry_points)
    checker.udp_entry_points = udp_entry_points
    # Parsing every rule allocates an AST per router.
    with collection_paused():
        checker.routers()
        checker.services()
    return checker.errors


class _Checker:
    def __init__(self, config: DynamicConfig, entry_points: Collection[str]) -> None:
        self.config = config
        self.entry_points = entry_points
        self.udp_entry_points: Collection[str] = ()
        self.errors: list[ConfigError] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(ConfigError(message, origin=self.origin(path), path=path))

    def origin(self, path: str) -> Origin | None:
        """The origin of ``path`` or of the nearest enclosing key path."""
        origins = self.config.origins
        while path:
            if path in origins:
                return origins[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None

    def unknown(self, path: str, what: str, name: str, known: Iterable[str]) -> None:
        self.fail(path, f'unknown {what} "{name}"{suggestion(name, known)}')

    # --- routers ------------------------------------------------------------

    def routers(self) -> None:
        http = self.config.http
        tls_options = self.config.tls.options
        for name, router in http.routers.items():
            base = f"http.routers.{name}"
            if router.service not in http.services:
                self.unknown(f"{base}.service", "service", router.service, http.services)
            for i, middleware in enumerate(router.middlewares):
                if middleware not in http.middlewares:
                    self.unknown(
                        f"{base}.middlewares[{i}]", "middleware", middleware, http.middlewares
                    )
            for i, entry_point in enumerate(router.entry_points):
                if entry_point in self.udp_entry_points:
                    self.fail(
                        f"{base}.entryPoints[{i}]",
                        f'entry point "{entry_point}" is a UDP entry point; '
                        "HTTP routers need a TCP one",
                    )
                elif entry_point not in self.entry_points:
                    self.unknown(
                        f"{base}.entryPoints[{i}]", "entry point", entry_point, self.entry_points
                    )
            if router.rule_syntax not in ("", "v3"):
                # The parser speaks only v3; a v2 rule would be read with v3 meaning.
                self.fail(
                    f"{base}.ruleSyntax",
                    f'unsupported rule syntax "{router.rule_syntax}": write the rule in v3 syntax',
                )
            try:
                parse(router.rule)
            except RuleSyntaxError as exc:
                self.fail(f"{base}.rule", f"column {exc.column}: {exc.message}")
            options = router.tls.options if router.tls is not None else ""
            if options not in ("", "default") and options not in tls_options:
                self.unknown(f"{base}.tls.options", "TLS options", options, tls_options)

    # --- services -----------------------------------------------------------

    def services(self) -> None:
        for name, service in self.config.http.services.items():
            base = f"http.services.{name}"
            if service.load_balancer is not None:
                self.load_balancer(f"{base}.loadBalancer", service.load_balancer)
            if service.weighted is not None:
                self.weighted(f"{base}.weighted", service.weighted)
            if service.status is not None and not 100 <= service.status.code <= 599:
                self.fail(f"{base}.status.code", "must be an HTTP status from 100 to 599")
            if service.failover is not None:
                for key in ("service", "fallback"):
                    target = getattr(service.failover, key)
                    if target not in self.config.http.services:
                        self.unknown(
                            f"{base}.failover.{key}", "service", target, self.config.http.services
                        )
        self.cycles()

    def load_balancer(self, base: str, lb: ServersLoadBalancer) -> None:
        for i, server in enumerate(lb.servers):
            problem = _url_problem(server.url)
            if problem:
                self.fail(f"{base}.servers[{i}].url", problem)
            if server.weight < 0:
                self.fail(f"{base}.servers[{i}].weight", f"must be >= 0, got {server.weight}")
        transports = self.config.http.servers_transports
        if lb.servers_transport and lb.servers_transport not in transports:
            self.unknown(
                f"{base}.serversTransport", "serversTransport", lb.servers_transport, transports
            )
        check = lb.health_check
        if check is not None:
            if check.interval <= 0:
                self.fail(f"{base}.healthCheck.interval", f"must be > 0, got {check.interval:g}s")
            if check.timeout <= 0:
                self.fail(f"{base}.healthCheck.timeout", f"must be > 0, got {check.timeout:g}s")

    def weighted(self, base: str, weighted: WeightedService) -> None:
        services = self.config.http.services
        for i, member in enumerate(weighted.services):
            if member.name not in services:
                self.unknown(f"{base}.services[{i}].name", "service", member.name, services)
            if member.weight < 0:
                self.fail(f"{base}.services[{i}].weight", f"must be >= 0, got {member.weight}")
            middlewares = self.config.http.middlewares
            for j, middleware in enumerate(member.middlewares):
                if middleware not in middlewares:
                    self.unknown(
                        f"{base}.services[{i}].middlewares[{j}]", "middleware", middleware,
                        middlewares,
                    )

    def cycles(self) -> None:
        """Report each loop of weighted services once, where it is first entered."""
        services = self.config.http.services
        graph: dict[str, list[str]] = {}
        for name, service in services.items():
            if service.weighted is not None:
                graph[name] = [m.name for m in service.weighted.services if m.name in services]
            elif service.failover is not None:
                pair = (service.failover.service, service.failover.fallback)
                graph[name] = [n for n in pair if n in services]
        done: set[str] = set()
        for start in graph:
            if start in done:
                continue
            # Iterative depth-first walk; `trail` is the current path.
            trail: list[str] = [start]
            on_trail = {start}
            pending = [iter(graph[start])]
            while pending:
                nxt = next(pending[-1], None)
                if nxt is None:
                    finished = trail.pop()
                    on_trail.discard(finished)
                    done.add(finished)
                    pending.pop()
                    continue
                if nxt in on_trail:
                    loop = [*trail[trail.index(nxt) :], nxt]
                    self.fail(
                        f"http.services.{nxt}.weighted.services",
                        "services form a cycle: " + " -> ".join(loop),
                    )
                elif nxt not in done and nxt in graph:
                    trail.append(nxt)
                    on_trail.add(nxt)
                    pending.append(iter(graph[nxt]))


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f'invalid URL "{url}": {exc}'
    if parts.scheme not in _SCHEMES:
        shown = f'"{parts.scheme}"' if parts.scheme else "none"
        return f'URL "{url}" needs scheme http, https or h2c, got {shown}'
    if not parts.hostname:
        return f'URL "{url}" has no host'
    return None
