"""Peeking at a TLS ClientHello: is this TLS, and which server name and ALPN it asks for.

Sans-IO: ``parse_client_hello`` takes the bytes a client has sent so far and
returns ``Peek.NEED_MORE``, ``Peek.NOT_TLS`` or a ``ClientHello``. It keeps no
state, so the caller appends each read to one buffer and asks again; the
answer for a buffer never depends on how it was split into reads. It only
reads: the caller forwards the same bytes, untouched, to whichever server the
answer routes to (TLS passthrough).

Invariants:

* Every proper prefix of a valid ClientHello answers ``NEED_MORE``, so an
  answer of ``NOT_TLS`` or ``ClientHello`` is final and never premature.
* The ClientHello may be split across several TLS records (RFC 8446 5.1
  allows a handshake message to span records); it must be complete within the
  first ``limit`` bytes of the stream, record headers included (16 KiB by
  default). Past that the answer is ``NOT_TLS``, so a peek buffer never needs
  to hold more than ``limit`` bytes. Traefik peeks at the first record only.
* Hostile input never raises: anything that is not a well-formed ClientHello
  (SSLv2-style hellos, other record types, bad lengths, extensions that
  overflow their block, duplicate extensions, two host names) is ``NOT_TLS``.
  Traefik treats an SSLv2 hello or an unparsable handshake record as TLS
  without a server name; here both are not TLS.
* ``server_name`` is lower-cased, without a trailing dot; ``None`` when the
  hello has no host_name entry (clients omit SNI for IP literals). ALPN names
  are opaque bytes on the wire and are decoded as Latin-1, which maps every
  byte and never fails.

The caller decides what an end of stream during ``NEED_MORE`` means (Traefik
closes the connection) and how long to wait for the hello.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Bytes of stream within which the whole ClientHello must have arrived.
MAX_PEEK = 16 * 1024

_RECORD_HANDSHAKE = 0x16
_HANDSHAKE_CLIENT_HELLO = 0x01
_RECORD_HEADER = 5
# RFC 8446 5.1: a TLSPlaintext fragment is at most 2^14 bytes.
_MAX_FRAGMENT = 1 << 14
_EXT_SERVER_NAME = 0
_EXT_ALPN = 16
_NAME_TYPE_HOST = 0


class Peek(enum.Enum):
    """An answer that is not a ClientHello."""

    NEED_MORE = "need_more"
    NOT_TLS = "not_tls"


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What routing needs from a ClientHello: the server name and the offered ALPN protocols."""

    server_name: str | None
    alpn: tuple[str, ...] = ()


class _Malformed(Exception):
    """Internal: the handshake message is not a well-formed ClientHello."""


def parse_client_hello(data: bytes | bytearray, limit: int = MAX_PEEK) -> ClientHello | Peek:
    """Classify the first bytes of a connection; see the module docstring for the rules."""
    message = _handshake_message(data, limit)
    if isinstance(message, Peek):
        return message
    try:
        return _parse_body(message)
    except _Malformed:
        return Peek.NOT_TLS


def _handshake_message(data: bytes | bytearray, limit: int) -> bytes | Peek:
    """Reassemble the ClientHello handshake body from the handshake records at the start."""
    size = len(data)
    if size == 0:
        return Peek.NEED_MORE
    message = bytearray()
    total = -1  # handshake header plus body, once the header has arrived
    pos = 0
    while True:
        # Another record is needed, and it carries at least one byte after its header.
        if pos + _RECORD_HEADER + 1 > limit:
            return Peek.NOT_TLS
        if pos >= size:
            return Peek.NEED_MORE
        if data[pos] != _RECORD_HANDSHAKE:
            # Includes SSLv2-style hellos (first byte has the high bit set) and
            # other record types interleaved before the hello is complete.
            return Peek.NOT_TLS
        if pos + 1 < size and data[pos + 1] != 0x03:
            return Peek.NOT_TLS
        if pos + _RECORD_HEADER > size:
            return Peek.NEED_MORE
        length = (data[pos + 3] << 8) | data[pos + 4]
        if length == 0 or length > _MAX_FRAGMENT:
            # RFC 8446 5.1: zero-length handshake fragments are forbidden.
            return Peek.NOT_TLS
        start = pos + _RECORD_HEADER
        before = len(message)
        message += data[start : min(start + length, size)]
        if total < 0 and len(message) >= 4:
            if message[0] != _HANDSHAKE_CLIENT_HELLO:
                return Peek.NOT_TLS
            total = 4 + int.from_bytes(message[1:4], "big")
            if total > limit:
                return Peek.NOT_TLS
        if 0 <= total <= before + length:
            # The hello ends inside this record.
            if start + total - before > limit:
                return Peek.NOT_TLS
            if len(message) < total:
                return Peek.NEED_MORE
            return bytes(message[4:total])
        pos = start + length
        if pos > size:
            return Peek.NEED_MORE


class _Reader:
    """Bounds-checked reads from a handshake message; any overrun is ``_Malformed``."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def done(self) -> bool:
        return self.pos == self.end

    def take(self, n: int) -> int:
        """Advance by ``n`` bytes and return where they start."""
        start = self.pos
        if n > self.end - start:
            raise _Malformed
        self.pos = start + n
        return start

    def u8(self) -> int:
        return self.data[self.take(1)]

    def u16(self) -> int:
        at = self.take(2)
        return (self.data[at] << 8) | self.data[at + 1]

    def vector(self, width: int) -> _Reader:
        """A reader over a length-prefixed vector (``width`` bytes of length)."""
        length = self.u8() if width == 1 else self.u16()
        start = self.take(length)
        return _Reader(self.data, start, start + length)

    def rest(self) -> bytes:
        return self.data[self.pos : self.end]


def _parse_body(body: bytes) -> ClientHello:
    r = _Reader(body)
    if r.u8() != 0x03:  # legacy_version major
        raise _Malformed
    r.take(1 + 32)  # legacy_version minor, random
    session_id = r.vector(1)
    if session_id.end - session_id.pos > 32:
        raise _Malformed
    suites = r.vector(2)
    suites_length = suites.end - suites.pos
    if suites_length < 2 or suites_length % 2:
        raise _Malformed
    compression = r.vector(1)
    if compression.done():
        raise _Malformed
    if r.done():
        return ClientHello(None)  # a TLS 1.2 hello may carry no extensions at all
    extensions = r.vector(2)
    if not r.done():
        raise _Malformed
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    seen: set[int] = set()
    while not extensions.done():
        kind = extensions.u16()
        payload = extensions.vector(2)
        # RFC 8446 4.2: at most one extension of each type; two SNI
        # extensions would let a client show routing one name and the
        # server another.
        if kind in seen:
            raise _Malformed
        seen.add(kind)
        if kind == _EXT_SERVER_NAME:
            server_name = _server_name(payload)
        elif kind == _EXT_ALPN:
            alpn = _alpn(payload)
    return ClientHello(server_name, alpn)


def _server_name(payload: _Reader) -> str | None:
    """RFC 6066 section 3: a non-empty ServerNameList, at most one host_name."""
    names = payload.vector(2)
    if not payload.done() or names.done():
        raise _Malformed
    found: str | None = None
    while not names.done():
        name_type = names.u8()
        name = names.vector(2)
        if name.done():
            raise _Malformed
        if name_type != _NAME_TYPE_HOST:
            continue
        if found is not None:
            raise _Malformed
        raw = name.rest()
        # Host names are ASCII (A-labels); no spaces, controls or DEL.
        if any(byte < 0x21 or byte > 0x7E for byte in raw):
            raise _Malformed
        found = raw.decode("ascii").lower()
        if found.endswith("."):
            found = found[:-1]
        if not found:
            raise _Malformed
    return found


def _alpn(payload: _Reader) -> tuple[str, ...]:
    """RFC 7301 section 3.1: a non-empty list of non-empty protocol names."""
    protocols = payload.vector(2)
    if not payload.done() or protocols.done():
        raise _Malformed
    names: list[str] = []
    while not protocols.done():
        name = protocols.vector(1)
        if name.done():
            raise _Malformed
        names.append(name.rest().decode("latin-1"))
    return tuple(names)
