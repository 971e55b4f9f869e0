"""TLS contexts: server side for entry points, client side for upstream servers.

``build_server_tls`` turns a ``TLSConfig`` snapshot into one ``ssl.SSLContext``
per TLS options name (``"default"`` always exists) with Traefik's certificate
selection by SNI: exact SAN (or CN when a certificate has no SAN), then a
one-label wildcard, case-insensitive; when nothing matches, the store's default
certificate, else a self-signed "SLUICE DEFAULT CERT" generated once per process.

Python's ``ssl`` can only pick a certificate by handing the handshake another
context in the SNI callback. OpenSSL keeps the protocol bounds, cipher list and
verify mode of the context the connection started with, but reads ALPN and the
client-CA trust store from the switched-to one. So every certificate gets its
own context *per options set*, built from the same settings, and the outcome is
the same whichever context a setting is read from.

Honest gaps against Go's ``crypto/tls`` (which Traefik uses):

* TLS 1.3 cipher suites are not configurable from Python (nor from Go); their
  names are accepted and ignored. ``curvePreferences`` is validated but not
  applied: OpenSSL's default groups already offer all four curves.
* ``VersionTLS10``/``VersionTLS11`` are set as asked, but OpenSSL's security
  level may still refuse to negotiate them; this is logged.
* Python cannot request a client certificate without verifying it. So
  ``RequestClientCert`` verifies against ``caFiles`` when given and requests
  nothing without them; ``RequireAnyClientCert`` needs ``caFiles`` and verifies.
* Only ``http/1.1`` is offered through ALPN: the data path speaks HTTP/1.1.
* TLS options apply per entry point (``context_for``). Traefik also switches
  options per router host, which needs a new SSL object, not a new context.

Certificate and key values may be file paths or inline PEM (Traefik's
``FileOrContent``). Everything is read and validated at build time, off the
hot path; any problem is a ``ConfigError`` naming the file and key path.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import logging
import ssl
import tempfile
import warnings
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.config.dynamic import TLSConfig, TLSOptions
from gateway.config.errors import ConfigError, suggestion

log = logging.getLogger(__name__)

DEFAULT_OPTIONS = "default"
DEFAULT_CERT_CN = "SLUICE DEFAULT CERT"
ALPN = ("http/1.1",)

_VERSIONS = {
    "VersionTLS10": ssl.TLSVersion.TLSv1,
    "VersionTLS11": ssl.TLSVersion.TLSv1_1,
    "VersionTLS12": ssl.TLSVersion.TLSv1_2,
    "VersionTLS13": ssl.TLSVersion.TLSv1_3,
}

# Go's cipher suite names (crypto/tls) to OpenSSL's, TLS 1.2 and below.
_CIPHERS = {
    "TLS_RSA_WITH_RC4_128_SHA": "RC4-SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA": "ECDHE-ECDSA-RC4-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA": "ECDHE-RSA-RC4-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
_TLS13_CIPHERS = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)
_CURVES = frozenset({"CurveP256", "CurveP384", "CurveP521", "X25519"})
_CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)


@dataclass(frozen=True, slots=True)
class _KeyPair:
    """A validated certificate chain and key, and the names it serves."""

    pem: bytes  # key then chain: one file is all load_cert_chain needs
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Settings:
    """One TLS options set, validated and translated to OpenSSL terms."""

    minimum: ssl.TLSVersion
    maximum: ssl.TLSVersion | None
    ciphers: str
    verify_mode: ssl.VerifyMode
    ca_data: str
    sni_strict: bool


class ServerTLS:
    """Server contexts by TLS options name, with SNI certificate selection."""

    def __init__(self, contexts: Mapping[str, ssl.SSLContext]) -> None:
        self._contexts = dict(contexts)
        self._sni: weakref.WeakKeyDictionary[ssl.SSLObject, str] = weakref.WeakKeyDictionary()

    @property
    def options_names(self) -> tuple[str, ...]:
        return tuple(self._contexts)

    def context_for(self, options_name: str = DEFAULT_OPTIONS) -> ssl.SSLContext:
        """The context to serve with ``options_name``; ``KeyError`` if undefined."""
        return self._contexts[options_name]

    def sni_of(self, ssl_object: ssl.SSLObject) -> str | None:
        """The server name the client sent (lower-cased), or None."""
        return self._sni.get(ssl_object)


def build_server_tls(tls: TLSConfig) -> ServerTLS:
    """Compile a TLS snapshot into server contexts; ``ConfigError`` on bad input."""
    pairs = []
    for i, cert in enumerate(tls.certificates):
        where = f"tls.certificates[{i}]"
        pairs.append(_load_pair(cert.cert_file, cert.key_file, where))
        for store in cert.stores:
            if store != "default":
                log.warning("%s: TLS store %r is not supported; using the default store", where, store)
    default_pair = _default_pair(tls)
    settings = {name: _settings(opts, f"tls.options.{name}") for name, opts in tls.options.items()}
    settings.setdefault(DEFAULT_OPTIONS, _settings(TLSOptions(), "tls.options.default"))
    server = ServerTLS({})
    with tempfile.TemporaryDirectory(prefix="sluice-tls-") as tmp:
        files = [_spill(Path(tmp), i, pair) for i, pair in enumerate([default_pair, *pairs])]
        for name, s in settings.items():
            per_cert = [_server_context(s, f) for f in files]
            base = per_cert[0]
            base.sni_callback = _sni_callback(
                _SNIIndex(pairs, default_pair), per_cert[1:], s.sni_strict, server
            )
            server._contexts[name] = base
    return server


def build_client_tls(
    insecure_skip_verify: bool, root_cas: tuple[str, ...], server_name: str
) -> ssl.SSLContext:
    """A context for upstream https, as a Traefik serversTransport describes it.

    ``root_cas`` replace the system roots (as in Traefik); ``server_name``, when
    set, is sent as SNI and verified instead of the host being dialled.
    """
    ctx = _ClientContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.pinned_server_name = server_name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(list(ALPN))
    if root_cas:
        ctx.load_verify_locations(
            cadata=_ca_bundle(root_cas, "serversTransport.rootCAs")
        )
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _ClientContext(ssl.SSLContext):
    """Client context that substitutes serversTransport.serverName for the host."""

    pinned_server_name = ""

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        name = self.pinned_server_name or server_hostname
        return super().wrap_bio(incoming, outgoing, server_side, name, session)

    def wrap_socket(  # type: ignore[override]  # typeshed's sock is a positional-only
        self,
        sock: ssl.socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        name = self.pinned_server_name or server_hostname
        return super().wrap_socket(
            sock, server_side, do_handshake_on_connect, suppress_ragged_eofs, name, session
        )


# --- SNI selection -------------------------------------------------------------


class _SNIIndex:
    """Exact names, then one-label wildcards; the first certificate listed wins."""

    __slots__ = ("exact", "wildcard")

    def __init__(self, pairs: Iterable[_KeyPair], default: _KeyPair | None) -> None:
        # Values are positions in the per-certificate context list; -1 is the
        # default certificate, which the base context already serves.
        self.exact: dict[str, int] = {}
        self.wildcard: dict[str, int] = {}
        indexed = [(i, p) for i, p in enumerate(pairs)]
        if default is not None:
            indexed.append((-1, default))
        for i, pair in indexed:
            for name in pair.names:
                if name.startswith("*."):
                    self.wildcard.setdefault(name[2:], i)
                else:
                    self.exact.setdefault(name, i)

    def lookup(self, server_name: str) -> int | None:
        name = server_name.lower().rstrip(".")
        found = self.exact.get(name)
        if found is None:
            _, _, parent = name.partition(".")
            found = self.wildcard.get(parent) if parent else None
        return found


def _sni_callback(
    index: _SNIIndex, per_cert: list[ssl.SSLContext], strict: bool, server: ServerTLS
) -> _SNICallback:
    refuse = ssl.AlertDescription.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

    def on_sni(obj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        if not server_name:
            return refuse if strict else None
        server._sni[obj] = server_name.lower()
        found = index.lookup(server_name)
        if found is None:
            return refuse if strict else None
        if found >= 0:
            obj.context = per_cert[found]
        return None

    return on_sni


if False:  # pragma: no cover - typing only
    from collections.abc import Callable

    _SNICallback = Callable[[ssl.SSLObject, str | None, ssl.SSLContext], int | None]
