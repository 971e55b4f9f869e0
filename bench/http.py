"""Per-core HTTP proxy throughput: Sluice beside Traefik, nginx, HAProxy and Envoy.

One nginx backend answers every request with a fixed 200 "ok\\n". wrk drives
keep-alive connections with ``Host: bench.local`` (and the same Basic
credentials in every case) at the backend directly, then at each proxy in
turn, each proxy routing that host to the backend. The ``-mw`` cases put
basicAuth, ipAllowList and headers on that route (issue #3's case). Each proxy
gets one core's worth of workers and is pinned to one CPU; wrk and the backend
share the other (see bench/README.md for why). For every case: requests/s, p50
and p99 latency, the largest RSS of the proxy's process tree under load, the CPU
it used, and the error counts, then the ratios to Traefik and to HAProxy.

A case that cannot start (Sluice before its CLI exists, a peer not installed)
is reported as failed and the others still run. Exit status: 0 when every case
ran, 1 when some case failed, 2 when the backend or wrk could not be used.

Run from the repository root: ``.venv/bin/python bench/http.py [--duration 10]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named http.py: with its own folder first on sys.path it would
# shadow the standard library's ``http`` package for everything imported after.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402

from bench import peers, report, wrk  # noqa: E402
from bench.harness import (  # noqa: E402
    LOOPBACK,
    Pinning,
    Proc,
    StartError,
    Supervisor,
    default_pinning,
    free_ports,
    pin_self,
    sample_cpu,
    sample_tree,
    selected_cases,
)

CASES = ("direct", "sluice", "sluice-mw", "traefik", "traefik-mw", "nginx", "haproxy", "envoy")
LABELS = {
    "direct": "backend direct",
    "sluice": "Sluice",
    "sluice-mw": "Sluice + middlewares",
    "traefik": "Traefik",
    "traefik-mw": "Traefik + middlewares",
    "nginx": "nginx",
    "haproxy": "HAProxy",
    "envoy": "Envoy",
}

Builder = Callable[[Path, int], peers.Launch]


@dataclass(slots=True)
class CaseResult:
    name: str
    ok: bool
    error: str = ""
    result: wrk.WrkResult | None = None
    max_rss_kib: int | None = None
    cpu_percent: float | None = None
    # How busy the wrk + backend CPU was: near 100 means the load side set the limit.
    load_cpu_percent: float | None = None
    # Requests/s of every successful round (--repeat); the figures above are the median's.
    rps_runs: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["result"] = self.result.as_dict() if self.result else None
        return out


def median_run(name: str, runs: list[CaseResult]) -> CaseResult:
    """The round with the median requests/s, carrying every round's figure."""
    good = sorted((r for r in runs if r.ok and r.result), key=lambda r: r.result.rps if r.result
                  else 0.0)
    if not good:
        return runs[-1] if runs else CaseResult(name, ok=False, error="not run")
    chosen = good[(len(good) - 1) // 2]
    chosen.rps_runs = [r.result.rps for r in runs if r.ok and r.result]
    failed = [r.error for r in runs if not r.ok]
    if failed:
        chosen.error = f"{len(failed)} of {len(runs)} rounds failed; first: {failed[0]}"
    return chosen


def builders(backend_port: int) -> dict[str, Builder]:
    """For each proxy, a function from its work directory and port to its Launch."""
    return {
        "sluice": lambda d, p: peers.sluice(d, p, free_ports(1)[0], backend_port),
        "sluice-mw": lambda d, p: peers.sluice(
            d, p, free_ports(1)[0], backend_port, middlewares=True
        ),
        "traefik": lambda d, p: peers.traefik(d, p, free_ports(1)[0], backend_port),
        "traefik-mw": lambda d, p: peers.traefik(
            d, p, free_ports(1)[0], backend_port, middlewares=True
        ),
        "nginx": lambda d, p: peers.nginx_proxy(d, p, backend_port),
        "haproxy": lambda d, p: peers.haproxy(d, p, backend_port),
        "envoy": lambda d, p: peers.envoy(d, p, backend_port),
    }


def measure(proc: Proc, port: int, params: wrk.WrkParams, warmup: float,
            headers: tuple[str, ...] = ()) -> CaseResult:
    """Warm up, then run wrk once while sampling the process tree."""
    if warmup > 0:
        wrk.run(port, peers.BENCH_HOST, params, duration=warmup, headers=headers)
    with sample_tree(proc.pid) as sample, sample_cpu(params.cpu) as load:
        result = wrk.run(port, peers.BENCH_HOST, params, headers=headers)
    if not proc.alive():
        return CaseResult(proc.name, ok=False, error=f"exited during the run:\n{proc.log_tail()}")
    return CaseResult(
        proc.name, ok=True, result=result,
        max_rss_kib=sample.max_rss_kib, cpu_percent=sample.cpu_percent,
        load_cpu_percent=load[0] if load else None,
    )


def run_case(name: str, sup: Supervisor, build: Builder, pinning: Pinning,
             params: wrk.WrkParams, warmup: float, round_no: int) -> CaseResult:
    workdir = sup.workdir / f"{name}-{round_no}"
    workdir.mkdir()
    proc: Proc | None = None
    try:
        launch = build(workdir, free_ports(1)[0])
        proc = peers.start(sup, launch, pinning.proxy)
        # Every case gets the same request, so a "-mw" case differs from its
        # plain twin by the middleware's work alone.
        result = measure(proc, launch.port, params, warmup, (peers.BENCH_AUTH_HEADER,))
        result.name = name
        return result
    except (StartError, peers.MissingProgram, wrk.WrkError) as exc:
        return CaseResult(name, ok=False, error=str(exc))
    except Exception as exc:  # a broken case must not stop the others
        return CaseResult(name, ok=False, error=f"{type(exc).__name__}: {exc}")
    finally:
        if proc is not None:
            sup.stop(proc)


def print_report(results: list[CaseResult], pinning: Pinning, params: wrk.WrkParams) -> None:
    rps = {r.name: r.result.rps for r in results if r.ok and r.result}
    base = {k: rps.get(k) for k in ("traefik", "haproxy")}
    rows = []
    for r in results:
        w = r.result
        rows.append([
            LABELS[r.name],
            fmt_int(w.rps) if w else "FAILED",
            report.fmt(w.p50_ms) if w else "-",
            report.fmt(w.p99_ms) if w else "-",
            report.fmt(r.max_rss_kib / 1024, 1) if r.max_rss_kib else "-",
            report.fmt(r.cpu_percent, 0) if r.cpu_percent is not None else "-",
            report.fmt(r.load_cpu_percent, 0) if r.load_cpu_percent is not None else "-",
            str(w.non2xx) if w else "-",
            str(w.socket_errors) if w else "-",
            report.fmt(report.ratio(w.rps if w else None, base["traefik"])),
            report.fmt(report.ratio(w.rps if w else None, base["haproxy"])),
            spread(r.rps_runs),
        ])
    print()
    print(f"wrk: {params.connections} connections, {params.threads} threads,"
          f" {params.duration:g}s, keep-alive, Host: {peers.BENCH_HOST}; {pinning.describe()}")
    print(report.table(
        ["case", "req/s", "p50 ms", "p99 ms", "RSS MiB", "CPU %", "load CPU %", "non-2xx",
         "sock err", "x Traefik", "x HAProxy", "rounds req/s"],
        rows,
    ))
    for proxy in ("sluice", "traefik"):
        kept = report.ratio(rps.get(f"{proxy}-mw"), rps.get(proxy))
        if kept is not None:
            print(f"{LABELS[proxy]} with basicAuth + ipAllowList + headers keeps"
                  f" {kept:.2f} of its throughput without them"
                  + (" (target: at least 0.85)" if proxy == "sluice" else ""))
    for r in results:
        if r.error:
            print(f"\n{LABELS[r.name]} {'failed' if not r.ok else 'partly failed'}: {r.error}")


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return "-"
    return f"{min(values):,.0f}-{max(values):,.0f}"


def fmt_int(value: float) -> str:
    return f"{value:,.0f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds over all cases; the median round of each is reported")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (it has one CPU)")
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help=f"run only these (repeatable, or comma-separated): {', '.join(CASES)}")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write the results here")
    ap.add_argument("--proxy-cpu", type=int, help="CPU for the proxy under test")
    ap.add_argument("--load-cpu", type=int, help="CPU for wrk and the backend")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    args = ap.parse_args(argv)
    args.cases = selected_cases(ap, args.only, CASES)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk not found (apt-get install wrk)", file=sys.stderr)
        return 2
    pinning = default_pinning(args.proxy_cpu, args.load_cpu)
    pin_self(pinning)
    params = wrk.WrkParams(duration=args.duration, connections=args.connections,
                           threads=args.threads, cpu=pinning.load)
    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    results: list[CaseResult] = []
    try:
        with Supervisor(workdir) as sup:
            backend_port = free_ports(1)[0]
            (workdir / "backend").mkdir()
            try:
                backend = peers.start(sup, peers.backend(workdir / "backend", backend_port),
                                pinning.load)
            except (StartError, peers.MissingProgram) as exc:
                print(f"backend: {exc}", file=sys.stderr)
                return 2
            build = builders(backend_port)
            runs: dict[str, list[CaseResult]] = {name: [] for name in args.cases}
            # Rounds go through every case in turn, so a noisy minute on a shared
            # machine spoils one round of each case rather than every round of one.
            for round_no in range(1, args.repeat + 1):
                for name in args.cases:
                    print(f"[{round_no}/{args.repeat}] {LABELS[name]} ...", end="",
                          flush=True, file=sys.stderr)
                    if name == "direct":
                        try:
                            res = measure(backend, backend_port, params, args.warmup,
                                          (peers.BENCH_AUTH_HEADER,))
                            res.name = "direct"
                        except wrk.WrkError as exc:
                            res = CaseResult("direct", ok=False, error=str(exc))
                    else:
                        res = run_case(name, sup, build[name], pinning, params, args.warmup,
                                       round_no)
                    runs[name].append(res)
                    print(f" {fmt_int(res.result.rps) + ' req/s' if res.result else 'failed'}",
                          file=sys.stderr)
            results = [median_run(name, runs[name]) for name in args.cases]
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_report(results, pinning, params)
    if args.json:
        report.write_json(
            args.json, "http",
            {"duration": args.duration, "warmup": args.warmup, "repeat": args.repeat,
             "connections": args.connections,
             "threads": args.threads, "pinning": asdict(pinning), "host": peers.BENCH_HOST,
             "backend": f"nginx 1 worker, return 200 on {LOOPBACK}"},
            [r.as_dict() for r in results],
        )
        print(f"\nwrote {args.json}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; every process started was ended", file=sys.stderr)
        sys.exit(130)
