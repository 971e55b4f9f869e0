"""One HTTPRoute, attached to some listeners, as Sluice routers, services and middlewares.

``translate_http_route`` turns a route into file-dialect mappings (what YAML
would load into, so the normal loader and validator run on them) plus the
problems its parent status reports. It owns:

* Routers: one per (attachment, rule, match, intersected hostname); the rule
  text and the priority that encodes the spec's whole precedence order come
  from ``httproute_rules`` (its docstring documents the encoding). One router
  per hostname, not one per match with the hostnames ORed, because hostname
  specificity is a precedence criterion that depends on which hostname
  matched. HTTPS listeners get ``tls: {}``.
* Services (spec §2.8): a rule's backendRefs become one ``loadBalancer`` per
  usable backendRef (``http://ip:port`` servers) under a ``weighted`` service;
  weight 0 is left out; a backendRef that does not resolve keeps its weight
  and answers 500 for its share; a Service with no ready endpoint is a
  load balancer without servers, which answers 503. A rule with no
  backendRefs, or only weight 0, answers 500. A single remaining member is
  routed to directly, without the weighted layer.
* Middlewares: the rule's filters (``httproute_filters``), then, when a single
  backendRef takes all traffic, that backendRef's own filters. A rule's
  timeouts and retry (spec §2.9) wrap them: ``gatewayTimeouts`` first, so
  ``request`` bounds everything after it, retries included, and
  ``gatewayRetry`` last, right before the service, so each try goes through
  the weighted choice (and a shared backendRef's own filters) again; the
  timeouts middleware hands its per-try ``backendRequest`` bound to that
  retry (``middleware/http/gateway_policy.py``).

Needs from the runtime, not in the Traefik dialect (see ``STATUS_SERVICE``
and ``HTTPTranslation``): a ``status`` service kind answering a fixed code,
``middlewares`` on a weighted service's member (backendRef-level filters when
several backendRefs share the traffic). ``HTTPTranslation.policies`` still
lists each router's timeouts and retry, which the middlewares above apply.

Backends speak HTTP/1.1: a Service port with ``appProtocol``
``kubernetes.io/h2c`` or ``kubernetes.io/wss`` is reported
``UnsupportedProtocol`` and treated like any unresolvable backendRef (500 for
its share) rather than sent a protocol it did not ask for.

Names: ``httproute-<namespace>-<name>-<hash>`` then a suffix (``-a0-r1-m0-h0``
for routers, ``-r1`` for a rule's weighted service, ``-r1-b0`` for a
backendRef, ``-r1-f2-cors`` for a filter, ``-r1-timeouts`` and ``-r1-retry``
for the rule's policy, ``-500`` for the error answer). The
hash of the exact namespace and name keeps two routes apart when their
names only differ in characters the name cannot hold, or in where a dash
falls (``a-b/c`` and ``a/b-c``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.config.rule import RuleSyntaxError, parse, render
from providers.gatewayapi.backends import Resolved, Unresolved
from providers.gatewayapi.httproute_filters import (
    BuiltFilters,
    FilterContext,
    Problem,
    build_filters,
    server_url,
)
from providers.gatewayapi.httproute_rules import host_expr, match_expr, priority, rule_text
from providers.gatewayapi.objects import BackendRef, HTTPFilter, HTTPRoute, HTTPRule, Retry

__all__ = [
    "STATUS_SERVICE",
    "Attachment",
    "HTTPTranslation",
    "RulePolicy",
    "object_name",
    "translate_http_route",
]

Resolver = Callable[[BackendRef], Resolved | Unresolved]

# The service kind the runtime needs for fixed answers (see the module doc).
STATUS_SERVICE = "status"

UNSUPPORTED_APP_PROTOCOLS = {
    "kubernetes.io/h2c": "HTTP/2 over cleartext",
    "kubernetes.io/wss": "WebSocket over TLS",
}

_UNSAFE = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True, slots=True)
class Attachment:
    """One listener a route attached to, as ``translate.py`` found it."""

    entry_point: str  # the Sluice entry point serving the listener
    hostnames: tuple[str, ...]  # intersected hostnames (spec §2.3); () = any host
    listener_port: int  # redirects default to it
    tls: bool  # HTTPS listener
    # Hostnames of more specific listeners on the same port: their requests
    # are theirs alone (listener isolation), so this listener's routes skip them.
    excluded: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RulePolicy:
    """A rule's timeouts and retry (spec §2.9), for the runtime to apply per router.

    ``request_timeout`` bounds the whole exchange, retries included, and
    ``backend_request_timeout`` each try; both answer 504 on expiry; ``0``
    disables one, ``None`` leaves the default.
    """

    request_timeout: float | None = None
    backend_request_timeout: float | None = None
    retry: Retry | None = None


@dataclass(slots=True)
class HTTPTranslation:
    routers: dict[str, dict[str, Any]] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    middlewares: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (condition type, reason, message) for every parent's status, each once.
    problems: list[Problem] = field(default_factory=list)
    # Router name -> its rule's timeouts and retry, for rules that set any.
    policies: dict[str, RulePolicy] = field(default_factory=dict)


def object_name(kind: str, namespace: str, name: str) -> str:
    """``<kind>-<namespace>-<name>-<hash>`` in ``[a-z0-9-]``, distinct per object."""
    digest = hashlib.sha256(f"{kind}/{namespace}/{name}".encode()).hexdigest()[:8]
    parts = (_UNSAFE.sub("-", part.lower()).strip("-") for part in (kind, namespace, name))
    return "-".join([*(p for p in parts if p), digest])


def translate_http_route(
    route: HTTPRoute,
    attachments: Sequence[Attachment],
    resolve: Resolver,
    *,
    rank: int = 0,
    route_count: int = 1,
    extensions: Collection[tuple[str, str]] = (),
) -> HTTPTranslation:
    """Translate ``route`` for its ``attachments``; see the module doc.

    ``resolve`` answers a backendRef written in this route (ReferenceGrants
    included); ``rank``/``route_count`` place the route in the cross-route
    order (``httproute_rules.route_ranks``); ``extensions`` are the
    ``(namespace, name)`` of the ``sluice.dev`` Middleware objects that exist.
    """
    out = HTTPTranslation()
    base = object_name("httproute", route.meta.namespace, route.meta.name)
    dropped: list[str] = []
    position = 0
    for index, rule in enumerate(route.rules):
        first = position
        position += len(rule.matches)
        error = _unusable_match(rule)
        if error is not None:
            dropped.append(f"Dropped Rule {rule.name or index}: {error}")
            continue
        build = _Rule(out, base, index, rule, route.meta.namespace, resolve, extensions)
        policy = _policy(rule)
        before, after = _policy_middlewares(out, build.prefix, policy)
        for a, attachment in enumerate(attachments):
            middlewares, service = build.for_listener(attachment)
            middlewares = [*before, *middlewares, *after]
            hosts = attachment.hostnames or ("",)
            for m, match in enumerate(rule.matches):
                for h, host in enumerate(hosts):
                    name = f"{base}-a{a}-r{index}-m{m}"
                    name += f"-h{h}" if attachment.hostnames else ""
                    router: dict[str, Any] = {
                        "rule": _isolated(rule_text(host, match), attachment.excluded),
                        "priority": priority(
                            host, match, rank=rank, route_count=route_count, position=first + m
                        ),
                        "entryPoints": [attachment.entry_point],
                        "service": service,
                    }
                    if middlewares:
                        router["middlewares"] = list(middlewares)
                    if attachment.tls:
                        router["tls"] = {}
                    out.routers[name] = router
                    if policy is not None:
                        out.policies[name] = policy
    if dropped:
        # One condition per type: every dropped rule goes in one message.
        kind = "Accepted" if len(dropped) == len(route.rules) else "PartiallyInvalid"
        out.problems.append((kind, "UnsupportedValue", "; ".join(dropped)))
    out.problems[:] = list(dict.fromkeys(out.problems))
    return out


def _isolated(rule: str, excluded: tuple[str, ...]) -> str:
    """``rule`` that does not take the hosts of more specific listeners."""
    if not excluded:
        return rule
    others = [render(host_expr(host)) for host in excluded]
    return f"({rule}) && !({' || '.join(others)})"


def _unusable_match(rule: HTTPRule) -> str | None:
    """Why a match of ``rule`` cannot become a Sluice rule (a bad regexp), or None."""
    for m, match in enumerate(rule.matches):
        try:
            parse(render(match_expr(match)))
        except RuleSyntaxError as exc:
            return f"match {m}: {exc.message}"
    return None


def _policy(rule: HTTPRule) -> RulePolicy | None:
    if rule.request_timeout is None and rule.backend_request_timeout is None and not rule.retry:
        return None
    return RulePolicy(rule.request_timeout, rule.backend_request_timeout, rule.retry)


def _policy_middlewares(
    out: HTTPTranslation, prefix: str, policy: RulePolicy | None
) -> tuple[list[str], list[str]]:
    """Define the rule's ``gatewayTimeouts``/``gatewayRetry``; (names first, names last)."""
    if policy is None:
        return [], []
    before: list[str] = []
    after: list[str] = []
    # None (unset) and 0 (disabled) both mean no bound: Sluice's default has none.
    options = {
        key: value
        for key, value in (
            ("request", policy.request_timeout),
            ("backendRequest", policy.backend_request_timeout),
        )
        if value
    }
    if options:
        name = f"{prefix}-timeouts"
        out.middlewares[name] = {"gatewayTimeouts": options}
        before.append(name)
    retry = policy.retry
    if retry is not None and retry.attempts > 0:  # an explicit 0 disables retries
        spec: dict[str, Any] = {"codes": list(retry.codes), "attempts": retry.attempts}
        if retry.backoff:
            spec["backoff"] = retry.backoff
        name = f"{prefix}-retry"
        out.middlewares[name] = {"gatewayRetry": spec}
        after.append(name)
    return before, after


class _Rule:
    """One rule's filters and backends, resolved once and built once per listener kind."""

    def __init__(
        self,
        out: HTTPTranslation,
        base: str,
        index: int,
        rule: HTTPRule,
        namespace: str,
        resolve: Resolver,
        extensions: Collection[tuple[str, str]],
    ) -> None:
        self.out = out
        self.base = base
        self.prefix = f"{base}-r{index}"
        self.rule = rule
        self.namespace = namespace
        self.resolve = resolve
        self.extensions = extensions
        # ReplacePrefixMatch needs the rule's single PathPrefix match (CEL).
        path = rule.matches[0].path if len(rule.matches) == 1 else None
        self.matched_prefix = path.value if path is not None and path.type == "PathPrefix" else ""
        self.results = [self._resolve(ref) for ref in rule.backend_refs]
        self.built: dict[tuple[int, str], tuple[list[str], str]] = {}

    def _resolve(self, ref: BackendRef) -> Resolved | Unresolved:
        result = self.resolve(ref)
        if isinstance(result, Resolved) and result.app_protocol in UNSUPPORTED_APP_PROTOCOLS:
            what = UNSUPPORTED_APP_PROTOCOLS[result.app_protocol]
            result = Unresolved(
                "UnsupportedProtocol",
                f"backendRef {ref.namespace}/{ref.name}:{ref.port} has appProtocol "
                f"{result.app_protocol}; Sluice does not speak {what} to backends",
            )
        if isinstance(result, Unresolved):
            self.out.problems.append(("ResolvedRefs", result.reason, result.message))
        return result

    def for_listener(self, attachment: Attachment) -> tuple[list[str], str]:
        """(router middlewares, router service) on a listener of this port and scheme."""
        scheme = "https" if attachment.tls else "http"
        key = (attachment.listener_port, scheme)
        if key not in self.built:
            self.built[key] = self._build(*key)
        return self.built[key]

    def _filters(
        self, filters: Sequence[HTTPFilter], prefix: str, port: int, scheme: str
    ) -> BuiltFilters:
        context = FilterContext(
            prefix=prefix,
            namespace=self.namespace,
            matched_prefix=self.matched_prefix,
            listener_port=port,
            listener_scheme=scheme,
            resolve=self.resolve,
            extensions=self.extensions,
        )
        built = build_filters(filters, context)
        self.out.middlewares.update(built.definitions)
        self.out.problems.extend(built.problems)
        return built

    def _build(self, port: int, scheme: str) -> tuple[list[str], str]:
        rule_filters = self._filters(self.rule.filters, self.prefix, port, scheme)
        if rule_filters.failed:
            return [], self._status(500)
        # (service or status target, weight, member middlewares)
        members: list[tuple[str, int, list[str]]] = []
        redirects = False
        for b, (ref, result) in enumerate(zip(self.rule.backend_refs, self.results, strict=True)):
            if ref.weight <= 0:
                continue
            if isinstance(result, Unresolved):
                members.append((self._status(500), ref.weight, []))
                continue
            name = f"{self.prefix}-b{b}"
            built = self._filters(ref.filters, name, port, scheme)
            if built.failed:
                members.append((self._status(500), ref.weight, []))
                continue
            redirects |= any(f.type == "RequestRedirect" for f in ref.filters)
            servers = [{"url": server_url(ip, p)} for ip, p in result.servers]
            self.out.services[name] = {"loadBalancer": {"servers": servers}}
            members.append((name, ref.weight, built.names))
        if not members:
            # No backendRefs (a redirect answers before this), or all of weight 0.
            return rule_filters.names, self._status(500)
        if len(members) == 1:
            target, _, extra = members[0]
            return rule_filters.names + extra, target
        name = self.prefix + (f"-{scheme}{port}" if redirects else "")
        self.out.services[name] = {"weighted": {"services": _merge_status(members)}}
        return rule_filters.names, name

    def _status(self, code: int) -> str:
        name = f"{self.base}-{code}"
        self.out.services[name] = {STATUS_SERVICE: {"code": code}}
        return name


def _merge_status(members: list[tuple[str, int, list[str]]]) -> list[dict[str, Any]]:
    """Weighted members, the shares answering the same status merged into one."""
    entries: dict[str, dict[str, Any]] = {}
    listed: list[dict[str, Any]] = []
    for target, weight, middlewares in members:
        entry = entries.get(target)
        if entry is not None and not middlewares and "middlewares" not in entry:
            entry["weight"] += weight
            continue
        entry = {"name": target, "weight": weight}
        if middlewares:
            entry["middlewares"] = list(middlewares)
        entries[target] = entry
        listed.append(entry)
    return listed
