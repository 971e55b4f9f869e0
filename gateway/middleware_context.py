"""What a middleware's ``build`` gets besides its options: services, an HTTP client, cleanup.

``MiddlewareResources`` lives as long as the gateway: it owns the shared
aiohttp client session (forwardAuth, JWKS and error pages use it; created on
first use, on the loop, and closed at shutdown). ``GenerationContext`` is made
per compiled configuration and collects the cleanups its middlewares register,
run when the generation is replaced or fails to compile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from yarl import URL

from gateway.config.errors import ConfigError, suggestion
from gateway.http.routing import ServiceRuntime
from middleware.contract import Headers, Request, Response
from middleware.http.http_client import read_limited

log = logging.getLogger(__name__)

# Error pages and the like are small; a service answering more is cut off.
FETCH_LIMIT = 1 << 20
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
        "proxy-connection",
    }
)


class MiddlewareResources:
    """Gateway-lifetime resources shared by every generation's middlewares."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def http_client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=10),
                auto_decompress=False,
                trust_env=False,
                # Shared by every middleware and every client's request: a
                # cookie one auth server sets must never ride along elsewhere.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


class ServiceFetcher:
    """A ``ServiceHandle`` over a compiled service: pick a server, GET from it."""

    def __init__(self, service: ServiceRuntime, resources: MiddlewareResources) -> None:
        self.name = service.name
        self._service = service
        self._resources = resources

    async def fetch(self, request: Request, target: str) -> Response:
        pick = self._service.balancer.pick(request)
        if pick is None:
            return Response(503, body=b"Service Unavailable\n", error="no server available")
        server = pick.server
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        if self._service.pass_host_header and request.host:
            headers.append(("Host", request.headers.get("host") or request.host))
        # encoded: the target is sent as built, not re-normalised by yarl.
        url = URL(server.url.rstrip("/") + target, encoded=True)
        try:
            async with self._resources.http_client().get(
                url, headers=headers, allow_redirects=False
            ) as reply:
                body = await read_limited(reply, FETCH_LIMIT)
                if body is None:
                    cause = f"answer larger than {FETCH_LIMIT} bytes"
                    return Response(502, body=b"Bad Gateway\n", error=cause)
                raw = [
                    (k.encode("latin-1"), v.encode("latin-1"))
                    for k, v in reply.headers.items()
                    if k.lower() not in _HOP_BY_HOP
                ]
                return Response(
                    reply.status, headers=Headers(raw), body=body, reason=reply.reason or ""
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            server.eject(str(exc) or type(exc).__name__)
            return Response(502, body=b"Bad Gateway\n", error=str(exc) or type(exc).__name__)


class GenerationContext:
    """Build contexts for one configuration generation's middlewares."""

    def __init__(
        self, services: Mapping[str, ServiceRuntime], resources: MiddlewareResources
    ) -> None:
        self.services = services
        self.resources = resources
        self.closers: list[Callable[[], Any]] = []

    def for_middleware(self, name: str) -> MiddlewareBuildContext:
        return MiddlewareBuildContext(name, self)

    def close(self) -> None:
        """Run the registered cleanups, each once, logging failures."""
        closers, self.closers = self.closers, []
        for closer in closers:
            try:
                closer()
            except Exception:
                log.exception("middleware cleanup failed")


class MiddlewareBuildContext:
    """The ``BuildContext`` one middleware is built with."""

    def __init__(self, name: str, generation: GenerationContext) -> None:
        self.name = name
        self._generation = generation

    def service(self, name: str) -> ServiceFetcher:
        services = self._generation.services
        _, at, provider = self.name.partition("@")
        qualified = name if "@" in name or not at else f"{name}@{provider}"
        found = services.get(qualified)
        if found is None:
            raise ConfigError(f"unknown service {name!r}{suggestion(qualified, services)}")
        return ServiceFetcher(found, self._generation.resources)

    def http_client(self) -> aiohttp.ClientSession:
        return self._generation.resources.http_client()

    def on_close(self, callback: Callable[[], Any]) -> None:
        self._generation.closers.append(callback)
