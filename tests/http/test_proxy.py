"""End-to-end behaviour of the HTTP/1.1 data path through a running gateway."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
import pytest
from aiohttp import web

from tests.backends import RecordingBackend, Seen, closed_port, get, http_request, read_reply
from tests.harness import start_gateway


def static_config(entry_point: str) -> str:
    """Static config with one entry point ``web`` on 127.0.0.1:0 plus ``entry_point``'s
    extra YAML lines, and the file provider reading dynamic.yml."""
    indented = "".join(f"    {line}\n" for line in entry_point.splitlines())
    return (
        'entryPoints:\n  web:\n    address: "127.0.0.1:0"\n'
        + indented
        + "providers:\n  file:\n    filename: dynamic.yml\n"
    )


def one_router(url: str, *, rule: str = "Host(`app.test`)", extra_lb: str = "") -> str:
    return f"""
http:
  routers:
    app:
      rule: {rule}
      service: app
  services:
    app:
      loadBalancer:
        servers:
          - url: {url}
{extra_lb}
"""


@pytest.fixture
async def backend():
    b = await RecordingBackend().start()
    yield b
    await b.close()


async def test_forwards_request_and_sets_forwarded_headers(tmp_path, backend):
    """A routed request reaches the backend with Host kept and X-Forwarded-* set."""
    gw = await start_gateway(tmp_path, one_router(backend.url))
    try:
        reply = await http_request(
            gw.port(), get("app.test", "/a/b?q=1", "X-Forwarded-For: 6.6.6.6\r\n")
        )
        assert reply.status == 200
        seen = backend.requests[-1]
        assert seen.target == "/a/b?q=1"
        assert seen.header("host") == "app.test"
        assert seen.header("x-forwarded-for") == "127.0.0.1"  # untrusted client: replaced
        assert seen.header("x-forwarded-proto") == "http"
        assert seen.header("x-forwarded-host") == "app.test"
        assert seen.header("x-forwarded-port") == str(gw.port())
        assert seen.header("x-real-ip") == "127.0.0.1"
    finally:
        await gw.stop()


async def test_trusted_client_forwarded_headers_kept(tmp_path, backend):
    """From a trustedIPs source, X-Forwarded-For is appended to, not replaced."""
    static = static_config('forwardedHeaders:\n  trustedIPs: ["127.0.0.0/8"]\n')
    gw = await start_gateway(tmp_path, one_router(backend.url), static=static)
    try:
        extra = "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"
        reply = await http_request(gw.port(), get("app.test", "/", extra))
        assert reply.status == 200
        seen = backend.requests[-1]
        assert seen.header("x-forwarded-for") == "203.0.113.7, 127.0.0.1"
        assert seen.header("x-forwarded-proto") == "https"
    finally:
        await gw.stop()


async def test_no_router_is_404(tmp_path, backend):
    """A host no router matches gets 404 and nothing is forwarded."""
    gw = await start_gateway(tmp_path, one_router(backend.url))
    try:
        reply = await http_request(gw.port(), get("other.test"))
        assert reply.status == 404
        assert backend.requests == []
    finally:
        await gw.stop()


async def test_service_without_servers_is_503(tmp_path):
    """A load balancer with no server answers 503."""
    dynamic = """
http:
  routers:
    app: {rule: "Host(`app.test`)", service: app}
  services:
    app:
      loadBalancer:
        servers: []
"""
    gw = await start_gateway(tmp_path, dynamic)
    try:
        assert (await http_request(gw.port(), get("app.test"))).status == 503
    finally:
        await gw.stop()


async def test_refused_backend_is_502(tmp_path):
    """When every server refuses connections the client gets 502."""
    port = await closed_port()
    gw = await start_gateway(tmp_path, one_router(f"http://127.0.0.1:{port}"))
    try:
        assert (await http_request(gw.port(), get("app.test"))).status == 502
    finally:
        await gw.stop()


async def test_dead_server_costs_no_request(tmp_path, backend):
    """A refusing server is taken out at once and its requests go to the live one."""
    port = await closed_port()
    dynamic = f"""
http:
  routers:
    app: {{rule: "Host(`app.test`)", service: app}}
  services:
    app:
      loadBalancer:
        servers:
          - url: http://127.0.0.1:{port}
          - url: {backend.url}
"""
    gw = await start_gateway(tmp_path, dynamic)
    try:
        statuses = [(await http_request(gw.port(), get("app.test"))).status for _ in range(20)]
        assert statuses == [200] * 20
        assert len(backend.requests) == 20
    finally:
        await gw.stop()


async def test_keep_alive_reuses_upstream_connection(tmp_path, backend):
    """Ten requests on one client connection use one pooled upstream connection."""
    gw = await start_gateway(tmp_path, one_router(backend.url))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port())
        for i in range(10):
            writer.write(get("app.test", f"/{i}"))
            reply = await read_reply(reader)
            assert reply.status == 200
            assert reply.json()["target"] == f"/{i}"
        writer.close()
        assert backend.connections == 1
        assert len(backend.requests) == 10
    finally:
        await gw.stop()


async def test_pipelined_requests_answered_in_order(tmp_path, backend):
    """Requests pipelined in one write are answered in order."""
    gw = await start_gateway(tmp_path, one_router(backend.url))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port())
        writer.write(b"".join(get("app.test", f"/{i}") for i in range(5)))
        targets = [(await read_reply(reader)).json()["target"] for _ in range(5)]
        assert targets == [f"/{i}" for i in range(5)]
        writer.close()
    finally:
        await gw.stop()


@pytest.mark.parametrize("size", [0, 1, 70_000, 3_000_000], ids=["empty", "one", "70k", "3M"])
async def test_content_length_body_streamed(tmp_path, backend, size):
    """A Content-Length request body arrives intact."""
    gw = await start_gateway(tmp_path, one_router(backend.url))
    try:
        body = bytes(i % 251 for i in range(size))
        head = f"POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: {size}\r\n\r\n".encode()
        reply = await http_request(gw.port(), head + body)
        assert reply.status == 200
        assert reply.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        seen = backend.requests[-1]
        assert seen.header("content-length") == str(size) or size == 0
    finally:
        await gw.stop()


async def test_chunked_request_body_streamed(tmp_path, backend):
    """A chunked request body is forwarded chunked and arrives intact."""
    gw = await start_gateway(tmp_path, one_router(backend.url))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port())
        writer.write(b"POST /c HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        parts = [b"hello ", b"chunked ", b"world" * 1000]
        for part in parts:
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        reply = await read_reply(reader)
        assert reply.status == 200
        assert reply.json()["body_sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()
        assert backend.requests[-1].header("transfer-encoding") == "chunked"
        writer.close()
    finally:
        await gw.stop()


async def test_large_responses_streamed(tmp_path):
    """Large chunked and fixed-length responses come back byte for byte."""
    from gateway.whoami import serve_whoami

    server = await serve_whoami("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gw = await start_gateway(tmp_path, one_router(f"http://127.0.0.1:{port}"))
    try:
        async with aiohttp.ClientSession() as session:
            for size in (10, 100_000, 5_000_000):
                url = f"http://127.0.0.1:{gw.port()}/data?size={size}"
                async with session.get(url, headers={"Host": "app.test"}) as resp:
                    body = await resp.read()
                    assert resp.status == 200
                    assert len(body) == size
    finally:
        await gw.stop()
        server.close()


async def test_expect_100_continue(tmp_path):
    """A client that sends Expect: 100-continue gets the interim answer, then the final one."""
    from gateway.whoami import serve_whoami

    server = await serve_whoami("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gw = await start_gateway(tmp_path, one_router(f"http://127.0.0.1:{port}"))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port())
        writer.write(
            b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line == b"HTTP/1.1 100 Continue\r\n"
        assert await reader.readline() == b"\r\n"
        writer.write(b"hello")
        reply = await read_reply(reader)
        assert reply.status == 200
        assert reply.json()["body_bytes"] == 5
        writer.close()
    finally:
        await gw.stop()
        server.close()


async def test_hop_by_hop_headers_not_forwarded(tmp_path, backend):
    """Connection, Keep-Alive, TE and fields named in Connection stop at the gateway."""
    gw = await start_gateway(tmp_path, one_router(backend.url))
    try:
        extra = (
            "Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
            "TE: trailers\r\nProxy-Authorization: Basic eA==\r\nX-Kept: yes\r\n"
        )
        assert (await http_request(gw.port(), get("app.test", "/", extra))).status == 200
        names = backend.requests[-1].header_names()
        assert "x-kept" in names
        assert not names & {"connection", "x-secret", "keep-alive", "te", "proxy-authorization"}
    finally:
        await gw.stop()


async def test_hop_by_hop_response_headers_removed(tmp_path):
    """Fields the upstream names in its Connection header do not reach the client."""
    body = b"ok"
    backend = await RecordingBackend(
        lambda seen: (
            b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: 1\r\n"
            b"X-Public: 1\r\nContent-Length: 2\r\n\r\n" + body
        )
    ).start()
    gw = await start_gateway(tmp_path, one_router(backend.url))
    try:
        reply = await http_request(gw.port(), get("app.test"))
        assert reply.status == 200 and reply.body == body
        assert reply.header("x-public") == "1"
        assert reply.header("x-internal") is None
    finally:
        await gw.stop()
        await backend.close()


async def test_head_request_has_no_body(tmp_path, backend):
    """HEAD is forwarded and the connection stays usable afterwards."""
    gw = await start_gateway(tmp_path, one_router(backend.url))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port())
        writer.write(b"HEAD / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        reply = await read_reply(reader, head_only=True)
        assert reply.status == 200
        assert reply.header("content-length") not in (None, "0")
        writer.write(get("app.test", "/after"))
        assert (await read_reply(reader)).json()["target"] == "/after"
        writer.close()
        assert backend.connections == 1
    finally:
        await gw.stop()


async def test_pass_host_header_false_uses_server_host(tmp_path, backend):
    """passHostHeader: false sends the server's own host:port upstream."""
    gw = await start_gateway(
        tmp_path, one_router(backend.url, extra_lb="        passHostHeader: false\n")
    )
    try:
        assert (await http_request(gw.port(), get("app.test"))).status == 200
        assert backend.requests[-1].header("host") == f"127.0.0.1:{backend.port}"
    finally:
        await gw.stop()


async def test_response_header_timeout_is_504(tmp_path):
    """An upstream slower than responseHeaderTimeout yields 504."""

    async def slow(seen: Seen) -> bytes:
        await asyncio.sleep(5)
        return b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    backend = await RecordingBackend(slow).start()
    dynamic = (
        one_router(backend.url, extra_lb="        serversTransport: fast\n")
        + """
  serversTransports:
    fast:
      forwardingTimeouts:
        responseHeaderTimeout: 500ms
"""
    )
    gw = await start_gateway(tmp_path, dynamic)
    try:
        reply = await asyncio.wait_for(http_request(gw.port(), get("app.test")), 3)
        assert reply.status == 504
    finally:
        await gw.stop()
        await backend.close()


async def test_weighted_service_and_sticky_cookie(tmp_path):
    """Weighted services split 3:1, and a sticky cookie pins a client to one server."""
    a = await RecordingBackend().start()
    b = await RecordingBackend().start()
    dynamic = f"""
http:
  routers:
    app: {{rule: "Host(`app.test`)", service: split}}
    sticky: {{rule: "Host(`sticky.test`)", service: pinned}}
  services:
    split:
      weighted:
        services:
          - {{name: a, weight: 3}}
          - {{name: b, weight: 1}}
    a:
      loadBalancer: {{servers: [{{url: "{a.url}"}}]}}
    b:
      loadBalancer: {{servers: [{{url: "{b.url}"}}]}}
    pinned:
      loadBalancer:
        sticky: {{cookie: {{name: lb, httpOnly: true}}}}
        servers: [{{url: "{a.url}"}}, {{url: "{b.url}"}}]
"""
    gw = await start_gateway(tmp_path, dynamic)
    try:
        for _ in range(40):
            assert (await http_request(gw.port(), get("app.test"))).status == 200
        assert (len(a.requests), len(b.requests)) == (30, 10)
        first = await http_request(gw.port(), get("sticky.test"))
        cookie = first.header("set-cookie")
        assert cookie is not None and cookie.startswith("lb=") and "HttpOnly" in cookie
        value = cookie.split(";")[0]
        before = (len(a.requests), len(b.requests))
        for _ in range(6):
            r = await http_request(gw.port(), get("sticky.test", "/", f"Cookie: {value}\r\n"))
            assert r.status == 200 and r.header("set-cookie") is None
        after = (len(a.requests) - before[0], len(b.requests) - before[1])
        assert sorted(after) == [0, 6]
    finally:
        await gw.stop()
        await a.close()
        await b.close()


async def test_middleware_chain_runs_in_router_order(tmp_path, backend):
    """A router's middlewares run in its list order, request and response side."""
    dynamic = f"""
http:
  routers:
    app:
      rule: Host(`app.test`)
      service: app
      middlewares: [first, second]
  middlewares:
    first:
      headers:
        customRequestHeaders: {{X-Order: first, X-Drop: ""}}
        customResponseHeaders: {{X-Resp: first}}
    second:
      headers:
        customRequestHeaders: {{X-Order: second}}
        customResponseHeaders: {{X-Resp: second}}
  services:
    app:
      loadBalancer:
        servers: [{{url: "{backend.url}"}}]
"""
    gw = await start_gateway(tmp_path, dynamic)
    try:
        reply = await http_request(gw.port(), get("app.test", "/", "X-Drop: 1\r\n"))
        assert reply.status == 200
        seen = backend.requests[-1]
        assert seen.header("x-order") == "second"
        assert seen.header("x-drop") is None
        # The outer middleware sees the response last.
        assert reply.header("x-resp") == "first"
    finally:
        await gw.stop()


async def ws_echo_backend() -> tuple[web.AppRunner, int]:
    """An aiohttp WebSocket server on 127.0.0.1 that echoes each text frame as "echo:<text>"."""

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str("echo:" + msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


async def test_websocket_upgrade_is_tunnelled(tmp_path):
    """A WebSocket upgrade is passed through and frames flow both ways."""

    runner, port = await ws_echo_backend()
    gw = await start_gateway(tmp_path, one_router(f"http://127.0.0.1:{port}"))
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                f"http://127.0.0.1:{gw.port()}/ws", headers={"Host": "app.test"}
            ) as ws,
        ):
            for text in ("one", "two", "x" * 100_000):
                await ws.send_str(text)
                msg = await asyncio.wait_for(ws.receive(), 5)
                assert msg.data == "echo:" + text
    finally:
        await gw.stop()
        await runner.cleanup()


async def test_backend_recovers_after_restart(tmp_path):
    """A backend that goes away gives 502, and traffic flows again once it is back."""
    backend = await RecordingBackend().start()
    port = backend.port
    gw = await start_gateway(tmp_path, one_router(backend.url))
    try:
        assert (await http_request(gw.port(), get("app.test"))).status == 200
        await backend.close()
        assert (await http_request(gw.port(), get("app.test"))).status == 502
        revived = RecordingBackend()
        loop = asyncio.get_running_loop()
        from tests.backends import _Conn

        revived.server = await loop.create_server(lambda: _Conn(revived), "127.0.0.1", port)
        # Passive ejection lasts a few seconds; the gateway must recover by itself.
        deadline = loop.time() + 10
        status = 0
        while loop.time() < deadline:
            status = (await http_request(gw.port(), get("app.test"))).status
            if status == 200:
                break
            await asyncio.sleep(0.2)
        assert status == 200
        await revived.close()
    finally:
        await gw.stop()


async def test_reload_under_load_loses_no_request(tmp_path, backend):
    """Reloading the configuration while requests flow fails none of them."""
    gw = await start_gateway(tmp_path, one_router(backend.url))
    stop = asyncio.Event()
    results: list[int] = []

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port())
        while not stop.is_set():
            writer.write(get("app.test"))
            results.append((await read_reply(reader)).status)
        writer.close()

    async def fresh_client() -> None:
        while not stop.is_set():
            results.append((await http_request(gw.port(), get("app.test"))).status)

    try:
        tasks = [asyncio.create_task(client()) for _ in range(4)]
        tasks += [asyncio.create_task(fresh_client()) for _ in range(2)]
        for i in range(5):
            text = (
                one_router(backend.url)
                + f"""
    extra{i}:
      loadBalancer:
        servers: [{{url: "{backend.url}"}}]
"""
            )
            text = text.replace(
                "  services:\n",
                f'    r{i}: {{rule: "Host(`r{i}.test`)", service: extra{i}}}\n  services:\n',
                1,
            )
            await gw.reload(text)
        stop.set()
        await asyncio.gather(*tasks)
        assert len(results) > 50
        assert set(results) == {200}
        assert gw.gateway.compiler.generation == 6
    finally:
        stop.set()
        await gw.stop()


async def test_invalid_reload_keeps_last_good_configuration(tmp_path, backend):
    """A bad rule is rejected with file, line and key; the old routes keep serving."""
    gw = await start_gateway(tmp_path, one_router(backend.url))
    try:
        errors = await gw.reload(one_router(backend.url, rule="Host(`app.test`"), expect_ok=False)
        text = str(errors[0])  # type: ignore[index]
        assert "dynamic.yml:5" in text
        assert "http.routers.app@file.rule" in text
        assert "column" in text
        assert (await http_request(gw.port(), get("app.test"))).status == 200
        errors = await gw.reload(
            one_router(backend.url).replace("service: app", "service: nope"), expect_ok=False
        )
        assert "nope" in str(errors[0])  # type: ignore[index]
        assert (await http_request(gw.port(), get("app.test"))).status == 200
    finally:
        await gw.stop()


async def test_stale_pooled_connection_is_retried_transparently(tmp_path):
    """A keep-alive connection the server closed silently costs the client nothing."""
    backend = await RecordingBackend(close_after_response=True).start()
    gw = await start_gateway(tmp_path, one_router(backend.url))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port())
        writer.write(get("app.test", "/1") + get("app.test", "/2") + get("app.test", "/3"))
        targets = [(await read_reply(reader)).json()["target"] for _ in range(3)]
        assert targets == ["/1", "/2", "/3"]
        writer.close()
    finally:
        await gw.stop()
        await backend.close()


async def test_reset_after_request_is_502_and_not_replayed(tmp_path):
    """A server that drops the connection after receiving a request gives 502, once."""

    calls: list[str] = []
    backend = await RecordingBackend().start()

    async def hang_up(seen: Seen) -> bytes:
        calls.append(seen.target)
        for transport in backend.transports:
            transport.abort()
        return b""

    backend.responder = hang_up
    gw = await start_gateway(tmp_path, one_router(backend.url))
    try:
        reply = await http_request(
            gw.port(), b"POST /once HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2\r\n\r\nhi"
        )
        assert reply.status == 502
        assert calls == ["/once"]
    finally:
        await gw.stop()
        await backend.close()


async def test_websocket_upgrade_through_middleware(tmp_path):
    """An upgrade passes through a router with middleware, and frames still flow."""

    runner, port = await ws_echo_backend()
    dynamic = f"""
http:
  routers:
    app: {{rule: "Host(`app.test`)", service: app, middlewares: [tag]}}
  middlewares:
    tag:
      headers: {{customResponseHeaders: {{X-Tag: "1"}}}}
  services:
    app:
      loadBalancer: {{servers: [{{url: "http://127.0.0.1:{port}"}}]}}
"""
    gw = await start_gateway(tmp_path, dynamic)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                f"http://127.0.0.1:{gw.port()}/ws", headers={"Host": "app.test"}
            ) as ws,
        ):
            assert ws._response.headers.get("X-Tag") == "1"
            await ws.send_str("hi")
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.data == "echo:hi"
    finally:
        await gw.stop()
        await runner.cleanup()


async def test_unrouted_request_pipelined_behind_a_proxied_one_gets_its_404(tmp_path, backend):
    """A 404 pipelined behind a forwarded request is answered in order, not dropped."""
    gw = await start_gateway(tmp_path, one_router(backend.url))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port())
        writer.write(get("app.test", "/1") + get("nobody.test", "/2") + get("app.test", "/3"))
        statuses = [(await read_reply(reader)).status for _ in range(3)]
        assert statuses == [200, 404, 200]
        assert [seen.target for seen in backend.requests] == ["/1", "/3"]
        writer.close()
    finally:
        await gw.stop()


async def test_failover_service_switches_to_fallback_and_back(tmp_path):
    """A failover service uses its fallback while the main service has no healthy server."""
    main = await RecordingBackend().start()
    spare = await RecordingBackend().start()
    dynamic = f"""
http:
  routers:
    app: {{rule: "Host(`app.test`)", service: both}}
  services:
    both:
      failover: {{service: main, fallback: spare}}
    main:
      loadBalancer: {{servers: [{{url: "{main.url}"}}]}}
    spare:
      loadBalancer: {{servers: [{{url: "{spare.url}"}}]}}
"""
    gw = await start_gateway(tmp_path, dynamic)
    try:
        assert (await http_request(gw.port(), get("app.test", "/a"))).status == 200
        assert [s.target for s in main.requests] == ["/a"]
        server = gw.gateway.compiled.servers[("main@file", main.url)]  # type: ignore[union-attr]
        server.set_healthy(False)
        assert (await http_request(gw.port(), get("app.test", "/b"))).status == 200
        assert [s.target for s in spare.requests] == ["/b"]
        server.set_healthy(True)
        assert (await http_request(gw.port(), get("app.test", "/c"))).status == 200
        assert [s.target for s in main.requests] == ["/a", "/c"]
    finally:
        await gw.stop()
        await main.close()
        await spare.close()


@pytest.mark.parametrize("trusted", [True, False], ids=["rootCAs", "untrusted"])
async def test_https_upstream_verified_with_servers_transport(tmp_path, trusted):
    """An https server is reached when its CA is in the serversTransport's rootCAs, else 502."""
    import ssl

    from tests.certs import make_ca

    ca = make_ca(tmp_path)
    cert, key = ca.issue(tmp_path, ["127.0.0.1"])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def secure(request: web.Request) -> web.Response:
        return web.Response(text="secure")

    app = web.Application()
    app.router.add_get("/", secure)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    port = runner.addresses[0][1]
    roots = f'rootCAs: ["{ca.cert_path}"]' if trusted else ""
    dynamic = (
        one_router(f"https://127.0.0.1:{port}", extra_lb="        serversTransport: tls\n")
        + f"""
  serversTransports:
    tls: {{{roots}}}
"""
    )
    gw = await start_gateway(tmp_path, dynamic)
    try:
        reply = await http_request(gw.port(), get("app.test"))
        if trusted:
            assert (reply.status, reply.body) == (200, b"secure")
        else:
            assert reply.status == 502
    finally:
        await gw.stop()
        await runner.cleanup()


async def test_health_check_takes_failing_server_out_and_back(tmp_path):
    """A server failing its health check gets no traffic until it passes again."""
    healthy = {"a": True, "b": False}

    def responder_for(name: str):
        def respond(seen: Seen) -> bytes:
            if seen.target == "/health":
                status = b"200 OK" if healthy[name] else b"503 Service Unavailable"
                return b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n"
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n" + name.encode()

        return respond

    a = await RecordingBackend(responder_for("a")).start()
    b = await RecordingBackend(responder_for("b")).start()
    dynamic = f"""
http:
  routers:
    app: {{rule: "Host(`app.test`)", service: app}}
  services:
    app:
      loadBalancer:
        servers: [{{url: "{a.url}"}}, {{url: "{b.url}"}}]
        healthCheck: {{path: /health, interval: 100ms, timeout: 1s}}
"""
    gw = await start_gateway(tmp_path, dynamic)
    changed = asyncio.Event()
    try:
        server_b = gw.gateway.compiled.servers[("app@file", b.url)]  # type: ignore[union-attr]
        server_b.on_health_change = lambda server: changed.set()

        async def until(state: bool) -> None:
            while server_b.healthy is not state:
                changed.clear()
                await asyncio.wait_for(changed.wait(), 5)

        await until(False)
        bodies = {(await http_request(gw.port(), get("app.test"))).body for _ in range(6)}
        assert bodies == {b"a"}
        healthy["b"] = True
        await until(True)
        bodies = {(await http_request(gw.port(), get("app.test"))).body for _ in range(6)}
        assert bodies == {b"a", b"b"}
    finally:
        await gw.stop()
        await a.close()
        await b.close()


async def test_entry_point_middlewares_run_before_router_middlewares(tmp_path, backend):
    """entryPoints.<name>.http.middlewares wrap every router on that entry point, first."""
    static = static_config("http:\n  middlewares: [outer@file]\n")
    dynamic = f"""
http:
  routers:
    app: {{rule: "Host(`app.test`)", service: app, middlewares: [inner]}}
    bare: {{rule: "Host(`bare.test`)", service: app}}
  middlewares:
    outer:
      headers: {{customRequestHeaders: {{X-Order: outer}}, customResponseHeaders: {{X-Who: outer}}}}
    inner:
      headers: {{customRequestHeaders: {{X-Order: inner}}, customResponseHeaders: {{X-Who: inner}}}}
  services:
    app:
      loadBalancer: {{servers: [{{url: "{backend.url}"}}]}}
"""
    gw = await start_gateway(tmp_path, dynamic, static=static)
    try:
        reply = await http_request(gw.port(), get("app.test"))
        assert reply.status == 200
        assert backend.requests[-1].header("x-order") == "inner"
        assert reply.header("x-who") == "outer"
        reply = await http_request(gw.port(), get("bare.test"))
        assert backend.requests[-1].header("x-order") == "outer"
        assert reply.header("x-who") == "outer"
    finally:
        await gw.stop()


@pytest.mark.parametrize(
    ("transport", "answered"),
    [("keepAliveMaxRequests: 3", 3), ("keepAliveMaxTime: 1ns", 1)],
    ids=["max-requests", "max-time"],
)
async def test_keep_alive_limits_close_the_connection(tmp_path, backend, transport, answered):
    """keepAliveMaxRequests / keepAliveMaxTime end a client connection after its answer."""
    static = static_config(f"transport:\n  {transport}\n")
    gw = await start_gateway(tmp_path, one_router(backend.url), static=static)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port())
        for i in range(answered):
            writer.write(get("app.test", f"/{i}"))
            reply = await read_reply(reader)
            assert reply.status == 200
        assert reply.header("connection") == "close"
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        await gw.stop()


async def test_request_accept_grace_timeout_keeps_serving_after_stop(tmp_path, backend):
    """With requestAcceptGraceTimeout, new requests are still served after a stop."""
    static = static_config(
        "transport:\n  lifeCycle: {requestAcceptGraceTimeout: 1s, graceTimeOut: 1s}\n"
    )
    gw = await start_gateway(tmp_path, one_router(backend.url), static=static)
    port = gw.port()
    gw.gateway.stop()
    reply = await http_request(port, get("app.test", "/late"))
    assert reply.status == 200
    assert backend.requests[-1].target == "/late"
    await asyncio.wait_for(gw.task, 10)


@pytest.mark.parametrize("version", ["1.1", "1.0"])
async def test_close_delimited_response_arrives_whole(tmp_path, backend, version):
    """A body the server ends by closing reaches the client whole, properly terminated."""
    payload = b"closing body " * 5000
    backend.responder = lambda seen: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + payload
    backend.close_after_response = True
    gw = await start_gateway(tmp_path, one_router(backend.url))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port())
        writer.write(f"GET / HTTP/{version}\r\nHost: app.test\r\n\r\n".encode())
        reply = await read_reply(reader)
        assert reply.status == 200
        assert reply.body == payload
        if version == "1.1":
            assert reply.header("transfer-encoding") == "chunked"
        writer.close()
    finally:
        await gw.stop()
