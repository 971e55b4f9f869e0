"""``forwardAuth`` through a running gateway, with a real auth server started per test."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.access_log import AccessLog
from gateway.config.static import AccessLog as AccessLogConfig
from tests.backends import (
    RecordingBackend,
    Reply,
    Seen,
    _Conn,
    closed_port,
    get,
    http_request,
    read_reply,
)
from tests.certs import make_ca
from tests.harness import start_gateway
from tests.middleware.support import TRUSTING


def answer(
    status: int = 200, headers: tuple[tuple[str, str], ...] = (), body: bytes = b""
) -> bytes:
    """A raw HTTP/1.1 response with ``headers`` and ``body``."""
    head = f"HTTP/1.1 {status} Auth\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body


def answering(
    status: int = 200, *headers: tuple[str, str], body: bytes = b""
) -> Callable[[Seen], bytes]:
    """A responder always giving the same answer."""
    data = answer(status, headers, body)
    return lambda seen: data


def config(backend: str, options: str) -> str:
    """Router ``app`` behind middleware ``auth`` (``forwardAuth: {options}``)."""
    return f"""http:
  routers:
    app:
      rule: Host(`app.test`)
      service: app
      middlewares: [auth]
  services:
    app:
      loadBalancer:
        servers: [{{url: "{backend}"}}]
  middlewares:
    auth:
      forwardAuth: {options}
"""


@dataclass
class Servers:
    backend: RecordingBackend
    auth: RecordingBackend

    def address(self, path: str = "/verify") -> str:
        return f"{self.auth.url}{path}"


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    backend = await RecordingBackend().start()
    auth = await RecordingBackend(responder=answering(200)).start()
    yield Servers(backend, auth)
    await backend.close()
    await auth.close()


async def send(port: int, raw: bytes, *, source: str = "127.0.0.1") -> Reply:
    """``raw`` on a new connection from ``source``; the first reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(raw)
        return await read_reply(reader)
    finally:
        writer.close()


# -- allow and deny -------------------------------------------------------------------


async def test_allowed_request_reaches_backend(tmp_path: Path, servers: Servers) -> None:
    """A 2xx from the auth server lets the request through; the auth server saw a GET."""
    gw = await start_gateway(
        tmp_path, config(servers.backend.url, f"{{address: {servers.address('/verify?rd=x')}}}")
    )
    try:
        extra = "Authorization: Bearer t\r\nCookie: s=1\r\nContent-Length: 3\r\n"
        reply = await http_request(
            gw.port(), get("app.test", "/a?q=1", extra).replace(b"GET", b"PUT") + b"abc"
        )
        assert reply.status == 200
        assert reply.json()["target"] == "/a?q=1"
        assert servers.backend.requests[-1].body == b"abc"
        seen = servers.auth.requests[-1]
        assert (seen.method, seen.target, seen.body) == ("GET", "/verify?rd=x", b"")
        assert seen.header("authorization") == "Bearer t"
        assert seen.header("cookie") == "s=1"
        assert seen.header("host") == f"127.0.0.1:{servers.auth.port}"
    finally:
        await gw.stop()


async def test_denied_request_gets_auth_answer(tmp_path: Path, servers: Servers) -> None:
    """A non-2xx answer goes to the client (status, end-to-end fields, body); no backend call."""
    servers.auth.responder = answering(
        401,
        ("WWW-Authenticate", 'Basic realm="x"'),
        ("X-Reason", "nope"),
        ("Keep-Alive", "timeout=5"),
        body=b"go away",
    )
    gw = await start_gateway(
        tmp_path, config(servers.backend.url, f"{{address: {servers.address()}}}")
    )
    try:
        reply = await http_request(gw.port(), get("app.test"))
        assert reply.status == 401
        assert reply.body == b"go away"
        assert reply.header("www-authenticate") == 'Basic realm="x"'
        assert reply.header("x-reason") == "nope"
        assert reply.header("keep-alive") is None
        assert servers.backend.requests == []
    finally:
        await gw.stop()


@pytest.mark.parametrize(
    ("location", "preserve", "expected"),
    [
        ("/login?next=1", "false", "{auth}/login?next=1"),
        ("login", "false", "{auth}/api/login"),
        ("https://sso.test/x", "false", "https://sso.test/x"),
        ("/login?next=1", "true", "/login?next=1"),
    ],
    ids=["absolute-path-resolved", "relative-resolved", "absolute-kept", "preserved"],
)
async def test_redirect_location(
    tmp_path: Path, servers: Servers, location: str, preserve: str, expected: str
) -> None:
    """A redirect is passed on, not followed; Location is made absolute unless preserved."""
    servers.auth.responder = answering(302, ("Location", location))
    options = f"{{address: {servers.address('/api/verify')}, preserveLocationHeader: {preserve}}}"
    gw = await start_gateway(tmp_path, config(servers.backend.url, options))
    try:
        reply = await http_request(gw.port(), get("app.test"))
        assert reply.status == 302
        assert reply.header("location") == expected.format(auth=servers.auth.url)
        assert len(servers.auth.requests) == 1
    finally:
        await gw.stop()


@pytest.mark.parametrize(
    ("preserve", "method"), [("false", "GET"), ("true", "DELETE")], ids=["get", "preserved"]
)
async def test_request_method(tmp_path: Path, servers: Servers, preserve: str, method: str) -> None:
    """The auth request is a GET unless preserveRequestMethod; X-Forwarded-Method says which."""
    options = f"{{address: {servers.address()}, preserveRequestMethod: {preserve}}}"
    gw = await start_gateway(tmp_path, config(servers.backend.url, options))
    try:
        raw = b"DELETE /x HTTP/1.1\r\nHost: app.test\r\n\r\n"
        assert (await http_request(gw.port(), raw)).status == 200
        seen = servers.auth.requests[-1]
        assert seen.method == method
        assert seen.header("x-forwarded-method") == "DELETE"
    finally:
        await gw.stop()


async def test_auth_server_down_answers_500(tmp_path: Path, servers: Servers) -> None:
    """An auth server that refuses connections gives 500, and the backend is not called."""
    port = await closed_port()
    gw = await start_gateway(
        tmp_path, config(servers.backend.url, f"{{address: 'http://127.0.0.1:{port}/'}}")
    )
    try:
        reply = await http_request(gw.port(), get("app.test"))
        assert reply.status == 500
        assert servers.backend.requests == []
    finally:
        await gw.stop()


async def test_auth_server_closing_mid_answer_answers_500(tmp_path: Path, servers: Servers) -> None:
    """An auth answer cut short (fewer body bytes than announced) gives 500."""
    servers.auth.responder = lambda seen: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    servers.auth.close_after_response = True
    gw = await start_gateway(
        tmp_path, config(servers.backend.url, f"{{address: {servers.address()}}}")
    )
    try:
        assert (await http_request(gw.port(), get("app.test"))).status == 500
        assert servers.backend.requests == []
    finally:
        await gw.stop()


# -- fields both ways ----------------------------------------------------------------


async def test_auth_response_headers_replace_client_values(
    tmp_path: Path, servers: Servers
) -> None:
    """authResponseHeaders fields come from the auth server only, whatever the client sent."""
    servers.auth.responder = answering(
        200, ("X-Auth-User", "alice"), ("X-Auth-User", "alice2"), ("X-Other", "o")
    )
    options = f"{{address: {servers.address()}, authResponseHeaders: [X-Auth-User, X-Auth-Role]}}"
    gw = await start_gateway(tmp_path, config(servers.backend.url, options))
    try:
        spoof = "X-Auth-User: mallory\r\nX_Auth_User: mallory\r\nx.auth.role: admin\r\n"
        reply = await http_request(gw.port(), get("app.test", "/", spoof))
        assert reply.status == 200
        headers = reply.json()["headers"]
        users = [
            v for k, v in headers if k.lower().replace("_", "-").replace(".", "-") == "x-auth-user"
        ]
        assert users == ["alice", "alice2"]
        names = {k.lower() for k, _ in headers}
        assert "x.auth.role" not in names and "x-auth-role" not in names
        assert "x-other" not in names
    finally:
        await gw.stop()


async def test_header_field_names_the_user_in_the_access_log(
    tmp_path: Path, servers: Servers
) -> None:
    """headerField: the access log's ClientUsername is that field of the admitted request."""
    servers.auth.responder = answering(200, ("X-Auth-User", "alice"))
    path = tmp_path / "access.json"
    access = AccessLog(AccessLogConfig(file_path=str(path), format="json"))
    options = (
        f"{{address: {servers.address()}, authResponseHeaders: [X-Auth-User],"
        " headerField: X-Auth-User}"
    )
    gw = await start_gateway(tmp_path, config(servers.backend.url, options), access_log=access)
    try:
        assert (await http_request(gw.port(), get("app.test"))).status == 200
        access.flush()
        assert json.loads(path.read_text().splitlines()[-1])["ClientUsername"] == "alice"
    finally:
        await gw.stop()
        access.close()


async def test_auth_response_headers_regex(tmp_path: Path, servers: Servers) -> None:
    """authResponseHeadersRegex picks fields by canonical name; the client's matching ones go."""
    servers.auth.responder = answering(
        200, ("x-auth-user", "alice"), ("X-Auth-Groups", "dev"), ("X-Other", "o")
    )
    options = f"{{address: {servers.address()}, authResponseHeadersRegex: '^X-Auth-'}}"
    gw = await start_gateway(tmp_path, config(servers.backend.url, options))
    try:
        spoof = "x-auth-role: admin\r\nX_Auth_Level: 9\r\nX-Keep: k\r\n"
        reply = await http_request(gw.port(), get("app.test", "/", spoof))
        assert reply.status == 200
        got = {k.lower(): v for k, v in reply.json()["headers"]}
        assert got["x-auth-user"] == "alice"
        assert got["x-auth-groups"] == "dev"
        assert got["x-keep"] == "k"
        assert "x-auth-role" not in got and "x_auth_level" not in got and "x-other" not in got
    finally:
        await gw.stop()


async def test_auth_request_headers_filter(tmp_path: Path, servers: Servers) -> None:
    """With authRequestHeaders, the auth server sees only those plus X-Forwarded-*."""
    options = f"{{address: {servers.address()}, authRequestHeaders: [Authorization, X-Missing]}}"
    gw = await start_gateway(tmp_path, config(servers.backend.url, options))
    try:
        extra = (
            "Authorization: Bearer t\r\nCookie: s=1\r\nUser-Agent: ua\r\nConnection: keep-alive\r\n"
        )
        assert (await http_request(gw.port(), get("app.test", "/", extra))).status == 200
        seen = servers.auth.requests[-1]
        assert seen.header_names() == {
            "host",
            "authorization",
            "x-forwarded-for",
            "x-forwarded-method",
            "x-forwarded-proto",
            "x-forwarded-port",
            "x-forwarded-host",
            "x-forwarded-uri",
        }
        assert seen.header("authorization") == "Bearer t"
        # The backend still gets everything.
        assert servers.backend.requests[-1].header("cookie") == "s=1"
    finally:
        await gw.stop()


async def test_hop_by_hop_fields_not_sent_to_auth(tmp_path: Path, servers: Servers) -> None:
    """Connection, fields it names, TE and Upgrade stay away from the auth server."""
    gw = await start_gateway(
        tmp_path, config(servers.backend.url, f"{{address: {servers.address()}}}")
    )
    try:
        extra = "Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTE: trailers\r\n"
        extra += "Proxy-Authorization: p\r\n"
        assert (await http_request(gw.port(), get("app.test", "/", extra))).status == 200
        names = servers.auth.requests[-1].header_names()
        assert not names & {"x-hop", "te", "upgrade", "keep-alive"}
        assert "proxy-authorization" in names
        assert servers.auth.requests[-1].header("connection") in (None, "keep-alive")
    finally:
        await gw.stop()


CLIENT_FORWARDED = (
    "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Host: spoof.test\r\nX-Forwarded-Proto: https\r\n"
    "X-Forwarded-Uri: /spoof\r\nX-Forwarded-Method: PATCH\r\nX-Forwarded-Prefix: /p\r\n"
    "X_Forwarded_Port: 1\r\n"
)
OWN = {
    "x-forwarded-for": "{ip}",
    "x-forwarded-host": "app.test:8080",
    "x-forwarded-proto": "http",
    "x-forwarded-uri": "/path?q=1",
    "x-forwarded-method": "GET",
    "x-forwarded-port": "8080",
    "x-forwarded-prefix": None,
    "x_forwarded_port": None,
}
CLIENTS = {
    "x-forwarded-for": "203.0.113.7, {ip}",
    "x-forwarded-host": "spoof.test",
    "x-forwarded-proto": "https",
    "x-forwarded-uri": "/spoof",
    "x-forwarded-method": "PATCH",
    "x-forwarded-port": "8080",
    "x-forwarded-prefix": "/p",
    "x_forwarded_port": "1",
}


@pytest.mark.parametrize(
    ("trust", "source", "expected"),
    [
        ("false", "127.0.0.1", OWN),
        ("true", "127.0.0.1", CLIENTS),
        ("true", "127.0.0.5", OWN),
        ("false", "127.0.0.5", OWN),
    ],
    ids=["option-off", "option-on-trusted-ip", "option-on-untrusted-ip", "neither"],
)
async def test_forwarded_headers_seen_by_auth(
    tmp_path: Path, servers: Servers, trust: str, source: str, expected: dict[str, str | None]
) -> None:
    """Client X-Forwarded-* reach the auth server only with trustForwardHeader, from trustedIPs."""
    options = f"{{address: {servers.address()}, trustForwardHeader: {trust}}}"
    gw = await start_gateway(tmp_path, config(servers.backend.url, options), static=TRUSTING)
    try:
        raw = get("app.test:8080", "/path?q=1", CLIENT_FORWARDED)
        assert (await send(gw.port(), raw, source=source)).status == 200
        seen = servers.auth.requests[-1]
        got = {name: seen.header(name) for name in expected}
        want = {k: v.format(ip=source) if v else v for k, v in expected.items()}
        assert got == want
    finally:
        await gw.stop()


async def test_auth_cookies_added_to_response(tmp_path: Path, servers: Servers) -> None:
    """addAuthCookiesToResponse: listed auth cookies replace the backend's of the same name."""
    servers.auth.responder = answering(
        200, ("Set-Cookie", "session=new; Path=/"), ("Set-Cookie", "other=x")
    )
    servers.backend.responder = answering(
        200, ("Set-Cookie", "session=old"), ("Set-Cookie", "keep=1"), body=b"ok"
    )
    options = f"{{address: {servers.address()}, addAuthCookiesToResponse: [session]}}"
    gw = await start_gateway(tmp_path, config(servers.backend.url, options))
    try:
        reply = await http_request(gw.port(), get("app.test"))
        assert reply.status == 200 and reply.body == b"ok"
        cookies = [v for k, v in reply.headers if k.lower() == "set-cookie"]
        assert cookies == ["keep=1", "session=new; Path=/"]
    finally:
        await gw.stop()


async def test_auth_cookies_not_added_without_option(tmp_path: Path, servers: Servers) -> None:
    """Without addAuthCookiesToResponse the auth server's cookies never reach the client."""
    servers.auth.responder = answering(200, ("Set-Cookie", "session=new"))
    gw = await start_gateway(
        tmp_path, config(servers.backend.url, f"{{address: {servers.address()}}}")
    )
    try:
        reply = await http_request(gw.port(), get("app.test"))
        assert reply.status == 200
        assert reply.header("set-cookie") is None
    finally:
        await gw.stop()


async def test_auth_cookies_never_replayed_to_other_requests(
    tmp_path: Path, servers: Servers
) -> None:
    """Cookies the auth server set for one client are not sent back with the next request."""
    servers.auth.responder = answering(200, ("Set-Cookie", "session=alice"))
    # A name, not 127.0.0.1: aiohttp's cookie jar ignores cookies from IP hosts,
    # so an IP address would hide a jar that keeps them.
    address = f"http://localhost:{servers.auth.port}/verify"
    gw = await start_gateway(tmp_path, config(servers.backend.url, f"{{address: '{address}'}}"))
    try:
        assert (await http_request(gw.port(), get("app.test"))).status == 200
        assert (await http_request(gw.port(), get("app.test"))).status == 200
        assert servers.auth.requests[-1].header("cookie") is None
    finally:
        await gw.stop()


# -- bodies --------------------------------------------------------------------------


async def test_forward_body(tmp_path: Path, servers: Servers) -> None:
    """forwardBody sends the body to the auth server, and the backend still receives it."""
    options = f"{{address: {servers.address()}, forwardBody: true, maxBodySize: 100}}"
    gw = await start_gateway(tmp_path, config(servers.backend.url, options))
    try:
        raw = b"POST /f HTTP/1.1\r\nHost: app.test\r\nContent-Type: text/plain\r\n"
        raw += b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        reply = await http_request(gw.port(), raw)
        assert reply.status == 200
        seen = servers.auth.requests[-1]
        assert (seen.method, seen.body) == ("GET", b"hello world")
        assert seen.header("content-type") == "text/plain"
        assert seen.header("content-length") == "11"
        assert servers.backend.requests[-1].body == b"hello world"
    finally:
        await gw.stop()


async def test_forward_body_over_limit_is_401(tmp_path: Path, servers: Servers) -> None:
    """A body past maxBodySize gets 401 without calling the auth server or the backend."""
    options = f"{{address: {servers.address()}, forwardBody: true, maxBodySize: 4}}"
    gw = await start_gateway(tmp_path, config(servers.backend.url, options))
    try:
        raw = b"POST /f HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello"
        reply = await http_request(gw.port(), raw)
        assert reply.status == 401
        assert servers.auth.requests == [] and servers.backend.requests == []
    finally:
        await gw.stop()


async def test_body_not_forwarded_by_default(tmp_path: Path, servers: Servers) -> None:
    """Without forwardBody the auth server gets no body and no body framing."""
    gw = await start_gateway(
        tmp_path, config(servers.backend.url, f"{{address: {servers.address()}}}")
    )
    try:
        raw = b"POST /f HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello"
        assert (await http_request(gw.port(), raw)).status == 200
        seen = servers.auth.requests[-1]
        assert seen.body == b"" and seen.header("content-length") is None
        assert servers.backend.requests[-1].body == b"hello"
    finally:
        await gw.stop()


async def test_auth_answer_over_max_response_body_size_is_401(
    tmp_path: Path, servers: Servers
) -> None:
    """An auth answer whose body passes maxResponseBodySize gives 401."""
    servers.auth.responder = answering(403, body=b"x" * 64)
    options = f"{{address: {servers.address()}, maxResponseBodySize: 10}}"
    gw = await start_gateway(tmp_path, config(servers.backend.url, options))
    try:
        reply = await http_request(gw.port(), get("app.test"))
        assert reply.status == 401 and reply.body == b""
    finally:
        await gw.stop()


# -- TLS -----------------------------------------------------------------------------


@dataclass
class TLSBackend(RecordingBackend):
    """A RecordingBackend speaking TLS with ``context``."""

    context: ssl.SSLContext | None = None

    async def start(self, port: int = 0) -> TLSBackend:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _Conn(self), "127.0.0.1", port, ssl=self.context
        )
        return self


@pytest.mark.parametrize(
    ("tls", "client_cert_required", "status"),
    [
        ("{{ca: '{ca}', cert: '{cert}', key: '{key}'}}", True, 200),
        ("{{ca: '{ca}'}}", False, 200),
        ("{{}}", False, 500),
        ("{{insecureSkipVerify: true}}", False, 200),
        ("{{ca: '{ca}'}}", True, 500),
    ],
    ids=["mutual", "ca", "system-bundle-rejects", "insecure-skip-verify", "missing-client-cert"],
)
async def test_tls_to_auth_server(
    tmp_path: Path, servers: Servers, tls: str, client_cert_required: bool, status: int
) -> None:
    """tls.ca verifies the auth server, tls.cert/key authenticate the gateway to it."""
    ca = make_ca(tmp_path)
    server_cert, server_key = ca.issue(tmp_path, ["127.0.0.1"])
    client_cert, client_key = ca.issue(tmp_path, ["gateway.test"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_cert, server_key)
    if client_cert_required:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(ca.cert_path)
    auth = await TLSBackend(responder=answering(200), context=context).start()
    try:
        tls_yaml = tls.format(ca=ca.cert_path, cert=client_cert, key=client_key)
        options = f"{{address: 'https://127.0.0.1:{auth.port}/verify', tls: {tls_yaml}}}"
        gw = await start_gateway(tmp_path, config(servers.backend.url, options))
        try:
            reply = await http_request(gw.port(), get("app.test"))
            assert reply.status == status
            assert len(servers.backend.requests) == (1 if status == 200 else 0)
        finally:
            await gw.stop()
    finally:
        await auth.close()


async def test_tls_from_pem_text(tmp_path: Path, servers: Servers) -> None:
    """tls.ca, tls.cert and tls.key may hold PEM text instead of paths."""
    ca = make_ca(tmp_path)
    server_cert, server_key = ca.issue(tmp_path, ["127.0.0.1"])
    client_cert, client_key = ca.issue(tmp_path, ["gateway.test"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_cert, server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(ca.cert_path)
    auth = await TLSBackend(responder=answering(200), context=context).start()

    def block(path: Path) -> str:
        return "|\n" + "".join(f"            {line}\n" for line in path.read_text().splitlines())

    options = (
        f"\n        address: 'https://127.0.0.1:{auth.port}/verify'\n        tls:\n"
        f"          ca: {block(ca.cert_path)}          cert: {block(client_cert)}"
        f"          key: {block(client_key)}"
    )
    try:
        gw = await start_gateway(tmp_path, config(servers.backend.url, options))
        try:
            assert (await http_request(gw.port(), get("app.test"))).status == 200
        finally:
            await gw.stop()
    finally:
        await auth.close()


# -- configuration errors ------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ("{trustForwardHeader: true}", 'missing required key "address"'),
        ("{address: ''}", "address: expected an http:// or https:// URL"),
        ("{address: 'ftp://auth.test/'}", "address: expected an http:// or https:// URL"),
        (
            "{address: 'http://a.test/', authResponseHeadersRegex: '(?<=x)y'}",
            "authResponseHeadersRegex",
        ),
        ("{address: 'http://a.test/', tls: {cert: /c.pem}}", "tls: both cert and key must be set"),
        (
            "{address: 'http://a.test/', tls: {ca: /nonexistent/ca.pem}}",
            "tls.ca: cannot load '/nonexistent/ca.pem'",
        ),
        ("{address: 'http://a.test/', maxBodySize: lots}", "maxBodySize: expected an integer"),
        (
            "{address: 'http://a.test/', authResponseHeader: [X]}",
            'unknown key "authResponseHeader"',
        ),
    ],
    ids=[
        "missing-address",
        "empty-address",
        "bad-scheme",
        "bad-regex",
        "cert-without-key",
        "missing-ca-file",
        "bad-max-body-size",
        "misspelled-key",
    ],
)
async def test_invalid_options_rejected_at_load(
    tmp_path: Path, servers: Servers, options: str, fragment: str
) -> None:
    """A bad option is a ConfigError naming file, line and key; the old config serves on."""
    good = config(servers.backend.url, f"{{address: {servers.address()}}}")
    gw = await start_gateway(tmp_path, good)
    try:
        bad = config(servers.backend.url, options)
        errors = await gw.reload(bad, expect_ok=False)
        assert isinstance(errors, list)
        text = str(errors[0])
        line = bad.splitlines().index("    auth:") + 1
        assert f"dynamic.yml:{line}: http.middlewares.auth" in text, text
        assert fragment in text, text
        assert (await http_request(gw.port(), get("app.test"))).status == 200
    finally:
        await gw.stop()
