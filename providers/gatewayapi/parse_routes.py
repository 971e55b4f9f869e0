"""HTTPRoute, TCPRoute, UDPRoute and TLSRoute manifests -> ``objects.HTTPRoute`` / ``L4Route``.

Fills the CRD defaults (parentRef group ``gateway.networking.k8s.io`` / kind
Gateway / the route's namespace, one rule matching ``PathPrefix /`` when
``rules`` is absent, a match of ``PathPrefix /`` when ``matches`` is absent,
header and query match type Exact) and checks the CEL rules of
``CommonRouteSpec.parentRefs``, ``HTTPRouteSpec.rules``, ``HTTPRouteRule``,
``HTTPPathMatch`` and ``HTTPRouteTimeouts`` with their upstream messages
(``apis/v1/httproute_types.go``, ``shared_types.go``, ``tlsroute_types.go``,
``tcproute_types.go``; spec notes §1.4 to §1.7). Per-version limits: v1
TCPRoute, UDPRoute and TLSRoute hold exactly one rule, ``v1alpha2`` ones up to
16; v1 and ``v1alpha3`` TLSRoutes require ``hostnames``.

Normalisation kept here so translators need not repeat it: a later header
match whose name equals an earlier one ignoring case is dropped ("only the
first entry with an equivalent name MUST be considered"). Unknown match types
and methods, and regular expressions Sluice's Go-regexp engine refuses, are
problems (``UnsupportedValue``), not errors.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.config.go_regexp import GoRegexpError, compile_go
from providers.gatewayapi.objects import (
    GROUP,
    HTTPFilter,
    HTTPMatch,
    HTTPRoute,
    HTTPRule,
    L4Route,
    L4Rule,
    Meta,
    ParentRef,
    PathMatch,
    Retry,
    ValueMatch,
)
from providers.gatewayapi.parse_fields import GROUP as GROUP_PATTERN
from providers.gatewayapi.parse_fields import (
    HEADER_NAME,
    KIND,
    NAMESPACE,
    SECTION_NAME,
    Context,
    Invalid,
    checked,
    hostname,
    items,
    join,
    matches,
    opt_duration,
    opt_int,
    opt_list,
    opt_map,
    opt_str,
    req_map,
    req_str,
    str_list,
    unique_by,
)
from providers.gatewayapi.parse_filters import METHODS, backend_ref, parse_filters

PATH_TYPES = ("Exact", "PathPrefix", "RegularExpression")
VALUE_TYPES = ("Exact", "RegularExpression")
_FOR = "when type one of ['Exact', 'PathPrefix']"
# HTTPPathMatch CEL rules on Exact and PathPrefix values, in upstream order.
_PATH_RULES: tuple[tuple[Callable[[str], bool], str], ...] = (
    (lambda v: v.startswith("/"), f"value must be an absolute path and start with '/' {_FOR}"),
    (lambda v: "//" not in v, f"must not contain '//' {_FOR}"),
    (lambda v: "/./" not in v, f"must not contain '/./' {_FOR}"),
    (lambda v: "/../" not in v, f"must not contain '/../' {_FOR}"),
    (lambda v: "%2f" not in v, f"must not contain '%2f' {_FOR}"),
    (lambda v: "%2F" not in v, f"must not contain '%2F' {_FOR}"),
    (lambda v: "#" not in v, f"must not contain '#' {_FOR}"),
    (lambda v: not v.endswith("/.."), f"must not end with '/..' {_FOR}"),
    (lambda v: not v.endswith("/."), f"must not end with '/.' {_FOR}"),
)
_PATH_CHARS = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$")
_ONE_PREFIX = "path.replacePrefixMatch, exactly one PathPrefix match must be specified"
# HTTPRouteRule CEL rules on ReplacePrefixMatch: (backendRef filters?, filter type, message).
_PREFIX_RULES = (
    (False, "RequestRedirect", f"When using RequestRedirect filter with {_ONE_PREFIX}"),
    (False, "URLRewrite", f"When using URLRewrite filter with {_ONE_PREFIX}"),
    (
        True,
        "RequestRedirect",
        f"Within backendRefs, when using RequestRedirect filter with {_ONE_PREFIX}",
    ),
    (True, "URLRewrite", f"Within backendRefs, When using URLRewrite filter with {_ONE_PREFIX}"),
)


# --- shared parts ------------------------------------------------------------------------


def parent_refs(spec: Mapping[str, Any], ctx: Context) -> tuple[ParentRef, ...]:
    """``spec.parentRefs`` with the "distinct parentRefs" CEL rules (experimental wording)."""
    refs = []
    seen: list[tuple[tuple[str, str, str, str], str, int]] = []
    for entry, at in items(spec, "parentRefs", "spec", max_items=32):
        group = opt_str(entry, "group", at, pattern=GROUP_PATTERN, max_len=253)
        group = GROUP if group is None else group
        kind = opt_str(entry, "kind", at, pattern=KIND, max_len=63) or "Gateway"
        namespace = opt_str(entry, "namespace", at, pattern=NAMESPACE, max_len=63) or ""
        name = req_str(entry, "name", at, max_len=253)
        section = opt_str(entry, "sectionName", at, pattern=SECTION_NAME, max_len=253) or ""
        port = opt_int(entry, "port", at, lo=1, hi=65535) or 0
        # CEL compares namespaces as written: absent and the route's own are different.
        parent = (group, kind, name, namespace)
        for other, other_section, other_port in seen:
            if other != parent:
                continue
            checked(
                (bool(section), bool(port)) == (bool(other_section), bool(other_port)),
                at,
                "sectionName or port must be specified when parentRefs includes 2 or more "
                "references to the same parent",
            )
            checked(
                (section, port) != (other_section, other_port),
                at,
                "sectionName or port must be unique when parentRefs includes 2 or more "
                "references to the same parent",
            )
        seen.append((parent, section, port))
        refs.append(ParentRef(name, namespace or ctx.namespace, group, kind, section, port))
    return tuple(refs)


def _hostnames(spec: Mapping[str, Any], *, min_items: int = 0, max_items: int) -> tuple[str, ...]:
    found = opt_list(spec, "hostnames", "spec", min_items=min_items, max_items=max_items)
    if found is None:
        checked(not min_items, "spec.hostnames", "required value")
        return ()
    names = str_list(spec, "hostnames", "spec")
    return tuple(hostname(h, f"spec.hostnames[{i}]") for i, h in enumerate(names))


def _rule_names(entries: list[tuple[Mapping[str, Any], str]]) -> tuple[str, ...]:
    names = []
    for entry, at in entries:
        name = opt_str(entry, "name", at, pattern=SECTION_NAME, max_len=253) or ""
        checked(
            not name or name not in names,
            join(at, "name"),
            "Rule name must be unique within the route",
        )
        names.append(name)
    return tuple(names)


# --- L4 routes ---------------------------------------------------------------------------


def parse_l4_route(
    kind: str, version: str, doc: Mapping[str, Any], meta: Meta, ctx: Context
) -> L4Route:
    spec = req_map(doc, "spec", "")
    parents = parent_refs(spec, ctx)
    hostnames: tuple[str, ...] = ()
    if kind == "TLSRoute":
        if version == "v1":
            hostnames = _hostnames(spec, min_items=1, max_items=4096)
            for i, host in enumerate(hostnames):
                checked(not _is_ip(host), f"spec.hostnames[{i}]", "Hostnames cannot contain an IP")
        else:
            hostnames = _hostnames(spec, min_items=int(version == "v1alpha3"), max_items=16)
    entries = items(spec, "rules", "spec", min_items=1, max_items=1 if version == "v1" else 16)
    names = _rule_names(entries)
    rules = tuple(
        L4Rule(
            backend_refs=tuple(
                backend_ref(ref, ref_at, ctx)
                for ref, ref_at in items(entry, "backendRefs", at, min_items=1, max_items=16)
            ),
            name=name,
        )
        for (entry, at), name in zip(entries, names, strict=True)
    )
    return L4Route(kind=kind, meta=meta, parent_refs=parents, rules=rules, hostnames=hostnames)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# --- HTTPRoute ---------------------------------------------------------------------------


def parse_http_route(doc: Mapping[str, Any], meta: Meta, ctx: Context) -> HTTPRoute:
    spec = req_map(doc, "spec", "")
    parents = parent_refs(spec, ctx)
    hostnames = _hostnames(spec, max_items=16)
    if opt_list(spec, "rules", "spec", min_items=1, max_items=16) is None:
        return HTTPRoute(meta=meta, parent_refs=parents, hostnames=hostnames)
    entries = items(spec, "rules", "spec")
    names = _rule_names(entries)
    rules = tuple(
        _http_rule(entry, at, name, ctx) for (entry, at), name in zip(entries, names, strict=True)
    )
    checked(
        sum(len(rule.matches) for rule in rules) <= 128,
        "spec.rules",
        "While 16 rules and 64 matches per rule are allowed, the total number of matches "
        "across all rules in a route must be less than 128",
    )
    return HTTPRoute(meta=meta, parent_refs=parents, hostnames=hostnames, rules=rules)


def _http_rule(rule: Mapping[str, Any], at: str, name: str, ctx: Context) -> HTTPRule:
    matches = tuple(
        _match(entry, entry_at, ctx) for entry, entry_at in items(rule, "matches", at, max_items=64)
    ) or (HTTPMatch(),)
    filters = parse_filters(rule, at, ctx)
    backend_refs = []
    for ref, ref_at in items(rule, "backendRefs", at, max_items=16):
        backend = backend_ref(ref, ref_at, ctx)
        backend_refs.append(dataclasses.replace(backend, filters=parse_filters(ref, ref_at, ctx)))
    checked(
        not (backend_refs and any(f.type == "RequestRedirect" for f in filters)),
        at,
        "RequestRedirect filter must not be used together with backendRefs",
    )
    one_prefix = len(matches) == 1 and matches[0].path.type == "PathPrefix"
    backend_filters = [f for ref in backend_refs for f in ref.filters]
    for in_backends, kind, message in _PREFIX_RULES:
        scope = backend_filters if in_backends else filters
        checked(one_prefix or not _replaces_prefix(scope, kind), at, message)
    request, backend_request, retry = _timeouts_and_retry(rule, at)
    return HTTPRule(
        matches=matches,
        filters=filters,
        backend_refs=tuple(backend_refs),
        name=name,
        request_timeout=request,
        backend_request_timeout=backend_request,
        retry=retry,
    )


def _replaces_prefix(filters: Sequence[HTTPFilter], kind: str) -> bool:
    for f in filters:
        modifier = f.request_redirect if kind == "RequestRedirect" else f.url_rewrite
        path = None if f.type != kind or modifier is None else modifier.path
        if path is not None and path.type == "ReplacePrefixMatch":
            return True
    return False


def _match(entry: Mapping[str, Any], at: str, ctx: Context) -> HTTPMatch:
    path = PathMatch()
    found = opt_map(entry, "path", at)
    if found is not None:
        path_at = join(at, "path")
        kind = opt_str(found, "type", path_at) or "PathPrefix"
        value = opt_str(found, "value", path_at, max_len=1024)
        path = PathMatch(type=kind, value="/" if value is None else value)
        if kind in ("Exact", "PathPrefix"):
            for holds, message in _PATH_RULES:
                checked(holds(path.value), join(path_at, "value"), message)
            checked(
                matches(_PATH_CHARS, path.value),
                join(path_at, "value"),
                "must only contain valid characters (matching "
                f"{_PATH_CHARS.pattern}) for types ['Exact', 'PathPrefix']",
            )
        elif kind == "RegularExpression":
            _regexp(path.value, join(path_at, "value"), ctx)
        else:
            ctx.unsupported(join(path_at, "type"), kind, PATH_TYPES)
    method = opt_str(entry, "method", at) or ""
    if method and method not in METHODS:
        ctx.unsupported(join(at, "method"), method, METHODS)
    return HTTPMatch(
        path=path,
        headers=_value_matches(entry, "headers", at, 4096, ctx, fold_case=True),
        query_params=_value_matches(entry, "queryParams", at, 1024, ctx, fold_case=False),
        method=method,
    )


def _value_matches(
    entry: Mapping[str, Any], key: str, at: str, max_len: int, ctx: Context, *, fold_case: bool
) -> tuple[ValueMatch, ...]:
    entries = items(entry, key, at, max_items=16)
    out: list[ValueMatch] = []
    for match, match_at in entries:
        name = req_str(match, "name", match_at, pattern=HEADER_NAME, max_len=256)
        value = ctx.header_value(
            join(match_at, "value"), req_str(match, "value", match_at, max_len=max_len)
        )
        kind = opt_str(match, "type", match_at) or "Exact"
        if kind == "RegularExpression":
            _regexp(value, join(match_at, "value"), ctx)
        elif kind != "Exact":
            ctx.unsupported(join(match_at, "type"), kind, VALUE_TYPES)
        if fold_case and any(m.name.lower() == name.lower() for m in out):
            continue
        out.append(ValueMatch(name=name, value=value, type=kind))
    unique_by(entries, "name", "name")
    return tuple(out)


def _regexp(pattern: str, at: str, ctx: Context) -> None:
    try:
        compile_go(pattern)
    except GoRegexpError as exc:
        ctx.problem(at, f"unsupported regular expression: {exc}")


def _timeouts_and_retry(
    rule: Mapping[str, Any], at: str
) -> tuple[float | None, float | None, Retry | None]:
    request = backend_request = None
    timeouts = opt_map(rule, "timeouts", at)
    if timeouts is not None:
        timeouts_at = join(at, "timeouts")
        request = opt_duration(timeouts, "request", timeouts_at)
        backend_request = opt_duration(timeouts, "backendRequest", timeouts_at)
        checked(
            request is None
            or backend_request is None
            or request == 0
            or backend_request <= request,
            timeouts_at,
            "backendRequest timeout cannot be longer than request timeout",
        )
    retry = None
    found = opt_map(rule, "retry", at)
    if found is not None:
        retry_at = join(at, "retry")
        codes = opt_list(found, "codes", retry_at) or []
        seen: list[int] = []
        for i, code in enumerate(codes):
            code_at = f"{join(retry_at, 'codes')}[{i}]"
            if isinstance(code, bool) or not isinstance(code, int) or not 400 <= code <= 599:
                raise Invalid(code_at, f"must be an integer from 400 to 599, got {code!r}")
            checked(code not in seen, code_at, f"duplicate value {code}")
            seen.append(code)
        attempts = opt_int(found, "attempts", retry_at, lo=0)
        retry = Retry(
            codes=tuple(seen),
            attempts=1 if attempts is None else attempts,
            backoff=opt_duration(found, "backoff", retry_at),
        )
    return request, backend_request, retry
