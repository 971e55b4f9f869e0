"""``headers``: custom request/response headers, CORS and security headers.

Traefik v3's ``headers`` middleware, which stacks three parts in this order
(outermost first), and Sluice keeps that order because it decides what wins:

1. CORS preflight: an ``OPTIONS`` request carrying both ``Origin`` and
   ``Access-Control-Request-Method`` is answered here with 200 and the CORS
   headers; nothing else of this middleware (custom or security headers,
   ``allowedHosts``) touches that answer.
2. Custom headers: ``customRequestHeaders`` set (or, when the value is empty,
   remove) request headers; ``Host`` also rewrites the request's host.
   ``customResponseHeaders`` do the same on the response, after the security
   headers, so they override or remove those; then the CORS response headers
   (``Access-Control-Allow-Origin`` when the origin is allowed, credentials,
   exposed headers, ``Vary: Origin``).
3. Security (unrolled/secure): ``allowedHosts`` rejects other hosts with
   500 "Bad Host" (what Traefik sends); the response gets the configured
   security headers, replacing the upstream's. ``Strict-Transport-Security``
   and ``Public-Key-Pins`` are only sent over HTTPS: TLS, or a request
   matching ``sslProxyHeaders``; ``forceSTSHeader`` sends STS anyway;
   ``isDevelopment`` drops both and disables ``allowedHosts``.

Everything is turned into byte pairs and lower-cased name sets at build
time; a request costs at most one pass over the header list per edit.
X-Forwarded-* values (``hostsProxyHeaders``, ``sslProxyHeaders``) count only
from trusted clients, as in Traefik where the entry point has already
replaced an untrusted client's with its own by then.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from gateway.config.model import empty_map, key, model
from gateway.config.safe_regexp import compile_safe
from middleware.contract import BuildContext, Filter, Handler, Headers, Request, Response

Pairs = list[tuple[bytes, bytes]]
# (names to drop, the same plus Access-Control-Allow-Origin, pairs to append)
Edit = tuple[frozenset[bytes], frozenset[bytes], tuple[tuple[bytes, bytes], ...]]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_ACAO = b"Access-Control-Allow-Origin"
# What the entry point replaces for untrusted clients (forwardedHeaders).
_FORWARDED = frozenset(
    [b"x-real-ip"]
    + [
        b"x-forwarded-" + part
        for part in (b"for", b"proto", b"host", b"port", b"server", b"uri", b"method")
    ]
    + [b"x-forwarded-tls-client-cert", b"x-forwarded-tls-client-cert-info"]
)
# unrolled/secure's default bad-host handler; Traefik installs no other.
BAD_HOST_STATUS = 500


@model
class HeadersOptions:
    custom_request_headers: Mapping[str, str] = empty_map()
    custom_response_headers: Mapping[str, str] = empty_map()
    access_control_allow_credentials: bool = False
    access_control_allow_headers: tuple[str, ...] = ()
    access_control_allow_methods: tuple[str, ...] = ()
    access_control_allow_origin_list: tuple[str, ...] = ()
    access_control_allow_origin_list_regex: tuple[str, ...] = ()
    access_control_expose_headers: tuple[str, ...] = ()
    access_control_max_age: int = 0
    add_vary_header: bool = False
    allowed_hosts: tuple[str, ...] = ()
    hosts_proxy_headers: tuple[str, ...] = ()
    ssl_proxy_headers: Mapping[str, str] = empty_map()
    sts_seconds: int = 0
    sts_include_subdomains: bool = False
    sts_preload: bool = False
    force_sts_header: bool = key("forceSTSHeader", False)
    frame_deny: bool = False
    custom_frame_options_value: str = ""
    content_type_nosniff: bool = False
    browser_xss_filter: bool = False
    custom_browser_xss_value: str = key("customBrowserXSSValue", "")
    content_security_policy: str = ""
    content_security_policy_report_only: str = ""
    public_key: str = ""
    referrer_policy: str = ""
    permissions_policy: str = ""
    is_development: bool = False


def _name(option: str, name: str) -> bytes:
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"{option}: {name!r} is not a valid header name")
    return name.encode("ascii")


def _value(option: str, value: str) -> bytes:
    # A line break in a configured value would inject header lines.
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{option}: the value must not contain CR, LF or NUL")
    return value.encode("utf-8")


def _security(o: HeadersOptions, ssl: bool) -> list[tuple[bytes, bytes]]:
    """unrolled/secure's response headers, for a request over HTTPS or not."""
    if o.sts_seconds < 0:
        raise ValueError("stsSeconds: must not be negative")
    sts = ""
    if o.sts_seconds and (ssl or o.force_sts_header) and not o.is_development:
        sts = f"max-age={o.sts_seconds}"
        sts += "; includeSubDomains" if o.sts_include_subdomains else ""
        sts += "; preload" if o.sts_preload else ""
    entries = (
        ("Strict-Transport-Security", "stsSeconds", sts),
        ("X-Frame-Options", "customFrameOptionsValue",
         o.custom_frame_options_value or ("DENY" if o.frame_deny else "")),
        ("X-Content-Type-Options", "contentTypeNosniff",
         "nosniff" if o.content_type_nosniff else ""),
        ("X-XSS-Protection", "customBrowserXSSValue",
         o.custom_browser_xss_value or ("1; mode=block" if o.browser_xss_filter else "")),
        ("Public-Key-Pins", "publicKey", o.public_key if ssl and not o.is_development else ""),
        ("Content-Security-Policy", "contentSecurityPolicy", o.content_security_policy),
        ("Content-Security-Policy-Report-Only", "contentSecurityPolicyReportOnly",
         o.content_security_policy_report_only),
        ("Referrer-Policy", "referrerPolicy", o.referrer_policy),
        ("Permissions-Policy", "permissionsPolicy", o.permissions_policy),
    )  # fmt: skip
    return [(header.encode(), _value(option, v)) for header, option, v in entries if v]


def _custom(option: str, headers: Mapping[str, str]) -> dict[bytes, tuple[bytes, bytes] | None]:
    """Lower-cased name -> pair to set, or None to remove."""
    out: dict[bytes, tuple[bytes, bytes] | None] = {}
    for name, value in headers.items():
        raw = _name(option, name)
        out[raw.lower()] = (raw, _value(f"{option}.{name}", value)) if value else None
    return out


def _edit(
    security: list[tuple[bytes, bytes]],
    custom: dict[bytes, tuple[bytes, bytes] | None],
    cors: list[tuple[bytes, bytes]],
) -> Edit:
    # Later groups override earlier ones, as each Traefik layer's Header.Set does.
    merged: dict[bytes, tuple[bytes, bytes] | None] = {p[0].lower(): p for p in security}
    merged.update(custom)
    merged.update((p[0].lower(), p) for p in cors)
    drop = frozenset(merged)
    add = tuple(p for p in merged.values() if p is not None)
    return drop, drop | {_ACAO.lower()}, add


def _replace(raw: Pairs, drop: frozenset[bytes], add: tuple[tuple[bytes, bytes], ...]) -> None:
    if drop:
        for name, _ in raw:
            if name.lower() in drop:
                raw[:] = [p for p in raw if p[0].lower() not in drop]
                break
    raw.extend(add)


def _first(raw: Pairs, lname: bytes) -> bytes | None:
    for name, value in raw:
        if name.lower() == lname:
            return value
    return None


def _seen(request: Request, lname: bytes) -> bytes | None:
    """A request header as Traefik's secure part would see it."""
    if lname in _FORWARDED:
        sent = _first(request.headers.raw, lname) if request.trusted else None
        if sent is not None:
            return sent
        # The value the gateway itself forwards in its place.
        if lname == b"x-forwarded-proto":
            return request.scheme.encode()
        if lname == b"x-forwarded-host":
            return _first(request.headers.raw, b"host") or request.host.encode("latin-1")
        if lname in (b"x-forwarded-for", b"x-real-ip"):
            return request.client_ip.encode()
        return None
    return _first(request.headers.raw, lname)


def _without_port(host: bytes) -> bytes:
    if host.startswith(b"["):
        return host[: host.find(b"]") + 1]
    name, colon, port = host.rpartition(b":")
    return name if colon and port.isdigit() else host


def _cors(o: HeadersOptions) -> tuple[tuple[tuple[bytes, bytes], ...] | None, Pairs]:
    """(preflight answer headers, or None without CORS; CORS response headers)."""
    credentials = [(b"Access-Control-Allow-Credentials", b"true")]
    on_response = list(credentials) if o.access_control_allow_credentials else []
    on_preflight = list(on_response)
    for header, option, items, out in (
        (b"Access-Control-Expose-Headers", "accessControlExposeHeaders",
         o.access_control_expose_headers, on_response),
        (b"Access-Control-Allow-Headers", "accessControlAllowHeaders",
         o.access_control_allow_headers, on_preflight),
        (b"Access-Control-Allow-Methods", "accessControlAllowMethods",
         o.access_control_allow_methods, on_preflight),
    ):  # fmt: skip
        if items:
            out.append((header, _value(option, ",".join(items))))
    on_preflight.append((b"Access-Control-Max-Age", b"%d" % o.access_control_max_age))
    enabled = (
        o.access_control_allow_credentials
        or o.access_control_allow_headers
        or o.access_control_allow_methods
        or o.access_control_allow_origin_list
        or o.access_control_allow_origin_list_regex
        or o.access_control_expose_headers
        or o.access_control_max_age
        or o.add_vary_header
    )
    return (tuple(on_preflight) if enabled else None), on_response


class _HeadersFilter(Filter):
    __slots__ = (
        "request_edit", "request_host", "preflight", "allowed_hosts", "hosts_headers",
        "origins", "any_origin", "origin_regexes", "origin_cache", "vary",
        "bare", "plain", "secure", "ssl_matters", "ssl_headers",
    )  # fmt: skip

    def __init__(self, o: HeadersOptions) -> None:
        custom_req = _custom("customRequestHeaders", o.custom_request_headers)
        host = custom_req.pop(b"host", None)
        self.request_host = host[1] if host is not None else None
        self.request_edit: tuple[frozenset[bytes], tuple[tuple[bytes, bytes], ...]] | None = None
        if custom_req:
            self.request_edit = (frozenset(custom_req), tuple(p for p in custom_req.values() if p))
        self.preflight, cors_response = _cors(o)
        self.hosts_headers = tuple(
            _name("hostsProxyHeaders", h).lower() for h in o.hosts_proxy_headers
        )
        self.allowed_hosts: frozenset[bytes] | None = None
        if o.allowed_hosts and not o.is_development:
            self.allowed_hosts = frozenset(
                _value("allowedHosts", h).lower() for h in o.allowed_hosts
            )

        # Traefik answers "*" once it meets it in the list; origins listed
        # before it are echoed back. It sends "*" even with credentials:
        # browsers then refuse the credentialed response, which is safer
        # than reflecting any origin.
        origins = o.access_control_allow_origin_list
        star = origins.index("*") if "*" in origins else len(origins)
        self.origins = frozenset(_value("accessControlAllowOriginList", x) for x in origins[:star])
        self.any_origin = star < len(origins)
        regexes = []
        for i, pattern in enumerate(o.access_control_allow_origin_list_regex):
            try:
                regexes.append(compile_safe(pattern))
            except ValueError as exc:
                raise ValueError(f"accessControlAllowOriginListRegex[{i}]: {exc}") from None
        self.origin_regexes = tuple(regexes)
        self.origin_cache: dict[bytes, bool] = {}
        self.vary = o.add_vary_header

        custom_resp = _custom("customResponseHeaders", o.custom_response_headers)
        plain, ssl = _security(o, False), _security(o, True)
        self.bare = _edit([], custom_resp, cors_response)
        self.plain = _edit(plain, custom_resp, cors_response)
        self.secure = _edit(ssl, custom_resp, cors_response)
        self.ssl_matters = plain != ssl
        self.ssl_headers = tuple(
            (_name("sslProxyHeaders", k).lower(), _value(f"sslProxyHeaders.{k}", v))
            for k, v in o.ssl_proxy_headers.items()
        )

    def edits_responses(self) -> bool:
        return bool(
            self.plain[0]
            or self.secure[0]
            or self.vary
            or self.origins
            or self.any_origin
            or self.origin_regexes
        )

    # -- request ------------------------------------------------------------------

    def request(self, request: Request) -> Response | None:
        if self.preflight is not None and request.method == "OPTIONS":
            answer = self._preflight(request)
            if answer is not None:
                return answer
        edit = self.request_edit
        if edit is not None:
            _replace(request.headers.raw, edit[0], edit[1])
        if self.request_host is not None:
            request.headers.set(b"Host", self.request_host)
            request.host = _without_port(self.request_host).decode("latin-1")
        if self.allowed_hosts is not None and not self._host_allowed(request):
            response = Response(
                BAD_HOST_STATUS,
                headers=Headers(
                    [
                        (b"Content-Type", b"text/plain; charset=utf-8"),
                        (b"X-Content-Type-Options", b"nosniff"),
                    ]
                ),
                body=b"Bad Host\n",
            )
            # Rejected inside the security part: only the outer custom and
            # CORS response edits apply, as Traefik's response wrapper does.
            self._respond(request, response, self.bare)
            return response
        return None

    def _preflight(self, request: Request) -> Response | None:
        origin = method = None
        for name, value in request.headers.raw:
            lname = name.lower()
            if lname == b"origin":
                origin = origin or value
            elif lname == b"access-control-request-method":
                method = method or value
        if not origin or not method:
            return None
        assert self.preflight is not None
        headers = list(self.preflight)
        allowed = self._allow_origin(origin)
        if allowed is not None:
            headers.append((_ACAO, allowed))
        return Response(200, headers=Headers(headers))

    def _host_allowed(self, request: Request) -> bool:
        allowed = self.allowed_hosts
        assert allowed is not None
        host = None
        for lname in self.hosts_headers:
            host = _seen(request, lname)
            if host:
                break
        if not host:
            host = _first(request.headers.raw, b"host") or request.host.encode("latin-1")
        host = host.lower()
        # Traefik compares the Host as sent, port included; a listed name
        # without a port matching too spares listing every port.
        return host in allowed or _without_port(host) in allowed

    # -- response -----------------------------------------------------------------

    def response(self, request: Request, response: Response) -> None:
        edit = self.plain
        if self.ssl_matters and self._is_ssl(request):
            edit = self.secure
        self._respond(request, response, edit)

    def _respond(self, request: Request, response: Response, edit: Edit) -> None:
        raw = response.headers.raw
        allowed = None
        if self.origins or self.any_origin or self.origin_regexes:
            allowed = self._allow_origin(_first(request.headers.raw, b"origin") or b"")
        if allowed is not None:
            _replace(raw, edit[1], edit[2])
            raw.append((_ACAO, allowed))
        else:
            _replace(raw, edit[0], edit[2])
        if self.vary:
            _vary_origin(raw)

    def _is_ssl(self, request: Request) -> bool:
        if request.scheme == "https":
            return True
        return any(_seen(request, name) == value for name, value in self.ssl_headers)

    def _allow_origin(self, origin: bytes) -> bytes | None:
        if origin in self.origins:
            return origin
        if self.any_origin:
            return b"*"
        if not self.origin_regexes or not origin:
            return None
        cache = self.origin_cache
        hit = cache.get(origin)
        if hit is None:
            text = origin.decode("latin-1")
            # Unanchored, as Go's MatchString: a pattern must say ^...$
            # itself to allow whole origins only.
            hit = any(r.search(text) for r in self.origin_regexes)
            if len(cache) >= 1024:
                cache.clear()
            cache[origin] = hit
        return origin if hit else None


def _vary_origin(raw: Pairs) -> None:
    """Add Origin to Vary: to the first Vary line, or as a new one."""
    first = -1
    for i, (name, value) in enumerate(raw):
        if name.lower() == b"vary":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if b"origin" in tokens or b"*" in tokens:
                return
            if first < 0:
                first = i
    if first < 0:
        raw.append((b"Vary", b"Origin"))
    else:
        name, value = raw[first]
        raw[first] = (name, value + b",Origin" if value.strip() else b"Origin")


class _RequestOnly(_HeadersFilter):
    __slots__ = ()
    response = Filter.response


class HeadersMiddleware:
    key = "headers"
    options = HeadersOptions

    def build(self, options: HeadersOptions, next: Handler, context: BuildContext) -> Filter:
        if not any(getattr(options, f.name) for f in dataclasses.fields(options)):
            # Traefik: "headers configuration not valid".
            raise ValueError("no option set; configure at least one header option")
        built = _HeadersFilter(options)
        # Without response edits the chain need not call a response hook at all.
        return built if built.edits_responses() else _RequestOnly(options)
