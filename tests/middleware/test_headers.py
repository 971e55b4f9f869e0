"""The ``headers`` middleware through a running gateway: custom, CORS and security headers."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.backends import RecordingBackend, Reply, Seen, default_response, get, read_reply
from tests.certs import make_ca
from tests.harness import RunningGateway, start_gateway
from tests.middleware.support import TRUSTING

# Untrusted clients connect from this loopback address.
STRANGER = "127.0.0.5"
UPSTREAM_HEADERS = (
    b"X-Powered-By: php\r\nX-Frame-Options: SAMEORIGIN\r\n"
    b"Access-Control-Allow-Origin: https://upstream.example\r\nVary: Accept-Encoding\r\n"
)


def upstream(seen: Seen) -> bytes:
    """The recording backend's answer, with a few headers the middleware may edit."""
    return default_response(seen).replace(b"\r\n", b"\r\n" + UPSTREAM_HEADERS, 1)


def dynamic(url: str, options: str, tls: str = "") -> str:
    return f"""
http:
  routers:
    app:
      rule: PathPrefix(`/`)
      service: app
      middlewares: [h]
      {tls}
  services:
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
  middlewares:
    h:
      headers: {options}
"""


@dataclass
class Site:
    gw: RunningGateway
    backend: RecordingBackend

    async def send(self, raw: bytes, *, source: str = "127.0.0.1") -> Reply:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.gw.port(), local_addr=(source, 0)
        )
        try:
            writer.write(raw)
            return await read_reply(reader)
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def site(tmp_path: Path, options: str, *, static: str = TRUSTING) -> AsyncIterator[Site]:
    backend = await RecordingBackend(responder=upstream).start()
    gw = await start_gateway(tmp_path, dynamic(backend.url, options), static=static)
    try:
        yield Site(gw, backend)
    finally:
        await gw.stop()
        await backend.close()


def request(extra: str = "", *, method: str = "GET", host: str = "app.test") -> bytes:
    return f"{method} / HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def all_values(reply: Reply, name: str) -> list[str]:
    return [v for k, v in reply.headers if k.lower() == name.lower()]


# -- custom headers ------------------------------------------------------------------


async def test_custom_request_headers_set_replace_and_remove(tmp_path):
    """customRequestHeaders add and replace request headers; an empty value removes one."""
    options = '{customRequestHeaders: {X-Script-Name: test, X-Old: "", X-Keep: new}}'
    async with site(tmp_path, options) as s:
        reply = await s.send(request("X-Old: 1\r\nX-Keep: a\r\nX-Keep: b\r\n"))
        assert reply.status == 200
        seen = s.backend.requests[-1]
        assert seen.header("x-script-name") == "test"
        assert "x-old" not in seen.header_names()
        assert [v for k, v in seen.headers if k.lower() == "x-keep"] == ["new"]


async def test_custom_request_host_header_rewrites_the_forwarded_host(tmp_path):
    """customRequestHeaders.Host changes the Host the upstream receives."""
    async with site(tmp_path, "{customRequestHeaders: {Host: internal.test}}") as s:
        assert (await s.send(request())).status == 200
        assert s.backend.requests[-1].header("host") == "internal.test"


async def test_custom_request_forwarded_proto_reaches_upstream(tmp_path):
    """X-Forwarded-Proto set by customRequestHeaders is forwarded; a client's own is not."""
    async with site(tmp_path, "{customRequestHeaders: {X-Forwarded-Proto: https}}") as s:
        untrusted = "127.0.0.2"
        reply = await s.send(request("X-Forwarded-Proto: ftp\r\n"), source=untrusted)
        assert reply.status == 200
        seen = s.backend.requests[-1]
        assert [v for k, v in seen.headers if k.lower() == "x-forwarded-proto"] == ["https"]
    async with site(tmp_path, "{customRequestHeaders: {X-Other: x}}") as s:
        spoof = "X-Forwarded-Proto: https\r\nX-Forwarded-For: 203.0.113.9\r\n"
        assert (await s.send(request(spoof), source=untrusted)).status == 200
        seen = s.backend.requests[-1]
        assert seen.header("x-forwarded-proto") == "http"
        assert seen.header("x-forwarded-for") == untrusted


async def test_custom_response_headers_set_replace_and_remove(tmp_path):
    """customResponseHeaders set and replace response headers; an empty value removes one."""
    options = '{customResponseHeaders: {X-Served-By: sluice, X-Powered-By: "", Vary: Cookie}}'
    async with site(tmp_path, options) as s:
        reply = await s.send(request())
        assert reply.header("x-served-by") == "sluice"
        assert reply.header("x-powered-by") is None
        assert all_values(reply, "vary") == ["Cookie"]
        assert reply.json()["method"] == "GET"


# -- security headers ------------------------------------------------------------------

SECURITY = {
    "frame-deny": ("{frameDeny: true}", {"X-Frame-Options": "DENY"}),
    "custom-frame-options": (
        "{frameDeny: true, customFrameOptionsValue: SAMEORIGIN}",
        {"X-Frame-Options": "SAMEORIGIN"},
    ),
    "nosniff": ("{contentTypeNosniff: true}", {"X-Content-Type-Options": "nosniff"}),
    "xss-filter": ("{browserXssFilter: true}", {"X-XSS-Protection": "1; mode=block"}),
    "custom-xss": (
        '{browserXssFilter: true, customBrowserXSSValue: "0"}',
        {"X-XSS-Protection": "0"},
    ),
    "csp": (
        "{contentSecurityPolicy: \"default-src 'self'\", "
        'contentSecurityPolicyReportOnly: "img-src *"}',
        {
            "Content-Security-Policy": "default-src 'self'",
            "Content-Security-Policy-Report-Only": "img-src *",
        },
    ),
    "referrer-and-permissions": (
        '{referrerPolicy: same-origin, permissionsPolicy: "camera=()"}',
        {"Referrer-Policy": "same-origin", "Permissions-Policy": "camera=()"},
    ),
    "sts-forced": (
        "{stsSeconds: 315360000, stsIncludeSubdomains: true, stsPreload: true, "
        "forceSTSHeader: true}",
        {"Strict-Transport-Security": "max-age=315360000; includeSubDomains; preload"},
    ),
    "sts-plain-http": (
        "{stsSeconds: 60, publicKey: pin, frameDeny: true}",
        {"Strict-Transport-Security": None, "Public-Key-Pins": None},
    ),
    "development-drops-sts": (
        "{stsSeconds: 60, forceSTSHeader: true, isDevelopment: true}",
        {"Strict-Transport-Security": None},
    ),
    "custom-removes-security": (
        '{frameDeny: true, customResponseHeaders: {X-Frame-Options: ""}}',
        {"X-Frame-Options": None},
    ),
}


@pytest.mark.parametrize(("options", "expected"), SECURITY.values(), ids=SECURITY.keys())
async def test_security_headers_replace_upstream_values(tmp_path, options, expected):
    """Each security option sets its header (once, replacing the upstream's) or leaves it out."""
    async with site(tmp_path, options) as s:
        reply = await s.send(request())
        assert reply.status == 200
        for name, value in expected.items():
            assert all_values(reply, name) == ([value] if value is not None else []), name


SSL = {
    "trusted-proxy-header": ("127.0.0.1", "X-Forwarded-Proto: https\r\n", True),
    "untrusted-proxy-header": (STRANGER, "X-Forwarded-Proto: https\r\n", False),
    "custom-proxy-header": (STRANGER, "X-Arr-Ssl: on\r\n", True),
    "no-proxy-header": ("127.0.0.1", "", False),
}


@pytest.mark.parametrize(("source", "extra", "is_ssl"), SSL.values(), ids=SSL.keys())
async def test_ssl_proxy_headers_mark_https_only_from_trusted_clients(
    tmp_path, source, extra, is_ssl
):
    """sslProxyHeaders enable STS and HPKP; X-Forwarded-Proto counts only from trusted clients."""
    options = (
        "{stsSeconds: 60, publicKey: 'pin-sha256=\"x\"', "
        'sslProxyHeaders: {X-Forwarded-Proto: https, X-Arr-Ssl: "on"}}'
    )
    async with site(tmp_path, options) as s:
        reply = await s.send(request(extra), source=source)
        assert reply.status == 200
        assert reply.header("strict-transport-security") == ("max-age=60" if is_ssl else None)
        assert reply.header("public-key-pins") == ('pin-sha256="x"' if is_ssl else None)


async def test_sts_is_sent_over_tls(tmp_path):
    """A request that arrived over TLS gets Strict-Transport-Security without forcing."""
    ca = make_ca(tmp_path)
    cert, key = ca.issue(tmp_path, ["app.test"])
    backend = await RecordingBackend().start()
    text = dynamic(backend.url, "{stsSeconds: 60}", tls="tls: {}") + (
        f'tls:\n  certificates:\n    - {{certFile: "{cert}", keyFile: "{key}"}}\n'
    )
    gw = await start_gateway(tmp_path, text)
    try:
        context = ssl.create_default_context(cafile=str(ca.cert_path))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", gw.port(), ssl=context, server_hostname="app.test"
        )
        try:
            writer.write(get("app.test"))
            reply = await read_reply(reader)
        finally:
            writer.close()
        assert reply.status == 200
        assert reply.header("strict-transport-security") == "max-age=60"
    finally:
        await gw.stop()
        await backend.close()


# -- allowedHosts ---------------------------------------------------------------------

HOSTS = {
    "listed": ("{allowedHosts: [app.test]}", "app.test", "", "127.0.0.1", 200),
    "listed-with-port": ("{allowedHosts: [app.test]}", "APP.test:8080", "", "127.0.0.1", 200),
    "other": ("{allowedHosts: [app.test]}", "evil.test", "", "127.0.0.1", 500),
    "development": (
        "{allowedHosts: [app.test], isDevelopment: true}",
        "evil.test",
        "",
        "127.0.0.1",
        200,
    ),
    "trusted-forwarded-host": (
        "{allowedHosts: [app.test], hostsProxyHeaders: [X-Forwarded-Host]}",
        "evil.test",
        "X-Forwarded-Host: app.test\r\n",
        "127.0.0.1",
        200,
    ),
    "untrusted-forwarded-host": (
        "{allowedHosts: [app.test], hostsProxyHeaders: [X-Forwarded-Host]}",
        "evil.test",
        "X-Forwarded-Host: app.test\r\n",
        STRANGER,
        500,
    ),
    "custom-proxy-header": (
        "{allowedHosts: [app.test], hostsProxyHeaders: [X-Original-Host]}",
        "app.test",
        "X-Original-Host: evil.test\r\n",
        STRANGER,
        500,
    ),
}


@pytest.mark.parametrize(
    ("options", "host", "extra", "source", "status"), HOSTS.values(), ids=HOSTS.keys()
)
async def test_allowed_hosts_reject_other_hosts(tmp_path, options, host, extra, source, status):
    """allowedHosts answers other hosts with Traefik's 500 "Bad Host", before the upstream."""
    async with site(tmp_path, options) as s:
        reply = await s.send(request(extra, host=host), source=source)
        assert reply.status == status
        if status == 500:
            assert reply.body == b"Bad Host\n"
            assert s.backend.requests == []
        else:
            assert len(s.backend.requests) == 1


async def test_bad_host_answer_gets_custom_but_not_security_headers(tmp_path):
    """The Bad Host answer carries customResponseHeaders but not the security headers."""
    options = "{allowedHosts: [app.test], frameDeny: true, customResponseHeaders: {X-Tag: t}}"
    async with site(tmp_path, options) as s:
        reply = await s.send(request(host="evil.test"))
        assert (reply.status, reply.header("x-tag"), reply.header("x-frame-options")) == (
            500,
            "t",
            None,
        )


# -- CORS ------------------------------------------------------------------------------

CORS = (
    "{accessControlAllowMethods: [GET, OPTIONS, PUT], accessControlAllowHeaders: [X-A, X-B], "
    "accessControlAllowOriginList: [https://a.example], "
    "accessControlAllowOriginListRegex: ['^https://([a-z]+\\.)?b\\.example$'], "
    "accessControlAllowCredentials: true, accessControlMaxAge: 100, "
    "accessControlExposeHeaders: [X-Total], addVaryHeader: true, frameDeny: true, "
    "customResponseHeaders: {X-Tag: t}}"
)
PREFLIGHT = {
    "listed": ("https://a.example", "https://a.example"),
    "regex": ("https://x.b.example", "https://x.b.example"),
    "regex-anchored": ("https://x.b.example.evil", None),
    "other": ("https://evil.example", None),
}


@pytest.mark.parametrize(("origin", "allowed"), PREFLIGHT.values(), ids=PREFLIGHT.keys())
async def test_preflight_is_answered_by_the_middleware(tmp_path, origin, allowed):
    """A CORS preflight gets 200 with the CORS headers from the gateway, never the upstream."""
    async with site(tmp_path, CORS) as s:
        extra = f"Origin: {origin}\r\nAccess-Control-Request-Method: PUT\r\n"
        reply = await s.send(request(extra, method="OPTIONS"))
        assert reply.status == 200
        assert reply.body == b""
        assert s.backend.requests == []
        assert reply.header("access-control-allow-origin") == allowed
        assert reply.header("access-control-allow-methods") == "GET,OPTIONS,PUT"
        assert reply.header("access-control-allow-headers") == "X-A,X-B"
        assert reply.header("access-control-allow-credentials") == "true"
        assert reply.header("access-control-max-age") == "100"
        # The preflight answer comes before the custom and security parts.
        assert (reply.header("x-tag"), reply.header("x-frame-options")) == (None, None)


async def test_options_without_request_method_is_forwarded(tmp_path):
    """An OPTIONS request lacking Access-Control-Request-Method is not a preflight."""
    async with site(tmp_path, CORS) as s:
        reply = await s.send(request("Origin: https://a.example\r\n", method="OPTIONS"))
        assert reply.status == 200
        assert s.backend.requests[-1].method == "OPTIONS"


SIMPLE = {
    "listed": ("https://a.example", "https://a.example"),
    "regex": ("https://b.example", "https://b.example"),
    "other": ("https://evil.example", None),
}


@pytest.mark.parametrize(("origin", "allowed"), SIMPLE.values(), ids=SIMPLE.keys())
async def test_simple_request_gets_cors_response_headers(tmp_path, origin, allowed):
    """A cross-origin request is forwarded; the answer gets the allowed origin and CORS headers."""
    async with site(tmp_path, CORS) as s:
        reply = await s.send(request(f"Origin: {origin}\r\n"))
        assert reply.status == 200
        assert s.backend.requests[-1].header("origin") == origin
        # An allowed origin replaces the upstream's; otherwise the upstream's stays.
        assert all_values(reply, "access-control-allow-origin") == [
            allowed or "https://upstream.example"
        ]
        assert reply.header("access-control-allow-credentials") == "true"
        assert reply.header("access-control-expose-headers") == "X-Total"
        assert all_values(reply, "vary") == ["Accept-Encoding,Origin"]
        assert (reply.header("x-tag"), reply.header("x-frame-options")) == ("t", "DENY")


WILDCARD = {
    "any-origin": ('["*"]', "https://x.example", "*"),
    "listed-before-star": ('[https://x.example, "*"]', "https://x.example", "https://x.example"),
    "no-origin-header": ('["*"]', None, "*"),
}


@pytest.mark.parametrize(("origins", "origin", "expected"), WILDCARD.values(), ids=WILDCARD.keys())
async def test_wildcard_origin_is_sent_as_star_even_with_credentials(
    tmp_path, origins, origin, expected
):
    """ "*" allows every origin and is sent as "*" (credentials too), as Traefik does."""
    options = f"{{accessControlAllowOriginList: {origins}, accessControlAllowCredentials: true}}"
    async with site(tmp_path, options) as s:
        reply = await s.send(request(f"Origin: {origin}\r\n" if origin else ""))
        assert all_values(reply, "access-control-allow-origin") == [expected]
        assert reply.header("access-control-allow-credentials") == "true"
        assert all_values(reply, "vary") == ["Accept-Encoding"]


# -- configuration errors ---------------------------------------------------------------

BAD = {
    "empty": ("{}", "no option set"),
    "bad-regex": (
        "{accessControlAllowOriginListRegex: ['(']}",
        "accessControlAllowOriginListRegex[0]",
    ),
    "bad-name": ("{customResponseHeaders: {'X Bad': v}}", "customResponseHeaders: 'X Bad'"),
    "line-break": ('{customRequestHeaders: {X-A: "a\\r\\nX-B: b"}}', "customRequestHeaders.X-A"),
    "negative-sts": ("{stsSeconds: -1}", "stsSeconds"),
    "removed-in-v3": ("{sslRedirect: true}", "sslRedirect"),
    "wrong-type": ("{frameDeny: [yes]}", "frameDeny"),
}


@pytest.mark.parametrize(("options", "message"), BAD.values(), ids=BAD.keys())
async def test_invalid_options_are_rejected_at_load(tmp_path, options, message):
    """Bad headers options are a load error naming the middleware and key; the old config serves."""
    async with site(tmp_path, "{customRequestHeaders: {X-Ok: '1'}}") as s:
        errors = await s.gw.reload(dynamic(s.backend.url, options), expect_ok=False)
        text = str(errors[0])  # type: ignore[index]
        assert message in text
        assert "dynamic.yml:" in text and "http.middlewares.h" in text
        assert (await s.send(request())).status == 200
        assert s.backend.requests[-1].header("x-ok") == "1"


async def test_catastrophic_origin_regex_answers_a_hostile_origin_at_once(tmp_path: Path) -> None:
    """A 16 KiB Origin against a backtracking-prone origin regex is refused at once."""
    options = "{accessControlAllowOriginListRegex: ['^https://(.*)\\.(.*)\\.(.*)x$']}"
    async with site(tmp_path, options) as s:
        async with asyncio.timeout(5):
            hostile = await s.send(request("Origin: https://" + "a." * 8192 + "\r\n"))
            normal = await s.send(request("Origin: https://a.b.cx\r\n"))
        assert all_values(hostile, "access-control-allow-origin") == ["https://upstream.example"]
        assert all_values(normal, "access-control-allow-origin") == ["https://a.b.cx"]
