"""The compiled, swappable state an HTTP entry point serves from.

``HTTPState`` is built from one validated snapshot by the runtime, off the
hot path, and swapped into every ``EntryPointRuntime`` with one attribute
assignment; connections read ``entry.state`` once per request, so an
in-flight request finishes on the tables it started with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.http.balancer import Balancer
from gateway.http.forwarded import TrustedSources
from middleware.contract import Handler, Request, Response

if TYPE_CHECKING:
    from gateway.http.router_table import RouterTable
    from middleware.chains import FilterChain


@dataclass(slots=True, eq=False)
class ServiceRuntime:
    """A compiled HTTP service: its balancer and forwarding settings."""

    name: str
    balancer: Balancer
    pass_host_header: bool = True
    response_header_timeout: float = 0.0
    # Responses without a known length are flushed as they arrive; the
    # interval exists in config for Traefik compatibility (flushInterval).
    flush_interval: float = 0.1


@dataclass(slots=True, eq=False)
class RouterRuntime:
    """A compiled HTTP router: where it sends requests, through which chain."""

    name: str
    service: ServiceRuntime
    # None when the router has no middleware: the request is forwarded
    # without creating a task or Request-level handler calls.
    chain: Handler | None = None
    # Set when every middleware is a Filter: run inline, no task per request.
    filters: FilterChain | None = None
    middleware_names: tuple[str, ...] = ()
    tls: bool = False


@dataclass(slots=True, eq=False)
class HTTPState:
    """Everything one entry point needs to route a request."""

    table: RouterTable[RouterRuntime]
    generation: int = 0


@dataclass(slots=True, eq=False)
class EntryPointSettings:
    """Per-entry-point limits and timeouts, from static configuration."""

    name: str
    scheme: bytes = b"http"
    port: bytes = b"80"
    trusted: TrustedSources = field(default_factory=lambda: TrustedSources(()))
    read_header_timeout: float = 10.0
    read_timeout: float = 60.0
    idle_timeout: float = 180.0
    max_header_bytes: int = 32768
    keep_alive_max_requests: int = 0
    keep_alive_max_time: float = 0.0


async def _not_found(request: Request) -> Response:
    return Response(404, body=b"Not Found\n")


# Stands in for a router when a request no router takes is pipelined behind
# others: it then waits its turn like any exchange and answers 404.
NOT_FOUND_ROUTER = RouterRuntime(
    name="", service=ServiceRuntime(name="", balancer=Balancer("", [], [])), chain=_not_found
)
