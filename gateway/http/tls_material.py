"""TLS certificate material: reading, validating and naming certificates and keys.

Certificate and key values may be file paths or inline PEM (Traefik's
``FileOrContent``). Everything is read and validated when a configuration is
built, off the hot path; any problem is a ``ConfigError`` naming the file and
key path. ``gateway.http.tls`` builds SSL contexts from what this returns.
"""

from __future__ import annotations

import datetime
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.config.dynamic import TLSConfig
from gateway.config.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_CERT_CN = "SLUICE DEFAULT CERT"


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A validated certificate chain and key, and the names it serves."""

    pem: bytes  # key then chain: one file is all load_cert_chain needs
    names: tuple[str, ...]
    where: str


def read_material(value: str, where: str, what: str) -> bytes:
    """Inline PEM, or the contents of the file it names (Traefik's FileOrContent)."""
    if value.lstrip().startswith("-----BEGIN"):
        return value.encode("ascii", "replace")
    if not value:
        raise ConfigError(f"{what} is empty", path=where)
    try:
        return Path(value).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {value!r}: {exc.strerror}", path=where) from exc


def label(value: str) -> str:
    return "inline PEM" if value.lstrip().startswith("-----BEGIN") else repr(value)


def load_pair(cert_file: str, key_file: str, where: str) -> KeyPair:
    cert_pem = read_material(cert_file, f"{where}.certFile", "certificate file")
    key_pem = read_material(key_file, f"{where}.keyFile", "key file")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise ConfigError(
            f"certificate file {label(cert_file)} holds no valid PEM certificate: {exc}",
            path=f"{where}.certFile",
        ) from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"key file {label(key_file)} holds no usable unencrypted PEM private key: {exc}",
            path=f"{where}.keyFile",
        ) from exc
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != chain[0].public_key().public_bytes(der, spki):
        raise ConfigError(
            f"key file {label(key_file)} does not match certificate file {label(cert_file)}",
            path=f"{where}.keyFile",
        )
    pem = key_pem.rstrip() + b"\n" + cert_pem
    return KeyPair(pem=pem, names=cert_names(chain[0]), where=where)


def cert_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        names = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        if names:
            return tuple(names)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return tuple(str(a.value).lower() for a in cns)


def ca_bundle(values: tuple[str, ...], where: str) -> str:
    bundle = []
    for i, value in enumerate(values):
        pem = read_material(value, f"{where}[{i}]", "CA file")
        try:
            x509.load_pem_x509_certificates(pem)
        except ValueError as exc:
            raise ConfigError(
                f"CA file {label(value)} holds no valid PEM certificate: {exc}",
                path=f"{where}[{i}]",
            ) from exc
        bundle.append(pem.decode("ascii", "replace").strip())
    return "\n".join(bundle) + "\n"


def default_pair(tls: TLSConfig) -> KeyPair:
    store = tls.stores.get("default")
    default = store.default_certificate if store is not None else None
    if default is not None and (default.cert_file or default.key_file):
        return load_pair(
            default.cert_file, default.key_file, "tls.stores.default.defaultCertificate"
        )
    return generated_default()


@functools.cache
def generated_default() -> KeyPair:
    """Traefik's fallback certificate: self-signed, made once per process."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEFAULT_CERT_CN)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Its CN is not a host name; leaving it out of the SNI index keeps it a fallback.
    pem = key_pem + cert.public_bytes(serialization.Encoding.PEM)
    return KeyPair(pem=pem, names=(), where="generated default certificate")


def spill(tmp: Path, i: int, pair: KeyPair) -> tuple[Path, KeyPair]:
    """Write a pair where load_cert_chain can read it: it accepts only paths."""
    path = tmp / f"{i}.pem"
    path.write_bytes(pair.pem)  # TemporaryDirectory is 0700 and removed after the build
    return path, pair
