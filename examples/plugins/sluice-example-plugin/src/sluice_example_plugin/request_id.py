"""``requestId``: give every request an ID, pass it upstream, and echo it to the client.

A request arriving with one well-formed ID in ``headerName`` keeps it (a
caller's trace continues); otherwise the middleware generates a UUID4 and sets
it, replacing a malformed or repeated header. The ID goes upstream in the
request and, with ``responseHeader`` on, back to the client in the response,
so both sides can quote it in a bug report.

This is a ``Filter``: it only edits heads, so it runs inline in the gateway's
protocol callbacks with no task per request. Everything that depends on the
options is worked out once in ``build``; the filter keeps no per-request
state (the ID lives in the request's own headers).
"""

from __future__ import annotations

import re
import uuid
from typing import ClassVar

from gateway.config.model import model
from middleware.contract import BuildContext, Filter, Handler, Headers, Request, Response

# RFC 9110 section 5.6.2: a field name is a token.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Fields that frame or route the message: overwriting them would break the exchange.
_RESERVED = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"}
)


@model
class RequestIdOptions:
    """The options under ``requestId:``; camelCase in YAML (``headerName``)."""

    header_name: str = "X-Request-Id"
    # Keep an ID the client (or a proxy in front) sent; off: always generate.
    trust_incoming: bool = True
    # Longest incoming ID kept; longer ones are replaced (log lines stay short).
    max_length: int = 128
    # Answer 400 to requests without one well-formed ID instead of generating one.
    reject_missing: bool = False
    # Copy the ID onto the response too.
    response_header: bool = True


class _RequestIdFilter(Filter):
    """Sets the request's ID; does not touch responses (``responseHeader: false``)."""

    __slots__ = ("name", "trust", "valid", "reject", "rejection")

    def __init__(self, options: RequestIdOptions) -> None:
        self.name = options.header_name
        self.trust = options.trust_incoming
        # Visible ASCII only: an ID ends up in log lines, which must not be
        # split or coloured by whatever a client sends.
        self.valid = re.compile(rf"[\x21-\x7e]{{1,{options.max_length}}}").fullmatch
        self.reject = options.reject_missing
        self.rejection = f"missing or malformed {self.name} header\n".encode()

    def request(self, request: Request) -> Response | None:
        headers = request.headers
        if self.trust:
            sent = headers.get_all(self.name)
            if len(sent) == 1 and self.valid(sent[0]):
                return None
        if self.reject:
            # Answered here: the request goes no further down the chain.
            return Response(
                400,
                headers=Headers([(b"Content-Type", b"text/plain; charset=utf-8")]),
                body=self.rejection,
            )
        headers.set(self.name, str(uuid.uuid4()))
        return None


class _EchoingRequestIdFilter(_RequestIdFilter):
    """Also copies the ID onto the response.

    A separate class because the gateway runs ``response`` hooks only for
    filters that override it: without the echo there is nothing to run.
    """

    __slots__ = ()

    def response(self, request: Request, response: Response) -> None:
        # Runs for the upstream's response and for ones the gateway or an
        # inner middleware generated (a 502, a 401), so every answer carries it.
        value = request.headers.get(self.name)
        if value is not None:
            response.headers.set(self.name, value)


class RequestId:
    """The middleware type the ``sluice.middleware`` entry point names."""

    # ClassVar, as the contract's MiddlewareType protocol declares them, so
    # mypy can check this class against it.
    key: ClassVar[str] = "requestId"
    options: ClassVar[type[RequestIdOptions]] = RequestIdOptions

    def build(self, options: RequestIdOptions, next: Handler, context: BuildContext) -> Filter:
        # Types and unknown keys were checked by the decoder; these are the
        # checks only this middleware knows. A ValueError "<key>: <reason>"
        # becomes a configuration error naming the middleware, file and line,
        # and the previous configuration keeps serving.
        name = options.header_name
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"headerName: {name!r} is not a valid header name")
        if name.lower() in _RESERVED:
            raise ValueError(f"headerName: {name} frames the message and cannot carry an ID")
        if not 1 <= options.max_length <= 1024:
            raise ValueError(f"maxLength: {options.max_length} is not between 1 and 1024")
        if options.reject_missing and not options.trust_incoming:
            raise ValueError(
                "rejectMissing: needs trustIncoming, or no incoming ID could ever be kept"
            )
        if options.response_header:
            return _EchoingRequestIdFilter(options)
        return _RequestIdFilter(options)
