"""Reading tcp/udp middlewares out of a DynamicConfig, and the one-shot compile."""

from __future__ import annotations

import pytest

from gateway.config.errors import ConfigError
from gateway.config.loader import parse_dynamic
from gateway.config.merge import merge
from middleware.l4.config import (
    compile_l4_middlewares,
    middleware_section,
    tcp_compiler,
    udp_compiler,
)
from middleware.l4.contract import NOT_ALLOWED, RATE_LIMITED, ConnectionInfo
from middleware.l4.registry import load_tcp_registry, load_udp_registry
from tests.middleware.l4.relays import TCPClient, load, next_item, tcp_relay

TCP = load_tcp_registry(plugins=False)
UDP = load_udp_registry(plugins=False)


def info(protocol: str = "tcp", ip: str = "127.0.0.1") -> ConnectionInfo:
    return ConnectionInfo(protocol=protocol, client_ip=ip)  # type: ignore[arg-type]


def test_traefik_spelling_loads_from_the_raw_sections():
    """tcp.middlewares and udp.middlewares are read from DynamicConfig's raw mappings."""
    config = load(
        """
tcp:
  routers:
    r: {rule: "HostSNI(`*`)", service: s, middlewares: [allow]}
  middlewares:
    allow:
      ipAllowList:
        sourceRange: ["127.0.0.1/32"]
udp:
  middlewares:
    slow: {rateLimit: {average: 1, period: 1h, burst: 1}}
"""
    )
    assert middleware_section(config, "tcp")[0] == "tcp.middlewares"
    # The router's reference is qualified by the merge, as the runtime will see it.
    names = config.tcp["routers"]["r@file"]["middlewares"]  # type: ignore[index]
    tcp = tcp_compiler(config, registry=TCP).chain(names)
    udp = udp_compiler(config, registry=UDP).chain(["slow@file"])
    assert tcp is not None and udp is not None
    assert tcp.admit(info(ip="127.0.0.2")).reason == NOT_ALLOWED  # type: ignore[union-attr]
    session = info("udp")
    assert udp.admit(session, 10) is None
    assert udp.admit(session, 10).reason == RATE_LIMITED  # type: ignore[union-attr]


def test_section_key_is_matched_ignoring_case_and_errors_keep_its_spelling():
    """`Middlewares:` is found, and an error in it names its own line and spelling."""
    text = "tcp:\n  Middlewares:\n    lim:\n      inFlightConn:\n        amount: 0\n"
    config = load(text)
    assert middleware_section(config, "tcp")[0] == "tcp.Middlewares"
    with pytest.raises(ConfigError) as caught:
        tcp_compiler(config, registry=TCP).validate_all()
    assert str(caught.value) == (
        "dynamic.yml:5: tcp.Middlewares.lim.inFlightConn.amount: must be at least 1"
    )


@pytest.mark.parametrize(
    "text",
    ["http: {}\n", "tcp: {}\n", "tcp:\n  middlewares:\n", "tcp: {routers: {}}\n"],
    ids=["no-tcp", "empty-tcp", "null-middlewares", "no-middlewares"],
)
def test_missing_sections_mean_no_middlewares(text):
    """A configuration without tcp.middlewares compiles and validates to nothing."""
    compiler = tcp_compiler(load(text), registry=TCP)
    compiler.validate_all()
    assert compiler.chain([]) is None
    with pytest.raises(ConfigError, match="unknown tcp middleware 'x@file'"):
        compiler.chain(["x@file"])


async def test_middlewares_of_two_providers_in_one_chain():
    """Merged providers' middlewares chain together; errors name each provider's file."""
    first = parse_dynamic("tcp:\n  middlewares:\n    lim: {inFlightConn: {amount: 1}}\n", "a.yml")
    second = parse_dynamic(
        "\ntcp:\n  middlewares:\n    allow: {ipAllowList: {sourceRange: [127.0.0.1]}}\n", "b.yml"
    )
    config = merge({"file": first, "kube": second})
    chain = tcp_compiler(config, registry=TCP).chain(["allow@kube", "lim@file"])
    async with tcp_relay(chain) as (relay, _):
        kept = await TCPClient.open(relay.port)
        assert await next_item(relay.decisions) is None
        assert await kept.echo() == b"ping"
        refused = await TCPClient.open(relay.port)
        assert (await next_item(relay.decisions)).middleware == "lim@file"
        assert await refused.closed_by_peer()
        for client in (kept, refused):
            await client.close()
        await next_item(relay.released)

    broken = parse_dynamic("\n\ntcp:\n  middlewares:\n    allow: {ipAllowList: {}}\n", "b.yml")
    with pytest.raises(ConfigError) as caught:
        tcp_compiler(merge({"file": first, "kube": broken}), registry=TCP).validate_all()
    assert str(caught.value).startswith("b.yml:5: tcp.middlewares.allow.ipAllowList: ")


def test_compile_l4_middlewares_one_shot():
    """The one-shot form validates every definition and returns the chain for the names."""
    config = load(
        "tcp:\n  middlewares:\n    allow: {ipAllowList: {sourceRange: [10.0.0.0/8]}}\n"
        "    bad:\n      inFlightConn: {amount: -1}\n"
    )
    _, definitions = middleware_section(config, "tcp")
    with pytest.raises(ConfigError, match=r"^dynamic.yml:5: tcp.middlewares.bad.inFlightConn"):
        compile_l4_middlewares("tcp", definitions, ["allow@file"], origins=config.origins)

    plain = {"allow": {"ipAllowList": {"sourceRange": ["10.0.0.0/8"]}}}
    chain = compile_l4_middlewares("tcp", plain, ["allow"], registry=TCP)
    assert chain is not None
    assert chain.admit(info(ip="10.1.2.3")) is None
    udp = compile_l4_middlewares("udp", plain, ["allow"], registry=UDP)
    assert udp is not None
    assert udp.admit(info("udp", "127.0.0.1"), 1).reason == NOT_ALLOWED  # type: ignore[union-attr]
    assert compile_l4_middlewares("udp", plain, [], registry=UDP) is None


class _CountingOrigins(dict):
    """Origins that count lookups: merged origins are costly to read the first time."""

    reads = 0

    def get(self, key, default=None):
        type(self).reads += 1
        return super().get(key, default)

    def __getitem__(self, key):
        type(self).reads += 1
        return super().__getitem__(key)


def test_valid_definitions_do_not_read_origins():
    """Origins are read only to locate an error, so a good reload skips their renaming."""
    config = load(
        "tcp:\n  middlewares:\n    allow: {ipAllowList: {sourceRange: [10.0.0.0/8]}}\n"
        "    lim: {inFlightConn: {amount: 3}}\n    slow: {rateLimit: {average: 5}}\n"
    )
    _, definitions = middleware_section(config, "tcp")
    origins = _CountingOrigins(config.origins)
    _CountingOrigins.reads = 0
    compile_l4_middlewares("tcp", definitions, ["allow@file"], origins=origins, registry=TCP)
    assert _CountingOrigins.reads == 0
