"""Local CA and server certificate generation, including a real TLS handshake."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import certifi
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from callgrid.security import tls
from callgrid.security.tls import TlsMaterial, ensure_tls_material


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_files_and_extensions(tmp_path: Path) -> None:
    material = ensure_tls_material(tmp_path)
    assert material == TlsMaterial(
        ca_cert=tmp_path / "ca.pem",
        server_cert=tmp_path / "server.pem",
        server_key=tmp_path / "server-key.pem",
        ca_bundle=tmp_path / "ca-bundle.pem",
    )
    for key_file in (tmp_path / "ca-key.pem", material.server_key):
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("*.tmp"))

    ca = _cert(material.ca_cert)
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "callgrid local CA"
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert ca.not_valid_after_utc - ca.not_valid_before_utc >= timedelta(days=3650)

    server = _cert(material.server_cert)
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert server.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    lifetime = server.not_valid_after_utc - server.not_valid_before_utc
    assert timedelta(days=365) < lifetime <= timedelta(days=825)

    bundle = material.ca_bundle.read_bytes()
    assert bundle.startswith(material.ca_cert.read_bytes())
    assert Path(certifi.where()).read_bytes() in bundle


def test_idempotent(tmp_path: Path) -> None:
    first = ensure_tls_material(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    second = ensure_tls_material(tmp_path)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert first == second
    assert before == after


def test_new_names_reissue_server_cert_but_keep_ca(tmp_path: Path) -> None:
    ensure_tls_material(tmp_path)
    ca_before = (tmp_path / "ca.pem").read_bytes()
    server_before = (tmp_path / "server.pem").read_bytes()
    material = ensure_tls_material(tmp_path, hostnames=("localhost", "callgrid.test"), ips=("127.0.0.1",))
    assert material.ca_cert.read_bytes() == ca_before
    assert material.server_cert.read_bytes() != server_before
    san = _cert(material.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "callgrid.test"]
    # A subset of the names already covered does not cause another reissue.
    again = ensure_tls_material(tmp_path, hostnames=("callgrid.test",), ips=())
    assert again.server_cert.read_bytes() == material.server_cert.read_bytes()


def test_expiring_server_cert_is_reissued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tls, "SERVER_LIFETIME", timedelta(hours=12))
    ensure_tls_material(tmp_path)
    ca_before = (tmp_path / "ca.pem").read_bytes()
    short = _cert(tmp_path / "server.pem")
    assert short.not_valid_after_utc - datetime.now(UTC) < timedelta(days=1)
    monkeypatch.undo()
    ensure_tls_material(tmp_path)
    assert (tmp_path / "ca.pem").read_bytes() == ca_before
    renewed = _cert(tmp_path / "server.pem")
    assert renewed.not_valid_after_utc - datetime.now(UTC) > timedelta(days=700)


def test_broken_server_key_is_replaced(tmp_path: Path) -> None:
    material = ensure_tls_material(tmp_path)
    material.server_key.write_bytes(b"garbage")
    ensure_tls_material(tmp_path)
    assert material.server_key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    _cert(material.server_cert).verify_directly_issued_by(_cert(material.ca_cert))


def test_missing_ca_regenerates_everything(tmp_path: Path) -> None:
    material = ensure_tls_material(tmp_path)
    old_ca = material.ca_cert.read_bytes()
    (tmp_path / "ca-key.pem").unlink()
    ensure_tls_material(tmp_path)
    assert material.ca_cert.read_bytes() != old_ca
    # The old server certificate was signed by the old CA, so it must have been replaced too.
    _cert(material.server_cert).verify_directly_issued_by(_cert(material.ca_cert))
    assert material.ca_bundle.read_bytes().startswith(material.ca_cert.read_bytes())


def _serve_once(material: TlsMaterial, listener: socket.socket, errors: list[BaseException]) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(material.server_cert, material.server_key)
    try:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls_conn:
            tls_conn.sendall(b"hello")
    except (OSError, ssl.SSLError) as exc:
        errors.append(exc)


def _handshake(material: TlsMaterial, server_hostname: str) -> bytes:
    listener = socket.create_server(("127.0.0.1", 0))
    errors: list[BaseException] = []
    thread = threading.Thread(target=_serve_once, args=(material, listener, errors), daemon=True)
    thread.start()
    try:
        client_context = ssl.create_default_context(cafile=str(material.ca_bundle))
        port = listener.getsockname()[1]
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_context.wrap_socket(raw, server_hostname=server_hostname) as conn,
        ):
            return conn.recv(5)
    finally:
        thread.join(timeout=10)
        listener.close()


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1"])
def test_real_handshake_verifies(tmp_path: Path, server_hostname: str) -> None:
    material = ensure_tls_material(tmp_path)
    assert _handshake(material, server_hostname) == b"hello"


def test_real_handshake_rejects_other_name(tmp_path: Path) -> None:
    material = ensure_tls_material(tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(material, "example.com")
