"""The ``errors`` middleware through a running gateway: an app and an error-pages backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import parse_qs

import pytest

from gateway.config.model import model
from middleware.contract import BuildContext, Filter, Handler, Request, Response
from middleware.registry import load_registry
from tests.backends import RecordingBackend, Seen, closed_port, get, http_request, read_reply
from tests.harness import RunningGateway, start_gateway


def app_responder(seen: Seen) -> bytes:
    """``/status/N`` answers N with an app body and an app header; anything else 200."""
    path = seen.target.partition("?")[0]
    status = int(path.rsplit("/", 1)[1]) if path.startswith("/status/") else 200
    size = int(seen.header("x-body-size") or 0)
    body = b"x" * size if size else b"app body for %d" % status
    return (
        b"HTTP/1.1 %d App\r\nContent-Type: application/json\r\nX-App: yes\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body)
    )


def pages_responder(seen: Seen) -> bytes:
    """Error pages: ``/missing...`` is a 404 page; every other path is a 200 page naming it."""
    if seen.target.startswith("/missing"):
        body = b"no such page"
        head = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
    else:
        body = b"<h1>page " + seen.target.encode() + b"</h1>"
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Page: yes\r\n"
    return head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


@dataclass
class Backends:
    app: RecordingBackend
    pages: RecordingBackend


@pytest.fixture
async def backends() -> AsyncIterator[Backends]:
    app = await RecordingBackend(responder=app_responder).start()
    pages = await RecordingBackend(responder=pages_responder).start()
    yield Backends(app, pages)
    await app.close()
    await pages.close()


def config(app_url: str, pages_url: str, errors: str) -> str:
    """Router ``app`` with middleware ``pages`` (``errors: {errors}``) and two services."""
    return f"""http:
  routers:
    app:
      rule: Host(`app.test`)
      service: app
      middlewares: [pages]
  services:
    app:
      loadBalancer:
        servers: [{{url: "{app_url}"}}]
    errorpages:
      loadBalancer:
        servers: [{{url: "{pages_url}"}}]
  middlewares:
    pages:
      errors: {errors}
"""


STANDARD = '{status: ["500-599"], service: errorpages, query: "/{status}.html"}'


async def gateway(tmp_path, backends: Backends, errors: str = STANDARD) -> RunningGateway:
    return await start_gateway(tmp_path, config(backends.app.url, backends.pages.url, errors))


async def test_matching_status_gets_the_error_page_with_the_original_status(tmp_path, backends):
    """A caught status keeps its code but carries the error service's body and Content-Type."""
    gw = await gateway(tmp_path, backends)
    try:
        reply = await http_request(gw.port(), get("app.test", "/status/503"))
        assert reply.status == 503
        assert reply.body == b"<h1>page /503.html</h1>"
        assert reply.header("content-type") == "text/html"
        assert reply.header("x-page") == "yes"
        assert reply.header("x-app") is None
        assert [s.target for s in backends.pages.requests] == ["/503.html"]
        assert backends.pages.requests[0].method == "GET"
    finally:
        await gw.stop()


async def test_non_matching_status_passes_through_untouched(tmp_path, backends):
    """Statuses outside ``status`` reach the client as the app sent them; no page is fetched."""
    gw = await gateway(tmp_path, backends)
    try:
        for status in (200, 404, 499):
            reply = await http_request(gw.port(), get("app.test", f"/status/{status}"))
            assert reply.status == status
            assert reply.body == b"app body for %d" % status
            assert reply.header("x-app") == "yes"
        assert backends.pages.requests == []
    finally:
        await gw.stop()


@pytest.mark.parametrize(
    ("status", "caught"),
    [
        (404, True),
        (418, True),
        (500, True),
        (502, False),
        (504, True),
        (599, True),
        (403, False),
        (501, True),
    ],
    ids=lambda v: str(v),
)
async def test_status_list_mixes_codes_ranges_and_comma_lists(tmp_path, backends, status, caught):
    """``status`` takes single codes, inclusive ranges, and comma-separated lists of both."""
    errors = '{status: ["404", "418,500-501", "503-599"], service: errorpages}'
    gw = await gateway(tmp_path, backends, errors)
    try:
        reply = await http_request(gw.port(), get("app.test", f"/status/{status}"))
        assert reply.status == status
        if caught:
            assert reply.body == b"<h1>page /</h1>", "an empty query asks for /"
        else:
            assert reply.body == b"app body for %d" % status
    finally:
        await gw.stop()


async def test_query_substitutes_status_and_escaped_url(tmp_path, backends):
    """``{status}`` and ``{url}`` (the query-escaped request target) fill in the page path."""
    errors = '{status: ["500-599"], service: errorpages, query: "err/{status}?from={url}"}'
    gw = await gateway(tmp_path, backends, errors)
    try:
        reply = await http_request(gw.port(), get("app.test", "/status/502?a=1&b=x%20y~"))
        assert reply.status == 502
        target = backends.pages.requests[-1].target
        path, _, query = target.partition("?")
        assert path == "/err/502"
        # Escaped as Go's url.QueryEscape does, so the target survives as one value.
        assert parse_qs(query) == {"from": ["/status/502?a=1&b=x%20y~"]}
        assert reply.body == b"<h1>page " + target.encode() + b"</h1>"
    finally:
        await gw.stop()


@pytest.mark.parametrize(
    ("upstream", "sent", "page"),
    [
        (418, 404, "/404.html?was=418"),
        (502, 500, "/500.html?was=502"),
        (504, 500, "/500.html?was=504"),
        (599, 599, "/599.html?was=599"),
    ],
    ids=["418-to-404", "502-to-500", "504-to-500", "599-kept"],
)
async def test_status_rewrites_change_the_status_sent(tmp_path, backends, upstream, sent, page):
    """``statusRewrites`` maps caught codes or ranges to the status sent and to ``{status}``."""
    errors = (
        '{status: ["418", "500-599"], statusRewrites: {"418": 404, "502-504": "500"},'
        ' service: errorpages, query: "/{status}.html?was={originalStatus}"}'
    )
    gw = await gateway(tmp_path, backends, errors)
    try:
        reply = await http_request(gw.port(), get("app.test", f"/status/{upstream}"))
        assert reply.status == sent
        assert backends.pages.requests[-1].target == page
        assert reply.body == f"<h1>page {page}</h1>".encode()
    finally:
        await gw.stop()


async def test_error_service_down_answers_original_status_with_plain_text(tmp_path, backends):
    """When the error page cannot be fetched, the client gets the caught status and a plain body."""
    dead = f"http://127.0.0.1:{await closed_port()}"
    gw = await start_gateway(tmp_path, config(backends.app.url, dead, STANDARD))
    try:
        reply = await http_request(gw.port(), get("app.test", "/status/500"))
        assert reply.status == 500
        assert reply.body == b"Internal Server Error\n"
        assert (reply.header("content-type") or "").startswith("text/plain")
        assert reply.header("x-app") is None
    finally:
        await gw.stop()


async def test_error_service_own_error_page_is_sent_under_the_caught_status(tmp_path, backends):
    """An error service answering 404 for the page still supplies the body; the status stays."""
    errors = '{status: ["500-599"], service: errorpages, query: "/missing/{status}"}'
    gw = await gateway(tmp_path, backends, errors)
    try:
        reply = await http_request(gw.port(), get("app.test", "/status/500"))
        assert reply.status == 500
        assert reply.body == b"no such page"
    finally:
        await gw.stop()


async def test_unreachable_upstream_502_is_caught(tmp_path, backends):
    """The gateway's own 502 for an unreachable app server is replaced like any other."""
    dead = f"http://127.0.0.1:{await closed_port()}"
    gw = await start_gateway(tmp_path, config(dead, backends.pages.url, STANDARD))
    try:
        reply = await http_request(gw.port(), get("app.test", "/"))
        assert reply.status == 502
        assert reply.body == b"<h1>page /502.html</h1>"
    finally:
        await gw.stop()


async def test_error_service_gets_client_headers_and_host(tmp_path, backends):
    """The page request carries the client's headers and Host (passHostHeader's default)."""
    gw = await gateway(tmp_path, backends)
    try:
        raw = get("app.test", "/status/500", "Accept-Language: fr\r\n")
        assert (await http_request(gw.port(), raw)).status == 500
        seen = backends.pages.requests[-1]
        assert seen.header("host") == "app.test"
        assert seen.header("accept-language") == "fr"
    finally:
        await gw.stop()


async def test_discarded_upstream_body_does_not_leak_into_the_next_response(tmp_path, backends):
    """A large caught upstream body is dropped; the kept-alive connection serves on."""
    gw = await gateway(tmp_path, backends)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port())
    try:
        writer.write(get("app.test", "/status/500", "X-Body-Size: 1000000\r\n"))
        first = await read_reply(reader)
        assert (first.status, first.body) == (500, b"<h1>page /500.html</h1>")
        writer.write(get("app.test", "/status/200"))
        second = await read_reply(reader)
        assert (second.status, second.body) == (200, b"app body for 200")
    finally:
        writer.close()
        await gw.stop()


async def test_unknown_service_is_rejected_at_load_naming_the_middleware(tmp_path, backends):
    """An ``errors`` middleware naming no defined service is a load error; the old config serves."""
    gw = await gateway(tmp_path, backends)
    try:
        bad = config(
            backends.app.url,
            backends.pages.url,
            '{status: ["500-599"], service: errorpagez, query: "/{status}.html"}',
        )
        errors = await gw.reload(bad, expect_ok=False)
        text = str(errors[0])  # type: ignore[index]
        assert "dynamic.yml:" in text
        assert "http.middlewares.pages.errors.service" in text
        assert "errorpagez" in text
        assert "errorpages" in text, "suggests the close name"
        reply = await http_request(gw.port(), get("app.test", "/status/500"))
        assert reply.body == b"<h1>page /500.html</h1>"
    finally:
        await gw.stop()


@pytest.mark.parametrize(
    ("errors", "message"),
    [
        ('{status: ["abc"], service: errorpages}', "status: 'abc' is not a status code"),
        ('{status: ["599-500"], service: errorpages}', "status: '599-500' is not a range"),
        ('{status: ["50"], service: errorpages}', "status: '50' is not a range"),
        ('{status: ["500"]}', 'missing required key "service"'),
        (
            '{status: ["500"], service: errorpages, statusRewrites: {"500": "oops"}}',
            "statusRewrites.500: 'oops' is not a status code",
        ),
        (
            '{status: ["500"], service: errorpages, statusRewrites: {"500": 100}}',
            "statusRewrites.500: 100 is not a final status code",
        ),
        (
            '{status: ["500-599"], service: errorpages,'
            ' statusRewrites: {"500-510": 500, "505": 404}}',
            "overlaps statusRewrites.500-510 at 505",
        ),
        ('{status: ["500"], service: errorpages, page: x}', 'unknown key "page"'),
    ],
    ids=[
        "not-a-code",
        "reversed-range",
        "two-digits",
        "no-service",
        "rewrite-not-a-code",
        "rewrite-to-1xx",
        "overlapping-rewrites",
        "unknown-key",
    ],
)
async def test_invalid_options_are_rejected_at_load(tmp_path, backends, errors, message):
    """Bad ``errors`` options are load errors naming the middleware, key and line."""
    gw = await gateway(tmp_path, backends)
    try:
        bad = config(backends.app.url, backends.pages.url, errors)
        found = await gw.reload(bad, expect_ok=False)
        text = str(found[0])  # type: ignore[index]
        assert message in text, text
        assert "dynamic.yml:" in text, text
        assert "http.middlewares.pages" in text, text
        reply = await http_request(gw.port(), get("app.test", "/status/500"))
        assert reply.body == b"<h1>page /500.html</h1>"
    finally:
        await gw.stop()


@model
class TeapotOptions:
    pass


class _TeapotFilter(Filter):
    def request(self, request: Request) -> Response:
        return Response(418, body=b"short and stout")


class Teapot:
    """A test middleware answering every request itself, with 418."""

    key: ClassVar[str] = "teapot"
    options: ClassVar[type[TeapotOptions]] = TeapotOptions

    def build(self, options: TeapotOptions, next: Handler, context: BuildContext) -> Filter:
        return _TeapotFilter()


async def test_inner_middleware_answer_is_caught_too(tmp_path, backends):
    """A status an inner middleware generated (not the app) is replaced as well."""
    text = config(
        backends.app.url,
        backends.pages.url,
        '{status: ["418"], service: errorpages, query: "/{status}.html"}',
    ).replace("middlewares: [pages]", "middlewares: [pages, pot]")
    text += "    pot:\n      teapot: {}\n"
    registry = load_registry().with_factories({"teapot": Teapot()})
    gw = await start_gateway(tmp_path, text, registry=registry)
    try:
        reply = await http_request(gw.port(), get("app.test", "/"))
        assert (reply.status, reply.body) == (418, b"<h1>page /418.html</h1>")
        assert backends.app.requests == []
    finally:
        await gw.stop()


async def test_large_error_page_arrives_whole(tmp_path, backends):
    """An error page spanning many reads is sent whole, not cut at the first read."""
    page = bytes(range(256)) * 1200

    def big_pages(seen: Seen) -> bytes:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        return head + b"Content-Length: %d\r\n\r\n%s" % (len(page), page)

    backends.pages.responder = big_pages
    gw = await gateway(tmp_path, backends)
    try:
        reply = await http_request(gw.port(), get("app.test", "/status/502"))
        assert reply.status == 502
        assert reply.body == page
    finally:
        await gw.stop()
