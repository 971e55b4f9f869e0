"""gatewayRequestRedirect and gatewayURLRewrite through a running gateway.

Spec rules checked (apis/v1/httproute_types.go ``HTTPRequestRedirectFilter``,
``HTTPURLRewriteFilter``, ``HTTPPathModifier``; notes section 2.7): the
redirect port/scheme matrix of conformance httproute-redirect-port-and-scheme,
the paths of httproute-redirect-path, the status codes of
httproute-30x-redirect, the ReplacePrefixMatch table of the type doc and the
cases of httproute-rewrite-path and httproute-rewrite-host.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from middleware.registry import load_registry
from tests.backends import RecordingBackend, http_request, read_reply
from tests.certs import make_ca
from tests.harness import RunningGateway, start_gateway

REGISTRY = load_registry(plugins=False).with_factories(
    {
        "gatewayRequestHeaderModifier": (
            "middleware.http.gateway_filters:GatewayRequestHeaderModifier"
        ),
        "gatewayRequestRedirect": "middleware.http.gateway_redirects:GatewayRequestRedirect",
        "gatewayURLRewrite": "middleware.http.gateway_redirects:GatewayURLRewrite",
    }
)


def config(url: str, middleware: str, *, extra: str = "", names: str = "[mw]") -> str:
    """Router ``app`` on Host example.org through ``names``; ``mw`` is ``middleware``."""
    return f"""http:
  routers:
    app:
      rule: Host(`example.org`)
      service: app
      middlewares: {names}
  services:
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
  middlewares:
    mw:
      {middleware}
{extra}"""


# The line of "mw:" in ``config``'s text, which load errors name.
MW_LINE = 12


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, middleware: str, **kwargs: str
) -> AsyncIterator[tuple[RunningGateway, RecordingBackend]]:
    backend = await RecordingBackend().start()
    gw = await start_gateway(tmp_path, config(backend.url, middleware, **kwargs), registry=REGISTRY)
    try:
        yield gw, backend
    finally:
        await gw.stop()
        await backend.close()


def request(target: str, method: str = "GET", host: str = "example.org") -> bytes:
    return f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def redirect(options: str) -> str:
    return f"gatewayRequestRedirect: {{{options}}}"


# -- RequestRedirect: port and scheme -------------------------------------------------------

# httproute-redirect-port-and-scheme: (listener, filter options, Location prefix).
# The client's Host carries the gateway's real port, which must never leak through.
PORT_AND_SCHEME = [
    pytest.param("listenerPort: 80", "", "http://example.org/p", id="80-nil-nil"),
    pytest.param("listenerPort: 80", "port: 80", "http://example.org/p", id="80-nil-80"),
    pytest.param("listenerPort: 80", "port: 8080", "http://example.org:8080/p", id="80-nil-8080"),
    pytest.param("listenerPort: 80", "scheme: https", "https://example.org/p", id="80-https-nil"),
    pytest.param(
        "listenerPort: 80", "scheme: https, port: 443", "https://example.org/p", id="80-https-443"
    ),
    pytest.param(
        "listenerPort: 80",
        "scheme: https, port: 8443",
        "https://example.org:8443/p",
        id="80-https-8443",
    ),
    pytest.param("listenerPort: 8080", "", "http://example.org:8080/p", id="8080-nil-nil"),
    pytest.param("listenerPort: 8080", "port: 80", "http://example.org/p", id="8080-nil-80"),
    pytest.param(
        "listenerPort: 8080", "scheme: https", "https://example.org/p", id="8080-https-nil"
    ),
    pytest.param(
        "listenerPort: 443, listenerScheme: https", "", "https://example.org/p", id="443-nil-nil"
    ),
    pytest.param(
        "listenerPort: 443, listenerScheme: https",
        "port: 443",
        "https://example.org/p",
        id="443-nil-443",
    ),
    pytest.param(
        "listenerPort: 443, listenerScheme: https",
        "port: 8443",
        "https://example.org:8443/p",
        id="443-nil-8443",
    ),
    pytest.param(
        "listenerPort: 443, listenerScheme: https",
        "scheme: http",
        "http://example.org/p",
        id="443-http-nil",
    ),
    pytest.param(
        "listenerPort: 443, listenerScheme: https",
        "scheme: http, port: 80",
        "http://example.org/p",
        id="443-http-80",
    ),
    pytest.param(
        "listenerPort: 443, listenerScheme: https",
        "scheme: http, port: 8080",
        "http://example.org:8080/p",
        id="443-http-8080",
    ),
]


@pytest.mark.parametrize(("listener", "options", "location"), PORT_AND_SCHEME)
async def test_redirect_port_and_scheme_matrix(
    tmp_path: Path, listener: str, options: str, location: str
) -> None:
    """The Location's scheme and port follow the spec's port rules; default ports are left out."""
    joined = ", ".join(part for part in (listener, options) if part)
    async with serving(tmp_path, redirect(joined)) as (gw, backend):
        reply = await http_request(gw.port(), request("/p", host=f"example.org:{gw.port()}"))
        assert (reply.status, reply.header("location")) == (302, location)
        assert backend.requests == []


async def test_redirect_without_listener_port_keeps_the_host_port(tmp_path: Path) -> None:
    """With no listenerPort configured, the port the client used (its Host) is kept."""
    async with serving(tmp_path, redirect("hostname: other.test")) as (gw, _):
        reply = await http_request(gw.port(), request("/p", host=f"example.org:{gw.port()}"))
        assert reply.header("location") == f"http://other.test:{gw.port()}/p"
        reply = await http_request(gw.port(), request("/p"))
        assert reply.header("location") == "http://other.test/p"


async def test_redirect_scheme_comes_from_the_request_without_listener_scheme(
    tmp_path: Path,
) -> None:
    """Over TLS, with no listenerScheme, the redirect keeps https and drops port 443."""
    ca = make_ca(tmp_path)
    cert, key = ca.issue(tmp_path, ["example.org"])
    backend = await RecordingBackend().start()
    certs = f'tls:\n  certificates:\n    - {{certFile: "{cert}", keyFile: "{key}"}}\n'
    dynamic = config(backend.url, redirect("listenerPort: 443")).replace(
        "service: app\n", "service: app\n      tls: {}\n", 1
    )
    gw = await start_gateway(tmp_path, dynamic + certs, registry=REGISTRY)
    context = ssl.create_default_context(cafile=str(ca.cert_path))
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", gw.port(), ssl=context, server_hostname="example.org"
        )
        try:
            writer.write(request("/secure?a=1"))
            reply = await read_reply(reader)
        finally:
            writer.close()
        assert (reply.status, reply.header("location")) == (302, "https://example.org/secure?a=1")
    finally:
        await gw.stop()
        await backend.close()


# -- RequestRedirect: path, host, status ------------------------------------------------------

PREFIX = (
    "path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}, "
    "matchedPrefix: /original-prefix, listenerPort: 80"
)
FULL = "path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}, listenerPort: 80"

# httproute-redirect-path and -host-and-status: (options, target, status, Location)
REDIRECTS = [
    pytest.param(
        PREFIX, "/original-prefix/lemon", 302, "http://example.org/replacement-prefix/lemon",
        id="prefix",
    ),
    pytest.param(
        PREFIX, "/original-prefix", 302, "http://example.org/replacement-prefix", id="prefix-whole"
    ),
    pytest.param(
        PREFIX, "/original-prefixed", 302, "http://example.org/original-prefixed",
        id="prefix-not-an-element",
    ),
    pytest.param(FULL, "/full/path/original", 302, "http://example.org/full-path-replacement",
                 id="full"),
    pytest.param(
        FULL + ", hostname: example.net", "/full", 302, "http://example.net/full-path-replacement",
        id="full-and-host",
    ),
    pytest.param(
        "hostname: example.net, listenerPort: 80", "/a/b?c=d&e", 302,
        "http://example.net/a/b?c=d&e", id="host-keeps-path-and-query",
    ),
    pytest.param(
        "statusCode: 301, listenerPort: 80", "/s", 301, "http://example.org/s", id="status-301"
    ),
    pytest.param(
        "statusCode: 303, listenerPort: 80", "/s", 303, "http://example.org/s", id="status-303"
    ),
    pytest.param(
        "statusCode: 307, listenerPort: 80", "/s", 307, "http://example.org/s", id="status-307"
    ),
    pytest.param(
        "statusCode: 308, listenerPort: 80", "/s", 308, "http://example.org/s", id="status-308"
    ),
    pytest.param(
        "path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, matchedPrefix: /, "
        "listenerPort: 80", "/a%2Fb/c", 302, "http://example.org/new/a%2Fb/c",
        id="root-prefix-keeps-escapes",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("options", "target", "status", "location"), REDIRECTS)
async def test_redirect_location(
    tmp_path: Path, options: str, target: str, status: int, location: str
) -> None:
    """Path modifiers, hostname and statusCode shape the redirect as the conformance tests say."""
    async with serving(tmp_path, redirect(options)) as (gw, backend):
        reply = await http_request(gw.port(), request(target, method="POST"))
        assert (reply.status, reply.header("location")) == (status, location)
        assert reply.body == b""
        assert backend.requests == []


# -- URLRewrite -----------------------------------------------------------------------------

# The ReplacePrefixMatch table of HTTPPathModifier: (request, prefix, replacement, result).
PREFIX_TABLE = [
    ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
    ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
    ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
    ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
    ("/foo", "/foo", "/xyz", "/xyz"),
    ("/foo/", "/foo", "/xyz", "/xyz/"),
    ("/foo/bar", "/foo", "", "/bar"),
    ("/foo/", "/foo", "", "/"),
    ("/foo", "/foo", "", "/"),
    ("/foo/", "/foo", "/", "/"),
    ("/foo", "/foo", "/", "/"),
    # httproute-rewrite-path
    ("/prefix/one/two", "/prefix/one", "/one", "/one/two"),
    ("/strip-prefix/three", "/strip-prefix", "/", "/three"),
    ("/strip-prefix", "/strip-prefix", "/", "/"),
    # Beyond the table: query kept, whole elements only, escapes kept.
    ("/foo/bar?q=1&r", "/foo", "/xyz", "/xyz/bar?q=1&r"),
    ("/foobar", "/foo", "/xyz", "/foobar"),
    ("/a%20b/c%2Fd", "/a b", "/x", "/x/c%2Fd"),
]


@pytest.mark.parametrize(
    ("target", "prefix", "replacement", "result"),
    [pytest.param(*row, id=f"{row[0]}|{row[1]}|{row[2] or 'empty'}") for row in PREFIX_TABLE],
)
async def test_rewrite_replace_prefix_match_table(
    tmp_path: Path, target: str, prefix: str, replacement: str, result: str
) -> None:
    """ReplacePrefixMatch rewrites the forwarded path exactly as the spec's table says."""
    mw = (
        f"gatewayURLRewrite: {{path: {{type: ReplacePrefixMatch, "
        f"replacePrefixMatch: '{replacement}'}}, matchedPrefix: '{prefix}'}}"
    )
    async with serving(tmp_path, mw) as (gw, backend):
        reply = await http_request(gw.port(), request(target))
        assert reply.status == 200
        assert backend.requests[-1].target == result


async def test_rewrite_full_path_keeps_the_query(tmp_path: Path) -> None:
    """ReplaceFullPath replaces the whole path (/full/one/two -> /one) and keeps the query."""
    mw = "gatewayURLRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /one}}"
    async with serving(tmp_path, mw) as (gw, backend):
        await http_request(gw.port(), request("/full/one/two?x=1"))
        assert backend.requests[-1].target == "/one?x=1"


async def test_rewrite_hostname_replaces_the_host_sent_upstream(tmp_path: Path) -> None:
    """hostname replaces the Host header the backend sees (httproute-rewrite-host)."""
    mw = "gatewayURLRewrite: {hostname: one.example.org}"
    async with serving(tmp_path, mw) as (gw, backend):
        await http_request(gw.port(), request("/rewrite-host", host=f"example.org:{gw.port()}"))
        seen = backend.requests[-1]
        assert (seen.header("host"), seen.target) == ("one.example.org", "/rewrite-host")


async def test_rewrite_and_header_modifier_both_apply(tmp_path: Path) -> None:
    """A rule with URLRewrite and RequestHeaderModifier gets both (httproute-rewrite-path)."""
    mw = (
        "gatewayURLRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /prefix}, "
        "matchedPrefix: /prefix/rewrite-path-and-modify-headers}"
    )
    extra = (
        "    headers:\n"
        "      gatewayRequestHeaderModifier: {set: [{name: X-Header-Set, "
        "value: set-overwrites-values}]}\n"
    )
    async with serving(tmp_path, mw, extra=extra, names="[headers, mw]") as (gw, backend):
        raw = (
            b"GET /prefix/rewrite-path-and-modify-headers/one HTTP/1.1\r\nHost: example.org\r\n"
            b"X-Header-Set: set-val\r\n\r\n"
        )
        await http_request(gw.port(), raw)
        seen = backend.requests[-1]
        assert seen.target == "/prefix/one"
        assert seen.header("x-header-set") == "set-overwrites-values"


# -- validation ----------------------------------------------------------------------------

INVALID = [
    pytest.param(redirect("statusCode: 304"), "statusCode: 304 is not one of", id="status"),
    pytest.param(redirect("scheme: ftp"), "scheme: 'ftp' is not http or https", id="scheme"),
    pytest.param(redirect("port: 0"), "port: 0 is not a port number", id="port"),
    pytest.param(
        redirect("hostname: '*.example.org'"), "hostname: '*.example.org' is not a precise",
        id="wildcard-hostname",
    ),
    pytest.param(
        redirect("path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}"),
        "matchedPrefix: ReplacePrefixMatch needs the rule's PathPrefix value", id="no-prefix",
    ),
    pytest.param(
        redirect("path: {type: ReplaceFullPath, replacePrefixMatch: /x}"),
        "path.replaceFullPath: required when type is ReplaceFullPath", id="type-mismatch",
    ),
    pytest.param(
        "gatewayURLRewrite: {path: {type: ReplaceRegex, replaceFullPath: /x}}",
        "path.type: 'ReplaceRegex' is not ReplaceFullPath or ReplacePrefixMatch",
        id="unknown-type",
    ),
    pytest.param(
        "gatewayURLRewrite: {path: {type: ReplaceFullPath, replaceFullPath: '/a%zz'}}",
        'path.replaceFullPath: invalid URL escape "%zz"', id="bad-escape",
    ),
    pytest.param(
        "gatewayURLRewrite: {path: {replaceFullPath: /x}}", 'missing required key "type"',
        id="missing-type",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("middleware", "message"), INVALID)
async def test_invalid_options_are_rejected_at_load(
    tmp_path: Path, middleware: str, message: str
) -> None:
    """A bad redirect or rewrite is a load error naming middleware, key, line; old config serves."""
    async with serving(tmp_path, redirect("listenerPort: 80")) as (gw, backend):
        errors = await gw.reload(config(backend.url, middleware), expect_ok=False)
        text = str(errors[0])  # type: ignore[index]
        assert message in text
        assert f"dynamic.yml:{MW_LINE}: http.middlewares.mw" in text
        reply = await http_request(gw.port(), request("/still"))
        assert (reply.status, reply.header("location")) == (302, "http://example.org/still")
