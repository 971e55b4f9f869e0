"""The composition root: providers in, validated generations out, swapped into listeners.

``Gateway`` wires one process together. It runs the providers, merges their
newest snapshots (``name@provider``), validates and compiles the whole, and
swaps the result into every entry point with one assignment each. An invalid
snapshot changes nothing that serves traffic: its error is logged, counted
and shown in ``/api/overview``, and the last good generation stays.

In multi-worker mode the supervisor (``gateway.supervisor``) runs this class
without listeners and forwards each accepted configuration to the workers,
which run it with ``feed`` instead of providers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from gateway.config.dynamic import DynamicConfig
from gateway.config.errors import ConfigError
from gateway.config.l4 import L4Config, decode_located
from gateway.config.l4_checks import check_all
from gateway.config.merge import merge
from gateway.config.model import frozen_map
from gateway.config.static import EntryPoint, StaticConfig
from gateway.http.entrypoint import (
    EntryPointRuntime,
    bind_socket,
    bind_udp_socket,
    parse_address,
)
from gateway.http.forwarded import TrustedSources
from gateway.http.router_table import RouterTable
from gateway.http.routing import EntryPointSettings, HTTPState
from gateway.http.tls import ServerTLS, build_server_tls
from gateway.http.upstream import UpstreamServer
from gateway.l4.compile import L4Compiled, L4Compiler
from gateway.l4.tcp_entry import TCPEntry, TCPEntrySettings
from gateway.l4.tcp_routing import TCPRoutes, TCPServer
from gateway.l4.udp import UDPEntry
from gateway.l4.udp_session import ENTRY_BUFFER, enlarge_buffers
from gateway.listeners import Mode, TCPListener
from gateway.metrics import Metrics
from gateway.middleware_context import MiddlewareResources
from gateway.observer import Observer
from gateway.runtime import Compiled, Compiler
from middleware.contract import MiddlewareType
from middleware.registry import load_registry
from providers.base import Provider

log = logging.getLogger(__name__)


class Gateway:
    """One serving process (or the supervisor, with ``serve=False``)."""

    def __init__(
        self,
        static: StaticConfig,
        *,
        providers: list[Provider],
        metrics: Metrics | None = None,
        observer: Observer | None = None,
        registry: Mapping[str, MiddlewareType] | None = None,
        serve: bool = True,
        reuse_port: bool = False,
        record_reloads: bool = True,
    ) -> None:
        # The static configuration as given; ``static`` adds the entry points
        # the dynamic configuration declares (Gateway listeners), per generation.
        self.base_static = static
        self.static = static
        self.providers = providers
        self.metrics = metrics
        self.observer = observer or Observer(metrics, None)
        self.registry = registry if registry is not None else load_registry()
        self.serve = serve
        self.reuse_port = reuse_port
        # Workers share the supervisor's metrics directory; only the process
        # that validates configuration counts reloads, or each counts N+1 times.
        self.record_reloads = record_reloads
        self.resources = MiddlewareResources()
        self.compiler = Compiler(
            static,
            self.registry,
            resources=self.resources,
            on_middleware_error=self._middleware_error,
            on_server_change=self._server_changed,
        )
        self.l4_compiler = L4Compiler(static, on_server_change=self._tcp_server_changed)
        self.l4: L4Compiled | None = None
        self.entry_points: dict[str, EntryPointRuntime] = {}
        self.listeners: dict[str, TCPListener] = {}
        self.udp_entry_points: dict[str, UDPEntry] = {}
        # What each open entry point was opened with, to see a changed one.
        self._opened_as: dict[str, EntryPoint] = {}
        self._listeners_lock = asyncio.Lock()
        self.snapshots: dict[str, DynamicConfig] = {}
        self.errors: dict[str, ConfigError] = {}
        self.config: DynamicConfig | None = None
        self.compiled: Compiled | None = None
        self.server_tls: ServerTLS | None = None
        self.loaded = asyncio.Event()
        self.listening = asyncio.Event()
        self.stopping = asyncio.Event()
        self.started_at = time.time()
        self.reloads = 0
        self.last_reload: float | None = None
        self._health_tasks: list[asyncio.Task[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        # Listeners being reopened because TLS was switched on or off.
        self.reopens: list[asyncio.Task[None]] = []
        # Hooks for the supervisor, the API and tests: an accepted configuration,
        # a rejected one.
        self.on_config: list[Callable[[DynamicConfig], None]] = []
        self.on_reject: list[Callable[[str, list[ConfigError]], None]] = []

    # -- configuration -----------------------------------------------------------

    def apply(self, provider: str, snapshot: DynamicConfig | ConfigError) -> bool:
        """Take one provider's snapshot; True when it became the serving configuration."""
        if isinstance(snapshot, ConfigError):
            self._reject(provider, [snapshot])
            return False
        candidate = dict(self.snapshots)
        candidate[provider] = snapshot
        try:
            merged = merge(candidate)
        except ConfigError as exc:
            self._reject(provider, [exc])
            return False
        return self.apply_merged(merged, provider=provider, snapshot=snapshot)

    def apply_merged(
        self, merged: DynamicConfig, *, provider: str = "", snapshot: DynamicConfig | None = None
    ) -> bool:
        try:
            static = self._with_dynamic_entry_points(merged)
        except ConfigError as exc:
            self._reject(provider, [exc])
            return False
        protocols = {n: ep.protocol for n, ep in static.entry_points.items()}
        l4_config, errors = check_all(merged, entry_points=protocols)
        if errors or l4_config is None:
            self._reject(provider, errors)
            return False
        self.compiler.static = self.l4_compiler.static = static
        compiled: Compiled | None = None
        try:
            compiled = self.compiler.compile(merged)
            l4 = self.l4_compiler.compile(merged, l4_config, self.compiler.generation)
            server_tls = (
                build_server_tls(merged.tls)
                if merged.tls.certificates
                or any(r.tls is not None for r in merged.http.routers.values())
                or _terminates_tls(l4_config)
                or self._static_tls()
                else None
            )
        except ConfigError as exc:
            self.compiler.static = self.l4_compiler.static = self.static
            if compiled is not None and compiled.context is not None:
                compiled.context.close()  # the HTTP half built; its middlewares' resources go
            self._reject(provider, [exc])
            return False
        self.static = static
        if provider and snapshot is not None:
            self.snapshots[provider] = snapshot
        self.errors.pop(provider, None)
        self.config = merged
        self.server_tls = server_tls
        self._swap(compiled, l4)
        self.reloads += 1
        self.last_reload = time.time()
        if self.metrics is not None and self.record_reloads:
            self.metrics.config_reloaded(success=True)
        log.info(
            "configuration generation %d applied (%d routers, %d services; "
            "%d TCP routers, %d UDP routers)",
            self.compiler.generation,
            len(merged.http.routers),
            len(merged.http.services),
            len(l4_config.tcp.routers),
            len(l4_config.udp.routers),
        )
        for callback in self.on_config:
            callback(merged)
        self.loaded.set()
        return True

    def _reject(self, provider: str, errors: list[ConfigError]) -> None:
        self.errors[provider] = errors[0]
        for error in errors:
            log.error("configuration from %s rejected: %s", provider or "supervisor", error)
        if self.metrics is not None and self.record_reloads:
            self.metrics.config_reloaded(success=False)
        if self.config is not None:
            log.warning(
                "keeping the last good configuration (generation %d)", self.compiler.generation
            )
        for callback in self.on_reject:
            callback(provider, errors)
        self.loaded.set()

    def _with_dynamic_entry_points(self, merged: DynamicConfig) -> StaticConfig:
        return with_dynamic_entry_points(self.base_static, merged)

    def tcp_entry_point_names(self) -> list[str]:
        return [n for n, ep in self.static.entry_points.items() if ep.protocol == "tcp"]

    def _swap(self, compiled: Compiled, l4: L4Compiled) -> None:
        self.compiler.commit(compiled)
        self.compiled = compiled
        self.l4_compiler.commit(l4)
        self.l4 = l4
        for name, entry in self.entry_points.items():
            entry.state = compiled.states.get(name, entry.state)
            listener = self.listeners.get(name)
            if listener is None or name not in self.static.entry_points:
                continue  # gone from the configuration: _sync_listeners closes it
            listener.tcp.routes = l4.tcp.get(name, _NO_ROUTES)
            self._plain_runtime(listener, compiled)
            if self._listener_mode(listener) != listener.mode or self._wants_tls(
                name, compiled
            ) != (entry.ssl_context is not None):
                task = asyncio.get_running_loop().create_task(self._reopen(name))
                self._tasks.append(task)
                self.reopens.append(task)
        for name, udp in self.udp_entry_points.items():
            udp.route = l4.udp.get(name, _no_udp_route)
        if self.listening.is_set():
            task = asyncio.get_running_loop().create_task(self._sync_listeners())
            self._tasks.append(task)
            self.reopens.append(task)
        if self.metrics is not None:
            now = time.monotonic()
            for (service, url), server in compiled.servers.items():
                self.metrics.set_server_up(service, url, server.available(now))
            for (service, address), tcp_server in l4.servers.items():
                self.metrics.set_server_up(service, address, tcp_server.healthy)
        for task in self._health_tasks:
            task.cancel()
        self._health_tasks = []
        if self.serve or not self.entry_points:
            self._start_health(compiled)

    def _wants_tls(self, name: str, compiled: Compiled | None) -> bool:
        """TLS on an entry point: set statically, or asked for by its routers."""
        if self.static.entry_points[name].http.tls is not None:
            return True
        return compiled is not None and name in compiled.tls_entry_points

    async def _reopen(self, name: str) -> None:
        """Switch an entry point's acceptor or TLS as its routers changed (same socket)."""
        listener = self.listeners.get(name)
        if listener is None:  # closed by a reload meanwhile
            return
        tls = self._wants_tls(name, self.compiled)
        context = self._front_context(name, listener.http.sni_names) if tls else None
        mode = self._listener_mode(listener)
        if await listener.update(mode, context):
            log.info(
                "entry point %s: now %s%s", name,
                _MODE_TEXT[mode], " with TLS" if tls else "",
            )

    def _start_health(self, compiled: Compiled) -> None:
        loop = asyncio.get_running_loop()
        for job in compiled.health:
            self._health_tasks.append(loop.create_task(job.checker.run()))
        if self.l4 is not None:
            for tcp_job in self.l4.health:
                self._health_tasks.append(loop.create_task(tcp_job.checker.run()))

    def _wants_l4(self, name: str) -> bool:
        """Whether a TCP entry point accepts through a ``TCPEntry`` (see ``gateway.listeners``)."""
        proxy = self.static.entry_points[name].proxy_protocol
        if proxy.trusted_i_ps or proxy.insecure:
            return True
        if self.compiled is not None and name in self.compiled.plain_states:
            return True  # plain and TLS routers on one port: the first byte decides
        return self.l4 is not None and bool(self.l4.tcp.get(name))

    def _listener_mode(self, listener: TCPListener) -> Mode:
        if not self._wants_l4(listener.tcp.name):
            return "http"
        return "l4" if listener.tcp.needs_peek else "direct"

    def _tcp_server_changed(self, server: TCPServer, up: bool) -> None:
        # The checker has logged the change and its reason.
        if self.metrics is not None:
            self.metrics.set_server_up(server.service, server.address, up)

    def _server_changed(self, server: UpstreamServer, up: bool) -> None:
        if self.metrics is not None:
            self.metrics.set_server_up(server.service, server.url, up)

    def _static_tls(self) -> bool:
        return any(ep.http.tls is not None for ep in self.static.entry_points.values())

    def _middleware_error(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.middleware_error(name)

    # -- listeners -----------------------------------------------------------------

    def _settings(self, name: str) -> EntryPointSettings:
        ep = self.static.entry_points[name]
        timeouts = ep.transport.responding_timeouts
        _, port = parse_address(ep.address)
        tls = ep.http.tls is not None or (
            self.compiled is not None and name in self.compiled.tls_entry_points
        )
        return EntryPointSettings(
            name=name,
            scheme=b"https" if tls else b"http",
            port=str(port).encode(),
            trusted=TrustedSources(
                ep.forwarded_headers.trusted_i_ps, insecure=ep.forwarded_headers.insecure
            ),
            read_header_timeout=timeouts.read_header_timeout,
            read_timeout=timeouts.read_timeout,
            idle_timeout=timeouts.idle_timeout,
            max_header_bytes=ep.http.max_header_bytes,
            keep_alive_max_requests=ep.transport.keep_alive_max_requests,
            keep_alive_max_time=ep.transport.keep_alive_max_time,
        )

    async def open_listeners(self) -> None:
        """Bind and serve every entry point of the static configuration."""
        for name in self.static.entry_points:
            await self._open(name)
        self.listening.set()

    async def _sync_listeners(self) -> None:
        """Open entry points the configuration added, drain those it removed or changed."""
        async with self._listeners_lock:
            wanted = self.static.entry_points
            for name in list(self.entry_points) + list(self.udp_entry_points):
                if name not in wanted or wanted[name] != self._opened_as.get(name):
                    await self._close(name)
            for name in wanted:
                if name not in self.entry_points and name not in self.udp_entry_points:
                    try:
                        await self._open(name)
                    except (OSError, ValueError) as exc:
                        # A Gateway listener on a taken port: the rest still serve.
                        log.error("entry point %s: cannot listen on %s: %s",
                                  name, wanted[name].address, exc)

    async def _close(self, name: str) -> None:
        self._opened_as.pop(name, None)
        udp = self.udp_entry_points.pop(name, None)
        if udp is not None:
            udp.close()
            log.info("entry point %s closed", name)
            return
        self.entry_points.pop(name, None)
        listener = self.listeners.pop(name, None)
        if listener is not None:
            grace = listener.http.settings.read_timeout
            task = asyncio.get_running_loop().create_task(listener.drain(min(grace, 10.0)))
            self._tasks.append(task)
            log.info("entry point %s closed; its connections are draining", name)

    async def _open(self, name: str) -> None:
        empty = HTTPState(table=RouterTable.build([]))
        ep = self.static.entry_points[name]
        self._opened_as[name] = ep
        if ep.protocol == "udp":
            await self._open_udp(name)
            return
        settings = self._settings(name)
        sni_names: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        ssl_context = None
        if settings.scheme == b"https":
            ssl_context = self._front_context(name, sni_names)
        state = self.compiled.states.get(name, empty) if self.compiled else empty
        runtime = EntryPointRuntime(
            settings, state, observer=self.observer, ssl_context=ssl_context
        )
        runtime.sni_names = sni_names
        sock = bind_socket(ep.address, reuse_port=self.reuse_port or ep.reuse_port)
        listener = TCPListener(sock, runtime, self._tcp_entry(name, runtime))
        self.entry_points[name] = runtime
        self.listeners[name] = listener
        if self.compiled is not None:
            self._plain_runtime(listener, self.compiled)
        await listener.start(self._listener_mode(listener))
        runtime.add_idle_hook(self._expire_idle)
        log.info(
            "entry point %s listening on %s%s%s",
            name,
            ep.address,
            " (TLS)" if ssl_context else "",
            " (TCP routing)" if listener.l4 else "",
        )

    def _plain_runtime(self, listener: TCPListener, compiled: Compiled) -> None:
        """Give a TLS entry point with plain routers its plain-HTTP runtime (or take it away)."""
        name = listener.tcp.name
        state = compiled.plain_states.get(name)
        if state is None:
            listener.tcp.plain_http = None  # its open connections finish where they are
            return
        plain = listener.tcp.plain_http
        if plain is None:
            settings = self._settings(name)
            settings.scheme = b"http"
            plain = EntryPointRuntime(settings, state, observer=self.observer)
            plain.start_sweeper()
            plain.add_idle_hook(self._expire_idle)
            listener.tcp.plain_http = plain
        plain.state = state

    def _tcp_entry(self, name: str, http: EntryPointRuntime) -> TCPEntry:
        ep = self.static.entry_points[name]
        proxy = ep.proxy_protocol
        settings = TCPEntrySettings(
            name=name,
            proxy_trusted=(
                TrustedSources(proxy.trusted_i_ps, insecure=proxy.insecure)
                if proxy.trusted_i_ps or proxy.insecure
                else None
            ),
            peek_timeout=ep.transport.responding_timeouts.read_header_timeout,
            idle_timeout=ep.tcp.idle_timeout or None,
        )
        routes = self.l4.tcp.get(name, _NO_ROUTES) if self.l4 is not None else _NO_ROUTES
        return TCPEntry(
            settings, routes, http=http, tls_context=self._tcp_tls_context,
            observer=self.observer,
        )

    def _tcp_tls_context(self, options: str) -> ssl.SSLContext:
        """The context a TLS-terminating TCP router serves with: the newest certificates."""
        if self.server_tls is None:
            self.server_tls = build_server_tls(
                self.config.tls if self.config is not None else DynamicConfig().tls
            )
        try:
            return self.server_tls.context_for(options)
        except KeyError:
            return self.server_tls.context_for("default")

    async def _open_udp(self, name: str) -> None:
        ep = self.static.entry_points[name]
        observer = self.observer
        route = self.l4.udp.get(name, _no_udp_route) if self.l4 is not None else _no_udp_route
        entry = UDPEntry(
            route,
            name=name,
            idle_timeout=ep.udp.timeout,
            on_session_end=observer.udp_session_ended,
            on_reject=lambda target, rejection: observer.udp_rejected(name, target, rejection),
            on_session_open=lambda target: observer.udp_session_opened(name, target),
        )
        sock = bind_udp_socket(ep.listen_address, reuse_port=self.reuse_port or ep.reuse_port)
        enlarge_buffers(sock, ENTRY_BUFFER)
        await entry.start(sock)
        self.udp_entry_points[name] = entry
        log.info("entry point %s listening on %s", name, ep.address)

    def _front_context(self, name: str, sni_names: weakref.WeakKeyDictionary[Any, str]) -> Any:
        """The listener's SSL context: each handshake defers to the current certificates.

        Certificates and TLS options change with the dynamic configuration,
        the listener does not; so the listener's own context only forwards
        every handshake to the context of the newest generation.
        """
        ep = self.static.entry_points[name]
        options = (
            ep.http.tls.options if ep.http.tls is not None and ep.http.tls.options else "default"
        )
        tls_config = self.config.tls if self.config is not None else DynamicConfig().tls
        if self.server_tls is None:
            self.server_tls = build_server_tls(tls_config)
        # A private instance, so replacing its callback cannot touch a live one.
        front = build_server_tls(tls_config).context_for(options)

        def select(
            sslobj: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext
        ) -> int | None:
            if server_name:
                sni_names[sslobj] = server_name.lower()
            current = self.server_tls
            if current is None:
                return None
            try:
                context = current.context_for(options)
            except KeyError:
                context = current.context_for("default")
            sslobj.context = context
            callback = context.sni_callback
            return callback(sslobj, server_name or "", context) if callback is not None else None

        front.sni_callback = select
        return front

    def _expire_idle(self, now: float) -> None:
        compiled = self.compiled
        if compiled is not None:
            for server in compiled.servers.values():
                server.pool.expire_idle(now)

    # -- running -------------------------------------------------------------------

    async def _consume(self, provider: Provider) -> None:
        stream: AsyncIterator[DynamicConfig | ConfigError] = provider.snapshots()
        async for snapshot in stream:
            try:
                self.apply(provider.name, snapshot)
            except Exception as exc:
                # A bug, not a bad configuration: say so, keep serving the last
                # good generation and keep listening to the provider.
                log.exception("applying configuration from %s failed", provider.name)
                self._reject(provider.name, [ConfigError(f"internal error: {exc!r}")])

    async def run(self) -> None:
        """Serve until ``stop()``; then drain for the entry points' grace period."""
        loop = asyncio.get_running_loop()
        for provider in self.providers:
            self._tasks.append(loop.create_task(self._consume(provider)))
        if self.providers:
            await self.loaded.wait()
        else:
            self.loaded.set()
        if self.serve:
            await self.open_listeners()
        await self.stopping.wait()
        await self.shutdown()

    def stop(self) -> None:
        self.stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def shutdown(self) -> None:
        lifecycles = [ep.transport.life_cycle for ep in self.static.entry_points.values()]
        accept = max((lc.request_accept_grace_timeout for lc in lifecycles), default=0.0)
        if accept > 0 and self.entry_points:
            # Traefik's requestAcceptGraceTimeout: keep serving new requests for
            # a while, so a load balancer in front can notice and stop sending.
            log.info("stopping: still accepting requests for %gs", accept)
            await asyncio.sleep(accept)
        for task in self._tasks + self._health_tasks:
            task.cancel()
        grace = max(
            (ep.transport.life_cycle.grace_time_out for ep in self.static.entry_points.values()),
            default=10.0,
        )
        await asyncio.gather(*(listener.drain(grace) for listener in self.listeners.values()))
        for udp in self.udp_entry_points.values():
            udp.close()
        if self.compiled is not None:
            for server in self.compiled.servers.values():
                server.close()
            if self.compiled.context is not None:
                self.compiled.context.close()
        await self.resources.close()
        log.info("stopped")

    def ready(self) -> tuple[bool, str]:
        if not self.loaded.is_set():
            return False, "configuration not loaded yet"
        if self.serve and not self.listening.is_set():
            return False, "listeners not open yet"
        if self.config is None:
            error = next(iter(self.errors.values()), None)
            return False, f"no valid configuration: {error}" if error else "no configuration"
        return True, "ok"


def with_dynamic_entry_points(static: StaticConfig, merged: DynamicConfig) -> StaticConfig:
    """``static`` plus the entry points ``merged`` declares; raises ``ConfigError``."""
    declared = merged.entry_points or {}
    if not declared:
        return static
    eps = dict(static.entry_points)
    for name, raw in declared.items():
        path = f"entryPoints.{name}"
        if name in eps:
            raise ConfigError(
                f'entry point "{name}" is already defined in the static configuration',
                origin=merged.origins.get(path),
                path=path,
            )
        eps[name] = decode_located(EntryPoint, raw, path, merged.origins)
    return dataclasses.replace(static, entry_points=frozen_map(eps))


def base_dir_of(config_path: str | None) -> Path:
    return Path(config_path).resolve().parent if config_path else Path.cwd()


_NO_ROUTES = TCPRoutes()
_MODE_TEXT = {
    "http": "serving HTTP",
    "direct": "routing TCP",
    "l4": "routing TCP and HTTP (peeking)",
}


def _no_udp_route(client_ip: str, client_port: int) -> None:
    return None


def _terminates_tls(l4: L4Config) -> bool:
    return any(r.tls is not None and not r.tls.passthrough for r in l4.tcp.routers.values())
