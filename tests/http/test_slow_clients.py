"""Tests for gateway.http.server timeouts: slow and idle clients are cut off.

The entry point runs with ``readHeaderTimeout: 1s``. Deadlines are enforced
by the entry point's sweep every 0.5 s, so a connection is cut between its
deadline and half a second later; each test bounds that from both sides.

What a cut-off client sees follows Go's server (Traefik) where the RFC
leaves room, and differs where Sluice is stricter:

* a client that started a request head and did not finish it in time gets
  ``408 Request Timeout`` with ``Connection: close`` (RFC 9110 15.5.9), and
  its partial request never reaches the upstream. Go closes silently here;
  Sluice says why.
* a connection that never sent a byte, or sits idle after a complete
  exchange, is closed silently, as Go does: a 408 nobody asked for can cross
  a request the client is sending just then and be taken as its answer.
  A fresh connection waits at most ``readHeaderTimeout`` for its first byte
  (Go's first-request deadline), a kept-alive one ``idleTimeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.harness import RunningGateway, start_gateway
from tests.http.test_strict_parsing import (
    Recorder,
    assert_refused,
    dynamic_for,
    parse_answers,
    recording_backend,
)

HEADER_TIMEOUT = 1.0
SWEEP = 0.5  # entrypoint.SWEEP_INTERVAL
# A deadline is enforced no earlier than itself and within one sweep after it;
# the rest is slack for a loaded machine.
LATE = SWEEP + 0.5

HEAD = b"GET / HTTP/1.1\r\nHost: a.test\r\n"


def static_config(idle_timeout: float, read_timeout: float = 60) -> str:
    return (
        'entryPoints:\n  web:\n    address: "127.0.0.1:0"\n    transport:\n'
        "      respondingTimeouts:\n"
        f"        readHeaderTimeout: {HEADER_TIMEOUT}s\n"
        f"        readTimeout: {read_timeout}s\n"
        f"        idleTimeout: {idle_timeout}s\n"
        "providers:\n  file:\n    filename: dynamic.yml\n"
    )


@dataclass
class Proxy:
    gateway: RunningGateway
    record: Recorder
    port: int


@contextlib.asynccontextmanager
async def proxied(
    tmp_path: Path, *, idle_timeout: float, read_timeout: float = 60
) -> AsyncIterator[Proxy]:
    """A gateway with short timeouts in front of a recording backend."""
    async with recording_backend() as (record, backend_port):
        gateway = await start_gateway(
            tmp_path, dynamic_for(backend_port), static=static_config(idle_timeout, read_timeout)
        )
        try:
            yield Proxy(gateway, record, gateway.port())
        finally:
            await gateway.stop()


async def read_to_eof(reader: asyncio.StreamReader, bound: float) -> bytes:
    """Everything the gateway sends until it closes; fails if that takes over ``bound``."""
    received = bytearray()

    async def drain() -> None:
        with contextlib.suppress(ConnectionResetError):
            while data := await reader.read(65536):
                received.extend(data)

    await asyncio.wait_for(drain(), bound)
    return bytes(received)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def wait_cut_off(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, bound: float
) -> tuple[bytes, float]:
    """What the gateway sends until it closes, and the seconds that took; then close ours."""
    start = time.monotonic()
    data = await read_to_eof(reader, bound)
    elapsed = time.monotonic() - start
    await close(writer)
    return data, elapsed


async def trickle_until_cut(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, bound: float
) -> tuple[bytes, float]:
    """Send ``data`` a byte per 200 ms until the gateway cuts us off; its answer and the time."""

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for i in range(len(data)):
                writer.write(data[i : i + 1])
                await writer.drain()
                # Pacing the attack, not synchronizing the test.
                await asyncio.sleep(0.2)

    start = time.monotonic()
    sender = asyncio.create_task(trickle())
    try:
        answer = await read_to_eof(reader, bound)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
    elapsed = time.monotonic() - start
    await close(writer)
    return answer, elapsed


async def test_partial_head_gets_408_at_the_header_deadline(tmp_path: Path) -> None:
    """A head left unfinished is answered 408 and closed once readHeaderTimeout passes."""
    async with proxied(tmp_path, idle_timeout=60) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(HEAD + b"X-Part")
        await writer.drain()
        data, elapsed = await wait_cut_off(reader, writer, HEADER_TIMEOUT + LATE)
        assert_refused(data, 408)
        assert elapsed >= HEADER_TIMEOUT * 0.95
        assert proxy.record.received == 0


async def test_slowloris_is_cut_at_the_header_deadline(tmp_path: Path) -> None:
    """A head trickling in one byte per 200 ms does not extend the header deadline."""
    async with proxied(tmp_path, idle_timeout=60) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        head = HEAD + b"X-Slow: " + b"s" * 100 + b"\r\n\r\n"

        data, elapsed = await trickle_until_cut(reader, writer, head, HEADER_TIMEOUT + LATE)
        assert_refused(data, 408)
        assert elapsed >= HEADER_TIMEOUT * 0.95
        assert proxy.record.received == 0


async def test_silent_client_is_closed_without_an_answer(tmp_path: Path) -> None:
    """A connection that sends nothing is closed silently at readHeaderTimeout, not idleTimeout."""
    async with proxied(tmp_path, idle_timeout=60) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        data, elapsed = await wait_cut_off(reader, writer, HEADER_TIMEOUT + LATE)
        assert data == b""
        assert elapsed >= HEADER_TIMEOUT * 0.95
        assert proxy.record.connections == 0


async def test_empty_lines_do_not_keep_a_connection_open(tmp_path: Path) -> None:
    """CRLFs before a request line (RFC 9112 2.2) start no request and extend no deadline."""
    async with proxied(tmp_path, idle_timeout=60) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    writer.write(b"\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.2)

        sender = asyncio.create_task(trickle())
        try:
            data = await read_to_eof(reader, HEADER_TIMEOUT + LATE)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        await close(writer)
        assert data == b""
        assert proxy.record.received == 0


async def test_idle_keep_alive_connection_is_closed_silently(tmp_path: Path) -> None:
    """After a complete exchange, a kept-alive connection closes silently after idleTimeout."""
    idle = 1.5  # longer than readHeaderTimeout, to tell the two apart
    async with proxied(tmp_path, idle_timeout=idle) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(HEAD + b"\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        answer = parse_answers(head)[0]
        assert answer.status == 200 and b"connection" not in answer.headers
        body = await asyncio.wait_for(reader.readexactly(int(answer.headers[b"content-length"])), 5)
        assert body == b"ok"
        data, elapsed = await wait_cut_off(reader, writer, idle + LATE)
        assert data == b""
        assert elapsed >= idle * 0.95
        assert len(proxy.record.requests) == 1


async def test_next_head_on_kept_alive_connection_has_its_own_deadline(tmp_path: Path) -> None:
    """A second request head left unfinished on a kept-alive connection also gets 408."""
    async with proxied(tmp_path, idle_timeout=60) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(HEAD + b"\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert parse_answers(head)[0].status == 200
        await asyncio.wait_for(reader.readexactly(2), 5)
        writer.write(b"GET /second HTTP/1.1\r\nHost: a")
        await writer.drain()
        data, elapsed = await wait_cut_off(reader, writer, HEADER_TIMEOUT + LATE)
        assert_refused(data, 408)
        assert elapsed >= HEADER_TIMEOUT * 0.95
        assert [seen.target for seen in proxy.record.requests] == [b"/"]


async def test_slow_head_finished_in_time_is_served(tmp_path: Path) -> None:
    """A head sent in pieces but completed within readHeaderTimeout is forwarded and answered."""
    async with proxied(tmp_path, idle_timeout=60) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        for piece in (b"GET /slow HT", b"TP/1.1\r\nHost: a.te", b"st\r\nConnection: close\r\n\r\n"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.1)
        data = await read_to_eof(reader, 5)
        await close(writer)
        assert [a.status for a in parse_answers(data)] == [200], data
        assert [seen.target for seen in proxy.record.requests] == [b"/slow"]


async def test_slow_body_is_cut_at_the_read_deadline(tmp_path: Path) -> None:
    """A body trickled in (R.U.D.Y.) is cut off when readTimeout passes, with 408."""
    read_timeout = 1.5
    async with proxied(tmp_path, idle_timeout=60, read_timeout=read_timeout) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1000\r\n\r\n")

        data, elapsed = await trickle_until_cut(reader, writer, b"x" * 1000, read_timeout + LATE)
        assert_refused(data, 408)
        assert elapsed >= read_timeout * 0.9
