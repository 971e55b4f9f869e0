"""The compiled HTTP router table: which route a request takes, fast.

``RouterTable.build(specs)`` runs off the hot path, once per configuration: it
parses each rule, compiles it to a predicate (``gateway.http.matchers``) and
indexes the routes by the hosts they can match. ``match(request)`` is then one
dict lookup on ``request.host`` and a scan of that host's short candidate list;
it costs the same with ten routers or ten thousand on other hosts.

Order (Traefik's ``Muxer``): the highest priority first; a priority of 0
means the default, the rule's length (``gateway.config.rule.default_priority``).
Traefik breaks ties by provider precedence and otherwise leaves them to an
unstable sort; here ties go by router name, then input order, so a
configuration always routes the same way.

Host index: each rule is reduced, at build time, to the hosts it can only
match. ``Host(a) && PathPrefix(/x)`` can only match ``a``; ``Host(a) ||
Host(b)`` only ``a`` or ``b``; ``Host(*.a)`` only children of ``a``; a rule with
any other alternative, a ``!`` around a Host, or only ``HostRegexp`` can match
any host. A request's candidates are, in priority order, the routes indexed
under its exact host, those whose wildcard covers it, and the any-host routes.
Lists are merged on first use and kept, keyed only by hosts and wildcard
suffixes that appear in rules, so the cache is bounded by the configuration,
not by traffic. A host no rule names costs a lookup per label when wildcards
exist, and returns the any-host list otherwise.

Invariants: a table is never changed after ``build`` except for that cache,
whose contents follow from the build. A rule that does not parse fails the
whole build with its ``RuleSyntaxError`` (the router's name added as a note):
the configuration is rejected and the previous table keeps serving, the same
policy the validator applies before a table is ever built.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.config.merge import collection_paused
from gateway.config.rule import (
    And,
    Expr,
    Matcher,
    Not,
    RuleSyntaxError,
    default_priority,
    parse,
    render,
)
from gateway.http.matchers import HostKey, Predicate, compile_rule, host_key, host_variants
from middleware.contract import Request

__all__ = ["Route", "RouteSpec", "RouterTable", "host_constraint"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RouteSpec(Generic[T]):
    """A router as configured. ``priority`` 0 means Traefik's default."""

    name: str
    rule: str | Expr
    priority: int
    target: T


@dataclass(frozen=True, slots=True)
class Route(Generic[T]):
    """A router as compiled: its effective priority and its rule text."""

    name: str
    priority: int
    target: T
    rule: str


# rank (position in the global order), predicate, route
_Entry = tuple[int, Predicate, Route[T]]


def host_constraint(expr: Expr) -> frozenset[HostKey] | None:
    """The hosts ``expr`` can only match, or ``None`` when it may match any host."""
    if isinstance(expr, Matcher):
        return frozenset((host_key(expr.args[0]),)) if expr.name == "Host" else None
    if isinstance(expr, Not):
        return None
    left, right = host_constraint(expr.left), host_constraint(expr.right)
    if isinstance(expr, And):
        if left is None or right is None:
            return right if left is None else left
        if all(kind == "=" for kind, _ in left | right):
            return left & right  # a host equals at most one exact name
        return min(left, right, key=lambda keys: sum(kind != "=" for kind, _ in keys))
    if left is None or right is None:
        return None
    return left | right


def _merge(*lists: Sequence[_Entry[T]]) -> tuple[_Entry[T], ...]:
    by_rank = {entry[0]: entry for entries in lists for entry in entries}
    return tuple(by_rank[rank] for rank in sorted(by_rank))


def _parents(domain: str) -> Iterable[str]:
    """``a.b.c`` → ``a.b.c``, ``b.c``, ``c``."""
    while True:
        yield domain
        dot = domain.find(".")
        if dot < 0:
            return
        domain = domain[dot + 1 :]


class RouterTable(Generic[T]):
    """Routes in priority order, indexed by host. Build with ``RouterTable.build``."""

    __slots__ = ("_any", "_deep", "_direct", "_merged", "_own", "_routes", "_wild_merged")

    def __init__(self) -> None:
        self._routes: tuple[Route[T], ...] = ()
        self._any: tuple[_Entry[T], ...] = ()
        self._own: dict[str, tuple[_Entry[T], ...]] = {}
        self._direct: dict[str, tuple[_Entry[T], ...]] = {}
        self._deep: dict[str, tuple[_Entry[T], ...]] = {}
        self._merged: dict[str, tuple[_Entry[T], ...]] = {}
        self._wild_merged: dict[HostKey, tuple[_Entry[T], ...]] = {}

    @classmethod
    def build(cls, routes: Iterable[RouteSpec[T]]) -> RouterTable[T]:
        """Compile and index ``routes``; a rule that does not parse raises ``RuleSyntaxError``."""
        # A build allocates a dozen long-lived objects per route and no cycles;
        # left on, CPython's collector rescans them over and over, which
        # tripled the time to build 10,000 routes.
        with collection_paused():
            return cls._build(routes)

    @classmethod
    def _build(cls, routes: Iterable[RouteSpec[T]]) -> RouterTable[T]:
        table: RouterTable[T] = cls()
        compiled: list[tuple[int, str, int, Expr, Route[T]]] = []
        for position, spec in enumerate(routes):
            if isinstance(spec.rule, str):
                text = spec.rule
                try:
                    expr = parse(text)
                except RuleSyntaxError as exc:
                    exc.add_note(f"router {spec.name!r}: {text}")
                    raise
            else:
                text, expr = render(spec.rule), spec.rule
            priority = spec.priority or default_priority(text, expr)
            route = Route(spec.name, priority, spec.target, text)
            compiled.append((-priority, spec.name, position, expr, route))
        compiled.sort(key=lambda item: item[:3])

        any_host: list[_Entry[T]] = []
        own: dict[str, list[_Entry[T]]] = {}
        single: dict[str, list[_Entry[T]]] = {}
        double: dict[str, list[_Entry[T]]] = {}
        for rank, (_, _, _, expr, route) in enumerate(compiled):
            entry: _Entry[T] = (rank, compile_rule(expr), route)
            keys = host_constraint(expr)
            if keys is None:
                any_host.append(entry)
                continue
            for kind, name in keys:
                if kind == "=":
                    for variant in host_variants(name):
                        own.setdefault(variant, []).append(entry)
                else:
                    (single if kind == "*" else double).setdefault(name, []).append(entry)

        table._routes = tuple(item[4] for item in compiled)
        table._any = tuple(any_host)
        table._own = {host: tuple(entries) for host, entries in own.items()}
        for suffix in single.keys() | double.keys():
            covering = [double.get(parent, ()) for parent in _parents(suffix)]
            table._deep[suffix] = _merge(*covering)
            table._direct[suffix] = _merge(single.get(suffix, ()), *covering)
        return table

    @property
    def routes(self) -> tuple[Route[T], ...]:
        """Every compiled route, in the order they are tried."""
        return self._routes

    def match(self, request: Request) -> Route[T] | None:
        """The first route, in priority order, whose rule ``request`` satisfies."""
        entries = self._merged.get(request.host)
        if entries is None:
            entries = self._resolve(request.host)
        for _, predicate, route in entries:
            if predicate(request):
                return route
        return None

    def has_host(self, host: str) -> bool:
        """Whether some route names ``host`` (exactly or by wildcard), not only host-less ones."""
        return host in self._own or self._wildcards(host)[0] is not None

    def candidates(self, host: str) -> tuple[Route[T], ...]:
        """The routes ``match`` tries, in order, for a request to ``host``."""
        entries = self._merged.get(host)
        if entries is None:
            entries = self._resolve(host)
        return tuple(route for _, _, route in entries)

    def _resolve(self, host: str) -> tuple[_Entry[T], ...]:
        own = self._own.get(host)
        wild_key, wild = self._wildcards(host)
        if own is not None:
            merged = _merge(own, wild, self._any)
            self._merged[host] = merged
            return merged
        if wild_key is None:
            return self._any
        cached = self._wild_merged.get(wild_key)
        if cached is None:
            cached = self._wild_merged[wild_key] = _merge(wild, self._any)
        return cached

    def _wildcards(self, host: str) -> tuple[HostKey | None, tuple[_Entry[T], ...]]:
        """Routes whose wildcard covers ``host``, under the key that selected them."""
        if not self._direct:
            return None, ()
        if host.endswith("."):
            host = host[:-1]
        dot = host.find(".")
        if dot <= 0:
            return None, ()
        parent = host[dot + 1 :]
        entries = self._direct.get(parent)
        if entries is not None:
            return ("*", parent), entries
        for ancestor in itertools.islice(_parents(parent), 1, None):
            entries = self._deep.get(ancestor)
            if entries is not None:
                return ("**", ancestor), entries
        return None, ()
