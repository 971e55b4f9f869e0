"""How the proxy runs middleware: inline filters, handler tasks, bodies, retries, transforms."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable

from gateway.config.model import model
from middleware.contract import (
    BuildContext,
    Filter,
    Handler,
    Headers,
    Request,
    Response,
)
from middleware.registry import Registry, load_registry
from tests.backends import RecordingBackend, closed_port, get, http_request, read_reply
from tests.harness import start_gateway


@model
class _Tag:
    name: str = "x"
    answer: int = 0
    fail: bool = False


class _TagFilter(Filter):
    """Appends its name to X-Trail on the way in and on the way out."""

    def __init__(self, options: _Tag, seen: list[object]) -> None:
        self.options = options
        self.seen = seen

    def request(self, request: Request) -> Response | None:
        self.seen.append(asyncio.current_task())
        if self.options.fail:
            raise RuntimeError("filter broke")
        trail = request.headers.get("x-trail")
        request.headers.set(
            "X-Trail", f"{trail},{self.options.name}" if trail else self.options.name
        )
        if self.options.answer:
            return Response(self.options.answer, body=b"answered by " + self.options.name.encode())
        return None

    def response(self, request: Request, response: Response) -> None:
        out = response.headers.get("x-out")
        response.headers.set("X-Out", f"{out},{self.options.name}" if out else self.options.name)


class _TagFactory:
    key = "tag"
    options = _Tag

    def __init__(self) -> None:
        self.seen: list[object] = []

    def build(self, options: _Tag, next: Handler, context: BuildContext) -> Filter:
        return _TagFilter(options, self.seen)


@model
class _Empty:
    pass


class _SlowFilter(Filter):
    """Waits for an event before letting the request on (a cache miss, say)."""

    def __init__(self, gate: asyncio.Event) -> None:
        self.gate = gate

    def request(self, request: Request) -> Awaitable[Response | None]:
        return self._wait()

    async def _wait(self) -> None:
        await self.gate.wait()


class _SlowFactory:
    key = "slow"
    options = _Empty

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    def build(self, options: _Empty, next: Handler, context: BuildContext) -> Filter:
        return _SlowFilter(self.gate)


class _BodyFactory:
    """Reads the request body whole, then forwards it, and the response body whole."""

    key = "wholeBodies"
    options = _Empty

    def build(self, options: _Empty, next: Handler, context: BuildContext) -> Handler:
        async def handler(request: Request) -> Response:
            body = await request.read_body(1 << 20)
            request.headers.set("X-Body-Length", str(len(body)))
            response = await next(request)
            data = await response.read_body(1 << 20)
            return Response(response.status, headers=response.headers, body=data.upper())

        return handler


class _RetryOnce:
    """Forwards again once when the first attempt failed at the network level."""

    key = "again"
    options = _Empty

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.before_retry: asyncio.Event | None = None

    def build(self, options: _Empty, next: Handler, context: BuildContext) -> Handler:
        async def handler(request: Request) -> Response:
            response = await next(request)
            if response.error and request.replayable:
                self.errors.append(response.error)
                if self.before_retry is not None:
                    await self.before_retry.wait()
                response = await next(request)
            return response

        return handler


class _Upper:
    def feed(self, data: bytes) -> bytes:
        return data.upper()

    def end(self) -> bytes:
        return b"<END>"


class _UpperFilter(Filter):
    def response(self, request: Request, response: Response) -> None:
        response.headers.remove("content-length")
        response.transform = _Upper()


class _UpperFactory:
    key = "upper"
    options = _Empty

    def build(self, options: _Empty, next: Handler, context: BuildContext) -> Filter:
        return _UpperFilter()


class _DoneFactory:
    """Records when each exchange ends, through Request.on_done."""

    key = "done"
    options = _Empty

    def __init__(self) -> None:
        self.ended: list[str] = []
        self.event = asyncio.Event()

    def build(self, options: _Empty, next: Handler, context: BuildContext) -> Filter:
        factory = self

        class _Done(Filter):
            def request(self, request: Request) -> None:
                def done() -> None:
                    factory.ended.append(request.path)
                    factory.event.set()

                request.on_done(done)

        return _Done()


def registry(*factories: object) -> Registry:
    return load_registry(plugins=False).with_factories(
        {f.key: f for f in factories}  # type: ignore[attr-defined]
    )


def config(url: str, middlewares: str, definitions: str) -> str:
    return f"""
http:
  routers:
    app:
      rule: Host(`app.test`)
      service: app
      middlewares: {middlewares}
  services:
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
  middlewares:
{definitions}
"""


async def test_filter_chain_runs_inline_in_order(tmp_path):
    """Filters run outside any task, in order in, reversed out."""
    backend = await RecordingBackend().start()
    tag = _TagFactory()
    text = config(
        backend.url,
        "[a, b]",
        "    a:\n      tag: {name: a}\n    b:\n      tag: {name: b}\n",
    )
    gw = await start_gateway(tmp_path, text, registry=registry(tag))
    try:
        reply = await http_request(gw.port(), get("app.test"))
        assert reply.status == 200
        assert backend.requests[-1].header("x-trail") == "a,b"
        assert reply.header("x-out") == "b,a"
        assert tag.seen == [None, None]
    finally:
        await gw.stop()
        await backend.close()


async def test_filter_answer_passes_outer_response_hooks_only(tmp_path):
    """A filter's own answer goes back through the filters before it, not itself."""
    backend = await RecordingBackend().start()
    text = config(
        backend.url,
        "[a, b, c]",
        "    a:\n      tag: {name: a}\n    b:\n      tag: {name: b, answer: 403}\n"
        "    c:\n      tag: {name: c}\n",
    )
    gw = await start_gateway(tmp_path, text, registry=registry(_TagFactory()))
    try:
        reply = await http_request(gw.port(), get("app.test"))
        assert reply.status == 403
        assert reply.body == b"answered by b"
        assert reply.header("x-out") == "a"
        assert backend.requests == []
    finally:
        await gw.stop()
        await backend.close()


async def test_response_hooks_see_gateway_errors(tmp_path):
    """A 502 the gateway generates goes through the filters' response hooks."""
    port = await closed_port()
    text = config(f"http://127.0.0.1:{port}", "[a]", "    a:\n      tag: {name: a}\n")
    gw = await start_gateway(tmp_path, text, registry=registry(_TagFactory()))
    try:
        reply = await http_request(gw.port(), get("app.test"))
        assert reply.status == 502
        assert reply.header("x-out") == "a"
    finally:
        await gw.stop()


async def test_failing_filter_answers_500_and_serving_continues(tmp_path):
    """A filter that raises answers 500 for its request; the next request is fine."""
    backend = await RecordingBackend().start()
    text = config(
        backend.url,
        "[ok, bad]",
        "    ok:\n      tag: {name: ok}\n    bad:\n      tag: {name: bad, fail: true}\n",
    )
    gw = await start_gateway(tmp_path, text, registry=registry(_TagFactory()))
    try:
        reply = await http_request(gw.port(), get("app.test"))
        assert reply.status == 500
        assert reply.header("x-out") == "ok"
        assert backend.requests == []
        await gw.reload(config(backend.url, "[ok]", "    ok:\n      tag: {name: ok}\n"))
        assert (await http_request(gw.port(), get("app.test"))).status == 200
    finally:
        await gw.stop()
        await backend.close()


async def test_awaitable_filter_holds_only_its_request(tmp_path):
    """A filter returning an awaitable delays that request until it resolves."""
    backend = await RecordingBackend().start()
    slow = _SlowFactory()
    text = config(backend.url, "[s, a]", "    s:\n      slow: {}\n    a:\n      tag: {name: a}\n")
    gw = await start_gateway(tmp_path, text, registry=registry(slow, _TagFactory()))
    try:
        pending = asyncio.ensure_future(http_request(gw.port(), get("app.test", "/held")))
        done, _ = await asyncio.wait({pending}, timeout=0.3)
        assert not done and backend.requests == []
        slow.gate.set()
        reply = await pending
        assert reply.status == 200
        assert backend.requests[-1].header("x-trail") == "a"
        assert reply.header("x-out") == "a"
    finally:
        await gw.stop()
        await backend.close()


async def test_handler_reads_bodies_whole(tmp_path):
    """A chunked request read whole is forwarded with Content-Length; the response body too."""
    backend = await RecordingBackend().start()
    text = config(backend.url, "[whole]", "    whole:\n      wholeBodies: {}\n")
    gw = await start_gateway(tmp_path, text, registry=registry(_BodyFactory()))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port())
        writer.write(
            b"POST /b HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        # The middleware wants the body, so the gateway itself invites it.
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100 ")
        writer.write(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        reply = await read_reply(reader)
        writer.close()
        seen = backend.requests[-1]
        assert seen.body == b"hello world"
        assert seen.header("content-length") == "11"
        assert seen.header("transfer-encoding") is None
        assert seen.header("x-body-length") == "11"
        assert reply.status == 200
        assert b'"BODY_LEN": 11' in reply.body
    finally:
        await gw.stop()
        await backend.close()


async def test_handler_forwards_again_after_network_error(tmp_path):
    """next() may be awaited again: the second attempt reaches the server that came back."""
    port = await closed_port()
    again = _RetryOnce()
    again.before_retry = asyncio.Event()
    text = config(f"http://127.0.0.1:{port}", "[again]", "    again:\n      again: {}\n")
    gw = await start_gateway(tmp_path, text, registry=registry(again))
    backend: RecordingBackend | None = None
    try:
        pending = asyncio.ensure_future(http_request(gw.port(), get("app.test", "/r")))
        while not again.errors:
            await asyncio.wait({pending}, timeout=0.01)
            assert not pending.done()
        # The server comes back on the same port before the retry goes out.
        backend = await RecordingBackend().start(port)
        again.before_retry.set()
        reply = await pending
        assert reply.status == 200
        assert backend.requests[-1].target == "/r"
        assert again.errors and again.errors[0]
    finally:
        await gw.stop()
        if backend is not None:
            await backend.close()


async def test_streamed_body_is_not_replayable(tmp_path):
    """Once a streamed body reached a server, the request says it cannot be replayed."""

    backend = await RecordingBackend().start()
    backend.close_after_response = True
    backend.responder = lambda seen: b""
    again = _RetryOnce()
    text = config(backend.url, "[again]", "    again:\n      again: {}\n")
    gw = await start_gateway(tmp_path, text, registry=registry(again))
    try:
        raw = b"POST /p HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello"
        reply = await http_request(gw.port(), raw)
        assert reply.status == 502
        assert again.errors == []
        assert len(backend.requests) == 1
    finally:
        await gw.stop()
        await backend.close()


async def test_transform_rewrites_streamed_body(tmp_path):
    """A BodyTransform set in a response hook rewrites the relayed body, chunked."""
    backend = await RecordingBackend().start()
    text = config(backend.url, "[up]", "    up:\n      upper: {}\n")
    gw = await start_gateway(tmp_path, text, registry=registry(_UpperFactory()))
    try:
        reply = await http_request(gw.port(), get("app.test", "/t"))
        assert reply.status == 200
        assert reply.header("transfer-encoding") == "chunked"
        assert reply.body.endswith(b"<END>")
        assert b'"TARGET": "/T"' in reply.body
        head = await http_request(
            gw.port(), b"HEAD / HTTP/1.1\r\nHost: app.test\r\n\r\n", head_only=True
        )
        assert head.status == 200
    finally:
        await gw.stop()
        await backend.close()


async def test_on_done_runs_after_the_response(tmp_path):
    """Request.on_done callbacks run once the exchange has ended."""
    backend = await RecordingBackend().start()
    done = _DoneFactory()
    text = config(backend.url, "[d]", "    d:\n      done: {}\n")
    gw = await start_gateway(tmp_path, text, registry=registry(done))
    try:
        reply = await http_request(gw.port(), get("app.test", "/fin"))
        assert reply.status == 200
        await asyncio.wait_for(done.event.wait(), 5)
        assert done.ended == ["/fin"]
    finally:
        await gw.stop()
        await backend.close()


async def test_mixed_chain_keeps_order(tmp_path):
    """Filters and handlers in one chain run in the configured order."""
    backend = await RecordingBackend().start()
    text = config(
        backend.url,
        "[a, whole, b]",
        "    a:\n      tag: {name: a}\n    whole:\n      wholeBodies: {}\n"
        "    b:\n      tag: {name: b}\n",
    )
    gw = await start_gateway(tmp_path, text, registry=registry(_TagFactory(), _BodyFactory()))
    try:
        reply = await http_request(gw.port(), get("app.test"))
        assert reply.status == 200
        assert backend.requests[-1].header("x-trail") == "a,b"
        assert backend.requests[-1].header("x-body-length") == "0"
        assert reply.header("x-out") == "b,a"
    finally:
        await gw.stop()
        await backend.close()


async def test_generated_headers_reach_client(tmp_path):
    """A response a handler builds carries its headers and a computed length."""
    backend = await RecordingBackend().start()

    class _Answer:
        key = "answer"
        options = _Empty

        def build(self, options: _Empty, next: Handler, context: BuildContext) -> Handler:
            async def handler(request: Request) -> Response:
                return Response(
                    418,
                    headers=Headers([(b"X-Made", b"here"), (b"Content-Length", b"999")]),
                    body=b"short",
                )

            return handler

    text = config(backend.url, "[t]", "    t:\n      answer: {}\n")
    gw = await start_gateway(tmp_path, text, registry=registry(_Answer()))
    try:
        reply = await http_request(gw.port(), get("app.test"))
        assert (reply.status, reply.body, reply.header("x-made")) == (418, b"short", "here")
        assert reply.header("content-length") == "5"
    finally:
        await gw.stop()
        await backend.close()


async def test_requests_through_chains_leave_no_cyclic_garbage(tmp_path):
    """Filter and handler chains free each exchange by reference counting alone."""
    backend = await RecordingBackend().start()
    text = config(
        backend.url, "[up]", "    up:\n      upper: {}\n    whole:\n      wholeBodies: {}\n"
    )
    text = text.replace("  services:", HANDLER_ROUTER + "  services:")
    gw = await start_gateway(tmp_path, text, registry=registry(_UpperFactory(), _BodyFactory()))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port())
    try:
        for _ in range(20):
            writer.write(get("app.test") + get("whole.test"))
            assert (await read_reply(reader)).status == 200
            assert (await read_reply(reader)).status == 200
        gc.collect()
        gc.disable()
        try:
            for _ in range(200):
                writer.write(get("app.test") + get("whole.test"))
                assert (await read_reply(reader)).status == 200
                assert (await read_reply(reader)).status == 200
            assert gc.collect() == 0
        finally:
            gc.enable()
    finally:
        writer.close()
        await gw.stop()
        await backend.close()


HANDLER_ROUTER = """    whole:
      rule: Host(`whole.test`)
      service: app
      middlewares: [whole]
"""


class _BrokenHookFactory:
    key = "brokenHook"
    options = _Empty

    def build(self, options: _Empty, next: Handler, context: BuildContext) -> Filter:
        class _Broken(Filter):
            def response(self, request: Request, response: Response) -> None:
                raise KeyError("hook broke")

        return _Broken()


async def test_raising_response_hook_answers_500(tmp_path):
    """A response hook that raises on an upstream head answers 500 and serving continues."""
    backend = await RecordingBackend().start()
    text = config(backend.url, "[b]", "    b:\n      brokenHook: {}\n")
    gw = await start_gateway(tmp_path, text, registry=registry(_BrokenHookFactory()))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port())
        writer.write(get("app.test"))
        reply = await read_reply(reader)
        writer.close()
        assert reply.status == 500
        assert len(backend.requests) == 1
        await gw.reload(config(backend.url, "[]", "    b:\n      brokenHook: {}\n"))
        assert (await http_request(gw.port(), get("app.test"))).status == 200
    finally:
        await gw.stop()
        await backend.close()


class _ReadThenRefuse:
    key = "readThenRefuse"
    options = _Empty

    def build(self, options: _Empty, next: Handler, context: BuildContext) -> Handler:
        async def handler(request: Request) -> Response:
            body = await request.read_body(1024)
            return Response(401, body=b"refused %d bytes" % len(body))

        return handler


async def test_answer_after_reading_the_body_keeps_the_connection(tmp_path):
    """A middleware answering once it read the whole body leaves the connection reusable."""
    backend = await RecordingBackend().start()
    text = config(backend.url, "[r]", "    r:\n      readThenRefuse: {}\n")
    gw = await start_gateway(tmp_path, text, registry=registry(_ReadThenRefuse()))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port())
        post = b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello"
        for _ in range(2):
            writer.write(post)
            reply = await read_reply(reader)
            assert (reply.status, reply.body) == (401, b"refused 5 bytes")
            assert reply.header("connection") is None
        writer.close()
        assert backend.requests == []
    finally:
        await gw.stop()
        await backend.close()
