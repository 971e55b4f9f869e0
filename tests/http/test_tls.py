"""Tests for gateway.http.tls: real handshakes on 127.0.0.1 against built contexts."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.config.dynamic import (
    Certificate,
    ClientAuth,
    DefaultCertificate,
    TLSConfig,
    TLSOptions,
    TLSStore,
)
from gateway.config.errors import ConfigError
from gateway.config.model import frozen_map
from gateway.http.tls import ServerTLS, build_client_tls, build_server_tls
from gateway.http.tls_material import DEFAULT_CERT_CN
from tests.certs import CA, make_ca

# asyncio reports a handshake the server aborts as either of these.
REFUSED = (ssl.SSLError, ConnectionError)


@dataclass
class PKI:
    ca: CA
    dir: Path
    a: tuple[Path, Path]
    b: tuple[Path, Path]
    wild: tuple[Path, Path]
    fallback: tuple[Path, Path]
    client: tuple[Path, Path]


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    ca = make_ca(tmp_path)
    return PKI(
        ca=ca,
        dir=tmp_path,
        a=ca.issue(tmp_path, ["a.test"]),
        b=ca.issue(tmp_path, ["b.test", "alias.test"]),
        wild=ca.issue(tmp_path, ["*.wild.test"]),
        fallback=ca.issue(tmp_path, ["fallback.test"]),
        client=ca.issue(tmp_path, ["client.test"]),
    )


def cert(pair: tuple[Path, Path]) -> Certificate:
    return Certificate(cert_file=str(pair[0]), key_file=str(pair[1]))


def config(pki: PKI, *, default: bool = True, **options: TLSOptions) -> TLSConfig:
    stores = {}
    if default:
        fb = DefaultCertificate(cert_file=str(pki.fallback[0]), key_file=str(pki.fallback[1]))
        stores["default"] = TLSStore(default_certificate=fb)
    return TLSConfig(
        certificates=(cert(pki.a), cert(pki.b), cert(pki.wild)),
        options=frozen_map(options),
        stores=frozen_map(stores),
    )


@dataclass
class Served:
    port: int
    peer_certs: list[dict[str, object]]


@contextlib.asynccontextmanager
async def serve(ctx: ssl.SSLContext) -> AsyncIterator[Served]:
    """A TLS server that answers b"ok" after the handshake and records client certs."""
    peers: list[dict[str, object]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        obj = writer.get_extra_info("ssl_object")
        peers.append(obj.getpeercert() or {})
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            writer.write(b"ok")
            await writer.drain()
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    async with server:
        yield Served(server.sockets[0].getsockname()[1], peers)


def client_ctx(
    pki: PKI,
    *,
    verify: bool = True,
    max_version: ssl.TLSVersion | None = None,
    client_cert: tuple[Path, Path] | None = None,
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert_path))
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if max_version is not None:
        ctx.maximum_version = max_version
    if client_cert is not None:
        ctx.load_cert_chain(*client_cert)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


@dataclass
class Result:
    cert: x509.Certificate
    reply: bytes
    version: str | None
    cipher: str
    alpn: str | None


async def connect(port: int, ctx: ssl.SSLContext, sni: str) -> Result:
    """Handshake with SNI ``sni`` ("" sends none) and read the server's reply."""
    if not sni:
        ctx.check_hostname = False
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=sni)
    obj = writer.get_extra_info("ssl_object")
    try:
        reply = await reader.read()
    except (ssl.SSLError, ConnectionError):
        reply = b""
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()
    der = obj.getpeercert(binary_form=True)
    return Result(
        cert=x509.load_der_x509_certificate(der),
        reply=reply,
        version=obj.version(),
        cipher=obj.cipher()[0],
        alpn=obj.selected_alpn_protocol(),
    )


def common_name(c: x509.Certificate) -> str:
    return str(c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


@pytest.mark.parametrize(
    ("sni", "expected_cn"),
    [
        ("a.test", "a.test"),
        ("b.test", "b.test"),
        ("alias.test", "b.test"),
        ("A.TEST", "a.test"),
        ("x.wild.test", "*.wild.test"),
        ("deep.x.wild.test", "fallback.test"),
        ("wild.test", "fallback.test"),
        ("unknown.test", "fallback.test"),
        ("", "fallback.test"),
    ],
    ids=[
        "exact",
        "second-cert",
        "second-san",
        "case-insensitive",
        "wildcard",
        "wildcard-one-label-only",
        "wildcard-not-apex",
        "unknown-gets-default",
        "no-sni-gets-default",
    ],
)
async def test_sni_selects_certificate(pki: PKI, sni: str, expected_cn: str) -> None:
    """The certificate whose SAN matches the SNI is served, else the store default."""
    tls = build_server_tls(config(pki))
    async with serve(tls.context_for("default")) as srv:
        result = await connect(srv.port, client_ctx(pki, verify=False), sni)
    assert common_name(result.cert) == expected_cn
    assert result.reply == b"ok"


async def test_generated_default_certificate(pki: PKI) -> None:
    """Without a store default, a self-signed SLUICE DEFAULT CERT, the same for every build."""
    seen = []
    for _ in range(2):
        tls = build_server_tls(config(pki, default=False))
        async with serve(tls.context_for()) as srv:
            seen.append(await connect(srv.port, client_ctx(pki, verify=False), "nope.test"))
    assert common_name(seen[0].cert) == DEFAULT_CERT_CN
    assert seen[0].cert == seen[1].cert


async def test_common_name_used_without_san(pki: PKI) -> None:
    """A certificate with no SAN is selected by its CN."""
    cn_only = pki.ca.issue(pki.dir, ["legacy.test"], san=False)
    tls = build_server_tls(TLSConfig(certificates=(cert(pki.a), cert(cn_only))))
    async with serve(tls.context_for()) as srv:
        result = await connect(srv.port, client_ctx(pki, verify=False), "legacy.test")
    assert common_name(result.cert) == "legacy.test"


async def test_min_version_refuses_older_client(pki: PKI) -> None:
    """A client capped at TLS 1.2 cannot talk to a minVersion TLS 1.3 server."""
    tls = build_server_tls(config(pki, modern=TLSOptions(min_version="VersionTLS13")))
    async with serve(tls.context_for("modern")) as srv:
        old = client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2)
        with pytest.raises(REFUSED):
            await connect(srv.port, old, "a.test")
        assert (await connect(srv.port, client_ctx(pki), "a.test")).version == "TLSv1.3"


async def test_max_version_and_cipher_suite(pki: PKI) -> None:
    """maxVersion caps the protocol and Go cipher suite names select OpenSSL suites."""
    opts = TLSOptions(
        max_version="VersionTLS12",
        cipher_suites=("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"),
    )
    tls = build_server_tls(config(pki, default=True, legacy=opts))
    async with serve(tls.context_for("legacy")) as srv:
        result = await connect(srv.port, client_ctx(pki), "b.test")
    assert result.version == "TLSv1.2"
    assert result.cipher == "ECDHE-ECDSA-AES256-GCM-SHA384"
    assert common_name(result.cert) == "b.test"


async def test_old_versions_accepted_without_warnings(pki: PKI) -> None:
    """VersionTLS10 builds (Python's DeprecationWarning is not leaked) and TLS 1.2 still works."""
    tls = build_server_tls(config(pki, old=TLSOptions(min_version="VersionTLS10")))
    assert tls.context_for("old").minimum_version == ssl.TLSVersion.TLSv1
    async with serve(tls.context_for("old")) as srv:
        assert (await connect(srv.port, client_ctx(pki), "a.test")).reply == b"ok"


@pytest.mark.parametrize("sni", ["", "unknown.test"], ids=["no-sni", "unknown-sni"])
async def test_sni_strict_refuses(pki: PKI, sni: str) -> None:
    """sniStrict refuses a handshake without SNI or with a name no certificate serves."""
    tls = build_server_tls(config(pki, strict=TLSOptions(sni_strict=True)))
    async with serve(tls.context_for("strict")) as srv:
        with pytest.raises(REFUSED):
            await connect(srv.port, client_ctx(pki, verify=False), sni)
        assert (await connect(srv.port, client_ctx(pki), "x.wild.test")).reply == b"ok"


async def test_sni_strict_accepts_default_certificate_names(pki: PKI) -> None:
    """Under sniStrict the configured default certificate still serves its own names."""
    tls = build_server_tls(config(pki, strict=TLSOptions(sni_strict=True)))
    async with serve(tls.context_for("strict")) as srv:
        result = await connect(srv.port, client_ctx(pki), "fallback.test")
    assert common_name(result.cert) == "fallback.test"


def mtls(pki: PKI, kind: str) -> TLSOptions:
    return TLSOptions(
        client_auth=ClientAuth(ca_files=(str(pki.ca.cert_path),), client_auth_type=kind)
    )


async def test_client_auth_required(pki: PKI) -> None:
    """RequireAndVerifyClientCert refuses a client without a certificate and admits a signed one."""
    tls = build_server_tls(config(pki, mtls=mtls(pki, "RequireAndVerifyClientCert")))
    async with serve(tls.context_for("mtls")) as srv:
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            # TLS 1.3 clients finish first; the refusal arrives as an alert on read.
            assert (await connect(srv.port, client_ctx(pki), "b.test")).reply == b""
        good = await connect(srv.port, client_ctx(pki, client_cert=pki.client), "b.test")
    assert good.reply == b"ok"
    assert srv.peer_certs[-1]["subject"] == ((("commonName", "client.test"),),)


async def test_client_auth_verify_if_given(pki: PKI) -> None:
    """VerifyClientCertIfGiven admits a client without a certificate."""
    tls = build_server_tls(config(pki, opt=mtls(pki, "VerifyClientCertIfGiven")))
    async with serve(tls.context_for("opt")) as srv:
        assert (await connect(srv.port, client_ctx(pki), "a.test")).reply == b"ok"
    assert srv.peer_certs == [{}]


async def test_alpn_offers_only_http11(pki: PKI) -> None:
    """A client offering h2 and http/1.1 gets http/1.1."""
    tls = build_server_tls(config(pki))
    async with serve(tls.context_for()) as srv:
        assert (await connect(srv.port, client_ctx(pki), "b.test")).alpn == "http/1.1"


async def test_sni_of_reports_server_name(pki: PKI) -> None:
    """sni_of returns the name the client sent, lower-cased."""
    tls = build_server_tls(config(pki))
    names: list[str | None] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        names.append(tls.sni_of(writer.get_extra_info("ssl_object")))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls.context_for())
    async with server:
        port = server.sockets[0].getsockname()[1]
        await connect(port, client_ctx(pki), "A.test")
        await connect(port, client_ctx(pki, verify=False), "")
    assert names == ["a.test", None]


@pytest.mark.parametrize(
    ("sni", "options", "expected_cn"),
    [
        ("b.test", "default", "b.test"),
        ("a.test", "default", "fallback.test"),
        ("unknown.test", "default", "fallback.test"),
        ("b.test", "missing", None),
    ],
    ids=["new-cert", "dropped-cert", "new-default", "unknown-options-refused"],
)
async def test_select_from_front_context(
    pki: PKI, sni: str, options: str, expected_cn: str | None
) -> None:
    """A front context delegating to select() serves the newer build's certificates."""
    old = build_server_tls(TLSConfig(certificates=(cert(pki.a),)))
    new = build_server_tls(
        TLSConfig(
            certificates=(cert(pki.b),),
            stores=frozen_map({"default": config(pki).stores["default"]}),
        )
    )
    front = old.context_for()
    front.sni_callback = lambda obj, name, ctx: new.select(obj, name, options)
    async with serve(front) as srv:
        if expected_cn is None:
            with pytest.raises(REFUSED):
                await connect(srv.port, client_ctx(pki, verify=False), sni)
        else:
            result = await connect(srv.port, client_ctx(pki, verify=False), sni)
            assert common_name(result.cert) == expected_cn


def test_options_names(pki: PKI) -> None:
    """Every options set gets a context; "default" always exists; unknown names raise KeyError."""
    tls = build_server_tls(config(pki, strict=TLSOptions(sni_strict=True)))
    assert set(tls.options_names) == {"default", "strict"}
    assert tls.context_for("strict") is not tls.context_for("default")
    with pytest.raises(KeyError):
        tls.context_for("missing")
    assert isinstance(tls, ServerTLS)


async def test_inline_pem_certificates(pki: PKI) -> None:
    """certFile and keyFile may hold the PEM itself, as Traefik's FileOrContent allows."""
    inline = Certificate(cert_file=pki.a[0].read_text(), key_file=pki.a[1].read_text())
    tls = build_server_tls(TLSConfig(certificates=(inline,)))
    async with serve(tls.context_for()) as srv:
        assert common_name((await connect(srv.port, client_ctx(pki), "a.test")).cert) == "a.test"


def broken(pki: PKI, case: str) -> TLSConfig:
    garbage = pki.dir / "garbage.pem"
    garbage.write_text("not a certificate\n")
    ca = (str(pki.ca.cert_path),)
    match case:
        case "missing-cert":
            return TLSConfig(certificates=(Certificate(cert_file="/nope.pem", key_file="k"),))
        case "garbage-cert":
            return TLSConfig(
                certificates=(Certificate(cert_file=str(garbage), key_file=str(pki.a[1])),)
            )
        case "garbage-key":
            return TLSConfig(
                certificates=(Certificate(cert_file=str(pki.a[0]), key_file=str(garbage)),)
            )
        case "key-mismatch":
            return TLSConfig(
                certificates=(Certificate(cert_file=str(pki.a[0]), key_file=str(pki.b[1])),)
            )
        case "missing-default":
            default = DefaultCertificate(cert_file="/nope.pem", key_file=str(pki.a[1]))
            store = TLSStore(default_certificate=default)
            return TLSConfig(stores=frozen_map({"default": store}))
        case "bad-version":
            return TLSConfig(options=frozen_map({"o": TLSOptions(min_version="TLS13")}))
        case "max-below-min":
            opts = TLSOptions(min_version="VersionTLS13", max_version="VersionTLS12")
            return TLSConfig(options=frozen_map({"o": opts}))
        case "bad-cipher":
            opts = TLSOptions(cipher_suites=("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA255",))
            return TLSConfig(options=frozen_map({"o": opts}))
        case "bad-curve":
            return TLSConfig(options=frozen_map({"o": TLSOptions(curve_preferences=("P256",))}))
        case "bad-auth-type":
            auth = ClientAuth(ca_files=ca, client_auth_type="RequireCert")
            return TLSConfig(options=frozen_map({"o": TLSOptions(client_auth=auth)}))
        case "verify-without-ca":
            auth = ClientAuth(client_auth_type="RequireAndVerifyClientCert")
            return TLSConfig(options=frozen_map({"o": TLSOptions(client_auth=auth)}))
        case "missing-ca":
            auth = ClientAuth(
                ca_files=("/nope-ca.pem",), client_auth_type="VerifyClientCertIfGiven"
            )
            return TLSConfig(options=frozen_map({"o": TLSOptions(client_auth=auth)}))
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "path", "needle"),
    [
        ("missing-cert", "tls.certificates[0].certFile", "/nope.pem"),
        ("garbage-cert", "tls.certificates[0].certFile", "garbage.pem"),
        ("garbage-key", "tls.certificates[0].keyFile", "garbage.pem"),
        ("key-mismatch", "tls.certificates[0].keyFile", "does not match"),
        ("missing-default", "tls.stores.default.defaultCertificate.certFile", "/nope.pem"),
        ("bad-version", "tls.options.o.minVersion", "one of VersionTLS10"),
        ("max-below-min", "tls.options.o.maxVersion", "below minVersion"),
        ("bad-cipher", "tls.options.o.cipherSuites[0]", "did you mean"),
        ("bad-curve", "tls.options.o.curvePreferences[0]", "CurveP256"),
        ("bad-auth-type", "tls.options.o.clientAuth.clientAuthType", "RequireAnyClientCert"),
        ("verify-without-ca", "tls.options.o.clientAuth.caFiles", "needs caFiles"),
        ("missing-ca", "tls.options.o.clientAuth.caFiles[0]", "/nope-ca.pem"),
    ],
    ids=[
        "missing-cert",
        "garbage-cert",
        "garbage-key",
        "key-mismatch",
        "missing-default",
        "bad-version",
        "max-below-min",
        "bad-cipher",
        "bad-curve",
        "bad-auth-type",
        "verify-without-ca",
        "missing-ca",
    ],
)
def test_invalid_configuration(pki: PKI, case: str, path: str, needle: str) -> None:
    """Bad files and options raise ConfigError naming the key path and the culprit."""
    with pytest.raises(ConfigError) as err:
        build_server_tls(broken(pki, case))
    assert err.value.path == path
    assert needle in str(err.value)


# --- Client side ------------------------------------------------------------------


async def backend(pki: PKI) -> ServerTLS:
    return build_server_tls(TLSConfig(certificates=(cert(pki.b),)))


async def test_client_tls_root_cas(pki: PKI) -> None:
    """rootCAs replace the system roots: the test CA verifies, the system roots do not."""
    tls = await backend(pki)
    async with serve(tls.context_for()) as srv:
        trusted = build_client_tls(False, (str(pki.ca.cert_path),), "")
        assert (await connect(srv.port, trusted, "b.test")).reply == b"ok"
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect(srv.port, build_client_tls(False, (), ""), "b.test")


async def test_client_tls_insecure_skip_verify(pki: PKI) -> None:
    """insecureSkipVerify accepts an untrusted certificate and a mismatched name."""
    tls = await backend(pki)
    async with serve(tls.context_for()) as srv:
        result = await connect(srv.port, build_client_tls(True, (), ""), "other.test")
    assert result.reply == b"ok"


async def test_client_tls_server_name_pins_sni(pki: PKI) -> None:
    """serverName is sent as SNI and verified in place of the dialled host."""
    tls = await backend(pki)
    names: list[str | None] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        names.append(tls.sni_of(writer.get_extra_info("ssl_object")))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls.context_for())
    async with server:
        port = server.sockets[0].getsockname()[1]
        ctx = build_client_tls(False, (str(pki.ca.cert_path),), "alias.test")
        # Dialled as 127.0.0.1, which the certificate does not name.
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()
    assert names == ["alias.test"]


def test_client_tls_missing_root_ca() -> None:
    """An unreadable rootCAs file is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=r"/nope-root\.pem"):
        build_client_tls(False, ("/nope-root.pem",), "")
