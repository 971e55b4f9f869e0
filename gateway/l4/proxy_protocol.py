"""PROXY protocol v1 and v2 headers: encoding for upstreams, incremental decoding for entry points.

Sans-IO, after the HAProxy specification (proxy-protocol.txt, 2020). The
encoders build the header a relay sends to a server before any client byte;
``decode`` reads one from the start of what a trusted client has sent so far
and answers ``NEED_MORE``, ``NOT_PROXY`` (the bytes start with neither
signature; an entry point that only *accepts* PROXY from trusted addresses
then treats the connection as direct, as Traefik's does), a ``ProxyHeader``
saying how many bytes it consumed, or ``Malformed`` with a reason. It keeps
no state: the caller appends each read to one buffer and asks again.

Invariants:

* Every proper prefix of a valid header answers ``NEED_MORE``; ``decode``
  never raises on any input.
* A v1 line is at most 107 bytes including CRLF (spec 2.1); without a CRLF by
  then it is malformed. Addresses and ports are strict: single spaces,
  canonical decimal ports, addresses of the announced family, no IPv6 zone.
* A v2 header is 16 bytes plus its announced length, which must hold the
  address block of its family; the TLVs after it must fill the rest exactly.
  Lengths above ``max_v2_length`` (4 KiB by default) are refused before they
  are buffered. The CRC32C TLV is returned as is, not verified.
* LOCAL (v2) and UNKNOWN (v1) headers, and v2 headers of the UNSPEC or UNIX
  families, carry no usable addresses: ``source`` and ``destination`` are
  ``None`` and the receiver uses the connection's own endpoints.
* Encoders take (host, port) pairs; an IPv4-mapped IPv6 address is sent as
  IPv4 (as Go's ``To4`` does), and when one end is IPv4 and the other IPv6
  the IPv4 one is mapped into IPv6, as HAProxy does, since a header carries
  one family. The decoder returns an IPv4-mapped address as IPv4, as Go's
  ``net.IP`` prints it, so IPv4 allowlists match it.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107
V2_HEADER_LENGTH = 16
# Announced v2 lengths above this are refused; TLVs seen in practice (AWS,
# Azure, GCP, HAProxy's SSL TLVs) are a few hundred bytes at most.
DEFAULT_MAX_V2_LENGTH = 4096

_CMD_LOCAL = 0x0
_CMD_PROXY = 0x1
_AF_UNSPEC = 0x0
_AF_INET = 0x1
_AF_INET6 = 0x2
_AF_UNIX = 0x3
_PROTO_STREAM = 0x1
_PROTO_DGRAM = 0x2
_ADDRESS_BLOCK = {_AF_UNSPEC: 0, _AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}

Address = tuple[str, int]
IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class Decode(enum.Enum):
    """An answer that is neither a header nor an error."""

    NEED_MORE = "need_more"
    NOT_PROXY = "not_proxy"


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A decoded header; ``length`` bytes of the stream belong to it, the rest is payload."""

    version: Literal[1, 2]
    command: Literal["PROXY", "LOCAL"]
    source: Address | None
    destination: Address | None
    length: int
    # "tcp" or "udp" for addressed headers; None when no addresses are carried.
    transport: Literal["tcp", "udp"] | None = None
    tlvs: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Malformed:
    """The stream starts like a PROXY header but is not a valid one."""

    reason: str


# --- encoding -----------------------------------------------------------------------------


def _ip(host: str) -> IP:
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            raise ValueError(f"PROXY header cannot carry a zoned address: {host}")
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
    return address


def _pair(source: Any, destination: Any) -> tuple[IP, int, IP, int]:
    """Both ends as addresses of one family, with validated ports."""
    src, dst = _ip(str(source[0])), _ip(str(destination[0]))
    if src.version != dst.version:
        # One header carries one family: map the IPv4 end into IPv6.
        if isinstance(src, ipaddress.IPv4Address):
            src = ipaddress.IPv6Address(f"::ffff:{src}")
        else:
            dst = ipaddress.IPv6Address(f"::ffff:{dst}")
    sport, dport = int(source[1]), int(destination[1])
    for port in (sport, dport):
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port out of range: {port}")
    return src, sport, dst, dport


def encode_v1(source: Address | None, destination: Address | None) -> bytes:
    """A v1 line for a TCP connection; ``None`` ends encode ``PROXY UNKNOWN``.

    Pass socket addresses as ``peername[:2]``; raises ValueError for values
    that are not IP addresses or ports.
    """
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    src, sport, dst, dport = _pair(source, destination)
    family = "TCP4" if src.version == 4 else "TCP6"
    source_text, destination_text = _v1_text(src), _v1_text(dst)
    return f"PROXY {family} {source_text} {destination_text} {sport} {dport}\r\n".encode("ascii")


def _v1_text(address: IP) -> str:
    """Mapped IPv4 in its usual dotted form (HAProxy's); Python 3.11 prints it as hex."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def encode_v2(
    source: Address | None,
    destination: Address | None,
    *,
    tlvs: Iterable[tuple[int, bytes]] = (),
) -> bytes:
    """A v2 header for a TCP connection; ``None`` ends encode the LOCAL command.

    LOCAL says the connection was made by the proxy itself (a health check),
    and carries no addresses. ``tlvs`` are (type, value) pairs appended as is.
    """
    extra = b"".join(bytes((kind,)) + len(value).to_bytes(2, "big") + value for kind, value in tlvs)
    if source is None or destination is None:
        head = bytes((0x20 | _CMD_LOCAL, (_AF_UNSPEC << 4) | _AF_UNSPEC))
        return V2_SIGNATURE + head + len(extra).to_bytes(2, "big") + extra
    src, sport, dst, dport = _pair(source, destination)
    family = _AF_INET if src.version == 4 else _AF_INET6
    block = src.packed + dst.packed + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    body = block + extra
    if len(body) > 0xFFFF:
        raise ValueError("PROXY v2 header longer than 65535 bytes")
    head = bytes((0x20 | _CMD_PROXY, (family << 4) | _PROTO_STREAM))
    return V2_SIGNATURE + head + len(body).to_bytes(2, "big") + body


# --- decoding -----------------------------------------------------------------------------


def decode(
    data: bytes | bytearray, *, max_v2_length: int = DEFAULT_MAX_V2_LENGTH
) -> ProxyHeader | Malformed | Decode:
    """Read a v1 or v2 header from the start of ``data``; see the module docstring."""
    size = len(data)
    if size == 0:
        return Decode.NEED_MORE
    head = bytes(data[:12])
    if V2_SIGNATURE.startswith(head):
        return Decode.NEED_MORE if size < 12 else _decode_v2(data, max_v2_length)
    if V1_PREFIX.startswith(head[:6]):
        return Decode.NEED_MORE if size < 6 else _decode_v1(data)
    return Decode.NOT_PROXY


def _decode_v1(data: bytes | bytearray) -> ProxyHeader | Malformed | Decode:
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            return Malformed("v1 header without CRLF within 107 bytes")
        if data.find(b"\r", 0, len(data) - 1) >= 0 or data.find(b"\n") >= 0:
            return Malformed("v1 header with a bare CR or LF")
        return Decode.NEED_MORE
    line = bytes(data[:end])
    length = end + 2
    if line == b"PROXY UNKNOWN" or line.startswith(b"PROXY UNKNOWN "):
        # Spec 2.1: after UNKNOWN the receiver ignores the rest of the line.
        return ProxyHeader(1, "PROXY", None, None, length)
    parts = line.split(b" ")
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        return Malformed("v1 header is not 'PROXY TCP4|TCP6 src dst sport dport'")
    try:
        text = [part.decode("ascii") for part in parts[2:]]
    except UnicodeDecodeError:
        return Malformed("v1 header with non-ASCII bytes")
    version = 4 if parts[1] == b"TCP4" else 6
    src, dst = _v1_ip(text[0], version), _v1_ip(text[1], version)
    sport, dport = _v1_port(text[2]), _v1_port(text[3])
    if src is None or dst is None:
        return Malformed(f"v1 addresses are not IPv{version} addresses")
    if sport is None or dport is None:
        return Malformed("v1 ports are not decimal numbers in 0..65535")
    return ProxyHeader(1, "PROXY", (src, sport), (dst, dport), length, "tcp")


def _v1_ip(text: str, version: int) -> str | None:
    if "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return _text(address) if address.version == version else None


def _text(address: IP) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _v1_port(text: str) -> int | None:
    if not text.isdigit() or not text.isascii() or len(text) > 5:
        return None
    if len(text) > 1 and text[0] == "0":
        return None
    port = int(text)
    return port if port <= 0xFFFF else None


def _decode_v2(data: bytes | bytearray, max_length: int) -> ProxyHeader | Malformed | Decode:
    size = len(data)
    if size < V2_HEADER_LENGTH:
        # The version nibble can already be checked.
        if size > 12 and data[12] >> 4 != 2:
            return Malformed("v2 header with a version other than 2")
        return Decode.NEED_MORE
    version_command, family_proto = data[12], data[13]
    if version_command >> 4 != 2:
        return Malformed("v2 header with a version other than 2")
    command = version_command & 0x0F
    if command not in (_CMD_LOCAL, _CMD_PROXY):
        return Malformed(f"v2 header with unknown command {command}")
    family, proto = family_proto >> 4, family_proto & 0x0F
    if family not in _ADDRESS_BLOCK or proto > _PROTO_DGRAM:
        return Malformed(f"v2 header with unknown family/protocol 0x{family_proto:02x}")
    length = (data[14] << 8) | data[15]
    if length > max_length:
        return Malformed(f"v2 header announces {length} bytes, more than {max_length}")
    block = _ADDRESS_BLOCK[family]
    if length < block:
        return Malformed(f"v2 header length {length} is shorter than its address block")
    total = V2_HEADER_LENGTH + length
    if size < total:
        return Decode.NEED_MORE
    body = bytes(data[V2_HEADER_LENGTH:total])
    tlvs = _tlvs(body, block)
    if tlvs is None:
        return Malformed("v2 TLVs do not fill the header exactly")
    if command == _CMD_LOCAL or family in (_AF_UNSPEC, _AF_UNIX) or proto == 0:
        # Spec 2.2: a LOCAL header's addresses are ignored; UNSPEC and UNIX
        # ones carry nothing usable for an IP endpoint.
        verb: Literal["PROXY", "LOCAL"] = "LOCAL" if command == _CMD_LOCAL else "PROXY"
        return ProxyHeader(2, verb, None, None, total, None, tlvs)
    width = 4 if family == _AF_INET else 16
    src = ipaddress.ip_address(body[:width])
    dst = ipaddress.ip_address(body[width : 2 * width])
    sport = int.from_bytes(body[2 * width : 2 * width + 2], "big")
    dport = int.from_bytes(body[2 * width + 2 : 2 * width + 4], "big")
    transport: Literal["tcp", "udp"] = "tcp" if proto == _PROTO_STREAM else "udp"
    return ProxyHeader(2, "PROXY", (_text(src), sport), (_text(dst), dport), total, transport, tlvs)


def _tlvs(body: bytes, pos: int) -> tuple[tuple[int, bytes], ...] | None:
    found: list[tuple[int, bytes]] = []
    end = len(body)
    while pos < end:
        if end - pos < 3:
            return None
        kind = body[pos]
        size = (body[pos + 1] << 8) | body[pos + 2]
        pos += 3
        if size > end - pos:
            return None
        found.append((kind, body[pos : pos + size]))
        pos += size
    return tuple(found)
