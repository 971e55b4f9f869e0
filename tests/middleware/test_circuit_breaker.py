"""circuitBreaker through a running gateway: tripping, fallback, recovery, re-tripping."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine

import pytest

from middleware.http.circuit_breaker import RollingMetrics
from tests.backends import RecordingBackend, Seen, closed_port, default_response, get, http_request
from tests.harness import start_gateway

SERVER_ERRORS = "ResponseCodeRatio(500, 600, 0, 600) > 0.5"


class Switchable:
    """A backend answering ``status`` (changeable), optionally after a delay."""

    def __init__(self, status: int = 500, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.backend = RecordingBackend(responder=self.respond)

    def respond(self, seen: Seen) -> bytes | Coroutine[None, None, bytes]:
        if self.delay:
            return self._later(seen)
        return self._answer(seen)

    async def _later(self, seen: Seen) -> bytes:
        await asyncio.sleep(self.delay)  # the backend is slow by design
        return self._answer(seen)

    def _answer(self, seen: Seen) -> bytes:
        if self.status == 200:
            return default_response(seen)
        return b"HTTP/1.1 %d Oops\r\nContent-Length: 4\r\n\r\noops" % self.status

    @property
    def hits(self) -> int:
        return len(self.backend.requests)


def config(url: str, options: dict[str, object]) -> str:
    """Router ``app.test`` behind circuitBreaker ``cb``."""
    return f"""http:
  routers:
    app:
      rule: Host(`app.test`)
      service: app
      middlewares: [cb]
  services:
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
        passiveHealthCheck: {{maxFailedAttempts: 1000}}
  middlewares:
    cb:
      circuitBreaker: {json.dumps(options)}
"""


@pytest.fixture
async def switchable():
    s = Switchable()
    await s.backend.start()
    yield s
    await s.backend.close()


async def status(port: int) -> int:
    return (await http_request(port, get("app.test"))).status


async def test_trips_on_server_errors_and_recovers(tmp_path, switchable):
    """500s trip the breaker: 503 without forwarding for fallbackDuration, then traffic comes
    back through recovery once the server is healthy."""
    options = {
        "expression": SERVER_ERRORS,
        "fallbackDuration": "300ms",
        "recoveryDuration": "300ms",
    }
    gw = await start_gateway(tmp_path, config(switchable.backend.url, options))
    try:
        port = gw.port()
        assert await status(port) == 500
        tripped = time.monotonic()
        fallback = await http_request(port, get("app.test"))
        assert (fallback.status, fallback.body) == (503, b"Service Unavailable")
        assert [await status(port) for _ in range(5)] == [503] * 5
        assert switchable.hits == 1
        switchable.status = 200
        seen: list[int] = []
        deadline = time.monotonic() + 5
        while seen[-5:] != [200] * 5 and time.monotonic() < deadline:
            seen.append(await status(port))
            if seen[-1] == 200 and seen.count(200) == 1:
                first_through = time.monotonic() - tripped
        assert seen[-5:] == [200] * 5, seen
        assert set(seen) <= {200, 503}
        assert first_through >= 0.3
    finally:
        await gw.stop()


async def test_network_errors_trip_with_the_configured_code(tmp_path):
    """NetworkErrorRatio counts the gateway's 502s; the fallback answers ``responseCode``."""
    url = f"http://127.0.0.1:{await closed_port()}"
    options = {"expression": "NetworkErrorRatio() > 0.5", "responseCode": 418}
    gw = await start_gateway(tmp_path, config(url, options))
    try:
        assert await status(gw.port()) == 502
        reply = await http_request(gw.port(), get("app.test"))
        assert (reply.status, reply.body) == (418, b"I'm a Teapot")
    finally:
        await gw.stop()


async def test_latency_quantile_trips(tmp_path):
    """LatencyAtQuantileMS measures the time to the response head."""
    slow = Switchable(status=200, delay=0.05)
    await slow.backend.start()
    gw = await start_gateway(
        tmp_path, config(slow.backend.url, {"expression": "LatencyAtQuantileMS(50.0) > 30"})
    )
    try:
        assert await status(gw.port()) == 200
        assert await status(gw.port()) == 503
        assert slow.hits == 1
    finally:
        await gw.stop()
        await slow.backend.close()


async def test_fast_responses_do_not_trip_on_latency(tmp_path, switchable):
    """Responses under the latency bound leave the breaker in standby."""
    switchable.status = 200
    options = {"expression": "LatencyAtQuantileMS(50.0) > 500", "checkPeriod": "1ms"}
    gw = await start_gateway(tmp_path, config(switchable.backend.url, options))
    try:
        assert [await status(gw.port()) for _ in range(10)] == [200] * 10
    finally:
        await gw.stop()


async def test_failing_recovery_trips_again(tmp_path, switchable):
    """While recovering, a request let through that fails again re-trips the breaker, so a
    dead server only ever sees a trickle."""
    options = {
        "expression": SERVER_ERRORS,
        "checkPeriod": "5ms",
        "fallbackDuration": "200ms",
        "recoveryDuration": "400ms",
    }
    gw = await start_gateway(tmp_path, config(switchable.backend.url, options))
    try:
        port = gw.port()
        codes: list[int] = []
        start = time.monotonic()
        while time.monotonic() - start < 1.2:
            codes.append(await status(port))
        # Each cycle: one 500 trips it, 200 ms of fallback, one let through in recovery.
        assert 2 <= codes.count(500) <= 10, (codes.count(500), len(codes))
        assert codes.count(500) == switchable.hits
        assert codes.count(503) > 10 * codes.count(500)
    finally:
        await gw.stop()


async def test_expression_is_checked_at_most_once_per_check_period(tmp_path, switchable):
    """After a check, failures do not trip the breaker until checkPeriod has passed."""
    switchable.status = 200
    options = {"expression": SERVER_ERRORS, "checkPeriod": "1m"}
    gw = await start_gateway(tmp_path, config(switchable.backend.url, options))
    try:
        assert await status(gw.port()) == 200
        switchable.status = 500
        assert [await status(gw.port()) for _ in range(10)] == [500] * 10
        assert switchable.hits == 11
    finally:
        await gw.stop()


BAD_OPTIONS = {
    "parse-error": (
        {"expression": "NetworkErrorRatio() >> 0.5"},
        "circuitBreaker: expression: column 22: expected a number after '>'",
    ),
    "empty": ({}, "circuitBreaker: expression: column 1: empty expression"),
    "response-code": (
        {"expression": SERVER_ERRORS, "responseCode": 99},
        "circuitBreaker: responseCode: must be an HTTP status from 200 to 599, got 99",
    ),
}


async def test_invalid_options_are_rejected_at_load(tmp_path, switchable):
    """A bad expression or code is a load error naming middleware, key, column and line."""
    good = config(switchable.backend.url, {"expression": SERVER_ERRORS})
    gw = await start_gateway(tmp_path, good)
    line = good.splitlines().index("    cb:") + 1
    switchable.status = 200
    try:
        for case, (options, message) in BAD_OPTIONS.items():
            errors = await gw.reload(config(switchable.backend.url, options), expect_ok=False)
            text = str(errors[0])  # type: ignore[index]
            assert message in text, (case, text)
            assert f"dynamic.yml:{line}: http.middlewares.cb" in text, (case, text)
            assert await status(gw.port()) == 200
    finally:
        await gw.stop()


def test_metrics_window_rolls_over_ten_seconds():
    """Counts older than the 10-second window no longer count."""
    metrics = RollingMetrics()
    metrics.record(100.2, 500, False, 0.01)
    metrics.record(105.0, 200, True, 0.03)
    view = metrics.view(105.5)
    assert view.response_code_ratio(500, 600, 0, 600) == 0.5
    assert view.network_error_ratio() == 0.5
    assert view.latency_at_quantile_ms(50) == 10
    assert view.latency_at_quantile_ms(99) == 30
    later = metrics.view(110.5)
    assert later.response_code_ratio(500, 600, 0, 600) == 0.0
    assert later.network_error_ratio() == 1.0
    metrics.reset()
    assert metrics.view(110.5).total() == 0
