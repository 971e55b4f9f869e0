"""``gatewayCORS``: the Gateway API CORS filter (HTTPCORSFilter), as the spec words it.

Sluice's ``headers`` middleware does Traefik's CORS, which differs from the
Gateway API's in ways the conformance suite checks: it answers ``*`` for a
wildcard origin even with credentials (the spec: "must not return ``*``"),
has no ``https://*.example.com`` origins (only regexes, and no default-port
rule), does not echo the requested method or headers for ``*``, and its
``Access-Control-Max-Age`` defaults to 0 where the spec's is 5. Hence this.

* Origins: ``scheme://host[:port]``, compared with the port made explicit
  (80 for http, 443 for https) and case-insensitively. ``*`` in the host
  matches any run of host characters, dots included ("greedy to the left":
  ``https://*.bar.com`` allows ``https://www.bar.com`` and
  ``https://a.www.bar.com``); ``*`` alone allows every origin.
* An allowed origin is always echoed, never answered with ``*``: the spec
  permits echoing in every case and requires it with credentials.
* Preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``)
  is answered here with 200 and never forwarded. Allowed origin: the
  configured ``Access-Control-Allow-Methods`` / ``-Allow-Headers`` (``*``
  answered with what the request asked for, which is valid with or without
  credentials; nothing when it asked for nothing), ``-Expose-Headers``,
  ``-Max-Age``, ``-Allow-Credentials: true`` only with ``allowCredentials``.
  Other origins: 200 with no CORS fields, one of the answers the spec allows.
* Other requests with an ``Origin`` go on; an allowed origin's response gets
  ``Access-Control-Allow-Origin``, credentials and expose headers, replacing
  any the backend sent. ``exposeHeaders: ["*"]`` with credentials, where
  ``*`` is not allowed, lists the response's own field names instead.
* Every answer that depends on ``Origin`` says so with ``Vary: Origin``.
"""

from __future__ import annotations

import re

from gateway.config.model import model
from middleware.contract import BuildContext, Filter, Handler, Headers, Request, Response

Pair = tuple[bytes, bytes]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_ORIGIN = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<host>[^/:?#]+)(?::(?P<port>\d+))?"
)
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_ACAO = b"Access-Control-Allow-Origin"
_ACAC = b"Access-Control-Allow-Credentials"
_ACEH = b"Access-Control-Expose-Headers"
_CORS_FIELDS = frozenset({_ACAO.lower(), _ACAC.lower(), _ACEH.lower()})
_CACHE_LIMIT = 1024


@model
class CORSOptions:
    allow_origins: tuple[str, ...] = ()
    allow_credentials: bool = False
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int = 5


def normalized_origin(origin: str) -> str | None:
    """``scheme://host:port`` in lower case with the default port filled in, or None."""
    found = _ORIGIN.fullmatch(origin.strip())
    if found is None:
        return None
    scheme = found["scheme"].lower()
    port = found["port"] or _DEFAULT_PORTS.get(scheme)
    if port is None:
        return None
    return f"{scheme}://{found['host'].lower()}:{int(port)}"


def _list(option: str, items: tuple[str, ...], pattern: re.Pattern[str]) -> tuple[str, ...]:
    """Entries checked against ``pattern``; ``*`` only alone (the spec's CEL rule)."""
    if "*" in items and len(items) > 1:
        raise ValueError(f"{option}: '*' cannot be combined with other entries")
    for i, item in enumerate(items):
        if item != "*" and not pattern.fullmatch(item):
            raise ValueError(f"{option}[{i}]: {item!r} is not a valid name")
    return items


class _CORS(Filter):
    __slots__ = (
        "any_origin", "exact", "patterns", "cache", "credentials", "methods",
        "echo_method", "headers", "echo_headers", "expose", "expose_listed",
        "max_age", "preflight_base",
    )  # fmt: skip

    def __init__(self, o: CORSOptions) -> None:
        origins = _list("allowOrigins", o.allow_origins, re.compile(r".+"))
        self.any_origin = origins == ("*",)
        exact: set[str] = set()
        patterns: list[re.Pattern[str]] = []
        for i, origin in enumerate(origins if not self.any_origin else ()):
            normal = normalized_origin(origin)
            if normal is None or not normal.startswith(("http://", "https://")):
                raise ValueError(
                    f"allowOrigins[{i}]: {origin!r} is not an origin like https://app.example.com"
                )
            if "*" in normal:
                body = re.escape(normal).replace(r"\*", r"[^/:]*")
                patterns.append(re.compile(body))
            else:
                exact.add(normal)
        self.exact = frozenset(exact)
        self.patterns = tuple(patterns)
        self.cache: dict[bytes, bool] = {}
        self.credentials = o.allow_credentials

        methods = _list("allowMethods", o.allow_methods, _TOKEN)
        self.echo_method = methods == ("*",)
        self.methods = (
            ", ".join(methods).encode("ascii") if methods and not self.echo_method else b""
        )
        headers = _list("allowHeaders", o.allow_headers, _TOKEN)
        self.echo_headers = headers == ("*",)
        self.headers = (
            ", ".join(headers).encode("ascii") if headers and not self.echo_headers else b""
        )
        expose = _list("exposeHeaders", o.expose_headers, _TOKEN)
        # "*" is the wildcard only without credentials (Fetch standard).
        self.expose_listed = expose == ("*",) and self.credentials
        self.expose = b"" if self.expose_listed else ", ".join(expose).encode("ascii")
        if o.max_age < 1:
            raise ValueError(f"maxAge: {o.max_age} must be at least 1 second")
        self.max_age = b"%d" % o.max_age

    def allowed(self, origin: bytes) -> bool:
        if self.any_origin:
            return True
        hit = self.cache.get(origin)
        if hit is None:
            normal = normalized_origin(origin.decode("latin-1"))
            hit = normal is not None and (
                normal in self.exact or any(p.fullmatch(normal) for p in self.patterns)
            )
            if len(self.cache) >= _CACHE_LIMIT:
                self.cache.clear()
            self.cache[origin] = hit
        return hit

    def request(self, request: Request) -> Response | None:
        if request.method != "OPTIONS":
            return None
        origin = method = asked = None
        for name, value in request.headers.raw:
            lname = name.lower()
            if lname == b"origin":
                origin = origin if origin is not None else value
            elif lname == b"access-control-request-method":
                method = method if method is not None else value
            elif lname == b"access-control-request-headers":
                asked = value if asked is None else asked + b"," + value
        if origin is None or method is None:
            return None
        fields: list[Pair] = [(b"Vary", b"Origin")]
        if self.allowed(origin):
            fields.append((_ACAO, origin))
            if self.credentials:
                fields.append((_ACAC, b"true"))
            methods = method.strip() if self.echo_method else self.methods
            if methods:
                fields.append((b"Access-Control-Allow-Methods", methods))
            headers = (asked or b"").strip() if self.echo_headers else self.headers
            if headers:
                fields.append((b"Access-Control-Allow-Headers", headers))
            if self.expose:
                fields.append((_ACEH, self.expose))
            fields.append((b"Access-Control-Max-Age", self.max_age))
        return Response(200, headers=Headers(fields))

    def response(self, request: Request, response: Response) -> None:
        origin = None
        for name, value in request.headers.raw:
            if name.lower() == b"origin":
                origin = value
                break
        if origin is None:
            return
        raw = response.headers.raw
        _vary_origin(raw)
        if not self.allowed(origin):
            return
        raw[:] = [p for p in raw if p[0].lower() not in _CORS_FIELDS]
        expose = self.expose
        if self.expose_listed:
            expose = b", ".join(dict.fromkeys(n.lower() for n, _ in raw))
        raw.append((_ACAO, origin))
        if self.credentials:
            raw.append((_ACAC, b"true"))
        if expose:
            raw.append((_ACEH, expose))


def _vary_origin(raw: list[Pair]) -> None:
    """Add Origin to Vary unless it is there (or Vary is ``*``)."""
    for name, value in raw:
        if name.lower() == b"vary":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if b"origin" in tokens or b"*" in tokens:
                return
    raw.append((b"Vary", b"Origin"))


class GatewayCORS:
    key = "gatewayCORS"
    options = CORSOptions

    def build(self, options: CORSOptions, next: Handler, context: BuildContext) -> Filter:
        return _CORS(options)
