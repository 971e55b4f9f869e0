"""The ``gateway`` command as a user runs it: real subprocesses, real files, free ports.

``check`` and the failures of ``run`` are checked by exit status and by what
they print; a traceback in the output is always a failure. ``run`` is
started on free 127.0.0.1 ports and probed through ``/api/health`` (a
bounded poll); every process a test starts is killed by PID at teardown.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway import __version__
from tests.backends import get, http_request
from tests.subprocesses import (
    GATEWAY,
    Backend,
    GatewayProcess,
    connect_refused,
    free_port,
    launch,
    require_gateway,
)

QUICKSTART_DYNAMIC = Path(__file__).resolve().parent.parent / "gateway/quickstart/dynamic.yml"

STATIC = """\
entryPoints:
  web:
    address: "127.0.0.1:{web}"
providers:
  file:
    filename: dynamic.yml
api:
  address: "127.0.0.1:{api}"
"""

DYNAMIC = """\
http:
  routers:
    app:
      rule: {rule}
      service: {service}
  services:
    app:
      loadBalancer:
        servers:
          - url: {url}
"""


@pytest.fixture(autouse=True)
def _installed() -> None:
    require_gateway()


def gateway(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``gateway ARGS`` to completion (it must finish within 30 s)."""
    return subprocess.run(
        [str(GATEWAY), *args], capture_output=True, text=True, timeout=30, cwd=cwd, check=False
    )


def write_config(
    folder: Path,
    *,
    web: int = 0,
    api: int = 0,
    rule: str = "Host(`app.test`)",
    service: str = "app",
    url: str = "http://127.0.0.1:1",
) -> Path:
    (folder / "dynamic.yml").write_text(DYNAMIC.format(rule=rule, service=service, url=url))
    static = folder / "sluice.yml"
    static.write_text(STATIC.format(web=web, api=api))
    return static


# --- gateway check -------------------------------------------------------------------


def test_check_accepts_a_valid_configuration(tmp_path: Path) -> None:
    """``check`` on valid static and dynamic files exits 0 and says so."""
    static = write_config(tmp_path)
    result = gateway("check", "--config", str(static))
    assert result.returncode == 0, result.stderr
    assert f"configuration {static} is valid" in result.stdout


@dataclass(frozen=True)
class Broken:
    static: str
    dynamic: str
    flags: tuple[str, ...]
    expect: str  # regular expression the error line must match


BROKEN = {
    "invalid-yaml": Broken(
        static="entryPoints:\n  web:\n    address: [\n",
        dynamic="",
        flags=(),
        expect=r"sluice\.yml:\d+: invalid YAML",
    ),
    "unknown-static-key": Broken(
        static='entryPoints:\n  web:\n    adress: "127.0.0.1:0"\n',
        dynamic="",
        flags=(),
        expect=r'sluice\.yml:3: entryPoints\.web: unknown key "adress" \(did you mean "address"',
    ),
    "unknown-service": Broken(
        static="",
        dynamic=DYNAMIC.format(rule="Host(`app.test`)", service="ap", url="http://127.0.0.1:1"),
        flags=(),
        expect=r'dynamic\.yml:5: http\.routers\.app(@file)?\.service: unknown service "ap',
    ),
    "bad-rule": Broken(
        static="",
        dynamic=DYNAMIC.format(
            rule='"Host(`app.test`) && Pth(`/x`)"', service="app", url="http://127.0.0.1:1"
        ),
        flags=(),
        expect=r"dynamic\.yml:4: http\.routers\.app(@file)?\.rule: column 21: unknown matcher",
    ),
    "bad-address-flag": Broken(
        static="",
        dynamic="",
        flags=("--entryPoints.web.address=nowhere",),
        expect=r"<command line>: entryPoints\.web\.address: invalid address \"nowhere\"",
    ),
    "missing-certificate-file": Broken(
        static="",
        dynamic="tls:\n  certificates:\n    - certFile: /nonexistent/a.crt\n"
        "      keyFile: /nonexistent/a.key\n",
        flags=(),
        expect=r"/nonexistent/a\.(crt|key)",
    ),
    "tcp-router-unknown-service": Broken(
        static="",
        dynamic="tcp:\n  routers:\n    db:\n      rule: HostSNI(`*`)\n      service: nodb\n",
        flags=(),
        expect=r'dynamic\.yml:5: tcp\.routers\.db(@file)?\.service: unknown .*"nodb',
    ),
    "udp-entry-point-for-http": Broken(
        static='entryPoints:\n  web:\n    address: "127.0.0.1:0/udp"\n'
        "providers:\n  file:\n    filename: dynamic.yml\n",
        dynamic=DYNAMIC.format(
            rule="Host(`app.test`)\n      entryPoints: [web]", service="app",
            url="http://127.0.0.1:1",
        ),
        flags=(),
        expect=r'dynamic\.yml:5: http\.routers\.app(@file)?\.entryPoints\[0\]: '
        r'entry point "web" is a UDP entry point',
    ),
    "unknown-flag": Broken(
        static="",
        dynamic="",
        flags=("--entryPoints.web.adress=127.0.0.1:0",),
        expect=r'<command line>: entryPoints\.web: unknown key "adress" \(did you mean',
    ),
}


@pytest.mark.parametrize("case", BROKEN.values(), ids=BROKEN.keys())
def test_check_rejects_with_location(tmp_path: Path, case: Broken) -> None:
    """``check`` exits 1 with one error line naming file, line (or flag) and key path."""
    static = write_config(tmp_path)
    if case.static:
        static.write_text(case.static)
    if case.dynamic:
        (tmp_path / "dynamic.yml").write_text(case.dynamic)
    result = gateway("check", "--config", str(static), *case.flags)
    assert result.returncode == 1
    assert re.search(case.expect, result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_check_requires_config() -> None:
    """``check`` without ``--config`` is a usage error (exit 2)."""
    result = gateway("check")
    assert result.returncode == 2
    assert "--config" in result.stderr


# --- version and help ------------------------------------------------------------------


def test_version_prints_the_package_version() -> None:
    """``gateway version`` prints ``sluice <version>``."""
    result = gateway("version")
    assert (result.returncode, result.stdout.strip()) == (0, f"sluice {__version__}")


HELP = {
    "top": (("--help",), ("run", "check", "whoami", "version", "--entryPoints.web.address")),
    "run": (
        ("run", "--help"),
        ("--config", "--workers", "--quickstart", "--entryPoints.web.address=", "--api.address="),
    ),
    "check": (("check", "--help"), ("--config", "--dotted.key=value")),
}


@pytest.mark.parametrize(("args", "mentions"), HELP.values(), ids=HELP.keys())
def test_help_mentions_the_flags(args: tuple[str, ...], mentions: tuple[str, ...]) -> None:
    """Help exits 0 and names every flag and an example of the dotted overrides."""
    result = gateway(*args)
    assert result.returncode == 0
    for word in mentions:
        assert word in result.stdout


@pytest.mark.parametrize("count", ["0", "-1", "two"])
def test_workers_must_be_a_positive_number(tmp_path: Path, count: str) -> None:
    """``--workers`` below 1 or not a number is a usage error (exit 2)."""
    result = gateway("run", "--config", str(write_config(tmp_path)), "--workers", count)
    assert result.returncode == 2
    assert "positive number of workers" in result.stderr


def test_unknown_flag_of_version_is_an_error() -> None:
    """Commands without overrides reject unknown flags instead of ignoring them."""
    result = gateway("version", "--verbose")
    assert result.returncode == 2
    assert "unrecognized arguments: --verbose" in result.stderr


# --- gateway run: failures before serving ---------------------------------------------


@pytest.mark.parametrize(
    ("static", "expect"),
    [
        ("entryPoints:\n  web: {address: [\n", r"sluice\.yml:\d+: invalid YAML"),
        ("entryPoints:\n  web:\n    adress: x\n", r"sluice\.yml:3: .*did you mean \"address\""),
        ("log:\n  level: [DEBUG]\n", r"sluice\.yml:2: log\.level"),
        ("entryPoints:\n  web:\n    address: nowhere\n", r"sluice\.yml: entryPoints\.web\.addr"),
    ],
    ids=["invalid-yaml", "unknown-key", "wrong-type", "bad-address"],
)
def test_run_refuses_a_broken_static_file(tmp_path: Path, static: str, expect: str) -> None:
    """``run`` on a broken static file exits 1 with file:line and no traceback."""
    path = tmp_path / "sluice.yml"
    path.write_text(static)
    result = gateway("run", "--config", str(path))
    assert result.returncode == 1
    assert re.search(expect, result.stderr), result.stderr
    assert "Traceback" not in result.stderr


def test_run_missing_config_file(tmp_path: Path) -> None:
    """``run`` with a config file that does not exist exits 1 naming it."""
    result = gateway("run", "--config", str(tmp_path / "absent.yml"))
    assert result.returncode == 1
    assert "absent.yml: cannot read" in result.stderr


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port this test holds a listener on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("flag", "expect"),
    [
        ("--entryPoints.web.address", "entry point web: cannot listen on 127.0.0.1:{port}"),
        ("--api.address", "api: cannot listen on 127.0.0.1:{port}"),
    ],
    ids=["entry-point", "api"],
)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_run_reports_an_address_in_use(
    tmp_path: Path, taken_port: int, flag: str, expect: str, workers: str
) -> None:
    """An address in use ends ``run`` with exit 1 and one line naming the listener."""
    static = write_config(tmp_path, web=free_port(), api=free_port())
    result = gateway(
        "run", "--config", str(static), "--workers", workers, f"{flag}=127.0.0.1:{taken_port}"
    )
    assert result.returncode == 1
    assert expect.format(port=taken_port) in result.stderr
    assert "Traceback" not in result.stderr


def test_whoami_reports_an_address_in_use(taken_port: int) -> None:
    """``gateway whoami`` on a taken port exits 1 with a one-line error."""
    result = gateway("whoami", "--address", f"127.0.0.1:{taken_port}")
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{taken_port}" in result.stderr
    assert "Traceback" not in result.stderr


# --- gateway run: serving -------------------------------------------------------------


Spawn = Callable[..., Awaitable[GatewayProcess]]


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Spawn]:
    """Start ``gateway ARGS`` in the background; SIGTERM (then SIGKILL) it at teardown."""
    started: list[GatewayProcess] = []

    async def start(*args: str) -> GatewayProcess:
        log = tmp_path / f"gateway-{len(started)}.log"
        started.append(GatewayProcess(await launch(*args, cwd=tmp_path, log=log), log))
        return started[-1]

    yield start
    for running in started:
        await running.stop(grace=10)
        assert running.proc.returncode == 0, running.output()
        assert "Traceback" not in running.output()


async def test_run_flags_override_the_static_file(tmp_path: Path, spawn: Spawn) -> None:
    """``--entryPoints.web.address`` and ``--api.address`` replace the file's addresses."""
    backend = await Backend().start()
    try:
        file_web, file_api, web, api = free_port(), free_port(), free_port(), free_port()
        static = write_config(tmp_path, web=file_web, api=file_api, url=backend.url)
        running = await spawn(
            "run", "--config", str(static),
            f"--entryPoints.web.address=127.0.0.1:{web}", "--api.address", f"127.0.0.1:{api}",
        )  # fmt: skip
        await running.wait_ready(api)
        reply = await http_request(web, get("app.test", "/hello"))
        assert reply.status == 200
        assert backend.targets == ["/hello"]
        assert await connect_refused(file_web)
        assert await connect_refused(file_api)
    finally:
        await backend.close()


async def test_quickstart_serves_the_demo_backend(tmp_path: Path, spawn: Spawn) -> None:
    """``run --quickstart`` starts the demo backend the embedded routes point at."""
    backend_port, web, api = free_port(), free_port(), free_port()
    # The embedded routes and middleware, with the demo backend moved off its fixed port.
    text = QUICKSTART_DYNAMIC.read_text()
    assert "http://127.0.0.1:8081" in text
    dynamic = tmp_path / "quickstart.yml"
    dynamic.write_text(text.replace("127.0.0.1:8081", f"127.0.0.1:{backend_port}"))
    running = await spawn(
        "run", "--quickstart", f"--providers.file.filename={dynamic}",
        f"--entryPoints.web.address=127.0.0.1:{web}", f"--api.address=127.0.0.1:{api}",
    )  # fmt: skip
    await running.wait_ready(api)

    reply = await http_request(web, get("whoami.localhost", "/"))
    assert reply.status == 200
    assert reply.header("X-Served-By") == "sluice"
    assert reply.json()["name"] == "quickstart"
    overview = await http_request(api, get("127.0.0.1", "/api/overview"))
    assert overview.status == 200
    assert overview.json()["http"]["routers"]["total"] == 1


async def test_json_logs_and_separate_metrics_address(tmp_path: Path, spawn: Spawn) -> None:
    """``--log.format=json`` writes JSON lines; ``metrics.prometheus.address`` serves /metrics."""
    backend = await Backend().start()
    try:
        web, api, scrape = free_port(), free_port(), free_port()
        static = write_config(tmp_path, web=web, api=api, url=backend.url)
        running = await spawn(
            "run", "--config", str(static), "--log.format=json",
            f"--metrics.prometheus.address=127.0.0.1:{scrape}",
        )  # fmt: skip
        await running.wait_ready(api)
        assert (await http_request(web, get("app.test", "/"))).status == 200
        metrics = await http_request(scrape, get("127.0.0.1", "/metrics"))
        assert metrics.status == 200
        assert b"sluice_config_reloads_total" in metrics.body
        assert (await http_request(scrape, get("127.0.0.1", "/api/overview"))).status == 404
        lines = [line for line in running.output().splitlines() if line.strip()]
        entries = [json.loads(line) for line in lines]
        assert any(e["logger"] == "gateway.app" and "applied" in e["message"] for e in entries)
        assert all({"time", "level", "logger", "message"} <= e.keys() for e in entries)
    finally:
        await backend.close()
