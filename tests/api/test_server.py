"""Tests for gateway.api.server: every route over a real socket on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.api.server import ApiState, bound_port, build_api_app, parse_address, start_api
from gateway.config.static import Prometheus
from gateway.metrics import Metrics, create_metrics

PEM_KEY = (
    "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
)


def router(name: str, rule: str, service: str, **extra: Any) -> dict[str, Any]:
    return {
        "entryPoints": ["web"],
        "service": service,
        "rule": rule,
        "priority": len(rule),
        "middlewares": [],
        "status": "enabled",
        "using": ["web"],
        "name": name,
        "provider": name.partition("@")[2],
        **extra,
    }


@dataclass
class StaticState:
    """A fixed gateway state in Traefik's API shapes (test data, not a mock)."""

    ready: bool = True
    reason: str = ""
    routers: list[dict[str, Any]] = field(
        default_factory=lambda: [
            router("web@file", "Host(`b.test`)", "web@file"),
            router(
                "api@file",
                "Host(`a.test`) && PathPrefix(`/api`)",
                "api@file",
                middlewares=["auth@file"],
                tls={"options": "default"},
            ),
            router(
                "broken@file",
                "Host(`c.test`)",
                "missing@file",
                status="disabled",
                error=['the service "missing@file" does not exist'],
            ),
            router("a/b@kubernetes", "Host(`d.test`)", "web@file"),
        ]
    )
    services: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {
                "loadBalancer": {
                    "servers": [{"url": "http://127.0.0.1:8081"}, {"url": "http://127.0.0.1:8082"}],
                    "passHostHeader": True,
                    "healthCheck": {"path": "/health", "headers": {"Authorization": "Bearer x1"}},
                },
                "status": "enabled",
                "usedBy": ["api@file"],
                "serverStatus": {"http://127.0.0.1:8081": "UP", "http://127.0.0.1:8082": "DOWN"},
                "name": "api@file",
                "provider": "file",
                "type": "loadbalancer",
            }
        ]
    )
    middlewares: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {
                "basicAuth": {"users": ["alice:$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/"]},
                "status": "enabled",
                "usedBy": ["api@file"],
                "name": "auth@file",
                "provider": "file",
                "type": "basicauth",
            },
            {
                "forwardAuth": {
                    "address": "http://127.0.0.1:9999/auth",
                    "tls": {"cert": "/etc/certs/client.pem", "key": PEM_KEY},
                },
                "status": "enabled",
                "name": "fwd@file",
                "provider": "file",
                "type": "forwardauth",
            },
        ]
    )

    def health(self) -> tuple[bool, str]:
        return self.ready, self.reason

    def overview(self) -> dict[str, Any]:
        return {
            "http": {
                "routers": {"total": 4, "warnings": 0, "errors": 1},
                "services": {"total": 1, "warnings": 0, "errors": 0},
                "middlewares": {"total": 2, "warnings": 0, "errors": 0},
            },
            "features": {"metrics": "prometheus", "accessLog": False},
            "providers": ["file"],
        }

    def rawdata(self) -> dict[str, Any]:
        return {
            "routers": {r["name"]: r for r in self.routers},
            "services": {s["name"]: s for s in self.services},
            "middlewares": {m["name"]: m for m in self.middlewares},
            "tls": {"certificates": [{"certFile": "/etc/certs/a.pem", "keyFile": PEM_KEY}]},
        }

    def http_routers(self) -> list[dict[str, Any]]:
        return self.routers

    def http_services(self) -> list[dict[str, Any]]:
        return self.services

    def http_middlewares(self) -> list[dict[str, Any]]:
        return self.middlewares

    def entry_points(self) -> list[dict[str, Any]]:
        return [
            {"address": ":8000", "name": "web"},
            {"address": ":8443", "name": "websecure"},
        ]


async def serve(state: ApiState, metrics: Metrics | None) -> tuple[web.AppRunner, str]:
    runner = await start_api(build_api_app(state, metrics=metrics, version="1.2.3"), "127.0.0.1:0")
    return runner, f"http://127.0.0.1:{bound_port(runner)}"


@pytest.fixture
def metrics() -> Metrics:
    m = create_metrics(Prometheus())
    m.requests.observe("web", "api@file", "api@file", "GET", 200, 0.01)
    return m


@pytest.fixture
async def api(metrics: Metrics) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    runner, base = await serve(StaticState(), metrics)
    async with aiohttp.ClientSession() as session:
        yield session, base
    await runner.cleanup()


Api = tuple[aiohttp.ClientSession, str]


async def get_json(api: Api, path: str, status: int = 200) -> Any:
    session, base = api
    async with session.get(base + path, allow_redirects=False) as response:
        assert response.status == status, await response.text()
        assert response.content_type == "application/json"
        return await response.json()


# --- health and version --------------------------------------------------------


@pytest.mark.parametrize(
    ("ready", "status", "body"),
    [
        (True, 200, {"status": "ok"}),
        (False, 503, {"status": "starting", "reason": "no configuration yet"}),
    ],
    ids=["ready", "starting"],
)
async def test_health(ready: bool, status: int, body: dict[str, str]) -> None:
    """/api/health is 200 when ready and 503 with the reason otherwise."""
    runner, base = await serve(StaticState(ready=ready, reason="no configuration yet"), None)
    try:
        async with aiohttp.ClientSession() as session:
            assert await get_json((session, base), "/api/health", status) == body
    finally:
        await runner.cleanup()


async def test_version(api: Api) -> None:
    """/api/version has Traefik's shape with Sluice's codename."""
    body = await get_json(api, "/api/version")
    assert body["Version"] == "1.2.3"
    assert body["Codename"] == "sluice"
    assert body["startDate"].endswith("Z")


# --- overview and rawdata ------------------------------------------------------


async def test_overview(api: Api) -> None:
    """/api/overview serves the state's overview."""
    body = await get_json(api, "/api/overview")
    assert body["http"]["routers"] == {"total": 4, "warnings": 0, "errors": 1}
    assert body["providers"] == ["file"]


async def test_rawdata_is_redacted(api: Api) -> None:
    """/api/rawdata hides htpasswd users, TLS keys and secret headers."""
    session, base = api
    async with session.get(base + "/api/rawdata") as response:
        text = await response.text()
    assert "$apr1$" not in text
    assert "PRIVATE KEY" not in text
    assert "Bearer x1" not in text
    body = await get_json(api, "/api/rawdata")
    middlewares = body["middlewares"]
    assert middlewares["auth@file"]["basicAuth"]["users"] == ["REDACTED"]
    assert middlewares["fwd@file"]["forwardAuth"]["tls"] == {
        "cert": "/etc/certs/client.pem",
        "key": "REDACTED",
    }
    assert body["tls"]["certificates"][0] == {"certFile": "/etc/certs/a.pem", "keyFile": "REDACTED"}
    assert body["routers"]["api@file"]["rule"] == "Host(`a.test`) && PathPrefix(`/api`)"


# --- entry points, routers, services, middlewares ------------------------------


async def test_entrypoints(api: Api) -> None:
    """/api/entrypoints lists entry points by name; one is fetched by name."""
    assert [ep["name"] for ep in await get_json(api, "/api/entrypoints")] == ["web", "websecure"]
    assert await get_json(api, "/api/entrypoints/web") == {"address": ":8000", "name": "web"}


async def test_routers_list(api: Api) -> None:
    """/api/http/routers lists routers sorted by name with Traefik's fields and paging header."""
    session, base = api
    async with session.get(base + "/api/http/routers") as response:
        assert response.status == 200
        assert response.headers["X-Next-Page"] == "1"
        body = await response.json()
    assert [r["name"] for r in body] == ["a/b@kubernetes", "api@file", "broken@file", "web@file"]
    api_router = body[1]
    assert api_router["middlewares"] == ["auth@file"]
    assert api_router["tls"] == {"options": "default"}
    assert body[2]["status"] == "disabled"
    assert body[2]["error"] == ['the service "missing@file" does not exist']


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("status=disabled", ["broken@file"]),
        ("search=A.TEST", ["api@file"]),
        ("serviceName=web@file", ["a/b@kubernetes", "web@file"]),
        ("middlewareName=auth@file", ["api@file"]),
        # Ties are broken by name, in the same direction, as Traefik does.
        ("sortBy=priority&direction=desc", ["api@file", "web@file", "broken@file",
                                            "a/b@kubernetes"]),
    ],
    ids=["status", "search-rule", "service", "middleware", "sort-priority-desc"],
)  # fmt: skip
async def test_routers_query(api: Api, query: str, names: list[str]) -> None:
    """Router lists honour Traefik's search, status, service, middleware and sort parameters."""
    body = await get_json(api, "/api/http/routers?" + query)
    assert [r["name"] for r in body] == names


async def test_pagination(api: Api) -> None:
    """per_page and page slice the list and X-Next-Page points to the next page."""
    session, base = api
    async with session.get(base + "/api/http/routers?per_page=3&page=1") as response:
        assert response.headers["X-Next-Page"] == "2"
        assert len(await response.json()) == 3
    async with session.get(base + "/api/http/routers?per_page=3&page=2") as response:
        assert response.headers["X-Next-Page"] == "1"
        assert [r["name"] for r in await response.json()] == ["web@file"]


@pytest.mark.parametrize(
    "query",
    ["page=9", "per_page=0", "page=abc"],
    ids=["past-end", "zero-per-page", "not-a-number"],
)
async def test_bad_page_is_400(api: Api, query: str) -> None:
    """Invalid paging parameters answer 400 with a JSON message."""
    body = await get_json(api, "/api/http/routers?" + query, status=400)
    assert body["message"].startswith("invalid request")


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/http/routers/api@file", "api@file"),
        ("/api/http/routers/a%2Fb@kubernetes", "a/b@kubernetes"),
        ("/api/http/services/api@file", "api@file"),
        ("/api/http/middlewares/auth@file", "auth@file"),
    ],
    ids=["router", "router-escaped-slash", "service", "middleware"],
)
async def test_get_by_name(api: Api, path: str, name: str) -> None:
    """Single objects are fetched by their qualified name, percent-decoded."""
    assert (await get_json(api, path))["name"] == name


async def test_service_server_status(api: Api) -> None:
    """Services carry serverStatus per URL; secret health-check headers are hidden."""
    [service] = await get_json(api, "/api/http/services")
    assert service["serverStatus"] == {
        "http://127.0.0.1:8081": "UP",
        "http://127.0.0.1:8082": "DOWN",
    }
    assert service["loadBalancer"]["healthCheck"]["headers"] == {"Authorization": "REDACTED"}


async def test_middlewares_are_redacted(api: Api) -> None:
    """Middleware lists and single middlewares never show credentials."""
    listed = await get_json(api, "/api/http/middlewares")
    assert [m["name"] for m in listed] == ["auth@file", "fwd@file"]
    assert listed[0]["basicAuth"]["users"] == ["REDACTED"]
    single = await get_json(api, "/api/http/middlewares/fwd@file")
    assert single["forwardAuth"]["tls"]["key"] == "REDACTED"
    assert single["forwardAuth"]["address"] == "http://127.0.0.1:9999/auth"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/api/entrypoints/nope", "entry point not found: nope"),
        ("/api/http/routers/nope@file", "router not found: nope@file"),
        ("/api/http/services/nope@file", "service not found: nope@file"),
        ("/api/http/middlewares/nope@file", "middleware not found: nope@file"),
        ("/api/nothing/here", "Not Found"),
    ],
    ids=["entrypoint", "router", "service", "middleware", "unknown-path"],
)
async def test_not_found_is_json(api: Api, path: str, message: str) -> None:
    """Unknown names and paths under /api/ answer 404 with Traefik's error shape."""
    assert await get_json(api, path, status=404) == {"message": message}


async def test_wrong_method_is_json_405(api: Api) -> None:
    """A method the API does not serve answers 405 in JSON, with Allow."""
    session, base = api
    async with session.post(base + "/api/health") as response:
        assert response.status == 405
        assert "GET" in response.headers["Allow"]
        assert await response.json() == {"message": "Method Not Allowed"}


# --- metrics and dashboard -----------------------------------------------------


async def test_metrics_endpoint(api: Api) -> None:
    """/metrics serves the Prometheus text exposition of the given metrics."""
    session, base = api
    async with session.get(base + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    assert (
        'sluice_entrypoint_requests_total{code="200",entrypoint="web",method="GET",'
        'protocol="http"} 1.0' in text
    )


async def test_metrics_disabled_is_404() -> None:
    """/metrics is 404 when metrics are disabled."""
    runner, base = await serve(StaticState(), None)
    try:
        async with aiohttp.ClientSession() as session:
            body = await get_json((session, base), "/metrics", status=404)
    finally:
        await runner.cleanup()
    assert body == {"message": "metrics are disabled"}


@pytest.mark.parametrize("path", ["/", "/dashboard"], ids=["root", "no-slash"])
async def test_redirects_to_dashboard(api: Api, path: str) -> None:
    """The root and /dashboard redirect to /dashboard/."""
    session, base = api
    async with session.get(base + path, allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/dashboard/"


async def test_dashboard_placeholder(api: Api) -> None:
    """/dashboard/ serves an HTML page until the dashboard lands."""
    session, base = api
    async with session.get(base + "/dashboard/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert "/api/overview" in await response.text()


# --- listening ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9000", ("127.0.0.1", 9000)),
        (":9000", (None, 9000)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:8080", ("localhost", 8080)),
    ],
    ids=["ipv4", "all-interfaces", "ipv6", "name"],
)
def test_parse_address(address: str, expected: tuple[str | None, int]) -> None:
    """API addresses parse like entry point addresses."""
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["9000", "host:", "host:99999", "host:http"],
                         ids=["no-colon", "no-port", "port-range", "named-port"])  # fmt: skip
def test_parse_address_rejects(address: str) -> None:
    """Malformed API addresses are refused with the address in the message."""
    with pytest.raises(ValueError, match="is not host:port"):
        parse_address(address)


async def test_bound_port_is_real(api: Api) -> None:
    """Port 0 binds a free port that bound_port reports and that answers."""
    session, base = api
    port = int(base.rpartition(":")[2])
    assert port > 0
    async with session.get(f"http://127.0.0.1:{port}/api/health") as response:
        assert response.status == 200
