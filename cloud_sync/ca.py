"""The cloud's certificate authority: a root CA that signs gateway certificates from CSRs and
issues the broker's server certificate and the cloud's and claim's client certificates.

Identity is the certificate's subject common name: the broker runs with
``use_identity_as_username``, so the CN is the MQTT username its ACL patterns (``%u``) see. A
gateway's CN is its thing name; the cloud and claim identities use names no gateway id can take
(see :mod:`cloud_sync.broker_config`).

Keys are ECDSA P-256 (fast to generate on a Pi, accepted by Mosquitto/OpenSSL, paho and
awscrt/s2n). Private key files are created with mode 0600 from the start (``os.open`` with the
mode, then an atomic rename), so they are never readable by others, not even briefly.
The certificate id is the SHA-256 of the DER certificate in hex, as AWS IoT's ``certificateId``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud_sync.errors import CloudSyncError

__all__ = ["CaError", "CertificateAuthority", "IssuedCertificate", "certificate_id",
           "generate_key", "key_pem", "write_private", "write_public"]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
MIN_RSA_BITS = 2048
MAX_CN_CHARS = 64  # X.509's upper bound for a common name
_ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)
# Certificates are valid from a little before now: a gateway without an RTC whose clock lags a
# few minutes must still accept its fresh certificate.
_BACKDATE = dt.timedelta(minutes=10)


class CaError(CloudSyncError):
    """The CA files are missing or unreadable, or a CSR cannot be signed; says which and why."""


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: x509.Certificate

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def certificate_id(self) -> str:
        return certificate_id(self.certificate)

    @property
    def common_name(self) -> str:
        return common_name(self.certificate)

    @property
    def not_after_ms(self) -> int:
        return int(self.certificate.not_valid_after_utc.timestamp() * 1000)


def certificate_id(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint of the DER encoding, lower-case hex (AWS IoT's certificateId)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def common_name(source: x509.Certificate | x509.CertificateSigningRequest) -> str:
    """The subject CN ('' if none). An over-long CN (> 64) from a CSR is returned as is (the
    caller refuses it by length); cryptography's warning about it is silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        values = source.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: the file mode protects it (Mosquitto, paho and awscrt read it)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from creation on, atomically, fsynced."""
    _write(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    _write(path, data, 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)  # the umask may have narrowed it further than asked
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def check_public_key(key: object) -> str | None:
    """Why a CSR's key is not acceptable, or ``None``."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _ALLOWED_CURVES):
            return f"curve {key.curve.name} is not allowed (use P-256 or P-384)"
        return None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return f"RSA key of {key.key_size} bits is too short (at least {MIN_RSA_BITS})"
        return None
    return "key type not allowed (use ECDSA P-256/P-384 or RSA >= 2048 bits)"


def load_csr(pem: str) -> x509.CertificateSigningRequest:
    """Parse and verify a PEM CSR (its self-signature proves the requester holds the key).

    Raises ``CaError`` naming what is wrong.
    """
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except (ValueError, TypeError) as exc:
        raise CaError("certificateSigningRequest is not a PEM certificate signing request") \
            from exc
    try:
        valid = csr.is_signature_valid
    except (ValueError, InvalidSignature) as exc:  # unsupported algorithm
        raise CaError("certificateSigningRequest: its signature cannot be checked") from exc
    if not valid:
        raise CaError("certificateSigningRequest: its signature does not verify")
    problem = check_public_key(csr.public_key())
    if problem is not None:
        raise CaError(f"certificateSigningRequest: {problem}")
    return csr


class CertificateAuthority:
    """A root CA kept as ``ca.crt`` and ``ca.key`` (0600) in one directory."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
                 directory: Path) -> None:
        self.cert = cert
        self._key = key
        self.directory = directory

    @property
    def cert_path(self) -> Path:
        return self.directory / CA_CERT

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def init(cls, directory: Path, *, name: str = "homewatt root CA",
             days: int = 3650) -> CertificateAuthority:
        """Create a new root CA in ``directory``; raises ``CaError`` if one is already there
        (overwriting it would orphan every certificate it signed)."""
        if (directory / CA_KEY).exists() or (directory / CA_CERT).exists():
            raise CaError(f"{directory} already holds a CA ({CA_CERT}/{CA_KEY}); refusing to "
                          "overwrite it")
        key = generate_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        public = key.public_key()
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(public).serial_number(x509.random_serial_number())
                .not_valid_before(now - _BACKDATE).not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
                .sign(key, hashes.SHA256()))
        directory.mkdir(parents=True, exist_ok=True)
        write_private(directory / CA_KEY, key_pem(key))
        write_public(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
        return cls(cert, key, directory)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        try:
            cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
            key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
        except FileNotFoundError as exc:
            raise CaError(f"no CA in {directory}: run `homewatt-cloud ca init --ca-dir "
                          f"{directory}` first") from exc
        except (OSError, ValueError) as exc:
            raise CaError(f"cannot read the CA in {directory}: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CaError(f"{directory / CA_KEY} is not an EC private key")
        return cls(cert, key, directory)

    @classmethod
    def load_or_init(cls, directory: Path) -> CertificateAuthority:
        if (directory / CA_KEY).exists():
            return cls.load(directory)
        return cls.init(directory)

    # -- issuing --------------------------------------------------------------------------

    def sign_csr(self, csr: x509.CertificateSigningRequest, *, common_name: str,
                 days: int) -> IssuedCertificate:
        """A client certificate for ``csr``'s key whose subject is only ``common_name``
        (whatever else the CSR asked for is not copied: the CA decides the identity)."""
        return self._client_cert(csr.public_key(), common_name, days)

    def issue_client(self, common_name: str, *, days: int = 365,
                     ) -> tuple[ec.EllipticCurvePrivateKey, IssuedCertificate]:
        """A key and client certificate made here: for the cloud's and claim's identities,
        whose keys live where the CA runs (a gateway makes its own key: :meth:`sign_csr`)."""
        key = generate_key()
        return key, self._client_cert(key.public_key(), common_name, days)

    def issue_server(self, hostnames: Sequence[str], *, days: int = 825,
                     ) -> tuple[ec.EllipticCurvePrivateKey, IssuedCertificate]:
        """The broker's key and certificate, valid for each of ``hostnames`` (DNS names or IP
        addresses, all in the subject alternative name)."""
        if not hostnames:
            raise CaError("a server certificate needs at least one host name")
        key = generate_key()
        sans: list[x509.GeneralName] = []
        for host in hostnames:
            try:
                sans.append(x509.IPAddress(ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        builder = self._builder(key.public_key(), hostnames[0], days)
        cert = (builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .sign(self._key, hashes.SHA256()))
        return key, IssuedCertificate(cert)

    def _client_cert(self, public: object, common_name: str, days: int) -> IssuedCertificate:
        if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise CaError("key type not allowed (use ECDSA P-256/P-384 or RSA >= 2048 bits)")
        cert = (self._builder(public, common_name, days)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(self._key, hashes.SHA256()))
        return IssuedCertificate(cert)

    def _builder(self, public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, common_name: str,
                 days: int) -> x509.CertificateBuilder:
        if not 1 <= len(common_name) <= MAX_CN_CHARS:
            raise CaError(f"a certificate's common name has 1-{MAX_CN_CHARS} characters "
                          f"(X.509), not {len(common_name)}")
        now = _now()
        not_after = min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc)
        ca_public = self._key.public_key()
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                .issuer_name(self.cert.subject).public_key(public)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _BACKDATE).not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, key_encipherment=isinstance(public, rsa.RSAPublicKey),
                    content_commitment=False, data_encipherment=False, key_agreement=False,
                    key_cert_sign=False, crl_sign=False, encipher_only=False,
                    decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public),
                               critical=False))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
