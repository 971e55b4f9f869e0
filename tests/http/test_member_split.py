"""Weighted members with their own middlewares: only the chosen member's run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.backends import RecordingBackend, get, http_request
from tests.harness import start_gateway


def config(a: str, b: str) -> str:
    return f"""
http:
  routers:
    split:
      rule: Host(`split.test`)
      service: split
      middlewares: [common]
  middlewares:
    common:
      headers: {{customRequestHeaders: {{X-Common: "yes"}}}}
    tag-a:
      headers: {{customRequestHeaders: {{X-Member: "a"}}}}
  services:
    a:
      loadBalancer: {{servers: [{{url: "{a}"}}]}}
    b:
      loadBalancer: {{servers: [{{url: "{b}"}}]}}
    split:
      weighted:
        services:
          - {{name: a, weight: 1, middlewares: [tag-a]}}
          - {{name: b, weight: 1}}
"""


async def test_member_middlewares_run_only_for_that_member(tmp_path: Path) -> None:
    """The router's middleware runs for all; a member's only for the requests it takes."""
    a, b = await RecordingBackend().start(), await RecordingBackend().start()
    gw = await start_gateway(tmp_path, config(a.url, b.url))
    try:
        codes = Counter(
            [(await http_request(gw.port(), get("split.test"))).status for _ in range(6)]
        )
        assert codes == {200: 6}
        assert (len(a.requests), len(b.requests)) == (3, 3)
        assert {(r.header("x-common"), r.header("x-member")) for r in a.requests} == {("yes", "a")}
        assert {(r.header("x-common"), r.header("x-member")) for r in b.requests} == {("yes", None)}
    finally:
        await gw.stop()
        await a.close()
        await b.close()


async def test_unknown_member_middleware_is_rejected(tmp_path: Path) -> None:
    """A member naming a middleware that does not exist is an error at its key."""
    a, b = await RecordingBackend().start(), await RecordingBackend().start()
    gw = await start_gateway(tmp_path, config(a.url, b.url))
    try:
        errors = await gw.reload(config(a.url, b.url).replace("[tag-a]", "[nope]"), expect_ok=False)
        assert "split@file.weighted.services[0].middlewares[0]" in str(errors)
        assert 'unknown middleware "nope@file"' in str(errors)
    finally:
        await gw.stop()
        await a.close()
        await b.close()
