"""``ipAllowList``: admit requests whose source IP is in ``sourceRange``.

Traefik v3's rules: the source is the peer address, or what ``ipStrategy``
picks from ``X-Forwarded-For`` (``depth``, else ``excludedIPs``; see
``middleware.sources``), and X-Forwarded-For counts only from clients in the
entry point's ``forwardedHeaders.trustedIPs``. A request with no source (a
``depth`` past the end of the header) is refused. Refusals answer
``rejectStatusCode`` (403 when unset or 0) with the status text as body.

Checked at load: an empty ``sourceRange`` (Traefik refuses to build the
middleware), each range, the strategy, and the status code, which must be a
known final status (Traefik takes any code with a status text; a 1xx is not a
final response, so Sluice refuses it, and 204/304 go without a body).
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from gateway.config.model import model
from middleware.contract import BuildContext, Filter, Handler, Request, Response
from middleware.sources import IPStrategy, NetworkSet, SourceOf, ip_source

log = logging.getLogger(__name__)


@model
class IPAllowListOptions:
    REQUIRED = ("source_range",)

    source_range: tuple[str, ...] = ()
    ip_strategy: IPStrategy | None = None
    reject_status_code: int = 0


class _IPAllowList(Filter):
    __slots__ = ("allowed", "source", "status", "body", "name")

    def __init__(
        self, allowed: NetworkSet, source: SourceOf, status: int, body: bytes, name: str
    ) -> None:
        self.allowed = allowed
        self.source = source
        self.status = status
        self.body = body
        self.name = name

    def request(self, request: Request) -> Response | None:
        ip = self.source(request)
        if ip in self.allowed:
            return None
        if log.isEnabledFor(logging.DEBUG):
            log.debug("middleware %s: rejecting IP %r", self.name, ip)
        return Response(self.status, body=self.body)


def _status(code: int) -> int:
    if code == 0:
        return 403
    try:
        status = HTTPStatus(code)
    except ValueError:
        raise ValueError(f"rejectStatusCode: invalid HTTP status code {code}") from None
    if status < 200:
        raise ValueError(f"rejectStatusCode: {code} is not a final status")
    return code


class IPAllowList:
    key = "ipAllowList"
    options = IPAllowListOptions

    def build(self, options: IPAllowListOptions, next: Handler, context: BuildContext) -> Filter:
        if not options.source_range:
            raise ValueError("sourceRange: is empty; list the IP addresses or CIDR ranges to admit")
        allowed = NetworkSet.of(options.source_range, "sourceRange")
        source = ip_source(options.ip_strategy)
        status = _status(options.reject_status_code)
        body = b"" if status in (204, 304) else HTTPStatus(status).phrase.encode("ascii")
        return _IPAllowList(allowed, source, status, body, context.name)
