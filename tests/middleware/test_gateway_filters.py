"""gatewayRequestHeaderModifier / gatewayResponseHeaderModifier through a running gateway.

Spec rules checked (apis/v1/httproute_types.go ``HTTPHeaderFilter``; notes
section 2.7; conformance httproute-request-header-modifier,
httproute-response-header-modifier, httproute-rewrite-path): ``set``
overwrites every value, ``add`` appends to existing values (comma-joined),
``remove`` drops, names are case-insensitive, one action per name.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from middleware.registry import load_registry
from tests.backends import RecordingBackend, Responder, Seen, default_response, http_request
from tests.harness import RunningGateway, start_gateway

REGISTRY = load_registry(plugins=False).with_factories(
    {
        "gatewayRequestHeaderModifier": (
            "middleware.http.gateway_filters:GatewayRequestHeaderModifier"
        ),
        "gatewayResponseHeaderModifier": (
            "middleware.http.gateway_filters:GatewayResponseHeaderModifier"
        ),
    }
)


def config(url: str, middleware: str) -> str:
    """Router ``app`` on Host app.test through middleware ``mw`` defined as ``middleware``."""
    return f"""http:
  routers:
    app:
      rule: Host(`app.test`)
      service: app
      middlewares: [mw]
  services:
    app:
      loadBalancer:
        servers: [{{url: "{url}"}}]
  middlewares:
    mw:
      {middleware}
"""


# The line of "mw:" in ``config``'s text, which load errors name.
MW_LINE = 12


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, middleware: str, responder: Responder = default_response
) -> AsyncIterator[tuple[RunningGateway, RecordingBackend]]:
    backend = await RecordingBackend(responder).start()
    gw = await start_gateway(tmp_path, config(backend.url, middleware), registry=REGISTRY)
    try:
        yield gw, backend
    finally:
        await gw.stop()
        await backend.close()


def get(extra: str = "", host: str = "app.test") -> bytes:
    return f"GET /x HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def lines(seen: list[tuple[str, str]], name: str) -> list[str]:
    """Every value of ``name`` in order, one per header line."""
    return [v for k, v in seen if k.lower() == name.lower()]


# -- RequestHeaderModifier ------------------------------------------------------------

# The conformance suite's rewrite-path/header-modifier case, with mixed-case names.
CONFORMANCE = (
    "gatewayRequestHeaderModifier: {"
    "set: [{name: X-Header-Set, value: set-overwrites-values}], "
    "add: [{name: X-Header-Add, value: header-val-1}, "
    "{name: x-header-add-append, value: header-val-2}], "
    "remove: [X-HEADER-REMOVE]}"
)


async def test_request_set_add_remove_as_the_conformance_suite_expects(tmp_path: Path) -> None:
    """set overwrites, add appends with a comma, remove drops; names match in any case."""
    async with serving(tmp_path, CONFORMANCE) as (gw, backend):
        extra = (
            "x-header-set: set-val\r\n"
            "X-Header-Add-Append: append-val-1\r\n"
            "X-Header-Remove: remove-val\r\n"
            "x-header-remove: again\r\n"
        )
        reply = await http_request(gw.port(), get(extra))
        assert reply.status == 200
        seen = backend.requests[-1].headers
        assert lines(seen, "x-header-set") == ["set-overwrites-values"]
        assert lines(seen, "x-header-add") == ["header-val-1"]
        assert lines(seen, "x-header-add-append") == ["append-val-1,header-val-2"]
        assert lines(seen, "x-header-remove") == []


async def test_request_set_replaces_every_line_of_a_repeated_header(tmp_path: Path) -> None:
    """A header sent on several lines ends up as the one set value."""
    async with serving(tmp_path, CONFORMANCE) as (gw, backend):
        extra = "X-Header-Set: a\r\nX-HEADER-SET: b\r\nx-header-set: c\r\n"
        await http_request(gw.port(), get(extra))
        assert lines(backend.requests[-1].headers, "X-Header-Set") == ["set-overwrites-values"]


async def test_request_add_appends_to_the_last_of_several_lines(tmp_path: Path) -> None:
    """add keeps earlier values and appends to the last line, so the joined value ends with it."""
    async with serving(tmp_path, CONFORMANCE) as (gw, backend):
        extra = "X-Header-Add-Append: one\r\nx-header-add-append: two\r\n"
        await http_request(gw.port(), get(extra))
        values = lines(backend.requests[-1].headers, "x-header-add-append")
        assert values == ["one", "two,header-val-2"]


async def test_request_add_without_existing_value_adds_the_header(tmp_path: Path) -> None:
    """add on an absent header adds it with the configured name and value."""
    async with serving(tmp_path, CONFORMANCE) as (gw, backend):
        await http_request(gw.port(), get())
        seen = backend.requests[-1].headers
        assert ("X-Header-Add", "header-val-1") in seen
        assert ("x-header-add-append", "header-val-2") in seen


async def test_request_set_host_changes_the_host_sent_upstream(tmp_path: Path) -> None:
    """Setting Host replaces the Host the backend sees."""
    mw = "gatewayRequestHeaderModifier: {set: [{name: Host, value: other.test}]}"
    async with serving(tmp_path, mw) as (gw, backend):
        await http_request(gw.port(), get())
        assert backend.requests[-1].header("host") == "other.test"


async def test_connection_fields_are_left_to_the_gateway(tmp_path: Path) -> None:
    """A modifier naming Content-Length cannot break the message's framing."""
    mw = (
        "gatewayRequestHeaderModifier: {set: [{name: Content-Length, value: '1'}, "
        "{name: X-Ok, value: 'yes'}]}"
    )
    async with serving(tmp_path, mw) as (gw, backend):
        raw = b"POST /x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello"
        reply = await http_request(gw.port(), raw)
        assert reply.status == 200
        assert backend.requests[-1].body == b"hello"
        assert backend.requests[-1].header("x-ok") == "yes"


# -- ResponseHeaderModifier -------------------------------------------------------------


def backend_headers(seen: Seen) -> bytes:
    """The conformance echo's response headers: some to set, append to and remove."""
    body = json.dumps({"target": seen.target}).encode()
    return (
        b"HTTP/1.1 200 OK\r\n"
        b"X-Header-Set: orig\r\n"
        b"x-header-set: orig-2\r\n"
        b"X-Header-Add-Append: append-val-1\r\n"
        b"X-Header-Remove: remove-val\r\n"
        b"Set-Cookie: a=1\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


RESPONSE = (
    "gatewayResponseHeaderModifier: {"
    "set: [{name: x-header-set, value: set-overwrites-values}], "
    "add: [{name: X-Header-Add, value: header-val-1}, "
    "{name: X-Header-Add-Append, value: header-val-2}, {name: Set-Cookie, value: b=2}], "
    "remove: [x-header-remove]}"
)


async def test_response_set_add_remove(tmp_path: Path) -> None:
    """The response modifier edits the backend's response the same way."""
    async with serving(tmp_path, RESPONSE, backend_headers) as (gw, backend):
        reply = await http_request(gw.port(), get("X-Header-Remove: from-client\r\n"))
        assert reply.status == 200
        assert lines(reply.headers, "x-header-set") == ["set-overwrites-values"]
        assert lines(reply.headers, "x-header-add") == ["header-val-1"]
        assert lines(reply.headers, "x-header-add-append") == ["append-val-1,header-val-2"]
        assert lines(reply.headers, "x-header-remove") == []
        # The request is not the response modifier's business.
        assert backend.requests[-1].header("x-header-remove") == "from-client"


async def test_response_add_set_cookie_gets_its_own_line(tmp_path: Path) -> None:
    """Set-Cookie values are never folded with a comma (RFC 6265 section 3)."""
    async with serving(tmp_path, RESPONSE, backend_headers) as (gw, _):
        reply = await http_request(gw.port(), get())
        assert lines(reply.headers, "set-cookie") == ["a=1", "b=2"]


async def test_response_modifier_applies_to_gateway_answers(tmp_path: Path) -> None:
    """A 502 the gateway makes for an unreachable backend gets the response edits too."""
    async with serving(tmp_path, RESPONSE) as (gw, backend):
        await backend.close()
        reply = await http_request(gw.port(), get())
        assert reply.status == 502
        assert lines(reply.headers, "x-header-add") == ["header-val-1"]


# -- validation ----------------------------------------------------------------------------

INVALID = [
    pytest.param(
        "gatewayRequestHeaderModifier: {set: [{name: X-A, value: '1'}], remove: [x-a]}",
        "remove[0]: header 'x-a' already has an action (set[0].name)",
        id="two-actions-one-name",
    ),
    pytest.param(
        "gatewayResponseHeaderModifier: {add: [{name: X-A, value: '1'}, {name: x-A, value: '2'}]}",
        "add[1].name: header 'x-A' already has an action",
        id="add-twice-case-insensitive",
    ),
    pytest.param(
        "gatewayRequestHeaderModifier: {set: [{name: 'bad name', value: '1'}]}",
        "set[0].name: 'bad name' is not a valid header name",
        id="bad-name",
    ),
    pytest.param(
        'gatewayRequestHeaderModifier: {add: [{name: X-A, value: "a\\r\\nX-B: b"}]}',
        "add[0].value: the value must not contain CR, LF or NUL",
        id="header-injection",
    ),
    pytest.param(
        "gatewayRequestHeaderModifier: {set: [{value: '1'}]}",
        'missing required key "name"',
        id="missing-name",
    ),
    pytest.param(
        "gatewayRequestHeaderModifier: {append: [{name: X-A, value: '1'}]}",
        'unknown key "append"',
        id="unknown-key",
    ),
]


@pytest.mark.parametrize(("middleware", "message"), INVALID)
async def test_invalid_options_are_rejected_at_load(
    tmp_path: Path, middleware: str, message: str
) -> None:
    """A bad modifier is a load error naming the middleware, key and line; the old config serves."""
    async with serving(tmp_path, CONFORMANCE) as (gw, backend):
        errors = await gw.reload(config(backend.url, middleware), expect_ok=False)
        text = str(errors[0])  # type: ignore[index]
        assert message in text
        assert "http.middlewares.mw" in text
        assert f"dynamic.yml:{MW_LINE}: " in text
        reply = await http_request(gw.port(), get())
        assert reply.status == 200
        assert backend.requests[-1].header("x-header-set") == "set-overwrites-values"
