"""Clock adapters: the system clock and a fake one that tests move by hand."""

from __future__ import annotations

import time


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """Starts at ``start_ms`` and moves only when a test calls :meth:`advance`."""

    def __init__(self, start_ms: int = 1_764_000_000_000) -> None:
        self._wall_ms = start_ms
        self._mono = 1000.0

    def now_ms(self) -> int:
        return self._wall_ms

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._wall_ms += round(seconds * 1000)
        self._mono += seconds

    def jump_wall(self, seconds: float) -> None:
        """Move wall time only, as NTP does on a Pi that booted without an RTC."""
        self._wall_ms += round(seconds * 1000)
