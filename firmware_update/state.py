"""The updater's persisted state: ``state.json`` (the job in flight) and ``device.json``
(anti-rollback minimum, newest metadata time seen, blocklist). Both are written with
fsync + rename (``durable``), so a power cut in any phase leaves the last complete state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from firmware_update.durable import read_json, write_json
from firmware_update.errors import StateError

__all__ = ["DeviceRecord", "Outcome", "Phase", "StateStore", "UpdateState"]


class Phase(StrEnum):
    IDLE = "idle"
    DOWNLOADING = "downloading"
    INSTALLING = "installing"
    TRIAL = "trial"  # the new slot is (or is about to be) primary; boots are counted
    COMMITTING = "committing"
    ROLLING_BACK = "rolling_back"


@dataclass
class Outcome:
    """The job's final word, kept until the cloud has it."""

    status: str  # SUCCEEDED | FAILED | REJECTED
    reason: str
    detail: str
    version: str


@dataclass
class UpdateState:
    phase: Phase = Phase.IDLE
    job_id: str | None = None
    manifest: str | None = None  # the signed envelope, as received
    url: str | None = None
    version: str | None = None
    from_slot: str | None = None
    to_slot: str | None = None
    from_version: str | None = None
    boots_left: int = 0
    switched: bool = False
    rollback_reason: str | None = None
    rollback_detail: str | None = None
    outcome: Outcome | None = None
    outcome_job: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> UpdateState:
        if not isinstance(data, dict):
            raise StateError("state.json: not an object")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        try:
            values["phase"] = Phase(values.get("phase", "idle"))
            if values.get("outcome") is not None:
                values["outcome"] = Outcome(**values["outcome"])
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise StateError(f"state.json: {exc}") from exc


@dataclass
class DeviceRecord:
    minimum: str | None = None  # anti-rollback: versions at or below are refused
    installed: str | None = None  # the committed version
    newest_created: str | None = None  # ISO time of the newest verified manifest
    blocklist: list[str] = field(default_factory=list)


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = state_dir / "state.json"
        self.device_path = state_dir / "device.json"
        self.download_path = state_dir / "payload.part"

    def load(self) -> UpdateState:
        data = read_json(self.state_path)
        return UpdateState() if data is None else UpdateState.from_json(data)

    def save(self, state: UpdateState) -> None:
        write_json(self.state_path, state.to_json())

    def load_device(self) -> DeviceRecord | None:
        data = read_json(self.device_path)
        if data is None:
            return None
        try:
            return DeviceRecord(**data)
        except TypeError as exc:
            raise StateError(f"device.json: {exc}") from exc

    def save_device(self, record: DeviceRecord) -> None:
        write_json(self.device_path, asdict(record))
