"""Prometheus metrics: the metric families, the per-request hot path, exposition.

Names follow Traefik's (``traefik_entrypoint_requests_total`` becomes
``sluice_entrypoint_requests_total``), and so do the ``add*Labels`` switches of
the static ``metrics.prometheus`` section: a switch that is off removes its
whole family, as in Traefik.

The data path calls one method per finished request,
``RequestMetrics.observe``. It looks the request's tally up in a dict keyed
by the raw label tuple, because ``prometheus_client``'s ``.labels()`` validates
and stringifies on every call; only a cache miss pays for that. The tally is
plain Python arithmetic (a count, a sum, a bucket index found by bisection);
it reaches the labelled ``prometheus_client`` children, whose every update
takes a lock (and in multi-process mode writes an mmap file), in a batch:
``RequestMetrics.flush`` runs at most ``FLUSH_SECONDS`` after the first
request since the last flush, on the loop that counted it, and ``render``
flushes first (on that loop, when called from another thread), so what
``/metrics`` shows in this process is exact. Other processes reading the
shared directory see a worker's requests within ``FLUSH_SECONDS``.

Multi-process mode (N workers on SO_REUSEPORT plus a supervisor) uses
``prometheus_client``'s mmap files in one shared directory. The library picks
its value class once, when ``prometheus_client`` is first imported, from the
``PROMETHEUS_MULTIPROC_DIR`` environment variable. Hence the ordering rule:

    ``setup_multiprocess(dir)`` (or ``create_metrics(..., multiprocess_dir=dir)``)
    must run before anything in the process imports ``prometheus_client``.

This module never imports ``prometheus_client`` at module level, so importing
``gateway.metrics`` is always safe; ``setup_multiprocess`` raises when it is
too late rather than silently counting into process-local memory. Workers
started with ``spawn`` inherit the environment variable, so calling
``setup_multiprocess`` in the supervisor before starting them is enough; each
worker may call it again (it is idempotent).

Gauge aggregation across processes:

* ``sluice_open_connections``: ``livesum``. Connections belong to one worker
  and die with it, so the total is the sum over live processes, and
  ``mark_process_dead`` drops a dead worker's share.
* ``sluice_service_server_up``: ``livemax``. Each process that health-checks a
  server holds an opinion; a server is reported up when a live process sees it
  up. ``liveall`` would add a ``pid`` label, multiplying series and breaking
  Traefik-shaped dashboards; plain ``max`` would keep a dead worker's stale
  "up" forever.
* last-reload timestamps: ``max``. The newest reload anywhere is the answer,
  and it stays true after the process that recorded it exits.

Counters are summed across processes. Record configuration reloads in the one
process that performs them, or the totals count each reload once per worker.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import threading
import time
from bisect import bisect_left
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gateway.config.static import Prometheus

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Methods outside this set share one label value, so a client inventing
# methods cannot grow the series count or the child cache without bound.
KNOWN_METHODS = frozenset(
    {
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        # WebDAV / CalDAV (RFC 4918, RFC 4791, RFC 3253), common behind home gateways.
        "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK",
        "REPORT", "SEARCH", "MKCALENDAR",
    }
)  # fmt: skip
OTHER_METHOD = "EXTENSION_METHOD"

# The cache is keyed by configuration names; configuration churn (Kubernetes
# renames) could grow it forever, so it is dropped and refilled past this size.
_CACHE_LIMIT = 50_000

# How long counted requests may wait before reaching the prometheus children.
FLUSH_SECONDS = 0.5


class GaugeHandle(Protocol):
    """A labelled gauge the data path keeps per listener."""

    def inc(self, amount: float = 1) -> None: ...

    def dec(self, amount: float = 1) -> None: ...


def setup_multiprocess(directory: Path, *, clean: bool = False) -> None:
    """Make this process (and children it starts) write metrics under ``directory``.

    Must run before ``prometheus_client`` is imported anywhere in the process;
    raises ``RuntimeError`` otherwise. ``clean`` removes files a previous run
    left behind; only the supervisor passes it, once, before starting workers.
    """
    directory = directory.resolve()
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        if not getattr(values.ValueClass, "_multiprocess", False):
            raise RuntimeError(
                "prometheus_client was imported before setup_multiprocess(); "
                "its single-process mode is fixed for this process"
            )
        current = os.environ.get(MULTIPROC_ENV)
        if current is None or Path(current).resolve() != directory:
            raise RuntimeError(
                f"prometheus_client already writes to {current!r}, not {str(directory)!r}"
            )
    directory.mkdir(parents=True, exist_ok=True)
    if clean:
        for stale in directory.glob("*.db"):
            stale.unlink()
    os.environ[MULTIPROC_ENV] = str(directory)


def mark_process_dead(pid: int, directory: Path | None = None) -> None:
    """Drop a dead worker's live gauges (open connections, server up).

    The supervisor calls this when it reaps a worker; ``directory`` defaults to
    the one ``setup_multiprocess`` configured.
    """
    path = directory if directory is not None else os.environ.get(MULTIPROC_ENV)
    if path is None:
        raise RuntimeError("mark_process_dead() needs setup_multiprocess() or a directory")
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


def render_multiprocess(directory: Path) -> tuple[bytes, str]:
    """Exposition text summed over every process writing to ``directory``.

    For a process that serves ``/metrics`` without recording anything itself.
    """
    from prometheus_client import CollectorRegistry, exposition, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return exposition.generate_latest(registry), exposition.CONTENT_TYPE_LATEST


class _Tally:
    """Requests of one label set not yet flushed into their prometheus children."""

    __slots__ = ("count", "total", "buckets", "series")

    def __init__(self, series: tuple[tuple[Counter, Histogram], ...], buckets: int) -> None:
        self.count = 0
        self.total = 0.0
        # Per-bucket (not cumulative) counts, as ``Histogram`` stores them.
        self.buckets = [0] * buckets
        self.series = series


class RequestMetrics:
    """The per-request hot path: one ``observe`` per finished request."""

    __slots__ = (
        "_cache",
        "_entry_point",
        "_router",
        "_service",
        "_bounds",
        "_dirty",
        "_timer",
        "_loop",
        "_loop_thread",
    )

    def __init__(
        self,
        entry_point: tuple[Counter, Histogram] | None,
        router: tuple[Counter, Histogram] | None,
        service: tuple[Counter, Histogram] | None,
    ) -> None:
        self._entry_point = entry_point
        self._router = router
        self._service = service
        self._cache: dict[tuple[str, str, str, str, int, str], _Tally] = {}
        families = [f for f in (entry_point, router, service) if f is not None]
        # Every family is built from the same bucket list, +Inf included.
        self._bounds: list[float] = list(families[0][1]._upper_bounds) if families else []
        self._dirty: list[_Tally] = []
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    def observe(
        self,
        entry_point: str,
        router: str,
        service: str,
        method: str,
        code: int,
        seconds: float,
        protocol: str = "http",
    ) -> None:
        """Count one request and its duration in every enabled family.

        ``router`` and ``service`` are empty for requests no router matched;
        those count at the entry point only, as in Traefik.
        """
        key = (entry_point, router, service, method, code, protocol)
        tally = self._cache.get(key)
        if tally is None:
            tally = self._resolve(key)
        if not tally.series:
            return
        # Histogram.observe's rule: the first bucket whose bound is >= the value.
        tally.buckets[bisect_left(self._bounds, seconds)] += 1
        tally.total += seconds
        tally.count += 1
        if tally.count == 1:
            self._dirty.append(tally)
            self._schedule()

    def _schedule(self) -> None:
        loop = self._loop
        if self._timer is not None and loop is not None and not loop.is_closed():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # counted outside a loop (tests, tools): render() flushes
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._timer = loop.call_later(FLUSH_SECONDS, self._flush_due)

    def _flush_due(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Move every pending tally into its prometheus children (loop thread only)."""
        dirty, self._dirty = self._dirty, []
        for tally in dirty:
            count, total, buckets = tally.count, tally.total, tally.buckets
            tally.count = 0
            tally.total = 0.0
            tally.buckets = [0] * len(buckets)
            for counter, histogram in tally.series:
                counter.inc(count)
                # Histogram.observe's updates, one per bucket instead of per request.
                histogram._sum.inc(total)
                children = histogram._buckets
                for i, n in enumerate(buckets):
                    if n:
                        children[i].inc(n)

    def sync(self) -> None:
        """Flush from any thread: on the counting loop when it runs elsewhere."""
        loop = self._loop
        if (
            loop is None
            or self._loop_thread == threading.get_ident()
            or loop.is_closed()
            or not loop.is_running()
        ):
            self.flush()
            return
        done = threading.Event()

        def run() -> None:
            self.flush()
            done.set()

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:  # closed in the meantime: nothing counts any more
            self.flush()
            return
        done.wait(1.0)

    def _resolve(self, key: tuple[str, str, str, str, int, str]) -> _Tally:
        entry_point, router, service, method, code, protocol = key
        if method not in KNOWN_METHODS and method != OTHER_METHOD:
            # Not cached under the raw method: unknown methods must not grow the cache.
            normal = (entry_point, router, service, OTHER_METHOD, code, protocol)
            cached = self._cache.get(normal)
            return cached if cached is not None else self._resolve(normal)
        status = str(code)
        series: list[tuple[Counter, Histogram]] = []
        if self._entry_point is not None:
            counter, histogram = self._entry_point
            labels = (entry_point, method, status, protocol)
            series.append((counter.labels(*labels), histogram.labels(*labels)))
        if self._router is not None and router:
            counter, histogram = self._router
            labels = (router, service, method, status)
            series.append((counter.labels(*labels), histogram.labels(*labels)))
        if self._service is not None and service:
            counter, histogram = self._service
            svc = (service, method, status)
            series.append((counter.labels(*svc), histogram.labels(*svc)))
        if len(self._cache) >= _CACHE_LIMIT:
            # Tallies still pending stay in the dirty list and flush normally.
            self._cache.clear()
        tally = _Tally(tuple(series), len(self._bounds))
        self._cache[key] = tally
        return tally


class Metrics:
    """Every metric family of one process, and its exposition."""

    def __init__(
        self,
        config: Prometheus,
        registry: CollectorRegistry,
        multiprocess_dir: Path | None,
    ) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.config = config
        self.multiprocess_dir = multiprocess_dir
        self._registry = registry
        buckets = config.buckets

        def family(name: str, what: str, labels: tuple[str, ...]) -> tuple[Counter, Histogram]:
            return (
                Counter(
                    f"sluice_{name}_requests",
                    f"How many {what} requests were processed.",
                    labels,
                    registry=registry,
                ),
                Histogram(
                    f"sluice_{name}_request_duration_seconds",
                    f"How long {what} requests took, in seconds.",
                    labels,
                    buckets=buckets,
                    registry=registry,
                ),
            )

        self.requests = RequestMetrics(
            family("entrypoint", "entry point", ("entrypoint", "method", "code", "protocol"))
            if config.add_entry_points_labels
            else None,
            family("router", "router", ("router", "service", "method", "code"))
            if config.add_routers_labels
            else None,
            family("service", "service", ("service", "method", "code"))
            if config.add_services_labels
            else None,
        )
        self._server_up: Gauge | None = None
        self._retries: Counter | None = None
        if config.add_services_labels:
            self._server_up = Gauge(
                "sluice_service_server_up",
                "Whether a service's server is up (1) or down (0).",
                ("service", "url"),
                multiprocess_mode="livemax",
                registry=registry,
            )
            self._retries = Counter(
                "sluice_service_retries",
                "How many request retries happened in a service.",
                ("service",),
                registry=registry,
            )
        self._open_connections = Gauge(
            "sluice_open_connections",
            "How many connections are open, by entry point.",
            ("entrypoint", "protocol"),
            multiprocess_mode="livesum",
            registry=registry,
        )
        self._reloads = Counter(
            "sluice_config_reloads",
            "How many configuration reloads succeeded.",
            registry=registry,
        )
        self._reload_failures = Counter(
            "sluice_config_reload_failures",
            "How many configuration reloads failed.",
            registry=registry,
        )
        self._last_success = Gauge(
            "sluice_config_last_reload_success_timestamp_seconds",
            "When the last successful configuration reload happened (Unix time).",
            multiprocess_mode="max",
            registry=registry,
        )
        self._last_failure = Gauge(
            "sluice_config_last_reload_failure_timestamp_seconds",
            "When the last failed configuration reload happened (Unix time).",
            multiprocess_mode="max",
            registry=registry,
        )
        self._middleware_errors = Counter(
            "sluice_middleware_errors",
            "How many requests a middleware failed with an exception.",
            ("middleware",),
            registry=registry,
        )
        self._connections: dict[tuple[str, str], GaugeHandle] = {}
        self.l4 = L4Metrics(registry)
        if multiprocess_dir is not None:
            # The files outlive the worker: what it counted last must reach them.
            atexit.register(self.requests.flush)

    @property
    def multiprocess(self) -> bool:
        return self.multiprocess_dir is not None

    def open_connections(self, entry_point: str, protocol: str = "TCP") -> GaugeHandle:
        """The open-connections gauge of one listener; ``inc`` on accept, ``dec`` on close."""
        key = (entry_point, protocol)
        gauge = self._connections.get(key)
        if gauge is None:
            gauge = self._connections[key] = self._open_connections.labels(entry_point, protocol)
        return gauge

    def set_server_up(self, service: str, url: str, up: bool) -> None:
        """Record a health-check verdict for one server; a no-op with services labels off."""
        if self._server_up is not None:
            self._server_up.labels(service, url).set(1 if up else 0)

    def remove_server(self, service: str, url: str) -> None:
        """Forget a server that left the configuration.

        Single-process mode only: ``prometheus_client`` cannot delete a series
        from its mmap files, so in multi-process mode the last value stays
        until the supervisor restarts with a clean directory.
        """
        if self._server_up is not None and not self.multiprocess:
            self._server_up.remove(service, url)

    def retry(self, service: str) -> None:
        """Count one retry of a request inside ``service``; a no-op with services labels off."""
        if self._retries is not None:
            self._retries.labels(service).inc()

    def config_reloaded(self, *, success: bool, at: float | None = None) -> None:
        """Record one configuration reload; successes and failures count apart, as in Traefik."""
        when = time.time() if at is None else at
        if success:
            self._reloads.inc()
            self._last_success.set(when)
        else:
            self._reload_failures.inc()
            self._last_failure.set(when)

    def middleware_error(self, middleware: str) -> None:
        """Count one exception raised by a middleware's handler."""
        self._middleware_errors.labels(middleware).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type; summed over processes when shared."""
        self.requests.sync()
        if self.multiprocess_dir is not None:
            return render_multiprocess(self.multiprocess_dir)
        from prometheus_client import exposition

        return exposition.generate_latest(self._registry), exposition.CONTENT_TYPE_LATEST


class L4Metrics:
    """TCP and UDP counters, by entry point, router and service.

    Recorded per connection or session (when it is accepted, refused or
    ends), never per byte or datagram, so the relay's hot path pays nothing.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter, Gauge

        route = ("entrypoint", "router", "service")
        self.tcp_connections = Counter(
            "sluice_tcp_connections", "How many TCP connections were relayed.", route,
            registry=registry,
        )
        self.tcp_bytes = Counter(
            "sluice_tcp_bytes",
            "Bytes relayed over TCP; direction in is client to server.",
            (*route, "direction"),
            registry=registry,
        )
        self.udp_sessions = Counter(
            "sluice_udp_sessions", "How many UDP sessions were opened.", route,
            registry=registry,
        )
        self.udp_open_sessions = Gauge(
            "sluice_udp_open_sessions",
            "How many UDP sessions are open, by entry point.",
            ("entrypoint",),
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.udp_datagrams = Counter(
            "sluice_udp_datagrams",
            "Datagrams relayed over UDP; direction in is client to server.",
            (*route, "direction"),
            registry=registry,
        )
        self.udp_bytes = Counter(
            "sluice_udp_bytes",
            "Bytes relayed over UDP; direction in is client to server.",
            (*route, "direction"),
            registry=registry,
        )
        self._tcp_children: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}
        self.rejections = Counter(
            "sluice_l4_rejections",
            "TCP connections and UDP datagrams refused by middleware.",
            ("entrypoint", "protocol", "router", "middleware", "reason"),
            registry=registry,
        )

    def _tcp(self, entry: str, router: str, service: str) -> tuple[Any, Any, Any]:
        # A label lookup costs microseconds; a connection needs three.
        key = (entry, router, service)
        found = self._tcp_children.get(key)
        if found is None:
            if len(self._tcp_children) > 4096:  # routers of old generations
                self._tcp_children.clear()
            found = self._tcp_children[key] = (
                self.tcp_connections.labels(entry, router, service),
                self.tcp_bytes.labels(entry, router, service, "in"),
                self.tcp_bytes.labels(entry, router, service, "out"),
            )
        return found

    def tcp_opened(self, entry: str, router: str, service: str) -> None:
        self._tcp(entry, router, service)[0].inc()

    def udp_session_opened(self, entry: str, router: str, service: str) -> None:
        self.udp_sessions.labels(entry, router, service).inc()
        self.udp_open_sessions.labels(entry).inc()

    def tcp_ended(
        self, entry: str, router: str, service: str, bytes_in: int, bytes_out: int
    ) -> None:
        _, received, sent = self._tcp(entry, router, service)
        received.inc(bytes_in)
        sent.inc(bytes_out)

    def udp_session_ended(
        self,
        entry: str,
        router: str,
        service: str,
        datagrams: tuple[int, int],
        sizes: tuple[int, int],
    ) -> None:
        self.udp_open_sessions.labels(entry).dec()
        for direction, count, size in (
            ("in", datagrams[0], sizes[0]),
            ("out", datagrams[1], sizes[1]),
        ):
            self.udp_datagrams.labels(entry, router, service, direction).inc(count)
            self.udp_bytes.labels(entry, router, service, direction).inc(size)

    def rejected(
        self, entry: str, protocol: str, router: str, middleware: str, reason: str
    ) -> None:
        self.rejections.labels(entry, protocol, router, middleware, reason).inc()


def create_metrics(config: Prometheus, *, multiprocess_dir: Path | None = None) -> Metrics:
    """Build every metric family for this process.

    With ``multiprocess_dir``, this calls ``setup_multiprocess`` first, so it
    too must run before ``prometheus_client`` is imported elsewhere. Each call
    uses its own registry, so several instances can live in one process.
    """
    if multiprocess_dir is not None:
        setup_multiprocess(multiprocess_dir)
        multiprocess_dir = multiprocess_dir.resolve()
    from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector

    registry = CollectorRegistry()
    if multiprocess_dir is None:
        # Per-process collectors are meaningless once files are summed across
        # workers, which is why prometheus_client's multiprocess docs omit them.
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
    return Metrics(config, registry, multiprocess_dir)
