"""``retry``: send a request again when the server could not be reached.

Traefik retries only network-level failures: an attempt that got any answer
from the server, whatever its status, is final. Here that is a response with
``error`` set (the 502/504 the gateway makes when a connection is refused,
reset or timed out before a response head). A 503 the gateway made because
the service had no server available is final too, as in Traefik, where that
answer never reaches the proxy that arms the retry. A request is sent again
only while ``request.replayable``: once any of a streamed body went to a
server it cannot be replayed.

``attempts`` counts tries, not retries (``attempts: 4`` makes at most four).
Between tries it waits as Traefik's ``cenkalti/backoff`` ExponentialBackOff
does: ``initialInterval`` times ``2 ** (k / (attempts - 1))`` for the k-th
wait, each randomised by +/-50 %, so the interval at most doubles over the
whole series; no ``initialInterval`` retries at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from gateway.config.model import Duration, model
from middleware.contract import BuildContext, Handler, Request, Response

log = logging.getLogger(__name__)

# cenkalti/backoff's DefaultRandomizationFactor and DefaultMaxInterval.
RANDOMIZATION = 0.5
MAX_INTERVAL = 60.0


@model
class RetryOptions:
    attempts: int = 0
    initial_interval: Duration = 0.0


class Backoff:
    """The waits between tries, as Traefik configures cenkalti/backoff."""

    __slots__ = ("current", "multiplier", "rand")

    def __init__(
        self, initial: float, attempts: int, rand: Callable[[], float] = random.random
    ) -> None:
        self.current = initial
        # Chosen so the interval grows to twice the initial one by the last try.
        self.multiplier = 2 ** (1 / (attempts - 1)) if attempts > 1 else 1.0
        self.rand = rand

    def next(self) -> float:
        """The next wait in seconds."""
        current = self.current
        if current <= 0:
            return 0.0
        delta = RANDOMIZATION * current
        wait = current - delta + self.rand() * 2 * delta
        self.current = min(current * self.multiplier, MAX_INTERVAL)
        return wait


def retryable(response: Response) -> bool:
    """Whether ``response`` says the server was never reached or never answered."""
    return bool(response.error) and response.status != 503


class Retry:
    key = "retry"
    options = RetryOptions

    def build(self, options: RetryOptions, next: Handler, context: BuildContext) -> Handler:
        attempts = options.attempts
        if attempts < 1:
            raise ValueError(f"attempts: must be at least 1, got {attempts}")
        if options.initial_interval < 0:
            raise ValueError("initialInterval: must not be negative")
        if attempts == 1:
            return next
        initial = options.initial_interval
        name = context.name

        async def retry(request: Request) -> Response:
            state = request.snapshot()
            response = await next(request)
            tried = 1
            backoff: Backoff | None = None
            while tried < attempts and retryable(response) and request.replayable:
                if initial > 0:
                    if backoff is None:
                        backoff = Backoff(initial, attempts)
                    await asyncio.sleep(backoff.next())
                tried += 1
                request.restore(state)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("middleware %s: attempt %d for %s", name, tried, request.target)
                response = await next(request)
            return response

        return retry
