"""The L4 benchmark's processes: its backends, each proxy's TCP/UDP configuration, readiness.

One function per program writes its configuration under a work directory and
returns a ``peers.Launch`` (argv, environment, port). Every proxy listens on one
TCP port that forwards to the case's TCP backend and, where it proxies UDP,
one UDP port that forwards to the UDP echo; each has one core's worth of
workers (Sluice ``--workers 1``, Traefik ``GOMAXPROCS=1``, HAProxy ``nbthread
1``, nginx ``worker_processes 1``), no access log, and its stock buffers and
copy path, since that is what a user who runs it gets: no ``splice``, and
relay reads of 16 KiB in HAProxy (``tune.bufsize``) and nginx
(``proxy_buffer_size``), 32 KiB in Traefik (Go's ``io.Copy``, read/write seen
with strace). Bulk throughput follows the read size closely, so a proxy
tuned for larger buffers or ``option splice-auto`` would move more.

Readiness is a real round trip through the port under test, one probe per
kind of backend, polled against a deadline: a process that exits or never
serves fails fast with its log tail.

Everything listens on 127.0.0.1 and nothing else.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.harness import LOOPBACK, Proc, StartError, http_status
from bench.l4_load import BULK_REQUEST
from bench.peers import BENCH_HOST, REPO, Launch, MissingProgram, executable

Probe = Callable[[], str | None]


# --- backends --------------------------------------------------------------------


def _python_module(module: str, *args: str) -> tuple[tuple[str, ...], dict[str, str]]:
    # -m with the repository on PYTHONPATH: bench/ first on sys.path would let
    # bench/http.py shadow the standard library's http package.
    return (sys.executable, "-m", module, *args), {"PYTHONPATH": str(REPO)}


def bulk_backend(port: int) -> Launch:
    """The bulk source: streams zeros in 1 MiB sends once the client has spoken."""
    argv, env = _python_module("bench.l4_servers", "bulk", "--port", str(port))
    return Launch(name="bulk-backend", argv=argv, port=port, env=env)


def udp_backend(port: int) -> Launch:
    """The UDP echo: every datagram back to its sender."""
    argv, env = _python_module("bench.l4_servers", "udp-echo", "--port", str(port))
    return Launch(name="udp-backend", argv=argv, port=port, env=env)


# --- Sluice and Traefik: the same dynamic file -----------------------------------


def dynamic_yaml(tcp_backend: int, udp_backend: int) -> str:
    """One TCP router (``HostSNI(`*`)`` on entry point tcp) and one UDP router, one server each."""
    return (
        "tcp:\n"
        "  routers:\n"
        "    r:\n"
        '      rule: "HostSNI(`*`)"\n'
        "      entryPoints: [tcp]\n"
        "      service: s\n"
        "  services:\n"
        "    s:\n"
        "      loadBalancer:\n"
        "        servers:\n"
        f'          - address: "{LOOPBACK}:{tcp_backend}"\n'
        "udp:\n"
        "  routers:\n"
        "    u:\n"
        "      entryPoints: [udp]\n"
        "      service: us\n"
        "  services:\n"
        "    us:\n"
        "      loadBalancer:\n"
        "        servers:\n"
        f'          - address: "{LOOPBACK}:{udp_backend}"\n'
    )


def _static_yaml(tcp_port: int, udp_port: int, dynamic: Path, preamble: str = "") -> str:
    return (
        preamble
        + "entryPoints:\n"
        "  tcp:\n"
        f'    address: "{LOOPBACK}:{tcp_port}"\n'
        "  udp:\n"
        f'    address: "{LOOPBACK}:{udp_port}/udp"\n'
        "providers:\n"
        "  file:\n"
        f"    filename: {dynamic}\n"
        "log:\n"
        "  level: ERROR\n"
    )


def sluice(workdir: Path, tcp_port: int, udp_port: int, tcp_backend: int,
           udp_backend: int) -> Launch:
    """Sluice, one worker, the file provider with the dynamic file above."""
    dynamic = workdir / "sluice-dynamic.yaml"
    dynamic.write_text(dynamic_yaml(tcp_backend, udp_backend))
    static = workdir / "sluice-static.yaml"
    static.write_text(_static_yaml(tcp_port, udp_port, dynamic))
    args = ("run", "--config", str(static), "--workers", "1")
    try:
        argv: tuple[str, ...] = (executable("gateway"), *args)
        env: dict[str, str] = {}
    except MissingProgram:
        argv = (sys.executable, "-m", "gateway.cli", *args)
        env = {"PYTHONPATH": str(REPO)}
    return Launch(name="sluice", argv=argv, port=tcp_port, env=env)


def traefik(workdir: Path, tcp_port: int, udp_port: int, tcp_backend: int,
            udp_backend: int) -> Launch:
    """Traefik v3 on one core with the same dynamic file as Sluice."""
    dynamic = workdir / "traefik-dynamic.yaml"
    dynamic.write_text(dynamic_yaml(tcp_backend, udp_backend))
    static = workdir / "traefik-static.yaml"
    static.write_text(_static_yaml(
        tcp_port, udp_port, dynamic,
        preamble="global:\n  checkNewVersion: false\n  sendAnonymousUsage: false\n",
    ))
    argv = (executable("traefik"), f"--configFile={static}")
    return Launch(name="traefik", argv=argv, port=tcp_port, env={"GOMAXPROCS": "1"})


# --- HAProxy and nginx --------------------------------------------------------------


def haproxy(workdir: Path, tcp_port: int, _udp_port: int, tcp_backend: int,
            _udp_backend: int) -> Launch:
    """HAProxy ``mode tcp``, one thread; it has no UDP proxying (2.6 community)."""
    conf = workdir / "haproxy.cfg"
    conf.write_text(
        "global\n"
        "  nbthread 1\n"
        "  maxconn 4096\n"
        "defaults\n"
        "  mode tcp\n"
        "  timeout connect 5s\n"
        "  timeout client 60s\n"
        "  timeout server 60s\n"
        "frontend tcp\n"
        f"  bind {LOOPBACK}:{tcp_port} backlog 4096\n"
        "  default_backend s\n"
        "backend s\n"
        f"  server s1 {LOOPBACK}:{tcp_backend}\n"
    )
    # -db: stay in the foreground, one process, so its PID is the one to sample.
    argv = (executable("haproxy"), "-db", "-f", str(conf))
    return Launch(name="haproxy", argv=argv, port=tcp_port)


def stream_module() -> str:
    """The ``load_module`` line nginx needs for ``stream {}``: empty when it is built in."""
    try:
        built = subprocess.run([executable("nginx"), "-V"], capture_output=True, text=True,
                               check=False).stderr
    except OSError as exc:
        raise MissingProgram(f"nginx -V failed: {exc}") from exc
    if re.search(r"--with-stream(\s|$)", built):
        return ""
    if "--with-stream=dynamic" not in built:
        raise MissingProgram("this nginx has no stream module")
    found = re.search(r"--modules-path=(\S+)", built)
    module = Path(found.group(1) if found else "/usr/lib/nginx/modules") / "ngx_stream_module.so"
    if not module.exists():
        raise MissingProgram(f"{module} not found (apt-get install libnginx-mod-stream)")
    return f"load_module {module};\n"


def nginx(workdir: Path, tcp_port: int, udp_port: int, tcp_backend: int,
          udp_backend: int) -> Launch:
    """nginx ``stream``, one worker: a TCP server and a UDP server, each to its backend."""
    conf = workdir / "nginx-stream.conf"
    err = workdir / "nginx-error.log"
    conf.write_text(
        stream_module()
        + "worker_processes 1;\n"
        "daemon off;\n"
        f"pid {workdir}/nginx.pid;\n"
        f"error_log {err} error;\n"
        "worker_rlimit_nofile 16384;\n"
        "events { worker_connections 8192; }\n"
        "stream {\n"
        "  server {\n"
        f"    listen {LOOPBACK}:{tcp_port} backlog=4096;\n"
        f"    proxy_pass {LOOPBACK}:{tcp_backend};\n"
        "  }\n"
        "  server {\n"
        f"    listen {LOOPBACK}:{udp_port} udp;\n"
        f"    proxy_pass {LOOPBACK}:{udp_backend};\n"
        # No proxy_responses: a client's datagrams share one session (one
        # upstream socket), as in Sluice and Traefik, until it idles this long.
        "    proxy_timeout 10s;\n"
        "  }\n"
        "}\n"
    )
    # -e: without it nginx opens its compiled-in error log before reading the config.
    argv = (executable("nginx"), "-p", str(workdir), "-e", str(err), "-c", str(conf))
    return Launch(name="nginx", argv=argv, port=tcp_port)


# --- readiness ---------------------------------------------------------------------


def http_probe(port: int) -> Probe:
    """A GET through ``port`` answered 200 (the new-connection backend is nginx HTTP)."""
    def probe() -> str | None:
        status = http_status(port, BENCH_HOST)
        return None if status == 200 else f"GET gave {status}"
    return probe


def bulk_probe(port: int) -> Probe:
    """The bulk request through ``port`` gets streamed bytes back."""
    def probe() -> str | None:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1.0) as s:
                s.sendall(BULK_REQUEST)
                return None if s.recv(65536) else "closed without data"
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"
    return probe


def udp_probe(port: int) -> Probe:
    """A datagram sent to ``port`` comes back unchanged."""
    def probe() -> str | None:
        payload = os.urandom(16)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            try:
                s.connect((LOOPBACK, port))
                s.send(payload)
                data = s.recv(65536)
            except OSError as exc:
                return f"{type(exc).__name__}: {exc}"
        return None if data == payload else "a different datagram came back"
    return probe


def wait_ready(proc: Proc, probe: Probe, what: str, timeout: float = 30.0) -> float:
    """Poll ``probe`` until it succeeds; the seconds waited. StartError with the log tail."""
    start = time.monotonic()
    while True:
        if not proc.alive():
            raise StartError(
                f"{proc.name} exited with status {proc.popen.returncode} before {what} worked;"
                f" log {proc.log}:\n{proc.log_tail()}"
            )
        problem = probe()
        if problem is None:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise StartError(f"{proc.name}: {what} not working after {timeout:.0f}s ({problem});"
                             f" log {proc.log}:\n{proc.log_tail()}")
        time.sleep(0.05)
