"""Readings before the clock is synced: stamp them from monotonic time, correct them once sync
is seen, or send them flagged ``unsynced`` when it never comes in time.

:class:`ClockWatch` is the agent's one source of "is wall time trustworthy yet":

- :meth:`stamp` is called as readings are buffered; while unsynced it returns the boot id and
  ``wall - monotonic``, and the buffer holds the readings back from the drain
  (:mod:`edge_agent.buffer_hold`).
- :meth:`check_once` (every ``check_interval_s``) asks the :class:`~edge_agent.ports.ClockSync`.
  The first time it says synced, every reading held in this boot gets
  ``ts = mono_ms + (wall - monotonic)`` (exact: monotonic time did not jump) and is released;
  from then on wall time is trusted for the rest of the process (a later loss of sync leaves
  a disciplined clock running freely, which is still right to within seconds).
- Readings that cannot be corrected are released flagged: those of an earlier boot (their
  monotonic clock is gone), and, while sync is still missing, those held longer than
  ``hold_max_s`` (so a gateway whose NTP is blocked still delivers, flagged).

Each release tells the drain to look again from the lowest released seq.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from edge_agent.buffer_hold import HoldRelease, UnsyncedStamp
from edge_agent.ports import Clock, ClockSync, TelemetryBuffer

__all__ = ["ClockWatch"]

log = logging.getLogger(__name__)


class ClockWatch:
    """See the module docstring; ``on_release`` gets every non-empty release."""

    def __init__(self, source: ClockSync, clock: Clock, buffer: TelemetryBuffer, *,
                 boot_id: str, hold_max_s: float = 3600.0, check_interval_s: float = 5.0,
                 on_release: Callable[[HoldRelease], None] | None = None) -> None:
        self._source = source
        self._clock = clock
        self._buffer = buffer
        self.boot_id = boot_id
        self.hold_max_s = hold_max_s
        self.check_interval_s = check_interval_s
        self._on_release = on_release
        self.synced = False
        self.corrected_total = 0
        self.flagged_total = 0

    def stamp(self) -> UnsyncedStamp | None:
        """None once the clock is trusted; else how to stamp readings buffered now."""
        if self.synced:
            return None
        return UnsyncedStamp(self.boot_id, self._wall_minus_mono_ms())

    def _wall_minus_mono_ms(self) -> int:
        return self._clock.now_ms() - round(self._clock.monotonic() * 1000)

    async def run(self) -> None:
        """Check until synced, then idle (the agent supervises and cancels it)."""
        while not self.synced:
            await self.check_once()
            if not self.synced:
                await asyncio.sleep(self.check_interval_s)
        await asyncio.Event().wait()

    async def check_once(self) -> HoldRelease:
        """Look at the clock once; correct or release what it allows."""
        if not self.synced and self._source.synced():
            self.synced = True
            offset = self._wall_minus_mono_ms()
            done = await asyncio.to_thread(self._buffer.correct_unsynced, self.boot_id, offset)
            log.info("clock synced: %d readings taken before got their true time, %d could "
                     "not be corrected and are sent flagged", done.corrected, done.flagged)
            others = await asyncio.to_thread(self._buffer.release_unsynced, self.boot_id, None)
            return self._released(_merge(done, others))
        if self.synced:
            return HoldRelease()
        cutoff = round(self._clock.monotonic() * 1000 - self.hold_max_s * 1000)
        done = await asyncio.to_thread(self._buffer.release_unsynced, self.boot_id, cutoff)
        if done.count:
            log.warning("clock still not synced: %d readings sent flagged unsynced (held "
                        "over %.0fs, or from an earlier boot)", done.flagged, self.hold_max_s)
        return self._released(done)

    def _released(self, done: HoldRelease) -> HoldRelease:
        self.corrected_total += done.corrected
        self.flagged_total += done.flagged
        if done.count and self._on_release is not None:
            self._on_release(done)
        return done


def _merge(a: HoldRelease, b: HoldRelease) -> HoldRelease:
    firsts = [s for s in (a.first_seq, b.first_seq) if s is not None]
    return HoldRelease(a.corrected + b.corrected, a.flagged + b.flagged,
                       min(firsts) if firsts else None)
