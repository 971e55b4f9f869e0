"""Gateway API HTTPRoute path filters: RequestRedirect and URLRewrite.

The Gateway API translator (``providers/gatewayapi``) turns each such filter
into one of these middlewares; the option keys are the filter's own fields in
camelCase, plus what it needs from its rule and listener: ``matchedPrefix``
(the rule's PathPrefix value, for ReplacePrefixMatch), ``listenerPort`` and
``listenerScheme``. Semantics follow ``apis/v1/httproute_types.go`` (notes
/work/notes/gatewayapi-spec.md section 2.7), not Traefik's look-alikes:

* ``gatewayRequestRedirect`` answers with ``statusCode`` (302 by default)
  and ``Location: scheme://host[:port]path[?query]``: the filter's scheme,
  else the listener's, else the request's; the filter's hostname, else the
  request's Host without its port; the filter's port, else 80/443 when the
  filter names a scheme, else the listener port (the Host header's port, or
  the scheme's default, when no listener port is configured); the port is
  left out when it is the scheme's default. The query string is kept (the
  spec is silent; Envoy keeps it).
* ``gatewayURLRewrite`` replaces the Host sent upstream and the path.

Path modifiers work on the escaped path the client sent. ``ReplaceFullPath``
replaces it whole. ``ReplacePrefixMatch`` matches whole path elements
against the decoded path, as the PathPrefix match that chose the rule did,
and reproduces the spec's table (``replace_prefix``); a request whose path is
not under ``matchedPrefix`` keeps its path. Options are checked against the
spec's CEL rules and encoded in ``build``; the filters only splice strings.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from gateway.config.model import model
from middleware.contract import BuildContext, Filter, Handler, Headers, Request, Response
from middleware.http.paths import bad_escape, wire_text

_HOSTNAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEX2 = re.compile(r"[0-9A-Fa-f]{2}")
# What a path may hold unescaped (RFC 3986 pchar and "/"); "%" stays for escapes.
_PATH_SAFE = "/-._~!$&'()*+,;=:@%"
DEFAULT_PORTS = {"http": 80, "https": 443}
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


# -- options ---------------------------------------------------------------------------


@model
class PathModifier:
    REQUIRED = ("type",)

    type: str = ""
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None


@model
class RequestRedirectOptions:
    scheme: str = ""
    hostname: str = ""
    path: PathModifier | None = None
    port: int | None = None
    status_code: int = 302
    # The rule's PathPrefix value, for ReplacePrefixMatch.
    matched_prefix: str = ""
    # The listener the route is attached through, for the default port and scheme.
    listener_port: int = 0
    listener_scheme: str = ""


@model
class URLRewriteOptions:
    hostname: str = ""
    path: PathModifier | None = None
    matched_prefix: str = ""


# -- paths ------------------------------------------------------------------------------


def _decoded(raw: str) -> str:
    """``raw`` with each valid ``%XX`` decoded to one character (latin-1 wire text)."""
    return unquote(raw, encoding="latin-1") if "%" in raw else raw


def _raw_offset(raw: str, count: int) -> int:
    """The index in ``raw`` just after its first ``count`` decoded characters."""
    if "%" not in raw:
        return count
    i = 0
    for _ in range(count):
        i += 3 if raw[i] == "%" and _HEX2.match(raw, i + 1) else 1
    return i


def replace_prefix(raw: str, prefix: str, replacement: str) -> str | None:
    """The spec's ReplacePrefixMatch, or None when ``raw`` is not under ``prefix``.

    ``prefix`` is decoded text and ``replacement`` escaped text, both without
    their trailing ``/`` (so ``/`` is ``""``): the spec ignores a trailing
    ``/`` on either, which is what makes its table come out (``/foo/`` with
    prefix ``/foo`` and replacement ``/`` gives ``/``).
    """
    decoded = _decoded(raw)
    if prefix and not (
        decoded == prefix or (decoded.startswith(prefix) and decoded[len(prefix)] == "/")
    ):
        return None
    rest = raw[_raw_offset(raw, len(prefix)) :]
    out = replacement + rest
    return out if out.startswith("/") else "/" + out


def _path_text(option: str, value: str) -> str:
    """A configured path as escaped wire text; malformed escapes are refused."""
    if _CONTROL.search(value):
        raise ValueError(f"{option}: {value!r} holds a control character")
    text = wire_text(value)
    bad = bad_escape(text)
    if bad is not None:
        raise ValueError(f'{option}: invalid URL escape "{bad}"')
    return quote(text, safe=_PATH_SAFE, encoding="latin-1")


class PathEdit:
    """A compiled HTTPPathModifier: ``apply(raw_path)`` is the new path or None."""

    __slots__ = ("full", "prefix", "replacement")

    def __init__(self, full: str | None, prefix: str = "", replacement: str = "") -> None:
        self.full = full
        self.prefix = prefix
        self.replacement = replacement

    def apply(self, raw: str) -> str | None:
        if self.full is not None:
            return self.full
        return replace_prefix(raw, self.prefix, self.replacement)


def path_edit(path: PathModifier | None, matched_prefix: str) -> PathEdit | None:
    """Check an HTTPPathModifier against the spec's CEL rules and compile it."""
    if path is None:
        return None
    if path.type == "ReplaceFullPath":
        if path.replace_full_path is None:
            raise ValueError("path.replaceFullPath: required when type is ReplaceFullPath")
        if path.replace_prefix_match is not None:
            raise ValueError("path.replacePrefixMatch: only allowed with type ReplacePrefixMatch")
        full = _path_text("path.replaceFullPath", path.replace_full_path)
        return PathEdit(full if full.startswith("/") else "/" + full)
    if path.type == "ReplacePrefixMatch":
        if path.replace_prefix_match is None:
            raise ValueError("path.replacePrefixMatch: required when type is ReplacePrefixMatch")
        if path.replace_full_path is not None:
            raise ValueError("path.replaceFullPath: only allowed with type ReplaceFullPath")
        if not matched_prefix.startswith("/"):
            raise ValueError(
                "matchedPrefix: ReplacePrefixMatch needs the rule's PathPrefix value "
                f"(starting with /), got {matched_prefix!r}"
            )
        prefix = _decoded(_path_text("matchedPrefix", matched_prefix)).rstrip("/")
        replacement = _path_text("path.replacePrefixMatch", path.replace_prefix_match)
        return PathEdit(None, prefix, replacement.rstrip("/"))
    raise ValueError(f"path.type: {path.type!r} is not ReplaceFullPath or ReplacePrefixMatch")


def _hostname(option: str, value: str) -> str:
    """A PreciseHostname: lower-case DNS labels, no wildcard, no port."""
    if not _HOSTNAME.fullmatch(value) or len(value) > 253:
        raise ValueError(f"{option}: {value!r} is not a precise host name (like app.example.com)")
    return value


# -- RequestRedirect ----------------------------------------------------------------------


def _scheme(option: str, value: str) -> str:
    if value and value not in DEFAULT_PORTS:
        raise ValueError(f"{option}: {value!r} is not http or https")
    return value


def _port(option: str, value: int | None) -> int | None:
    if value is not None and not 0 < value < 65536:
        raise ValueError(f"{option}: {value} is not a port number (1-65535)")
    return value


class _Redirect(Filter):
    __slots__ = ("scheme", "listener_scheme", "hostname", "port", "listener_port", "path", "status")

    def __init__(self, o: RequestRedirectOptions) -> None:
        self.scheme = _scheme("scheme", o.scheme)
        self.listener_scheme = _scheme("listenerScheme", o.listener_scheme)
        self.hostname = _hostname("hostname", o.hostname) if o.hostname else ""
        port = _port("port", o.port)
        if port is None and self.scheme:
            # The spec: a redirect naming a scheme goes to that scheme's well-known port.
            port = DEFAULT_PORTS[self.scheme]
        self.port = port
        self.listener_port = _port("listenerPort", o.listener_port or None)
        self.path = path_edit(o.path, o.matched_prefix)
        if o.status_code not in REDIRECT_CODES:
            raise ValueError(f"statusCode: {o.status_code} is not one of 301, 302, 303, 307, 308")
        self.status = o.status_code

    def request(self, request: Request) -> Response:
        scheme = self.scheme or self.listener_scheme or request.scheme
        default = DEFAULT_PORTS.get(scheme, 0)
        port = self.port or self.listener_port or _host_port(request) or default
        host = self.hostname or request.host
        path = request.raw_path
        if self.path is not None:
            path = self.path.apply(path) or path
        query = f"?{request.query}" if request.query else ""
        location = path + query
        if host:
            # Without a Host (HTTP/1.0) only a relative reference can be right.
            location = f"{scheme}://{host}{'' if port == default else f':{port}'}{location}"
        if _CONTROL.search(location):
            # Only a Host header can bring one in; never echo it into a header.
            return Response(400, body=b"Bad Request\n")
        return Response(self.status, headers=Headers([(b"Location", location.encode("latin-1"))]))


def _host_port(request: Request) -> int:
    """The port the client named in Host, when no listener port is configured."""
    host = request.headers.get(b"host") or ""
    _, colon, port = host.rpartition(":")
    if colon and port.isascii() and port.isdigit() and not host.endswith("]"):
        return int(port)
    return 0


class GatewayRequestRedirect:
    key = "gatewayRequestRedirect"
    options = RequestRedirectOptions

    def build(
        self, options: RequestRedirectOptions, next: Handler, context: BuildContext
    ) -> Filter:
        return _Redirect(options)


# -- URLRewrite ---------------------------------------------------------------------------


class _Rewrite(Filter):
    __slots__ = ("host", "hostname", "path")

    def __init__(self, o: URLRewriteOptions) -> None:
        self.hostname = _hostname("hostname", o.hostname) if o.hostname else ""
        self.host = self.hostname.encode("ascii")
        self.path = path_edit(o.path, o.matched_prefix)

    def request(self, request: Request) -> None:
        if self.host:
            # Sent upstream as long as the service passes the Host header on
            # (passHostHeader, true by default), which the translator keeps.
            request.headers.set(b"Host", self.host)
            request.host = self.hostname
        if self.path is not None:
            path = self.path.apply(request.raw_path)
            if path is not None:
                request.set_path(path)


class GatewayURLRewrite:
    key = "gatewayURLRewrite"
    options = URLRewriteOptions

    def build(self, options: URLRewriteOptions, next: Handler, context: BuildContext) -> Filter:
        if not options.hostname and options.path is None:
            return Filter()
        return _Rewrite(options)
