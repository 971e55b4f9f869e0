"""TCP and UDP dynamic configuration: the frozen model and its decoding.

``DynamicConfig`` carries ``tcp`` and ``udp`` as raw read-only mappings (the
merger qualifies their names and references like HTTP's); ``decode_l4``
turns them into the classes below, with the decoder, keys and messages every
other section uses. Key names and defaults are Traefik v3's
(``pkg/config/dynamic/tcp_config.go``, ``udp_config.go``, the TCP and UDP
routing reference), so a Traefik file loads unchanged. Sluice additions are
marked; cross-reference checks are ``gateway.config.l4_checks``'s.

Defaults that differ from Traefik, and why:

* ``terminationDelay`` applies no delay unless it is set. Traefik closes a
  half-closed connection 100 ms after the first FIN by default, which cuts
  replies short; Sluice keeps the other direction flowing until that side
  closes or the idle timeout ends it. A negative value means no deadline.
* A load balancer's ``terminationDelay`` is Traefik's deprecated integer of
  milliseconds; the serversTransport's is a duration. Both are accepted.
* ``certificates`` of a TCP serversTransport are ``{certFile, keyFile}``
  pairs, as in Traefik's Go type; a bare path (as the documentation's example
  writes them) is a PEM file holding both.

Errors name the file, line and dotted key path (``tcp.routers.db@file.rule``):
decoding runs on the plain data first and, only when that fails, again on a
tree rebuilt with the configuration's origins, so the error finds its line.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from gateway.config.decoder import Decoder
from gateway.config.dynamic import Domain, DynamicConfig, WRRService
from gateway.config.errors import ConfigError, Origin
from gateway.config.loader import decode_value
from gateway.config.model import Duration, empty_map, frozen_map, model
from gateway.config.yaml_nodes import Entry, Map, Node, Seq, from_python

T = TypeVar("T")

_HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?", re.ASCII)

# --- TCP services --------------------------------------------------------------


@model
class ProxyProtocol:
    """PROXY protocol toward servers; an empty section means version 2, as in Traefik."""

    version: int = 2


@model
class TCPServer:
    REQUIRED = ("address",)

    address: str = ""  # host:port, IPv6 hosts in brackets
    weight: int = 1  # Sluice addition: Traefik balances TCP servers evenly
    tls: bool = False  # dial the server with TLS


@model
class TCPHealthCheck:
    """Connect (to ``port`` if set), optionally ``send`` a payload and ``expect`` a reply."""

    port: int = 0  # 0: the server's own port
    send: str = ""
    expect: str = ""
    interval: Duration = 30.0
    unhealthy_interval: Duration = 0.0  # 0: the same as interval
    timeout: Duration = 5.0


@model
class TCPLoadBalancer:
    servers: tuple[TCPServer, ...] = ()
    servers_transport: str = ""
    # Deprecated in Traefik v3 in favour of the serversTransport's; used when
    # the load balancer names no serversTransport.
    proxy_protocol: ProxyProtocol | None = None
    termination_delay: int | None = None  # milliseconds; None: no delay (see module doc)
    health_check: TCPHealthCheck | None = None


@model
class TCPWeighted:
    services: tuple[WRRService, ...] = ()


@model
class TCPService:
    ONE_OF = ("load_balancer", "weighted")

    load_balancer: TCPLoadBalancer | None = None
    weighted: TCPWeighted | None = None


# --- TCP routers ---------------------------------------------------------------


@model
class TCPRouterTLS:
    """TLS on a TCP router: terminated here, or passed through untouched."""

    passthrough: bool = False
    options: str = ""
    cert_resolver: str = ""
    domains: tuple[Domain, ...] = ()


@model
class TCPRouter:
    REQUIRED = ("rule", "service")

    entry_points: tuple[str, ...] = ()  # empty: every TCP entry point
    middlewares: tuple[str, ...] = ()
    service: str = ""
    rule: str = ""
    rule_syntax: str = ""
    priority: int = 0  # 0: the rule's length; HostSNI(`*`) alone: -1
    tls: TCPRouterTLS | None = None  # None: plain TCP; {} terminates TLS
    observability: Mapping[str, Any] | None = None


# --- TCP serversTransports -------------------------------------------------------


@model
class ClientCertificate:
    """A client certificate for mTLS to servers; an empty key_file: the key is in cert_file."""

    cert_file: str = ""
    key_file: str = ""


@model
class Spiffe:
    ids: tuple[str, ...] = ()
    trust_domain: str = ""


@model
class TCPServersTransportTLS:
    server_name: str = ""
    insecure_skip_verify: bool = False
    root_c_as: tuple[str, ...] = ()  # "rootCAs"
    certificates: tuple[ClientCertificate, ...] = ()
    peer_cert_u_r_i: str = ""  # "peerCertURI"
    spiffe: Spiffe | None = None


@model
class TCPServersTransport:
    dial_timeout: Duration = 30.0
    dial_keep_alive: Duration = 15.0
    proxy_protocol: ProxyProtocol | None = None
    termination_delay: Duration | None = None  # None: no delay (see module doc)
    tls: TCPServersTransportTLS | None = None  # set: servers with tls: true use it


@model
class TCPConfig:
    routers: Mapping[str, TCPRouter] = empty_map()
    services: Mapping[str, TCPService] = empty_map()
    # Raw: each middleware type decodes its own options (middleware/l4).
    middlewares: Mapping[str, Any] = empty_map()
    servers_transports: Mapping[str, TCPServersTransport] = empty_map()


# --- UDP -----------------------------------------------------------------------


@model
class UDPServer:
    REQUIRED = ("address",)

    address: str = ""
    weight: int = 1  # Sluice addition


@model
class UDPLoadBalancer:
    servers: tuple[UDPServer, ...] = ()


@model
class UDPWeighted:
    services: tuple[WRRService, ...] = ()


@model
class UDPService:
    ONE_OF = ("load_balancer", "weighted")

    load_balancer: UDPLoadBalancer | None = None
    weighted: UDPWeighted | None = None


@model
class UDPRouter:
    REQUIRED = ("service",)

    entry_points: tuple[str, ...] = ()  # empty: every UDP entry point
    service: str = ""
    # Sluice additions: Traefik's UDP routers take every datagram of their
    # entry points. A rule may match ClientIP; the highest priority wins.
    rule: str = ""
    priority: int = 0  # 0: the rule's length; no rule: -1
    middlewares: tuple[str, ...] = ()


@model
class UDPConfig:
    routers: Mapping[str, UDPRouter] = empty_map()
    services: Mapping[str, UDPService] = empty_map()
    middlewares: Mapping[str, Any] = empty_map()  # Sluice addition; raw, as for TCP


@model
class L4Config:
    """The decoded ``tcp`` and ``udp`` sections of one (merged) configuration."""

    tcp: TCPConfig = TCPConfig()
    udp: UDPConfig = UDPConfig()


def effective_transport(
    lb: TCPLoadBalancer, transports: Mapping[str, TCPServersTransport]
) -> TCPServersTransport:
    """The transport a load balancer dials its servers with, as Traefik resolves it.

    A named serversTransport wins whole (its proxyProtocol and
    terminationDelay included); without one, the load balancer's deprecated
    ``proxyProtocol`` and ``terminationDelay`` (milliseconds) apply on top of
    the defaults. An unknown name (caught by the checks) also gets the defaults.
    """
    if lb.servers_transport and lb.servers_transport in transports:
        return transports[lb.servers_transport]
    delay = lb.termination_delay
    return TCPServersTransport(
        proxy_protocol=lb.proxy_protocol,
        termination_delay=None if delay is None else delay / 1000,
    )


def parse_server_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of a server address (``host:port``, ``[2001:db8::1]:port``).

    Raises ``ValueError`` saying what is wrong: the reason, not the address,
    so callers can phrase the message.
    """
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ValueError("expected host:port")
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")):
            raise ValueError("unbalanced brackets")
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError("an IPv6 address is written in brackets: [2001:db8::1]:port")
    elif not _HOST.fullmatch(host):
        raise ValueError(f"{host!r} is not a host name or address" if host else "no host")
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"port {port!r} is not a number from 1 to 65535")
    return host, int(port)


# --- Decoding ------------------------------------------------------------------


def decode_l4(config: DynamicConfig) -> L4Config:
    """The ``tcp`` and ``udp`` sections of ``config``, decoded; raises ``ConfigError``.

    Names stay as the configuration has them (``db@file`` once merged), and
    so do key paths in errors. Cross-references are checked separately
    (``gateway.config.l4_checks.validate_l4``).
    """
    tcp = _decode(TCPConfig, _bare_certificates(config.tcp), "tcp", config.origins)
    udp = _decode(UDPConfig, config.udp, "udp", config.origins)
    return L4Config(tcp=tcp, udp=udp)


def decode_located(
    cls: type[T], raw: Mapping[str, Any] | None, path: str, origins: Mapping[str, Origin]
) -> T:
    """Decode a raw section of a merged configuration; errors name the file and line."""
    return _decode(cls, raw, path, origins)


def _decode(
    cls: type[T], raw: Mapping[str, Any] | None, path: str, origins: Mapping[str, Origin]
) -> T:
    if not raw:
        return cls()
    try:
        return decode_value(cls, raw, origin=None, path=path)
    except ConfigError:
        # Merged origins are renamed on first read, so only an error reads them.
        where = origin_of(origins, path)
        Decoder().decode(cls, _located(raw, path, where, origins), path, where)
        raise


def _located(value: Any, at: str, parent: Origin | None, origins: Mapping[str, Origin]) -> Node:
    """``value`` as a decoder tree, each key on the line ``origins`` gives it."""
    here = origins.get(at) or parent
    if isinstance(value, Mapping):
        entries = []
        for k, v in value.items():
            sub = f"{at}.{k}"
            entries.append(Entry(str(k), origins.get(sub) or here, _located(v, sub, here, origins)))
        return Map(tuple(entries), here)
    if isinstance(value, (list, tuple)):
        return Seq(
            tuple(_located(v, f"{at}[{i}]", here, origins) for i, v in enumerate(value)), here
        )
    return from_python(value, here)


class OriginFinder:
    """Finds where a key path was written, for error messages.

    A path matches as written first, then ignoring case (the decoder accepts
    ``loadbalancer`` for ``loadBalancer``, and error paths use the latter),
    else its nearest enclosing path is tried. The case-blind index is built
    on the first miss only: merged origins are renamed when first read.
    """

    __slots__ = ("_lowered", "_origins")

    def __init__(self, origins: Mapping[str, Origin]) -> None:
        self._origins = origins
        self._lowered: dict[str, Origin] | None = None

    def __call__(self, path: str) -> Origin | None:
        while path:
            found = self._origins.get(path)
            if found is None:
                if self._lowered is None:
                    self._lowered = {k.lower(): v for k, v in self._origins.items()}
                found = self._lowered.get(path.lower())
            if found is not None:
                return found
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None


def origin_of(origins: Mapping[str, Origin], path: str) -> Origin | None:
    """The origin of ``path`` or of its nearest enclosing key path (see ``OriginFinder``)."""
    return OriginFinder(origins)(path)


def _bare_certificates(tcp: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``tcp`` with bare-path client certificates written as ``{certFile: path}``."""
    if not tcp:
        return tcp

    def fix(transport: Any) -> Any:
        tls = _get(transport, "tls")
        certs = _get(tls, "certificates")
        if not isinstance(certs, tuple) or not any(isinstance(c, str) for c in certs):
            return transport
        fixed = tuple(frozen_map({"certFile": c}) if isinstance(c, str) else c for c in certs)
        return _put(transport, "tls", _put(tls, "certificates", fixed))

    out = dict(tcp)
    for key, section in tcp.items():
        if key.lower() == "serverstransports" and isinstance(section, Mapping):
            out[key] = frozen_map({name: fix(t) for name, t in section.items()})
    return frozen_map(out)


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if isinstance(k, str) and k.lower() == key:
                return v
    return None


def _put(obj: Mapping[str, Any], key: str, value: Any) -> Mapping[str, Any]:
    return frozen_map({k: value if k.lower() == key else v for k, v in obj.items()})
