"""Rule ASTs compiled to request predicates: one closure per matcher.

``compile_rule(expr)`` runs once per configuration; the predicate it returns
does only per-request work and never walks the AST. What each matcher reads
from ``middleware.contract.Request``, with Traefik v3's semantics (see
``gateway.config.rule`` for what was verified):

* ``host``: already lower-cased with the port stripped by the server.
  ``Host`` is one set lookup (the rule's name with and without a trailing dot,
  and IPv6 literals with and without brackets); wildcards compare suffixes.
* ``path``: matched as Traefik's *routing path*: percent-encodings are decoded
  except those of reserved characters (RFC 3986 2.2, and ``%25``), so
  ``Path(`/a b`)`` matches ``/a%20b`` while ``/a%2Fb`` is never ``/a/b``.
  Decoding is idempotent, so a path the server already decoded this way is
  unchanged; one that was fully unquoted cannot be recovered. Unlike Traefik,
  lower-case reserved escapes (``%2f``) stay encoded too, and a malformed
  ``%`` is matched literally rather than answered with 400.
* ``query``: split only when a ``Query``/``QueryRegexp`` matcher runs, as Go's
  ``url.ParseQuery`` does it (``&`` only; a pair with ``;`` or a bad escape is
  dropped; ``+`` is a space), and memoised per query string.
* ``headers``: raw bytes, names compared case-insensitively; values compared
  as the UTF-8 bytes of the rule's value, with surrounding blanks ignored.
* ``method``, ``client_ip``: as given; ``client_ip`` should be the peer
  address (Traefik's ``ClientIP`` ignores X-Forwarded-For). IPv4-mapped IPv6
  peers match IPv4 ranges, as Go's ``IPNet.Contains`` does.

Regexp matchers run ``gateway.config.safe_regexp`` patterns: linear time in
the client's input, as Traefik's RE2-based ones are.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Mapping
from urllib.parse import unquote_plus

from gateway.config.go_regexp import GoRegexpError
from gateway.config.rule import And, Expr, Matcher, Not, RuleSyntaxError
from gateway.config.safe_regexp import compile_safe
from middleware.contract import Request

__all__ = [
    "HostKey",
    "Predicate",
    "compile_rule",
    "host_key",
    "host_variants",
    "query_values",
    "routing_path",
]

Predicate = Callable[[Request], bool]
HostKey = tuple[str, str]  # ("=", name) | ("*", suffix) | ("**", suffix)
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_RESERVED = frozenset(b":/?#[]@!$&'()*+,;=%")
_PERCENT_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def compile_rule(expr: Expr) -> Predicate:
    """The predicate a request must satisfy to match ``expr``."""
    if isinstance(expr, Matcher):
        try:
            return _BUILDERS[expr.name](*expr.args)
        except GoRegexpError as exc:
            # The rule parser validates with compile_go; RE2 also refuses what
            # Go refuses (a{1001}): report it as the rule error it is.
            message = f"{expr.name}: invalid regexp {expr.args[-1]!r}: {exc}"
            raise RuleSyntaxError(message, expr.column) from None
    if isinstance(expr, Not):
        inner = compile_rule(expr.expr)
        return lambda request: not inner(request)
    left, right = compile_rule(expr.left), compile_rule(expr.right)
    if isinstance(expr, And):
        return lambda request: left(request) and right(request)
    return lambda request: left(request) or right(request)


def host_key(value: str) -> HostKey:
    """The normalised form of a ``Host`` argument, used to index routes."""
    host = value.lower()
    if host.endswith("."):
        host = host[:-1]
    if host.startswith("**."):
        return ("**", host[3:])
    if host.startswith("*."):
        return ("*", host[2:])
    if ":" in host:
        return ("=", host.strip("[]"))
    return ("=", host)


def host_variants(name: str) -> frozenset[str]:
    """Every ``Request.host`` an exact ``Host`` key matches."""
    if ":" in name:
        return frozenset((name, f"[{name}]"))
    return frozenset((name, name + "."))


def _host(value: str) -> Predicate:
    kind, name = host_key(value)
    if kind == "=":
        hosts = host_variants(name)
        return lambda request: request.host in hosts
    dotted = "." + name
    if kind == "**":
        shortest = len(dotted) + 1

        def any_depth(request: Request) -> bool:
            host = request.host
            if host.endswith("."):
                host = host[:-1]
            return len(host) >= shortest and host.endswith(dotted)

        return any_depth

    def one_label(request: Request) -> bool:
        host = request.host
        if host.endswith("."):
            host = host[:-1]
        first = host.find(".")
        return first > 0 and host[first:] == dotted

    return one_label


def _host_regexp(pattern: str) -> Predicate:
    search = compile_safe(pattern).search
    return lambda request: search(request.host) is not None


def _decode_run(match: re.Match[str]) -> str:
    run = match.group()
    parts: list[str] = []
    pending = bytearray()
    for start in range(0, len(run), 3):
        byte = int(run[start + 1 : start + 3], 16)
        if byte in _RESERVED:
            if pending:
                parts.append(pending.decode("utf-8", "surrogateescape"))
                pending.clear()
            parts.append(run[start : start + 3])
        else:
            pending.append(byte)
    if pending:
        parts.append(pending.decode("utf-8", "surrogateescape"))
    return "".join(parts)


@functools.lru_cache(maxsize=1024)
def routing_path(path: str) -> str:
    """``path`` with every percent-encoding decoded but those of reserved characters."""
    if "%" not in path:
        return path
    return _PERCENT_RUN.sub(_decode_run, path)


def _path(value: str) -> Predicate:
    def exact(request: Request) -> bool:
        path = request.path
        return (routing_path(path) if "%" in path else path) == value

    return exact


def _path_prefix(value: str) -> Predicate:
    def prefix(request: Request) -> bool:
        path = request.path
        return (routing_path(path) if "%" in path else path).startswith(value)

    return prefix


def _path_regexp(pattern: str) -> Predicate:
    search = compile_safe(pattern).search

    def path_regexp(request: Request) -> bool:
        path = request.path
        return search(routing_path(path) if "%" in path else path) is not None

    return path_regexp


def _header(name: str, value: str) -> Predicate:
    key = name.lower().encode("ascii")
    size = len(key)
    wanted = value.encode("utf-8")

    def header(request: Request) -> bool:
        for k, v in request.headers.raw:
            if len(k) == size and k.lower() == key and v.strip(b" \t") == wanted:
                return True
        return False

    return header


def _header_regexp(name: str, pattern: str) -> Predicate:
    key = name.lower().encode("ascii")
    size = len(key)
    search = compile_safe(pattern).search

    def header_regexp(request: Request) -> bool:
        for k, v in request.headers.raw:
            if len(k) == size and k.lower() == key:
                text = v.strip(b" \t").decode("utf-8", "surrogateescape")
                if search(text) is not None:
                    return True
        return False

    return header_regexp


@functools.lru_cache(maxsize=256)
def query_values(query: str) -> Mapping[str, tuple[str, ...]]:
    """The values of each key in a raw query string, split as Go's ``url.ParseQuery``."""
    values: dict[str, list[str]] = {}
    for pair in query.split("&"):
        if not pair or ";" in pair or _BAD_ESCAPE.search(pair):
            continue
        key, _, value = pair.partition("=")
        values.setdefault(unquote_plus(key), []).append(unquote_plus(value))
    return {key: tuple(found) for key, found in values.items()}


def _query(key: str, value: str = "") -> Predicate:
    def query(request: Request) -> bool:
        found = query_values(request.query).get(key) if request.query else None
        return found is not None and value in found

    return query


def _query_regexp(key: str, pattern: str | None = None) -> Predicate:
    if pattern is None:
        return _query(key)
    search = compile_safe(pattern).search

    def query_regexp(request: Request) -> bool:
        found = query_values(request.query).get(key, ()) if request.query else ()
        return any(search(value) is not None for value in found)

    return query_regexp


def _method(value: str) -> Predicate:
    method = value.upper()
    return lambda request: request.method == method


@functools.lru_cache(maxsize=4096)
def _peer(ip: str) -> Address | None:
    try:
        address = ipaddress.ip_address(ip.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _client_ip(value: str) -> Predicate:
    network: Network = ipaddress.ip_network(value, strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            network = ipaddress.IPv4Network((mapped, network.prefixlen - 96))

    def client_ip(request: Request) -> bool:
        address = _peer(request.client_ip)
        return address is not None and address in network

    return client_ip


_BUILDERS: dict[str, Callable[..., Predicate]] = {
    "ClientIP": _client_ip,
    "Header": _header,
    "HeaderRegexp": _header_regexp,
    "Host": _host,
    "HostRegexp": _host_regexp,
    "Method": _method,
    "Path": _path,
    "PathPrefix": _path_prefix,
    "PathRegexp": _path_regexp,
    "Query": _query,
    "QueryRegexp": _query_regexp,
}
