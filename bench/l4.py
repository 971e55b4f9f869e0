"""Per-core L4 proxying: bulk TCP throughput, new-connection rate and UDP request/response.

Three tests, each through Sluice, Traefik, HAProxy (``mode tcp``) and nginx
(``stream``), each proxy on one core in front of the same backend, and
"direct" (the load straight at the backend) for the load side's ceiling:

- bulk: 4 connections each download an endless stream (1 MiB sends of
  zeros) for the run; the proxy copies every byte from one socket to another,
  which is its relay cost per byte. One direction, so the figure is simply
  MiB/s moved; the relay code is the same both ways in every proxy measured.
  The reader splices to /dev/null, so the load side's cost is the backend's
  send and the kernel's, and its ceiling stays well above the proxies.
- conn: wrk with ``Connection: close`` against nginx ``return 200`` behind
  the TCP proxy: every request is a new TCP connection through the proxy
  (accept, dial the server, relay about 100 bytes each way, two closes), so
  requests/s is new connections/s. wrk is C; nothing in Python opens
  connections fast enough to saturate the C proxies. Its p50/p99 run from
  the request's write to the response; the connect is not in them.
- udp: 64 UDP clients (64 source ports, so 64 sessions in the proxy), one
  64-byte request outstanding each, against a UDP echo, through Sluice,
  Traefik and nginx (HAProxy has no UDP): round trips/s (each is two
  datagrams through the proxy) and the RTT's p50 and p99.

For every case: the figure, the CPU the proxy's process tree used (near 100:
the proxy was the limit), how busy the load CPU was (near 100: the load side
was, and the figure is a lower bound), the proxy's CPU per unit of work, its
largest RSS, the CPU that processes outside the benchmark took meanwhile (on
a shared machine, a disturbed run shows there), and ratios to Traefik and to
HAProxy (to nginx for UDP). The
layout, pinning and process handling are bench/http.py's; see
bench/README.md.

Exit status: 0 when every case ran, 1 when some case failed (reported with its
reason; the others still run), 2 when a backend or wrk could not be used, 130
on Ctrl-C. Run from the repository root: ``.venv/bin/python bench/l4.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would shadow the standard library's ``http`` with bench/ first on sys.path.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

from bench import l4_load, l4_peers, l4_report, peers, report, wrk  # noqa: E402
from bench.harness import (  # noqa: E402
    Pinning,
    Proc,
    StartError,
    Supervisor,
    cpu_seconds,
    default_pinning,
    free_ports,
    pin_self,
    process_tree,
    sample_cpu,
    sample_tree,
    selected_cases,
)

TESTS = ("bulk", "conn", "udp")
CASES = ("direct", "sluice", "traefik", "haproxy", "nginx")
NO_UDP = frozenset({"haproxy"})
CONNECTION_CLOSE = "Connection: close"
Builder = Callable[[Path, int, int, int, int], peers.Launch]
BUILDERS: dict[str, Builder] = {
    "sluice": l4_peers.sluice,
    "traefik": l4_peers.traefik,
    "haproxy": l4_peers.haproxy,
    "nginx": l4_peers.nginx,
}


@dataclass(slots=True)
class Backends:
    """The backends' ports and processes; one set serves the whole run."""

    bulk: int
    http: int
    udp: int
    procs: dict[str, Proc] = field(default_factory=dict)

    def tcp_port(self, test: str) -> int:
        """The TCP backend a proxy forwards to for ``test`` (udp's proxies get the HTTP one)."""
        return self.bulk if test == "bulk" else self.http

    def port(self, test: str) -> int:
        """The port ``test``'s load goes to when it runs direct."""
        return self.udp if test == "udp" else self.tcp_port(test)


@dataclass(slots=True)
class CaseResult:
    test: str
    name: str
    ok: bool
    error: str = ""
    # MiB/s (bulk), connections/s (conn) or round trips/s (udp).
    rate: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    max_rss_kib: int | None = None
    cpu_percent: float | None = None
    load_cpu_percent: float | None = None
    # CPU used by processes outside this benchmark (other work on a shared
    # machine), in percent of one core: well above 0, the run was disturbed.
    other_cpu_percent: float | None = None
    # Every successful round's rate (--repeat); the figures above are the median's.
    rounds: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load(test: str, port: int, args: argparse.Namespace, pinning: Pinning,
         duration: float) -> CaseResult:
    """One run of ``test``'s load generator at ``port``; the figures, not yet the sampling."""
    res = CaseResult(test, "", ok=True)
    if test == "bulk":
        b = l4_load.run_bulk(port, duration=duration, cpu=pinning.load, streams=args.streams)
        res.rate, res.detail = b.mib_per_s, b.as_dict()
    elif test == "conn":
        params = wrk.WrkParams(duration=duration, connections=args.connections,
                               threads=args.threads, cpu=pinning.load)
        w = wrk.run(port, peers.BENCH_HOST, params, headers=(CONNECTION_CLOSE,))
        res.rate, res.p50_ms, res.p99_ms, res.detail = w.rps, w.p50_ms, w.p99_ms, w.as_dict()
        if w.non2xx or w.socket_errors:
            res.error = f"{w.non2xx} responses >= 400, {w.socket_errors} socket errors"
    else:
        u = l4_load.run_udp(port, duration=duration, cpu=pinning.load, clients=args.clients,
                            size=args.size, timeout=args.udp_timeout)
        res.rate, res.p50_ms, res.p99_ms, res.detail = (
            u.round_trips_per_s, u.p50_ms, u.p99_ms, u.as_dict())
    return res


@contextmanager
def sample_others() -> Iterator[list[float]]:
    """Yield a list holding, after the block, the CPU % that processes not ours used.

    Counts user-space processes alive at both ends of the block that are not
    this benchmark's (its own tree) and not kernel threads (softirq work done
    for our own traffic lands in ksoftirqd).
    """
    def others() -> dict[int, float]:
        ours = set(process_tree(os.getpid())) | set(process_tree(2))
        pids = (int(e) for e in os.listdir("/proc") if e.isdigit())
        return {pid: cpu_seconds(pid) for pid in pids if pid not in ours}

    out: list[float] = []
    before, start = others(), time.monotonic()
    try:
        yield out
    finally:
        after, elapsed = others(), time.monotonic() - start
        used = sum(after[p] - before[p] for p in after.keys() & before.keys())
        out.append(100.0 * used / elapsed if elapsed > 0 else 0.0)


def measure(test: str, name: str, proc: Proc, port: int, args: argparse.Namespace,
            pinning: Pinning) -> CaseResult:
    """Warm up, then one measured run while sampling ``proc``'s tree and the load CPU."""
    if args.warmup > 0:
        load(test, port, args, pinning, args.warmup)
    with (sample_tree(proc.pid) as sample, sample_cpu(pinning.load) as busy,
          sample_others() as others):
        res = load(test, port, args, pinning, args.duration)
    if not proc.alive():
        return CaseResult(test, name, ok=False,
                          error=f"exited during the run:\n{proc.log_tail()}")
    res.name = name
    res.max_rss_kib, res.cpu_percent = sample.max_rss_kib, sample.cpu_percent
    res.load_cpu_percent = busy[0] if busy else None
    res.other_cpu_percent = others[0] if others else None
    return res


def probe(test: str, port: int) -> l4_peers.Probe:
    if test == "bulk":
        return l4_peers.bulk_probe(port)
    if test == "conn":
        return l4_peers.http_probe(port)
    return l4_peers.udp_probe(port)


def run_case(test: str, name: str, sup: Supervisor, backends: Backends,
             args: argparse.Namespace, pinning: Pinning, round_no: int) -> CaseResult:
    """Start ``name`` for ``test`` (or use the backend, for direct), measure, stop it."""
    if name == "direct":
        try:
            return measure(test, name, backends.procs[test], backends.port(test), args, pinning)
        except (l4_load.LoadError, wrk.WrkError) as exc:
            return CaseResult(test, name, ok=False, error=str(exc))
    workdir = sup.workdir / f"{test}-{name}-{round_no}"
    workdir.mkdir()
    started: Proc | None = None
    try:
        tcp_port, udp_port = free_ports(2)
        launch = BUILDERS[name](workdir, tcp_port, udp_port, backends.tcp_port(test),
                                backends.udp)
        started = sup.start(launch.name, launch.argv, cpu=pinning.proxy, env=launch.env)
        port = udp_port if test == "udp" else tcp_port
        l4_peers.wait_ready(started, probe(test, port), f"{test} through port {port}")
        return measure(test, name, started, port, args, pinning)
    except (StartError, peers.MissingProgram, l4_load.LoadError, wrk.WrkError) as exc:
        return CaseResult(test, name, ok=False, error=str(exc))
    except Exception as exc:  # a broken case must not stop the others
        return CaseResult(test, name, ok=False, error=f"{type(exc).__name__}: {exc}")
    finally:
        if started is not None:
            sup.stop(started)


def start_backends(sup: Supervisor, tests: list[str], cpu: int | None) -> Backends:
    """Start the backends ``tests`` need on the load CPU and check each answers directly."""
    bulk, http, udp = free_ports(3)
    backends = Backends(bulk=bulk, http=http, udp=udp)
    wanted: list[tuple[str, peers.Launch, l4_peers.Probe]] = []
    if "bulk" in tests:
        wanted.append(("bulk", l4_peers.bulk_backend(bulk), l4_peers.bulk_probe(bulk)))
    if "conn" in tests:
        (sup.workdir / "backend").mkdir()
        wanted.append(("conn", peers.backend(sup.workdir / "backend", http),
                       l4_peers.http_probe(http)))
    if "udp" in tests:
        wanted.append(("udp", l4_peers.udp_backend(udp), l4_peers.udp_probe(udp)))
    for test, launch, check in wanted:
        proc = sup.start(launch.name, launch.argv, cpu=cpu, env=launch.env)
        l4_peers.wait_ready(proc, check, f"the {test} backend", timeout=10.0)
        backends.procs[test] = proc
    return backends


def median_round(test: str, name: str, runs: list[CaseResult]) -> CaseResult:
    """The round with the median rate, carrying every round's rate."""
    good = sorted((r for r in runs if r.ok and r.rate is not None), key=lambda r: r.rate or 0.0)
    if not good:
        return runs[-1] if runs else CaseResult(test, name, ok=False, error="not run")
    chosen = good[(len(good) - 1) // 2]
    chosen.rounds = [r.rate for r in runs if r.ok and r.rate is not None]
    failed = [r.error for r in runs if not r.ok]
    if failed:
        chosen.error = f"{len(failed)} of {len(runs)} rounds failed; first: {failed[0]}"
    return chosen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds over all cases; the median round of each is reported")
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help=f"run only these (repeatable, or comma-separated): {', '.join(CASES)}")
    ap.add_argument("--tests", action="append", default=[], metavar="TEST",
                    help=f"run only these tests (as --only): {', '.join(TESTS)}")
    ap.add_argument("--streams", type=int, default=4, help="bulk: concurrent downloads")
    ap.add_argument("--connections", type=int, default=64, help="conn: wrk connections")
    ap.add_argument("--threads", type=int, default=1, help="conn: wrk threads")
    ap.add_argument("--clients", type=int, default=64, help="udp: concurrent clients")
    ap.add_argument("--size", type=int, default=64, help="udp: datagram bytes")
    ap.add_argument("--udp-timeout", type=float, default=0.2,
                    help="udp: seconds before a request counts as lost")
    ap.add_argument("--json", type=Path, metavar="OUT",
                    help="where to write the results (default: bench/results/<date>/l4.json)")
    ap.add_argument("--no-json", action="store_true", help="write no JSON")
    ap.add_argument("--proxy-cpu", type=int, help="CPU for the proxy under test")
    ap.add_argument("--load-cpu", type=int, help="CPU for the load generator and backends")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    args = ap.parse_args(argv)
    args.cases = selected_cases(ap, args.only, CASES)
    args.test_list = selected_cases(ap, args.tests, TESTS)
    if args.json is None:
        args.json = _BENCH / "results" / time.strftime("%Y-%m-%d") / "l4.json"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "conn" in args.test_list and shutil.which("wrk") is None:
        print("wrk not found (apt-get install wrk)", file=sys.stderr)
        return 2
    pinning = default_pinning(args.proxy_cpu, args.load_cpu)
    pin_self(pinning)
    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-l4-"))
    results: list[CaseResult] = []
    try:
        with Supervisor(workdir) as sup:
            try:
                backends = start_backends(sup, args.test_list, pinning.load)
            except (StartError, peers.MissingProgram) as exc:
                print(f"backend: {exc}", file=sys.stderr)
                return 2
            plan = [(t, n) for t in args.test_list for n in args.cases
                    if not (t == "udp" and n in NO_UDP)]
            runs: dict[tuple[str, str], list[CaseResult]] = {case: [] for case in plan}
            # Rounds go through every case in turn, so a noisy minute on a shared
            # machine spoils one round of each case rather than every round of one.
            for round_no in range(1, args.repeat + 1):
                for test, name in plan:
                    print(f"[{round_no}/{args.repeat}] {test} {l4_report.LABELS[name]} ...",
                          end="", flush=True, file=sys.stderr)
                    res = run_case(test, name, sup, backends, args, pinning, round_no)
                    runs[(test, name)].append(res)
                    print(f" {l4_report.rate_text(res)}", file=sys.stderr)
            results = [median_round(t, n, runs[(t, n)]) for t, n in plan]
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    l4_report.print_report([r.as_dict() for r in results], pinning, args)
    if not args.no_json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report.write_json(
            args.json, "l4",
            {"duration": args.duration, "warmup": args.warmup, "repeat": args.repeat,
             "streams": args.streams, "connections": args.connections,
             "threads": args.threads, "clients": args.clients, "size": args.size,
             "udp_timeout": args.udp_timeout, "pinning": asdict(pinning),
             "backends": {"bulk": "bench/l4_servers.py bulk (1 MiB sends)",
                          "conn": "nginx 1 worker, return 200, Connection: close",
                          "udp": "bench/l4_servers.py udp-echo"}},
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
