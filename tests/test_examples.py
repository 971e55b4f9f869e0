"""The example configurations under examples/ serve what their READMEs promise."""

from __future__ import annotations

import asyncio
import base64
import ssl
from pathlib import Path

from tests.backends import RecordingBackend, Reply, get, http_request, read_reply
from tests.harness import RunningGateway, start_gateway

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


async def https_get(
    gw: RunningGateway, host: str, *, source: str = "127.0.0.1", extra: str = ""
) -> Reply:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        gw.port("websecure"),
        ssl=context,
        server_hostname=host,
        local_addr=(source, 0),
    )
    try:
        writer.write(get(host, "/", extra))
        return await read_reply(reader)
    finally:
        writer.close()


async def start_homelab(tmp_path: Path, backend: RecordingBackend) -> RunningGateway:
    static = (EXAMPLES / "homelab" / "sluice.yml").read_text()
    static = static.replace("127.0.0.1:8080", "127.0.0.1:0").replace(
        "127.0.0.1:8443", "127.0.0.1:0"
    )
    static = static.replace('address: "127.0.0.1:9000"', 'address: "127.0.0.1:0"')
    dynamic = (EXAMPLES / "homelab" / "dynamic.yml").read_text()
    dynamic = dynamic.replace("http://127.0.0.1:8081", backend.url)
    return await start_gateway(tmp_path, dynamic, static=static, entry_points=("web", "websecure"))


async def test_homelab_example_behaves_as_its_readme_says(tmp_path):
    """Redirect, public, LAN-only and login routers of examples/homelab each do their job."""
    backend = await RecordingBackend().start()
    gw = await start_homelab(tmp_path, backend)
    login = "Authorization: Basic " + base64.b64encode(b"admin:homelab").decode() + "\r\n"
    try:
        redirect = await http_request(gw.port("web"), get("blog.home.localhost", "/a?b=1"))
        assert redirect.status == 301
        assert redirect.header("location") == "https://blog.home.localhost:8443/a?b=1"

        blog = await https_get(gw, "blog.home.localhost", source="127.0.0.2")
        assert blog.status == 200
        assert blog.header("strict-transport-security") == "max-age=31536000"
        assert blog.header("x-frame-options") == "DENY"

        assert (await https_get(gw, "media.home.localhost")).status == 200
        assert (await https_get(gw, "media.home.localhost", source="127.0.0.2")).status == 403

        denied = await https_get(gw, "admin.home.localhost")
        assert denied.status == 401
        assert denied.header("www-authenticate") == 'Basic realm="homelab"'
        seen = len(backend.requests)
        admin = await https_get(gw, "admin.home.localhost", extra=login)
        assert admin.status == 200
        assert backend.requests[-1].header("x-auth-user") == "admin"
        assert len(backend.requests) == seen + 1
        outside = await https_get(gw, "admin.home.localhost", source="127.0.0.2", extra=login)
        assert outside.status == 403

        assert (await https_get(gw, "files.home.localhost", source="127.0.0.2")).status == 401
        files = await https_get(gw, "files.home.localhost", source="127.0.0.2", extra=login)
        assert files.status == 200
    finally:
        await gw.stop()
        await backend.close()


async def test_gatewayapi_example_behaves_as_its_readme_says(tmp_path):
    """The manifests of examples/gatewayapi redirect /old, rewrite /api and report status."""
    import shutil

    from tests.backends import closed_port

    backend = await RecordingBackend().start()
    port = await closed_port()
    folder = tmp_path / "manifests"
    shutil.copytree(EXAMPLES / "gatewayapi" / "manifests", folder)
    gateway_file = folder / "gateway.yaml"
    gateway_file.write_text(gateway_file.read_text().replace("port: 8090", f"port: {port}"))
    services = folder / "whoami.yaml"
    services.write_text(services.read_text().replace("port: 8081", f"port: {backend.port}"))
    static = (EXAMPLES / "gatewayapi" / "sluice.yml").read_text()
    static = static.replace("entryPoints: {}", 'entryPoints:\n  web:\n    address: "127.0.0.1:0"')
    static = static.replace('address: "127.0.0.1:9000"', 'address: "127.0.0.1:0"')
    gw = await start_gateway(tmp_path, "", static=static)
    try:
        moved = await http_request(port, get("whoami.localhost", "/old/users"))
        assert (moved.status, moved.header("location")) == (
            301, f"http://whoami.localhost:{port}/api/users"
        )
        assert (await http_request(port, get("whoami.localhost", "/api/users"))).status == 200
        seen = backend.requests[-1]
        assert (seen.target, seen.header("x-gateway")) == ("/users", "sluice")
    finally:
        await gw.stop()
        await backend.close()
