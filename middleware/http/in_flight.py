"""``inFlightReq``: at most ``amount`` requests in progress per source.

Traefik builds this on oxy's ``connlimit``: a request arriving while its
source already has ``amount`` requests in flight is answered ``429`` with
``max connections reached: <amount>``; otherwise it is counted until the
exchange ends. "Ends" is ``Request.on_done``: after the last byte of the
response went to the client, or the client or upstream went away, never
when the response head merely came back (a slow download still counts).

With no ``sourceCriterion`` set the source is the request's host, as in
Traefik (unlike rateLimit, which defaults to the client address).
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.config.model import model
from middleware.contract import BuildContext, Filter, Handler, Request, Response
from middleware.sources import SourceCriterion, SourceOf, criterion_source


@model
class InFlightReqOptions:
    amount: int = 0
    source_criterion: SourceCriterion | None = None


class _InFlightFilter(Filter):
    __slots__ = ("source_of", "amount", "counts", "body")

    def __init__(self, source_of: SourceOf, amount: int) -> None:
        self.source_of = source_of
        self.amount = amount
        # Sources with requests in flight only: an idle source has no entry.
        self.counts: dict[str, int] = {}
        self.body = b"max connections reached: %d" % amount

    def request(self, request: Request) -> Response | None:
        source = self.source_of(request)
        counts = self.counts
        held = counts.get(source, 0)
        if held >= self.amount:
            return Response(429, body=self.body)
        counts[source] = held + 1
        request.on_done(self._releaser(source))
        return None

    def _releaser(self, source: str) -> Callable[[], None]:
        counts = self.counts

        def release() -> None:
            left = counts[source] - 1
            if left:
                counts[source] = left
            else:
                del counts[source]

        return release


class InFlightReq:
    key = "inFlightReq"
    options = InFlightReqOptions

    def build(self, options: InFlightReqOptions, next: Handler, context: BuildContext) -> Filter:
        # Traefik takes 0 (its default) and then refuses every request; a
        # limit nothing can pass is a configuration mistake, so say so.
        if options.amount < 1:
            raise ValueError("amount: must be at least 1")
        criterion = options.source_criterion
        if criterion is None or (
            criterion.ip_strategy is None
            and not criterion.request_header_name
            and not criterion.request_host
        ):
            criterion = SourceCriterion(request_host=True)
        return _InFlightFilter(criterion_source(criterion), options.amount)
