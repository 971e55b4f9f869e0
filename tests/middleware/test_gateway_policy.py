"""gatewayTimeouts and gatewayRetry through a running gateway (HTTPRoute timeouts and retry).

Spec rules checked (apis/v1/httproute_types.go ``HTTPRouteTimeouts`` and
``HTTPRouteRetry``; notes section 2.9; conformance tests
httproute-request-timeout, httproute-backend-request-timeout and
httproute-retry): expiry answers 504, ``0`` disables a timeout,
``backendRequest`` bounds each try and ``request`` the whole sequence,
``attempts`` counts retries after the first try, only listed codes are
retried and the last response is returned when they run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import pytest

from middleware.http.gateway_policy import backoff_bound
from middleware.registry import load_registry
from tests.backends import Reply, get, http_request
from tests.harness import RunningGateway, start_gateway

REGISTRY = load_registry(plugins=False).with_factories(
    {
        "gatewayTimeouts": "middleware.http.gateway_policy:GatewayTimeouts",
        "gatewayRetry": "middleware.http.gateway_policy:GatewayRetry",
    }
)

HANG = -1  # read the request, never answer
DROP = 0  # read the request, close the connection without an answer


class ScriptedBackend:
    """Answers its n-th request as ``script[n]`` says (the last entry repeats):
    a status code, ``HANG`` or ``DROP``; counts requests and records bodies."""

    def __init__(self, *script: int) -> None:
        self.script = script
        self.requests = 0
        self.targets: list[str] = []
        self.bodies: list[bytes] = []
        self.released = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> ScriptedBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.targets.append(head.split(b" ", 2)[1].decode())
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                self.bodies.append(await reader.readexactly(length))
                self.requests += 1
                action = self.script[min(self.requests, len(self.script)) - 1]
                if action == HANG:
                    await self.released.wait()
                    return
                if action == DROP:
                    return
                body = b"try %d" % self.requests
                writer.write(
                    b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (action, len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        self.released.set()
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def config(url: str, *middlewares: tuple[str, str, dict[str, object]]) -> str:
    """Router ``app.test`` using ``middlewares`` ((name, key, options)) in order. Passive
    health checks stay out of the way: a dropped try must not take the only server out."""
    names = ", ".join(name for name, _, _ in middlewares)
    defs = "".join(
        f"    {name}:\n      {key}: {json.dumps(options)}\n" for name, key, options in middlewares
    )
    return f"""http:
  routers:
    app:
      rule: Host(`app.test`)
      service: app
      middlewares: [{names}]
  services:
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
        passiveHealthCheck: {{maxFailedAttempts: 1000}}
  middlewares:
{defs}"""


def timeouts(**options: object) -> tuple[str, str, dict[str, object]]:
    return ("timeouts", "gatewayTimeouts", dict(options))


def retry(**options: object) -> tuple[str, str, dict[str, object]]:
    return ("again", "gatewayRetry", dict(options))


async def serve(
    tmp_path: Path, backend: ScriptedBackend, *middlewares: tuple[str, str, dict[str, object]]
) -> RunningGateway:
    await backend.start()
    return await start_gateway(tmp_path, config(backend.url, *middlewares), registry=REGISTRY)


async def timed(port: int, raw: bytes) -> tuple[Reply, float]:
    start = time.monotonic()
    reply = await http_request(port, raw)
    return reply, time.monotonic() - start


# -- gatewayTimeouts ------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"request": "200ms"},
        {"backendRequest": "200ms"},
        {"request": "5s", "backendRequest": "200ms"},
    ],
    ids=["request", "backend-request", "backend-request-within-request"],
)
async def test_timeout_answers_504(tmp_path, options):
    """A backend that does not answer in time gets the client a 504 once the timeout runs out."""
    backend = ScriptedBackend(HANG)
    gw = await serve(tmp_path, backend, timeouts(**options))
    try:
        reply, elapsed = await timed(gw.port(), get("app.test"))
        assert reply.status == 504
        assert 0.2 <= elapsed < 3
    finally:
        await gw.stop()
        await backend.close()


async def test_answer_in_time_passes(tmp_path):
    """A response head before the deadline reaches the client unchanged."""
    backend = ScriptedBackend(200)
    gw = await serve(tmp_path, backend, timeouts(request="5s", backendRequest="5s"))
    try:
        reply = await http_request(gw.port(), get("app.test"))
        assert (reply.status, reply.body) == (200, b"try 1")
    finally:
        await gw.stop()
        await backend.close()


async def test_zero_disables_the_timeouts(tmp_path):
    """``0s`` disables a timeout (conformance: /disable-request-timeout answers 200)."""
    backend = ScriptedBackend(HANG)
    gw = await serve(tmp_path, backend, timeouts(request="0s", backendRequest="0s"))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port())
        writer.write(get("app.test"))
        # No answer in well over what a wrongly armed zero timeout would take.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.5)
        assert backend.requests == 1
        writer.close()
    finally:
        await gw.stop()
        await backend.close()


# -- gatewayRetry ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codes", "attempts", "script", "status", "tries"),
    [
        ([500], 3, (500, 500, 200), 200, 3),
        ([500], 3, (500, 500, 500, 500, 200), 500, 4),
        ([500], 3, (503, 200), 503, 1),
        ([500, 502, 503, 504], 2, (500, 200), 200, 2),
        ([500, 502, 503, 504], 2, (500, 500, 500, 200), 500, 3),
        ([500, 502, 503, 504], 2, (502, 502, 502, 200), 502, 3),
        ([500, 502, 503, 504], 2, (503, 503, 503, 200), 503, 3),
        ([500, 502, 503, 504], 2, (504, 504, 504, 200), 504, 3),
        ([500], 0, (500, 200), 500, 1),
    ],
    ids=[
        "succeeds-after-2",
        "exhausted-returns-last",
        "code-not-listed",
        "all-codes-succeed-after-1",
        "all-codes-exhausted-500",
        "all-codes-exhausted-502",
        "all-codes-exhausted-503",
        "all-codes-exhausted-504",
        "zero-attempts-disables",
    ],
)
async def test_retries_listed_codes(tmp_path, codes, attempts, script, status, tries):
    """Listed codes are retried ``attempts`` times after the first try (conformance
    httproute-retry); the client gets the last try's response, body included."""
    backend = ScriptedBackend(*script)
    gw = await serve(tmp_path, backend, retry(codes=codes, attempts=attempts))
    try:
        reply = await http_request(gw.port(), get("app.test"))
        assert (reply.status, reply.body) == (status, b"try %d" % tries)
        assert backend.requests == tries
    finally:
        await gw.stop()
        await backend.close()


@pytest.mark.parametrize(
    ("method", "status", "tries"),
    [("GET", 200, 2), ("DELETE", 200, 2), ("POST", 502, 1)],
    ids=["get-retried", "delete-retried", "post-not-retried"],
)
async def test_connection_errors_retried_when_idempotent(tmp_path, method, status, tries):
    """A try the server dropped unanswered is retried for idempotent methods only
    (the spec's SHOULD NOT for requests that may have been processed)."""
    backend = ScriptedBackend(DROP, 200)
    gw = await serve(tmp_path, backend, retry(codes=[500], attempts=2))
    try:
        raw = f"{method} / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\n\r\n".encode()
        reply = await http_request(gw.port(), raw)
        assert reply.status == status
        assert backend.requests == tries
    finally:
        await gw.stop()
        await backend.close()


async def test_streamed_body_is_not_replayed(tmp_path):
    """A request whose body already went to the server is not sent again."""
    backend = ScriptedBackend(500, 200)
    gw = await serve(tmp_path, backend, retry(codes=[500], attempts=3))
    try:
        body = b"x" * 1000
        raw = b"PUT /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1000\r\n\r\n" + body
        reply = await http_request(gw.port(), raw)
        assert reply.status == 500
        assert backend.bodies == [body]
    finally:
        await gw.stop()
        await backend.close()


async def test_buffered_body_is_replayed(tmp_path):
    """With ``buffering`` before it, a request body is kept and sent again on each try."""
    backend = ScriptedBackend(500, 200)
    await backend.start()
    text = config(backend.url, ("buf", "buffering", {}), retry(codes=[500], attempts=3))
    gw = await start_gateway(tmp_path, text, registry=REGISTRY)
    try:
        body = b"y" * 1000
        raw = b"PUT /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1000\r\n\r\n" + body
        reply = await http_request(gw.port(), raw)
        assert (reply.status, reply.body) == (200, b"try 2")
        assert backend.bodies == [body, body]
    finally:
        await gw.stop()
        await backend.close()


async def test_each_try_sees_the_original_request(tmp_path):
    """Middlewares after the retry rewrite the request afresh on each try."""
    backend = ScriptedBackend(500, 500, 200)
    await backend.start()
    text = config(
        backend.url, retry(codes=[500], attempts=2), ("prefix", "addPrefix", {"prefix": "/p"})
    )
    gw = await start_gateway(tmp_path, text, registry=REGISTRY)
    try:
        reply = await http_request(gw.port(), get("app.test", "/x"))
        assert reply.status == 200
        assert backend.targets == ["/p/x", "/p/x", "/p/x"]
    finally:
        await gw.stop()
        await backend.close()


@pytest.mark.parametrize(
    ("retry_number", "bound"),
    [(1, 0.1), (2, 0.3), (3, 0.7), (4, 1.0), (8, 1.0)],
    ids=["first", "second", "third", "capped", "stays-capped"],
)
def test_backoff_bound_is_envoys_full_jitter(retry_number, bound):
    """Retry k waits up to backoff * (2**k - 1), capped at ten times backoff."""
    assert backoff_bound(0.1, retry_number) == pytest.approx(bound)


async def test_backoff_spaces_the_tries(tmp_path):
    """A ``backoff`` makes the retries wait (a random share of the growing bound)."""
    backend = ScriptedBackend(500)
    gw = await serve(tmp_path, backend, retry(codes=[500], attempts=6, backoff="50ms"))
    try:
        reply, elapsed = await timed(gw.port(), get("app.test"))
        assert reply.status == 500
        assert backend.requests == 7
        # Bounds 50, 150, 350, 500, 500, 500 ms: a sum of 2.05 s at most; all six
        # uniform draws adding up to under 100 ms has a negligible probability.
        assert 0.05 <= elapsed < 2.05 + 1
    finally:
        await gw.stop()
        await backend.close()


# -- together -------------------------------------------------------------------------


async def test_backend_request_bounds_each_try(tmp_path):
    """With a retry after it, ``backendRequest`` bounds every try, not the whole sequence."""
    backend = ScriptedBackend(HANG, HANG, 200)
    gw = await serve(
        tmp_path,
        backend,
        timeouts(request="10s", backendRequest="200ms"),
        retry(codes=[504], attempts=2),
    )
    try:
        reply, elapsed = await timed(gw.port(), get("app.test"))
        assert (reply.status, reply.body) == (200, b"try 3")
        assert backend.requests == 3
        assert 0.4 <= elapsed < 5
    finally:
        await gw.stop()
        await backend.close()


async def test_timed_out_try_needs_504_listed(tmp_path):
    """A try cut by ``backendRequest`` is retried only when 504 is one of the codes."""
    backend = ScriptedBackend(HANG, 200)
    gw = await serve(
        tmp_path, backend, timeouts(backendRequest="200ms"), retry(codes=[500], attempts=2)
    )
    try:
        reply = await http_request(gw.port(), get("app.test"))
        assert reply.status == 504
        assert backend.requests == 1
    finally:
        await gw.stop()
        await backend.close()


async def test_request_timeout_bounds_the_retries(tmp_path):
    """``request`` bounds the whole retry sequence: it answers 504 at its deadline."""
    backend = ScriptedBackend(HANG)
    gw = await serve(
        tmp_path,
        backend,
        timeouts(request="500ms", backendRequest="200ms"),
        retry(codes=[504], attempts=10),
    )
    try:
        reply, elapsed = await timed(gw.port(), get("app.test"))
        assert reply.status == 504
        # Unbounded, eleven tries of 200 ms each would take 2.2 s.
        assert 0.5 <= elapsed < 1.5
        # Tries at 0, 200 and 400 ms; the deadline cuts the third.
        assert backend.requests in (2, 3)
    finally:
        await gw.stop()
        await backend.close()


# -- load-time errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("middleware", "message"),
    [
        (timeouts(request="-1s"), "gatewayTimeouts: request: must not be negative"),
        (
            timeouts(request="1s", backendRequest="2s"),
            "gatewayTimeouts: backendRequest: 2s is longer than the request timeout 1s",
        ),
        (retry(codes=[200]), "gatewayRetry: codes: 200 is not an HTTP status from 400 to 599"),
        (retry(attempts=-1), "gatewayRetry: attempts: must not be negative"),
        (retry(backoff="-1s"), "gatewayRetry: backoff: must not be negative"),
    ],
    ids=[
        "negative-request",
        "backend-longer-than-request",
        "code-out-of-range",
        "negative-attempts",
        "negative-backoff",
    ],
)
async def test_invalid_options_rejected_at_load(tmp_path, middleware, message):
    """A bad option is a load error naming the middleware, key and line; the old config serves."""
    backend = ScriptedBackend(200)
    gw = await serve(tmp_path, backend, timeouts(request="5s"))
    try:
        bad = config(backend.url, middleware)
        line = bad.splitlines().index(f"    {middleware[0]}:") + 1
        errors = await gw.reload(bad, expect_ok=False)
        text = str(errors[0])  # type: ignore[index]
        assert message in text, text
        assert f"dynamic.yml:{line}: http.middlewares.{middleware[0]}" in text, text
        assert (await http_request(gw.port(), get("app.test"))).status == 200
    finally:
        await gw.stop()
        await backend.close()


class SlowBody:
    """Sends a response head at once, then its body in ``parts`` chunks ``pace`` s apart."""

    def __init__(self, parts: int, pace: float) -> None:
        self.parts = parts
        self.pace = pace
        self.server: asyncio.Server | None = None

    async def start(self) -> SlowBody:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.parts)
            for _ in range(self.parts):
                await writer.drain()
                # The body's pace is what the test is about: a paced sender, not a sync.
                await asyncio.sleep(self.pace)
                writer.write(b"x")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def read_until_closed(port: int) -> tuple[bytes, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(get("app.test", "/", "Connection: close\r\n"))
    data = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            data += chunk
    writer.close()
    return data, time.monotonic() - started


@pytest.mark.parametrize("with_retry", [False, True], ids=["timeouts-only", "with-retry"])
async def test_backend_request_bounds_the_whole_response_body(
    tmp_path: Path, with_retry: bool
) -> None:
    """A body still arriving at backendRequest's deadline is cut: the client sees it end early."""
    backend = await SlowBody(parts=20, pace=0.1).start()
    middlewares = [timeouts(backendRequest="0.5s")]
    if with_retry:
        middlewares.append(("retry", "gatewayRetry", {"codes": [500], "attempts": 1}))
    gw = await start_gateway(tmp_path, config(backend.url, *middlewares), registry=REGISTRY)
    try:
        data, took = await asyncio.wait_for(read_until_closed(gw.port()), 10)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert 0 < len(body) < 20, "the body is cut short, not delivered whole"
        assert took < 1.5, "cut at the backendRequest deadline, not when the body ended"
    finally:
        await gw.stop()
        await backend.close()


async def test_body_within_backend_request_arrives_whole(tmp_path: Path) -> None:
    """A body that completes before the deadline is untouched."""
    backend = await SlowBody(parts=3, pace=0.01).start()
    gw = await start_gateway(
        tmp_path, config(backend.url, timeouts(backendRequest="2s")), registry=REGISTRY
    )
    try:
        data, _ = await asyncio.wait_for(read_until_closed(gw.port()), 10)
        assert data.endswith(b"\r\n\r\nxxx")
    finally:
        await gw.stop()
        await backend.close()
