"""A local certificate authority and a server certificate for https://localhost.

The SDKs' ``from_connection_string`` always uses https (acs-wire.md 1.1), so the emulator needs a
certificate the client trusts. Users point REQUESTS_CA_BUNDLE / SSL_CERT_FILE at ``ca-bundle.pem``,
which also carries certifi's public roots so their other HTTPS traffic keeps working.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from callgrid.security._files import write_atomic

__all__ = ["TlsMaterial", "ensure_tls_material"]

CA_COMMON_NAME = "callgrid local CA"
CA_LIFETIME = timedelta(days=3650)
# Apple platforms reject server certificates valid for more than 825 days.
SERVER_LIFETIME = timedelta(days=730)
# Regenerate the server certificate when less than this is left.
RENEW_MARGIN = timedelta(days=1)
# Back-date notBefore a little so a client whose clock lags slightly still accepts a fresh certificate.
BACKDATE = timedelta(hours=1)

_KEY_MODE = 0o600
_CERT_MODE = 0o644


@dataclass(frozen=True)
class TlsMaterial:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    ca_bundle: Path


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _load_ca(
    cert_path: Path, key_path: Path, now: datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The existing CA if it is usable (parses, matches its key, not about to expire), else None."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if _spki(cert.public_key()) != _spki(key.public_key()):
        return None
    # The CA must outlive a freshly issued server certificate, or clients would reject the chain early.
    if cert.not_valid_after_utc - now < SERVER_LIFETIME + RENEW_MARGIN:
        return None
    return cert, key


def _new_ca(now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "callgrid"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
        .add_extension(ski, critical=False)
        # Python 3.13's default VERIFY_X509_STRICT wants an AKI even on the root.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _san_entries(hostnames: Sequence[str], ips: Sequence[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    entries.extend(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips)
    return entries


def _server_cert_ok(
    cert_path: Path,
    key_path: Path,
    ca: x509.Certificate,
    hostnames: Sequence[str],
    ips: Sequence[str],
    now: datetime,
) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    if cert.not_valid_after_utc - now <= RENEW_MARGIN or cert.not_valid_before_utc > now:
        return False
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if _spki(cert.public_key()) != _spki(key.public_key()):
        return False
    have = set(san)
    return all(entry in have for entry in _san_entries(hostnames, ips))


def _new_server_cert(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    hostnames: Sequence[str],
    ips: Sequence[str],
    now: datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    common_name = hostnames[0] if hostnames else (ips[0] if ips else "callgrid")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "callgrid"),
        ]
    )
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        # Positive 159-bit serial; unique per issuance, as browsers require.
        .serial_number(int.from_bytes(secrets.token_bytes(20), "big") >> 1)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + SERVER_LIFETIME)
        .add_extension(x509.SubjectAlternativeName(_san_entries(hostnames, ips)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def ensure_tls_material(
    directory: Path,
    hostnames: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1", "::1"),
) -> TlsMaterial:
    """Create (or reuse) the local CA, a server certificate for ``hostnames``/``ips`` and the CA bundle.

    Idempotent: the CA is kept as long as it is usable, so users only trust it once; the server
    certificate is reissued when it is close to expiry or does not cover the requested names.
    """
    directory.mkdir(parents=True, exist_ok=True)
    material = TlsMaterial(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        ca_bundle=directory / "ca-bundle.pem",
    )
    ca_key_path = directory / "ca-key.pem"
    now = datetime.now(UTC)

    loaded = _load_ca(material.ca_cert, ca_key_path, now)
    if loaded is None:
        ca, ca_key = _new_ca(now)
        write_atomic(ca_key_path, _private_pem(ca_key), mode=_KEY_MODE)
        write_atomic(material.ca_cert, ca.public_bytes(serialization.Encoding.PEM), mode=_CERT_MODE)
    else:
        ca, ca_key = loaded

    if not _server_cert_ok(material.server_cert, material.server_key, ca, hostnames, ips, now):
        cert, key = _new_server_cert(ca, ca_key, hostnames, ips, now)
        # Key first: a crash in between leaves a mismatched pair, which the next call detects and replaces.
        write_atomic(material.server_key, _private_pem(key), mode=_KEY_MODE)
        write_atomic(material.server_cert, cert.public_bytes(serialization.Encoding.PEM), mode=_CERT_MODE)

    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    bundle = ca_pem + b"\n" + Path(certifi.where()).read_bytes()
    try:
        current = material.ca_bundle.read_bytes()
    except OSError:
        current = None
    if current != bundle:
        write_atomic(material.ca_bundle, bundle, mode=_CERT_MODE)
    return material
