"""The bundle manifest: what a signed bundle claims about itself.

Parsed only from bytes whose signatures already verified (see ``envelope.verified_payload``).
Unknown fields are rejected, so a field a newer tool adds is never silently ignored by an
older device. Times are ISO 8601 with a zone.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from firmware_update.errors import BadInput, BundleRejected, RejectReason
from firmware_update.semver import Version, parse_version

__all__ = ["PAYLOAD_KINDS", "Manifest", "PayloadInfo", "parse_manifest"]

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
HARDWARE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_PAYLOAD_BYTES = 8 * 1024**3
PayloadKind = Literal["app", "rauc"]
PAYLOAD_KINDS: tuple[PayloadKind, ...] = ("app", "rauc")


class PayloadInfo(BaseModel):
    """``size`` bytes with this ``sha256``: the device refuses one byte more or different."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(ge=1, le=MAX_PAYLOAD_BYTES)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(BaseModel):
    """``kind`` says which slot backend installs it: ``app`` (a tar of the agent's own
    software, directory/symlink slots) or ``rauc`` (a RAUC bundle, full-image A/B slots).

    ``min_version``: the device must already run at least this version (an upgrade path that
    needs an intermediate release). ``allow_downgrade``: the signer explicitly permits
    installing this version at or below the device's anti-rollback minimum.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN)
    version: str
    kind: PayloadKind
    compatible_hardware: list[Annotated[str, Field(pattern=HARDWARE_PATTERN)]] = Field(
        min_length=1, max_length=64)
    payload: PayloadInfo
    created: AwareDatetime
    expires: AwareDatetime
    min_version: str | None = None
    allow_downgrade: bool = False
    description: str = Field(default="", max_length=2000)

    @field_validator("version", "min_version")
    @classmethod
    def _semver(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_version(value)
            except BadInput as exc:
                raise ValueError(str(exc).split(": ", 1)[1]) from exc
        return value

    @model_validator(mode="after")
    def _window(self) -> Manifest:
        if self.expires <= self.created:
            raise ValueError("expires must be later than created")
        return self

    @property
    def semver(self) -> Version:
        return parse_version(self.version)

    @property
    def min_semver(self) -> Version | None:
        return None if self.min_version is None else parse_version(self.min_version)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(indent=2).encode()

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires


def parse_manifest(raw: bytes) -> Manifest:
    """Validate the manifest JSON; ``BundleRejected(MALFORMED)`` names the first bad field."""
    try:
        return Manifest.model_validate(json.loads(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleRejected(RejectReason.MALFORMED, f"manifest is not JSON ({exc})") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "manifest"
        raise BundleRejected(RejectReason.MALFORMED, f"manifest field {where}: {err['msg']}"
                             ) from exc
