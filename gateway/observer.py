"""Reports finished requests to Prometheus and the access log.

One ``Observer`` per process implements the entry points' ``RequestObserver``.
Its per-request cost with metrics on and the access log off is one
``RequestMetrics.observe`` call; access-log entries are only built when the
access log is enabled.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from gateway.access_log import AccessEntry, AccessLog
from gateway.l4.access_line import L4Entry, common_line, json_line
from gateway.metrics import GaugeHandle, Metrics

if TYPE_CHECKING:
    from gateway.http.exchange import Exchange
    from gateway.http.routing import RouterRuntime
    from gateway.l4.relay import Relay
    from gateway.l4.tcp_routing import TCPRouterRuntime, TCPServer
    from gateway.l4.udp import SessionRecord, Target
    from middleware.l4.contract import ConnectionInfo, Rejection

log = logging.getLogger(__name__)


class Observer:
    """Metrics and access log for every entry point of this process."""

    def __init__(self, metrics: Metrics | None, access_log: AccessLog | None) -> None:
        self.metrics = metrics
        self.requests = metrics.requests if metrics is not None else None
        self.access_log = access_log
        self._gauges: dict[str, GaugeHandle] = {}
        self.request_count = 0

    def observe(self, entry: str, exchange: Exchange) -> None:
        self.request_count += 1
        requests = self.requests
        if requests is not None:
            router = exchange.router
            requests.observe(
                entry,
                router.name,
                router.service.name,
                exchange.request.method,
                exchange.status,
                time.monotonic() - exchange.start,
            )
        if self.access_log is not None:
            self._access(entry, exchange)

    def observe_local(self, entry: str, method: bytes, status: int) -> None:
        self.request_count += 1
        if self.requests is not None:
            self.requests.observe(entry, "", "", method.decode("latin-1") or "GET", status, 0.0)

    def connection_count(self, entry: str, delta: int) -> None:
        if self.metrics is None:
            return
        gauge = self._gauges.get(entry)
        if gauge is None:
            gauge = self._gauges[entry] = self.metrics.open_connections(entry)
        if delta > 0:
            gauge.inc(delta)
        else:
            gauge.dec(-delta)

    def retry(self, service: str) -> None:
        if self.metrics is not None:
            self.metrics.retry(service)

    def middleware_error(self, router: RouterRuntime) -> None:
        log.warning("router %s: a middleware raised; answered 500", router.name)

    def _access(self, entry: str, exchange: Exchange) -> None:
        assert self.access_log is not None
        request = exchange.request
        server = exchange.server
        duration = time.monotonic() - exchange.start
        self.access_log.log(
            AccessEntry(
                client_host=request.client_ip,
                client_port=request.client_port,
                start=time.time() - duration,
                duration=duration,
                method=request.method,
                path=request.target,
                protocol=f"HTTP/{request.http_version}",
                status=exchange.status,
                size=exchange.bytes_out,
                router=exchange.router.name,
                service=exchange.router.service.name,
                service_url=server.url if server is not None else "",
                entry_point=entry,
                user_agent=request.headers.get(b"user-agent") or "",
                referer=request.headers.get(b"referer") or "",
                request_count=self.request_count,
                username=request.user,
            )
        )

    # -- TCP and UDP ---------------------------------------------------------------------

    def tcp_opened(self, entry: str, router: TCPRouterRuntime) -> None:
        if self.metrics is not None:
            self.metrics.l4.tcp_opened(entry, router.name, router.service)

    def tcp_rejected(
        self, entry: str, router: TCPRouterRuntime, rejection: Rejection, info: ConnectionInfo
    ) -> None:
        if self.metrics is not None:
            self.metrics.l4.rejected(
                entry, "tcp", router.name, rejection.middleware, rejection.reason
            )
        if self.access_log is not None:
            self._l4_line(
                L4Entry(
                    protocol="tcp",
                    entry_point=entry,
                    router=router.name,
                    service=router.service,
                    client_host=info.client_ip,
                    client_port=info.client_port,
                    sni=info.sni,
                    start=time.time(),
                    reason="rejected",
                    rejected_by=rejection.middleware,
                )
            )

    def tcp_done(
        self,
        entry: str,
        router: TCPRouterRuntime,
        server: TCPServer,
        relay: Relay,
        info: ConnectionInfo,
    ) -> None:
        bytes_in, bytes_out = relay.bytes_from_client, relay.bytes_from_upstream
        if self.metrics is not None:
            self.metrics.l4.tcp_ended(entry, router.name, router.service, bytes_in, bytes_out)
        if self.access_log is not None:
            duration = relay.duration
            self._l4_line(
                L4Entry(
                    protocol="tcp",
                    entry_point=entry,
                    router=router.name,
                    service=router.service,
                    client_host=info.client_ip,
                    client_port=info.client_port,
                    server=server.address,
                    sni=info.sni,
                    start=time.time() - duration,
                    duration=duration,
                    bytes_in=bytes_in,
                    bytes_out=bytes_out,
                    reason=relay.reason or "",
                )
            )

    def udp_session_opened(self, entry: str, target: Target) -> None:
        if self.metrics is not None:
            self.metrics.l4.udp_session_opened(entry, target.router, target.service)

    def udp_rejected(self, entry: str, target: Target, rejection: Rejection) -> None:
        if self.metrics is not None:
            self.metrics.l4.rejected(
                entry, "udp", target.router, rejection.middleware, rejection.reason
            )

    def udp_session_ended(self, record: SessionRecord) -> None:
        if self.metrics is not None:
            self.metrics.l4.udp_session_ended(
                record.entry_point,
                record.router,
                record.service,
                (record.datagrams_in, record.datagrams_out),
                (record.bytes_in, record.bytes_out),
            )
        if self.access_log is not None:
            host, port = record.server
            self._l4_line(
                L4Entry(
                    protocol="udp",
                    entry_point=record.entry_point,
                    router=record.router,
                    service=record.service,
                    client_host=record.client[0],
                    client_port=record.client[1],
                    server=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                    start=record.started,
                    duration=record.duration,
                    bytes_in=record.bytes_in,
                    bytes_out=record.bytes_out,
                    datagrams_in=record.datagrams_in,
                    datagrams_out=record.datagrams_out,
                    reason=record.reason or "",
                )
            )

    def _l4_line(self, entry: L4Entry) -> None:
        assert self.access_log is not None
        line = json_line(entry) if self.access_log.format == "json" else common_line(entry)
        self.access_log.write_line(line)
