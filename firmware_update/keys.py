"""Ed25519 signing keys (``cryptography``): generate, load, save, and the key id.

A key id is the hex SHA-256 of the 32 raw public-key bytes, so anyone holding the public key
computes the same id and a manifest's signature names the key that made it. Private keys are
written PKCS#8 PEM with mode 0600 and never overwritten.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmware_update.errors import BadInput

__all__ = ["PublicKey", "SigningKey", "generate", "load_private", "load_public"]


def key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    """A verifying key; ``raw`` is the 32-byte Ed25519 public key."""

    raw: bytes

    @property
    def keyid(self) -> str:
        return key_id(self.raw)

    @property
    def hex(self) -> str:
        return self.raw.hex()

    @classmethod
    def from_hex(cls, text: str, field_name: str = "public") -> PublicKey:
        try:
            raw = bytes.fromhex(text)
        except (ValueError, TypeError) as exc:
            raise BadInput(f"{field_name}: not hex-encoded key bytes") from exc
        if len(raw) != 32:
            raise BadInput(f"{field_name}: an Ed25519 public key is 32 bytes, got {len(raw)}")
        return cls(raw)

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


def generate() -> SigningKey:
    return SigningKey(Ed25519PrivateKey.generate())


def save(key: SigningKey, private_path: Path, public_path: Path) -> None:
    """Write ``private_path`` (0600, PKCS#8 PEM) and ``public_path`` (SubjectPublicKeyInfo
    PEM); raises ``BadInput`` if either exists (a key is never silently replaced)."""
    for path in (private_path, public_path):
        if path.exists():
            raise BadInput(f"{path}: already exists; move it away or pick another --name")
    pem = key.private.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public_path.write_bytes(key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def load_private(path: Path) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the key: {exc.strerror}") from exc
    except (ValueError, TypeError) as exc:
        raise BadInput(f"{path}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise BadInput(f"{path}: not an Ed25519 key (use `homewatt-fw keygen`)")
    return SigningKey(key)


def load_public(path: Path) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the key: {exc.strerror}") from exc
    except ValueError as exc:
        raise BadInput(f"{path}: not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise BadInput(f"{path}: not an Ed25519 public key (use `homewatt-fw keygen`)")
    return PublicKey(key.public_bytes(serialization.Encoding.Raw,
                                      serialization.PublicFormat.Raw))
