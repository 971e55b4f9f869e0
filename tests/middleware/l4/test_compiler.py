"""Compiling tcp/udp middleware definitions: errors located, instances shared and kept."""

from __future__ import annotations

import pytest

from gateway.config.errors import ConfigError
from gateway.config.model import model
from middleware.l4.config import tcp_compiler, udp_compiler
from middleware.l4.contract import NOT_ALLOWED, TOO_MANY_CONNECTIONS, ConnectionInfo
from middleware.l4.registry import load_tcp_registry, load_udp_registry
from tests.middleware.l4.plugins import Tally
from tests.middleware.l4.relays import TCPClient, load, next_item, reload_error, tcp_relay

TCP = load_tcp_registry(plugins=False)


@model
class OddOptions:
    pass


def info(ip: str = "127.0.0.1") -> ConnectionInfo:
    return ConnectionInfo(protocol="tcp", client_ip=ip)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "tcp:\n  middlewares:\n    a:\n      ipAlowList: {sourceRange: [127.0.0.1]}\n",
            "dynamic.yml:4: tcp.middlewares.a.ipAlowList: unknown tcp middleware type "
            "'ipAlowList' (did you mean \"ipAllowList\"?)",
        ),
        (
            "tcp:\n  middlewares:\n    a:\n      ipAllowList: {sourceRange: [127.0.0.1]}\n"
            "      inFlightConn: {amount: 1}\n",
            "dynamic.yml:3: tcp.middlewares.a: a middleware needs exactly one type key (like "
            'ipAllowList), got "ipAllowList", "inFlightConn"',
        ),
        (
            "tcp:\n  middlewares:\n    a: {}\n",
            "dynamic.yml:3: tcp.middlewares.a: a middleware needs exactly one type key (like "
            "ipAllowList), got none",
        ),
        (
            "tcp:\n  middlewares:\n    a:\n      plugin: {x: {}, y: {}}\n",
            "dynamic.yml:4: tcp.middlewares.a.plugin: plugin takes exactly one plugin name (like "
            'ipAllowList), got "x", "y"',
        ),
        (
            "tcp:\n  middlewares:\n    ok: {inFlightConn: {amount: 2}}\n"
            "    unused:\n      inFlightConn:\n        amount: 0\n",
            "dynamic.yml:6: tcp.middlewares.unused.inFlightConn.amount: must be at least 1",
        ),
        (
            "tcp:\n  middlewares: [a, b]\n",
            "dynamic.yml:2: tcp.middlewares: must be a mapping of middleware names to definitions",
        ),
    ],
    ids=["type-typo", "two-types", "no-type", "plugin-two-names", "unused-but-bad", "not-a-map"],
)
def test_definition_errors_name_file_line_and_key(text, expected):
    """Malformed definitions fail validation with the file, the line and the key path."""
    assert reload_error(text) == expected


def test_udp_has_no_in_flight_conn():
    """inFlightConn is a TCP middleware; under udp it is an unknown type."""
    text = "udp:\n  middlewares:\n    a: {inFlightConn: {amount: 1}}\n"
    assert "unknown udp middleware type 'inFlightConn'" in reload_error(text, "udp")


def test_unknown_middleware_name_suggests_the_closest():
    """A router naming an undefined middleware gets a suggestion."""
    compiler = tcp_compiler(load("tcp:\n  middlewares:\n    allow: {inFlightConn: {amount: 1}}\n"))
    with pytest.raises(ConfigError, match=r"unknown tcp middleware 'alow@file' .*\"allow@file\""):
        compiler.chain(["alow@file"])


def test_lower_cased_type_keys_are_accepted():
    """Label and CRD spellings (ipallowlist, inflightconn) name the same built-ins."""
    text = (
        "tcp:\n  middlewares:\n    a: {ipallowlist: {sourcerange: [127.0.0.1]}}\n"
        "    b: {inflightconn: {amount: 1}}\n"
    )
    chain = tcp_compiler(load(text), registry=TCP).chain(["a@file", "b@file"])
    assert chain is not None
    assert chain.admit(info("127.0.0.2")).reason == NOT_ALLOWED  # type: ignore[union-attr]
    assert chain.admit(info()) is None
    assert chain.admit(info()).reason == TOO_MANY_CONNECTIONS  # type: ignore[union-attr]


def test_empty_list_is_no_chain():
    """A router without middlewares gets None, so the runtime skips the chain entirely."""
    assert tcp_compiler(load("tcp: {}\n"), registry=TCP).chain([]) is None
    assert (
        udp_compiler(load("udp: {}\n"), registry=load_udp_registry(plugins=False)).chain([]) is None
    )


def test_one_instance_per_middleware_name_across_chains():
    """Two routers naming the same inFlightConn share its counts; same list, same chain."""
    text = (
        "tcp:\n  middlewares:\n    lim: {inFlightConn: {amount: 1}}\n"
        "    allow: {ipAllowList: {sourceRange: [127.0.0.0/8]}}\n"
    )
    compiler = tcp_compiler(load(text), registry=TCP)
    one = compiler.chain(["lim@file"])
    two = compiler.chain(["allow@file", "lim@file"])
    assert one is not None and two is not None
    assert compiler.chain(["lim@file"]) is one
    assert one.filters[0] is two.filters[1]
    assert one.admit(info()) is None
    assert two.admit(info()).reason == TOO_MANY_CONNECTIONS  # type: ignore[union-attr]


async def test_unchanged_middleware_keeps_its_state_across_a_reload():
    """After a reload that leaves inFlightConn alone, open connections still count."""
    before = "tcp:\n  middlewares:\n    lim: {inFlightConn: {amount: 1}}\n"
    old = tcp_compiler(load(before), registry=TCP)
    old.validate_all()
    old_chain = old.chain(["lim@file"])
    async with tcp_relay(old_chain) as (relay, _):
        held = await TCPClient.open(relay.port)
        assert await next_item(relay.decisions) is None
        assert await held.echo() == b"ping"

        after = before + "    other: {ipAllowList: {sourceRange: [10.0.0.0/8]}}\n"
        new = tcp_compiler(load(after), registry=TCP, previous=old)
        new.validate_all()
        kept = new.chain(["lim@file"])
        changed = tcp_compiler(
            load(before.replace("amount: 1", "amount: 5")), registry=TCP, previous=new
        ).chain(["lim@file"])
        assert kept is not None and changed is not None
        assert kept.admit(info()).reason == TOO_MANY_CONNECTIONS  # type: ignore[union-attr]
        assert changed.admit(info()) is None

        await held.close()
        await next_item(relay.released)
        assert kept.admit(info()) is None


def test_plugin_factory_is_used_under_its_key_and_under_plugin():
    """A factory added to the registry builds both `tally:` and `plugin: {tally: ...}`."""
    tally = Tally()
    text = (
        "tcp:\n  middlewares:\n    direct: {tally: {label: d}}\n"
        "    wrapped:\n      plugin:\n        tally: {label: w}\n"
    )
    compiler = tcp_compiler(load(text), registry=TCP.with_factories({"tally": tally}))
    chain = compiler.chain(["direct@file", "wrapped@file"])
    assert chain is not None
    assert chain.admit(info()) is None
    assert [entry[:2] for entry in tally.log] == [("admit", "d"), ("admit", "w")]


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (
            "not a filter",
            "tcp.middlewares.odd.odd: odd: build returned str, not a ConnectionFilter",
        ),
        (ValueError("plain reason"), "tcp.middlewares.odd.odd: plain reason"),
        (ValueError("limits.max[2]: too big"), "tcp.middlewares.odd.odd.limits.max[2]: too big"),
        (ConfigError("from build"), "tcp.middlewares.odd.odd: from build"),
    ],
    ids=["wrong-type", "unkeyed-error", "keyed-error", "config-error"],
)
def test_build_results_and_errors_are_reported_at_the_middleware(built, expected):
    """What build returns or raises is checked and located at the middleware's type key."""

    class Odd:
        key = "odd"
        options = OddOptions

        def build(self, options, context):
            if isinstance(built, Exception):
                raise built
            return built

    text = "\n\ntcp:\n  middlewares:\n    odd:\n      odd: {}\n"
    registry = TCP.with_factories({"odd": Odd()})
    with pytest.raises(ConfigError) as caught:
        tcp_compiler(load(text), registry=registry).validate_all()
    assert str(caught.value) == f"dynamic.yml:6: {expected}"
