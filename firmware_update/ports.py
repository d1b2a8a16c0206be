"""The updater's I/O behind narrow interfaces: slots, health, job reporting, restart, clock.

Each has a real adapter (``DirectorySlots``, ``RaucSlots``, ``SystemRestarter``) or is
provided by the agent that embeds the updater (health, reporting), and a fake in ``fakes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from firmware_update.manifest import Manifest, PayloadKind

__all__ = ["Clock", "HealthProbe", "HealthReport", "JobReporter", "Restarter", "SlotBackend"]


class SlotBackend(Protocol):
    """Two slots, A/B: one runs (``booted``), the other takes the update.

    ``primary`` is the slot the next (re)start runs. ``install`` writes the inactive slot and
    must be idempotent (a crash mid-install is redone from scratch). ``activate`` makes a slot
    primary for a trial; ``mark_good`` commits the booted slot; none of them restarts anything.
    """

    kind: PayloadKind

    def booted(self) -> str: ...

    def primary(self) -> str: ...

    def other(self, slot: str) -> str: ...

    def slot_version(self, slot: str) -> str | None: ...

    def install(self, payload: Path, manifest: Manifest) -> str:
        """Write ``payload`` into the slot that is not booted; returns that slot's name."""
        ...

    def activate(self, slot: str) -> None: ...

    def mark_good(self) -> None: ...

    def mark_bad(self, slot: str) -> None:
        """``slot`` failed its trial: the other slot becomes primary again."""
        ...


@dataclass(frozen=True)
class HealthReport:
    """``failures`` maps a check (``agent``, ``meters``, ``cloud``) to why it failed."""

    failures: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        return "; ".join(f"{k}: {v}" for k, v in sorted(self.failures.items())) or "healthy"


class HealthProbe(Protocol):
    async def check(self) -> HealthReport: ...


class JobReporter(Protocol):
    """Tells the cloud how the job goes (the agent maps it onto Jobs ``UpdateJobExecution``).

    ``status`` is ``IN_PROGRESS``, ``SUCCEEDED``, ``FAILED`` or ``REJECTED``. Raises
    ``FirmwareError`` when the report did not get through (the updater keeps it and retries).
    """

    async def report(self, job_id: str, status: str, details: dict[str, str]) -> None: ...


class Restarter(Protocol):
    """Starts the primary slot: restart the agent service (directory slots) or reboot (RAUC).

    It may return (the process is about to be replaced) or never return."""

    async def restart(self, reason: str) -> None: ...


class Clock(Protocol):
    def now_ms(self) -> int: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...
