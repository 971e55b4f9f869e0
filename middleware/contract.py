"""The types a middleware sees: request, response, handler, filter, context.

A middleware is built once per configuration from its validated options
(``build(options, next, context)``) and returns one of two shapes:

- a ``Filter``: synchronous hooks on the request head (``request``) and the
  response head (``response``). Chains made only of filters run inline in
  the proxy's protocol callbacks, with no task per request; this is the shape
  to prefer (headers, redirects, allowlists, rewrites, rate limits).
  ``Filter.request`` may return an awaitable when it must wait (a cache miss
  needing a slow hash, say); only that request then moves to a task.
- a ``Handler``: ``async (request) -> Response`` wrapping ``next``, for
  middleware that must await around the whole exchange (forwardAuth, retry,
  errors, buffering).

Either way the built object keeps no per-request state on itself. The request
view is a thin wrapper over the bytes the HTTP parser produced: header names
and values stay ``bytes`` inside and are decoded (latin-1, as RFC 9110
section 5.5 allows) only when a middleware asks.

The proxy's terminal handler returns the upstream response head with
``streamed=True``; its body is relayed afterwards without passing through
Python handlers, except through a ``BodyTransform`` a middleware attached
(compress) or when a middleware reads it whole (``Response.read_body``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import aiohttp


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


def _fold(name: bytes) -> bytes:
    return name.lower().translate(None, b"-_.")


class Headers:
    """An ordered, case-insensitive, multi-valued header list over raw bytes."""

    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]] | None = None) -> None:
        self.raw: list[tuple[bytes, bytes]] = raw if raw is not None else []

    def get(self, name: str | bytes, default: str | None = None) -> str | None:
        """The first value of ``name``, decoded, or ``default``."""
        key = _b(name).lower()
        for k, v in self.raw:
            if k.lower() == key:
                return v.decode("latin-1")
        return default

    def get_all(self, name: str | bytes) -> list[str]:
        """Every value of ``name`` in order."""
        key = _b(name).lower()
        return [v.decode("latin-1") for k, v in self.raw if k.lower() == key]

    def set(self, name: str | bytes, value: str | bytes) -> None:
        """Replace every value of ``name`` with one value."""
        self.remove(name)
        self.raw.append((_b(name), _b(value)))

    def set_trusted(self, name: str | bytes, value: str | bytes) -> None:
        """``set`` for a field the upstream trusts (the user an auth middleware let in).

        Also drops spellings that differ only in ``-``, ``_`` and ``.``
        (``X_Auth_User``): CGI-style backends fold them into one variable, so
        a client could otherwise pre-set the value beside the verified one.
        """
        key = _fold(_b(name))
        raw = self.raw
        raw[:] = [(k, v) for k, v in raw if _fold(k) != key]
        raw.append((_b(name), _b(value)))

    def add(self, name: str | bytes, value: str | bytes) -> None:
        """Append one more value of ``name``."""
        self.raw.append((_b(name), _b(value)))

    def remove(self, name: str | bytes) -> None:
        """Drop every value of ``name``."""
        key = _b(name).lower()
        raw = self.raw
        if any(k.lower() == key for k, _ in raw):
            raw[:] = [(k, v) for k, v in raw if k.lower() != key]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, (str, bytes)):
            return False
        key = _b(name).lower()
        return any(k.lower() == key for k, _ in self.raw)

    def items(self) -> Iterator[tuple[str, str]]:
        for k, v in self.raw:
            yield k.decode("latin-1"), v.decode("latin-1")

    def __len__(self) -> int:
        return len(self.raw)

    def __repr__(self) -> str:
        return f"Headers({list(self.items())!r})"


class BodyTooLarge(Exception):
    """A body read with ``read_body`` went past its limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"body larger than {limit} bytes")
        self.limit = limit


class BodySource(Protocol):
    """Where a request's or a streamed response's body comes from (the exchange)."""

    async def read_request_body(self, limit: int) -> bytes: ...

    def request_replayable(self) -> bool: ...

    async def read_response_body(self, limit: int) -> bytes: ...

    def discard_response_body(self) -> None: ...

    def abort_response(self) -> None:
        """Cut the response short: upstream closed, and the client's connection too
        once the head has gone (nothing else tells a client a body was cut)."""
        ...


class Request:
    """One HTTP request as routing and middleware see it.

    ``path`` is the decoded-for-matching path (no query); ``raw_path`` is the
    request target's path as sent, which is what is forwarded unless a
    middleware rewrites it (setting ``path`` through ``set_path``).
    """

    __slots__ = (
        "method",
        "raw_path",
        "path",
        "query",
        "headers",
        "host",
        "client_ip",
        "client_port",
        "scheme",
        "sni",
        "entry_point",
        "router",
        "http_version",
        "source",
        "finalizers",
        "trusted",
        "user",
    )

    def __init__(
        self,
        *,
        method: str,
        raw_path: str,
        query: str,
        headers: Headers,
        host: str,
        client_ip: str,
        client_port: int = 0,
        scheme: str = "http",
        sni: str | None = None,
        entry_point: str = "",
        http_version: str = "1.1",
        path: str | None = None,
        trusted: bool = False,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.path = raw_path if path is None else path
        self.query = query
        self.headers = headers
        self.host = host
        self.client_ip = client_ip
        self.client_port = client_port
        self.scheme = scheme
        self.sni = sni
        self.entry_point = entry_point
        self.router = ""
        self.http_version = http_version
        # Whether the client is in the entry point's forwardedHeaders.trustedIPs:
        # only then do its X-Forwarded-* fields say anything (ipStrategy).
        self.trusted = trusted
        # Who an auth middleware let in: the access log's ClientUsername.
        self.user = ""
        # Set by the proxy when the request enters a middleware chain.
        self.source: BodySource | None = None
        self.finalizers: list[Callable[[], None]] | None = None

    def set_path(self, path: str) -> None:
        """Rewrite the path that is forwarded (stripPrefix, replacePath, ...)."""
        self.path = path
        self.raw_path = path

    @property
    def target(self) -> str:
        """The request target forwarded upstream: path and query."""
        return f"{self.raw_path}?{self.query}" if self.query else self.raw_path

    def on_done(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once when this exchange ends, however it ends.

        That is after the last byte of the response was handed to the client,
        or when the client or the upstream went away (inFlightReq uses it).
        """
        if self.finalizers is None:
            self.finalizers = [callback]
        else:
            self.finalizers.append(callback)

    def snapshot(self) -> RequestState:
        """What the chain after this point may change, to ``restore`` before a retry."""
        return RequestState(
            (self.method, self.raw_path, self.path, self.query, self.host, self.user),
            list(self.headers.raw),
            len(self.finalizers or ()),
        )

    def restore(self, state: RequestState) -> None:
        """Undo what the rest of the chain did since ``state`` was taken.

        Traefik's retry sends each attempt a fresh copy of the request: the
        middlewares after it (addPrefix, inFlightReq, ...) must not see their
        own earlier rewrite, nor hold what their earlier attempt took, so the
        ``on_done`` callbacks registered since then run now.
        """
        self.method, self.raw_path, self.path, self.query, self.host, self.user = state.fields
        self.headers.raw[:] = state.headers
        finalizers = self.finalizers
        if finalizers is not None and len(finalizers) > state.finalizers:
            added = finalizers[state.finalizers :]
            del finalizers[state.finalizers :]
            for callback in added:
                callback()

    async def read_body(self, limit: int) -> bytes:
        """The whole request body, at most ``limit`` bytes, else ``BodyTooLarge``.

        Once read, the body is held and forwarded from memory, so the request
        can be sent again (``replayable``).
        """
        if self.source is None:
            return b""
        return await self.source.read_request_body(limit)

    @property
    def replayable(self) -> bool:
        """Whether forwarding again would send the same request (retry asks this).

        True when the request has no body or its body was read whole; False
        once any of a streamed body went to a server.
        """
        return self.source is None or self.source.request_replayable()


class RequestState:
    """A ``Request.snapshot``: the rewritable fields, the headers, the finalizer count."""

    __slots__ = ("fields", "headers", "finalizers")

    def __init__(
        self,
        fields: tuple[str, str, str, str, str, str],
        headers: list[tuple[bytes, bytes]],
        finalizers: int,
    ) -> None:
        self.fields = fields
        self.headers = headers
        self.finalizers = finalizers


class BodyTransform(Protocol):
    """Rewrites a streamed response body piece by piece (compress)."""

    def feed(self, data: bytes) -> bytes: ...

    def end(self) -> bytes: ...


class Response:
    """A response head, plus a body when a handler generated the response.

    ``streamed`` responses come from the upstream; their body is relayed by
    the proxy after the head has passed back through the chain, through
    ``transform`` when a middleware set one. ``error`` is set (to the cause)
    when the gateway generated this response because no server could be
    reached or a server failed before answering: retry and circuitBreaker
    count those as network errors.
    """

    __slots__ = ("status", "reason", "headers", "body", "streamed", "error", "transform", "source")

    def __init__(
        self,
        status: int = 200,
        *,
        headers: Headers | None = None,
        body: bytes = b"",
        reason: str = "",
        streamed: bool = False,
        error: str = "",
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self.streamed = streamed
        self.error = error
        self.transform: BodyTransform | None = None
        self.source: BodySource | None = None

    async def read_body(self, limit: int) -> bytes:
        """Read a streamed body whole (at most ``limit`` bytes, else ``BodyTooLarge``).

        The response then carries it in ``body`` and is no longer streamed.
        """
        if self.streamed and self.source is not None:
            self.body = await self.source.read_response_body(limit)
            self.streamed = False
            self.source = None
        elif len(self.body) > limit:
            raise BodyTooLarge(limit)
        return self.body

    def discard(self) -> None:
        """Drop a streamed body unread (its upstream connection is closed).

        For a middleware replacing an upstream response (``errors``): without
        it, the unwanted body keeps arriving, and is held, until the new one
        is sent.
        """
        if self.streamed and self.source is not None:
            self.source.discard_response_body()
        self.streamed = False
        self.source = None
        self.body = b""

    def abort(self) -> None:
        """End a streamed response now, as a gateway timeout (``gatewayTimeouts``).

        Before its head is sent the client gets 504; after, the connection is
        cut. A no-op once the exchange is over.
        """
        if self.streamed and self.source is not None:
            self.source.abort_response()


Handler = Callable[[Request], Awaitable[Response]]


class Filter:
    """A middleware that works on heads only, synchronously.

    Override ``request`` to inspect or rewrite the request, or to answer it
    (return a ``Response``); return ``None`` to pass it on. Override
    ``response`` to edit the response head on its way back (status, headers,
    ``transform``); it runs for responses from the upstream and for those an
    inner middleware or the gateway generated, as Traefik's response writers
    do. ``request`` may return an awaitable resolving to the same, when it has
    to wait; keep that off the common path.
    """

    def request(self, request: Request) -> Response | Awaitable[Response | None] | None:
        return None

    def response(self, request: Request, response: Response) -> None:
        return None


class ServiceHandle(Protocol):
    """A dynamic-configuration service a middleware sends its own requests to."""

    name: str

    async def fetch(self, request: Request, target: str) -> Response:
        """GET ``target`` from one of the service's servers, with ``request``'s
        headers and host; the returned response has its body read whole."""
        ...


class BuildContext(Protocol):
    """What ``build`` may use besides its options."""

    # The middleware's qualified name (``auth@file``), for logs and metrics.
    name: str

    def service(self, name: str) -> ServiceHandle:
        """A service by name, qualified in the middleware's provider unless it
        names one (``pages@file``); raises ConfigError when there is none."""
        ...

    def http_client(self) -> aiohttp.ClientSession:
        """The gateway's shared HTTP client session (call it on the event loop)."""
        ...

    def on_close(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` when this configuration is replaced or the gateway stops."""
        ...


class MiddlewareType(Protocol):
    """Builds a configured middleware; ``build`` runs once per configuration.

    ``options`` is a ``@model`` dataclass the registry decodes the configuration
    into (so unknown keys and wrong types are errors naming file, line and key).
    """

    key: ClassVar[str]
    options: ClassVar[type[Any]]

    def build(self, options: Any, next: Handler, context: BuildContext) -> Handler | Filter: ...
