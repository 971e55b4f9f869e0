"""HTTPRoute matches as Sluice rule text, and the spec's precedence order as one priority.

Rule text (spec notes §2.6, §5.1), built as a ``gateway.config.rule`` AST and
rendered, so every value is quoted the way the parser reads it back:

* hostname ``a.example`` -> ``Host(`a.example`)``; wildcard ``*.example`` ->
  ``Host(`**.example`)`` (Sluice's ``**.`` stands for one or more labels and
  never the bare domain: exactly the Gateway API wildcard, §2.3);
* ``Exact`` -> ``Path(`v`)``; ``PathPrefix`` is element-wise, Sluice's
  ``PathPrefix`` a string prefix, so ``/foo`` (or ``/foo/``) becomes
  ``Path(`/foo`) || PathPrefix(`/foo/`)`` and ``/`` stays ``PathPrefix(`/`)``;
  ``RegularExpression`` -> ``PathRegexp(`^(?:v)$`)``: Sluice's regexp matchers
  search, the Gateway API's match the whole value (Envoy's full match);
* header ``Exact`` -> ``Header(`n`, `v`)`` (name case-insensitive, value
  exact), ``RegularExpression`` -> ``HeaderRegexp`` anchored likewise; query
  params -> ``Query`` / ``QueryRegexp``; method -> ``Method``. A repeated
  header name (case-insensitive) or query name (exact) counts once, the first
  entry winning, as the spec says.

Priority (§2.5, §5.3). Sluice tries routers by descending ``priority``, so the
whole precedence order is one integer: a mixed-radix number whose digits are,
most significant first,

======  ==========================================================  =========
digit   value                                                       radix
======  ==========================================================  =========
tier    2 ``Exact``, 1 ``RegularExpression``, 0 ``PathPrefix``       3
length  characters of the path value (``PathPrefix``: trailing "/"  1025
        stripped, "/" itself counts 1)
method  1 with a method match                                       2
headers distinct header matches                                     17
query   distinct query-param matches                                17
host    254 + length of an exact hostname; length of a wildcard;    508
        0 for "any host" (non-wildcard characters, then characters)
route   ``route_count - 1 - rank``: older ``creationTimestamp``,    route_count
        then ``"{namespace}/{name}"`` first (``route_ranks``)
match   127 - position of the match in the route (rules in order,   128
        matches in order; CEL caps a route at 128 matches)
======  ==========================================================  =========

plus 1, so no router gets Sluice's "0 = rule length" default. Regular
expressions rank between Exact and PathPrefix (the spec leaves it to the
implementation; Envoy Gateway does the same). Hostname specificity comes after
the match criteria because the conformance suite requires it
(HTTPRouteMatchingAcrossRoutes: ``*.com`` + ``/v2`` beats ``example.com`` + ``/``).
Values beyond the CRD limits, which parsing rejects, are clamped to the top
digit instead of overflowing into the next one. The largest priority is about
1.2e11 times ``route_count`` (exact as a Python int; past 2**53, near 77,000
routes, JavaScript would round it for display), and the smallest about 3.7e7
times it, far above the rule-length default of hand-written routers sharing an
entry point.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime

from gateway.config.rule import And, Expr, Matcher, Or, render
from providers.gatewayapi.objects import HTTPMatch, HTTPRoute, PathMatch, ValueMatch

MAX_PATH = 1024  # HTTPPathMatch.value maxLength
MAX_VALUES = 16  # headers / queryParams maxItems
MAX_HOST = 253  # Hostname maxLength
MAX_MATCHES = 128  # CEL: total matches of a route's rules

TIERS = {"PathPrefix": 0, "RegularExpression": 1, "Exact": 2}

# (name, radix) of each digit after the route rank, most significant first.
_HIGH = (("tier", 3), ("length", MAX_PATH + 1), ("method", 2),
         ("headers", MAX_VALUES + 1), ("query", MAX_VALUES + 1),
         ("host", 2 * (MAX_HOST + 1)))  # fmt: skip


def full_match(pattern: str) -> str:
    """``pattern`` anchored at both ends, for Sluice's searching regexp matchers."""
    return f"^(?:{pattern})$"


def host_expr(hostname: str) -> Matcher:
    """The matcher for one (intersected) hostname."""
    if hostname.startswith("*."):
        return Matcher("Host", ("*" + hostname,))  # "**.d": one or more labels
    return Matcher("Host", (hostname,))


def path_expr(path: PathMatch) -> Expr:
    value = path.value
    if path.type == "Exact":
        return Matcher("Path", (value,))
    if path.type == "RegularExpression":
        return Matcher("PathRegexp", (full_match(value),))
    stem = value.rstrip("/")
    if not stem:
        return Matcher("PathPrefix", ("/",))
    return Or(Matcher("Path", (stem,)), Matcher("PathPrefix", (stem + "/",)))


def unique_headers(match: HTTPMatch) -> tuple[ValueMatch, ...]:
    """Header matches, the first of each case-insensitive name only."""
    seen: set[str] = set()
    kept = []
    for header in match.headers:
        name = header.name.lower()
        if name not in seen:
            seen.add(name)
            kept.append(header)
    return tuple(kept)


def unique_query(match: HTTPMatch) -> tuple[ValueMatch, ...]:
    """Query-param matches, the first of each (case-sensitive) name only."""
    seen: set[str] = set()
    kept = []
    for param in match.query_params:
        if param.name not in seen:
            seen.add(param.name)
            kept.append(param)
    return tuple(kept)


def match_parts(match: HTTPMatch) -> list[Expr]:
    """The matchers of ``match`` but the hostname, to be ANDed."""
    parts: list[Expr] = [path_expr(match.path)]
    if match.method:
        parts.append(Matcher("Method", (match.method,)))
    for header in unique_headers(match):
        if header.type == "RegularExpression":
            parts.append(Matcher("HeaderRegexp", (header.name, full_match(header.value))))
        else:
            parts.append(Matcher("Header", (header.name, header.value)))
    for param in unique_query(match):
        if param.type == "RegularExpression":
            parts.append(Matcher("QueryRegexp", (param.name, full_match(param.value))))
        else:
            parts.append(Matcher("Query", (param.name, param.value)))
    return parts


def match_expr(match: HTTPMatch, hostname: str = "") -> Expr:
    """``match`` on ``hostname`` ("" = any host) as one expression."""
    parts = match_parts(match)
    if hostname:
        parts.insert(0, host_expr(hostname))
    expr = parts[0]
    for part in parts[1:]:
        expr = And(expr, part)  # left-nested: renders without parentheses
    return expr


def rule_text(hostname: str, match: HTTPMatch) -> str:
    """The Sluice rule for ``match`` on ``hostname`` ("" = any host)."""
    return render(match_expr(match, hostname))


# --- precedence -------------------------------------------------------------------------


def path_length(path: PathMatch) -> int:
    if path.type == "PathPrefix":
        return len(path.value.rstrip("/")) or 1
    return len(path.value)


def host_digit(hostname: str) -> int:
    """Exact hostnames above wildcards, longer above shorter, "any host" last."""
    length = min(len(hostname), MAX_HOST)
    if not hostname:
        return 0
    if hostname.startswith("*."):
        return length
    return MAX_HOST + 1 + length


def precedence(hostname: str, match: HTTPMatch) -> tuple[int, ...]:
    """The digits above the route rank, most significant first (see the module doc)."""
    digits = (
        TIERS.get(match.path.type, 0),
        path_length(match.path),
        int(bool(match.method)),
        len(unique_headers(match)),
        len(unique_query(match)),
        host_digit(hostname),
    )
    return tuple(min(d, radix - 1) for d, (_, radix) in zip(digits, _HIGH, strict=True))


def priority(hostname: str, match: HTTPMatch, *, rank: int, route_count: int, position: int) -> int:
    """The router priority of ``match`` (the ``position``-th match of its route) on ``hostname``.

    ``rank`` is the route's place in ``route_ranks`` among ``route_count`` routes.
    """
    if not 0 <= rank < route_count:
        raise ValueError(f"rank {rank} outside 0..{route_count - 1}")
    value = 0
    for digit, (_, radix) in zip(precedence(hostname, match), _HIGH, strict=True):
        value = value * radix + digit
    value = value * route_count + (route_count - 1 - rank)
    value = value * MAX_MATCHES + (MAX_MATCHES - 1 - min(position, MAX_MATCHES - 1))
    return value + 1


def route_ranks(routes: Iterable[HTTPRoute]) -> dict[tuple[str, str], int]:
    """Each route's place in the spec's cross-route order, 0 first, by (namespace, name).

    Oldest ``creationTimestamp`` first, then ``"{namespace}/{name}"`` in
    alphabetical order (spec §2.5 items 6 and 7; the string, not the pair, is
    compared). Timestamps compare as instants, so ``...:05Z`` and
    ``...:05.5+00:00`` order correctly; one that does not parse counts as newest.
    """
    ordered = sorted(
        routes, key=lambda r: (_instant(r.meta.created), f"{r.meta.namespace}/{r.meta.name}")
    )
    return {(r.meta.namespace, r.meta.name): i for i, r in enumerate(ordered)}


def _instant(created: str) -> float:
    try:
        moment = datetime.fromisoformat(created)
    except ValueError:
        return math.inf
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
