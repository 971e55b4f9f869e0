"""Path middlewares through a running gateway: what the backend is asked for, and load errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.backends import RecordingBackend, Seen, get, http_request
from tests.harness import RunningGateway, start_gateway
from tests.middleware.support import MW_LINE, config, serving


async def forwarded(
    gw: RunningGateway, backend: RecordingBackend, target: str, extra: str = ""
) -> Seen:
    """Send ``target`` to app.test; return what the backend received."""
    before = len(backend.requests)
    reply = await http_request(gw.port(), get("app.test", target, extra))
    assert reply.status == 200, reply
    assert len(backend.requests) == before + 1
    return backend.requests[-1]


def all_values(seen: Seen, name: str) -> list[str]:
    return [v for k, v in seen.headers if k.lower() == name.lower()]


def latin1(text: str) -> str:
    """How the backend (reading bytes as latin-1) shows ``text`` sent as UTF-8."""
    return text.encode().decode("latin-1")


# (middleware, request target, target forwarded, X-Forwarded-Prefix values)
REWRITES = [
    pytest.param("addPrefix: {prefix: /api}", "/users?id=1", "/api/users?id=1", [], id="add"),
    pytest.param("addPrefix: {prefix: api}", "/x", "/api/x", [], id="add-slash-first"),
    pytest.param(
        "addPrefix: {prefix: /api}", "/a%2Fb?q=%20", "/api/a%2Fb?q=%20", [], id="add-keeps-escapes"
    ),
    pytest.param(
        'addPrefix: {prefix: "/my app"}', "/x", "/my%20app/x", [], id="add-escapes-prefix"
    ),
    pytest.param(
        "stripPrefix: {prefixes: [/foo, /bar]}",
        "/bar/baz?x=1",
        "/baz?x=1",
        ["/bar"],
        id="strip-second-prefix",
    ),
    pytest.param("stripPrefix: {prefixes: [/foo]}", "/foo", "/", ["/foo"], id="strip-all"),
    pytest.param(
        "stripPrefix: {prefixes: [/foo]}", "/foo?a=b", "/?a=b", ["/foo"], id="strip-all-query"
    ),
    pytest.param("stripPrefix: {prefixes: [/foo]}", "/foobar", "/bar", ["/foo"], id="strip-mid"),
    pytest.param("stripPrefix: {prefixes: [/foo]}", "/other", "/other", [], id="strip-no-match"),
    pytest.param(
        "stripPrefix: {prefixes: [/foo]}", "/foo/a%2Fb", "/a%2Fb", ["/foo"], id="strip-keeps-2F"
    ),
    pytest.param(
        "stripPrefix: {prefixes: [/foo]}", "/%66oo/x%20y", "/x%20y", ["/foo"], id="strip-decoded"
    ),
    pytest.param(
        'stripPrefix: {prefixes: ["/a b"]}', "/a%20b/x", "/x", ["/a b"], id="strip-space-prefix"
    ),
    pytest.param(
        "stripPrefix: {prefixes: [/foo], forceSlash: true}",
        "/foo",
        "/",
        ["/foo"],
        id="strip-force-slash",
    ),
    pytest.param(
        'stripPrefixRegex: {regex: ["/foo/[a-z0-9]+/[0-9]+/"]}',
        "/foo/abc/123/bar?x=y",
        "/bar?x=y",
        ["/foo/abc/123/"],
        id="regex-strip",
    ),
    pytest.param(
        'stripPrefixRegex: {regex: ["/b"]}', "/a/b/c", "/a/b/c", [], id="regex-not-at-start"
    ),
    pytest.param(
        'stripPrefixRegex: {regex: ["/nope", "/[a-z]+"]}',
        "/abc/d",
        "/d",
        ["/abc"],
        id="regex-second-expression",
    ),
    pytest.param(
        'stripPrefixRegex: {regex: ["/api/[^/]+"]}',
        "/api/caf%C3%A9/x%2Fy",
        "/x%2Fy",
        [latin1("/api/café")],
        id="regex-utf8-segment",
    ),
    pytest.param(
        'stripPrefixRegex: {regex: ["/api/.{4}/"]}',
        "/api/caf%C3%A9/x",
        "/x",
        [latin1("/api/café/")],
        id="regex-dot-is-one-character",
    ),
    pytest.param(
        'stripPrefixRegex: {regex: ["/[^/]+"]}',
        "/%0D%0AX-Evil:%201/x",
        "/x",
        ["/%0D%0AX-Evil:%201"],
        id="regex-control-stays-escaped",
    ),
]


@pytest.mark.parametrize(("middleware", "target", "expected", "prefixes"), REWRITES)
async def test_prefix_rewrites(
    tmp_path: Path, middleware: str, target: str, expected: str, prefixes: list[str]
) -> None:
    """Prefix middlewares forward the rewritten escaped path, query intact, and the prefix."""
    async with serving(tmp_path, middleware) as (gw, backend):
        seen = await forwarded(gw, backend, target)
        assert seen.target == expected
        assert all_values(seen, "x-forwarded-prefix") == prefixes
        assert seen.header("x-evil") is None


async def test_strip_prefix_adds_to_client_prefix(tmp_path: Path) -> None:
    """X-Forwarded-Prefix is added after the client's own value, as Traefik's Header.Add."""
    async with serving(tmp_path, "stripPrefix: {prefixes: [/foo]}") as (gw, backend):
        seen = await forwarded(gw, backend, "/foo/x", "X-Forwarded-Prefix: /outer\r\n")
        assert seen.target == "/x"
        assert all_values(seen, "x-forwarded-prefix") == ["/outer", "/foo"]


async def test_strip_then_add_prefix_in_a_chain(tmp_path: Path) -> None:
    """Middlewares compose in router order: strip /old then add /new."""
    backend = await RecordingBackend().start()
    text = (
        config(backend.url, "stripPrefix: {prefixes: [/old]}").replace(
            "middlewares: [mw]", "middlewares: [mw, add]"
        )
        + "    add:\n      addPrefix: {prefix: /new}\n"
    )
    gw = await start_gateway(tmp_path, text)
    try:
        seen = await forwarded(gw, backend, "/old/a%2Fb?z=1")
        assert seen.target == "/new/a%2Fb?z=1"
        assert seen.header("x-forwarded-prefix") == "/old"
    finally:
        await gw.stop()
        await backend.close()


# (middleware, request target, target forwarded, X-Replaced-Path)
REPLACEMENTS = [
    pytest.param("replacePath: {path: /new}", "/old/x?q=1", "/new?q=1", "/old/x", id="replace"),
    pytest.param("replacePath: {path: /new}", "/a%2Fb", "/new", "/a%2Fb", id="replace-header-raw"),
    pytest.param("replacePath: {path: /a%2Fb}", "/x", "/a%2Fb", "/x", id="replace-keeps-escape"),
    pytest.param('replacePath: {path: "/a b"}', "/x", "/a%20b", "/x", id="replace-escapes-space"),
    pytest.param(
        'replacePathRegex: {regex: "^/foo/(.*)", replacement: "/bar/$1"}',
        "/foo/x/y?q=1",
        "/bar/x/y?q=1",
        "/foo/x/y",
        id="regex-replace",
    ),
    pytest.param(
        'replacePathRegex: {regex: "^/foo/(.*)", replacement: "/bar/$1"}',
        "/foo/a%20b",
        "/bar/a%20b",
        "/foo/a%20b",
        id="regex-on-escaped-path",
    ),
    pytest.param(
        'replacePathRegex: {regex: "^/e/([^/]*)/(.*)", replacement: "/e/${1}%2F${2}"}',
        "/e/ns/project",
        "/e/ns%2Fproject",
        "/e/ns/project",
        id="regex-introduces-2F",
    ),
    pytest.param(
        'replacePathRegex: {regex: "^/(?P<first>[a-z]+)/(.*)", replacement: "/${2}/$first"}',
        "/abc/def",
        "/def/abc",
        "/abc/def",
        id="regex-named-group",
    ),
    pytest.param(
        'replacePathRegex: {regex: "^/(a)(b)", replacement: "/$1x-${1}x-$$"}',
        "/ab",
        "/-ax-$",
        "/ab",
        id="regex-go-expand",
    ),
    pytest.param(
        'replacePathRegex: {regex: "^/foo/(.*)", replacement: "/bar/$1"}',
        "/other",
        "/other",
        None,
        id="regex-no-match",
    ),
    pytest.param(
        'replacePathRegex: {regex: "^/api", replacement: " "}',
        "/api/x",
        "/api/x",
        None,
        id="regex-blank-replacement-passes",
    ),
]


@pytest.mark.parametrize(("middleware", "target", "expected", "replaced"), REPLACEMENTS)
async def test_replace_path(
    tmp_path: Path, middleware: str, target: str, expected: str, replaced: str | None
) -> None:
    """replacePath(Regex) forwards the new path, query intact, and the old escaped path."""
    async with serving(tmp_path, middleware) as (gw, backend):
        seen = await forwarded(gw, backend, target)
        assert seen.target == expected
        assert seen.header("x-replaced-path") == replaced


async def test_replacement_making_a_bad_escape_answers_500(tmp_path: Path) -> None:
    """A replacement that yields a malformed %-escape is answered 500, as Traefik does."""
    middleware = 'replacePathRegex: {regex: "^/(.*)", replacement: "/100%"}'
    async with serving(tmp_path, middleware) as (gw, backend):
        reply = await http_request(gw.port(), get("app.test", "/x"))
        assert reply.status == 500
        assert b'invalid URL escape "%"' in reply.body
        assert backend.requests == []


LOAD_ERRORS = [
    pytest.param('addPrefix: {prefix: ""}', "addPrefix: prefix: cannot be empty", id="add-empty"),
    pytest.param("addPrefix: {}", 'missing required key "prefix"', id="add-missing"),
    pytest.param(
        'stripPrefixRegex: {regex: ["/ok", "/foo/(["]}',
        "stripPrefixRegex: regex[1]:",
        id="bad-regex",
    ),
    pytest.param(
        'replacePathRegex: {regex: "/(?=x)", replacement: /y}',
        "replacePathRegex: regex: invalid regular expression '/(?=x)': look-around",
        id="look-around",
    ),
    pytest.param(
        "replacePath: {path: /a%zz}", 'replacePath: path: invalid URL escape "%zz"', id="bad-escape"
    ),
    pytest.param(
        'stripPrefix: {prefixes: ["/a\\nb"]}', "stripPrefix: prefixes[0]:", id="control-prefix"
    ),
    pytest.param("stripPrefix: {prefix: [/a]}", 'unknown key "prefix"', id="unknown-key"),
]


@pytest.mark.parametrize(("middleware", "message"), LOAD_ERRORS)
async def test_invalid_options_rejected_at_load(
    tmp_path: Path, middleware: str, message: str
) -> None:
    """A bad option is a load error naming file, line, middleware and key; the old config serves."""
    async with serving(tmp_path, "addPrefix: {prefix: /v1}") as (gw, backend):
        errors = await gw.reload(config(backend.url, middleware), expect_ok=False)
        text = str(errors[0])  # type: ignore[index]
        assert message in text, text
        assert f"dynamic.yml:{MW_LINE}: http.middlewares.mw" in text, text
        seen = await forwarded(gw, backend, "/x")
        assert seen.target == "/v1/x"


HOSTILE_PATH = "/api/" + "a/" * 8192  # 19.6 s at 4 KB for a backtracking engine


@pytest.mark.parametrize(
    ("middleware", "rewritten", "prefix"),
    [
        (
            'replacePathRegex: {regex: "^/api/(.*)/(.*)/(.*)/v1$", replacement: "/n/$1/$3"}',
            "/n/a/c",
            [],
        ),
        ('stripPrefixRegex: {regex: ["^/api/(.*)/(.*)/(.*)/v1"]}', "/", ["/api/a/b/c/v1"]),
    ],
    ids=["replace-path-regex", "strip-prefix-regex"],
)
async def test_catastrophic_regex_answers_a_hostile_path_at_once(
    tmp_path: Path, middleware: str, rewritten: str, prefix: list[str]
) -> None:
    """A 16 KiB path against a backtracking-prone regex passes through, then rewrites go on."""
    async with serving(tmp_path, middleware) as (gw, backend):
        async with asyncio.timeout(5):
            hostile = await forwarded(gw, backend, HOSTILE_PATH)
            normal = await forwarded(gw, backend, "/api/a/b/c/v1")
        assert hostile.target == HOSTILE_PATH
        assert normal.target == rewritten
        assert all_values(normal, "X-Forwarded-Prefix") == prefix
