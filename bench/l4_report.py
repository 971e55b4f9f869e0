"""The L4 benchmark's printed tables: one per test, with per-unit CPU and ratios.

Works on the plain dicts bench/l4.py also writes as JSON, so what is printed
and what is recorded cannot drift apart. Ratios are to Traefik and to HAProxy
for the TCP tests, and to Traefik and nginx for UDP, which HAProxy does not
proxy. The per-unit CPU column (the proxy's CPU time divided by the work it
moved) compares proxies fairly even where the load side, not the proxy, set
the rate. "other CPU %" is what processes outside the benchmark used during
the run: on a shared machine, a row where it is high was disturbed.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from bench import report
from bench.harness import Pinning

LABELS = {
    "direct": "backend direct",
    "sluice": "Sluice",
    "traefik": "Traefik",
    "haproxy": "HAProxy",
    "nginx": "nginx stream",
}
UNITS = {"bulk": "MiB/s", "conn": "conn/s", "udp": "round trips/s"}
# Proxy CPU per unit of work: microseconds per MiB, per connection, per round trip.
PER_UNIT = {"bulk": "CPU us/MiB", "conn": "CPU us/conn", "udp": "CPU us/rt"}
BASES = {"bulk": ("traefik", "haproxy"), "conn": ("traefik", "haproxy"),
         "udp": ("traefik", "nginx")}
TITLES = {
    "bulk": "Bulk TCP throughput (download, {streams} streams)",
    "conn": "New TCP connections per second (wrk, {connections} connections,"
            " Connection: close, HTTP backend)",
    "udp": "UDP request/response ({clients} clients, {size}-byte datagrams, one outstanding each)",
}


def rate_text(res: Any) -> str:
    """One progress word for a finished case (a CaseResult of bench/l4.py)."""
    if not res.ok or res.rate is None:
        return "failed"
    return f"{res.rate:,.0f} {UNITS[res.test]}"


def _cpu_per_unit(r: Mapping[str, Any]) -> float | None:
    if not r["rate"] or r["cpu_percent"] is None:
        return None
    return float(r["cpu_percent"]) / 100.0 / float(r["rate"]) * 1e6


def _rows(test: str, results: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    mine = [r for r in results if r["test"] == test]
    rates = {r["name"]: r["rate"] for r in mine if r["ok"]}
    bases = [rates.get(b) for b in BASES[test]]
    rows = []
    for r in mine:
        ok = r["ok"] and r["rate"] is not None
        rate = r["rate"] if ok else None
        d = r["detail"]
        row = [
            LABELS[r["name"]],
            f"{rate:,.0f}" if rate is not None else "FAILED",
        ]
        if test == "bulk":
            row.append(f"{d['min_stream_mib_per_s']:,.0f}-{d['max_stream_mib_per_s']:,.0f}"
                       if ok else "-")
        else:
            row += [report.fmt(r["p50_ms"] if ok else None),
                    report.fmt(r["p99_ms"] if ok else None)]
        if test == "conn":
            row.append(f"{d['non2xx']}/{d['socket_errors']}" if ok else "-")
        if test == "udp":
            row.append(str(d["lost"]) if ok else "-")
        row += [
            report.fmt(_cpu_per_unit(r) if ok else None, 1),
            report.fmt(r["max_rss_kib"] / 1024, 1) if ok and r["max_rss_kib"] else "-",
            report.fmt(r["cpu_percent"], 0) if ok and r["cpu_percent"] is not None else "-",
            report.fmt(r["load_cpu_percent"], 0)
            if ok and r["load_cpu_percent"] is not None else "-",
            report.fmt(r["other_cpu_percent"], 0)
            if ok and r["other_cpu_percent"] is not None else "-",
            *(report.fmt(report.ratio(rate, b)) for b in bases),
            _spread(r["rounds"]),
        ]
        rows.append(row)
    return rows


def _headers(test: str) -> list[str]:
    head = ["case", UNITS[test]]
    if test == "bulk":
        head.append("per stream")
    else:
        head += ["p50 ms", "p99 ms"]
    if test == "conn":
        head.append(">=400/sock err")
    if test == "udp":
        head.append("lost")
    head += [PER_UNIT[test], "RSS MiB", "CPU %", "load CPU %", "other CPU %",
             *(f"x {LABELS[b].split()[0]}" for b in BASES[test]), "rounds"]
    return head


def _spread(values: Sequence[float]) -> str:
    if len(values) < 2:
        return "-"
    return f"{min(values):,.0f}-{max(values):,.0f}"


def print_report(results: Sequence[Mapping[str, Any]], pinning: Pinning,
                 args: argparse.Namespace) -> None:
    """Print one table per test that ran, then every case's error."""
    print()
    print(f"{args.duration:g}s measured + {args.warmup:g}s warm-up per case;"
          f" {pinning.describe()}")
    for test in ("bulk", "conn", "udp"):
        if not any(r["test"] == test for r in results):
            continue
        print()
        print(TITLES[test].format(**vars(args)))
        print(report.table(_headers(test), _rows(test, results)))
    for r in results:
        if r["error"]:
            state = "failed" if not r["ok"] else "partly failed"
            print(f"\n{r['test']} {LABELS[r['name']]} {state}: {r['error']}")
