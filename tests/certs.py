"""Test helper: a throwaway certificate authority that issues leaf certificates.

``make_ca(dir)`` writes a self-signed CA into ``dir``; ``ca.issue(dir, names)``
writes a leaf certificate and its key signed by that CA and returns their paths.
Names that parse as IP addresses become IP SANs, the rest DNS SANs; the first
name is also the subject CN. Leaves carry both serverAuth and clientAuth usage,
so one call serves for server and client certificates. Keys are P-256 (fast).
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_serial = itertools.count(1000)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _san_entry(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


@dataclass
class CA:
    """A CA whose certificate lives at ``cert_path``."""

    cert_path: Path
    key_path: Path
    _cert: x509.Certificate = field(repr=False)
    _key: ec.EllipticCurvePrivateKey = field(repr=False)

    def issue(self, dir: str | Path, names: list[str], *, san: bool = True) -> tuple[Path, Path]:
        """A leaf for ``names`` (as SANs, or only as CN when ``san`` is false)."""
        out = Path(dir)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(next(_serial))
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san_entry(n) for n in names]), critical=False
            )
        cert = builder.sign(self._key, hashes.SHA256())
        stem = re.sub(r"[^A-Za-z0-9.-]", "_", names[0].replace("*", "wildcard"))
        serial = cert.serial_number
        cert_path = out / f"{stem}-{serial}.pem"
        key_path = out / f"{stem}-{serial}-key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return cert_path, key_path


def make_ca(dir: str | Path, name: str = "Sluice Test CA") -> CA:
    """A new self-signed CA written to ``dir``/ca.pem and ``dir``/ca-key.pem."""
    out = Path(dir)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(next(_serial))
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = out / "ca.pem"
    key_path = out / "ca-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return CA(cert_path=cert_path, key_path=key_path, _cert=cert, _key=key)
