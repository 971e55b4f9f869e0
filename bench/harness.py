"""Process plumbing shared by the benchmarks: ports, CPU pinning, supervision, sampling.

Invariants this module keeps:

- Every process a benchmark starts goes through ``Supervisor.start`` and runs in a
  session (process group) of its own whose id is its PID, so ``Supervisor.close``
  can end it and whatever it forked (nginx workers, gateway workers) by that id
  alone, on normal exit, on an exception and on Ctrl-C / SIGTERM.
- Nothing here talks to anything but 127.0.0.1.
- Readiness is polled with real requests against a deadline and fails fast, with
  the tail of the process's log, when the process exits instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

LOOPBACK = "127.0.0.1"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class StartError(RuntimeError):
    """A process under test did not start or did not become ready."""


# --- ports and CPUs ------------------------------------------------------------


def selected_cases(
    ap: argparse.ArgumentParser, only: Sequence[str], cases: Sequence[str]
) -> list[str]:
    """The cases ``--only`` picks (repeatable or comma-separated), all when none."""
    chosen = [n.strip() for item in only for n in item.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(cases))
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(cases)}")
    return [c for c in cases if not chosen or c in chosen]


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct free TCP ports on 127.0.0.1.

    All sockets stay bound until every port is chosen, so the ports differ; the
    kernel may still hand one out again before our process binds it, which on an
    otherwise idle machine does not happen in practice.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True, slots=True)
class Pinning:
    """Which CPU the proxy under test gets and which the load side (wrk + backend) gets."""

    proxy: int | None
    load: int | None

    def describe(self) -> str:
        if self.proxy is None:
            return "unpinned (fewer than 2 CPUs available)"
        return f"proxy on CPU {self.proxy}; wrk and backend on CPU {self.load}"


def default_pinning(proxy_cpu: int | None = None, load_cpu: int | None = None) -> Pinning:
    """Give the proxy the highest allowed CPU and the load side the lowest, if there are two."""
    cpus = sorted(os.sched_getaffinity(0))
    if proxy_cpu is not None or load_cpu is not None:
        return Pinning(proxy=proxy_cpu, load=load_cpu)
    if len(cpus) < 2:
        return Pinning(proxy=None, load=None)
    return Pinning(proxy=cpus[-1], load=cpus[0])


def pin_self(pinning: Pinning) -> None:
    """Keep the harness (sampler, probe loop) off the proxy's CPU."""
    if pinning.load is not None:
        os.sched_setaffinity(0, {pinning.load})


def pinned(argv: Sequence[str], cpu: int | None) -> list[str]:
    """Prefix ``argv`` with taskset; taskset execs, so the PID is the program's own."""
    if cpu is None:
        return list(argv)
    return ["taskset", "-c", str(cpu), *argv]


# --- HTTP probing ----------------------------------------------------------------


def http_status(port: int, host: str, path: str = "/", timeout: float = 1.0) -> int | None:
    """One HTTP/1.1 GET with the given Host header; the status code, or None on failure.

    Raw sockets, not urllib: the probe loop in scale.py runs every few milliseconds
    and must not add its own connection-pool or parsing overhead to what it times.
    """
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        "User-Agent: sluice-bench\r\n\r\n"
    ).encode("ascii")
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
            s.sendall(request)
            head = b""
            while b"\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    return None
                head += chunk
    except OSError:
        return None
    parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return None
    return int(parts[1])


# --- supervision -----------------------------------------------------------------


@dataclass(slots=True)
class Proc:
    """A started process, its log file and the name it is reported under."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    # SystemExit unwinds through every `finally`, which is where processes are ended.
    raise SystemExit(128 + signum)


class Supervisor:
    """Starts processes in their own sessions and ends every one of them on close()."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._procs: list[Proc] = []

    def __enter__(self) -> Supervisor:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _raise_exit)
        # Python leaves SIGINT ignored when it starts with it ignored (a background job).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpu: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Proc:
        """Start ``argv`` pinned to ``cpu``, stdout and stderr to ``<workdir>/<name>.log``."""
        log = self.workdir / f"{name}.log"
        n = 1
        while log.exists():  # a name started again (--repeat) keeps its earlier logs
            n += 1
            log = self.workdir / f"{name}-{n}.log"
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        with log.open("wb") as out:
            try:
                popen = subprocess.Popen(
                    pinned(argv, cpu),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=full_env,
                    cwd=self.workdir,
                    start_new_session=True,
                )
            except OSError as exc:
                raise StartError(f"{name}: cannot run {argv[0]}: {exc}") from exc
        proc = Proc(name=name, popen=popen, log=log)
        self._procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace: float = 5.0) -> None:
        """End ``proc``'s process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
        if proc in self._procs:
            self._procs.remove(proc)
        if proc.alive():
            _signal_group(proc.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=grace)
        # The leader may be gone while its children (nginx workers) linger.
        _signal_group(proc.pid, signal.SIGKILL)
        try:
            proc.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            print(f"warning: {proc.name} (pid {proc.pid}) did not exit", file=sys.stderr)

    def close(self) -> None:
        for proc in reversed(list(self._procs)):
            self.stop(proc)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_until(
    proc: Proc,
    *,
    port: int,
    host: str,
    path: str = "/",
    expect: int = 200,
    timeout: float = 30.0,
) -> float:
    """Poll until ``GET path`` with ``Host: host`` on ``port`` answers ``expect``.

    Returns the seconds waited. Raises StartError, with the log tail, when the
    process exits or the deadline passes.
    """
    start = time.monotonic()
    deadline = start + timeout
    last: int | None = None
    while True:
        if not proc.alive():
            raise StartError(
                f"{proc.name} exited with status {proc.popen.returncode} before it was ready;"
                f" log {proc.log}:\n{proc.log_tail()}"
            )
        last = http_status(port, host, path, timeout=1.0)
        if last == expect:
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise StartError(
                f"{proc.name} not ready after {timeout:.0f}s (GET {path} Host {host!r} on"
                f" port {port} gave {last}); log {proc.log}:\n{proc.log_tail()}"
            )
        time.sleep(0.05)


# --- sampling the process tree -----------------------------------------------


def _proc_table() -> dict[int, int]:
    """pid -> ppid for every process we can see."""
    table: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses; fields follow the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        table[int(entry)] = int(fields[1])
    return table


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _proc_table().items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()
    # utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def cpu_busy_total(cpu: int) -> tuple[int, int]:
    """(busy, total) jiffies of one CPU since boot, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            ticks = [int(v) for v in line.split()[1:]]
            idle = ticks[3] + ticks[4]  # idle + iowait
            return sum(ticks[:8]) - idle, sum(ticks[:8])
    return 0, 0


@contextmanager
def sample_cpu(cpu: int | None) -> Iterator[list[float]]:
    """Yield a list that holds, after the block, how busy ``cpu`` was in percent.

    Tells whether the load side (wrk and the backend) was the limit of a run.
    """
    out: list[float] = []
    before = cpu_busy_total(cpu) if cpu is not None else (0, 0)
    try:
        yield out
    finally:
        if cpu is not None:
            after = cpu_busy_total(cpu)
            total = after[1] - before[1]
            out.append(100.0 * (after[0] - before[0]) / total if total else 0.0)


@dataclass(slots=True)
class TreeSample:
    """What the sampler saw: the largest summed RSS and the CPU the tree used."""

    max_rss_kib: int = 0
    cpu_percent: float = 0.0
    samples: int = 0
    _cpu_start: dict[int, float] = field(default_factory=dict)


@contextmanager
def sample_tree(root: int, interval: float = 0.1) -> Iterator[TreeSample]:
    """Sample the summed VmRSS and CPU time of ``root``'s process tree while the block runs.

    The tree is re-read each time, so workers forked mid-run are counted.
    """
    result = TreeSample()
    stop = threading.Event()
    cpu_now: dict[int, float] = {}

    def take() -> None:
        pids = process_tree(root)
        result.max_rss_kib = max(result.max_rss_kib, sum(rss_kib(p) for p in pids))
        for pid in pids:
            cpu_now[pid] = cpu_seconds(pid)
            result._cpu_start.setdefault(pid, cpu_now[pid])
        result.samples += 1

    def loop() -> None:
        while not stop.wait(interval):
            take()

    take()
    started = time.monotonic()
    thread = threading.Thread(target=loop, name="rss-sampler", daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        take()
        elapsed = time.monotonic() - started
        used = sum(cpu_now[p] - result._cpu_start[p] for p in cpu_now)
        result.cpu_percent = 100.0 * used / elapsed if elapsed > 0 else 0.0
