"""The L4 contract's own behaviour: base filters, prebuilt rejections, connection info."""

from __future__ import annotations

from middleware.l4.contract import (
    ConnectionFilter,
    ConnectionInfo,
    DatagramFilter,
    L4BuildContext,
    Rejection,
)


def test_base_filters_admit_everything():
    """ConnectionFilter and DatagramFilter admit by default; release does nothing."""
    info = ConnectionInfo(protocol="udp", client_ip="127.0.0.1", client_port=5353)
    assert ConnectionFilter().admit(info) is None
    assert ConnectionFilter().release(info) is None
    assert DatagramFilter().admit(info, 512) is None


def test_context_makes_rejections_naming_the_middleware():
    """A rejection built from the context carries the middleware's qualified name."""
    context = L4BuildContext(name="allow@file", protocol="tcp")
    assert context.rejection("not_allowed") == Rejection("not_allowed", "allow@file")


def test_connection_info_defaults_and_routing_fields():
    """Info starts with no SNI or ALPN; the runtime may fill in the router after routing."""
    info = ConnectionInfo(protocol="tcp", client_ip="::1", client_port=40000, entry_point="tls")
    assert (info.sni, info.alpn, info.router) == (None, (), "")
    info.router = "db@file"
    assert "tcp ::1:40000" in repr(info) and "db@file" in repr(info)
