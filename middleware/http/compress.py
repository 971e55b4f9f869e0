"""``compress``: gzip, Brotli and Zstandard response compression, as Traefik v3.

The encoding is negotiated from ``Accept-Encoding`` the way Traefik does it:
q-values rank the codings the middleware offers (``encodings``, default
zstd, br, gzip; at equal weight the earlier one in that list wins), ``*``
means ``defaultEncoding`` (else the first offered), ``identity`` or nothing
acceptable means no compression, an empty header means none, and a request
without the header is left alone unless ``defaultEncoding`` is set. Coding
names are compared case-insensitively (RFC 9110 section 8.4.1) where
Traefik matches them exactly.

A response is compressed unless it is to a HEAD request, has no body by its
status (1xx, 204, 304), is partial (206), already has a Content-Encoding,
has an excluded Content-Type (``application/grpc`` always, plus
``excludedContentTypes``; or one outside ``includedContentTypes``; an
unparsable type is never compressed, a missing one always is), answers a
request whose own Content-Type is excluded, or declares a Content-Length
below ``minResponseBodyBytes``. Sluice decides on the response head and
never buffers to measure: a streamed response without a length is
compressed whatever its size, where Traefik would wait for
``minResponseBodyBytes`` to arrive first.

Compressing drops Content-Length and Accept-Ranges (ranges of an on-the-fly
coding cannot be served), sets Content-Encoding, and adds
``Vary: Accept-Encoding`` (Traefik adds it whenever it picked a coding, even
if it then did not compress). Upstream bodies go through a ``BodyTransform``
that flushes after every piece, so streamed responses (server-sent events,
long polls) reach the client as they are produced; a body a middleware
generated whole is compressed in one go.

Brotli needs the ``brotli`` package and Zstandard the ``zstandard``
package. An encoding whose package is missing is not offered (logged once
per build); ``defaultEncoding`` naming one falls back to the first encoding
still offered, and configuration is an error only when none is left.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable

from gateway.config.model import model
from middleware.contract import BodyTransform, BuildContext, Filter, Handler, Request, Response

try:
    import brotli  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - depends on the installation
    brotli = None
try:
    import zstandard
except ImportError:  # pragma: no cover - depends on the installation
    zstandard = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

KNOWN = ("zstd", "br", "gzip")
# The libraries' default levels, as Traefik uses them (brotli 6, zstd 3), and zlib's 6.
_GZIP_LEVEL = 6
_BROTLI_QUALITY = 6
_ZSTD_LEVEL = 3
_CACHE_LIMIT = 1024
# Where a response's Vary stands: none yet, or already naming Accept-Encoding
# (else the index of the Vary field to extend).
_NO_VARY, _VARIES = -1, -2
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
MediaType = tuple[str, dict[str, str]]


@model
class CompressOptions:
    excluded_content_types: tuple[str, ...] = ()
    included_content_types: tuple[str, ...] = ()
    min_response_body_bytes: int = 1024
    encodings: tuple[str, ...] = KNOWN
    default_encoding: str = ""


# -- encoders -------------------------------------------------------------------------


class _Gzip:
    __slots__ = ("z",)

    def __init__(self) -> None:
        self.z = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)

    def feed(self, data: bytes) -> bytes:
        z = self.z
        return z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)

    def end(self) -> bytes:
        return self.z.flush()


class _Brotli:
    __slots__ = ("c",)

    def __init__(self) -> None:
        self.c = brotli.Compressor(quality=_BROTLI_QUALITY)

    def feed(self, data: bytes) -> bytes:
        c = self.c
        return c.process(data) + c.flush()  # type: ignore[no-any-return]

    def end(self) -> bytes:
        return self.c.finish()  # type: ignore[no-any-return]


class _Zstd:
    __slots__ = ("c",)

    def __init__(self) -> None:
        # One compressor per response: compressobj()s of one ZstdCompressor
        # share its context and corrupt each other when interleaved.
        self.c = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compressobj()

    def feed(self, data: bytes) -> bytes:
        c = self.c
        return c.compress(data) + c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def end(self) -> bytes:
        return self.c.flush()


def _whole_zstd(body: bytes) -> bytes:
    out: bytes = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(body)
    return out


def _whole_brotli(body: bytes) -> bytes:
    out: bytes = brotli.compress(body, quality=_BROTLI_QUALITY)
    return out


def _whole_gzip(body: bytes) -> bytes:
    z = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)
    return z.compress(body) + z.flush()


_STREAM: dict[str, Callable[[], BodyTransform]] = {"gzip": _Gzip, "br": _Brotli, "zstd": _Zstd}
_WHOLE: dict[str, Callable[[bytes], bytes]] = {
    "gzip": _whole_gzip,
    "br": _whole_brotli,
    "zstd": _whole_zstd,
}
_AVAILABLE = {"gzip": True, "br": brotli is not None, "zstd": zstandard is not None}
_PACKAGE = {"br": "brotli", "zstd": "zstandard"}


# -- media types (Go's mime.ParseMediaType, as far as Traefik relies on it) -------------


def _token(text: str) -> bool:
    return bool(text) and all(c in _TOKEN for c in text.lower())


def parse_media_type(text: str) -> MediaType | None:
    """(lower-cased type, parameters) of a Content-Type value, or None if malformed."""
    base, _, rest = text.partition(";")
    media = base.strip().lower()
    kind, slash, sub = media.partition("/")
    if not _token(kind) or (slash and not _token(sub)):
        return None
    params: dict[str, str] = {}
    while rest.strip():
        item, _, rest = _split_param(rest)
        name, eq, value = item.partition("=")
        name, value = name.strip().lower(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if not eq or not _token(name) or not value or name in params:
            return None
        params[name] = value
    return media, params


def _split_param(text: str) -> tuple[str, str, str]:
    """The next ``name=value`` (a quoted value may hold ';'), and what follows."""
    quoted = False
    for i, c in enumerate(text):
        if c == '"':
            quoted = not quoted
        elif c == ";" and not quoted:
            return text[:i], ";", text[i + 1 :]
    return text, "", ""


def _matches(pattern: MediaType, media: MediaType) -> bool:
    """gzhttp's rule: same type, and the pattern's parameters (if any) exactly."""
    if pattern[0] != media[0]:
        return False
    return not pattern[1] or pattern[1] == media[1]


def _media_types(option: str, values: tuple[str, ...]) -> tuple[MediaType, ...]:
    out = []
    for i, value in enumerate(values):
        parsed = parse_media_type(value)
        if parsed is None:
            raise ValueError(f"{option}[{i}]: {value!r} is not a media type")
        out.append(parsed)
    return tuple(out)


# -- the filter -------------------------------------------------------------------------


class _CompressFilter(Filter):
    __slots__ = (
        "offered",
        "priority",
        "default",
        "excluded",
        "excluded_names",
        "included",
        "min_size",
        "choices",
        "compressible",
    )

    def __init__(self, o: CompressOptions, offered: tuple[str, ...], default: str) -> None:
        self.offered = offered
        # Traefik's tie-break at equal weight: "*" first, then the offered
        # encodings in order, identity last.
        self.priority = {"*": -1, **{e: i for i, e in enumerate(offered)}, "identity": len(offered)}
        self.default = default
        excluded = _media_types("excludedContentTypes", o.excluded_content_types)
        self.included = _media_types("includedContentTypes", o.included_content_types)
        # gRPC is never compressed here: it frames and compresses messages itself.
        self.excluded = (("application/grpc", {}), *excluded)
        self.excluded_names = frozenset(m for m, _ in self.excluded)
        self.min_size = o.min_response_body_bytes if o.min_response_body_bytes > 0 else 1024
        self.choices: dict[bytes, str | None] = {}
        self.compressible: dict[bytes, bool] = {}

    def response(self, request: Request, response: Response) -> None:
        status = response.status
        if request.method == "HEAD" or status < 200:
            return
        accept: list[bytes] = []
        request_type = None
        for name, value in request.headers.raw:
            lname = name.lower()
            if lname == b"accept-encoding":
                accept.append(value)
            elif lname == b"content-type" and request_type is None:
                request_type = value
        if request_type is not None:
            media = request_type.partition(b";")[0].strip().lower().decode("latin-1")
            if media in self.excluded_names:
                return
        encoding: str | None
        if not accept:
            # Traefik leaves clients that state nothing alone (#9734).
            encoding = self.default or None
        elif len(accept) == 1 and not accept[0]:
            return
        else:
            encoding = self._choose(accept[0] if len(accept) == 1 else b",".join(accept))
        if encoding is None:
            return
        raw = response.headers.raw
        coded = False
        length = ctype = None
        vary = _NO_VARY
        for i, (name, value) in enumerate(raw):
            lname = name.lower()
            if lname == b"content-encoding":
                coded = coded or bool(value.strip())
            elif lname == b"content-type":
                ctype = ctype if ctype is not None else value
            elif lname == b"content-length":
                length = value
            elif lname == b"vary" and vary != _VARIES:
                tokens = {t.strip().lower() for t in value.split(b",")}
                vary = _VARIES if b"accept-encoding" in tokens or b"*" in tokens else i
        if vary == _NO_VARY:
            raw.append((b"Vary", b"Accept-Encoding"))
        elif vary != _VARIES:
            name, value = raw[vary]
            value = value + b", Accept-Encoding" if value.strip() else b"Accept-Encoding"
            raw[vary] = (name, value)
        # Already coded (by the upstream or an inner compress), or no full body.
        if coded or status in (204, 206, 304):
            return
        if ctype is not None and not self._compressible(ctype):
            return
        if response.streamed:
            if length is not None and length.strip().isdigit() and int(length) < self.min_size:
                return
        elif len(response.body) < self.min_size:
            return
        raw[:] = [p for p in raw if p[0].lower() not in (b"content-length", b"accept-ranges")]
        raw.append((b"Content-Encoding", encoding.encode()))
        if response.streamed:
            response.transform = _STREAM[encoding]()
        else:
            response.body = _WHOLE[encoding](response.body)

    def _choose(self, accept: bytes) -> str | None:
        choices = self.choices
        if accept in choices:
            return choices[accept]
        choice = self._negotiate(accept.decode("latin-1"))
        if len(choices) >= _CACHE_LIMIT:
            choices.clear()
        choices[accept] = choice
        return choice

    def _negotiate(self, accept: str) -> str | None:
        """Traefik's getCompressionEncoding: the coding to use, or None for identity."""
        priority = self.priority
        acceptable: list[tuple[float, int, str]] = []
        for item in accept.replace(" ", "").replace("\t", "").split(","):
            coding, _, param = item.partition(";")
            coding = coding.lower()
            if coding not in priority:
                continue
            weight = 1.0
            if param[:2].lower() == "q=":
                try:
                    weight = float(param[2:])
                except ValueError:
                    weight = 0.0
                if not weight > 0 or math.isinf(weight):
                    continue  # q=0: not acceptable (Traefik drops unparsable weights too)
            acceptable.append((-weight, priority[coding], coding))
        if not acceptable:
            return None
        best = min(acceptable)[2]
        if best == "*":
            return self.default or self.offered[0]
        return None if best == "identity" else best

    def _compressible(self, ctype: bytes) -> bool:
        cache = self.compressible
        found = cache.get(ctype)
        if found is None:
            media = parse_media_type(ctype.decode("latin-1"))
            if media is None:
                found = False
            elif self.included:
                found = any(_matches(p, media) for p in self.included)
            else:
                found = not any(_matches(p, media) for p in self.excluded)
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[ctype] = found
        return found


class Compress:
    key = "compress"
    options = CompressOptions

    def build(self, options: CompressOptions, next: Handler, context: BuildContext) -> Filter:
        if options.excluded_content_types and options.included_content_types:
            raise ValueError(
                "excludedContentTypes: excludedContentTypes and includedContentTypes "
                "are mutually exclusive"
            )
        if not options.encodings:
            raise ValueError("encodings: at least one encoding must be specified")
        for encoding in options.encodings:
            if encoding not in KNOWN:
                raise ValueError(f"encodings: unsupported encoding {encoding!r}")
        default = options.default_encoding
        if default and default not in options.encodings:
            raise ValueError(f"defaultEncoding: {default!r} is not one of encodings")
        offered = tuple(dict.fromkeys(e for e in options.encodings if _AVAILABLE[e]))
        missing = [e for e in options.encodings if not _AVAILABLE[e]]
        if missing:
            log.warning(
                "middleware %s: not offering %s (Python package %s not installed)",
                context.name,
                ", ".join(missing),
                ", ".join(_PACKAGE[e] for e in missing),
            )
        if not offered:
            raise ValueError("encodings: none of the listed encodings is available")
        if default and default not in offered:
            default = offered[0]
        return _CompressFilter(options, offered, default)
