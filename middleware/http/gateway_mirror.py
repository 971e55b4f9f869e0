"""``gatewayRequestMirror``: the Gateway API RequestMirror filter, fire and forget.

One middleware per RequestMirror filter. ``backends`` lists the endpoints of
the filter's backendRef (``{url: "http://10.0.0.7:8080"}``); each copy goes
to exactly one of them, in turn, as the spec requires ("only to a single
destination endpoint within this BackendRef"). ``percent`` (0-100) or
``fraction`` (``numerator``/``denominator``, default 100) picks which
requests are copied, at random per request; neither means all of them.
An empty ``backends`` (a Service without ready endpoints) mirrors nothing.

Invariants kept:

* The client's exchange never waits for, or hears about, the copy: it is a
  task of its own, its response is read and dropped, its failures are logged
  at DEBUG only. Copies in flight are bounded (``MAX_IN_FLIGHT`` per
  router); past that, requests are not mirrored rather than queued.
* The copy is the request as this filter sees it (method, target, headers
  after the filters before it), minus hop-by-hop fields, plus
  X-Forwarded-For/-Proto/-Host as a proxy adds them, with the client's Host.
* A body is copied only when it fits ``maxBodySize`` (1 MiB by default):
  such a body is read whole before the request goes on (with
  ``Request.read_body``, so the exchange then forwards it from memory), as
  Traefik's mirroring service does. That store-and-forward is the one cost
  the main request can see; a request announcing a larger body is not
  mirrored and streams as usual, and a chunked one that turns out larger
  streams on from what was read.
* Upgrade requests (WebSocket) are never mirrored: there is no copy of a
  two-way stream to send.

Transport: the gateway's shared aiohttp session (``BuildContext.http_client``)
rather than raw connections, because copies are frequent and small: its pool
keeps connections to the mirror alive across copies, it frames request and
response for us (so a response is drained and the connection reused), and it
lives and is closed with the gateway. ``timeout`` bounds each copy (10s by
default, 0 for none). Copies still in flight when the configuration is
replaced are cancelled: their targets may be gone with it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from gateway.config.model import Duration, model
from middleware.contract import BodyTooLarge, BuildContext, Filter, Handler, Request

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger(__name__)

# Copies of one router's requests in flight at once; a slow mirror must not
# turn into unbounded memory held for it.
MAX_IN_FLIGHT = 256
DEFAULT_MAX_BODY = 1 << 20

# Never copied: hop-by-hop fields (RFC 9110 section 7.6.1) and framing, which
# the client session writes for the copy itself.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "expect",
        "host",
    }
)
# aiohttp would add these when absent; a copy carries only what the client sent.
_NO_AUTO = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


@model
class MirrorBackend:
    REQUIRED = ("url",)

    url: str = ""


@model
class Fraction:
    REQUIRED = ("numerator",)

    numerator: int = 0
    denominator: int = 100


@model
class RequestMirrorOptions:
    backends: tuple[MirrorBackend, ...] = ()
    percent: int | None = None
    fraction: Fraction | None = None
    max_body_size: int = DEFAULT_MAX_BODY
    timeout: Duration = 10.0


def _share(o: RequestMirrorOptions) -> tuple[int, int]:
    """(numerator, denominator) of the requests to copy."""
    if o.percent is not None and o.fraction is not None:
        raise ValueError("percent: only one of percent and fraction may be set")
    if o.percent is not None:
        if not 0 <= o.percent <= 100:
            raise ValueError(f"percent: {o.percent} is not between 0 and 100")
        return o.percent, 100
    if o.fraction is not None:
        numerator, denominator = o.fraction.numerator, o.fraction.denominator
        if denominator < 1:
            raise ValueError(f"fraction.denominator: {denominator} must be at least 1")
        if not 0 <= numerator <= denominator:
            raise ValueError(
                f"fraction.numerator: {numerator} must be between 0 and the denominator"
            )
        return numerator, denominator
    return 1, 1


def _base(index: int, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"backends[{index}].url: {url!r} is not an http(s)://host[:port] URL")
    if parts.query or parts.fragment:
        raise ValueError(f"backends[{index}].url: {url!r} must not have a query or fragment")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise ValueError(f"backends[{index}].url: {url!r} has an invalid port") from None
    return url.rstrip("/")


def _body_length(request: Request) -> int | None:
    """Content-Length, -1 for a chunked body, None for no body."""
    length: int | None = None
    for name, value in request.headers.raw:
        lname = name.lower()
        if lname == b"transfer-encoding":
            return -1
        if lname == b"content-length" and value.strip().isdigit():
            length = int(value)
    return length or None


class _Mirror(Filter):
    __slots__ = ("bases", "numerator", "denominator", "max_body", "timeout", "client", "tasks")

    def __init__(
        self,
        bases: list[str],
        share: tuple[int, int],
        max_body: int,
        timeout: float,
        client: Callable[[], aiohttp.ClientSession],
    ) -> None:
        self.bases: Iterator[str] = itertools.cycle(bases)
        self.numerator, self.denominator = share
        self.max_body = max_body
        self.timeout = aiohttp.ClientTimeout(total=timeout if timeout > 0 else None)
        self.client = client
        self.tasks: set[asyncio.Task[None]] = set()

    def request(self, request: Request) -> Awaitable[None] | None:
        # At random, not every n-th request: a client alternating two kinds
        # of request must not have one kind always copied and the other never.
        share = self.numerator
        if share < self.denominator and random.randrange(self.denominator) >= share:
            return None
        if len(self.tasks) >= MAX_IN_FLIGHT or b"upgrade" in _tokens(request):
            return None
        length = _body_length(request)
        if length is None:
            self._launch(request, None)
            return None
        if length > self.max_body:
            return None
        return self._with_body(request)

    async def _with_body(self, request: Request) -> None:
        try:
            body = await request.read_body(self.max_body)
        except BodyTooLarge:
            return None
        self._launch(request, body)
        return None

    def _launch(self, request: Request, body: bytes | None) -> None:
        url = URL(next(self.bases) + request.target, encoded=True)
        task = asyncio.get_running_loop().create_task(
            self._send(request.method, url, _copy_headers(request), body)
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(
        self, method: str, url: URL, headers: list[tuple[str, str]], body: bytes | None
    ) -> None:
        try:
            async with self.client().request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                skip_auto_headers=_NO_AUTO,
                timeout=self.timeout,
            ) as reply:
                # Drained rather than dropped, so the connection goes back to the pool.
                async for _ in reply.content.iter_any():
                    pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The spec ignores the mirror's answer, failures included.
            if log.isEnabledFor(logging.DEBUG):
                log.debug("mirror copy to %s failed: %s", url, exc or type(exc).__name__)

    def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()


def _tokens(request: Request) -> set[bytes]:
    """The lower-cased tokens of the request's Connection fields."""
    out: set[bytes] = set()
    for name, value in request.headers.raw:
        if name.lower() == b"connection":
            out.update(t.strip().lower() for t in value.split(b","))
    return out


def _copy_headers(request: Request) -> list[tuple[str, str]]:
    named = {t.decode("latin-1") for t in _tokens(request)}
    headers: list[tuple[str, str]] = []
    forwarded_for = ""
    proto = forwarded_host = False
    for name, value in request.headers.items():
        lname = name.lower()
        if lname in _HOP_BY_HOP or lname in named:
            continue
        if lname == "x-forwarded-for":
            # Any left came from a trusted client (the exchange drops an
            # untrusted one's before middleware runs): extend the chain.
            forwarded_for = f"{forwarded_for}, {value}" if forwarded_for else value
            continue
        proto = proto or lname == "x-forwarded-proto"
        forwarded_host = forwarded_host or lname == "x-forwarded-host"
        headers.append((name, value))
    host = request.headers.get(b"host") or request.host
    headers.append(("Host", host))
    client = request.client_ip
    headers.append(("X-Forwarded-For", f"{forwarded_for}, {client}" if forwarded_for else client))
    if not proto:
        headers.append(("X-Forwarded-Proto", request.scheme))
    if not forwarded_host and host:
        headers.append(("X-Forwarded-Host", host))
    return headers


class GatewayRequestMirror:
    key = "gatewayRequestMirror"
    options = RequestMirrorOptions

    def build(self, options: RequestMirrorOptions, next: Handler, context: BuildContext) -> Filter:
        share = _share(options)
        bases = [_base(i, b.url) for i, b in enumerate(options.backends)]
        if options.max_body_size < 0:
            raise ValueError(f"maxBodySize: {options.max_body_size} must not be negative")
        if options.timeout < 0:
            raise ValueError("timeout: must not be negative")
        if not bases or share[0] == 0:
            return Filter()
        mirror = _Mirror(bases, share, options.max_body_size, options.timeout, context.http_client)
        context.on_close(mirror.cancel)
        return mirror
