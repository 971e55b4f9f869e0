"""The interface an independent conformance run uses: `gateway run` on a manifests directory.

Issue #5's acceptance: a static file holding only ``providers.file.directory``,
``providers.file.watch`` and ``api.address`` (no entry points); every listener
of our GatewayClass served on its manifest port; ``/api/health`` 200 only once
the manifests are loaded and the listeners open; ``/api/gatewayapi`` in
Kubernetes' shape; a file renamed into the directory taking effect live;
SIGTERM ending the process with status 0.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.backends import RecordingBackend, get, http_request
from tests.providers.gatewayapi.test_file_mode import manifests
from tests.subprocesses import GatewayProcess, free_port, launch


async def test_gateway_run_serves_a_manifest_directory(tmp_path: Path) -> None:
    """Listeners open on their ports, health waits for them, status reads like Kubernetes'."""
    backend = await RecordingBackend().start()
    api, port = free_port(), free_port()
    folder = tmp_path / "manifests"
    folder.mkdir()
    # No spec.addresses: listeners bind every interface, as in a conformance run.
    text = manifests(port, backend.port).replace(
        "  addresses: [{type: IPAddress, value: 127.0.0.1}]\n", ""
    )
    (folder / "app.yaml").write_text(text)
    static = tmp_path / "static.yaml"
    static.write_text(
        f"providers:\n  file:\n    directory: {folder}\n    watch: true\n"
        f'api:\n  address: "127.0.0.1:{api}"\n'
    )
    gw = await launch("run", "--config", str(static), cwd=tmp_path, log=tmp_path / "gw.log")
    process = GatewayProcess(gw, tmp_path / "gw.log")
    try:
        await process.wait_ready(api)
        # Ready means the listener is open: no retry needed for the first request.
        assert (await http_request(port, get("app.example.test", "/app/1"))).status == 200
        assert (await http_request(port, get("app.example.test", "/nothing"))).status == 404
        reply = await http_request(api, get("127.0.0.1", "/api/gatewayapi"))
        objects = json.loads(reply.body)
        route = next(o for o in objects if o["kind"] == "HTTPRoute")
        assert route["metadata"] == {"name": "app", "namespace": "default"}
        conditions = route["status"]["parents"][0]["conditions"]
        assert {(c["type"], c["status"]) for c in conditions} == {
            ("Accepted", "True"), ("ResolvedRefs", "True")
        }
        # A second route renamed into place takes effect without a restart.
        extra = folder / ".extra.tmp"
        extra.write_text(
            text.split("---")[2].replace("name: app, namespace", "name: app2, namespace")
            .replace("app.example.test", "two.example.test")
        )
        os.replace(extra, folder / "extra.yaml")

        async def served() -> bool | None:
            status = (await http_request(port, get("two.example.test", "/app"))).status
            return True if status == 200 else None

        await process.poll("the renamed-in route to serve", served)
        process.proc.terminate()
        assert await process.proc.wait() == 0
    finally:
        await process.kill()
        await backend.close()


async def test_two_replicas_share_the_listeners_and_hand_over(tmp_path: Path) -> None:
    """Two gateways on one host serve one Gateway port (SO_REUSEPORT); after one stops,
    the other answers every new connection."""
    backend = await RecordingBackend().start()
    port = free_port()
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "app.yaml").write_text(manifests(port, backend.port))
    replicas: list[GatewayProcess] = []
    try:
        for index in range(2):
            api = free_port()
            static = tmp_path / f"static{index}.yaml"
            static.write_text(
                f"providers:\n  file:\n    directory: {folder}\n"
                f'api:\n  address: "127.0.0.1:{api}"\n'
            )
            log = tmp_path / f"gw{index}.log"
            replica = GatewayProcess(
                await launch("run", "--config", str(static), cwd=tmp_path, log=log), log
            )
            replicas.append(replica)
            await replica.wait_ready(api)
        first, second = replicas
        assert (await http_request(port, get("app.example.test", "/app"))).status == 200
        first.proc.terminate()
        assert await first.proc.wait() == 0
        # The port stays open in the second replica: every new connection is served.
        for _ in range(20):
            assert (await http_request(port, get("app.example.test", "/app"))).status == 200
        assert second.proc.returncode is None
    finally:
        for replica in replicas:
            await replica.kill()
        await backend.close()
