"""Signed envelopes in the DSSE format (Dead Simple Signing Envelope, as used by in-toto and
Sigstore): ``{"payloadType", "payload": base64(bytes), "signatures": [{"keyid", "sig"}]}``.

Signatures cover ``PAE(payloadType, payload)``, the exact bytes, so nothing inside the payload
is parsed, canonicalised or trusted before the signatures check out: :func:`verified_payload`
returns the bytes only then. ``threshold`` distinct trusted keys must have signed.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from firmware_update.errors import BadInput, BundleRejected, RejectReason
from firmware_update.keys import PublicKey, SigningKey

__all__ = ["MANIFEST_TYPE", "ROOT_TYPE", "Envelope", "verified_payload"]

MANIFEST_TYPE = "application/vnd.homewatt.manifest+json"
ROOT_TYPE = "application/vnd.homewatt.root+json"
MAX_ENVELOPE_BYTES = 64 * 1024  # a manifest is small; a huge one is an attack, not a bundle


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: the bytes every signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


@dataclass
class Envelope:
    payload_type: str
    payload: bytes
    signatures: list[tuple[str, bytes]] = field(default_factory=list)  # (keyid, sig)

    def sign(self, key: SigningKey) -> None:
        """Add ``key``'s signature; raises ``BadInput`` if that key signed already."""
        keyid = key.public.keyid
        if any(k == keyid for k, _ in self.signatures):
            raise BadInput(f"key {keyid[:16]}... has already signed this envelope")
        self.signatures.append((keyid, key.sign(pae(self.payload_type, self.payload))))

    def to_json(self) -> dict[str, Any]:
        return {"payloadType": self.payload_type,
                "payload": base64.b64encode(self.payload).decode(),
                "signatures": [{"keyid": k, "sig": base64.b64encode(s).decode()}
                               for k, s in self.signatures]}

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: object) -> Envelope:
        """Parse the envelope's structure (not its payload); ``BundleRejected(MALFORMED)``."""
        if not isinstance(data, dict):
            raise _malformed("the envelope must be a JSON object")
        payload_type = data.get("payloadType")
        if not isinstance(payload_type, str):
            raise _malformed("payloadType: missing or not a string")
        sigs = data.get("signatures")
        if not isinstance(sigs, list):
            raise _malformed("signatures: missing or not a list")
        try:
            payload = base64.b64decode(str(data.get("payload", "")), validate=True)
            signatures = [(str(s["keyid"]), base64.b64decode(str(s["sig"]), validate=True))
                          for s in sigs]
        except (binascii.Error, KeyError, TypeError) as exc:
            raise _malformed(f"payload or signatures: not valid base64 entries ({exc})") from exc
        return cls(payload_type, payload, signatures)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        if len(raw) > MAX_ENVELOPE_BYTES:
            raise _malformed(f"larger than {MAX_ENVELOPE_BYTES} bytes")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _malformed(f"not JSON ({exc})") from exc
        return cls.from_json(data)


def _malformed(message: str) -> BundleRejected:
    return BundleRejected(RejectReason.MALFORMED, message)


def verified_payload(envelope: Envelope, payload_type: str, keys: Mapping[str, PublicKey],
                     threshold: int) -> bytes:
    """The payload bytes once at least ``threshold`` distinct keys of ``keys`` (by key id)
    signed them; otherwise ``BundleRejected`` saying which rule failed."""
    if envelope.payload_type != payload_type:
        raise _malformed(f"payloadType is {envelope.payload_type!r}, expected {payload_type!r}")
    message = pae(envelope.payload_type, envelope.payload)
    valid: set[str] = set()
    bad: list[str] = []
    for keyid, sig in envelope.signatures:
        key = keys.get(keyid)
        if key is None:
            continue
        if key.verify(sig, message):
            valid.add(keyid)
        else:
            bad.append(keyid)
    if len(valid) >= threshold:
        return envelope.payload
    if bad:
        raise BundleRejected(RejectReason.BAD_SIGNATURE,
                             f"signature by trusted key {bad[0][:16]}... does not match the "
                             "signed bytes: the manifest was altered after signing")
    if not valid:
        names = ", ".join(k[:16] + "..." for k, _ in envelope.signatures) or "none"
        raise BundleRejected(RejectReason.UNTRUSTED_KEY,
                             f"signed by no trusted key (signers: {names}); sign with a key "
                             "of the device's trust root")
    raise BundleRejected(RejectReason.THRESHOLD,
                         f"{len(valid)} valid signature(s), the trust root needs {threshold}")
