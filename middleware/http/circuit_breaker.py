"""``circuitBreaker``: stop forwarding while an expression says the service is failing.

Semantics are oxy ``cbreaker``'s, which Traefik uses:

- standby: every request goes through and its response is recorded; at
  most once per ``checkPeriod`` (on a response) the ``expression`` is
  evaluated, and when it holds the breaker trips and the metrics start over;
- tripped: for ``fallbackDuration`` every request is answered
  ``responseCode`` (default 503, with its status text) without forwarding;
- recovering: for ``recoveryDuration`` a share of requests growing linearly
  from 0 to one half goes through (oxy's ratio controller), the others get
  the fallback; the expression holding again re-trips; once the duration is
  over the breaker is back in standby.

Metrics (``RollingMetrics``) cover a rolling window of 10 buckets of one
second, as oxy's counters do (oxy keeps latencies over a longer minute-long
histogram; one window for everything keeps the expression's inputs
consistent). A network error is a response the gateway made because no
server could be reached or one failed before answering (``response.error``,
or a 502/504 not streamed from a server, which oxy also counts). Latency runs
from the request reaching this middleware to the response head coming back,
with 1 % precision (HDR histogram's two significant figures, as oxy's).

State is per built middleware, i.e. per chain in a configuration; a reload
starts in standby.
"""

from __future__ import annotations

import enum
import http
import logging
import time
from functools import partial

from gateway.config.model import Duration, model
from middleware.contract import BuildContext, Filter, Handler, Request, Response
from middleware.http.breaker_expression import Condition, parse

log = logging.getLogger(__name__)

BUCKETS = 10
BUCKET_SECONDS = 1.0


@model
class CircuitBreakerOptions:
    expression: str = ""
    check_period: Duration = 0.1
    fallback_duration: Duration = 10.0
    recovery_duration: Duration = 10.0
    response_code: int = 503


# -- metrics -----------------------------------------------------------------------


class _Bucket:
    __slots__ = ("tick", "total", "errors", "codes", "latencies")

    def __init__(self) -> None:
        self.tick = -1
        self.total = 0
        self.errors = 0
        self.codes: dict[int, int] = {}
        # Microseconds rounded to two significant figures -> count.
        self.latencies: dict[int, int] = {}


def _quantize(us: int) -> int:
    scale = 1
    while us >= 100:
        us //= 10
        scale *= 10
    return us * scale


class RollingMetrics:
    """Response counts, status codes and latencies over the last 10 seconds."""

    __slots__ = ("buckets", "latency")

    def __init__(self, *, latency: bool = True) -> None:
        self.buckets = [_Bucket() for _ in range(BUCKETS)]
        # Latencies are only kept when the expression asks for them.
        self.latency = latency

    def record(self, now: float, status: int, network_error: bool, seconds: float) -> None:
        tick = int(now // BUCKET_SECONDS)
        bucket = self.buckets[tick % BUCKETS]
        if bucket.tick != tick:
            bucket.tick = tick
            bucket.total = bucket.errors = 0
            bucket.codes = {}
            bucket.latencies = {}
        bucket.total += 1
        if network_error:
            bucket.errors += 1
        codes = bucket.codes
        codes[status] = codes.get(status, 0) + 1
        if self.latency:
            key = _quantize(max(0, int(seconds * 1e6)))
            latencies = bucket.latencies
            latencies[key] = latencies.get(key, 0) + 1

    def reset(self) -> None:
        for bucket in self.buckets:
            bucket.tick = -1

    def view(self, now: float) -> MetricsView:
        """The window ending at ``now``, as the expression reads it."""
        oldest = int(now // BUCKET_SECONDS) - BUCKETS + 1
        return MetricsView([b for b in self.buckets if b.tick >= oldest])


class MetricsView:
    """Sums over the live buckets (implements ``breaker_expression.Metrics``)."""

    __slots__ = ("live",)

    def __init__(self, live: list[_Bucket]) -> None:
        self.live = live

    def total(self) -> int:
        return sum(b.total for b in self.live)

    def network_error_ratio(self) -> float:
        total = self.total()
        return sum(b.errors for b in self.live) / total if total else 0.0

    def response_code_ratio(self, start_a: int, end_a: int, start_b: int, end_b: int) -> float:
        a = b = 0
        for bucket in self.live:
            for code, count in bucket.codes.items():
                if start_a <= code < end_a:
                    a += count
                if start_b <= code < end_b:
                    b += count
        return a / b if b else 0.0

    def latency_at_quantile_ms(self, quantile: float) -> float:
        merged: dict[int, int] = {}
        for bucket in self.live:
            for us, count in bucket.latencies.items():
                merged[us] = merged.get(us, 0) + count
        total = sum(merged.values())
        if not total:
            return 0.0
        # HDR histogram's ValueAtQuantile: the first value whose cumulative
        # count reaches the rank (at least the first value).
        rank = max(1, int(quantile / 100 * total + 0.5))
        seen = 0
        for us in sorted(merged):
            seen += merged[us]
            if seen >= rank:
                return float(us // 1000)
        return float(max(merged) // 1000)


# -- the breaker ---------------------------------------------------------------------


class State(enum.Enum):
    STANDBY = "standby"
    TRIPPED = "tripped"
    RECOVERING = "recovering"


def network_error(response: Response) -> bool:
    """Whether the gateway made ``response`` because the server failed at the network level."""
    return bool(response.error) or (not response.streamed and response.status in (502, 504))


class _BreakerFilter(Filter):
    __slots__ = (
        "name",
        "condition",
        "metrics",
        "check_period",
        "fallback_duration",
        "recovery_duration",
        "code",
        "body",
        "state",
        "until",
        "next_check",
        "ramp_start",
        "allowed",
        "denied",
        "started",
    )

    def __init__(self, name: str, condition: Condition, options: CircuitBreakerOptions) -> None:
        self.name = name
        self.condition = condition
        self.metrics = RollingMetrics(latency="LatencyAtQuantileMS" in condition.functions)
        # As Traefik: a duration that is not positive means the default.
        defaults = CircuitBreakerOptions()
        self.check_period = _positive(options.check_period, defaults.check_period)
        self.fallback_duration = _positive(options.fallback_duration, defaults.fallback_duration)
        self.recovery_duration = _positive(options.recovery_duration, defaults.recovery_duration)
        self.code = options.response_code
        self.body = _status_text(options.response_code)
        self.state = State.STANDBY
        self.until = 0.0
        self.next_check = 0.0
        self.ramp_start = 0.0
        self.allowed = 0
        self.denied = 0
        # Request -> when it reached this middleware, until its response head
        # comes back (or the exchange ends without one).
        self.started: dict[Request, float] = {}

    def request(self, request: Request) -> Response | None:
        now = time.monotonic()
        if self.state is not State.STANDBY and self._hold_back(now):
            return Response(self.code, body=self.body)
        started = self.started
        started[request] = now
        request.on_done(partial(self._forget, request))
        return None

    def _forget(self, request: Request) -> None:
        self.started.pop(request, None)

    def response(self, request: Request, response: Response) -> None:
        start = self.started.pop(request, None)
        if start is None:
            return
        now = time.monotonic()
        self.metrics.record(now, response.status, network_error(response), now - start)
        if now < self.next_check:
            return
        self.next_check = now + self.check_period
        if self.state is State.TRIPPED:
            return
        if self.condition.test(self.metrics.view(now)):
            self._trip(now)

    def _hold_back(self, now: float) -> bool:
        """Whether this request gets the fallback (tripped or recovering)."""
        if self.state is State.TRIPPED:
            if now < self.until:
                return True
            self.state = State.RECOVERING
            self.until = now + self.recovery_duration
            self.ramp_start = now
            self.allowed = self.denied = 0
            log.info("middleware %s: circuit breaker recovering", self.name)
        if now > self.until:
            self.state = State.STANDBY
            log.info("middleware %s: circuit breaker back in standby", self.name)
            return False
        # oxy's ratio controller: let this one through if the share let
        # through would stay under the target, which grows from 0 to 1/2.
        target = 0.5 * (now - self.ramp_start) / self.recovery_duration
        if (self.allowed + 1) / (self.allowed + self.denied + 1) < target:
            self.allowed += 1
            return False
        self.denied += 1
        return True

    def _trip(self, now: float) -> None:
        self.state = State.TRIPPED
        self.until = now + self.fallback_duration
        self.metrics.reset()
        log.warning(
            "middleware %s: circuit breaker tripped (%s) for %gs",
            self.name,
            self.condition.text,
            self.fallback_duration,
        )


def _positive(value: float, default: float) -> float:
    return value if value > 0 else default


def _status_text(code: int) -> bytes:
    try:
        return http.HTTPStatus(code).phrase.encode()
    except ValueError:
        return b""


class CircuitBreaker:
    key = "circuitBreaker"
    options = CircuitBreakerOptions

    def build(self, options: CircuitBreakerOptions, next: Handler, context: BuildContext) -> Filter:
        try:
            condition = parse(options.expression)
        except ValueError as exc:
            raise ValueError(f"expression: {exc}") from None
        if not 200 <= options.response_code <= 599:
            raise ValueError(
                f"responseCode: must be an HTTP status from 200 to 599, got {options.response_code}"
            )
        return _BreakerFilter(context.name, condition, options)
