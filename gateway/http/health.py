"""Active health checks for the servers of an HTTP load balancer.

Semantics follow Traefik's ``healthCheck`` (pkg/healthcheck):

* the check URL is the ``path`` resolved against the server URL as a URL
  reference (Go's ``url.Parse``): ``/health`` replaces a server base path,
  ``health`` is relative to it; ``scheme`` and ``port`` then override;
* the Host header is ``hostname`` if set, else the server's host[:port];
  ``headers`` are added (a ``Host`` entry is ignored, as Go ignores it);
* healthy means ``status`` exactly when set, else any 2xx or 3xx;
* redirects are followed when ``followRedirects`` (Go's client stops after 10),
  but only to the same server: a Location elsewhere is judged as the 3xx it is;
* connection errors, timeouts and malformed responses mean unhealthy;
* every server starts healthy; ``unhealthyInterval`` (else ``interval``) paces
  re-checks of a down server; ``on_change`` fires on transitions only.

One deliberate difference: each server is checked as soon as ``run`` starts,
instead of one ``interval`` later, so a dead server leaves rotation at once.

TLS: Traefik sends health checks through the service's serversTransport, so a
check verifies the server certificate unless that transport says
``insecureSkipVerify``. The caller passes that transport's context
(``gateway.http.tls.build_client_tls``); without one, system roots verify.

Requests are HTTP/1.1 with ``Connection: close`` over a fresh connection; only
the response head is read.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import SplitResult, urljoin, urlsplit

from gateway.config.dynamic import HealthCheck
from gateway.config.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 5.0
MAX_REDIRECTS = 10  # Go's http.Client limit
MAX_HEAD_BYTES = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 section 5.6.2
_HOST = re.compile(r"[A-Za-z0-9._\-]+(:\d+)?|\[[0-9A-Fa-f:.]+\](:\d+)?")


@dataclass(frozen=True, slots=True)
class HealthTarget:
    """One load-balancer server, by its URL: scheme://host:port[/base]."""

    url: str


class _BadResponse(Exception):
    """The server answered something that is not an HTTP/1.x response head."""


class HealthChecker:
    """Checks every target of one service and reports up/down transitions."""

    def __init__(
        self,
        config: HealthCheck,
        targets: Sequence[HealthTarget],
        on_change: Callable[[HealthTarget, bool], None],
        *,
        service: str,
        ssl_context: ssl.SSLContext | None = None,
        initial_status: Mapping[HealthTarget, bool] | None = None,
    ) -> None:
        """``initial_status`` carries states over a reload; targets not in it start up."""
        where = f"http.services.{service}.loadBalancer.healthCheck"
        if config.mode not in ("", "http"):
            raise ConfigError(
                f'healthCheck mode {config.mode!r} is not supported (only "http")',
                path=f"{where}.mode",
            )
        if not _TOKEN.fullmatch(config.method or "GET"):
            raise ConfigError(f"invalid method {config.method!r}", path=f"{where}.method")
        if config.hostname and not _HOST.fullmatch(config.hostname):
            raise ConfigError(f"invalid hostname {config.hostname!r}", path=f"{where}.hostname")
        self._config = config
        self._service = service
        self._on_change = on_change
        self._ssl = ssl_context
        self._interval = config.interval if config.interval > 0 else DEFAULT_INTERVAL
        self._down_interval = (
            config.unhealthy_interval if config.unhealthy_interval > 0 else self._interval
        )
        self._timeout = config.timeout if config.timeout > 0 else DEFAULT_TIMEOUT
        self._headers = _header_lines(config, f"{where}.headers")
        self._up: dict[HealthTarget, bool] = dict.fromkeys(targets, True)
        for target, up in (initial_status or {}).items():
            if target in self._up:
                self._up[target] = up
        for target in self._up:
            try:
                parts = urlsplit(target.url)
                url = self.check_url(target)
                valid = bool(
                    parts.scheme in _DEFAULT_PORTS
                    and url.scheme in _DEFAULT_PORTS
                    and parts.hostname
                    and url.hostname
                )
                url.geturl().encode("ascii")
                _ = url.port  # raises for an out-of-range port
            except (ValueError, UnicodeEncodeError):
                valid = False
            if not valid:
                raise ConfigError(
                    f"cannot health-check {target.url!r}: not an ASCII http(s) URL with a host",
                    path=f"http.services.{service}.loadBalancer.servers",
                )

    @property
    def status(self) -> Mapping[HealthTarget, bool]:
        """The current state of every target (True: up)."""
        return MappingProxyType(self._up)

    async def run(self) -> None:
        """Check every target until cancelled."""
        if not self._up:
            await asyncio.Event().wait()
        async with asyncio.TaskGroup() as group:
            for target in self._up:
                group.create_task(self._watch(target), name=f"healthcheck {target.url}")

    async def check_once(self, target: HealthTarget) -> bool:
        """One check of ``target`` now; True if healthy. Changes no state."""
        return await self._probe(target) is None

    async def _watch(self, target: HealthTarget) -> None:
        while True:
            reason = await self._probe(target)
            up = reason is None
            if up != self._up[target]:
                self._up[target] = up
                if up:
                    log.info("service %s: server %s is up", self._service, target.url)
                else:
                    log.warning(
                        "service %s: server %s is down: %s", self._service, target.url, reason
                    )
                try:
                    self._on_change(target, up)
                except Exception:
                    log.exception("service %s: health status listener failed", self._service)
            await asyncio.sleep(self._interval if up else self._down_interval)

    async def _probe(self, target: HealthTarget) -> str | None:
        """None if healthy, else why not."""
        try:
            async with asyncio.timeout(self._timeout):
                status = await self._follow(target)
        except TimeoutError:
            return f"no response within {self._timeout:g}s"
        # ssl.SSLError is an OSError; ValueError covers a Location with a bad port.
        except (OSError, ValueError, _BadResponse) as exc:
            return f"{type(exc).__name__}: {exc}"
        expected = self._config.status
        if expected and status != expected:
            return f"status {status}, expected {expected}"
        if not expected and not 200 <= status < 400:
            return f"status {status}"
        return None

    async def _follow(self, target: HealthTarget) -> int:
        url = self.check_url(target)
        method = self._config.method.upper() or "GET"
        host = self._config.hostname or url.netloc.rpartition("@")[2]
        for _ in range(MAX_REDIRECTS + 1):
            status, location = await self._exchange(url, method, host)
            if not (self._config.follow_redirects and status in _REDIRECTS and location):
                return status
            nxt = urlsplit(urljoin(url.geturl(), location))
            if _origin(nxt) != _origin(url):
                return status
            if status == 303 and method != "HEAD":
                method = "GET"  # as Go's client does, and browsers
            elif status in (301, 302) and method == "POST":
                method = "GET"
            url = nxt
        raise _BadResponse(f"stopped after {MAX_REDIRECTS} redirects")

    def check_url(self, target: HealthTarget) -> SplitResult:
        """The URL a check of ``target`` requests first."""
        parts = urlsplit(urljoin(target.url, self._config.path))
        scheme = self._config.scheme.lower() or parts.scheme
        netloc = parts.netloc
        if self._config.port:
            host = parts.hostname or ""
            netloc = f"[{host}]" if ":" in host else host
            netloc += f":{self._config.port}"
        return parts._replace(scheme=scheme, netloc=netloc, fragment="")

    async def _exchange(self, url: SplitResult, method: str, host: str) -> tuple[int, str]:
        """Send one request; the status and Location of its final response head."""
        https = url.scheme == "https"
        context = None
        if https:
            context = self._ssl or _default_client_context()
        hostname = url.hostname or ""
        port = url.port or _DEFAULT_PORTS.get(url.scheme, 80)
        reader, writer = await asyncio.open_connection(
            hostname,
            port,
            ssl=context,
            server_hostname=hostname if https else None,
            limit=MAX_HEAD_BYTES,
        )
        try:
            target = url.path or "/"
            if url.query:
                target += "?" + url.query
            body_len = "" if method in ("GET", "HEAD") else "Content-Length: 0\r\n"
            writer.write(
                f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"
                f"User-Agent: sluice-healthcheck\r\n{self._headers}{body_len}"
                "Connection: close\r\n\r\n".encode("latin-1")
            )
            await writer.drain()
            while True:
                status, location = _parse_head(await _read_head(reader))
                # 1xx interim responses precede the real one (RFC 9110 section 15.2).
                if not 100 <= status < 200 or status == 101:
                    return status, location
        except BaseException:
            writer.transport.abort()
            raise
        finally:
            writer.close()


def _origin(url: SplitResult) -> tuple[str, str, int]:
    return (url.scheme, (url.hostname or "").lower(), url.port or _DEFAULT_PORTS.get(url.scheme, 0))


def _header_lines(config: HealthCheck, where: str) -> str:
    lines = []
    for name, value in config.headers.items():
        if not _TOKEN.fullmatch(name) or any(c in value for c in "\r\n\0"):
            raise ConfigError(f"invalid header {name!r}: {value!r}", path=where)
        if name.lower() != "host":
            lines.append(f"{name}: {value}\r\n")
    return "".join(lines)


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise _BadResponse("connection closed before a complete response head") from exc
    except asyncio.LimitOverrunError as exc:
        raise _BadResponse("response head too large") from exc


def _parse_head(head: bytes) -> tuple[int, str]:
    status_line, *fields = head.split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise _BadResponse(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    location = ""
    for field in fields:
        name, _, value = field.partition(b":")
        if name.strip().lower() == b"location":
            location = value.strip().decode("latin-1")
    return int(parts[1]), location


@functools.cache
def _default_client_context() -> ssl.SSLContext:
    """System roots, like Go's default transport; built once, on first use."""
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
