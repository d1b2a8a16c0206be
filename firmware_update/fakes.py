"""Fakes for the updater's ports, for unit tests and in-process simulations.

Each takes a handler or records what it was asked, the way httpx's ``MockTransport`` does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from firmware_update.errors import FirmwareError
from firmware_update.ports import HealthReport

__all__ = ["FakeClock", "FakeHealthProbe", "FakeJobReporter", "FakeRestarter"]


class FakeHealthProbe:
    """``handler()`` returns the report; the default is always healthy."""

    def __init__(self, handler: Callable[[], HealthReport] | None = None) -> None:
        self.handler = handler or HealthReport
        self.calls = 0

    async def check(self) -> HealthReport:
        self.calls += 1
        return self.handler()


@dataclass
class FakeJobReporter:
    """Records ``(job_id, status, details)``; raises while ``fail`` is set."""

    reports: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    fail: bool = False
    handler: Callable[[str, str, dict[str, str]], Awaitable[None]] | None = None

    async def report(self, job_id: str, status: str, details: dict[str, str]) -> None:
        if self.fail:
            raise FirmwareError("fake reporter is offline")
        if self.handler is not None:
            await self.handler(job_id, status, details)
        self.reports.append((job_id, status, dict(details)))

    def final(self) -> list[tuple[str, str, dict[str, str]]]:
        return [r for r in self.reports if r[1] != "IN_PROGRESS"]


@dataclass
class FakeRestarter:
    reasons: list[str] = field(default_factory=list)

    async def restart(self, reason: str) -> None:
        self.reasons.append(reason)


class FakeClock:
    """Time moves only when told to, or by ``sleep``."""

    def __init__(self, now_ms: int = 1_795_000_000_000) -> None:
        self._now_ms = now_ms
        self._mono = 0.0

    def now_ms(self) -> int:
        return self._now_ms

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._mono += seconds
        self._now_ms += int(seconds * 1000)

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
