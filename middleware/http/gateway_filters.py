"""Gateway API HTTPRoute header filters: RequestHeaderModifier and ResponseHeaderModifier.

The Gateway API translator (``providers/gatewayapi``) turns each header
filter of an HTTPRoute rule or backendRef into one of these middlewares; the
option keys are the filter's own fields (``set``, ``add``, ``remove``).
Semantics are the spec's ``HTTPHeaderFilter`` (``apis/v1/httproute_types.go``;
notes /work/notes/gatewayapi-spec.md section 2.7), not Traefik's ``headers``:

* ``set`` replaces every value of a name with one value;
* ``add`` appends a value to the existing ones, folded into the last line
  with ``,`` as in the spec's example (``my-header: foo,bar,baz``), except
  ``Set-Cookie``, which gets a line of its own since RFC 6265 section 3
  forbids folding it; a name not present yet is added;
* ``remove`` drops every value of a name.

Names are case-insensitive and each may have one action only (the spec calls
anything else invalid, so ``build`` refuses it). Connection-level fields
(``Connection``, ``Content-Length``, ``Transfer-Encoding``, ...) are valid
names in the spec but belong to the exchange's framing: they are left alone,
with a warning at build time. Setting ``Host`` on a request also changes the
host the rest of the chain sees. Everything is encoded in ``build``; a
request costs one pass over its header list per edit.

The path and redirect filters are in ``gateway_redirects``, mirroring in
``gateway_mirror``, CORS in ``gateway_cors``.
"""

from __future__ import annotations

import logging
import re

from gateway.config.model import model
from middleware.contract import BuildContext, Filter, Handler, Request, Response

log = logging.getLogger(__name__)

Pair = tuple[bytes, bytes]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Framing and hop-by-hop fields belong to the connection, not to the
# message a route describes; editing them would break the exchange's framing.
_CONNECTION_FIELDS = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)
_NO_FOLD = frozenset({b"set-cookie"})


@model
class HTTPHeader:
    REQUIRED = ("name",)

    name: str = ""
    value: str = ""


@model
class HeaderModifierOptions:
    set: tuple[HTTPHeader, ...] = ()
    add: tuple[HTTPHeader, ...] = ()
    remove: tuple[str, ...] = ()


class HeaderEdit:
    """A compiled HTTPHeaderFilter, applied to a raw header list in place."""

    __slots__ = ("drop", "sets", "adds")

    def __init__(self, o: HeaderModifierOptions, context: str) -> None:
        seen: dict[bytes, str] = {}

        def claim(option: str, name: str) -> bytes | None:
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"{option}: {name!r} is not a valid header name")
            lname = name.lower().encode("ascii")
            if lname in seen:
                raise ValueError(
                    f"{option}: header {name!r} already has an action ({seen[lname]}); "
                    "the spec allows one action per header name"
                )
            seen[lname] = option
            if lname in _CONNECTION_FIELDS:
                # Valid per the spec, so not an error, but the gateway owns them.
                log.warning("middleware %s: %s: %s is left to the gateway", context, option, name)
                return None
            return lname

        def value(option: str, text: str) -> bytes:
            if any(c in text for c in "\r\n\0"):
                raise ValueError(f"{option}: the value must not contain CR, LF or NUL")
            return text.encode("utf-8")

        sets: list[Pair] = []
        drop: set[bytes] = set()
        for i, h in enumerate(o.set):
            if (lname := claim(f"set[{i}].name", h.name)) is not None:
                drop.add(lname)
                sets.append((h.name.encode("ascii"), value(f"set[{i}].value", h.value)))
        adds: list[tuple[bytes, bytes, bytes]] = []
        for i, h in enumerate(o.add):
            if (lname := claim(f"add[{i}].name", h.name)) is not None:
                adds.append((lname, h.name.encode("ascii"), value(f"add[{i}].value", h.value)))
        for i, name in enumerate(o.remove):
            if (lname := claim(f"remove[{i}]", name)) is not None:
                drop.add(lname)
        self.drop = frozenset(drop)
        self.sets = tuple(sets)
        self.adds = tuple(adds)

    def __bool__(self) -> bool:
        return bool(self.drop or self.adds)

    def apply(self, raw: list[Pair]) -> None:
        drop = self.drop
        if drop:
            for name, _ in raw:
                if name.lower() in drop:
                    raw[:] = [p for p in raw if p[0].lower() not in drop]
                    break
        raw.extend(self.sets)
        for lname, name, value in self.adds:
            last = -1
            if lname not in _NO_FOLD:
                for i in range(len(raw) - 1, -1, -1):
                    if raw[i][0].lower() == lname:
                        last = i
                        break
            if last < 0:
                raw.append((name, value))
            else:
                held, old = raw[last]
                raw[last] = (held, old + b"," + value if old else value)


class _RequestHeaders(Filter):
    __slots__ = ("edit", "host")

    def __init__(self, edit: HeaderEdit) -> None:
        self.edit = edit
        # Setting Host changes where routing-aware code thinks the request goes.
        self.host = next((v for n, v in edit.sets if n.lower() == b"host"), None)

    def request(self, request: Request) -> None:
        self.edit.apply(request.headers.raw)
        if self.host is not None:
            request.host = _without_port(self.host.decode("latin-1").lower())


class _ResponseHeaders(Filter):
    __slots__ = ("edit",)

    def __init__(self, edit: HeaderEdit) -> None:
        self.edit = edit

    def response(self, request: Request, response: Response) -> None:
        self.edit.apply(response.headers.raw)


def _without_port(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1]
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() else host


class GatewayRequestHeaderModifier:
    key = "gatewayRequestHeaderModifier"
    options = HeaderModifierOptions

    def build(self, options: HeaderModifierOptions, next: Handler, context: BuildContext) -> Filter:
        edit = HeaderEdit(options, context.name)
        return _RequestHeaders(edit) if edit else Filter()


class GatewayResponseHeaderModifier:
    key = "gatewayResponseHeaderModifier"
    options = HeaderModifierOptions

    def build(self, options: HeaderModifierOptions, next: Handler, context: BuildContext) -> Filter:
        edit = HeaderEdit(options, context.name)
        return _ResponseHeaders(edit) if edit else Filter()
