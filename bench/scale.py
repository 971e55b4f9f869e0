"""The 10,000-router case: reload latency and routing cost at scale, Sluice beside Traefik.

For each gateway (Sluice, then Traefik), each on one core as in bench/http.py:

1. start it with a dynamic file holding one router, ``Host(`<probe>`)``, and
   measure wrk throughput on that host;
2. write a file with 10,000 Host routers (``h00001.bench`` ... ``h10000.bench``,
   the probe host among them, all to the same backend) beside the watched one and
   rename it over it, then poll the LAST host every few milliseconds until the
   gateway answers it 200 (at most 30 s): the time from the rename to that answer
   is the reload latency;
3. measure wrk throughput on the probe host again, now among 10,000 routers.

Targets for Sluice: reload <= 1 s and throughput ratio (10,000 / 1) >= 0.95.
Traefik is measured the same way for comparison. Exit status: 0 when every case
ran, 1 when one failed (did not start, or did not pick up the reload in time), 2
when the backend or wrk could not be used.

Run from the repository root: ``.venv/bin/python bench/scale.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would shadow the standard library's ``http`` with bench/ first on sys.path.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402

from bench import peers, report, wrk  # noqa: E402
from bench.harness import (  # noqa: E402
    Pinning,
    Proc,
    StartError,
    Supervisor,
    default_pinning,
    free_ports,
    http_status,
    pin_self,
    sample_tree,
    selected_cases,
)

CASES = ("sluice", "traefik")
LABELS = {"sluice": "Sluice", "traefik": "Traefik"}
TARGET_RELOAD_S = 1.0
TARGET_RATIO = 0.95


@dataclass(slots=True)
class ScaleResult:
    name: str
    ok: bool
    error: str = ""
    routers: int = 0
    probe_host: str = ""
    last_host: str = ""
    before: wrk.WrkResult | None = None
    after: wrk.WrkResult | None = None
    reload_s: float | None = None
    # Status codes the last host answered while the reload was pending (None: no answer).
    statuses_seen: dict[str, int] = field(default_factory=dict)
    probes: int = 0
    max_rss_kib_before: int | None = None
    max_rss_kib_after: int | None = None

    @property
    def ratio(self) -> float | None:
        if self.before is None or self.after is None:
            return None
        return report.ratio(self.after.rps, self.before.rps)

    def meets_targets(self) -> bool:
        ratio = self.ratio
        return (
            self.reload_s is not None and self.reload_s <= TARGET_RELOAD_S
            and ratio is not None and ratio >= TARGET_RATIO
        )

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["before"] = self.before.as_dict() if self.before else None
        out["after"] = self.after.as_dict() if self.after else None
        out["ratio"] = self.ratio
        out["meets_targets"] = self.meets_targets()
        return out


def hostnames(count: int) -> list[str]:
    return [f"h{i:05d}.bench" for i in range(1, count + 1)]


def launch_for(name: str, workdir: Path, backend_port: int, host: str) -> tuple[peers.Launch, Path]:
    """The gateway's Launch with one router for ``host``, and the dynamic file it watches."""
    port, aux = free_ports(2)
    if name == "sluice":
        return (peers.sluice(workdir, port, aux, backend_port, hosts=[host]),
                workdir / "sluice-dynamic.yaml")
    return (peers.traefik(workdir, port, aux, backend_port, hosts=[host]),
            workdir / "traefik-dynamic.yaml")


def wait_for_reload(proc: Proc, port: int, host: str, timeout: float, interval: float,
                    res: ScaleResult, since: float) -> None:
    """Poll ``host`` until it answers 200; fill in ``res.reload_s`` (left None on timeout)."""
    seen: Counter[str] = Counter()
    deadline = since + timeout
    while True:
        started = time.monotonic()
        status = http_status(port, host, timeout=min(1.0, timeout))
        res.probes += 1
        seen[str(status)] += 1
        if status == 200:
            res.reload_s = time.monotonic() - since
            break
        if not proc.alive():
            raise StartError(f"{proc.name} exited during the reload:\n{proc.log_tail()}")
        if started > deadline:
            break
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
    res.statuses_seen = dict(seen)


def run_case(name: str, sup: Supervisor, backend_port: int, pinning: Pinning,
             params: wrk.WrkParams, args: argparse.Namespace) -> ScaleResult:
    hosts = hostnames(args.routers)
    probe = args.probe_host or hosts[max(0, args.routers // 2 - 1)]
    res = ScaleResult(name, ok=False, routers=args.routers, probe_host=probe, last_host=hosts[-1])
    workdir = sup.workdir / name
    workdir.mkdir()
    proc: Proc | None = None
    try:
        launch, dynamic = launch_for(name, workdir, backend_port, probe)
        proc = peers.start(sup, launch, pinning.proxy, host=probe)
        if args.warmup > 0:
            wrk.run(launch.port, probe, params, duration=args.warmup)
        with sample_tree(proc.pid) as sample:
            res.before = wrk.run(launch.port, probe, params)
        res.max_rss_kib_before = sample.max_rss_kib

        # Written before the clock starts: only the rename is the change being timed.
        tmp = dynamic.with_name(f".{dynamic.name}.new")
        tmp.write_text(peers.dynamic_yaml(hosts, backend_port))
        since = time.monotonic()
        tmp.replace(dynamic)
        wait_for_reload(proc, launch.port, hosts[-1], args.timeout, args.poll_interval,
                        res, since)
        if res.reload_s is None:
            res.error = (f"{hosts[-1]} not routed {args.timeout:g}s after the rename"
                         f" (answers seen: {res.statuses_seen})")
            return res

        if args.warmup > 0:
            wrk.run(launch.port, probe, params, duration=args.warmup)
        with sample_tree(proc.pid) as sample:
            res.after = wrk.run(launch.port, probe, params)
        res.max_rss_kib_after = sample.max_rss_kib
        if not proc.alive():
            res.error = f"exited during the run:\n{proc.log_tail()}"
            return res
        res.ok = True
        return res
    except (StartError, peers.MissingProgram, wrk.WrkError) as exc:
        res.error = str(exc)
        return res
    except Exception as exc:  # a broken case must not stop the other
        res.error = f"{type(exc).__name__}: {exc}"
        return res
    finally:
        if proc is not None:
            sup.stop(proc)


def print_report(results: list[ScaleResult], pinning: Pinning, params: wrk.WrkParams,
                 routers: int) -> None:
    rows = []
    for r in results:
        rows.append([
            LABELS[r.name],
            f"{r.before.rps:,.0f}" if r.before else "-",
            f"{r.after.rps:,.0f}" if r.after else "-",
            report.fmt(r.ratio),
            report.fmt(r.reload_s, 3),
            report.fmt(r.after.p99_ms) if r.after else "-",
            report.fmt(r.max_rss_kib_before / 1024, 1) if r.max_rss_kib_before else "-",
            report.fmt(r.max_rss_kib_after / 1024, 1) if r.max_rss_kib_after else "-",
            ("yes" if r.meets_targets() else "no") if r.ok else "FAILED",
        ])
    print()
    print(f"{routers:,} Host routers; wrk: {params.connections} connections, {params.threads}"
          f" threads, {params.duration:g}s, keep-alive; {pinning.describe()}")
    print(f"targets: reload <= {TARGET_RELOAD_S:g} s, ratio >= {TARGET_RATIO:g}")
    print(report.table(
        ["gateway", "req/s 1 rtr", f"req/s {routers} rtr", "ratio", "reload s",
         "p99 ms after", "RSS MiB 1", f"RSS MiB {routers}", "meets targets"],
        rows,
    ))
    for r in results:
        if r.error:
            print(f"\n{LABELS[r.name]} failed: {r.error}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--routers", type=int, default=10_000)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (it has one CPU)")
    ap.add_argument("--timeout", type=float, default=30.0, help="longest wait for the reload")
    ap.add_argument("--poll-interval", type=float, default=0.005,
                    help="seconds between reload probes")
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help=f"run only these (repeatable, or comma-separated): {', '.join(CASES)}")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write the results here")
    ap.add_argument("--proxy-cpu", type=int, help="CPU for the gateway under test")
    ap.add_argument("--load-cpu", type=int, help="CPU for wrk, the backend and the probes")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    ap.add_argument("--probe-host", default="",
                    help="host wrk asks for, among the routers (default: the middle one)")
    args = ap.parse_args(argv)
    if not 1 <= args.routers <= 99_999:
        ap.error("--routers must be between 1 and 99999")
    if args.probe_host and args.probe_host not in hostnames(args.routers):
        ap.error(f"--probe-host must be one of h00001.bench ... {hostnames(args.routers)[-1]}")
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
    workdir = Path(tempfile.mkdtemp(prefix="sluice-scale-"))
    results: list[ScaleResult] = []
    try:
        with Supervisor(workdir) as sup:
            backend_port = free_ports(1)[0]
            (workdir / "backend").mkdir()
            try:
                peers.start(sup, peers.backend(workdir / "backend", backend_port), pinning.load)
            except (StartError, peers.MissingProgram) as exc:
                print(f"backend: {exc}", file=sys.stderr)
                return 2
            for name in args.cases:
                print(f"{LABELS[name]} ...", end="", flush=True, file=sys.stderr)
                res = run_case(name, sup, backend_port, pinning, params, args)
                results.append(res)
                print(" done" if res.ok else " failed", file=sys.stderr)
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_report(results, pinning, params, args.routers)
    if args.json:
        report.write_json(
            args.json, "scale",
            {"routers": args.routers, "duration": args.duration, "warmup": args.warmup,
             "connections": args.connections, "threads": args.threads,
             "timeout": args.timeout, "poll_interval": args.poll_interval,
             "pinning": asdict(pinning),
             "targets": {"reload_s": TARGET_RELOAD_S, "ratio": TARGET_RATIO}},
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
