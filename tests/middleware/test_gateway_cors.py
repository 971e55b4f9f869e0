"""gatewayCORS through a running gateway, ported from the conformance test httproute-cors.

Spec rules checked (apis/v1/httproute_types.go ``HTTPCORSFilter``; notes
section 2.7): preflights answered by the gateway with 200, origins matched
with default ports and ``*`` wildcards, an allowed origin echoed (never
``*`` with credentials), ``*`` methods/headers answered with what was asked,
credentials only when allowed, ``maxAge`` 5 by default, other origins get no
CORS fields. Header lists are compared ignoring spaces and order, as the
suite does.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from middleware.registry import load_registry
from tests.backends import RecordingBackend, Reply, Responder, Seen, default_response, http_request
from tests.harness import RunningGateway, start_gateway

REGISTRY = load_registry(plugins=False).with_factories(
    {"gatewayCORS": "middleware.http.gateway_cors:GatewayCORS"}
)

# The conformance manifests' filters.
CORS_1 = (
    "{allowOrigins: ['https://www.foo.com', 'https://*.bar.com'], allowMethods: [GET, OPTIONS], "
    "allowHeaders: [x-header-1, x-header-2], exposeHeaders: [x-header-3, x-header-4], "
    "allowCredentials: true, maxAge: 3600}"
)
CORS_2 = "{allowOrigins: ['https://www.foo.com'], allowMethods: ['*']}"
WILDCARD_ORIGIN = "{allowOrigins: ['*'], allowMethods: ['*']}"
WILDCARD_AUTH = (
    "{allowOrigins: ['*'], allowMethods: ['*'], allowHeaders: ['*'], allowCredentials: true}"
)
WILDCARD_UNAUTH = "{allowOrigins: ['*'], allowMethods: ['*'], allowHeaders: ['*']}"


def config(url: str, options: str) -> str:
    return f"""http:
  routers:
    app:
      rule: Host(`app.test`)
      service: app
      middlewares: [mw]
  services:
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
  middlewares:
    mw:
      gatewayCORS: {options}
"""


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, options: str, responder: Responder = default_response
) -> AsyncIterator[tuple[RunningGateway, RecordingBackend]]:
    backend = await RecordingBackend(responder).start()
    gw = await start_gateway(tmp_path, config(backend.url, options), registry=REGISTRY)
    try:
        yield gw, backend
    finally:
        await gw.stop()
        await backend.close()


def request(method: str, headers: dict[str, str]) -> bytes:
    fields = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"{method} /cors HTTP/1.1\r\nHost: app.test\r\n{fields}\r\n".encode()


def normal(value: str | None) -> frozenset[str] | None:
    """A comma-separated value as a set of items, whitespace ignored."""
    return None if value is None else frozenset(v.strip() for v in value.split(","))


def check(reply: Reply, valid: dict[str, tuple[str, ...]], absent: tuple[str, ...]) -> None:
    for name, choices in valid.items():
        assert normal(reply.header(name)) in {normal(c) for c in choices}, name
    for name in absent:
        assert reply.header(name) is None, name


ASK = {
    "access-control-request-method": "GET",
    "access-control-request-headers": "x-header-1, x-header-2",
}
FULL = {
    "access-control-allow-methods": ("GET, OPTIONS",),
    "access-control-allow-headers": ("x-header-1, x-header-2",),
    "access-control-expose-headers": ("x-header-3, x-header-4",),
    "access-control-max-age": ("3600",),
    "access-control-allow-credentials": ("true",),
}

# (filter, request headers, expected values, absent headers) for preflights.
PREFLIGHTS = [
    pytest.param(
        CORS_1, {"Origin": "https://www.foo.com", **ASK},
        {"access-control-allow-origin": ("https://www.foo.com",), **FULL}, (), id="exact-origin",
    ),
    pytest.param(
        CORS_1, {"Origin": "https://www.bar.com", **ASK},
        {"access-control-allow-origin": ("https://www.bar.com",), **FULL}, (), id="wildcard-origin",
    ),
    pytest.param(
        CORS_1, {"Origin": "https://xpto.www.bar.com", **ASK},
        {"access-control-allow-origin": ("https://xpto.www.bar.com",), **FULL}, (),
        id="wildcard-several-labels",
    ),
    pytest.param(
        CORS_1, {"Origin": "https://www.foo.com:443", **ASK},
        {"access-control-allow-origin": ("https://www.foo.com:443",), **FULL}, (),
        id="default-port-explicit",
    ),
    pytest.param(
        CORS_1, {"Origin": "https://foobar.com", "access-control-request-method": "GET"}, {},
        ("access-control-allow-origin", "access-control-allow-credentials",
         "access-control-allow-methods"), id="non-matching-origin",
    ),
    pytest.param(
        CORS_1, {"Origin": "https://bar.com", "access-control-request-method": "GET"}, {},
        ("access-control-allow-origin",), id="wildcard-needs-a-label",
    ),
    pytest.param(
        CORS_1, {"Origin": "http://www.foo.com", "access-control-request-method": "GET"}, {},
        ("access-control-allow-origin",), id="other-scheme",
    ),
    pytest.param(
        CORS_1, {"Origin": "https://www.foo.com:8443", "access-control-request-method": "GET"},
        {}, ("access-control-allow-origin",), id="other-port",
    ),
    pytest.param(
        CORS_2, {"Origin": "https://www.foo.com", "access-control-request-method": "POST"},
        {"access-control-allow-origin": ("https://www.foo.com",),
         "access-control-allow-methods": ("POST", "*"), "access-control-max-age": ("5",)},
        ("access-control-allow-credentials", "access-control-allow-headers"),
        id="wildcard-methods-default-max-age",
    ),
    pytest.param(
        WILDCARD_ORIGIN, {"Origin": "https://foobar.com", "access-control-request-method": "PUT"},
        {"access-control-allow-origin": ("https://foobar.com", "*"),
         "access-control-allow-methods": ("PUT",)},
        ("access-control-allow-credentials",), id="any-origin",
    ),
    pytest.param(
        WILDCARD_ORIGIN,
        {"Origin": "https://foobar.com:12345", "access-control-request-method": "PUT"},
        {"access-control-allow-origin": ("https://foobar.com:12345", "*"),
         "access-control-allow-methods": ("PUT",)},
        ("access-control-allow-credentials",), id="any-origin-with-port",
    ),
    pytest.param(
        WILDCARD_AUTH,
        {"Origin": "https://other.foo.com", "access-control-request-method": "PUT",
         "access-control-request-headers": "x-header-1, x-header-2"},
        {"access-control-allow-origin": ("https://other.foo.com",),
         "access-control-allow-methods": ("PUT",),
         "access-control-allow-headers": ("x-header-1, x-header-2",),
         "access-control-allow-credentials": ("true",)},
        (), id="credentials-echo-never-star",
    ),
    pytest.param(
        WILDCARD_UNAUTH,
        {"Origin": "https://other.foo.com", "access-control-request-method": "PUT",
         "access-control-request-headers": "x-header-1, x-header-2"},
        {"access-control-allow-origin": ("https://other.foo.com", "*"),
         "access-control-allow-methods": ("PUT", "*"),
         "access-control-allow-headers": ("x-header-1, x-header-2", "*")},
        ("access-control-allow-credentials",), id="no-credentials",
    ),
    pytest.param(
        WILDCARD_UNAUTH,
        {"Origin": "https://other.foo.com", "access-control-request-method": "PUT"},
        {"access-control-allow-origin": ("https://other.foo.com",)},
        ("access-control-allow-headers",), id="star-headers-none-asked",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("options", "headers", "valid", "absent"), PREFLIGHTS)
async def test_preflight(
    tmp_path: Path,
    options: str,
    headers: dict[str, str],
    valid: dict[str, tuple[str, ...]],
    absent: tuple[str, ...],
) -> None:
    """A preflight is answered 200 by the gateway with the CORS fields the spec asks for."""
    async with serving(tmp_path, options) as (gw, backend):
        reply = await http_request(gw.port(), request("OPTIONS", headers))
        assert reply.status == 200
        assert reply.body == b""
        check(reply, valid, absent)
        assert reply.header("vary") == "Origin"
        assert backend.requests == []


# (filter, request headers, expected values, absent headers) for other requests.
SIMPLE = [
    pytest.param(
        CORS_1, {"Origin": "https://www.foo.com"},
        {"access-control-allow-origin": ("https://www.foo.com",),
         "access-control-allow-credentials": ("true",),
         "access-control-expose-headers": ("x-header-3, x-header-4",)},
        ("access-control-allow-methods", "access-control-max-age"), id="exact-origin",
    ),
    pytest.param(
        CORS_1, {"Origin": "https://www.bar.com", **ASK},
        {"access-control-allow-origin": ("https://www.bar.com",)}, (), id="wildcard-origin",
    ),
    pytest.param(
        CORS_1, {"Origin": "https://foobar.com"}, {},
        ("access-control-allow-origin", "access-control-allow-credentials"), id="non-matching",
    ),
    pytest.param(
        WILDCARD_ORIGIN, {"Origin": "https://foobar.com:12345"},
        {"access-control-allow-origin": ("https://foobar.com:12345", "*")},
        ("access-control-allow-credentials",), id="any-origin-with-port",
    ),
    pytest.param(
        WILDCARD_AUTH, {"Origin": "https://other.foo.com", "Authorization": "Bearer test"},
        {"access-control-allow-origin": ("https://other.foo.com",),
         "access-control-allow-credentials": ("true",)}, (), id="credentials",
    ),
    pytest.param(
        WILDCARD_UNAUTH, {"Origin": "https://other.foo.com", "Authorization": "Bearer test"},
        {"access-control-allow-origin": ("https://other.foo.com",)},
        ("access-control-allow-credentials",), id="no-credentials",
    ),
    pytest.param(CORS_1, {}, {}, ("access-control-allow-origin", "vary"), id="no-origin"),
]  # fmt: skip


@pytest.mark.parametrize(("options", "headers", "valid", "absent"), SIMPLE)
async def test_simple_request(
    tmp_path: Path,
    options: str,
    headers: dict[str, str],
    valid: dict[str, tuple[str, ...]],
    absent: tuple[str, ...],
) -> None:
    """A non-preflight request is forwarded; an allowed origin's response gets the CORS fields."""
    async with serving(tmp_path, options) as (gw, backend):
        reply = await http_request(gw.port(), request("PUT", headers))
        assert (reply.status, reply.json()["method"]) == (200, "PUT")
        assert len(backend.requests) == 1
        check(reply, valid, absent)


async def test_options_without_request_method_is_forwarded(tmp_path: Path) -> None:
    """OPTIONS with Origin but no Access-Control-Request-Method is not a preflight."""
    async with serving(tmp_path, CORS_1) as (gw, backend):
        reply = await http_request(gw.port(), request("OPTIONS", {"Origin": "https://www.foo.com"}))
        assert (reply.status, reply.json()["method"]) == (200, "OPTIONS")
        assert reply.header("access-control-allow-origin") == "https://www.foo.com"
        assert len(backend.requests) == 1


def cors_backend(seen: Seen) -> bytes:
    """A backend with CORS opinions of its own and a field worth exposing."""
    return (
        b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\n"
        b"Access-Control-Allow-Credentials: false\r\nX-Custom: 1\r\nVary: Accept\r\n"
        b"Content-Length: 2\r\n\r\nok"
    )


async def test_backend_cors_fields_are_replaced_for_allowed_origins(tmp_path: Path) -> None:
    """The filter's answer wins over the backend's own CORS fields; Vary gains Origin."""
    async with serving(tmp_path, CORS_1, cors_backend) as (gw, _):
        reply = await http_request(gw.port(), request("GET", {"Origin": "https://www.foo.com"}))
        allow = [v for k, v in reply.headers if k.lower() == "access-control-allow-origin"]
        assert allow == ["https://www.foo.com"]
        assert reply.header("access-control-allow-credentials") == "true"
        varies = {t for k, v in reply.headers if k.lower() == "vary" for t in normal(v) or ()}
        assert varies == {"Accept", "Origin"}


async def test_expose_star_with_credentials_lists_the_response_fields(tmp_path: Path) -> None:
    """exposeHeaders ['*'] cannot be sent with credentials, so the response's names are."""
    options = "{allowOrigins: ['*'], exposeHeaders: ['*'], allowCredentials: true}"
    async with serving(tmp_path, options, cors_backend) as (gw, _):
        reply = await http_request(gw.port(), request("GET", {"Origin": "https://a.test"}))
        exposed = normal(reply.header("access-control-expose-headers"))
        assert exposed is not None and "x-custom" in exposed and "*" not in exposed


async def test_expose_star_without_credentials_is_sent_as_is(tmp_path: Path) -> None:
    """Without credentials, exposeHeaders ['*'] is the wildcard."""
    options = "{allowOrigins: ['*'], exposeHeaders: ['*']}"
    async with serving(tmp_path, options) as (gw, _):
        reply = await http_request(gw.port(), request("GET", {"Origin": "https://a.test"}))
        assert reply.header("access-control-expose-headers") == "*"


INVALID = [
    pytest.param(
        "{allowOrigins: ['*', 'https://a.test']}",
        "allowOrigins: '*' cannot be combined with other entries", id="star-and-origin",
    ),
    pytest.param(
        "{allowMethods: ['*', GET]}", "allowMethods: '*' cannot be combined", id="star-and-method"
    ),
    pytest.param(
        "{allowOrigins: ['www.foo.com']}",
        "allowOrigins[0]: 'www.foo.com' is not an origin like https://app.example.com",
        id="no-scheme",
    ),
    pytest.param(
        "{allowOrigins: ['ftp://a.test']}", "allowOrigins[0]: 'ftp://a.test' is not an origin",
        id="bad-scheme",
    ),
    pytest.param(
        "{allowHeaders: ['x header']}", "allowHeaders[0]: 'x header' is not a valid name",
        id="bad-header",
    ),
    pytest.param("{maxAge: 0}", "maxAge: 0 must be at least 1 second", id="max-age"),
]  # fmt: skip


@pytest.mark.parametrize(("options", "message"), INVALID)
async def test_invalid_options_are_rejected_at_load(
    tmp_path: Path, options: str, message: str
) -> None:
    """A bad CORS filter is a load error naming the middleware, key and line; old config serves."""
    async with serving(tmp_path, CORS_1) as (gw, backend):
        errors = await gw.reload(config(backend.url, options), expect_ok=False)
        text = str(errors[0])  # type: ignore[index]
        assert message in text
        assert "dynamic.yml:12: http.middlewares.mw.gatewayCORS" in text
        reply = await http_request(gw.port(), request("GET", {"Origin": "https://www.foo.com"}))
        assert reply.header("access-control-allow-origin") == "https://www.foo.com"
