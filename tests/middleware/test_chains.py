"""Chain compilation: chain expansion, plugin syntax, and load-time option errors."""

from __future__ import annotations

from tests.backends import RecordingBackend, get, http_request
from tests.harness import start_gateway


def config(url: str, middlewares: str, definitions: str) -> str:
    return f"""http:
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
{definitions}"""


TWO_HEADERS = """    one:
      headers: {customRequestHeaders: {X-One: "1"}}
    two:
      headers: {customRequestHeaders: {X-Two: "2"}}
"""


async def test_chain_expands_to_its_members(tmp_path):
    """A chain middleware runs its members, in order, as if listed on the router."""
    backend = await RecordingBackend().start()
    text = config(
        backend.url, "[both]", TWO_HEADERS + "    both:\n      chain: {middlewares: [one, two]}\n"
    )
    gw = await start_gateway(tmp_path, text)
    try:
        assert (await http_request(gw.port(), get("app.test"))).status == 200
        seen = backend.requests[-1]
        assert (seen.header("x-one"), seen.header("x-two")) == ("1", "2")
    finally:
        await gw.stop()
        await backend.close()


async def test_plugin_syntax_names_a_registered_middleware(tmp_path):
    """``plugin: {NAME: options}`` configures the middleware registered as NAME."""
    backend = await RecordingBackend().start()
    text = config(
        backend.url,
        "[p]",
        "    p:\n      plugin:\n        headers: {customRequestHeaders: {X-P: plugged}}\n",
    )
    gw = await start_gateway(tmp_path, text)
    try:
        assert (await http_request(gw.port(), get("app.test"))).status == 200
        assert backend.requests[-1].header("x-p") == "plugged"
    finally:
        await gw.stop()
        await backend.close()


BAD = {
    "cycle": (
        "[a]",
        "    a:\n      chain: {middlewares: [b]}\n    b:\n      chain: {middlewares: [a]}\n",
        "chain includes itself: a@file -> b@file -> a@file",
    ),
    "unknown-member": (
        "[a]",
        "    a:\n      chain: {middlewares: [nope]}\n",
        "chain member 'nope@file' is not defined",
    ),
    "chain-without-list": ("[a]", "    a:\n      chain: {middlewares: one}\n", "chain needs"),
    "unknown-type": (
        "[a]",
        "    a:\n      header: {}\n",
        "unknown middleware type 'header' (did you mean \"headers\"?)",
    ),
    "bad-option-unused": (
        "[]",
        "    unused:\n      headers: {customRequestHeader: {X: y}}\n",
        "customRequestHeader",
    ),
    "plugin-two-names": (
        "[a]",
        "    a:\n      plugin: {headers: {}, other: {}}\n",
        "plugin takes exactly one plugin name",
    ),
}


async def test_bad_middleware_definitions_are_rejected_and_old_config_serves(tmp_path):
    """Chain cycles, unknown members/types and bad options are load errors naming the place."""
    backend = await RecordingBackend().start()
    gw = await start_gateway(tmp_path, config(backend.url, "[one]", TWO_HEADERS))
    try:
        for case, (used, definitions, message) in BAD.items():
            errors = await gw.reload(config(backend.url, used, definitions), expect_ok=False)
            text = str(errors[0])  # type: ignore[index]
            assert message in text, (case, text)
            assert "dynamic.yml:" in text, (case, text)
            assert "http.middlewares." in text, (case, text)
            reply = await http_request(gw.port(), get("app.test"))
            assert reply.status == 200, case
            assert backend.requests[-1].header("x-one") == "1", case
    finally:
        await gw.stop()
        await backend.close()
