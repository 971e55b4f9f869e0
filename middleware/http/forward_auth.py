"""``forwardAuth``: ask an authentication server about every request first.

As Traefik v3 does it: the auth server gets a request to ``address`` (GET,
or the client's method with ``preserveRequestMethod``) with the client's
fields (only ``authRequestHeaders`` when set; never hop-by-hop ones), the
body with ``forwardBody``, and X-Forwarded-For/-Method/-Proto/-Host/-Uri/
-Port. A 2xx answer lets the request through with ``authResponseHeaders``
(and the fields ``authResponseHeadersRegex`` matches) copied onto it; any
other answer goes back to the client as it came (hop-by-hop fields dropped,
a relative Location resolved against ``address`` unless
``preserveLocationHeader``). An auth server that cannot be reached, or
fails mid-answer, gives 500.

Invariants kept:

* The client's X-Forwarded-* reach the auth server only with
  ``trustForwardHeader`` and from the entry point's ``trustedIPs`` (Traefik's
  entry point strips them from anyone else before middleware runs). ``_`` or
  ``.`` for ``-`` spells the same field (Traefik GHSA-x677-9fxg-v5c5), since
  some servers fold them together.
* The backend never sees a client's own ``authResponseHeaders`` value, under
  any such spelling, whether or not the auth server sent one.
* The body is read with ``Request.read_body``, so the exchange forwards it
  from memory afterwards.

The auth exchange uses the gateway's shared aiohttp session with this
middleware's TLS context (built by ``client_tls``), following no redirect.
The shape is a ``Filter`` whose ``request`` returns an awaitable: once the
auth server said yes, the rest of the chain and the upstream exchange run on
the inline callback path, with no task held across them.
``addAuthCookiesToResponse`` must edit the upstream's response with what this
request's auth answer said, which a filter's ``response`` hook has nowhere to
keep: ``build`` then returns a ``Handler``.
"""

from __future__ import annotations

import functools
import logging
import ssl
import sys
from collections.abc import Awaitable, Sequence
from urllib.parse import urljoin, urlsplit

import aiohttp
from yarl import URL

from gateway.config.model import model
from gateway.config.safe_regexp import compile_safe
from middleware.contract import BodyTooLarge, BuildContext, Filter, Handler, Request, Response
from middleware.http.client_tls import client_context
from middleware.http.http_client import read_limited

log = logging.getLogger(__name__)

# Traefik's http.Client timeout for the auth exchange, body included.
_TIMEOUT = aiohttp.ClientTimeout(total=30)

# Hop-by-hop fields (RFC 9110 7.6.1) never copied to the auth request or back.
# Proxy-Authorization is not one here: the auth server may be what checks it.
_HOP = frozenset(
    b"connection keep-alive proxy-connection te trailer trailers transfer-encoding upgrade".split()
)
# Fields the HTTP client derives from the address and the body it sends; the
# client's 100-continue was already dealt with by the gateway.
_DERIVED = frozenset({b"host", b"content-length", b"expect"})
# Left out unless the client sent them, so the auth server sees the client's
# request and not aiohttp's defaults.
_SKIP_AUTO = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})


def _alias(name: bytes) -> bytes:
    """A field name with case and ``-``/``_``/``.`` folded: ``X_Auth.User`` is ``xauthuser``."""
    return name.lower().translate(None, b"-_.")


# Traefik's XHeadersSet: the fields its entry point manages.
_X_KEYS = frozenset(
    _alias(b"x-forwarded-" + n)
    for n in b"proto scheme for host port server uri method prefix tls-client-cert".split()
) | {_alias(b"x-forwarded-tls-client-cert-info"), _alias(b"x-scheme"), _alias(b"x-real-ip")}
_XFF, _XFM, _XFP = b"x-forwarded-for", b"x-forwarded-method", b"x-forwarded-proto"
_XFPORT, _XFH, _XFU = b"x-forwarded-port", b"x-forwarded-host", b"x-forwarded-uri"


@functools.lru_cache(maxsize=1024)
def _canonical(name: bytes) -> str:
    """Go's canonical spelling (``x-auth-user`` -> ``X-Auth-User``).

    Traefik matches ``authResponseHeadersRegex`` against Go's header map
    keys, which are canonical whatever the peer sent.
    """
    text = name.decode("latin-1")
    return "-".join(part[:1].upper() + part[1:].lower() for part in text.split("-"))


def _cookie_name(value: bytes) -> bytes:
    return value.partition(b";")[0].partition(b"=")[0].strip()


def _host_port(host: str) -> str:
    if host.startswith("["):
        end = host.find("]")
        return host[end + 2 :] if host[end + 1 : end + 2] == ":" else ""
    return host.rpartition(":")[2] if ":" in host else ""


@model
class ForwardAuthTLS:
    ca: str = ""
    cert: str = ""
    key: str = ""
    insecure_skip_verify: bool = False
    # Deprecated in Traefik v3 and without effect on a client; accepted so files load.
    ca_optional: bool = False


@model
class ForwardAuthOptions:
    REQUIRED = ("address",)

    address: str = ""
    trust_forward_header: bool = False
    auth_response_headers: tuple[str, ...] = ()
    auth_response_headers_regex: str = ""
    auth_request_headers: tuple[str, ...] = ()
    add_auth_cookies_to_response: tuple[str, ...] = ()
    forward_body: bool = False
    max_body_size: int = -1  # negative: no limit, as in Traefik
    max_response_body_size: int = -1
    # Traefik writes this auth response field into the access log's
    # ClientUsername; Request has no slot for a user name yet, so it is
    # accepted and not used.
    header_field: str = ""
    preserve_location_header: bool = False
    preserve_request_method: bool = False
    tls: ForwardAuthTLS | None = None


class _Auth:
    """One configured forwardAuth: the auth exchange and what it decides."""

    def __init__(self, options: ForwardAuthOptions, context: BuildContext) -> None:
        address = options.address.strip()
        parts = urlsplit(address)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"address: expected an http:// or https:// URL, got {address!r}")
        self.name = context.name
        self.context = context
        self.address = address
        self.url = URL(address)
        self.ssl: ssl.SSLContext | bool = True
        if options.tls is not None:
            tls = options.tls
            context_ssl = client_context(
                ca=tls.ca,
                cert=tls.cert,
                key=tls.key,
                insecure_skip_verify=tls.insecure_skip_verify,
            )
            if parts.scheme == "https":
                self.ssl = context_ssl
        self.trust = options.trust_forward_header
        self.header_field = options.header_field
        allowed = (n.strip().lower().encode("latin-1") for n in options.auth_request_headers)
        self.allow = frozenset(allowed) or None
        self.response_names = tuple(
            n.strip().lower().encode("latin-1") for n in options.auth_response_headers
        )
        self.response_keys = frozenset(_alias(n) for n in self.response_names)
        self.regex = None
        if options.auth_response_headers_regex:
            try:
                self.regex = compile_safe(options.auth_response_headers_regex)
            except ValueError as exc:
                raise ValueError(f"authResponseHeadersRegex: {exc}") from None
        self.cookie_names = frozenset(
            n.encode("latin-1") for n in options.add_auth_cookies_to_response
        )
        self.forward_body = options.forward_body
        self.body_limit = options.max_body_size if options.max_body_size >= 0 else sys.maxsize
        self.response_limit = options.max_response_body_size
        self.preserve_location = options.preserve_location_header
        self.preserve_method = options.preserve_request_method

    # -- the auth exchange ------------------------------------------------------

    async def check(self, request: Request) -> tuple[Response | None, list[bytes] | None]:
        """The answer to send instead of forwarding, or None and the cookies to add.

        The cookie list is None when the auth server set no cookie at all
        (the upstream response is then left alone, as Traefik does).
        """
        body = None
        if self.forward_body:
            try:
                body = await request.read_body(self.body_limit) or None
            except BodyTooLarge:
                return Response(401), None
        method = request.method if self.preserve_method else "GET"
        try:
            async with self.context.http_client().request(
                method,
                self.url,
                headers=self.auth_headers(request),
                data=body,
                allow_redirects=False,
                ssl=self.ssl,
                timeout=_TIMEOUT,
                skip_auto_headers=_SKIP_AUTO,
            ) as reply:
                content = await self._read(reply)
                status = reply.status
                raw = reply.raw_headers
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # Each request fails alike while the auth server is away; naming
            # the cause is what lets an operator tell a 500 storm from a bug.
            cause = str(exc) or type(exc).__name__
            log.warning("middleware %s: auth server %s failed: %s", self.name, self.address, cause)
            return Response(500), None
        if content is None:
            return Response(401), None
        if not 200 <= status < 300:
            return self.denied(status, raw, content), None
        self.copy_headers(request, raw)
        if self.header_field:
            # Traefik's headerField: the user, as the request now carries it
            # (usually copied from the auth answer), for the access log.
            request.user = request.headers.get(self.header_field) or ""
        names = self.cookie_names
        set_cookies = [v for k, v in raw if k.lower() == b"set-cookie"] if names else []
        if not set_cookies:
            return None, None
        return None, [v for v in set_cookies if _cookie_name(v) in names]

    async def _read(self, reply: aiohttp.ClientResponse) -> bytes | None:
        """The auth answer's body; None past ``maxResponseBodySize``."""
        limit = self.response_limit
        if limit < 0:
            return await reply.read()
        return await read_limited(reply, limit)

    def auth_headers(self, request: Request) -> list[tuple[str, str]]:
        """The fields sent to the auth server for ``request``."""
        raw = request.headers.raw
        trusted = self.trust and request.trusted
        allow = self.allow
        tokens: frozenset[bytes] = frozenset()
        for k, v in raw:
            if k.lower() == b"connection":
                tokens |= {t.strip().lower() for t in v.split(b",")}
        out: list[tuple[str, str]] = []
        sent: dict[bytes, bytes] = {}
        prior_for: list[bytes] = []
        for k, v in raw:
            lk = k.lower()
            if lk in _HOP or lk in _DERIVED:
                continue
            if lk[:1] == b"x" and _alias(lk) in _X_KEYS:
                # Kept only from a trusted client, and past the allow list, as
                # Traefik appends its X-headers to authRequestHeaders then.
                if not trusted:
                    continue
                if lk == _XFF:
                    prior_for.append(v)
                    continue
                sent.setdefault(lk, v)
            elif lk in tokens or (allow is not None and lk not in allow):
                continue
            out.append((k.decode("latin-1"), v.decode("latin-1")))
        client_ip = request.client_ip
        if prior_for:
            client_ip = b", ".join(prior_for).decode("latin-1") + ", " + client_ip
        out.append(("X-Forwarded-For", client_ip))
        host = request.headers.get(b"host") or request.host
        proto = sent.get(_XFP, b"https" if request.scheme == "https" else b"http")
        for lname, name, value in (
            (_XFM, "X-Forwarded-Method", request.method),
            (_XFP, "X-Forwarded-Proto", proto.decode("latin-1")),
            (_XFPORT, "X-Forwarded-Port", _host_port(host) or _default_port(proto)),
            (_XFH, "X-Forwarded-Host", host),
            (_XFU, "X-Forwarded-Uri", request.target),
        ):
            if lname not in sent:
                out.append((name, value))
        return out

    # -- acting on the answer -----------------------------------------------------

    def denied(self, status: int, raw: Sequence[tuple[bytes, bytes]], body: bytes) -> Response:
        """The auth server's answer, for the client."""
        response = Response(status, body=body)
        headers = response.headers
        headers.raw = [(k, v) for k, v in raw if k.lower() not in _HOP]
        location = headers.get(b"location")
        if location and not self.preserve_location:
            try:
                headers.set(b"Location", urljoin(self.address, location))
            except ValueError:
                # Go's url.Parse refusing it makes Traefik answer 500.
                return Response(500)
        return response

    def copy_headers(self, request: Request, raw: Sequence[tuple[bytes, bytes]]) -> None:
        """Replace the request's authResponseHeaders fields with the auth server's."""
        headers = request.headers
        names = self.response_names
        if names:
            keys = self.response_keys
            kept = [(k, v) for k, v in headers.raw if _alias(k) not in keys]
            kept += [(k, v) for k, v in raw if k.lower() in names]
            headers.raw[:] = kept
        regex = self.regex
        if regex is not None:
            kept = [
                (k, v)
                for k, v in headers.raw
                if not regex.search(_canonical(k))
                and not regex.search(_canonical(k.replace(b"_", b"-").replace(b".", b"-")))
            ]
            kept += [(k, v) for k, v in raw if regex.search(_canonical(k))]
            headers.raw[:] = kept

    def add_cookies(self, response: Response, cookies: list[bytes]) -> None:
        """Auth cookies replace the upstream's cookies of the same configured names."""
        names = self.cookie_names
        raw = response.headers.raw
        raw[:] = [
            (k, v) for k, v in raw if k.lower() != b"set-cookie" or _cookie_name(v) not in names
        ]
        raw.extend((b"Set-Cookie", v) for v in cookies)


def _default_port(proto: bytes) -> str:
    return "443" if proto in (b"https", b"wss") else "80"


class _Gate(Filter):
    """The usual shape: the auth exchange in an awaitable, the rest inline."""

    __slots__ = ("auth",)

    def __init__(self, auth: _Auth) -> None:
        self.auth = auth

    def request(self, request: Request) -> Awaitable[Response | None]:
        return self._check(request)

    async def _check(self, request: Request) -> Response | None:
        return (await self.auth.check(request))[0]


def _with_cookies(auth: _Auth, next: Handler) -> Handler:
    """The shape for ``addAuthCookiesToResponse``: it edits the upstream's answer."""

    async def forward_auth(request: Request) -> Response:
        answer, cookies = await auth.check(request)
        if answer is not None:
            return answer
        response = await next(request)
        if cookies is not None:
            auth.add_cookies(response, cookies)
        return response

    return forward_auth


class ForwardAuth:
    key = "forwardAuth"
    options = ForwardAuthOptions

    def build(
        self, options: ForwardAuthOptions, next: Handler, context: BuildContext
    ) -> Filter | Handler:
        auth = _Auth(options, context)
        if not auth.cookie_names:
            return _Gate(auth)
        return _with_cookies(auth, next)
