"""The ``status`` service (Sluice addition): the gateway answers a fixed code itself."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.backends import RecordingBackend, get, http_request
from tests.harness import start_gateway


def config(url: str) -> str:
    return f"""
http:
  routers:
    broken:
      rule: Host(`broken.test`)
      service: broken
    split:
      rule: Host(`split.test`)
      service: split
  services:
    broken:
      status: {{code: 500}}
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
    split:
      weighted:
        services: [{{name: app, weight: 1}}, {{name: broken, weight: 3}}]
"""


async def test_status_service_answers_its_code_and_takes_its_weighted_share(
    tmp_path: Path,
) -> None:
    """Alone it answers 500; as a weighted member it answers 500 for its share only."""
    backend = await RecordingBackend().start()
    gw = await start_gateway(tmp_path, config(backend.url))
    try:
        assert (await http_request(gw.port(), get("broken.test"))).status == 500
        codes = Counter(
            [(await http_request(gw.port(), get("split.test"))).status for _ in range(8)]
        )
        assert codes == {200: 2, 500: 6}
        assert len(backend.requests) == 2
    finally:
        await gw.stop()
        await backend.close()


async def test_status_code_out_of_range_is_rejected(tmp_path: Path) -> None:
    """A status code outside 100-599 is a configuration error at its key."""
    backend = await RecordingBackend().start()
    gw = await start_gateway(tmp_path, config(backend.url))
    try:
        errors = await gw.reload(
            "http:\n  services:\n    x:\n      status: {code: 700}\n", expect_ok=False
        )
        assert "http.services.x@file.status.code: must be an HTTP status" in str(errors)
    finally:
        await gw.stop()
        await backend.close()
