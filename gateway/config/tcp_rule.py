"""The rule language of TCP and UDP routers: parsing, matching and priorities.

TCP rules are Traefik v3's: ``HostSNI``, ``HostSNIRegexp``, ``ClientIP`` and
``ALPN``, one argument each, combined with ``&&``, ``||``, ``!`` and
parentheses. UDP rules are a Sluice extension (Traefik's UDP routers have no
rule) and know only ``ClientIP``. Tokens, precedence and error columns are the
HTTP rule parser's (``gateway.config.rule``, through a ``Grammar``); this
module owns the matcher sets, what each matcher accepts and how it matches.

Verified against Traefik v3's ``pkg/muxer/tcp/matcher.go`` and ``mux.go`` and
the "Rules & Priority" page for TCP routers:

* ``HostSNI(`*`)`` matches every connection, TLS or not; any other
  ``HostSNI`` matches only a TLS connection whose server name equals it,
  ignoring case and a trailing dot. ``*.example.com`` matches exactly one
  more label (Traefik 3.7). A name may be an IP address literal.
* ``HostSNIRegexp`` is an unanchored Go regexp search on the lower-cased
  server name, which is empty for a connection without one (so
  ``HostSNIRegexp(`^.*$`)`` matches plain TCP too). It runs in linear time
  (``gateway.config.safe_regexp``), as Go's RE2-based ``regexp`` does.
* ``ClientIP`` takes an address or CIDR range; IPv4 peers seen on a
  dual-stack socket (``::ffff:192.0.2.1``) are matched as IPv4.
* ``ALPN`` matches when the client offered that protocol; ``acme-tls/1`` is
  refused, so no router can catch an ACME TLS-ALPN challenge.
* The default priority is the rule's length in bytes, except that a rule that
  is exactly ``HostSNI(`*`)`` gets -1, so the catch-all is tried last.

Deliberate differences: HostSNI names are compared ignoring case (Traefik
compares the lower-cased server name with the name as written, so a name with
capitals never matches there), and a name with a port is refused, as it could
never match.

The runtime peeks at the TLS ClientHello only for rules that need it
(``needs_client_hello``); the compiled ``match(sni, client_ip, alpn)`` takes
``sni=None`` for a connection that sent none.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.config.go_regexp import GoRegexpError
from gateway.config.rule import (
    And,
    Expr,
    Grammar,
    Matcher,
    Not,
    RuleSyntaxError,
    parse_with,
)
from gateway.config.safe_regexp import compile_safe

__all__ = [
    "CATCH_ALL_PRIORITY",
    "TCP",
    "UDP",
    "RuleSyntaxError",
    "TCPMatch",
    "TCPRule",
    "UDPMatch",
    "UDPRule",
    "compile_tcp",
    "compile_udp",
    "default_priority",
    "is_catch_all",
    "needs_client_hello",
    "parse_tcp",
    "parse_udp",
    "tcp_rule",
    "udp_rule",
]

# A TCP matcher: (server name or None, client IP, ALPN protocols offered) -> match.
TCPMatch = Callable[[str | None, str, tuple[str, ...]], bool]
# A UDP matcher: client IP -> match.
UDPMatch = Callable[[str], bool]

# The default priority of HostSNI(`*`) alone (and of a UDP router with no rule).
CATCH_ALL_PRIORITY = -1

_ACME_TLS = "acme-tls/1"
# Traefik's hostOrIP ([[:word:]] is ASCII letters, digits and "_"), after an
# optional "*." wildcard label.
_SNI_NAME = re.compile(r"(?:\*\.)?[\w.:-]+", re.ASCII)
_CATCH_ALL = Matcher("HostSNI", ("*",))


def _check_tcp(name: str, args: list[str], columns: list[int]) -> None:
    value, column = args[0], columns[0]
    if name == "HostSNI":
        _sni_name(value, column)
    elif name == "HostSNIRegexp":
        if not value.isascii():
            raise RuleSyntaxError("HostSNIRegexp: non-ASCII characters are not allowed", column)
        try:
            compile_safe(value)
        except GoRegexpError as exc:
            message = f"HostSNIRegexp: invalid regexp {value!r}: {exc}"
            raise RuleSyntaxError(message, column) from None
    elif name == "ALPN":
        if value.lower() == _ACME_TLS:
            message = f"ALPN: {value!r} is reserved for ACME TLS-ALPN challenges"
            raise RuleSyntaxError(message, column)
    else:
        _client_network(value, column)


def _check_udp(name: str, args: list[str], columns: list[int]) -> None:
    _client_network(args[0], columns[0])


TCP = Grammar(
    {"ALPN": (1, 1), "ClientIP": (1, 1), "HostSNI": (1, 1), "HostSNIRegexp": (1, 1)},
    check=_check_tcp,
    example="HostSNI(`example.com`)",
    usage={"HostSNI": "one name each; join several with ||"},
)
UDP = Grammar(
    {"ClientIP": (1, 1)},
    check=_check_udp,
    example="ClientIP(`198.51.100.0/24`)",
)


def _sni_name(value: str, column: int) -> str:
    """The lower-cased ASCII form of a HostSNI argument other than ``*``."""
    if value == "*":
        return value
    name = value
    if not name.isascii():
        # Traefik converts internationalised names to punycode before refusing them.
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise RuleSyntaxError(f"HostSNI: {value!r} is not a valid host name", column) from None
    if not _SNI_NAME.fullmatch(name):
        hint = "; `*` alone matches every connection" if "*" in name else ""
        raise RuleSyntaxError(f"HostSNI: {value!r} is not a valid host name{hint}", column)
    if ":" in name:
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            message = f"HostSNI: {value!r} has a port; a server name never carries one"
            raise RuleSyntaxError(message, column) from None
    return name.lower().rstrip(".")


def _client_network(value: str, column: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        if "%" in value:
            raise ValueError(value)
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        message = f"ClientIP: {value!r} is not an IP address or CIDR range"
        raise RuleSyntaxError(message, column) from None


@functools.lru_cache(maxsize=1 << 12)
def parse_tcp(rule: str) -> Expr:
    """The AST of a TCP router's rule; raises ``RuleSyntaxError``."""
    return parse_with(rule, TCP)


@functools.lru_cache(maxsize=1 << 12)
def parse_udp(rule: str) -> Expr:
    """The AST of a UDP router's rule (``ClientIP`` only); raises ``RuleSyntaxError``."""
    try:
        return parse_with(rule, UDP)
    except RuleSyntaxError as exc:
        if exc.message.startswith("unknown matcher") and "did you mean" not in exc.message:
            hint = f"{exc.message}; UDP rules know only ClientIP"
            raise RuleSyntaxError(hint, exc.column) from None
        raise


def is_catch_all(expr: Expr) -> bool:
    """Whether the rule is exactly ``HostSNI(`*`)``: Traefik's non-TLS fallback."""
    return expr == _CATCH_ALL


def needs_client_hello(expr: Expr) -> bool:
    """Whether matching reads the TLS ClientHello (a HostSNI name, HostSNIRegexp, ALPN)."""
    if isinstance(expr, Matcher):
        return expr.name in ("HostSNIRegexp", "ALPN") or (
            expr.name == "HostSNI" and expr.args[0] != "*"
        )
    if isinstance(expr, Not):
        return needs_client_hello(expr.expr)
    return needs_client_hello(expr.left) or needs_client_hello(expr.right)


def default_priority(rule: str, expr: Expr | None) -> int:
    """Traefik's priority for a router that sets none (``None``: no rule, a UDP router)."""
    if expr is None or is_catch_all(expr):
        return CATCH_ALL_PRIORITY
    return len(rule) if rule.isascii() else len(rule.encode("utf-8"))


# --- Matching -------------------------------------------------------------------


@functools.lru_cache(maxsize=1 << 12)
def _peer(client_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address, an IPv4-mapped IPv6 one as IPv4; None if unreadable."""
    try:
        address = ipaddress.ip_address(client_ip.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _always(sni: str | None, client_ip: str, alpn: tuple[str, ...]) -> bool:
    return True


def _leaf(matcher: Matcher) -> TCPMatch:
    value = matcher.args[0]
    if matcher.name == "HostSNI":
        name = _sni_name(value, matcher.column)
        if name == "*":
            return _always
        if name.startswith("*."):
            suffix = name[1:]

            def wildcard(sni: str | None, client_ip: str, alpn: tuple[str, ...]) -> bool:
                if not sni:
                    return False
                host = sni.lower().rstrip(".")
                label = host[: -len(suffix)]
                return host.endswith(suffix) and bool(label) and "." not in label

            return wildcard

        def exact(sni: str | None, client_ip: str, alpn: tuple[str, ...]) -> bool:
            return sni is not None and sni.lower().rstrip(".") == name

        return exact
    if matcher.name == "HostSNIRegexp":
        search = compile_safe(value).search
        return lambda sni, client_ip, alpn: search(sni.lower() if sni else "") is not None
    if matcher.name == "ALPN":
        return lambda sni, client_ip, alpn: value in alpn
    network = _client_network(value, matcher.column)

    def client(sni: str | None, client_ip: str, alpn: tuple[str, ...]) -> bool:
        peer = _peer(client_ip)
        return peer is not None and peer in network

    return client


def compile_tcp(expr: Expr) -> TCPMatch:
    """``match(sni, client_ip, alpn)`` for a parsed TCP rule (sans-IO, no awaiting)."""
    if isinstance(expr, Matcher):
        return _leaf(expr)
    if isinstance(expr, Not):
        inner = compile_tcp(expr.expr)
        return lambda sni, ip, alpn: not inner(sni, ip, alpn)
    left, right = compile_tcp(expr.left), compile_tcp(expr.right)
    if isinstance(expr, And):
        return lambda sni, ip, alpn: left(sni, ip, alpn) and right(sni, ip, alpn)
    return lambda sni, ip, alpn: left(sni, ip, alpn) or right(sni, ip, alpn)


def compile_udp(expr: Expr | None) -> UDPMatch:
    """``match(client_ip)`` for a parsed UDP rule; ``None`` (no rule) matches every client."""
    if expr is None:
        return lambda client_ip: True
    match = compile_tcp(expr)
    return lambda client_ip: match(None, client_ip, ())


# --- Compiled rules --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TCPRule:
    """A TCP router's rule, parsed and compiled once, with what the runtime needs of it."""

    text: str
    expr: Expr
    match: TCPMatch = field(compare=False, repr=False)
    priority: int  # the default: used when the router sets no priority
    needs_client_hello: bool
    catch_all: bool


@dataclass(frozen=True, slots=True)
class UDPRule:
    """A UDP router's rule (``expr`` None: no rule, every client)."""

    text: str
    expr: Expr | None
    match: UDPMatch = field(compare=False, repr=False)
    priority: int


@functools.lru_cache(maxsize=1 << 12)
def tcp_rule(text: str) -> TCPRule:
    """Parse and compile a TCP rule; raises ``RuleSyntaxError``."""
    expr = parse_tcp(text)
    return TCPRule(
        text=text,
        expr=expr,
        match=compile_tcp(expr),
        priority=default_priority(text, expr),
        needs_client_hello=needs_client_hello(expr),
        catch_all=is_catch_all(expr),
    )


@functools.lru_cache(maxsize=1 << 12)
def udp_rule(text: str) -> UDPRule:
    """Parse and compile a UDP rule (empty text: no rule); raises ``RuleSyntaxError``."""
    expr = parse_udp(text) if text.strip() else None
    return UDPRule(
        text=text, expr=expr, match=compile_udp(expr), priority=default_priority(text, expr)
    )
