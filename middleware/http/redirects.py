"""Redirects: ``redirectScheme`` and ``redirectRegex``, as Traefik v3 answers them.

Both rebuild the URL the client asked for (``scheme://host[:port]/path?query``),
rewrite it with a Go regex replacement, and answer with a redirect when the
result differs; an unchanged URL passes the request on. So a request already
on the target scheme *and* port is forwarded, and one on the right scheme but
another port is sent to the configured one.

* Status: 302, or 307 for methods other than GET; with ``permanent``, 301, or
  308 for methods other than GET. The body is the status text.
* ``redirectScheme`` reads the client's scheme from TLS, then from
  ``X-Forwarded-Proto`` (``ws``/``wss`` read as ``http``/``https``), believed
  only from clients in the entry point's ``forwardedHeaders.trustedIPs``, as
  Traefik drops it from anyone else before middleware runs. Default ports
  (80 for http, 443 for https) are left out of the URL.
* ``redirectRegex`` matches ``http(s)://`` + the Host header as sent (port
  included) + the request target; it ignores ``X-Forwarded-Proto``.
* A target in absolute form (``GET http://host:port/path``) supplies scheme,
  host and port, as Traefik's ``uriRegexp`` takes them.
"""

from __future__ import annotations

import re

from gateway.config.model import model
from gateway.config.safe_regexp import compile_safe
from middleware.contract import BuildContext, Filter, Handler, Headers, Request, Response
from middleware.http.go_replace import GoReplace
from middleware.http.paths import from_go_text, go_text

# Traefik's patterns, verbatim (Go syntax); RE2 runs them, as they are not
# provably linear for Python's re and read the client's target and Host.
_URI = compile_safe(r"^(https?):\/\/(\[[\w:.]+\]|[\w\._-]+)?(:\d+)?(.*)$")
_SCHEME_REDIRECT = compile_safe(r"^(https?:\/\/)?(\[[\w:.]+\]|[\w\._-]+)?(:\d+)?(.*)$")
_SCHEME_SYNTAX = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
# Go's url.Parse refuses ASCII control characters; Traefik then answers 500.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_STATUS_TEXT = {
    301: b"Moved Permanently",
    302: b"Found",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
}
_FORWARDED_PROTO = {"http": "http", "ws": "http", "https": "https", "wss": "https"}


def _redirect(request: Request, location: str, permanent: bool) -> Response:
    get = request.method == "GET"
    status = (301 if get else 308) if permanent else (302 if get else 307)
    if _CONTROL.search(location):
        return Response(500, body=b"Internal Server Error")
    return Response(
        status,
        headers=Headers(
            [
                (b"Location", location.encode("latin-1")),
                (b"Content-Type", b"text/plain; charset=utf-8"),
            ]
        ),
        body=_STATUS_TEXT[status],
    )


def _split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's ``net.SplitHostPort``: host (unbracketed) and port, or None on error."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or not hostport.startswith(":", end + 1):
            return None
        host, port = hostport[1:end], hostport[end + 2 :]
        if "[" in host or "[" in port or "]" in port:
            return None
        return host, port
    colon = hostport.rfind(":")
    if colon < 0 or ":" in hostport[:colon] or "[" in hostport or "]" in hostport:
        return None
    return hostport[:colon], hostport[colon + 1 :]


def _request_url(request: Request, host: str, port: str) -> tuple[str, str, str, str]:
    """Scheme, host, port and target, with an absolute-form target's parts on top."""
    scheme = "http"
    uri = request.target
    absolute = _URI.match(uri)
    if absolute is not None:
        scheme = absolute.group(1)
        host = absolute.group(2) or host
        port = absolute.group(3) or port
        uri = absolute.group(4)
    if request.scheme == "https":
        scheme = "https"
    return scheme, host, port, uri


# -- redirectScheme ------------------------------------------------------------------


@model
class RedirectSchemeOptions:
    REQUIRED = ("scheme",)

    scheme: str = ""
    port: str = ""
    permanent: bool = False


class _RedirectScheme(Filter):
    __slots__ = ("replace", "permanent")

    def __init__(self, replace: GoReplace, permanent: bool) -> None:
        self.replace = replace
        self.permanent = permanent

    def request(self, request: Request) -> Response | None:
        old = go_text(self._client_url(request))
        # No match leaves the URL as it was: Traefik's MatchString check and
        # its comparison of old and new URLs both pass the request on.
        new = self.replace.replace_all(old)
        if new == old:
            return None
        return _redirect(request, from_go_text(new), self.permanent)

    @staticmethod
    def _client_url(request: Request) -> str:
        host = request.headers.get("host") or ""
        port = ""
        split = _split_host_port(host)
        if split is not None:
            host, port = split[0], ":" + split[1]
            if ":" in host:
                # Go's SplitHostPort unbrackets an IPv6 literal and Traefik
                # writes it back bare, a Location no client can follow.
                host = f"[{host}]"
        scheme, host, port, uri = _request_url(request, host, port)
        if request.trusted:
            proto = request.headers.get("x-forwarded-proto")
            if proto:
                scheme = _FORWARDED_PROTO.get(proto.lower(), scheme)
        if (scheme == "http" and port == ":80") or (scheme == "https" and port == ":443"):
            port = ""
        return f"{scheme}://{host}{port}{uri}"


class RedirectScheme:
    key = "redirectScheme"
    options = RedirectSchemeOptions

    def build(self, options: RedirectSchemeOptions, next: Handler, context: BuildContext) -> Filter:
        if not options.scheme:
            raise ValueError("scheme: you must provide a target scheme")
        if not _SCHEME_SYNTAX.fullmatch(options.scheme):
            # Go's url.Parse would refuse the Location and Traefik answer 500
            # to every request: say so once, at load.
            raise ValueError(f"scheme: {options.scheme!r} is not a URL scheme (like https)")
        # url.Parse lower-cases the scheme of the Location; comparing in lower
        # case keeps "HTTPS" from redirecting https requests forever.
        scheme = options.scheme.lower()
        port = options.port.strip()
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"port: {options.port!r} is not a port number")
        default = (scheme == "http" and port == "80") or (scheme == "https" and port == "443")
        suffix = ":" + port if port and not default else ""
        template = scheme + "://${2}" + suffix + "${4}"
        return _RedirectScheme(GoReplace(_SCHEME_REDIRECT, template), options.permanent)


# -- redirectRegex -------------------------------------------------------------------


@model
class RedirectRegexOptions:
    REQUIRED = ("regex",)

    regex: str = ""
    replacement: str = ""
    permanent: bool = False


class _RedirectRegex(Filter):
    __slots__ = ("replace", "permanent")

    def __init__(self, replace: GoReplace, permanent: bool) -> None:
        self.replace = replace
        self.permanent = permanent

    def request(self, request: Request) -> Response | None:
        old = go_text(self._raw_url(request))
        # No match leaves the URL as it was: Traefik's MatchString check and
        # its comparison of old and new URLs both pass the request on.
        new = self.replace.replace_all(old)
        if new == old:
            return None
        return _redirect(request, from_go_text(new), self.permanent)

    @staticmethod
    def _raw_url(request: Request) -> str:
        scheme, host, port, uri = _request_url(request, request.headers.get("host") or "", "")
        return f"{scheme}://{host}{port}{uri}"


class RedirectRegex:
    key = "redirectRegex"
    options = RedirectRegexOptions

    def build(self, options: RedirectRegexOptions, next: Handler, context: BuildContext) -> Filter:
        if not options.regex.strip():
            # Documented as required; an empty pattern would match between
            # every two characters and splice the replacement in everywhere.
            raise ValueError("regex: cannot be empty")
        try:
            pattern = compile_safe(options.regex)
        except ValueError as exc:
            raise ValueError(
                f"regex: invalid regular expression {options.regex!r}: {exc}"
            ) from None
        return _RedirectRegex(GoReplace(pattern, options.replacement), options.permanent)
