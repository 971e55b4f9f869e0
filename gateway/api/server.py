"""The API server: Traefik's JSON API, /metrics, and the dashboard's entry.

Routes keep Traefik's paths and shapes (``/api/http/routers``,
``/api/rawdata``, ``/api/version``...), so Traefik's dashboard and scripts
written against Traefik's API work. The runtime supplies plain dicts through
``ApiState``; this module owns what is done to them on the way out:

* every dict from the state is passed through ``redact`` before it is
  serialised, so no credential or key material leaves the process, whatever
  the state provider forgot;
* errors are JSON ``{"message": ...}`` as in Traefik, including 404 for an
  unknown name or path under ``/api/``.

Nothing here touches the data path; the state is read per API request.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

from gateway.api.listing import NEXT_PAGE_HEADER, Kind, QueryError, select
from gateway.api.redact import redact
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

CODENAME = "sluice"

_DASHBOARD_PLACEHOLDER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sluice</title></head>
<body>
<h1>Sluice</h1>
<p>The dashboard is not built yet. The JSON API is available:</p>
<ul>
<li><a href="/api/overview">/api/overview</a></li>
<li><a href="/api/http/routers">/api/http/routers</a></li>
<li><a href="/api/http/services">/api/http/services</a></li>
<li><a href="/api/http/middlewares">/api/http/middlewares</a></li>
<li><a href="/api/entrypoints">/api/entrypoints</a></li>
<li><a href="/api/rawdata">/api/rawdata</a></li>
<li><a href="/metrics">/metrics</a></li>
</ul>
</body></html>
"""


class ApiState(Protocol):
    """What the runtime exposes to the API, as plain JSON-shaped data.

    Routers, services and middlewares are Traefik's API shapes, each with its
    qualified ``name`` (``api@file``) and ``provider``; services carry
    ``serverStatus`` (``{url: "UP" | "DOWN"}``). Secrets may be left in: the
    API redacts.
    """

    def health(self) -> tuple[bool, str]:
        """Whether the gateway is ready to serve, and why not."""
        ...

    def overview(self) -> dict[str, Any]: ...

    def rawdata(self) -> dict[str, Any]: ...

    def http_routers(self) -> list[dict[str, Any]]: ...

    def http_services(self) -> list[dict[str, Any]]: ...

    def http_middlewares(self) -> list[dict[str, Any]]: ...

    def entry_points(self) -> list[dict[str, Any]]: ...

    def gateway_api(self) -> list[dict[str, Any]]:
        """Gateway API objects the controller owns, with their status conditions."""
        ...


_dumps = functools.partial(json.dumps, default=str)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


def _error(message: str, status: int) -> web.Response:
    return _json({"message": message}, status=status)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown paths and methods under /api/ answer in JSON, like every API error."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/api/"):
            response = _error(exc.reason, exc.status)
            if "Allow" in exc.headers:  # 405 must say which methods are allowed
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        raise


class _Api:
    """The request handlers, bound to one state."""

    def __init__(self, state: ApiState, metrics: Metrics | None, version: str) -> None:
        self.state = state
        self.metrics = metrics
        self.version = {
            "Version": version,
            "Codename": CODENAME,
            "startDate": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }

    async def health(self, request: web.Request) -> web.Response:
        ready, reason = self.state.health()
        if ready:
            return _json({"status": "ok"})
        return _json({"status": "starting", "reason": reason}, status=503)

    async def version_info(self, request: web.Request) -> web.Response:
        return _json(self.version)

    async def overview(self, request: web.Request) -> web.Response:
        return _json(redact(self.state.overview()))

    async def rawdata(self, request: web.Request) -> web.Response:
        return _json(redact(self.state.rawdata()))

    def _source(self, kind: Kind) -> Callable[[], list[dict[str, Any]]]:
        return {
            "entrypoints": self.state.entry_points,
            "routers": self.state.http_routers,
            "services": self.state.http_services,
            "middlewares": self.state.http_middlewares,
        }[kind]

    def lister(self, kind: Kind) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            items = redact(self._source(kind)())
            try:
                page = select(kind, items, request.query)
            except QueryError as exc:
                return _error(str(exc), 400)
            return _json(page.items, headers={NEXT_PAGE_HEADER: str(page.next_page)})

        return handle

    def getter(self, kind: Kind, what: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            for item in self._source(kind)():
                if item.get("name") == name:
                    return _json(redact(item))
            return _error(f"{what} not found: {name}", 404)

        return handle

    async def gateway_api(self, request: web.Request) -> web.Response:
        return _json(self.state.gateway_api())

    async def prometheus(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            return _error("metrics are disabled", 404)
        # Multi-process rendering reads every worker's files; keep it off the loop.
        body, content_type = await asyncio.to_thread(self.metrics.render)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def root(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/dashboard/")

    async def dashboard(self, request: web.Request) -> web.Response:
        return web.Response(text=_DASHBOARD_PLACEHOLDER, content_type="text/html")


def build_api_app(state: ApiState, *, metrics: Metrics | None, version: str) -> web.Application:
    """The aiohttp application serving the API, /metrics and the dashboard."""
    api = _Api(state, metrics, version)
    app = web.Application(middlewares=[_json_errors])
    get = app.router.add_get
    get("/api/health", api.health)
    get("/api/version", api.version_info)
    get("/api/overview", api.overview)
    get("/api/rawdata", api.rawdata)
    get("/api/entrypoints", api.lister("entrypoints"))
    get("/api/entrypoints/{name}", api.getter("entrypoints", "entry point"))
    get("/api/http/routers", api.lister("routers"))
    get("/api/http/routers/{name}", api.getter("routers", "router"))
    get("/api/http/services", api.lister("services"))
    get("/api/http/services/{name}", api.getter("services", "service"))
    get("/api/http/middlewares", api.lister("middlewares"))
    get("/api/http/middlewares/{name}", api.getter("middlewares", "middleware"))
    get("/api/gatewayapi", api.gateway_api)
    get("/metrics", api.prometheus)
    get("/", api.root)
    get("/dashboard", api.root)
    get("/dashboard/", api.dashboard)
    return app


def parse_address(address: str) -> tuple[str | None, int]:
    """``"127.0.0.1:9000"``, ``"[::1]:9000"`` or ``":9000"`` (every interface) to host, port."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"API address {address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return (host or None), int(port_text)


def build_metrics_app(metrics: Metrics) -> web.Application:
    """An application serving only ``/metrics`` (for ``metrics.prometheus.address``)."""
    api = _Api(None, metrics, "")  # type: ignore[arg-type]
    app = web.Application(middlewares=[_json_errors])
    app.router.add_get("/metrics", api.prometheus)
    return app


async def start_api(app: web.Application, address: str) -> web.AppRunner:
    """Serve ``app`` on ``address``; port 0 picks a free port (see ``bound_port``)."""
    host, port = parse_address(address)
    # API calls are not traffic; they stay out of aiohttp's access log.
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("api: listening on %s", ", ".join(map(str, runner.addresses)))
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port the API listens on (the real one when the address said port 0)."""
    for address in runner.addresses:
        return int(address[1])
    raise RuntimeError("the API runner has no listening socket")
