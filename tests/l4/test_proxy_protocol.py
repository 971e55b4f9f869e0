"""Tests for gateway.l4.proxy_protocol: encoders, the incremental decoder, and a real receiver.

Byte vectors follow the examples of HAProxy's proxy-protocol.txt. Any split
into reads is a prefix of the stream, so "every prefix answers NEED_MORE"
covers every read boundary; the receiving server also reads one byte at a time.
"""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from gateway.l4.proxy_protocol import (
    V2_SIGNATURE,
    Decode,
    Malformed,
    ProxyHeader,
    decode,
    encode_v1,
    encode_v2,
)

Address = tuple[str, int]

ENDPOINTS = [
    pytest.param(("192.0.2.1", 56324), ("198.51.100.2", 443), ("192.0.2.1", 56324),
                 ("198.51.100.2", 443), id="ipv4"),
    pytest.param(("2001:db8::1", 1), ("2001:db8::2", 65535), ("2001:db8::1", 1),
                 ("2001:db8::2", 65535), id="ipv6"),
    pytest.param(("::ffff:192.0.2.1", 0), ("::ffff:192.0.2.2", 80), ("192.0.2.1", 0),
                 ("192.0.2.2", 80), id="ipv4-mapped-sent-as-ipv4"),
    pytest.param(("192.0.2.1", 5), ("2001:db8::2", 6), ("192.0.2.1", 5),
                 ("2001:db8::2", 6), id="mixed-families-sent-as-ipv6"),
]  # fmt: skip


def assert_every_prefix_needs_more(stream: bytes) -> None:
    for cut in range(len(stream)):
        assert decode(stream[:cut]) is Decode.NEED_MORE, cut


# --- encoding -----------------------------------------------------------------------------


def test_v1_bytes_match_the_specification() -> None:
    """The v1 line is the spec's example, byte for byte."""
    line = encode_v1(("192.168.0.1", 56324), ("192.168.0.11", 443))
    assert line == b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    assert encode_v1(None, None) == b"PROXY UNKNOWN\r\n"


def test_v2_bytes_match_the_specification() -> None:
    """The v2 header has the signature, 0x21, family/protocol, length, addresses, ports."""
    header = encode_v2(("192.168.0.1", 56324), ("192.168.0.11", 443))
    assert header == (
        V2_SIGNATURE
        + b"\x21\x11\x00\x0c"
        + bytes((192, 168, 0, 1, 192, 168, 0, 11))
        + (56324).to_bytes(2, "big")
        + (443).to_bytes(2, "big")
    )
    assert encode_v2(None, None) == V2_SIGNATURE + b"\x20\x00\x00\x00"
    v6 = encode_v2(("::1", 1), ("::2", 2))
    assert v6[12:16] == b"\x21\x21\x00\x24" and len(v6) == 16 + 36


@pytest.mark.parametrize(
    ("source", "destination"),
    [
        pytest.param(("example.com", 1), ("192.0.2.1", 2), id="host-name"),
        pytest.param(("192.0.2.1", 70000), ("192.0.2.2", 2), id="port-too-big"),
        pytest.param(("192.0.2.1", -1), ("192.0.2.2", 2), id="negative-port"),
        pytest.param(("fe80::1%eth0", 1), ("fe80::2", 2), id="zoned-ipv6"),
    ],
)
def test_encoders_refuse_what_a_header_cannot_carry(source: Address, destination: Address) -> None:
    """Addresses that are not IPs, out-of-range ports and zones raise ValueError."""
    with pytest.raises(ValueError):
        encode_v1(source, destination)
    with pytest.raises(ValueError):
        encode_v2(source, destination)


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "destination", "want_source", "want_destination"), ENDPOINTS)
@pytest.mark.parametrize("version", [1, 2], ids=["v1", "v2"])
def test_round_trip_at_every_split(
    version: int,
    source: Address,
    destination: Address,
    want_source: Address,
    want_destination: Address,
) -> None:
    """What an encoder writes decodes to the same endpoints, and every prefix asks for more."""
    header = (encode_v1 if version == 1 else encode_v2)(source, destination)
    parsed = decode(header + b"payload")
    assert isinstance(parsed, ProxyHeader)
    assert (parsed.version, parsed.command, parsed.transport) == (version, "PROXY", "tcp")
    assert (parsed.source, parsed.destination) == (want_source, want_destination)
    assert parsed.length == len(header) and parsed.tlvs == ()
    assert_every_prefix_needs_more(header)


def test_local_and_unknown_carry_no_addresses() -> None:
    """LOCAL (v2) and UNKNOWN (v1) decode without endpoints: use the connection's own."""
    local = encode_v2(None, None)
    assert decode(local) == ProxyHeader(2, "LOCAL", None, None, 16)
    assert_every_prefix_needs_more(local)
    unknown = encode_v1(None, None)
    assert decode(unknown) == ProxyHeader(1, "PROXY", None, None, len(unknown))
    assert_every_prefix_needs_more(unknown)


def test_v2_tlvs_round_trip() -> None:
    """TLVs after the address block come back as (type, value) pairs, in order."""
    tlvs = ((0x01, b"h2"), (0x02, b"authority.example"), (0xEA, b""), (0x04, bytes(300)))
    header = encode_v2(("192.0.2.1", 1), ("192.0.2.2", 2), tlvs=tlvs)
    parsed = decode(header)
    assert isinstance(parsed, ProxyHeader)
    assert parsed.tlvs == tlvs and parsed.length == len(header)
    assert_every_prefix_needs_more(header)


def v2(ver_cmd: int, fam: int, body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return V2_SIGNATURE + bytes((ver_cmd, fam)) + size.to_bytes(2, "big") + body


def test_v2_other_families_and_protocols() -> None:
    """UNSPEC and UNIX families carry no IP endpoints; DGRAM says udp; LOCAL skips addresses."""
    assert decode(v2(0x21, 0x00, b"")) == ProxyHeader(2, "PROXY", None, None, 16)
    unix = v2(0x21, 0x31, bytes(216))
    assert decode(unix) == ProxyHeader(2, "PROXY", None, None, len(unix))
    dgram = v2(0x21, 0x12, bytes((10, 0, 0, 1, 10, 0, 0, 2, 0, 53, 0, 54)))
    assert decode(dgram) == ProxyHeader(
        2, "PROXY", ("10.0.0.1", 53), ("10.0.0.2", 54), len(dgram), "udp"
    )
    local_with_addresses = v2(0x20, 0x11, bytes(12))
    assert decode(local_with_addresses) == ProxyHeader(
        2, "LOCAL", None, None, len(local_with_addresses)
    )


def test_v1_line_of_exactly_107_bytes_is_accepted() -> None:
    """107 bytes with CRLF is the v1 maximum; 108 is too long."""
    line = b"PROXY UNKNOWN " + b"x" * (107 - 16) + b"\r\n"
    assert len(line) == 107
    assert decode(line) == ProxyHeader(1, "PROXY", None, None, 107)
    longer = line[:-2] + b"x\r\n"
    assert isinstance(decode(longer), Malformed)


def test_v2_length_limit_is_configurable() -> None:
    """The announced v2 length is checked against max_v2_length before buffering."""
    header = encode_v2(("192.0.2.1", 1), ("192.0.2.2", 2), tlvs=[(0xE0, bytes(5000))])
    assert isinstance(decode(header[:16]), Malformed)
    parsed = decode(header, max_v2_length=65535)
    assert isinstance(parsed, ProxyHeader) and parsed.length == len(header)


# --- not PROXY, malformed -----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET / HTTP/1.1\r\n", id="http"),
        pytest.param(b"\x16\x03\x01\x02\x00", id="tls"),
        pytest.param(b"PROXX", id="almost-v1"),
        pytest.param(b"PROXY\t", id="v1-without-space"),
        pytest.param(b"\r\n\r\n\x00\r\nQUIX", id="almost-v2"),
        pytest.param(b"\r\n\r\nGET", id="blank-lines"),
    ],
)
def test_other_protocols_are_not_proxy(data: bytes) -> None:
    """Bytes that start with neither signature are NOT_PROXY as soon as that is certain."""
    assert decode(data) is Decode.NOT_PROXY


MALFORMED_V1 = [
    pytest.param(b"PROXY " + b"x" * 101, id="no-crlf-in-107"),
    pytest.param(b"PROXY TCP4 1.2.3.4\n", id="bare-lf"),
    pytest.param(b"PROXY TCP4\r1.2.3.4", id="bare-cr"),
    pytest.param(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", id="unknown-protocol"),
    pytest.param(b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", id="ipv4-in-tcp6"),
    pytest.param(b"PROXY TCP4 ::1 ::2 1 2\r\n", id="ipv6-in-tcp4"),
    pytest.param(b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", id="leading-zero-octet"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", id="leading-zero-port"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", id="port-too-big"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", id="negative-port"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", id="plus-port"),
    pytest.param(b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", id="double-space"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", id="missing-port"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", id="extra-field"),
    pytest.param(b"PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n", id="ipv6-zone"),
    pytest.param(b"PROXY TCP4 1.2.3.\xc4\xb0 5.6.7.8 1 2\r\n", id="non-ascii"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 \xd9\xa1 2\r\n", id="non-ascii-digit"),
    pytest.param(b"PROXY \r\n", id="empty"),
]

MALFORMED_V2 = [
    pytest.param(v2(0x11, 0x11, bytes(12)), id="version-1"),
    pytest.param(v2(0x31, 0x11, bytes(12))[:13], id="version-3-seen-early"),
    pytest.param(v2(0x22, 0x11, bytes(12)), id="command-2"),
    pytest.param(v2(0x21, 0x41, bytes(12)), id="family-4"),
    pytest.param(v2(0x21, 0x13, bytes(12)), id="protocol-3"),
    pytest.param(v2(0x21, 0x11, bytes(11)), id="inet-block-short"),
    pytest.param(v2(0x21, 0x21, bytes(35)), id="inet6-block-short"),
    pytest.param(v2(0x21, 0x31, bytes(215)), id="unix-block-short"),
    pytest.param(v2(0x21, 0x11, b"", length=5000), id="length-over-limit"),
    pytest.param(v2(0x21, 0x11, bytes(12) + b"\x01\x00\x05ab"), id="tlv-overflow"),
    pytest.param(v2(0x21, 0x11, bytes(12) + b"\x01\x00"), id="truncated-tlv-header"),
]


@pytest.mark.parametrize("data", MALFORMED_V1 + MALFORMED_V2)
def test_malformed_headers_are_rejected(data: bytes) -> None:
    """A stream that starts like a PROXY header but breaks its rules is Malformed, with a reason."""
    result = decode(data)
    assert isinstance(result, Malformed) and result.reason


def test_mutated_headers_never_raise() -> None:
    """Random corruptions of valid headers always get an answer, never an exception."""
    rng = random.Random(99)
    bases = [
        encode_v1(("192.0.2.1", 1), ("198.51.100.7", 65535)),
        encode_v1(("2001:db8::1", 80), ("2001:db8::ffff", 443)),
        encode_v2(("192.0.2.1", 1), ("198.51.100.7", 2), tlvs=[(1, b"h2"), (2, b"x" * 30)]),
        encode_v2(("2001:db8::1", 80), ("2001:db8::2", 443)),
    ]
    answers = (ProxyHeader, Malformed, Decode)
    for _ in range(5000):
        data = bytearray(rng.choice(bases) + b"payload")
        for _ in range(rng.randint(1, 3)):
            where = rng.randrange(len(data))
            if rng.random() < 0.7:
                data[where] = rng.randrange(256)
            else:
                del data[where:]
                break
        assert isinstance(decode(bytes(data)), answers)


# --- over a real socket -------------------------------------------------------------------


class Receiver(asyncio.Protocol):
    """An entry point that accepts PROXY headers: decode as bytes arrive, then payload."""

    def __init__(self) -> None:
        self.buffer = b""
        self.header: ProxyHeader | Malformed | Decode | None = None
        self.payload = b""
        self.reads = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        if self.header is not None:
            self.payload += data
            return
        self.buffer += data
        answer = decode(self.buffer)
        if answer is Decode.NEED_MORE:
            return
        self.header = answer
        if isinstance(answer, ProxyHeader):
            self.payload = self.buffer[answer.length :]

    def eof_received(self) -> bool:
        if not self.done.done():
            self.done.set_result(None)
        return False


@pytest.mark.parametrize("version", [1, 2], ids=["v1", "v2"])
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
async def test_real_server_reads_what_the_encoder_sent(version: int, family: int) -> None:
    """A server decodes a header sent over TCP a byte at a time, naming the real client socket."""
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    loop = asyncio.get_running_loop()
    receivers: list[Receiver] = []

    def make() -> Receiver:
        receivers.append(Receiver())
        return receivers[-1]

    server = await loop.create_server(make, host, 0)
    server_address = server.sockets[0].getsockname()[:2]
    try:
        with socket.socket(family, socket.SOCK_STREAM) as client:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.setblocking(False)
            await loop.sock_connect(client, server_address)
            encode = encode_v1 if version == 1 else encode_v2
            header = encode(client.getsockname()[:2], server_address)
            for index in range(len(header)):
                await loop.sock_sendall(client, header[index : index + 1])
            await loop.sock_sendall(client, b"the payload")
            client.shutdown(socket.SHUT_WR)
            (receiver,) = receivers
            async with asyncio.timeout(10):
                await receiver.done
            parsed = receiver.header
            assert isinstance(parsed, ProxyHeader)
            assert parsed.source == client.getsockname()[:2]
            assert parsed.destination == server_address
            assert parsed.length == len(header)
            assert receiver.payload == b"the payload"
    finally:
        server.close()
        await server.wait_closed()
