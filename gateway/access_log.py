"""The access log: one line per finished request, in Traefik's formats.

``common`` is Traefik's CLF variant::

    <ip> - <user> [<time>] "<method> <path> <proto>" <status> <size> "<referer>" "<ua>"
        <count> "<router>" "<upstream>" <ms>ms

and ``json`` uses Traefik's field names (``ClientHost``, ``DownstreamStatus``,
``Duration`` in nanoseconds, ``request_User-Agent``, ...), so log pipelines
written for Traefik parse Sluice's lines unchanged.

Invariants:

* Nothing here runs unless the access log is enabled: the data path holds
  ``AccessLog | None`` and builds an ``AccessEntry`` only when it is set.
* ``log`` never blocks the event loop per request. Lines are buffered and
  written in one ``write`` per event-loop tick (``bufferingSize: 0``), or once
  ``bufferingSize`` lines or 64 KiB have gathered, with a short timer so a
  quiet gateway still writes its lines out. ``close`` writes what is left.
* A failing write (disk full, closed pipe) drops those lines and is reported
  once on this module's logger; it never fails a request.

Lines are written directly to the file or stdout rather than through
``logging``, whose per-record locking and formatting cost more than the line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from gateway.config.static import AccessLog as AccessLogConfig

log = logging.getLogger(__name__)

FORMATS = ("common", "json")
# Past this many buffered characters a flush happens at once, whatever the line count.
MAX_BUFFER_CHARS = 64 * 1024
# Unbounded-by-config buffering still needs a line cap, or one busy tick holds MBs.
DEFAULT_MAX_LINES = 1024
# How long buffered lines may wait when ``bufferingSize`` is set and traffic is low.
DEFAULT_FLUSH_INTERVAL = 1.0

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# A quote, backslash or control character would let a client forge fields or
# lines in CLF; they are escaped as Apache's mod_log_config does.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f"\\]')


@dataclass(slots=True, kw_only=True)
class AccessEntry:
    """What the data path knows about one finished request."""

    client_host: str
    client_port: int = 0
    start: float  # Unix time at which the request head arrived
    method: str
    path: str  # the request target (path and query) as the client sent it
    protocol: str = "HTTP/1.1"
    status: int
    size: int = 0  # response body bytes sent to the client
    duration: float = 0.0  # seconds
    router: str = ""
    service: str = ""
    service_url: str = ""  # the server URL the request went to
    entry_point: str = ""
    host: str = ""
    scheme: str = "http"
    user_agent: str = ""
    referer: str = ""
    username: str = ""
    retry_attempts: int = 0
    request_count: int = 0  # 0: the access log numbers requests itself
    request_id: str = ""


def _escape(value: str) -> str:
    if _UNSAFE.search(value) is None:
        return value
    return _UNSAFE.sub(_escape_char, value)


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in '"\\':
        return "\\" + char
    return f"\\x{ord(char):02x}"


def _quoted(value: str) -> str:
    return f'"{_escape(value)}"' if value else '"-"'


def _rfc3339(start: float, *, utc: bool) -> str:
    moment = datetime.fromtimestamp(start, UTC) if utc else datetime.fromtimestamp(start)
    if utc:
        return moment.isoformat().replace("+00:00", "Z")
    return moment.astimezone().isoformat()


def _hostname(host: str) -> str:
    """The Host header without its port: ``[::1]:80`` -> ``::1``, ``a.b:80`` -> ``a.b``."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.partition(":")[0]


def _host_port(url: str) -> str:
    try:
        return urlsplit(url).netloc.rpartition("@")[2]
    except ValueError:
        return ""


def _open(path: Path) -> TextIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a", encoding="utf-8", errors="backslashreplace", newline="\n")


class AccessLog:
    """Formats and writes access log lines; one instance per process."""

    def __init__(
        self,
        config: AccessLogConfig,
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
    ) -> None:
        self.config = config
        self.format = config.format
        if self.format not in FORMATS:
            # Traefik logs the mistake and falls back to CLF rather than refusing to start.
            log.error("accessLog: unsupported format %r, using common", config.format)
            self.format = "common"
        self._format_line = self._json if self.format == "json" else self._common
        self._path = Path(config.file_path) if config.file_path else None
        self._file: TextIO | None = _open(self._path) if self._path is not None else None
        self._closed = False
        self._max_lines = config.buffering_size if config.buffering_size > 0 else DEFAULT_MAX_LINES
        self._delay = flush_interval if config.buffering_size > 0 else 0.0
        self._lines: list[str] = []
        self._chars = 0
        self._pending: asyncio.Handle | asyncio.TimerHandle | None = None
        self._count = 0
        self._failing = False
        self._clf_second = -1
        self._clf_time = ""

    # --- the per-request call --------------------------------------------------

    def log(self, entry: AccessEntry) -> None:
        """Format one request and queue its line for writing."""
        self._count += 1
        if not entry.request_count:
            entry.request_count = self._count
        self.write_line(self._format_line(entry))

    def write_line(self, line: str) -> None:
        """Queue one formatted line (ending in a newline); TCP/UDP lines come this way."""
        self._lines.append(line)
        self._chars += len(line)
        if len(self._lines) >= self._max_lines or self._chars >= MAX_BUFFER_CHARS:
            self.flush()
        elif self._pending is None:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # Called outside a loop (tools, shutdown paths): nothing would flush later.
            self.flush()
            return
        if self._delay > 0:
            self._pending = loop.call_later(self._delay, self.flush)
        else:
            self._pending = loop.call_soon(self.flush)

    # --- formats ------------------------------------------------------------------

    def _common(self, e: AccessEntry) -> str:
        second = int(e.start)
        if second != self._clf_second:
            t = time.gmtime(second)
            # Month names are spelled out here: strftime's %b follows the locale.
            self._clf_time = (
                f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
            )
            self._clf_second = second
        return (
            f"{e.client_host or '-'} - {_escape(e.username) or '-'} [{self._clf_time}] "
            f'"{e.method} {_escape(e.path)} {e.protocol}" {e.status} {e.size} '
            f"{_quoted(e.referer)} {_quoted(e.user_agent)} {e.request_count} "
            f"{_quoted(e.router)} {_quoted(e.service_url)} {int(e.duration * 1000)}ms\n"
        )

    def _json(self, e: AccessEntry) -> str:
        client_addr = f"[{e.client_host}]" if ":" in e.client_host else e.client_host
        fields: dict[str, object] = {
            "ClientAddr": f"{client_addr}:{e.client_port}",
            "ClientHost": e.client_host,
            # Traefik splits "host:port" strings, so its ClientPort is a string too.
            "ClientPort": str(e.client_port),
            "ClientUsername": e.username or "-",
            "DownstreamContentSize": e.size,
            "DownstreamStatus": e.status,
            "Duration": int(e.duration * 1e9),
            "EntryPointName": e.entry_point,
            "RequestAddr": e.host,
            "RequestCount": e.request_count,
            "RequestHost": _hostname(e.host),
            "RequestMethod": e.method,
            "RequestPath": e.path,
            "RequestProtocol": e.protocol,
            "RequestScheme": e.scheme,
            "RetryAttempts": e.retry_attempts,
            "StartLocal": _rfc3339(e.start, utc=False),
            "StartUTC": _rfc3339(e.start, utc=True),
            "level": "info",
            "msg": "",
            "time": _rfc3339(e.start + e.duration, utc=False),
        }
        if e.router:
            fields["RouterName"] = e.router
        if e.service:
            fields["ServiceName"] = e.service
        if e.service_url:
            fields["ServiceURL"] = e.service_url
            fields["ServiceAddr"] = _host_port(e.service_url)
        if e.referer:
            fields["request_Referer"] = e.referer
        if e.user_agent:
            fields["request_User-Agent"] = e.user_agent
        if e.request_id:
            fields["request_X-Request-Id"] = e.request_id
        # Sorted like logrus' JSON formatter, which Traefik uses.
        return json.dumps(fields, sort_keys=True, separators=(",", ":")) + "\n"

    # --- output -------------------------------------------------------------------

    def flush(self) -> None:
        """Write every buffered line now."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if not self._lines:
            return
        if self._closed:
            # Requests finishing during shutdown, after close(): nowhere to write.
            self._lines.clear()
            self._chars = 0
            return
        chunk = "".join(self._lines)
        self._lines.clear()
        self._chars = 0
        stream = self._file if self._file is not None else sys.stdout
        try:
            stream.write(chunk)
            stream.flush()
        except (OSError, ValueError) as exc:
            if not self._failing:
                log.warning("accessLog: cannot write to %s: %s", self._where(), exc)
            self._failing = True
        else:
            if self._failing:
                log.warning("accessLog: writing to %s again", self._where())
            self._failing = False

    def _where(self) -> str:
        return str(self._path) if self._path is not None else "stdout"

    def reopen(self) -> None:
        """Flush, then reopen the file: the rotation hook (Traefik does this on USR1)."""
        self.flush()
        if self._file is not None and self._path is not None and not self._closed:
            self._close_file()
            self._file = _open(self._path)

    def close(self) -> None:
        """Write what is buffered and close the file."""
        self.flush()
        self._closed = True
        self._close_file()

    def _close_file(self) -> None:
        if self._file is None:
            return
        try:
            self._file.close()
        except OSError as exc:
            # close() retries bytes an earlier failed write left in the buffer.
            log.warning("accessLog: lines lost closing %s: %s", self._where(), exc)
