"""The one error root of the firmware updater, and the errors a caller must tell apart."""

from __future__ import annotations

from enum import StrEnum


class FirmwareError(Exception):
    """Root of every error raised by ``firmware_update``."""


class RejectReason(StrEnum):
    """Why a bundle was refused; the code travels to the cloud in the Jobs status details."""

    MALFORMED = "malformed"  # not a signed envelope / not a manifest
    UNTRUSTED_KEY = "untrusted_key"  # no signature by a key of the trust root
    BAD_SIGNATURE = "bad_signature"  # a trusted key's signature does not match the bytes
    THRESHOLD = "threshold_not_met"  # fewer valid signatures than the root's threshold
    EXPIRED = "expired"
    INCOMPATIBLE_HARDWARE = "incompatible_hardware"
    WRONG_PRODUCT = "wrong_product"  # e.g. a full OS image offered to the app slot
    DOWNGRADE = "downgrade"  # at or below the stored anti-rollback minimum
    UPGRADE_PATH = "upgrade_path"  # the bundle needs a newer installed version first
    BLOCKLISTED = "blocklisted"
    PAYLOAD_LENGTH = "payload_length"  # the download is longer or shorter than signed
    PAYLOAD_HASH = "payload_hash"  # the payload is not the one the manifest signed
    NO_SPACE = "no_space"


class BundleRejected(FirmwareError):
    """A bundle failed verification; nothing was installed. ``reason`` is machine-readable,
    the message says what was wrong and what would fix it."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.detail = message


class BadInput(FirmwareError):
    """A file or argument given to the tooling is unusable (the CLI exits 2)."""


class DownloadError(FirmwareError):
    """The payload could not be fetched (network, HTTP status); retrying may succeed."""


class SlotError(FirmwareError):
    """The slot backend failed (disk, rauc); ``detail`` says which step."""


class StateError(FirmwareError):
    """The persisted updater state is unreadable; the updater starts over from its slots."""
