"""Path rewriting: ``addPrefix``, ``stripPrefix``, ``stripPrefixRegex``, ``replacePath``
and ``replacePathRegex``, as Traefik v3 does them.

Invariants:

* Rewrites start from the escaped path the client sent (``Request.raw_path``,
  Go's ``URL.RawPath``/``EscapedPath()``) and never touch the query string.
  Prefixes are matched against the decoded path (Go's ``URL.Path``) and cut
  from the escaped one by its encoded length, so ``/a%2Fb`` stays ``/a%2Fb``
  downstream and a prefix ``/a b`` strips ``/a%20b`` (Traefik PR #12863).
* Strings here are "wire text": one character per byte (latin-1), as the
  server hands paths over. Regexes see the UTF-8 reading of those bytes, as
  Go's do, so ``.`` matches one character of ``/café``. They run in linear
  time (``gateway.config.safe_regexp``), as Go's do.
* ``X-Forwarded-Prefix`` and ``X-Replaced-Path`` are added (``Header.Add``),
  never set, as Traefik does: a client's own value stays in front of ours.
  Neither ever carries a control character decoded from ``%0A`` and the like;
  Traefik's Go client would refuse such a header, ours would inject it.
* Traefik forwards an empty path (``/foo`` stripped of ``/foo``) as ``/``;
  so does Sluice, by setting ``/`` (``Request.target`` has no empty form).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote_from_bytes, unquote, unquote_to_bytes

from gateway.config.go_regexp import GoRegexpError
from gateway.config.model import model
from gateway.config.safe_regexp import SafePattern, compile_safe
from middleware.contract import BuildContext, Filter, Handler, Headers, Request, Response
from middleware.http.go_replace import GoReplace

log = logging.getLogger(__name__)

FORWARDED_PREFIX = b"X-Forwarded-Prefix"
REPLACED_PATH = b"X-Replaced-Path"

_HEX2 = re.compile(r"[0-9A-Fa-f]{2}")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What Go's validEncoded(s, encodePath) lets stand in a RawPath unescaped.
_VALID_ENCODED = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/\[\]%]*")
# Besides letters, digits and "-._~", what Go's escape(s, encodePath) leaves alone.
_PATH_SAFE = "/$&+,:;=@"


# -- wire text -----------------------------------------------------------------------


def wire_text(text: str) -> str:
    """Configuration text as wire text: its UTF-8 bytes, one character per byte."""
    return text if text.isascii() else text.encode("utf-8").decode("latin-1")


def go_text(wire: str) -> str:
    """Wire text read as UTF-8, as Go's regexp reads strings (bad bytes kept)."""
    return wire if wire.isascii() else wire.encode("latin-1").decode("utf-8", "surrogateescape")


def from_go_text(text: str) -> str:
    """The inverse of ``go_text``."""
    return text if text.isascii() else text.encode("utf-8", "surrogateescape").decode("latin-1")


def escape_path(wire: str) -> str:
    """Go's ``escape(s, encodePath)``: percent-encode what a path may not hold."""
    return quote_from_bytes(wire.encode("latin-1"), safe=_PATH_SAFE)


def bad_escape(wire: str) -> str | None:
    """The first malformed ``%`` escape (Go's ``PathUnescape`` error), or None."""
    found = _BAD_ESCAPE.search(wire)
    return None if found is None else wire[found.start() : found.start() + 3]


def _decoded(raw: str) -> str:
    """The path with each valid ``%XX`` decoded (Go's ``URL.Path``), as wire text."""
    return unquote(raw, encoding="latin-1") if "%" in raw else raw


def _raw_offset(raw: str, count: int) -> int:
    """The index in ``raw`` just after its first ``count`` decoded bytes."""
    if "%" not in raw:
        return count
    i = 0
    for _ in range(count):
        i += 3 if raw[i] == "%" and _HEX2.match(raw, i + 1) else 1
    return i


def _forwardable(raw: str) -> str:
    """Go's ``EscapedPath()`` for a RawPath ``raw`` whose escapes are well formed.

    ``raw`` itself when it is a valid escaping, else its decoded bytes escaped
    again (a space becomes ``%20``; ``%2F`` stays, since it decodes to a byte
    that is escaped again the same way).
    """
    if not raw:
        return "/"
    if _VALID_ENCODED.fullmatch(raw):
        return raw
    return quote_from_bytes(unquote_to_bytes(raw.encode("latin-1")), safe=_PATH_SAFE)


def _leading_slash(path: str) -> str:
    return path if path.startswith("/") else "/" + path


def _compile(pattern: str, key: str) -> SafePattern:
    try:
        return compile_safe(pattern.strip())
    except GoRegexpError as exc:
        raise ValueError(f"{key}: invalid regular expression {pattern!r}: {exc}") from None


# -- the middlewares ------------------------------------------------------------------


@model
class AddPrefixOptions:
    REQUIRED = ("prefix",)

    prefix: str = ""


class _AddPrefix(Filter):
    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def request(self, request: Request) -> None:
        request.set_path(_leading_slash(self.prefix + request.raw_path))


class AddPrefix:
    key = "addPrefix"
    options = AddPrefixOptions

    def build(self, options: AddPrefixOptions, next: Handler, context: BuildContext) -> Filter:
        if not options.prefix:
            raise ValueError("prefix: cannot be empty")
        # Traefik prepends the prefix to the decoded path, so it is text to escape.
        return _AddPrefix(escape_path(wire_text(options.prefix)))


@model
class StripPrefixOptions:
    prefixes: tuple[str, ...] = ()
    # Deprecated in Traefik v3 and still honoured there; accepted with a warning.
    force_slash: bool | None = None


class _StripPrefix(Filter):
    __slots__ = ("prefixes", "force_slash")

    def __init__(self, prefixes: list[tuple[str, str]], force_slash: bool) -> None:
        self.prefixes = prefixes
        self.force_slash = force_slash

    def request(self, request: Request) -> None:
        raw = request.raw_path
        decoded = _decoded(raw)
        for prefix, header in self.prefixes:
            if decoded.startswith(prefix):
                rest = raw[_raw_offset(raw, len(prefix)) :]
                if self.force_slash:
                    rest = "/" + rest.removeprefix("/")
                request.set_path(_leading_slash(rest))
                request.headers.add(FORWARDED_PREFIX, header)
                return


class StripPrefix:
    key = "stripPrefix"
    options = StripPrefixOptions

    def build(self, options: StripPrefixOptions, next: Handler, context: BuildContext) -> Filter:
        prefixes = []
        for i, prefix in enumerate(options.prefixes):
            if _CONTROL.search(prefix):
                raise ValueError(f"prefixes[{i}]: {prefix!r} holds a control character")
            prefixes.append((wire_text(prefix), wire_text(prefix.strip())))
        if options.force_slash is not None:
            log.warning(
                "middleware %s: stripPrefix option forceSlash is deprecated; remove it",
                context.name,
            )
        return _StripPrefix(prefixes, bool(options.force_slash))


@model
class StripPrefixRegexOptions:
    regex: tuple[str, ...] = ()


class _StripPrefixRegex(Filter):
    __slots__ = ("expressions",)

    def __init__(self, expressions: list[SafePattern]) -> None:
        self.expressions = expressions

    def request(self, request: Request) -> None:
        raw = request.raw_path
        text = go_text(_decoded(raw))
        for expression in self.expressions:
            # Traefik takes the leftmost match and uses it only if the path
            # starts with the same text.
            found = expression.search(text)
            if found is None:
                continue
            prefix = found.group()
            if not prefix or not text.startswith(prefix):
                continue
            wire_prefix = from_go_text(prefix)
            cut = _raw_offset(raw, len(wire_prefix))
            header = raw[:cut] if _CONTROL.search(wire_prefix) else wire_prefix
            request.headers.add(FORWARDED_PREFIX, header)
            request.set_path(_leading_slash(raw[cut:]))
            return


class StripPrefixRegex:
    key = "stripPrefixRegex"
    options = StripPrefixRegexOptions

    def build(
        self, options: StripPrefixRegexOptions, next: Handler, context: BuildContext
    ) -> Filter:
        return _StripPrefixRegex(
            [_compile(pattern, f"regex[{i}]") for i, pattern in enumerate(options.regex)]
        )


@model
class ReplacePathOptions:
    path: str = ""


class _ReplacePath(Filter):
    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def request(self, request: Request) -> None:
        request.headers.add(REPLACED_PATH, request.raw_path)
        request.set_path(self.path)


class ReplacePath:
    key = "replacePath"
    options = ReplacePathOptions

    def build(self, options: ReplacePathOptions, next: Handler, context: BuildContext) -> Filter:
        path = wire_text(options.path)
        bad = bad_escape(path)
        if bad is not None:
            # Traefik answers 500 to every request; refusing it here says why once.
            raise ValueError(f'path: invalid URL escape "{bad}"')
        # Traefik sets the option as the raw path: escapes in it are kept.
        return _ReplacePath(_forwardable(path))


@model
class ReplacePathRegexOptions:
    REQUIRED = ("regex",)

    regex: str = ""
    replacement: str = ""


class _ReplacePathRegex(Filter):
    __slots__ = ("replace", "name")

    def __init__(self, replace: GoReplace, name: str) -> None:
        self.replace = replace
        self.name = name

    def request(self, request: Request) -> Response | None:
        raw = request.raw_path
        text = go_text(raw)
        if self.replace.pattern.search(text) is None:
            return None
        replaced = from_go_text(self.replace.replace_all(text))
        bad = bad_escape(replaced)
        if bad is not None:
            # The replacement made a malformed escape: Traefik's http.Error.
            log.error("middleware %s: unable to unescape url raw path %r", self.name, replaced)
            return Response(
                500,
                headers=Headers(
                    [
                        (b"Content-Type", b"text/plain; charset=utf-8"),
                        (b"X-Content-Type-Options", b"nosniff"),
                    ]
                ),
                body=f'invalid URL escape "{bad}"\n'.encode("latin-1"),
            )
        request.headers.add(REPLACED_PATH, raw)
        request.set_path(_forwardable(replaced))
        return None


class ReplacePathRegex:
    key = "replacePathRegex"
    options = ReplacePathRegexOptions

    def build(
        self, options: ReplacePathRegexOptions, next: Handler, context: BuildContext
    ) -> Filter:
        pattern = _compile(options.regex, "regex")
        replacement = options.replacement.strip()
        if not replacement:
            # Traefik rewrites only with a non-blank replacement; without one
            # the request passes untouched (no X-Replaced-Path either).
            return Filter()
        return _ReplacePathRegex(GoReplace(pattern, replacement), context.name)
