"""The example plugin package (examples/plugins/sluice-example-plugin) installs and works.

The package is installed into this environment (editable, offline) when it
is not already installed from this checkout; the gateway then finds its
``requestId`` middleware through the ``sluice.middleware`` entry point with
the default registry, under both configuration syntaxes. The package's own
test suite runs too, in a subprocess, as its author would run it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import site
import subprocess
import sys
import sysconfig
import uuid
from importlib.metadata import PackageNotFoundError, distribution, entry_points
from pathlib import Path

import pytest

from tests.backends import RecordingBackend, get, http_request
from tests.harness import start_gateway

PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "sluice-example-plugin"
DIST = "sluice-example-plugin"


def installed_from_checkout() -> bool:
    """Whether the plugin is installed, editable, from this very directory."""
    try:
        dist = distribution(DIST)
    except PackageNotFoundError:
        return False
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    editable = bool(direct.get("dir_info", {}).get("editable"))
    return editable and direct.get("url") == PLUGIN.as_uri()


@pytest.fixture(scope="module")
def plugin_installed() -> None:
    """Install the plugin (editable, no network) unless this checkout's copy already is."""
    if not installed_from_checkout():
        command = [
            sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
            "--no-deps", "--no-build-isolation", "-e", str(PLUGIN),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.fail(
                "installing the example plugin failed; --no-build-isolation needs "
                "setuptools>=70.1 in the venv (make setup installs it):\n"
                + done.stdout
                + done.stderr
            )
        assert installed_from_checkout()
    if importlib.util.find_spec("sluice_example_plugin") is None:
        # Installed while this interpreter ran: its .pth file (the path to
        # src/) is read at startup only, so read it now.
        site.addsitedir(sysconfig.get_paths()["purelib"])
        importlib.invalidate_caches()
    assert importlib.util.find_spec("sluice_example_plugin") is not None


def config(url: str, definition: str) -> str:
    return f"""http:
  routers:
    app:
      rule: Host(`app.test`)
      service: app
      middlewares: [ids]
  services:
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
  middlewares:
    ids:
{definition}"""


def is_uuid4(value: str | None) -> bool:
    try:
        return value is not None and uuid.UUID(value).version == 4
    except ValueError:
        return False


async def test_plugin_registers_its_entry_point(plugin_installed):
    """The installed package names ``requestId`` in the ``sluice.middleware`` group."""
    found = {ep.name: ep.value for ep in entry_points(group="sluice.middleware")}
    assert found.get("requestId") == "sluice_example_plugin:RequestId"


@pytest.mark.parametrize(
    "definition",
    [
        "      plugin:\n        requestId: {headerName: X-Trace}\n",
        "      requestId: {headerName: X-Trace}\n",
    ],
    ids=["plugin-syntax", "direct-key"],
)
async def test_default_registry_serves_the_plugin(tmp_path, plugin_installed, definition):
    """With the default registry, the plugin adds and echoes its header, either syntax."""
    backend = await RecordingBackend().start()
    gw = await start_gateway(tmp_path, config(backend.url, definition))
    try:
        fresh = await http_request(gw.port(), get("app.test"))
        assert fresh.status == 200
        sent = backend.requests[-1].header("x-trace")
        assert is_uuid4(sent), sent
        assert fresh.header("x-trace") == sent
        kept = await http_request(gw.port(), get("app.test", "/", "X-Trace: abc-1\r\n"))
        assert backend.requests[-1].header("x-trace") == "abc-1"
        assert kept.header("x-trace") == "abc-1"
    finally:
        await gw.stop()
        await backend.close()


async def test_plugin_option_errors_name_the_middleware(tmp_path, plugin_installed):
    """A plugin's semantic option error is a load error naming middleware, key and line."""
    backend = await RecordingBackend().start()
    good = config(backend.url, "      plugin:\n        requestId: {}\n")
    gw = await start_gateway(tmp_path, good)
    try:
        bad = config(backend.url, "      plugin:\n        requestId: {maxLength: 0}\n")
        errors = await gw.reload(bad, expect_ok=False)
        text = str(errors[0])  # type: ignore[index]
        assert "dynamic.yml:" in text
        assert "http.middlewares.ids" in text
        assert "maxLength: 0 is not between 1 and 1024" in text
        reply = await http_request(gw.port(), get("app.test"))
        assert is_uuid4(reply.header("x-request-id")), "the old configuration still serves"
    finally:
        await gw.stop()
        await backend.close()


async def test_plugin_own_test_suite_passes(plugin_installed):
    """The package's own tests (its tests/ folder) pass when run as its author would."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests",
        cwd=PLUGIN, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 300)
    output = out.decode(errors="replace")
    assert proc.returncode == 0, output
    assert " passed" in output and "failed" not in output, output
