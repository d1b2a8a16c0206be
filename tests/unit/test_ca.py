"""The CA: what it signs, what it refuses, and how it stores keys."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud_sync.ca import CaError, CertificateAuthority, load_csr


def _csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, cn: str = "gw-1") -> str:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil Corp")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "ca")


def test_key_files_are_private_from_creation(ca: CertificateAuthority, tmp_path: Path) -> None:
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600
    assert not list((tmp_path / "ca").glob(".*tmp"))  # atomic writes leave nothing behind
    with pytest.raises(CaError, match="refusing to overwrite"):
        CertificateAuthority.init(tmp_path / "ca")
    assert CertificateAuthority.load(tmp_path / "ca").cert == ca.cert


def test_signed_certificate_carries_only_the_name_the_ca_chose(ca: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issued = ca.sign_csr(load_csr(_csr(key, cn="gw-1")), common_name="gw-1", days=30)
    cert = issued.certificate
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw-1")])
    assert cert.public_key() == key.public_key()
    assert cert.issuer == ca.cert.subject
    cert.verify_directly_issued_by(ca.cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    der = cert.public_bytes(serialization.Encoding.DER)
    assert issued.certificate_id == hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize(("pem", "problem"), [
    ("not a csr", "not a PEM certificate signing request"),
    (_csr(rsa.generate_private_key(65537, 1024)), "RSA key of 1024 bits is too short"),
    (_csr(ec.generate_private_key(ec.SECP192R1())), "curve secp192r1 is not allowed"),
])
def test_unacceptable_csrs_are_refused_with_the_reason(pem: str, problem: str) -> None:
    with pytest.raises(CaError, match=problem):
        load_csr(pem)


def test_tampered_csr_signature_is_refused() -> None:
    pem = _csr(ec.generate_private_key(ec.SECP256R1()))
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CaError, match="signature"):
        load_csr(tampered.decode())


def test_server_certificate_names_every_host(ca: CertificateAuthority) -> None:
    _key, issued = ca.issue_server(["broker.example", "127.0.0.1"])
    san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_missing_ca_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(CaError, match="homewatt-cloud ca init"):
        CertificateAuthority.load(tmp_path / "nothing")
