"""``buffering``: read the request (and optionally the response) whole, as Traefik v3.

The request body is read completely before anything goes upstream, so the
upstream receives it with a Content-Length even when the client sent it
chunked, and a slow client never holds an upstream connection.
``maxRequestBodyBytes`` (0: no limit) answers a larger body with 413
"Request Entity Too Large" without forwarding anything; a declared
Content-Length over the limit is refused before the body is read.

With ``maxResponseBodyBytes`` above 0 the response body is read whole too,
and one larger than that is dropped and answered with 500 "Internal Server
Error", as Traefik does; without it the response streams through as usual
(Sluice gains nothing from holding it while ``retryExpression`` is not
applied). Bodies that have no content by their status (1xx, 204, 304, HEAD)
and upgrades are never read.

Sluice holds buffered bodies in memory: ``memRequestBodyBytes`` and
``memResponseBodyBytes`` (Traefik's thresholds for spilling to disk) are
accepted and checked but change nothing. So that one client cannot exhaust
memory with the default configuration, ``maxRequestBodyBytes: 0`` means
64 MiB here (Traefik, which spills to disk, means no limit); set it higher
explicitly to hold larger bodies. ``retryExpression`` (oxy's predicate language, such as
``IsNetworkError() && Attempts() < 2``) is accepted but not applied yet; a
warning says so when a configuration sets it. Use the ``retry`` middleware
for retries meanwhile.
"""

from __future__ import annotations

import logging

from gateway.config.model import model
from middleware.contract import BodyTooLarge, BuildContext, Handler, Headers, Request, Response

log = logging.getLogger(__name__)

# oxy's default for the in-memory thresholds (1 MiB).
DEFAULT_MEM_BYTES = 1024 * 1024
# What "no limit" (0) means for a body held in memory.
UNSET_REQUEST_LIMIT = 64 * 1024 * 1024
# RFC 9110 section 7.6.1: fields meaningful for one connection only. A
# response read whole is sent again by the gateway with its own framing.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


@model
class BufferingOptions:
    max_request_body_bytes: int = 0
    mem_request_body_bytes: int = DEFAULT_MEM_BYTES
    max_response_body_bytes: int = 0
    mem_response_body_bytes: int = DEFAULT_MEM_BYTES
    retry_expression: str = ""


def _plain(status: int, text: bytes) -> Response:
    return Response(
        status, headers=Headers([(b"Content-Type", b"text/plain; charset=utf-8")]), body=text
    )


def _declared_length(request: Request) -> int:
    value = request.headers.get(b"content-length")
    return int(value) if value is not None and value.strip().isdigit() else -1


def _drop_hop_by_hop(response: Response) -> None:
    raw = response.headers.raw
    named: set[bytes] = set()
    for name, value in raw:
        if name.lower() == b"connection":
            named.update(t.strip().lower() for t in value.split(b","))
    drop = _HOP_BY_HOP | named
    raw[:] = [p for p in raw if p[0].lower() not in drop]


class Buffering:
    key = "buffering"
    options = BufferingOptions

    def build(self, options: BufferingOptions, next: Handler, context: BuildContext) -> Handler:
        for option, value in (
            ("maxRequestBodyBytes", options.max_request_body_bytes),
            ("memRequestBodyBytes", options.mem_request_body_bytes),
            ("maxResponseBodyBytes", options.max_response_body_bytes),
            ("memResponseBodyBytes", options.mem_response_body_bytes),
        ):
            if value < 0:
                raise ValueError(f"{option}: must be >= 0, got {value}")
        if options.retry_expression:
            log.warning(
                "middleware %s: retryExpression %r is accepted but not applied",
                context.name,
                options.retry_expression,
            )
        max_request = options.max_request_body_bytes or UNSET_REQUEST_LIMIT
        max_response = options.max_response_body_bytes

        async def buffering(request: Request) -> Response:
            if _declared_length(request) > max_request:
                return _plain(413, b"Request Entity Too Large")
            try:
                await request.read_body(max_request)
            except BodyTooLarge:
                return _plain(413, b"Request Entity Too Large")
            response = await next(request)
            if (
                max_response
                and response.streamed
                and response.status >= 200
                and response.status not in (204, 304)
                and request.method != "HEAD"
            ):
                return await _read_response(response, max_response)
            return response

        return buffering


async def _read_response(response: Response, limit: int) -> Response:
    try:
        body = await response.read_body(limit)
    except BodyTooLarge:
        return _plain(500, b"Internal Server Error")
    except ConnectionError:
        # The upstream went away mid-body (oxy answers a read error with 502).
        return _plain(502, b"Bad Gateway")
    transform = response.transform
    if transform is not None:
        # An inner compress set a coding for the stream; apply it to the
        # whole body now that the gateway sends it from memory.
        response.transform = None
        response.body = transform.feed(body) + transform.end()
    _drop_hop_by_hop(response)
    return response
