"""What a device accepts: the checks between "a signed envelope arrived" and "install it".

Pure: the device's facts come in as :class:`DeviceFacts`, the answer is a :class:`Manifest`
or a :class:`BundleRejected` with its reason. The order matters: the signature is checked
before a single manifest field is read, so nothing an attacker wrote is acted upon.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from firmware_update.envelope import MANIFEST_TYPE, Envelope, verified_payload
from firmware_update.errors import BundleRejected, RejectReason
from firmware_update.manifest import Manifest, PayloadKind, parse_manifest
from firmware_update.semver import Version, is_version, parse_version
from firmware_update.trust import TrustRoot

__all__ = ["DeviceFacts", "check_blocklist", "check_manifest", "check_payload", "verify_manifest"]


@dataclass(frozen=True)
class DeviceFacts:
    """``now`` is the device's idea of UTC time, already raised to the newest ``created`` it
    has ever verified (a gateway without RTC may boot in 1970; that must not un-expire
    metadata). ``minimum`` is the stored anti-rollback minimum (the last committed version
    unless a signed downgrade lowered it); ``installed`` the running version."""

    product: str
    kind: PayloadKind
    hardware: str
    now: datetime
    installed: Version | None = None
    minimum: Version | None = None
    blocklist: frozenset[str] = field(default_factory=frozenset)


def verify_manifest(raw_envelope: bytes, root: TrustRoot, facts: DeviceFacts) -> Manifest:
    """Signature, then every policy rule; raises ``BundleRejected`` with the first failure."""
    envelope = Envelope.from_bytes(raw_envelope)
    payload = verified_payload(envelope, MANIFEST_TYPE, root.public_keys(), root.threshold)
    manifest = parse_manifest(payload)
    check_manifest(manifest, facts)
    return manifest


def check_blocklist(version: str, blocklist: Collection[str]) -> None:
    """Blocklist entries are exact versions; build metadata is ignored (1.2.0+b7 is 1.2.0)."""
    if not is_version(version):
        return
    wanted = parse_version(version)
    for entry in blocklist:
        if is_version(entry) and parse_version(entry) == wanted:
            raise BundleRejected(RejectReason.BLOCKLISTED,
                                 f"version {version} is on the known-bad list")


def check_manifest(manifest: Manifest, facts: DeviceFacts) -> None:
    if manifest.name != facts.product or manifest.kind != facts.kind:
        raise BundleRejected(RejectReason.WRONG_PRODUCT,
                             f"bundle is {manifest.name} ({manifest.kind}); this slot takes "
                             f"{facts.product} ({facts.kind})")
    if manifest.is_expired(facts.now):
        raise BundleRejected(RejectReason.EXPIRED,
                             f"manifest expired at {manifest.expires.isoformat()} (device time "
                             f"{facts.now.isoformat()}); re-sign it with a later expiry")
    if facts.hardware not in manifest.compatible_hardware:
        raise BundleRejected(RejectReason.INCOMPATIBLE_HARDWARE,
                             f"hardware {facts.hardware!r} is not among "
                             f"{', '.join(manifest.compatible_hardware)}")
    check_blocklist(manifest.version, facts.blocklist)
    version = manifest.semver
    if facts.minimum is not None and version <= facts.minimum and not manifest.allow_downgrade:
        raise BundleRejected(RejectReason.DOWNGRADE,
                             f"version {version} is at or below the device's minimum "
                             f"{facts.minimum}; a downgrade needs a manifest signed with "
                             "allow_downgrade")
    needed = manifest.min_semver
    if needed is not None and (facts.installed is None or facts.installed < needed):
        raise BundleRejected(RejectReason.UPGRADE_PATH,
                             f"version {version} must be installed over {needed} or later; "
                             f"this device runs {facts.installed or 'nothing known'}")


def check_payload(manifest: Manifest, size: int, sha256: str) -> None:
    """The payload on disk is exactly the signed one."""
    if size != manifest.payload.size:
        raise BundleRejected(RejectReason.PAYLOAD_LENGTH,
                             f"payload is {size} bytes, the manifest signed "
                             f"{manifest.payload.size}")
    if sha256 != manifest.payload.sha256:
        raise BundleRejected(RejectReason.PAYLOAD_HASH,
                             "payload sha256 differs from the signed one: it was altered or "
                             "corrupted; nothing was installed")
