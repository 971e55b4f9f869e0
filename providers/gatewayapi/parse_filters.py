"""HTTPRoute filters and backend references -> ``objects.HTTPFilter`` / ``objects.BackendRef``.

Fills the CRD defaults (backendRef group "" / kind Service / weight 1 / the
route's namespace, redirect ``statusCode`` 302, mirror fraction denominator
100, CORS ``maxAge`` 5) and checks the CEL rules of ``HTTPRouteFilter``,
``HTTPPathModifier``, ``HTTPRequestMirrorFilter``, ``HTTPCORSFilter``,
``Fraction`` and ``BackendObjectReference`` with their upstream messages
(``apis/v1/httproute_types.go``, ``shared_types.go``; spec notes §1.4, §1.5).

Unknown filter types, redirect schemes and status codes and path-modifier
types are problems, not errors: the API docs require ``Accepted=False`` with
``UnsupportedValue`` for them, so the route is kept for its status. So is a
header filter with several actions for one header name, which the type
documentation calls invalid without a CEL rule to refuse it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.gatewayapi.objects import (
    CORS,
    BackendRef,
    ExtensionRef,
    HeaderModifier,
    HTTPFilter,
    Mirror,
    PathModifier,
    Redirect,
    Rewrite,
)
from providers.gatewayapi.parse_fields import (
    GROUP,
    HEADER_NAME,
    KIND,
    NAMESPACE,
    Context,
    Invalid,
    checked,
    hostname,
    items,
    join,
    opt_bool,
    opt_int,
    opt_map,
    opt_str,
    req_int,
    req_map,
    req_str,
    str_list,
    unique_by,
)

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
# Filter type -> the member it requires; ExternalAuth is experimental and not supported.
_MEMBERS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestMirror": "requestMirror",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "CORS": "cors",
    "ExtensionRef": "extensionRef",
}
_ALL_MEMBERS = {**_MEMBERS, "ExternalAuth": "externalAuth"}
_ONCE = ("CORS", "RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite")
_PATH_MODIFIERS = {"ReplaceFullPath": "replaceFullPath", "ReplacePrefixMatch": "replacePrefixMatch"}
_INT32 = 2**31 - 1


def backend_ref(
    ref: Mapping[str, Any], at: str, ctx: Context, *, weighted: bool = True
) -> BackendRef:
    """A ``BackendRef`` (``weighted``) or a ``BackendObjectReference`` (mirror targets)."""
    group = opt_str(ref, "group", at, pattern=GROUP, max_len=253)
    group = "" if group is None else group
    kind = opt_str(ref, "kind", at, pattern=KIND, max_len=63) or "Service"
    name = req_str(ref, "name", at, max_len=253)
    namespace = opt_str(ref, "namespace", at, pattern=NAMESPACE, max_len=63) or ctx.namespace
    port = opt_int(ref, "port", at, lo=1, hi=65535)
    checked(
        port is not None or not (group == "" and kind == "Service"),
        at,
        "Must have port for Service reference",
    )
    weight = opt_int(ref, "weight", at, lo=0, hi=1_000_000) if weighted else None
    return BackendRef(
        name=name,
        namespace=namespace,
        port=port or 0,
        group=group,
        kind=kind,
        weight=1 if weight is None else weight,
    )


def parse_filters(owner: Mapping[str, Any], at: str, ctx: Context) -> tuple[HTTPFilter, ...]:
    """``owner.filters`` (a rule's or a backendRef's), with the list-level CEL rules."""
    entries = items(owner, "filters", at, max_items=16)
    filters = tuple(_filter(entry, entry_at, ctx) for entry, entry_at in entries)
    types = [f.type for f in filters]
    list_at = join(at, "filters")
    checked(
        not ("RequestRedirect" in types and "URLRewrite" in types),
        list_at,
        "May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, "
        "but not both",
    )
    for once in _ONCE:
        checked(types.count(once) <= 1, list_at, f"{once} filter cannot be repeated")
    return filters


def _filter(entry: Mapping[str, Any], at: str, ctx: Context) -> HTTPFilter:
    kind = req_str(entry, "type", at)
    for member_type, member in _ALL_MEMBERS.items():
        present = entry.get(member) is not None
        checked(
            not (present and kind != member_type),
            join(at, member),
            f"filter.{member} must be nil if the filter.type is not {member_type}",
        )
        checked(
            present or kind != member_type,
            at,
            f"filter.{member} must be specified for {member_type} filter.type",
        )
    if kind not in _MEMBERS:
        ctx.unsupported(join(at, "type"), kind, tuple(_MEMBERS))
        return HTTPFilter(type=kind)
    value = req_map(entry, _MEMBERS[kind], at)
    value_at = join(at, _MEMBERS[kind])
    if kind == "RequestHeaderModifier":
        return HTTPFilter(kind, request_header_modifier=_header_modifier(value, value_at, ctx))
    if kind == "ResponseHeaderModifier":
        return HTTPFilter(kind, response_header_modifier=_header_modifier(value, value_at, ctx))
    if kind == "RequestRedirect":
        return HTTPFilter(kind, request_redirect=_redirect(value, value_at, ctx))
    if kind == "URLRewrite":
        return HTTPFilter(kind, url_rewrite=_rewrite(value, value_at, ctx))
    if kind == "RequestMirror":
        return HTTPFilter(kind, request_mirror=_mirror(value, value_at, ctx))
    if kind == "CORS":
        return HTTPFilter(kind, cors=_cors(value, value_at))
    return HTTPFilter(
        kind,
        extension_ref=ExtensionRef(
            group=req_str(value, "group", value_at, pattern=GROUP, min_len=0, max_len=253),
            kind=req_str(value, "kind", value_at, pattern=KIND, max_len=63),
            name=req_str(value, "name", value_at, max_len=253),
        ),
    )


def _header_modifier(value: Mapping[str, Any], at: str, ctx: Context) -> HeaderModifier:
    set_ = _headers(value, "set", at, ctx)
    add = _headers(value, "add", at, ctx)
    remove = str_list(value, "remove", at, max_items=16, pattern=HEADER_NAME, unique=True)
    seen: set[str] = set()
    for name in [n for n, _ in set_] + [n for n, _ in add] + list(remove):
        if name.lower() in seen:
            ctx.problem(at, f'several actions for header "{name}": only one action per name')
            break
        seen.add(name.lower())
    return HeaderModifier(set=set_, add=add, remove=remove)


def _headers(
    value: Mapping[str, Any], key: str, at: str, ctx: Context
) -> tuple[tuple[str, str], ...]:
    entries = items(value, key, at, max_items=16)
    out = tuple(
        (
            req_str(header, "name", header_at, pattern=HEADER_NAME, max_len=256),
            ctx.header_value(
                join(header_at, "value"), req_str(header, "value", header_at, max_len=4096)
            ),
        )
        for header, header_at in entries
    )
    unique_by(entries, "name", "header name")
    return out


def _path_modifier(value: Mapping[str, Any], at: str, ctx: Context) -> PathModifier | None:
    found = opt_map(value, "path", at)
    if found is None:
        return None
    at = join(at, "path")
    kind = req_str(found, "type", at)
    for member_type, member in _PATH_MODIFIERS.items():
        present = opt_str(found, member, at, max_len=1024) is not None
        checked(
            present or kind != member_type,
            at,
            f"{member} must be specified when type is set to '{member_type}'",
        )
        checked(
            not present or kind == member_type,
            at,
            f"type must be '{member_type}' when {member} is set",
        )
    if kind not in _PATH_MODIFIERS:
        ctx.unsupported(join(at, "type"), kind, tuple(_PATH_MODIFIERS))
        return PathModifier(type=kind, value="")
    return PathModifier(type=kind, value=str(found[_PATH_MODIFIERS[kind]]))


def _redirect(value: Mapping[str, Any], at: str, ctx: Context) -> Redirect:
    scheme = opt_str(value, "scheme", at)
    if scheme is not None and scheme not in ("http", "https"):
        ctx.unsupported(join(at, "scheme"), scheme, ("http", "https"))
    host = opt_str(value, "hostname", at)
    if host is not None:
        hostname(host, join(at, "hostname"), precise=True)
    path = _path_modifier(value, at, ctx)
    port = opt_int(value, "port", at, lo=1, hi=65535)
    status = opt_int(value, "statusCode", at)
    if status is not None and status not in (301, 302, 303, 307, 308):
        ctx.unsupported(join(at, "statusCode"), status, ("301", "302", "303", "307", "308"))
    return Redirect(
        scheme=scheme or "",
        hostname=host or "",
        path=path,
        port=port or 0,
        status_code=302 if status is None else status,
    )


def _rewrite(value: Mapping[str, Any], at: str, ctx: Context) -> Rewrite:
    host = opt_str(value, "hostname", at)
    if host is not None:
        hostname(host, join(at, "hostname"), precise=True)
    return Rewrite(hostname=host or "", path=_path_modifier(value, at, ctx))


def _mirror(value: Mapping[str, Any], at: str, ctx: Context) -> Mirror:
    backend = backend_ref(
        req_map(value, "backendRef", at), join(at, "backendRef"), ctx, weighted=False
    )
    percent = opt_int(value, "percent", at, lo=0, hi=100)
    fraction = opt_map(value, "fraction", at)
    checked(
        percent is None or fraction is None,
        at,
        "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter",
    )
    if fraction is not None:
        fraction_at = join(at, "fraction")
        numerator = req_int(fraction, "numerator", fraction_at, lo=0, hi=_INT32)
        denominator = opt_int(fraction, "denominator", fraction_at, lo=1, hi=_INT32)
        denominator = 100 if denominator is None else denominator
        checked(
            numerator <= denominator,
            fraction_at,
            "numerator must be less than or equal to denominator",
        )
        return Mirror(backend=backend, numerator=numerator, denominator=denominator)
    return Mirror(backend=backend, numerator=100 if percent is None else percent)


def _cors(value: Mapping[str, Any], at: str) -> CORS:
    origins = str_list(value, "allowOrigins", at, max_items=64, unique=True)
    _alone(origins, at, "allowOrigins", "AllowOrigins cannot contain '*' alongside other origins")
    methods = str_list(value, "allowMethods", at, max_items=9, unique=True)
    for i, method in enumerate(methods):
        if method not in (*METHODS, "*"):
            raise Invalid(
                f"{join(at, 'allowMethods')}[{i}]",
                f'unsupported value "{method}": supported values: {", ".join(METHODS)}, *',
            )
    _alone(methods, at, "allowMethods", "AllowMethods cannot contain '*' alongside other methods")
    headers = str_list(value, "allowHeaders", at, max_items=64, pattern=HEADER_NAME, unique=True)
    # The upstream message says "methods" here too.
    _alone(headers, at, "allowHeaders", "AllowHeaders cannot contain '*' alongside other methods")
    expose = str_list(value, "exposeHeaders", at, max_items=64, pattern=HEADER_NAME, unique=True)
    max_age = opt_int(value, "maxAge", at, lo=1, hi=_INT32)
    return CORS(
        allow_origins=origins,
        allow_credentials=bool(opt_bool(value, "allowCredentials", at)),
        allow_methods=methods,
        allow_headers=headers,
        expose_headers=expose,
        max_age=5 if max_age is None else max_age,
    )


def _alone(values: tuple[str, ...], at: str, key: str, message: str) -> None:
    checked(not ("*" in values and len(values) > 1), join(at, key), message)
