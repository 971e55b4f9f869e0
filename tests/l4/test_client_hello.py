"""Tests for gateway.l4.client_hello: SNI and ALPN from real and hand-built ClientHellos.

Real hellos come from Python's ssl module writing into a MemoryBIO; hand-built
ones pin down one malformation each. Any split into reads is a prefix of the
stream, so "every prefix answers NEED_MORE" covers every read boundary.
"""

from __future__ import annotations

import random
import ssl

import pytest

from gateway.l4.client_hello import MAX_PEEK, ClientHello, Peek, parse_client_hello


def real_hello(
    server_hostname: str | None,
    alpn: list[str] | None = None,
    maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> bytes:
    """The first flight of an OpenSSL client: its ClientHello record(s)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = maximum
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def vec8(data: bytes) -> bytes:
    return bytes((len(data),)) + data


def vec16(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def ext(kind: int, data: bytes) -> bytes:
    return kind.to_bytes(2, "big") + vec16(data)


def sni(*names: bytes, name_type: int = 0) -> bytes:
    return ext(0, vec16(b"".join(bytes((name_type,)) + vec16(name) for name in names)))


def alpn(*protocols: bytes) -> bytes:
    return ext(16, vec16(b"".join(vec8(p) for p in protocols)))


def message(
    extensions: bytes | None,
    *,
    session_id: bytes = b"",
    suites: bytes = b"\x13\x01\x13\x02",
    compression: bytes = b"\x00",
    version: bytes = b"\x03\x03",
    kind: int = 1,
    trailing: bytes = b"",
) -> bytes:
    """A ClientHello handshake message (header included)."""
    body = version + bytes(range(32)) + vec8(session_id) + vec16(suites) + vec8(compression)
    if extensions is not None:
        body += vec16(extensions)
    body += trailing
    return bytes((kind,)) + len(body).to_bytes(3, "big") + body


def records(handshake: bytes, size: int = 1 << 14, kind: int = 0x16) -> bytes:
    """``handshake`` cut into TLS records of at most ``size`` bytes."""
    out = b""
    for start in range(0, len(handshake), size):
        fragment = handshake[start : start + size]
        out += bytes((kind, 3, 1)) + len(fragment).to_bytes(2, "big") + fragment
    return out


def unwrap(stream: bytes) -> bytes:
    """The handshake bytes inside a stream of handshake records."""
    out, pos = b"", 0
    while pos < len(stream):
        length = int.from_bytes(stream[pos + 3 : pos + 5], "big")
        out += stream[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return out


def assert_every_prefix_needs_more(stream: bytes) -> None:
    for cut in range(len(stream)):
        assert parse_client_hello(stream[:cut]) is Peek.NEED_MORE, cut


# --- real ClientHellos ---------------------------------------------------------------------

REAL = [
    pytest.param("example.com", None, "example.com", (), id="sni"),
    pytest.param("Api.Example.COM", ["h2", "http/1.1"], "api.example.com", ("h2", "http/1.1"),
                 id="sni-lowercased-alpn"),
    pytest.param("trailing.example.", None, "trailing.example", (), id="trailing-dot"),
    pytest.param(None, ["h2"], None, ("h2",), id="no-sni-alpn"),
    pytest.param("127.0.0.1", None, None, (), id="ip-literal-has-no-sni"),
    pytest.param("::1", ["http/1.1"], None, ("http/1.1",), id="ipv6-literal-has-no-sni"),
]  # fmt: skip


@pytest.mark.parametrize(("hostname", "protocols", "name", "offered"), REAL)
@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls12", "tls13"])  # fmt: skip
def test_real_client_hello_is_read_at_every_split(
    hostname: str | None,
    protocols: list[str] | None,
    name: str | None,
    offered: tuple[str, ...],
    maximum: ssl.TLSVersion,
) -> None:
    """OpenSSL's ClientHello yields its SNI and ALPN, and every prefix of it asks for more."""
    stream = real_hello(hostname, protocols, maximum)
    assert parse_client_hello(stream) == ClientHello(name, offered)
    assert_every_prefix_needs_more(stream)


@pytest.mark.parametrize("size", [1, 2, 7, 100, 333], ids=lambda n: f"records-of-{n}")
def test_hello_spread_over_many_records(size: int) -> None:
    """A ClientHello re-cut into many small records reads the same, and waits for all of them."""
    stream = records(unwrap(real_hello("split.example", ["h2"])), size)
    assert parse_client_hello(stream) == ClientHello("split.example", ("h2",))
    assert_every_prefix_needs_more(stream)


def test_bytes_after_the_hello_are_ignored() -> None:
    """A ChangeCipherSpec or early data record after the hello does not change the answer."""
    stream = real_hello("example.com")
    after = bytes((0x14, 3, 3, 0, 1, 1)) + bytes((0x17, 3, 3, 0, 4)) + b"data"
    assert parse_client_hello(stream + after) == ClientHello("example.com")


def test_input_is_not_modified() -> None:
    """The parser only reads: the bytes stay as they were, to be forwarded untouched."""
    stream = bytearray(real_hello("example.com", ["h2"]))
    before = bytes(stream)
    parse_client_hello(stream)
    assert stream == before


def test_hello_larger_than_the_peek_limit_is_not_tls() -> None:
    """A hello past the 16 KiB peek limit (OpenSSL puts it in two records) is not TLS."""
    stream = real_hello("big.example", [f"p{i:03d}".ljust(200, "x") for i in range(90)])
    assert len(stream) > MAX_PEEK
    assert stream[5 + 16384] == 0x16  # a second record
    assert parse_client_hello(stream) is Peek.NOT_TLS
    # The answer comes as soon as the limit is known to be exceeded.
    assert parse_client_hello(stream[:9]) is Peek.NOT_TLS
    big = parse_client_hello(stream, limit=1 << 16)
    assert isinstance(big, ClientHello) and big.server_name == "big.example"
    assert len(big.alpn) == 90


def test_limit_counts_record_headers() -> None:
    """The whole hello, headers included, must fit the limit; one byte less is not TLS."""
    stream = records(message(sni(b"a.example")), 10)
    assert parse_client_hello(stream, limit=len(stream)) == ClientHello("a.example")
    assert parse_client_hello(stream, limit=len(stream) - 1) is Peek.NOT_TLS


# --- hand-built hellos ---------------------------------------------------------------------

VALID = [
    pytest.param(message(sni(b"host.example")), ClientHello("host.example"), id="sni-only"),
    pytest.param(message(None), ClientHello(None), id="no-extensions-block"),
    pytest.param(message(b""), ClientHello(None), id="empty-extensions-block"),
    pytest.param(message(sni(b"a.example", name_type=1) + alpn(b"h2")), ClientHello(None, ("h2",)),
                 id="unknown-name-type-skipped"),
    pytest.param(message(sni(b"x.example.")), ClientHello("x.example"), id="trailing-dot"),
    pytest.param(message(ext(0xFE0D, b"\x00" * 40) + sni(b"e.example")),
                 ClientHello("e.example"), id="unknown-extension-skipped"),
    pytest.param(message(alpn(b"\xff\x00")), ClientHello(None, ("\xff\x00",)),
                 id="alpn-bytes-latin1"),
]  # fmt: skip


@pytest.mark.parametrize(("handshake", "expected"), VALID)
def test_hand_built_hellos(handshake: bytes, expected: ClientHello) -> None:
    """Edge cases of the ClientHello layout that are still valid."""
    stream = records(handshake)
    assert parse_client_hello(stream) == expected
    assert_every_prefix_needs_more(stream)


def record_with_length(length: int) -> bytes:
    return bytes((0x16, 3, 1)) + length.to_bytes(2, "big")


NOT_TLS = [
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", id="http"),
    pytest.param(b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10", id="sslv2-hello"),
    pytest.param(b"\x00", id="nul"),
    pytest.param(b"\x16\x02", id="record-version-2"),
    pytest.param(record_with_length(0), id="empty-record"),
    pytest.param(record_with_length((1 << 14) + 1), id="record-over-2^14"),
    pytest.param(records(message(sni(b"a")), kind=0x17), id="application-data-record"),
    pytest.param(records(message(sni(b"a"), kind=2)), id="server-hello"),
    pytest.param(records(message(sni(b"a"))[:20], 10) + bytes((0x15, 3, 1, 0, 2, 2, 40)),
                 id="alert-interleaved"),
    pytest.param(records(message(sni(b"a"), version=b"\x02\x00")), id="hello-version-2"),
    pytest.param(records(message(sni(b"a"), session_id=bytes(33))), id="session-id-33"),
    pytest.param(records(message(sni(b"a"), suites=b"\x13")), id="odd-cipher-suites"),
    pytest.param(records(message(sni(b"a"), suites=b"")), id="no-cipher-suites"),
    pytest.param(records(message(sni(b"a"), compression=b"")), id="no-compression"),
    pytest.param(records(message(sni(b"a"), trailing=b"\x00")), id="bytes-after-extensions"),
    pytest.param(records(message(sni(b"a") + sni(b"b"))), id="duplicate-sni-extension"),
    pytest.param(records(message(sni(b"a", b"b"))), id="two-host-names"),
    pytest.param(records(message(sni(b""))), id="empty-host-name"),
    pytest.param(records(message(sni(b"."))), id="host-name-only-a-dot"),
    pytest.param(records(message(sni(b"caf\xc3\xa9.example"))), id="non-ascii-host-name"),
    pytest.param(records(message(sni(b"a b"))), id="space-in-host-name"),
    pytest.param(records(message(ext(0, b""))), id="empty-sni-extension"),
    pytest.param(records(message(ext(0, vec16(b"")))), id="empty-server-name-list"),
    pytest.param(records(message(ext(0, vec16(b"\x00\x00\x05ab")))), id="host-name-overflow"),
    pytest.param(records(message(ext(0, vec16(b"\x00" + vec16(b"a")) + b"x"))),
                 id="sni-extension-trailing-byte"),
    pytest.param(records(message(ext(16, vec16(b"")))), id="empty-alpn-list"),
    pytest.param(records(message(ext(16, vec16(b"\x00")))), id="empty-alpn-name"),
    pytest.param(records(message(ext(16, vec16(b"\x05h2")))), id="alpn-name-overflow"),
    pytest.param(records(message(alpn(b"h2") + alpn(b"h2"))), id="duplicate-alpn-extension"),
    pytest.param(records(message(b"\x00\x00\xff\xff")), id="extension-overflows-block"),
    pytest.param(records(message(b"\x00")), id="truncated-extension-header"),
]  # fmt: skip


@pytest.mark.parametrize("stream", NOT_TLS)
def test_malformed_input_is_not_tls(stream: bytes) -> None:
    """Garbage, other protocols and malformed hellos are not TLS, never an exception."""
    assert parse_client_hello(stream) is Peek.NOT_TLS


def test_empty_input_needs_more() -> None:
    """No bytes yet: wait."""
    assert parse_client_hello(b"") is Peek.NEED_MORE


def test_huge_announced_lengths_answer_early() -> None:
    """A handshake length past the limit is refused at its 9th byte, not buffered for."""
    head = record_with_length(16384) + b"\x01\xff\xff\xff"
    assert parse_client_hello(head) is Peek.NOT_TLS


def test_mutated_hellos_never_raise() -> None:
    """Thousands of random corruptions of a real hello each get an answer, never an exception."""
    rng = random.Random(20240521)
    base = real_hello("fuzz.example", ["h2", "http/1.1"])
    for _ in range(4000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            where = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.5:
                data[where] = rng.randrange(256)
            elif choice < 0.8 and where + 1 < len(data):
                data[where : where + 2] = rng.choice([b"\x00\x00", b"\xff\xff", b"\x00\x01"])
            else:
                del data[where:]
                break
        result = parse_client_hello(bytes(data))
        assert isinstance(result, (ClientHello, Peek))


def test_random_streams_never_raise() -> None:
    """Random bytes behind a plausible record header get an answer, never an exception."""
    rng = random.Random(7)
    for _ in range(3000):
        length = rng.randrange(1, 600)
        body = bytes([1]) + rng.randbytes(length)
        data = bytes((0x16, 3, rng.randrange(5))) + len(body).to_bytes(2, "big") + body
        result = parse_client_hello(data[: rng.randrange(len(data) + 1)])
        assert isinstance(result, (ClientHello, Peek))
