"""gatewayRequestMirror through a running gateway: copies reach the mirror, never the client.

Spec rules checked (apis/v1/httproute_types.go ``HTTPRequestMirrorFilter``;
notes section 2.7; conformance httproute-request-mirror,
-multiple-mirrors, -percentage-mirror): the mirror gets a copy, its response
is ignored, each copy goes to one endpoint, ``percent``/``fraction`` pick
the share, 0 sends none. Copies are fire-and-forget, so a test waits for
the copies it expects on an event and proves absences with a second mirror
that copies every request after the one under test ("sentinel").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from middleware.registry import load_registry
from tests.backends import RecordingBackend, Seen, closed_port, default_response, http_request
from tests.harness import RunningGateway, start_gateway

REGISTRY = load_registry(plugins=False).with_factories(
    {
        "gatewayRequestMirror": "middleware.http.gateway_mirror:GatewayRequestMirror",
        "gatewayRequestHeaderModifier": (
            "middleware.http.gateway_filters:GatewayRequestHeaderModifier"
        ),
    }
)


@dataclass
class Mirror:
    """A recording backend that lets a test wait until it has seen ``n`` requests."""

    backend: RecordingBackend = field(default_factory=RecordingBackend)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    hold: asyncio.Future[None] | None = None

    def __post_init__(self) -> None:
        self.backend.responder = self.respond

    def respond(self, seen: Seen) -> bytes | Awaitable[bytes]:
        self.arrived.set()
        if self.hold is not None:
            return self._later(seen, self.hold)
        return default_response(seen)

    @staticmethod
    async def _later(seen: Seen, hold: asyncio.Future[None]) -> bytes:
        await hold
        return default_response(seen)

    async def start(self) -> Mirror:
        await self.backend.start()
        return self

    @property
    def requests(self) -> list[Seen]:
        return self.backend.requests

    async def seen(self, n: int) -> list[Seen]:
        """Wait (bounded) until ``n`` copies arrived."""
        async with asyncio.timeout(10):
            while len(self.requests) < n:
                self.arrived.clear()
                await self.arrived.wait()
        return self.requests


def mirror(*urls: str, options: str = "") -> str:
    backends = ", ".join(f'{{url: "{u}"}}' for u in urls)
    return f"gatewayRequestMirror: {{backends: [{backends}]{', ' + options if options else ''}}}"


def config(url: str, middlewares: dict[str, str]) -> str:
    """Router ``app`` on Host app.test through ``middlewares`` in order."""
    defined = "".join(f"    {name}:\n      {text}\n" for name, text in middlewares.items())
    return f"""http:
  routers:
    app:
      rule: Host(`app.test`)
      service: app
      middlewares: [{", ".join(middlewares)}]
  services:
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
  middlewares:
{defined}"""


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, middlewares: dict[str, str]
) -> AsyncIterator[tuple[RunningGateway, RecordingBackend]]:
    backend = await RecordingBackend().start()
    gw = await start_gateway(tmp_path, config(backend.url, middlewares), registry=REGISTRY)
    try:
        yield gw, backend
    finally:
        await gw.stop()
        await backend.close()


def request(
    target: str = "/mirror", method: str = "GET", extra: str = "", body: bytes = b""
) -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    head = f"{method} {target} HTTP/1.1\r\nHost: app.test\r\n{extra}{length}\r\n"
    return head.encode() + body


async def test_mirror_receives_a_copy_and_the_client_the_primary_answer(tmp_path: Path) -> None:
    """The mirror sees method, target, headers and Host; the client sees the primary's answer."""
    m = await Mirror().start()
    async with serving(tmp_path, {"mw": mirror(m.backend.url)}) as (gw, backend):
        reply = await http_request(gw.port(), request("/mirror?x=1", extra="X-Test: yes\r\n"))
        assert (reply.status, reply.json()["target"]) == (200, "/mirror?x=1")
        assert len(backend.requests) == 1
        (copy,) = await m.seen(1)
        assert (copy.method, copy.target) == ("GET", "/mirror?x=1")
        assert copy.header("x-test") == "yes"
        assert copy.header("host") == "app.test"
        assert copy.header("x-forwarded-for") == "127.0.0.1"
        assert copy.header("x-forwarded-proto") == "http"
    await m.backend.close()


async def test_mirror_copies_the_body(tmp_path: Path) -> None:
    """A POST body within maxBodySize reaches both the primary and the mirror."""
    m = await Mirror().start()
    async with serving(tmp_path, {"mw": mirror(m.backend.url)}) as (gw, backend):
        reply = await http_request(gw.port(), request(method="POST", body=b"hello mirror"))
        assert reply.status == 200
        assert backend.requests[-1].body == b"hello mirror"
        (copy,) = await m.seen(1)
        assert (copy.method, copy.body) == ("POST", b"hello mirror")
    await m.backend.close()


async def test_mirror_sees_the_filters_before_it(tmp_path: Path) -> None:
    """The copy is the request as modified by the filters earlier in the rule."""
    m = await Mirror().start()
    chain = {
        "modify": "gatewayRequestHeaderModifier: {set: [{name: X-Modified, value: '1'}]}",
        "mw": mirror(m.backend.url),
    }
    async with serving(tmp_path, chain) as (gw, _):
        await http_request(gw.port(), request())
        (copy,) = await m.seen(1)
        assert copy.header("x-modified") == "1"
    await m.backend.close()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("length", id="content-length"),
        pytest.param("chunked", id="chunked"),
    ],
)
async def test_body_over_max_body_size_is_not_mirrored(tmp_path: Path, body: str) -> None:
    """A body larger than maxBodySize is forwarded whole to the primary and not copied."""
    m = await Mirror().start()
    mw = mirror(m.backend.url, options="maxBodySize: 8")
    async with serving(tmp_path, {"mw": mw}) as (gw, backend):
        data = b"x" * 5000
        if body == "length":
            raw = request(method="POST", body=data)
        else:
            head = "POST /big HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            raw = head.encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
        reply = await http_request(gw.port(), raw)
        assert reply.status == 200
        assert backend.requests[-1].body == data
        # A small request afterwards is copied; the big one never was.
        await http_request(gw.port(), request("/small", method="POST", body=b"tiny"))
        copies = await m.seen(1)
        assert [c.target for c in copies] == ["/small"]
    await m.backend.close()


async def test_unreachable_mirror_does_not_affect_the_client(tmp_path: Path) -> None:
    """A mirror that refuses connections changes nothing for the client."""
    dead = f"http://127.0.0.1:{await closed_port()}"
    async with serving(tmp_path, {"mw": mirror(dead)}) as (gw, backend):
        for _ in range(3):
            reply = await http_request(gw.port(), request())
            assert reply.status == 200
        assert len(backend.requests) == 3


async def test_slow_mirror_does_not_delay_the_client(tmp_path: Path) -> None:
    """The client's answer arrives while the mirror still holds its copy unanswered."""
    m = Mirror(hold=asyncio.get_running_loop().create_future())
    await m.start()
    async with serving(tmp_path, {"mw": mirror(m.backend.url)}) as (gw, _):
        reply = await http_request(gw.port(), request())
        assert reply.status == 200
        await m.seen(1)
        assert m.hold is not None and not m.hold.done()
        reply = await http_request(gw.port(), request("/second"))
        assert reply.status == 200
        m.hold.set_result(None)
    await m.backend.close()


async def test_each_copy_goes_to_one_endpoint_in_turn(tmp_path: Path) -> None:
    """With two endpoints, each copy goes to exactly one of them, alternating."""
    a, b = await Mirror().start(), await Mirror().start()
    async with serving(tmp_path, {"mw": mirror(a.backend.url, b.backend.url)}) as (gw, _):
        for i in range(4):
            await http_request(gw.port(), request(f"/{i}"))
        await a.seen(2)
        await b.seen(2)
        targets = sorted(c.target for c in a.requests + b.requests)
        assert targets == ["/0", "/1", "/2", "/3"]
        assert len(a.requests) == len(b.requests) == 2
    await a.backend.close()
    await b.backend.close()


@pytest.mark.parametrize(
    "options",
    [
        pytest.param("percent: 0", id="percent-0"),
        pytest.param("fraction: {numerator: 0, denominator: 50}", id="fraction-0"),
    ],
)
async def test_zero_share_sends_no_copy(tmp_path: Path, options: str) -> None:
    """percent 0 (or a zero fraction) copies nothing, while a second mirror copies everything."""
    zero, sentinel = await Mirror().start(), await Mirror().start()
    chain = {"zero": mirror(zero.backend.url, options=options), "all": mirror(sentinel.backend.url)}
    async with serving(tmp_path, chain) as (gw, backend):
        for i in range(20):
            assert (await http_request(gw.port(), request(f"/{i}"))).status == 200
        await sentinel.seen(20)
        assert zero.requests == []
        assert len(backend.requests) == 20
    await zero.backend.close()
    await sentinel.backend.close()


@pytest.mark.parametrize(
    "options",
    [
        pytest.param("percent: 50", id="percent"),
        pytest.param("fraction: {numerator: 25, denominator: 50}", id="fraction"),
    ],
)
async def test_share_is_roughly_the_configured_fraction(tmp_path: Path, options: str) -> None:
    """About half the requests are copied at 50 % (bounds far outside random spread)."""
    half, sentinel = await Mirror().start(), await Mirror().start()
    chain = {"half": mirror(half.backend.url, options=options), "all": mirror(sentinel.backend.url)}
    async with serving(tmp_path, chain) as (gw, _):
        for i in range(200):
            await http_request(gw.port(), request(f"/{i}"))
        await sentinel.seen(200)
        # P(Binomial(200, 0.5) outside [50, 150]) is below 1e-12.
        assert 50 <= len(half.requests) <= 150
    await half.backend.close()
    await sentinel.backend.close()


async def test_empty_backends_mirror_nothing_and_serve(tmp_path: Path) -> None:
    """A backendRef without endpoints is valid: requests are served, nothing is copied."""
    async with serving(tmp_path, {"mw": "gatewayRequestMirror: {backends: []}"}) as (gw, backend):
        assert (await http_request(gw.port(), request())).status == 200
        assert len(backend.requests) == 1


INVALID = [
    pytest.param("percent: 101", "percent: 101 is not between 0 and 100", id="percent-range"),
    pytest.param(
        "percent: 10, fraction: {numerator: 1}",
        "percent: only one of percent and fraction may be set",
        id="both",
    ),
    pytest.param(
        "fraction: {numerator: 3, denominator: 2}",
        "fraction.numerator: 3 must be between 0 and the denominator",
        id="fraction-over-one",
    ),
    pytest.param(
        "fraction: {numerator: 0, denominator: 0}",
        "fraction.denominator: 0 must be at least 1",
        id="denominator-zero",
    ),
    pytest.param("maxBodySize: -1", "maxBodySize: -1 must not be negative", id="max-body"),
]


@pytest.mark.parametrize(("options", "message"), INVALID)
async def test_invalid_options_are_rejected_at_load(
    tmp_path: Path, options: str, message: str
) -> None:
    """A bad mirror is a load error naming the middleware, key and line; the old config serves."""
    m = await Mirror().start()
    async with serving(tmp_path, {"mw": mirror(m.backend.url)}) as (gw, backend):
        bad = config(backend.url, {"mw": mirror(m.backend.url, options=options)})
        errors = await gw.reload(bad, expect_ok=False)
        text = str(errors[0])  # type: ignore[index]
        assert message in text
        assert "dynamic.yml:12: http.middlewares.mw.gatewayRequestMirror" in text
        assert (await http_request(gw.port(), request())).status == 200
        await m.seen(1)
    await m.backend.close()


async def test_bad_backend_url_is_rejected_at_load(tmp_path: Path) -> None:
    """A backend url that is not http(s)://host[:port] is refused, naming its index."""
    async with serving(tmp_path, {"mw": "gatewayRequestMirror: {}"}) as (gw, backend):
        bad = config(backend.url, {"mw": mirror("http://ok.test", "ftp://x.test")})
        errors = await gw.reload(bad, expect_ok=False)
        assert "backends[1].url: 'ftp://x.test' is not an http(s)://host[:port] URL" in str(
            errors[0]  # type: ignore[index]
        )
