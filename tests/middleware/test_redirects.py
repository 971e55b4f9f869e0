"""redirectScheme and redirectRegex through a running gateway: status, Location, pass-through."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

import pytest

from tests.backends import RecordingBackend, Reply, http_request, read_reply
from tests.certs import make_ca
from tests.harness import RunningGateway, start_gateway
from tests.middleware import support
from tests.middleware.support import MW_LINE, TRUSTING

RULE = "Host(`app.test`) || Host(`[::1]`)"


def config(url: str, middleware: str, *, tls: bool = False) -> str:
    """support.config on app.test or [::1]."""
    return support.config(url, middleware, rule=RULE, tls=tls)


def serving(
    tmp_path: Path, middleware: str, static: str = ""
) -> contextlib.AbstractAsyncContextManager[tuple[RunningGateway, RecordingBackend]]:
    return support.serving(tmp_path, middleware, static, rule=RULE)


def request(method: str, target: str, host: str = "app.test", extra: str = "") -> bytes:
    return f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


async def send_from(port: int, raw: bytes, source: str) -> Reply:
    """Send ``raw`` from the loopback address ``source``; return the reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(raw)
        return await read_reply(reader)
    finally:
        writer.close()


HTTPS = "redirectScheme: {scheme: https}"
HTTPS_PERMANENT = "redirectScheme: {scheme: https, permanent: true}"

# (middleware, method, target, Host, status, Location)
SCHEME_REDIRECTS = [
    pytest.param(HTTPS, "GET", "/x?y=1&z", "app.test", 302, "https://app.test/x?y=1&z", id="get"),
    pytest.param(HTTPS, "POST", "/x", "app.test", 307, "https://app.test/x", id="post"),
    pytest.param(HTTPS, "HEAD", "/x", "app.test", 307, "https://app.test/x", id="head"),
    pytest.param(
        HTTPS_PERMANENT, "GET", "/x", "app.test", 301, "https://app.test/x", id="perm-get"
    ),
    pytest.param(
        HTTPS_PERMANENT, "PUT", "/x", "app.test", 308, "https://app.test/x", id="permanent-put"
    ),
    pytest.param(
        HTTPS, "GET", "/a%2Fb?q=%20", "app.test", 302, "https://app.test/a%2Fb?q=%20", id="escapes"
    ),
    pytest.param(
        HTTPS, "GET", "/x", "app.test:8000", 302, "https://app.test/x", id="host-port-dropped"
    ),
    pytest.param(
        "redirectScheme: {scheme: https, port: '8443'}",
        "GET",
        "/x",
        "app.test:8000",
        302,
        "https://app.test:8443/x",
        id="port",
    ),
    pytest.param(
        "redirectScheme: {scheme: https, port: 443}",
        "GET",
        "/x",
        "app.test",
        302,
        "https://app.test/x",
        id="default-port-omitted",
    ),
    pytest.param(
        "redirectScheme: {scheme: HTTPS}",
        "GET",
        "/",
        "app.test",
        302,
        "https://app.test/",
        id="case",
    ),
    pytest.param(HTTPS, "GET", "/x", "[::1]:8000", 302, "https://[::1]/x", id="ipv6-host"),
    pytest.param(
        HTTPS,
        "GET",
        "http://app.test:8000/abs?q",
        "app.test:8000",
        302,
        "https://app.test/abs?q",
        id="absolute-form",
    ),
]


@pytest.mark.parametrize(
    ("middleware", "method", "target", "host", "status", "location"), SCHEME_REDIRECTS
)
async def test_redirect_scheme(
    tmp_path: Path,
    middleware: str,
    method: str,
    target: str,
    host: str,
    status: int,
    location: str,
) -> None:
    """An http request is redirected to the target scheme with 301/302/307/308 by method."""
    async with serving(tmp_path, middleware) as (gw, backend):
        reply = await http_request(gw.port(), request(method, target, host), head_only=True)
        assert (reply.status, reply.header("location")) == (status, location)
        assert backend.requests == []


async def test_redirect_body_is_status_text(tmp_path: Path) -> None:
    """The redirect's body is the status text, as Traefik writes it."""
    async with serving(tmp_path, HTTPS) as (gw, _):
        reply = await http_request(gw.port(), request("GET", "/"))
        assert (reply.status, reply.body) == (302, b"Found")
        assert reply.header("content-type") == "text/plain; charset=utf-8"


async def test_redirect_to_http_from_http_passes(tmp_path: Path) -> None:
    """A request already on the target scheme and default port is forwarded untouched."""
    async with serving(tmp_path, "redirectScheme: {scheme: http}") as (gw, backend):
        for host in ("app.test", "app.test:80"):
            reply = await http_request(gw.port(), request("GET", "/x?q=1", host))
            assert reply.status == 200
            assert backend.requests[-1].target == "/x?q=1"


@pytest.mark.parametrize(
    ("source", "proto", "status"),
    [
        pytest.param("127.0.0.1", "https", 200, id="trusted-https"),
        pytest.param("127.0.0.1", "WSS", 200, id="trusted-wss"),
        pytest.param("127.0.0.1", "http", 302, id="trusted-http"),
        pytest.param("127.0.0.1", "gopher", 302, id="trusted-unknown"),
        pytest.param("127.0.0.5", "https", 302, id="untrusted-https-ignored"),
    ],
)
async def test_forwarded_proto_counts_from_trusted_clients(
    tmp_path: Path, source: str, proto: str, status: int
) -> None:
    """X-Forwarded-Proto: https means already https, but only from a trustedIPs client."""
    async with serving(tmp_path, HTTPS, static=TRUSTING) as (gw, backend):
        raw = request("GET", "/x", extra=f"X-Forwarded-Proto: {proto}\r\n")
        reply = await send_from(gw.port(), raw, source)
        assert reply.status == status
        assert len(backend.requests) == (1 if status == 200 else 0)


async def test_https_requests_pass_unless_port_differs(tmp_path: Path) -> None:
    """Over TLS the request passes; with a port in Host, only when the port option matches."""
    ca = make_ca(tmp_path)
    cert, key = ca.issue(tmp_path, ["app.test"])
    backend = await RecordingBackend().start()
    certs = f'tls:\n  certificates:\n    - {{certFile: "{cert}", keyFile: "{key}"}}\n'
    gw = await start_gateway(tmp_path, config(backend.url, HTTPS, tls=True) + certs)
    context = ssl.create_default_context(cafile=str(ca.cert_path))

    async def over_tls(host: str) -> Reply:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", gw.port(), ssl=context, server_hostname="app.test"
        )
        try:
            writer.write(request("GET", "/x?q=1", host))
            return await read_reply(reader)
        finally:
            writer.close()

    try:
        host = f"app.test:{gw.port()}"
        assert (await over_tls("app.test")).status == 200
        assert backend.requests[-1].target == "/x?q=1"
        # Same scheme, another port than configured: Traefik sends it to the configured one.
        moved = await over_tls(host)
        assert (moved.status, moved.header("location")) == (302, "https://app.test/x?q=1")
        with_port = f"redirectScheme: {{scheme: https, port: '{gw.port()}'}}"
        await gw.reload(config(backend.url, with_port, tls=True) + certs)
        assert (await over_tls(host)).status == 200
    finally:
        await gw.stop()
        await backend.close()


# (middleware, method, target, Host, status, Location); status 200 means forwarded
REGEX_REDIRECTS = [
    pytest.param(
        'redirectRegex: {regex: "^http://app.test/(.*)", replacement: "http://new.test/${1}"}',
        "GET",
        "/a/b?c=d",
        "app.test",
        302,
        "http://new.test/a/b?c=d",
        id="capture",
    ),
    pytest.param(
        'redirectRegex: {regex: "^http://(?P<host>[^:/]+):(\\\\d+)/(.*)", '
        'replacement: "https://${host}:${2}0/$3", permanent: true}',
        "POST",
        "/p",
        "app.test:808",
        308,
        "https://app.test:8080/p",
        id="named-and-port-permanent-post",
    ),
    pytest.param(
        'redirectRegex: {regex: "^http://other.test/(.*)", replacement: "http://x/$1"}',
        "GET",
        "/a",
        "app.test",
        200,
        None,
        id="no-match-passes",
    ),
    pytest.param(
        'redirectRegex: {regex: "^(http://app.test/.*)", replacement: "$1"}',
        "GET",
        "/same",
        "app.test",
        200,
        None,
        id="unchanged-url-passes",
    ),
    pytest.param(
        'redirectRegex: {regex: "^http://app.test/(.*)", replacement: "/go/$1x/${1}x"}',
        "GET",
        "/a",
        "app.test",
        302,
        "/go//ax",
        id="go-expand",
    ),
    pytest.param(
        'redirectRegex: {regex: "/old/", replacement: "/new/"}',
        "GET",
        "/old/x/old/?old",
        "app.test",
        302,
        "http://app.test/new/x/new/?old",
        id="replace-all",
    ),
]


@pytest.mark.parametrize(
    ("middleware", "method", "target", "host", "status", "location"), REGEX_REDIRECTS
)
async def test_redirect_regex(
    tmp_path: Path,
    middleware: str,
    method: str,
    target: str,
    host: str,
    status: int,
    location: str | None,
) -> None:
    """redirectRegex rewrites scheme://host/path?query and redirects when the URL changed."""
    async with serving(tmp_path, middleware) as (gw, backend):
        reply = await http_request(gw.port(), request(method, target, host), head_only=True)
        assert (reply.status, reply.header("location")) == (status, location)
        if status == 200:
            assert backend.requests[-1].target == target
        else:
            assert backend.requests == []


LOAD_ERRORS = [
    pytest.param(
        "redirectScheme: {permanent: true}", 'missing required key "scheme"', id="no-scheme"
    ),
    pytest.param(
        'redirectScheme: {scheme: ""}',
        "redirectScheme: scheme: you must provide a target scheme",
        id="empty-scheme",
    ),
    pytest.param(
        'redirectScheme: {scheme: "https://"}',
        "redirectScheme: scheme: 'https://' is not a URL scheme",
        id="bad-scheme",
    ),
    pytest.param(
        "redirectScheme: {scheme: https, port: abc}",
        "redirectScheme: port: 'abc' is not a port number",
        id="bad-port",
    ),
    pytest.param(
        'redirectRegex: {regex: "^http://(a", replacement: x}',
        "redirectRegex: regex: invalid regular expression '^http://(a'",
        id="bad-regex",
    ),
    pytest.param(
        'redirectRegex: {regex: "(\\\\w)\\\\1", replacement: x}',
        "back-references",
        id="back-reference",
    ),
    pytest.param(
        'redirectRegex: {regex: "", replacement: x}', "regex: cannot be empty", id="empty"
    ),
    pytest.param("redirectRegex: {replacement: x}", 'missing required key "regex"', id="no-regex"),
]


@pytest.mark.parametrize(("middleware", "message"), LOAD_ERRORS)
async def test_invalid_options_rejected_at_load(
    tmp_path: Path, middleware: str, message: str
) -> None:
    """A bad option is a load error naming file, line, middleware and key; the old config serves."""
    async with serving(tmp_path, HTTPS) as (gw, backend):
        errors = await gw.reload(config(backend.url, middleware), expect_ok=False)
        text = str(errors[0])  # type: ignore[index]
        assert message in text, text
        assert f"dynamic.yml:{MW_LINE}: http.middlewares.mw" in text, text
        reply = await http_request(gw.port(), request("GET", "/"), head_only=True)
        assert (reply.status, reply.header("location")) == (302, "https://app.test/")


async def test_catastrophic_redirect_regex_answers_a_hostile_path_at_once(tmp_path: Path) -> None:
    """A 16 KiB target against a backtracking-prone redirectRegex passes, then redirects go on."""
    middleware = (
        'redirectRegex: {regex: "^http://app.test/(.*)/(.*)/(.*)/v1$", '
        'replacement: "http://new.test/$3"}'
    )
    async with serving(tmp_path, middleware) as (gw, backend):
        async with asyncio.timeout(5):
            hostile = await http_request(gw.port(), request("GET", "/api/" + "a/" * 8192))
            normal = await http_request(gw.port(), request("GET", "/api/a/b/c/v1"))
        assert hostile.status == 200
        assert backend.requests[-1].target == "/api/" + "a/" * 8192
        assert (normal.status, normal.header("location")) == (302, "http://new.test/c")
