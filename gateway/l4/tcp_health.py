"""Active health checks for the servers of a TCP load balancer.

Semantics follow Traefik v3's TCP ``healthCheck`` (pkg/healthcheck,
``executeHealthCheck``):

* connect to the server, or to its host on ``port`` when that is set; with
  ``ssl_context`` (servers with ``tls: true``) the check completes a TLS
  handshake first, verified as the serversTransport says;
* if ``send`` is set, write it (UTF-8, as Go's ``[]byte(string)``);
* if ``expect`` is set, the reply must begin with it: Traefik reads
  ``len(expect)`` bytes and compares them with ``expect`` exactly, so bytes
  after them are ignored and a shorter or different reply fails. "Contains"
  is not Traefik's rule and is not ours;
* otherwise a completed connection is healthy;
* refusals, resets, TLS failures, an early close and the timeout mean down;
* every server starts up (unless ``initial_status`` says otherwise);
  ``unhealthyInterval`` (else ``interval``) paces re-checks of a down server;
  ``on_change`` fires on transitions only.

Deliberate differences from Traefik, and why:

* Traefik judges the bytes of one ``Read``, so a reply split across TCP
  segments can fail spuriously; here reading goes on until ``len(expect)``
  bytes have arrived, and stops early at the first byte that differs.
* ``timeout`` bounds the whole check (connect, handshake, send, reply);
  Traefik gives the connect and the exchange one timeout each.
* A ``send`` or ``expect`` over 65535 bytes is a ``ConfigError``; Traefik logs
  and quietly drops it, which would turn the check into a weaker one.
* ``run`` checks every server at once instead of one ``interval`` later (as
  ``gateway.http.health`` does), so a dead server leaves rotation at once.

Invariants: every connection a check opens is closed before the check
returns (or is cancelled); at most ``len(expect)`` reply bytes are read, and
the stream buffer is capped at ``_STREAM_LIMIT``. A failed check is logged at
WARNING once per up-to-down transition, with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from gateway.config.errors import ConfigError
from gateway.config.l4 import TCPHealthCheck

log = logging.getLogger(__name__)

Address = tuple[str, int]

DEFAULT_INTERVAL = 30.0  # Traefik's DefaultHealthCheckInterval
DEFAULT_TIMEOUT = 5.0  # Traefik's DefaultHealthCheckTimeout
MAX_PAYLOAD = 65535  # Traefik's maxPayloadSize for send and expect
SHOWN_REPLY = 64  # bytes of an unexpected reply quoted in the log
_STREAM_LIMIT = 64 * 1024
# After a passed check a TLS close waits for the server's close_notify; a
# server that never sends one must not hold the check (asyncio waits 30 s).
_CLOSE_GRACE = 1.0


class TCPHealthChecker:
    """Checks every server of one TCP service and reports up/down transitions."""

    def __init__(
        self,
        config: TCPHealthCheck,
        targets: Sequence[Address],
        on_change: Callable[[Address, bool], None],
        *,
        service: str = "",
        initial_status: Mapping[Address, bool] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        """``targets`` are ``(host, port)`` of the servers, the keys of ``status``.

        ``initial_status`` carries states over a reload; targets not in it
        start up. ``server_hostname`` (with ``ssl_context``) is the name sent
        as SNI and verified; None: each target's host, as the relay dials it.
        """
        where = f"tcp.services.{service}.loadBalancer.healthCheck"
        self._send = config.send.encode()
        self._expect = config.expect.encode()
        for key, payload in (("send", self._send), ("expect", self._expect)):
            if len(payload) > MAX_PAYLOAD:
                raise ConfigError(
                    f"{key} is {len(payload)} bytes; at most {MAX_PAYLOAD} are allowed",
                    path=f"{where}.{key}",
                )
        if not 0 <= config.port <= 65535:
            raise ConfigError(f"port {config.port} is out of range", path=f"{where}.port")
        self._port = config.port
        self._service = service
        self._on_change = on_change
        self._ssl = ssl_context
        self._server_hostname = server_hostname
        self._interval = config.interval if config.interval > 0 else DEFAULT_INTERVAL
        self._down_interval = (
            config.unhealthy_interval if config.unhealthy_interval > 0 else self._interval
        )
        self._timeout = config.timeout if config.timeout > 0 else DEFAULT_TIMEOUT
        self._up: dict[Address, bool] = dict.fromkeys(targets, True)
        for target, up in (initial_status or {}).items():
            if target in self._up:
                self._up[target] = up

    @property
    def status(self) -> Mapping[Address, bool]:
        """The current state of every target (True: up), read-only."""
        return MappingProxyType(self._up)

    async def run(self) -> None:
        """Check every target now and then every (unhealthy) interval, until cancelled."""
        if not self._up:
            await asyncio.Event().wait()
        async with asyncio.TaskGroup() as group:
            for target in self._up:
                group.create_task(self._watch(target), name=f"tcp healthcheck {_show(target)}")

    async def check_once(self) -> dict[Address, bool]:
        """One round over every target, concurrently; applies and returns the verdicts.

        Status changes, logging and ``on_change`` are as in ``run``, so a
        caller can settle the states before serving.
        """
        async with asyncio.TaskGroup() as group:
            probes = {target: group.create_task(self._probe(target)) for target in self._up}
        verdicts: dict[Address, bool] = {}
        for target, probe in probes.items():
            verdicts[target] = self._apply(target, probe.result())
        return verdicts

    async def _watch(self, target: Address) -> None:
        while True:
            up = self._apply(target, await self._probe(target))
            await asyncio.sleep(self._interval if up else self._down_interval)

    def _apply(self, target: Address, reason: str | None) -> bool:
        """Record one verdict (``reason`` None: healthy); True if the target is up."""
        up = reason is None
        if up == self._up[target]:
            if reason is not None and log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "tcp service %s: server %s still down: %s",
                    self._service,
                    _show(target),
                    reason,
                )
            return up
        self._up[target] = up
        if up:
            log.info("tcp service %s: server %s is up", self._service, _show(target))
        else:
            log.warning(
                "tcp service %s: server %s is down: %s", self._service, _show(target), reason
            )
        try:
            self._on_change(target, up)
        except Exception:
            log.exception("tcp service %s: health status listener failed", self._service)
        return up

    async def _probe(self, target: Address) -> str | None:
        """None if ``target`` is healthy, else why not. Changes no state."""
        host, port = target
        port = self._port or port
        hostname = None
        if self._ssl is not None:
            hostname = self._server_hostname or host
        stage = "connecting"
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self._timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=self._ssl, server_hostname=hostname, limit=_STREAM_LIMIT
                )
                if self._send:
                    stage = "sending"
                    writer.write(self._send)
                    await writer.drain()
                if self._expect:
                    stage = "waiting for the reply"
                    reason = await _read_reply(reader, self._expect)
                else:
                    reason = None
        except TimeoutError:
            reason = f"timeout after {self._timeout:g}s {stage}"
        except ConnectionRefusedError:
            reason = f"connection refused (port {port})"
        # ssl.SSLError is an OSError; ValueError: a host name IDNA cannot encode.
        except (OSError, ValueError) as exc:
            reason = f"{type(exc).__name__} {stage}: {exc}"
        except BaseException:
            if writer is not None:
                writer.transport.abort()
            raise
        if writer is not None:
            await _close(writer, graceful=reason is None)
        return reason


async def _read_reply(reader: asyncio.StreamReader, expect: bytes) -> str | None:
    """None if the reply begins with ``expect``; reads no byte beyond it."""
    got = bytearray()
    while len(got) < len(expect):
        chunk = await reader.read(len(expect) - len(got))
        if not chunk:
            shown = f' "{_quote(got)}"' if got else ""
            return f"connection closed after {len(got)} of {len(expect)} bytes{shown}"
        got += chunk
        if not expect.startswith(got):
            return f'unexpected reply "{_quote(got)}"'
    return None


async def _close(writer: asyncio.StreamWriter, *, graceful: bool) -> None:
    """Close after a passed check (TLS close_notify included), else abort; wait for the socket.

    A failed server gets no grace: it may be the one that stopped answering.
    """
    if graceful:
        writer.close()
    else:
        writer.transport.abort()
    try:
        async with asyncio.timeout(_CLOSE_GRACE):
            await writer.wait_closed()
    except (OSError, ValueError):  # TimeoutError included; the verdict is already made
        writer.transport.abort()
    except BaseException:
        writer.transport.abort()
        raise


def _quote(data: bytes | bytearray) -> str:
    """The first ``SHOWN_REPLY`` bytes, printable, escaped as a Python bytes literal."""
    return repr(bytes(data[:SHOWN_REPLY]))[2:-1]


def _show(target: Address) -> str:
    host, port = target
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
