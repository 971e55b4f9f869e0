"""rateLimit through a running gateway: bursts, refill, delays, sources, bad options."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

from middleware.http.rate_limit import go_duration, max_delay
from tests.backends import RecordingBackend, get, http_request, read_reply
from tests.harness import start_gateway


def config(url: str, options: dict[str, object]) -> str:
    """Router ``app.test`` behind rateLimit ``limit`` with ``options``."""
    return f"""http:
  routers:
    app:
      rule: Host(`app.test`)
      service: app
      middlewares: [limit]
  services:
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
  middlewares:
    limit:
      rateLimit: {json.dumps(options)}
"""


@pytest.fixture
async def backend():
    b = await RecordingBackend().start()
    yield b
    await b.close()


async def request_from(port: int, local: str, raw: bytes):
    """One request on a new connection from the loopback address ``local``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(local, 0))
    try:
        writer.write(raw)
        return await read_reply(reader)
    finally:
        writer.close()


async def test_burst_passes_then_429_with_retry_headers(tmp_path, backend):
    """From one source exactly ``burst`` requests pass; the rest get 429 with Traefik's headers."""
    # 1 request per 10 s: nothing refills while the test runs.
    gw = await start_gateway(
        tmp_path, config(backend.url, {"average": 1, "period": "10s", "burst": 3})
    )
    try:
        replies = [await http_request(gw.port(), get("app.test")) for _ in range(8)]
        assert [r.status for r in replies] == [200] * 3 + [429] * 5
        assert len(backend.requests) == 3
        refused = replies[-1]
        assert refused.body == b"Too Many Requests"
        assert refused.header("retry-after") in ("9", "10")
        retry_in = refused.header("x-retry-in") or ""
        assert re.fullmatch(r"9\.\d+s|10s", retry_in), retry_in
    finally:
        await gw.stop()


async def test_sources_have_separate_buckets(tmp_path, backend):
    """Two client addresses each get their own burst."""
    gw = await start_gateway(
        tmp_path, config(backend.url, {"average": 1, "period": "1m", "burst": 2})
    )
    try:
        statuses: dict[str, list[int]] = {"127.0.0.5": [], "127.0.0.6": []}
        for _ in range(3):
            for local, seen in statuses.items():
                seen.append((await request_from(gw.port(), local, get("app.test"))).status)
        assert statuses == {"127.0.0.5": [200, 200, 429], "127.0.0.6": [200, 200, 429]}
    finally:
        await gw.stop()


async def test_request_header_criterion_groups_by_header(tmp_path, backend):
    """With ``requestHeaderName`` the bucket follows the header; requests without it share one."""
    options = {
        "average": 1,
        "period": "1m",
        "burst": 1,
        "sourceCriterion": {"requestHeaderName": "X-Api-Key"},
    }
    gw = await start_gateway(tmp_path, config(backend.url, options))
    try:
        port = gw.port()

        async def status(extra: str = "") -> int:
            return (await http_request(port, get("app.test", "/", extra))).status

        assert await status("X-Api-Key: alice\r\n") == 200
        assert await status("X-Api-Key: alice\r\n") == 429
        assert await status("X-Api-Key: bob\r\n") == 200
        assert await status() == 200
        assert await status() == 429
        assert await status("X-Api-Key: carol\r\n") == 200
    finally:
        await gw.stop()


async def test_refill_rate_and_short_waits_are_delayed(tmp_path, backend):
    """Requests sent back to back pass at ``average`` per second; one that would get its token
    within ``1/(2*rate)`` is held until then instead of refused."""
    gw = await start_gateway(tmp_path, config(backend.url, {"average": 20, "burst": 1}))
    try:
        passed: list[float] = []
        start = time.monotonic()
        while time.monotonic() - start < 0.6:
            sent = time.monotonic()
            reply = await http_request(gw.port(), get("app.test"))
            if reply.status == 200:
                passed.append(time.monotonic() - sent)
            else:
                assert reply.status == 429
        elapsed = time.monotonic() - start
        # One burst token, then 20 a second; a reservation may run 25 ms ahead.
        assert 1 + int(elapsed * 20) - 2 <= len(passed) <= 2 + int((elapsed + 0.025) * 20)
        # Without the delay a request only passes once its token is there
        # (about 1 ms round trip); held ones take up to 25 ms.
        held = [t for t in passed[1:] if t >= 0.01]
        assert len(held) >= len(passed[1:]) // 2, passed
    finally:
        await gw.stop()


async def test_average_zero_does_not_limit(tmp_path, backend):
    """``average: 0`` (the default) turns limiting off."""
    gw = await start_gateway(tmp_path, config(backend.url, {"burst": 1}))
    try:
        replies = [await http_request(gw.port(), get("app.test")) for _ in range(20)]
        assert {r.status for r in replies} == {200}
    finally:
        await gw.stop()


BAD_OPTIONS = {
    "negative-period": ({"average": 1, "period": "-1s"}, "rateLimit: period: must not be negative"),
    "negative-average": ({"average": -5}, "rateLimit: average: must not be negative"),
    "two-criteria": (
        {"average": 1, "sourceCriterion": {"requestHost": True, "requestHeaderName": "X-A"}},
        "rateLimit: sourceCriterion: set only one of requestHeaderName, requestHost",
    ),
    "bad-ipv6-subnet": (
        {"average": 1, "sourceCriterion": {"ipStrategy": {"ipv6Subnet": 129}}},
        "rateLimit: sourceCriterion.ipStrategy.ipv6Subnet must be between 1 and 128",
    ),
}


async def test_invalid_options_are_rejected_at_load(tmp_path, backend):
    """Bad options are load errors naming middleware, key and line; the old config serves on."""
    good = config(backend.url, {"average": 100})
    gw = await start_gateway(tmp_path, good)
    line = good.splitlines().index("    limit:") + 1
    try:
        for case, (options, message) in BAD_OPTIONS.items():
            errors = await gw.reload(config(backend.url, options), expect_ok=False)
            text = str(errors[0])  # type: ignore[index]
            assert message in text, (case, text)
            assert f"dynamic.yml:{line}: http.middlewares.limit" in text, (case, text)
            assert (await http_request(gw.port(), get("app.test"))).status == 200
    finally:
        await gw.stop()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1.5, "1.5s"),
        (10, "10s"),
        (0.25, "250ms"),
        (0.0999, "99.9ms"),
        (0.000_0015, "1.5µs"),
        (0.000_000_5, "500ns"),
        (120, "2m0s"),
        (3725.5, "1h2m5.5s"),
    ],
    ids=[
        "zero",
        "fraction",
        "whole",
        "millis",
        "millis-fraction",
        "micros",
        "nanos",
        "minutes",
        "hours",
    ],
)
def test_x_retry_in_uses_go_duration_format(seconds, text):
    """``X-Retry-In`` writes the wait as Go's ``time.Duration.String`` does."""
    assert go_duration(seconds) == text


@pytest.mark.parametrize(
    ("rate", "delay"),
    [(0.1, 0.5), (1.0, 0.5), (1.9, 0.5), (20.0, 0.025), (100.0, 0.005)],
    ids=["slow", "one", "truncated", "twenty", "hundred"],
)
def test_max_delay_follows_traefik(rate, delay):
    """Requests wait at most 1/(2*int(rate)) seconds for a token, 0.5 s below one a second."""
    assert max_delay(rate) == pytest.approx(delay)
