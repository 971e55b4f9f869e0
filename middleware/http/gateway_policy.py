"""``gatewayTimeouts`` and ``gatewayRetry``: an HTTPRoute rule's timeouts and retry.

Both implement Gateway API ``HTTPRouteRule.timeouts`` and ``.retry``
(apis/v1/httproute_types.go ``HTTPRouteTimeouts``, ``HTTPRouteRetry``; notes
section 2.9) as middlewares, so a router without them pays nothing. The
Gateway API translation puts ``gatewayTimeouts`` first in a router's chain
and ``gatewayRetry`` last, right before the backend.

``gatewayTimeouts`` (``request``, ``backendRequest``; ``0`` disables one):

* ``request`` is "the maximum duration for a gateway to respond to an HTTP
  request. If the gateway has not been able to respond before this deadline
  is met, the gateway MUST return a timeout error." It runs from the moment
  the chain reaches this middleware (the spec allows starting any time up to
  the end of the client's request) until the response head comes back
  through it, retries and their backoff included; expiry answers 504 at once
  ("bounded by timeouts.request").
* ``backendRequest`` bounds "an individual request from the gateway to a
  backend": each try. With no ``gatewayRetry`` after it in the chain, the one
  try is the rest of the chain. When a ``gatewayRetry`` follows, it takes the
  per-try bound over (through ``_TRY_SCOPE``, a context variable: the chain
  runs in one task) and applies it to each of its tries, so the retry
  sequence as a whole is bounded by ``request`` only. A try that runs out
  becomes a 504 (``error`` set to ``BACKEND_TIMEOUT``), which ``gatewayRetry``
  retries when 504 is one of its ``codes``.
* Order matters only as it reads: a ``gatewayRetry`` placed *before*
  ``gatewayTimeouts`` retries the whole timed exchange instead.

``backendRequest`` runs "to when the full response has been received": a
streamed body still arriving at the try's deadline is cut (``Response.abort``:
504 if its head has not gone out yet, else the client connection closes, the
only way to tell a client a body was cut short). ``request`` bounds the time
to the response head.

``gatewayRetry`` (``codes``, ``attempts``, ``backoff``):

* A try is sent again when its status is one of ``codes`` (whether the
  backend or the gateway produced it), or when the gateway could not get an
  answer (``Response.error``: refused connects, resets) and the method is
  idempotent (RFC 9110 section 9.2.2). The spec says retries SHOULD NOT
  happen "when the request may have been processed"; the exchange reports a
  refused connect and a reset after sending alike, and it has already tried
  other servers on refused connects, so only idempotent methods are retried
  on such errors unless the route lists the code. A 503 because no server
  was available, and our own per-try timeout, count only through ``codes``.
* ``attempts`` retries follow the first try ("in addition to"); 0 disables.
  When they are used up the last response is returned as it is.
* Waits between tries follow Envoy's fully jittered exponential backoff (the
  reference data plane of the Gateway API): before retry k a uniform random
  wait in ``[0, backoff * (2**k - 1))``, capped at ten times ``backoff``.
  No ``backoff`` retries at once (the spec leaves the default to the
  implementation; a route owner who wants spacing says so).
* A request is sent again only while ``request.replayable``: a body that was
  streamed to a server and not kept is never replayed (put ``buffering``
  before this middleware to make bodies replayable). The failed try's
  response body is discarded unread, and the chain after this middleware
  gets back the request as it was (``snapshot``/``restore``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
from collections.abc import Callable

from gateway.config.model import Duration, model
from middleware.contract import BuildContext, Handler, Request, Response

__all__ = [
    "BACKEND_TIMEOUT",
    "REQUEST_TIMEOUT",
    "GatewayRetry",
    "GatewayRetryOptions",
    "GatewayTimeouts",
    "GatewayTimeoutsOptions",
    "backoff_bound",
]

log = logging.getLogger(__name__)

# ``Response.error`` of the 504s made here (outer middlewares such as
# circuitBreaker count them as network errors).
REQUEST_TIMEOUT = "request timeout"
BACKEND_TIMEOUT = "backendRequest timeout"

# Envoy's max_interval default: ten times the base interval.
MAX_BACKOFF_FACTOR = 10
# RFC 9110 section 9.2.2: requests a client may repeat without asking.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


def _bound_body(request: Request, response: Response, deadline: float) -> None:
    """Cut ``response``'s streamed body if it is still arriving at ``deadline``."""
    if not response.streamed:
        return
    loop = asyncio.get_running_loop()
    timer = loop.call_at(deadline, response.abort)
    request.on_done(timer.cancel)


def _timeout_response(cause: str) -> Response:
    return Response(504, body=b"Gateway Timeout\n", error=cause)


class _TryScope:
    """Hands a ``gatewayTimeouts``' per-try bound to a ``gatewayRetry`` after it.

    One per request that has a ``backendRequest``; ``outer`` is the timeout
    around the rest of the chain, which the retry narrows back to
    ``request`` when it claims the scope.
    """

    __slots__ = ("budget", "request_deadline", "outer", "claimed")

    def __init__(self, budget: float, request_deadline: float | None) -> None:
        self.budget = budget
        self.request_deadline = request_deadline
        self.outer: asyncio.Timeout | None = None
        self.claimed = False


_TRY_SCOPE: contextvars.ContextVar[_TryScope | None] = contextvars.ContextVar(
    "sluice_gateway_try_scope", default=None
)


@model
class GatewayTimeoutsOptions:
    request: Duration = 0.0
    backend_request: Duration = 0.0


class GatewayTimeouts:
    key = "gatewayTimeouts"
    options = GatewayTimeoutsOptions

    def build(
        self, options: GatewayTimeoutsOptions, next: Handler, context: BuildContext
    ) -> Handler:
        whole = options.request
        per_try = options.backend_request
        if whole < 0:
            raise ValueError("request: must not be negative")
        if per_try < 0:
            raise ValueError("backendRequest: must not be negative")
        if whole > 0 and per_try > whole:
            # The spec's CEL rule: the request timeout encompasses the backend one.
            raise ValueError(
                f"backendRequest: {per_try:g}s is longer than the request timeout {whole:g}s"
            )
        if whole == 0 and per_try == 0:
            return next
        name = context.name

        async def timeouts(request: Request) -> Response:
            loop = asyncio.get_running_loop()
            now = loop.time()
            request_deadline = now + whole if whole else None
            if not per_try:
                scope = None
                first = request_deadline
            else:
                scope = _TryScope(per_try, request_deadline)
                first = now + per_try
                if request_deadline is not None:
                    first = min(first, request_deadline)
            token = _TRY_SCOPE.set(scope)
            try:
                async with asyncio.timeout_at(first) as bound:
                    if scope is not None:
                        scope.outer = bound
                    response = await next(request)
                if scope is not None and not scope.claimed and first is not None:
                    _bound_body(request, response, first)  # the one try's body too
                return response
            except TimeoutError:
                if not bound.expired():
                    raise
                whole_expired = request_deadline is not None and loop.time() >= request_deadline
                cause = REQUEST_TIMEOUT if whole_expired or scope is None else BACKEND_TIMEOUT
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("middleware %s: %s for %s", name, cause, request.target)
                return _timeout_response(cause)
            finally:
                _TRY_SCOPE.reset(token)

        return timeouts


@model
class GatewayRetryOptions:
    codes: tuple[int, ...] = ()
    attempts: int = 1
    backoff: Duration = 0.0


def backoff_bound(base: float, retry: int) -> float:
    """The upper end of the jittered wait before retry number ``retry`` (from 1)."""
    return min(base * ((1 << retry) - 1), base * MAX_BACKOFF_FACTOR)


class GatewayRetry:
    key = "gatewayRetry"
    options = GatewayRetryOptions

    def build(self, options: GatewayRetryOptions, next: Handler, context: BuildContext) -> Handler:
        attempts = options.attempts
        if attempts < 0:
            raise ValueError(f"attempts: must not be negative, got {attempts}")
        for code in options.codes:
            # HTTPRouteRetryStatusCode: Minimum=400, Maximum=599.
            if not 400 <= code <= 599:
                raise ValueError(f"codes: {code} is not an HTTP status from 400 to 599")
        if options.backoff < 0:
            raise ValueError("backoff: must not be negative")
        if attempts == 0:
            return next
        return _retrying(next, frozenset(options.codes), attempts, options.backoff, context.name)


def _retrying(
    next: Handler,
    codes: frozenset[int],
    attempts: int,
    backoff: float,
    name: str,
    rand: Callable[[], float] = random.random,
) -> Handler:
    def wanted(request: Request, response: Response) -> bool:
        if response.status in codes:
            return True
        error = response.error
        return (
            bool(error)
            and error != BACKEND_TIMEOUT
            and response.status != 503
            and request.method in IDEMPOTENT
        )

    async def one_try(request: Request, budget: float) -> Response:
        if not budget:
            return await next(request)
        try:
            async with asyncio.timeout(budget) as bound:
                return await next(request)
        except TimeoutError:
            if not bound.expired():
                raise
            return _timeout_response(BACKEND_TIMEOUT)

    async def retry(request: Request) -> Response:
        budget = 0.0
        scope = _TRY_SCOPE.get()
        if scope is not None and not scope.claimed:
            scope.claimed = True
            budget = scope.budget
            if scope.outer is not None:
                # From here on the outer timeout bounds the whole sequence only.
                scope.outer.reschedule(scope.request_deadline)
        state = request.snapshot()
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await one_try(request, budget)
        retries = 0
        while retries < attempts and wanted(request, response) and request.replayable:
            retries += 1
            response.discard()
            if backoff:
                await asyncio.sleep(rand() * backoff_bound(backoff, retries))
            request.restore(state)
            started = loop.time()
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "middleware %s: retry %d after %d for %s",
                    name,
                    retries,
                    response.status,
                    request.target,
                )
            response = await one_try(request, budget)
        if budget:
            _bound_body(request, response, started + budget)  # the last try's body
        return response

    return retry
