"""retry through a running gateway, against a server that drops its first connections."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from middleware.contract import Response
from middleware.http.retry import Backoff, retryable
from tests.backends import get, http_request
from tests.harness import start_gateway


class DroppingServer:
    """Reads each request whole, then closes the first ``drop`` connections without an
    answer; later ones get ``status``."""

    def __init__(self, drop: int, status: int = 200) -> None:
        self.drop = drop
        self.status = status
        self.connections = 0
        self.bodies: list[bytes] = []
        self.targets: list[str] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> DroppingServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        index = self.connections
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.targets.append(head.split(b" ", 2)[1].decode())
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            self.bodies.append(await reader.readexactly(length))
            if index > self.drop:
                body = b"attempt %d" % index
                writer.write(
                    b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s"
                    % (self.status, len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def config(url: str, options: dict[str, object]) -> str:
    """Router ``app.test`` behind retry ``again``; passive health checks stay out of the way
    (a dropped connection would otherwise take the only server out of rotation)."""
    return f"""http:
  routers:
    app:
      rule: Host(`app.test`)
      service: app
      middlewares: [again]
  services:
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
        passiveHealthCheck: {{maxFailedAttempts: 1000}}
  middlewares:
    again:
      retry: {json.dumps(options)}
"""


async def serve(tmp_path, drop: int, options: dict[str, object], status: int = 200):
    server = await DroppingServer(drop, status).start()
    return server, await start_gateway(tmp_path, config(server.url, options))


@pytest.mark.parametrize(
    ("attempts", "drop", "status", "connections"),
    [(4, 3, 200, 4), (4, 0, 200, 1), (3, 10, 502, 3), (1, 10, 502, 1)],
    ids=["succeeds-on-last-try", "first-try-answers", "gives-up-after-attempts", "one-attempt"],
)
async def test_attempts_count_tries(tmp_path, attempts, drop, status, connections):
    """``attempts: N`` makes at most N tries and stops at the first answer."""
    server, gw = await serve(tmp_path, drop, {"attempts": attempts})
    try:
        reply = await http_request(gw.port(), get("app.test"))
        assert reply.status == status
        if status == 200:
            assert reply.body == b"attempt %d" % connections
        assert server.connections == connections
    finally:
        await gw.stop()
        await server.close()


async def test_server_errors_are_not_retried(tmp_path):
    """A 5xx the server sent is an answer: it goes to the client after one try."""
    server, gw = await serve(tmp_path, 0, {"attempts": 4}, status=500)
    try:
        reply = await http_request(gw.port(), get("app.test"))
        assert reply.status == 500
        assert server.connections == 1
    finally:
        await gw.stop()
        await server.close()


async def test_streamed_body_is_not_replayed(tmp_path):
    """A POST whose body already went to the server is not sent again."""
    server, gw = await serve(tmp_path, 10, {"attempts": 4})
    try:
        body = b"x" * 1000
        raw = b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n%s" % (
            len(body),
            body,
        )
        reply = await http_request(gw.port(), raw)
        assert reply.status == 502
        assert server.connections == 1
        assert server.bodies == [body]
    finally:
        await gw.stop()
        await server.close()


async def test_waits_between_tries(tmp_path):
    """With ``initialInterval`` the tries are spaced by the randomised exponential backoff."""
    server, gw = await serve(tmp_path, 2, {"attempts": 3, "initialInterval": "100ms"})
    try:
        start = time.monotonic()
        reply = await http_request(gw.port(), get("app.test"))
        elapsed = time.monotonic() - start
        assert reply.status == 200
        assert server.connections == 3
        # Each wait is at least half its interval: 50 ms, then 50 * sqrt(2) ms.
        assert elapsed >= 0.05 + 0.05 * 2**0.5
    finally:
        await gw.stop()
        await server.close()


@pytest.mark.parametrize(
    ("draw", "expected"),
    [
        (0.5, [0.1, 0.1 * 2 ** (1 / 3), 0.1 * 2 ** (2 / 3)]),
        (0.0, [0.05, 0.05 * 2 ** (1 / 3), 0.05 * 2 ** (2 / 3)]),
        (1.0, [0.15, 0.15 * 2 ** (1 / 3), 0.15 * 2 ** (2 / 3)]),
    ],
    ids=["middle", "lowest", "highest"],
)
def test_backoff_grows_to_twice_the_initial_interval(draw, expected):
    """The k-th wait is initialInterval * 2**(k/(attempts-1)), randomised by +/-50 %."""
    backoff = Backoff(0.1, 4, rand=lambda: draw)
    assert [backoff.next() for _ in range(3)] == pytest.approx(expected)


def test_backoff_without_interval_does_not_wait():
    """No ``initialInterval`` means retrying at once."""
    backoff = Backoff(0.0, 4)
    assert [backoff.next() for _ in range(3)] == [0.0, 0.0, 0.0]


async def test_attempts_must_be_positive(tmp_path):
    """``attempts`` below 1 (Traefik's empty value) is a load error naming key and line."""
    server, gw = await serve(tmp_path, 0, {"attempts": 2})
    good = config(server.url, {"attempts": 2})
    line = good.splitlines().index("    again:") + 1
    try:
        for options, message in [
            ({}, "retry: attempts: must be at least 1, got 0"),
            ({"attempts": 2, "initialInterval": "-1s"}, "retry: initialInterval: must not be"),
        ]:
            errors = await gw.reload(config(server.url, options), expect_ok=False)
            text = str(errors[0])  # type: ignore[index]
            assert message in text, text
            assert f"dynamic.yml:{line}: http.middlewares.again" in text, text
        assert (await http_request(gw.port(), get("app.test"))).status == 200
    finally:
        await gw.stop()
        await server.close()


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (Response(502, error="connection refused"), True),
        (Response(504, error="dial timeout"), True),
        (Response(503, error="no server available"), False),
        (Response(502), False),
        (Response(500, streamed=True), False),
    ],
    ids=["refused", "timeout", "no-server", "502-from-server", "500-from-server"],
)
def test_only_network_failures_are_retryable(response, expected):
    """Only gateway-made failures to reach a server qualify; "no server available" does not,
    as in Traefik, where that answer never reaches the proxy that arms the retry."""
    assert retryable(response) is expected


async def test_each_try_sees_the_request_as_retry_saw_it(tmp_path):
    """Middlewares after retry rewrite the original request on every try, not their output."""
    server = await DroppingServer(2).start()
    text = config(server.url, {"attempts": 3}).replace(
        "middlewares: [again]", "middlewares: [again, prefix, limit]"
    )
    text += "    prefix:\n      addPrefix: {prefix: /v1}\n"
    text += "    limit:\n      inFlightReq: {amount: 1}\n"
    gw = await start_gateway(tmp_path, text)
    try:
        reply = await http_request(gw.port(), get("app.test", "/x"))
        assert reply.status == 200
        assert reply.body == b"attempt 3"
        assert server.targets == ["/v1/x", "/v1/x", "/v1/x"]
    finally:
        await gw.stop()
        await server.close()
