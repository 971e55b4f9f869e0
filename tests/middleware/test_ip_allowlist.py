"""ipAllowList through a running gateway, from real loopback source addresses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.backends import Reply, get, read_reply
from tests.middleware.support import MW_LINE, TRUSTING, config, serving


async def send_from(port: int, source: str, extra: str = "") -> Reply:
    """GET / on app.test from the loopback address ``source``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(get("app.test", "/", extra))
        return await read_reply(reader)
    finally:
        writer.close()


# (sourceRange, client address, admitted)
BY_PEER = [
    pytest.param('["127.0.0.1/32"]', "127.0.0.1", True, id="listed"),
    pytest.param('["127.0.0.1/32"]', "127.0.0.5", False, id="unlisted"),
    pytest.param('["127.0.0.4/30"]', "127.0.0.5", True, id="in-range"),
    pytest.param('["127.0.0.4/30"]', "127.0.0.1", False, id="out-of-range"),
    pytest.param('["10.0.0.0/8", "127.0.0.5"]', "127.0.0.5", True, id="plain-address"),
    pytest.param('["::1/128", "127.0.0.0/8"]', "127.0.0.9", True, id="mixed-families"),
]


@pytest.mark.parametrize(("ranges", "source", "admitted"), BY_PEER)
async def test_admits_by_peer_address(
    tmp_path: Path, ranges: str, source: str, admitted: bool
) -> None:
    """Without ipStrategy the peer address decides; a refusal is 403 Forbidden."""
    async with serving(tmp_path, f"ipAllowList: {{sourceRange: {ranges}}}") as (gw, backend):
        reply = await send_from(gw.port(), source)
        if admitted:
            assert reply.status == 200
            assert len(backend.requests) == 1
        else:
            assert (reply.status, reply.body) == (403, b"Forbidden")
            assert backend.requests == []


async def test_forwarded_for_ignored_without_strategy(tmp_path: Path) -> None:
    """Without ipStrategy a listed X-Forwarded-For does not admit an unlisted peer."""
    middleware = 'ipAllowList: {sourceRange: ["192.168.1.0/24"]}'
    async with serving(tmp_path, middleware, static=TRUSTING) as (gw, _):
        reply = await send_from(gw.port(), "127.0.0.1", "X-Forwarded-For: 192.168.1.9\r\n")
        assert reply.status == 403


@pytest.mark.parametrize(
    ("code", "status", "body"),
    [
        pytest.param(404, 404, b"Not Found", id="404"),
        pytest.param(0, 403, b"Forbidden", id="zero-is-default"),
        pytest.param(429, 429, b"Too Many Requests", id="429"),
        pytest.param(204, 204, b"", id="204-no-body"),
    ],
)
async def test_reject_status_code(tmp_path: Path, code: int, status: int, body: bytes) -> None:
    """rejectStatusCode sets the refusal's status, with its status text as body."""
    middleware = f'ipAllowList: {{sourceRange: ["10.0.0.0/8"], rejectStatusCode: {code}}}'
    async with serving(tmp_path, middleware) as (gw, backend):
        reply = await send_from(gw.port(), "127.0.0.1")
        assert (reply.status, reply.body) == (status, body)
        assert reply.header("content-length") == str(len(body))
        assert backend.requests == []


# (ipStrategy, client address, X-Forwarded-For, admitted); sourceRange is 192.168.1.0/24
STRATEGIES = [
    pytest.param("{depth: 1}", "127.0.0.1", "10.0.0.1, 192.168.1.9", True, id="depth-1"),
    pytest.param("{depth: 2}", "127.0.0.1", "10.0.0.1, 192.168.1.9", False, id="depth-2"),
    pytest.param("{depth: 2}", "127.0.0.1", "192.168.1.7, 10.0.0.1", True, id="depth-2-listed"),
    pytest.param("{depth: 3}", "127.0.0.1", "192.168.1.7, 10.0.0.1", False, id="depth-past-end"),
    pytest.param("{depth: 1}", "127.0.0.1", "", False, id="no-header"),
    pytest.param(
        '{excludedIPs: ["10.0.0.0/8"]}',
        "127.0.0.1",
        "192.168.1.9, 10.0.0.7, 10.1.1.1",
        True,
        id="excluded-skipped",
    ),
    pytest.param(
        '{excludedIPs: ["10.0.0.7"]}',
        "127.0.0.1",
        "192.168.1.9, 10.0.0.8, 10.0.0.7",
        False,
        id="excluded-first-kept",
    ),
    pytest.param(
        '{depth: 1, excludedIPs: ["192.168.0.0/16"]}',
        "127.0.0.1",
        "10.0.0.1, 192.168.1.9",
        True,
        id="depth-wins",
    ),
    pytest.param("{depth: 1}", "127.0.0.5", "192.168.1.9", False, id="untrusted-depth"),
    pytest.param(
        '{excludedIPs: ["10.0.0.0/8"]}',
        "127.0.0.5",
        "192.168.1.9",
        False,
        id="untrusted-excluded",
    ),
]


@pytest.mark.parametrize(("strategy", "source", "xff", "admitted"), STRATEGIES)
async def test_ip_strategy(
    tmp_path: Path, strategy: str, source: str, xff: str, admitted: bool
) -> None:
    """ipStrategy picks the source from X-Forwarded-For, believed only from trusted clients."""
    middleware = f'ipAllowList: {{sourceRange: ["192.168.1.0/24"], ipStrategy: {strategy}}}'
    extra = f"X-Forwarded-For: {xff}\r\n" if xff else ""
    async with serving(tmp_path, middleware, static=TRUSTING) as (gw, backend):
        reply = await send_from(gw.port(), source, extra)
        assert reply.status == (200 if admitted else 403)
        assert len(backend.requests) == (1 if admitted else 0)


LOAD_ERRORS = [
    pytest.param(
        "ipAllowList: {sourceRange: []}", "ipAllowList: sourceRange: is empty", id="empty-range"
    ),
    pytest.param(
        "ipAllowList: {rejectStatusCode: 404}", 'missing required key "sourceRange"', id="no-range"
    ),
    pytest.param(
        'ipAllowList: {sourceRange: ["127.0.0.1/32", "10.0.0.0/33"]}',
        "ipAllowList: sourceRange[1]: '10.0.0.0/33' is not an IP address or CIDR range",
        id="bad-cidr",
    ),
    pytest.param(
        'ipAllowList: {sourceRange: ["localhost"]}',
        "sourceRange[0]: 'localhost' is not an IP address",
        id="hostname",
    ),
    pytest.param(
        'ipAllowList: {sourceRange: ["10.0.0.0/8"], rejectStatusCode: 999}',
        "ipAllowList: rejectStatusCode: invalid HTTP status code 999",
        id="unknown-status",
    ),
    pytest.param(
        'ipAllowList: {sourceRange: ["10.0.0.0/8"], rejectStatusCode: 101}',
        "rejectStatusCode: 101 is not a final status",
        id="informational-status",
    ),
    pytest.param(
        'ipAllowList: {sourceRange: ["10.0.0.0/8"], ipStrategy: {excludedIPs: ["nope"]}}',
        "ipStrategy.excludedIPs[0]: 'nope'",
        id="bad-excluded",
    ),
    pytest.param(
        'ipAllowList: {sourceRange: ["10.0.0.0/8"], ipStrategy: {depth: -1}}',
        "ipStrategy.depth must not be negative",
        id="negative-depth",
    ),
    pytest.param(
        'ipAllowList: {sourceRange: ["10.0.0.0/8"], ipStrategy: {deep: 1}}',
        'unknown key "deep"',
        id="unknown-key",
    ),
]


@pytest.mark.parametrize(("middleware", "message"), LOAD_ERRORS)
async def test_invalid_options_rejected_at_load(
    tmp_path: Path, middleware: str, message: str
) -> None:
    """A bad option is a load error naming file, line, middleware and key; the old config serves."""
    async with serving(tmp_path, 'ipAllowList: {sourceRange: ["127.0.0.1"]}') as (gw, _):
        errors = await gw.reload(config("http://127.0.0.1:9", middleware), expect_ok=False)
        text = str(errors[0])  # type: ignore[index]
        assert message in text, text
        assert f"dynamic.yml:{MW_LINE}: http.middlewares.mw" in text, text
        assert (await send_from(gw.port(), "127.0.0.1")).status == 200
        assert (await send_from(gw.port(), "127.0.0.5")).status == 403
