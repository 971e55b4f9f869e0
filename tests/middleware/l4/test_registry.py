"""The L4 registries: built-ins per protocol, plugins from entry points, collisions."""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest

from gateway.config.errors import ConfigError
from middleware.l4.config import tcp_compiler, udp_compiler
from middleware.l4.in_flight import InFlightConn
from middleware.l4.ip_allowlist import TCPIPAllowList, UDPIPAllowList
from middleware.l4.registry import (
    ENTRY_POINT_GROUPS,
    TCP_BUILTINS,
    UDP_BUILTINS,
    load_tcp_registry,
    load_udp_registry,
)
from tests.middleware.l4.relays import (
    TCPClient,
    UDPClient,
    load,
    next_item,
    tcp_relay,
    udp_port,
    udp_relay,
)

PLUGIN_MODULE = """
from gateway.config.model import model
from middleware.l4.contract import ConnectionFilter, DatagramFilter


@model
class Options:
    reason: str = "plugin_says_no"


class _Deny(ConnectionFilter):
    def __init__(self, rejection):
        self.rejection = rejection

    def admit(self, info):
        return self.rejection


class _DenyDatagrams(DatagramFilter):
    def __init__(self, rejection):
        self.rejection = rejection

    def admit(self, info, size):
        return self.rejection


class TCPDeny:
    key = "denyAll"
    options = Options

    def build(self, options, context):
        return _Deny(context.rejection(options.reason))


class UDPDeny:
    key = "denyAll"
    options = Options

    def build(self, options, context):
        return _DenyDatagrams(context.rejection(options.reason))
"""


@pytest.fixture
def install_plugin(tmp_path, monkeypatch):
    """Install a distribution (module plus entry points) on sys.path, as pip would."""
    installed: list[str] = []

    def install(entry_points: str) -> str:
        module = f"sluice_l4_test_{uuid.uuid4().hex[:8]}"
        root = tmp_path / module
        root.mkdir()
        (root / f"{module}.py").write_text(PLUGIN_MODULE)
        info = root / f"{module}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(textwrap.dedent(entry_points).format(module=module))
        monkeypatch.syspath_prepend(str(root))
        installed.append(module)
        return module

    yield install
    for module in installed:
        sys.modules.pop(module, None)


def test_builtins_per_protocol():
    """TCP has ipAllowList, inFlightConn, rateLimit; UDP has ipAllowList and rateLimit."""
    tcp = load_tcp_registry(plugins=False)
    udp = load_udp_registry(plugins=False)
    assert set(tcp) == {"ipAllowList", "ipWhiteList", "inFlightConn", "rateLimit"}
    assert set(udp) == {"ipAllowList", "rateLimit"}
    assert isinstance(tcp["inFlightConn"], InFlightConn)
    assert isinstance(tcp["ipWhiteList"], TCPIPAllowList)
    assert isinstance(udp["ipAllowList"], UDPIPAllowList)
    assert tcp.canonical("INFLIGHTCONN") == "inFlightConn"
    assert udp.canonical("inFlightConn") is None


async def test_entry_point_plugins_are_found_and_used(install_plugin):
    """Plugins in sluice.tcp_middleware / sluice.udp_middleware refuse real traffic."""
    install_plugin(
        """
        [sluice.tcp_middleware]
        denyAll = {module}:TCPDeny
        [sluice.udp_middleware]
        denyAll = {module}:UDPDeny
        """
    )
    text = (
        "tcp:\n  middlewares:\n    deny: {denyAll: {reason: closed_for_tests}}\n"
        "udp:\n  middlewares:\n    deny: {plugin: {denyAll: {}}}\n"
    )
    config = load(text)
    tcp_chain = tcp_compiler(config, registry=load_tcp_registry()).chain(["deny@file"])
    udp_chain = udp_compiler(config, registry=load_udp_registry()).chain(["deny@file"])

    async with tcp_relay(tcp_chain) as (relay, echo):
        client = await TCPClient.open(relay.port)
        rejection = await next_item(relay.decisions)
        assert await client.closed_by_peer()
        await client.close()
        assert (rejection.reason, rejection.middleware) == ("closed_for_tests", "deny@file")
        assert echo.connections == 0

    async with udp_relay(udp_chain) as (relay, echo):
        client = await UDPClient.open(udp_port(relay))
        try:
            client.send(b"x")
            assert (await next_item(relay.decisions)).reason == "plugin_says_no"
            assert echo.received == []
        finally:
            client.close()


def test_plugins_can_be_left_out(install_plugin):
    """plugins=False gives the built-ins only."""
    install_plugin("[sluice.tcp_middleware]\ndenyAll = {module}:TCPDeny\n")
    assert "denyAll" in load_tcp_registry()
    assert set(load_tcp_registry(plugins=False)) == set(TCP_BUILTINS)


@pytest.mark.parametrize(
    ("group", "name"),
    [("tcp", "inFlightConn"), ("tcp", "ipallowlist"), ("udp", "rateLimit"), ("udp", "plugin")],
    ids=["tcp-builtin", "tcp-case-folded", "udp-builtin", "plugin-keyword"],
)
def test_plugin_reusing_a_builtin_key_fails_startup(install_plugin, group, name):
    """A plugin may not shadow a built-in key of its protocol (or `plugin`)."""
    install_plugin(f"[{ENTRY_POINT_GROUPS[group]}]\n{name} = {{module}}:TCPDeny\n")
    load = load_tcp_registry if group == "tcp" else load_udp_registry
    with pytest.raises(
        ConfigError, match=f"registers {group} middleware '{name}', which is a built-in"
    ):
        load()


def test_a_key_may_be_builtin_on_one_protocol_and_plugin_on_the_other(install_plugin):
    """inFlightConn is TCP-only, so a UDP plugin may take that key."""
    install_plugin("[sluice.udp_middleware]\ninFlightConn = {module}:UDPDeny\n")
    assert "inFlightConn" in load_udp_registry()
    assert set(UDP_BUILTINS) < set(load_udp_registry())
