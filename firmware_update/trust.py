"""The device's trust root: which Ed25519 keys may sign bundles, and how many must.

A root is itself a signed envelope (payload type ``ROOT_TYPE``). Rotation follows TUF's rule
for its root role: root ``N+1`` is accepted only when signed by a threshold of root ``N``'s
keys *and* a threshold of its own, so a stolen old key alone cannot install a new root, and a
new root cannot be forged by whoever holds only new keys. The first root arrives with the
device image (trust on install).
"""

from __future__ import annotations

import json
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from firmware_update.envelope import ROOT_TYPE, Envelope, verified_payload
from firmware_update.errors import BundleRejected, RejectReason
from firmware_update.keys import PublicKey

__all__ = ["RootKey", "TrustRoot", "load_initial_root", "rotate_root"]


class RootKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    keytype: str = Field(pattern=r"^ed25519$")
    public: str = Field(pattern=r"^[0-9a-f]{64}$")


class TrustRoot(BaseModel):
    """``keys`` maps key id (SHA-256 of the raw public key) to the key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    threshold: int = Field(ge=1)
    keys: dict[str, RootKey] = Field(min_length=1)
    expires: AwareDatetime | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TrustRoot:
        for keyid, key in self.keys.items():
            if PublicKey.from_hex(key.public).keyid != keyid:
                raise ValueError(f"keys.{keyid[:16]}...: key id is not the SHA-256 of the key")
        if self.threshold > len(self.keys):
            raise ValueError(f"threshold {self.threshold} exceeds the {len(self.keys)} keys")
        return self

    def public_keys(self) -> dict[str, PublicKey]:
        return {k: PublicKey.from_hex(v.public) for k, v in self.keys.items()}

    @classmethod
    def of(cls, keys: list[PublicKey], threshold: int, version: int = 1,
           expires: datetime | None = None) -> TrustRoot:
        return cls(version=version, threshold=threshold, expires=expires,
                   keys={k.keyid: RootKey(keytype="ed25519", public=k.hex) for k in keys})

    def envelope(self) -> Envelope:
        return Envelope(ROOT_TYPE, self.model_dump_json(indent=2).encode())


def _parse(raw: bytes) -> TrustRoot:
    try:
        return TrustRoot.model_validate(json.loads(raw))
    except (UnicodeDecodeError, json.JSONDecodeError, ValidationError) as exc:
        raise BundleRejected(RejectReason.MALFORMED, f"trust root: {exc}") from exc


def _unverified(envelope: Envelope) -> TrustRoot:
    if envelope.payload_type != ROOT_TYPE:
        raise BundleRejected(RejectReason.MALFORMED, f"not a trust root ({ROOT_TYPE})")
    return _parse(envelope.payload)


def load_initial_root(envelope: Envelope) -> TrustRoot:
    """The root shipped with the device: it must be signed by a threshold of its own keys."""
    root = _unverified(envelope)
    verified_payload(envelope, ROOT_TYPE, root.public_keys(), root.threshold)
    return root


def rotate_root(current: TrustRoot, envelope: Envelope, now: datetime) -> TrustRoot:
    """Verify the successor of ``current``; raises ``BundleRejected`` and keeps ``current``."""
    candidate = _unverified(envelope)
    if candidate.version != current.version + 1:
        raise BundleRejected(RejectReason.DOWNGRADE if candidate.version <= current.version
                             else RejectReason.MALFORMED,
                             f"trust root version {candidate.version} does not follow "
                             f"{current.version}")
    verified_payload(envelope, ROOT_TYPE, current.public_keys(), current.threshold)
    verified_payload(envelope, ROOT_TYPE, candidate.public_keys(), candidate.threshold)
    if candidate.expires is not None and now >= candidate.expires:
        raise BundleRejected(RejectReason.EXPIRED, "the new trust root has already expired")
    return candidate
