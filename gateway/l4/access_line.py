"""Access-log lines for TCP connections and UDP sessions.

Traefik writes no access log for TCP or UDP; Sluice writes one line per
relayed (or refused) connection and per UDP session, through the same
``AccessLog`` buffer and in the same two formats:

``common``::

    <ip> - - [<time>] "TCP <entry point> <sni or ->" <reason> <bytes in> <bytes out>
        "<router>" "<server>" <ms>ms

``json`` (keys sorted, as for requests): ``Protocol`` (``tcp``/``udp``),
``EntryPointName``, ``RouterName``, ``ServiceName``, ``ClientAddr``,
``ClientHost``, ``ClientPort``, ``ServiceAddr``, ``TLSServerName``,
``Duration`` (ns), ``StartUTC``, ``BytesIn`` (client to server),
``BytesOut``, ``DatagramsIn``/``DatagramsOut`` (UDP), ``Reason`` (how it
ended: closed, idle, reset, error, connect_failed, terminated, shutdown, or
rejected) and ``RejectedBy`` (the middleware that refused it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(slots=True, kw_only=True)
class L4Entry:
    protocol: str  # "tcp" or "udp"
    entry_point: str
    router: str
    service: str
    client_host: str
    client_port: int
    server: str = ""  # host:port
    sni: str | None = None
    start: float  # Unix time
    duration: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    datagrams_in: int = 0
    datagrams_out: int = 0
    reason: str = ""
    rejected_by: str = ""


def common_line(e: L4Entry) -> str:
    t = time.gmtime(int(e.start))
    stamp = (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )
    return (
        f'{e.client_host or "-"} - - [{stamp}] '
        f'"{e.protocol.upper()} {e.entry_point} {e.sni or "-"}" {e.reason} '
        f"{e.bytes_in} {e.bytes_out} {json.dumps(e.router)} {json.dumps(e.server)} "
        f"{int(e.duration * 1000)}ms\n"
    )


def json_line(e: L4Entry) -> str:
    host = f"[{e.client_host}]" if ":" in e.client_host else e.client_host
    fields: dict[str, object] = {
        "Protocol": e.protocol,
        "EntryPointName": e.entry_point,
        "RouterName": e.router,
        "ServiceName": e.service,
        "ClientAddr": f"{host}:{e.client_port}",
        "ClientHost": e.client_host,
        "ClientPort": str(e.client_port),
        "ServiceAddr": e.server,
        "TLSServerName": e.sni or "",
        "Duration": int(e.duration * 1e9),
        "StartUTC": datetime.fromtimestamp(e.start, UTC).isoformat().replace("+00:00", "Z"),
        "BytesIn": e.bytes_in,
        "BytesOut": e.bytes_out,
        "Reason": e.reason,
        "level": "info",
        "msg": "",
    }
    if e.protocol == "udp":
        fields["DatagramsIn"] = e.datagrams_in
        fields["DatagramsOut"] = e.datagrams_out
    if e.rejected_by:
        fields["RejectedBy"] = e.rejected_by
    return json.dumps(fields, sort_keys=True, separators=(",", ":")) + "\n"
