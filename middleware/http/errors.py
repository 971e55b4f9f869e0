"""``errors``: answer chosen statuses with a page fetched from another service.

Traefik v3's ``errors`` middleware (``pkg/middlewares/customerrors``). When the
response coming back through the chain has a status in ``status``, its head and
body are dropped and the client gets the body and headers of ``GET query`` from
``service`` instead, under the caught status, or under the status
``statusRewrites`` maps it to (v3.4+). ``query`` may hold ``{status}`` (the
status sent), ``{originalStatus}`` (the caught one, before any rewrite) and
``{url}`` (the request target, query-escaped).

Invariants: the status sets and the rewrite table are built once in ``build``;
per request, a response whose status is not caught costs one set lookup. The
upstream body of a caught response is never read: the new response is not
streamed, so the exchange drops the upstream connection.
"""

from __future__ import annotations

import http
import re
from collections.abc import Mapping
from urllib.parse import quote_plus

from gateway.config.errors import ConfigError
from gateway.config.model import empty_map, model
from middleware.contract import BuildContext, Handler, Headers, Request, Response, ServiceHandle

# Status codes are three digits (RFC 9110 section 15). Traefik takes any
# integer; a range such as "400-600" is common in the wild, so the upper end
# may pass 599, but nothing outside 100-999 can ever match.
_LOWEST, _HIGHEST = 100, 999
_RANGE = re.compile(r"(\d{1,4})(?:\s*-\s*(\d{1,4}))?", re.ASCII)


@model
class ErrorsOptions:
    # Traefik lists service as optional, yet fails to build without one.
    REQUIRED = ("service",)

    status: tuple[str, ...] = ()
    status_rewrites: Mapping[str, str] = empty_map()
    service: str = ""
    query: str = ""


def parse_ranges(items: tuple[str, ...] | list[str], key: str) -> list[tuple[int, int]]:
    """Traefik's status syntax: "500", "500-599", and comma-separated lists of those."""
    ranges: list[tuple[int, int]] = []
    for item in items:
        for part in str(item).split(","):
            text = part.strip()
            match = _RANGE.fullmatch(text)
            if match is None:
                raise ValueError(f"{key}: {text!r} is not a status code or a range like 500-599")
            low = int(match[1])
            high = int(match[2] or low)
            if not _LOWEST <= low <= high <= _HIGHEST:
                raise ValueError(
                    f"{key}: {text!r} is not a range of status codes "
                    f"(low <= high, within {_LOWEST}-{_HIGHEST})"
                )
            ranges.append((low, high))
    return ranges


def _codes(ranges: list[tuple[int, int]]) -> set[int]:
    return {code for low, high in ranges for code in range(low, high + 1)}


def parse_rewrites(rewrites: Mapping[str, str]) -> dict[int, int]:
    """Each caught code's replacement; overlapping keys are an error.

    Traefik keeps the rewrites in a Go map and takes the first match while
    iterating it, so with overlapping keys the result changes from run to run;
    refusing them is the only consistent reading.
    """
    table: dict[int, int] = {}
    owner: dict[int, str] = {}
    for source, target in rewrites.items():
        key = f"statusRewrites.{source}"
        try:
            to = int(str(target).strip())
        except ValueError:
            raise ValueError(f"{key}: {target!r} is not a status code") from None
        # A 1xx is an interim response: it cannot carry the page.
        if not 200 <= to <= 599:
            raise ValueError(f"{key}: {to} is not a final status code (200-599)")
        for code in sorted(_codes(parse_ranges([source], key))):
            if code in owner:
                raise ValueError(f"{key}: overlaps statusRewrites.{owner[code]} at {code}")
            owner[code] = source
            table[code] = to
    return table


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode() + b"\n"
    except ValueError:
        return b""


_PLAIN = (b"Content-Type", b"text/plain; charset=utf-8")


class _ErrorPages:
    """The built middleware: a handler, since it awaits the page after ``next``."""

    __slots__ = ("next", "caught", "rewrites", "service", "query", "uses_url")

    def __init__(
        self,
        next: Handler,
        caught: frozenset[int],
        rewrites: dict[int, int],
        service: ServiceHandle,
        query: str,
    ) -> None:
        self.next = next
        self.caught = caught
        self.rewrites = rewrites
        self.service = service
        self.query = query
        self.uses_url = "{url}" in query

    async def __call__(self, request: Request) -> Response:
        # {url} names what the client asked for: taken before inner middleware
        # (stripPrefix, replacePath) rewrite the request in place.
        url = request.target if self.uses_url else ""
        response = await self.next(request)
        original = response.status
        if original not in self.caught:
            return response
        status = self.rewrites.get(original, original)
        # The upstream body will never be sent: stop receiving it now.
        response.discard()
        target = (
            self.query.replace("{status}", str(status))
            .replace("{originalStatus}", str(original))
            .replace("{url}", quote_plus(url, safe=""))
        )
        page = await self.service.fetch(request, target)
        if page.error:
            # The page could not be fetched (no server, connection failed).
            # Traefik then relays the error service's own failure text under
            # the caught status; the caught status's reason phrase says the
            # same without naming a status the client was not sent.
            return Response(status, headers=Headers([_PLAIN]), body=_reason(status))
        # Whatever the error service answered (even its own 404) is the page,
        # under the caught status, as Traefik's codeModifier does.
        return Response(status, headers=page.headers, body=page.body)


class Errors:
    key = "errors"
    options = ErrorsOptions

    def build(self, options: ErrorsOptions, next: Handler, context: BuildContext) -> Handler:
        caught = frozenset(_codes(parse_ranges(options.status, "status")))
        rewrites = parse_rewrites(options.status_rewrites)
        try:
            service = context.service(options.service)
        except ConfigError as exc:
            bare = context.name.partition("@")[0]
            raise ConfigError(exc.message, path=f"http.middlewares.{bare}.errors.service") from None
        # Traefik always asks for an absolute path: "/" + query without its leading "/".
        query = "/" + options.query.removeprefix("/")
        return _ErrorPages(next, caught, rewrites, service, query)
