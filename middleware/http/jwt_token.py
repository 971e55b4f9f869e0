"""Where the ``jwt`` middleware's token travels, and what a verified one forwards.

Owns the token lookup (``tokenSource``'s header and auth-scheme, then its
cookie, then Hub's ``tokenKey`` query parameter), the token's removal once
verified, and the ``forwardHeaders`` claims set on the request.

Invariants:

- a lookup reports where it found the token, and stripping removes it from
  that place only: the header field, the named cookie (other cookies kept),
  or the query parameters of that name;
- a claim never sets a framing or routing field (``Host``, ``Content-Length``
  and the like), and a forwarded value holds no control character but HTAB.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from middleware.contract import Headers, Request

HEADER, COOKIE, QUERY = 0, 1, 2

# A forwarded field and the claim path that fills it.
Forwarding = tuple[tuple[bytes, tuple[str, ...]], ...]

_TOKEN_CHARS = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Framing and routing fields a claim must never set.
_RESERVED = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"}
    | {"keep-alive", "proxy-connection", "expect"}
)
# Controls (but HTAB) cannot appear in a field value (RFC 9110 section 5.5).
_CONTROLS = bytes(c for c in range(32) if c != 9) + b"\x7f"


def _cookie_pairs(value: str) -> list[tuple[str, str]]:
    pairs = []
    for item in value.split(";"):
        name, _, v = item.strip().partition("=")
        pairs.append((name.strip(), v.strip()))
    return pairs


class TokenLookup:
    """Finds the token in a request, and strips it from where it was found."""

    __slots__ = ("header", "scheme", "cookie", "query_key")

    def __init__(self, header: str, scheme: str, cookie: str, query_key: str) -> None:
        self.header = header.encode() if header else None
        # The auth-scheme is case-insensitive (RFC 9110 section 11.1).
        self.scheme = scheme.lower() + " " if scheme else ""
        self.cookie = cookie
        self.query_key = query_key

    def find(self, request: Request) -> tuple[str, int] | None:
        """The token and where it was (``HEADER``, ``COOKIE``, ``QUERY``), or None."""
        headers = request.headers
        if self.header is not None:
            value = headers.get(self.header)
            if value is not None:
                scheme = self.scheme
                if not scheme:
                    token = value.strip()
                    if token:
                        return token, HEADER
                elif value[: len(scheme)].lower() == scheme:
                    token = value[len(scheme) :].strip()
                    if token:
                        return token, HEADER
        if self.cookie:
            for value in headers.get_all(b"cookie"):
                for name, v in _cookie_pairs(value):
                    if name == self.cookie and v:
                        # A cookie-value may be quoted (RFC 6265 section 4.1.1).
                        return v.strip('"'), COOKIE
        if self.query_key and request.query:
            for part in request.query.split("&"):
                name, _, v = part.partition("=")
                if unquote_plus(name) == self.query_key and v:
                    return unquote_plus(v), QUERY
        return None

    def strip(self, request: Request, found: tuple[str, int]) -> None:
        """Remove the token ``find`` returned from the request."""
        where = found[1]
        if where == HEADER:
            assert self.header is not None
            request.headers.remove(self.header)
        elif where == COOKIE:
            kept: list[tuple[bytes, bytes]] = []
            for k, v in request.headers.raw:
                if k.lower() == b"cookie":
                    pairs = _cookie_pairs(v.decode("latin-1"))
                    rest = "; ".join(f"{n}={x}" for n, x in pairs if n and n != self.cookie)
                    if not rest:
                        continue
                    v = rest.encode("latin-1")
                kept.append((k, v))
            request.headers.raw[:] = kept
        else:
            parts = request.query.split("&")
            request.query = "&".join(
                p for p in parts if unquote_plus(p.partition("=")[0]) != self.query_key
            )


# -- claims forwarded as request fields ---------------------------------------------


def claim_path(text: str) -> tuple[str, ...]:
    """Hub's nested claim names: ``user.name``, with ``\\.`` and ``\\\\`` escapes."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for c in chars:
        if c == "\\":
            current.append(next(chars, "\\"))
        elif c == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
    parts.append("".join(current))
    if not all(parts):
        raise ValueError(f"forwardHeaders: {text!r} is not a claim name")
    return tuple(parts)


def claim_value(payload: Mapping[str, Any], path: tuple[str, ...]) -> bytes:
    """A claim as a field value: strings as they are, anything else as JSON."""
    value: Any = payload
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return b""
        value = value[part]
    if value is None:
        return b""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text.encode().translate(None, _CONTROLS)


def forwarding(forward_headers: Mapping[str, str]) -> Forwarding:
    """The ``forwardHeaders`` option checked: each field name and its claim path."""
    out = []
    for name, claim in forward_headers.items():
        if not _TOKEN_CHARS.fullmatch(name) or name.lower() in _RESERVED:
            raise ValueError(f"forwardHeaders: {name!r} cannot be set from a claim")
        out.append((name.encode(), claim_path(claim)))
    return tuple(out)


def forward_claims(headers: Headers, payload: Mapping[str, Any], forward: Forwarding) -> None:
    """Set each forwarded field to its claim; an absent claim sets it empty."""
    for name, path in forward:
        headers.set_trusted(name, claim_value(payload, path))
