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

Certificates and keys are read and validated by ``gateway.http.tls_material``
at build time, off the hot path; any problem is a ``ConfigError`` naming the
file and key path.
"""

from __future__ import annotations

import logging
import socket
import ssl
import tempfile
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.config.dynamic import TLSConfig, TLSOptions
from gateway.config.errors import ConfigError, suggestion
from gateway.http.tls_material import (
    KeyPair,
    ca_bundle,
    default_pair,
    load_pair,
    spill,
)

log = logging.getLogger(__name__)

DEFAULT_OPTIONS = "default"
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
_SNICallback = Callable[[ssl.SSLObject, str | None, ssl.SSLContext], int | None]
# Server names seen in handshakes, for sni_of; shared by every build so that a
# connection accepted before a reload can still be asked about.
_SNI_SEEN: weakref.WeakKeyDictionary[ssl.SSLObject, str] = weakref.WeakKeyDictionary()

_CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)


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

    def __init__(
        self, contexts: Mapping[str, ssl.SSLContext], callbacks: Mapping[str, _SNICallback]
    ) -> None:
        self._contexts = dict(contexts)
        self._callbacks = dict(callbacks)

    @property
    def options_names(self) -> tuple[str, ...]:
        return tuple(self._contexts)

    def context_for(self, options_name: str = DEFAULT_OPTIONS) -> ssl.SSLContext:
        """The context to serve with ``options_name``; ``KeyError`` if undefined.

        Its SNI callback selects among this build's certificates.
        """
        return self._contexts[options_name]

    def select(
        self, ssl_object: ssl.SSLObject, server_name: str | None, options_name: str
    ) -> int | None:
        """Pick this build's certificate for a handshake begun on another context.

        For a listener that keeps one front context across reloads and delegates
        its SNI callback here: the certificates (and ALPN) come from this build,
        but the protocol bounds, ciphers and client verification stay those of
        the front context (see the module docstring). Unknown options refuse.
        """
        callback = self._callbacks.get(options_name)
        if callback is None:
            return ssl.AlertDescription.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        return callback(ssl_object, server_name, self._contexts[options_name])

    @staticmethod
    def sni_of(ssl_object: ssl.SSLObject) -> str | None:
        """The server name the client sent (lower-cased), or None."""
        return _SNI_SEEN.get(ssl_object)


def build_server_tls(tls: TLSConfig) -> ServerTLS:
    """Compile a TLS snapshot into server contexts; ``ConfigError`` on bad input."""
    pairs = []
    for i, cert in enumerate(tls.certificates):
        where = f"tls.certificates[{i}]"
        pairs.append(load_pair(cert.cert_file, cert.key_file, where))
        for store in cert.stores:
            if store != "default":
                log.warning(
                    "%s: TLS store %r is not supported; using the default one", where, store
                )
    fallback = default_pair(tls)
    settings = {name: _settings(opts, f"tls.options.{name}") for name, opts in tls.options.items()}
    settings.setdefault(DEFAULT_OPTIONS, _settings(TLSOptions(), "tls.options.default"))
    index = _SNIIndex(pairs, fallback)
    contexts, callbacks = {}, {}
    with tempfile.TemporaryDirectory(prefix="sluice-tls-") as tmp:
        files = [spill(Path(tmp), i, pair) for i, pair in enumerate([fallback, *pairs])]
        for name, s in settings.items():
            base, *per_cert = (_server_context(s, f, pair.where) for f, pair in files)
            callbacks[name] = base.sni_callback = _sni_callback(index, base, per_cert, s.sni_strict)
            contexts[name] = base
    return ServerTLS(contexts, callbacks)


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
        ctx.load_verify_locations(cadata=ca_bundle(root_cas, "serversTransport.rootCAs"))
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

    def wrap_socket(
        self,
        sock: socket.socket,
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

    def __init__(self, pairs: Iterable[KeyPair], default: KeyPair) -> None:
        # Values are positions in the per-certificate context list; -1 is the
        # default certificate, which the base context already serves.
        self.exact: dict[str, int] = {}
        self.wildcard: dict[str, int] = {}
        for i, pair in [*enumerate(pairs), (-1, default)]:
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
    index: _SNIIndex, base: ssl.SSLContext, per_cert: list[ssl.SSLContext], strict: bool
) -> _SNICallback:
    refuse = ssl.AlertDescription.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

    def on_sni(obj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        found = None
        if server_name:
            _SNI_SEEN[obj] = server_name.lower()
            found = index.lookup(server_name)
        if found is None and strict:
            return refuse
        # Assign even the default: a front context (ServerTLS.select) is not base.
        target = base if found is None or found < 0 else per_cert[found]
        if obj.context is not target:
            obj.context = target
        return None

    return on_sni


# --- Options ---------------------------------------------------------------------


def _settings(opts: TLSOptions, where: str) -> _Settings:
    minimum = _version(opts.min_version or "VersionTLS12", f"{where}.minVersion")
    maximum = _version(opts.max_version, f"{where}.maxVersion") if opts.max_version else None
    if maximum is not None and maximum < minimum:
        raise ConfigError(
            f"maxVersion {opts.max_version} is below minVersion {opts.min_version}",
            path=f"{where}.maxVersion",
        )
    if minimum < ssl.TLSVersion.TLSv1_2:
        log.warning(
            "%s: minVersion %s is set, but OpenSSL's security level may still refuse it",
            where,
            opts.min_version,
        )
    ciphers = []
    for i, suite in enumerate(opts.cipher_suites):
        if suite in _TLS13_CIPHERS:
            continue  # fixed by OpenSSL, as by Go: TLS 1.3 suites are always on
        if suite not in _CIPHERS:
            hint = suggestion(suite, [*_CIPHERS, *_TLS13_CIPHERS])
            raise ConfigError(
                f"unknown cipher suite {suite!r}{hint}", path=f"{where}.cipherSuites[{i}]"
            )
        ciphers.append(_CIPHERS[suite])
    if ciphers:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(":".join(ciphers))
        except ssl.SSLError as exc:
            raise ConfigError(
                f"none of the cipher suites is available in this OpenSSL: {exc}",
                path=f"{where}.cipherSuites",
            ) from exc
    for i, curve in enumerate(opts.curve_preferences):
        if curve not in _CURVES:
            raise ConfigError(
                f"unknown curve {curve!r}{suggestion(curve, _CURVES)}",
                path=f"{where}.curvePreferences[{i}]",
            )
    verify_mode, ca_data = _client_auth(opts, f"{where}.clientAuth")
    return _Settings(
        minimum=minimum,
        maximum=maximum,
        ciphers=":".join(ciphers),
        verify_mode=verify_mode,
        ca_data=ca_data,
        sni_strict=opts.sni_strict,
    )


def _version(name: str, where: str) -> ssl.TLSVersion:
    try:
        return _VERSIONS[name]
    except KeyError:
        choices = ", ".join(_VERSIONS)
        raise ConfigError(f"unknown TLS version {name!r} (one of {choices})", path=where) from None


def _client_auth(opts: TLSOptions, where: str) -> tuple[ssl.VerifyMode, str]:
    auth = opts.client_auth
    if auth is None:
        return ssl.CERT_NONE, ""
    kind = auth.client_auth_type or "NoClientCert"
    if kind not in _CLIENT_AUTH_TYPES:
        raise ConfigError(
            f"unknown clientAuthType {kind!r}{suggestion(kind, _CLIENT_AUTH_TYPES)}",
            path=f"{where}.clientAuthType",
        )
    ca_data = ca_bundle(auth.ca_files, f"{where}.caFiles") if auth.ca_files else ""
    if kind == "NoClientCert":
        return ssl.CERT_NONE, ""
    if kind == "RequestClientCert":
        if not ca_data:
            log.warning(
                "%s: RequestClientCert without caFiles requests no certificate "
                "(Python verifies every certificate it requests)",
                where,
            )
            return ssl.CERT_NONE, ""
        return ssl.CERT_OPTIONAL, ca_data
    if not ca_data:
        raise ConfigError(
            f"{kind} needs caFiles: client certificates are verified against them",
            path=f"{where}.caFiles",
        )
    if kind == "VerifyClientCertIfGiven":
        return ssl.CERT_OPTIONAL, ca_data
    return ssl.CERT_REQUIRED, ca_data


def _server_context(s: _Settings, pem_file: Path, where: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        # Python deprecates TLS 1.0/1.1 bounds; _settings already said so in the log.
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = s.minimum
        if s.maximum is not None:
            ctx.maximum_version = s.maximum
    if s.ciphers:
        ctx.set_ciphers(s.ciphers)
    if s.verify_mode != ssl.CERT_NONE:
        ctx.load_verify_locations(cadata=s.ca_data)
        ctx.verify_mode = s.verify_mode
    ctx.set_alpn_protocols(list(ALPN))
    try:
        ctx.load_cert_chain(pem_file)
    except ssl.SSLError as exc:
        raise ConfigError(f"OpenSSL refused the certificate or key: {exc}", path=where) from exc
    return ctx
