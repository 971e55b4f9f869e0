"""Running wrk and reading its report.

Owns the one wrk invocation every benchmark uses (keep-alive connections, a
fixed Host header, ``--latency``) and the parser for its text output. wrk has
no machine-readable output without a Lua script; its text format has been
stable for years, and the parser fails loudly rather than guess when a line it
needs is missing.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

from bench.harness import LOOPBACK, pinned

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = r"([\d.]+)(us|ms|s|m|h)"


class WrkError(RuntimeError):
    """wrk failed to run or printed something this parser does not understand."""


@dataclass(frozen=True, slots=True)
class WrkParams:
    duration: float
    connections: int
    threads: int
    cpu: int | None


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    # wrk counts responses with status > 399 here, despite its "Non-2xx or 3xx" label.
    non2xx: int
    socket_errors: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse(text: str) -> WrkResult:
    """Read requests/s, the latency percentiles and the error counts from wrk's output."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    total = re.search(r"^\s*(\d+) requests in " + _TIME, text, re.M)
    p50 = re.search(r"^\s*50(?:\.0+)?%\s+" + _TIME, text, re.M)
    p99 = re.search(r"^\s*99(?:\.0+)?%\s+" + _TIME, text, re.M)
    if not (rps and total and p50 and p99):
        raise WrkError(f"unexpected wrk output (was --latency given?):\n{text}")
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=_ms(total.group(2), total.group(3)) / 1000.0,
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1), p50.group(2)),
        p99_ms=_ms(p99.group(1), p99.group(2)),
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(n) for n in sock.groups()) if sock else 0,
    )


def command(port: int, host: str, params: WrkParams, duration: float | None = None,
            headers: tuple[str, ...] = ()) -> list[str]:
    secs = params.duration if duration is None else duration
    argv = [
        "wrk",
        f"--threads={params.threads}",
        f"--connections={params.connections}",
        f"--duration={max(1, round(secs))}s",
        "--latency",
        "--header",
        f"Host: {host}",
    ]
    for header in headers:
        argv += ["--header", header]
    argv.append(f"http://{LOOPBACK}:{port}/")
    return pinned(argv, params.cpu)


def run(port: int, host: str, params: WrkParams, duration: float | None = None,
        headers: tuple[str, ...] = ()) -> WrkResult:
    """Run wrk against ``127.0.0.1:port`` with ``Host: host`` and parse its report."""
    argv = command(port, host, params, duration, headers)
    secs = params.duration if duration is None else duration
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=secs + 30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WrkError(f"wrk did not complete: {exc}") from exc
    if done.returncode != 0:
        raise WrkError(f"wrk exited {done.returncode}: {done.stderr.strip() or done.stdout}")
    return parse(done.stdout)
