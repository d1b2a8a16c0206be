"""Plausibility check for energy counters: monotonic, and no faster than the meter can count.

Pure: values and monotonic times come in as arguments. State is kept per key (the reader uses
``(meter_id, channel)``).

Rules, per key:

- The first value seen is trusted (there is nothing to compare it with) and becomes the base.
- A value is **good** when it is not below the base (minus ``tolerance_wh`` for float noise)
  and has not risen more than ``max_power_w`` allows over the elapsed time (plus
  ``step_allowance_wh``, because meters publish energy in steps, e.g. 10 Wh on an Eastron).
  A good value becomes the new base.
- Anything else is **suspect**: the value is kept (the caller stores it with
  ``Quality.SUSPECT``) but the base does not move, so one glitch cannot drag the base along.
- **Re-basing**: the guard must not lock onto a stale base forever (a meter that was reset or
  replaced counts from a new level). Suspect values are chained: each one that is consistent
  with the previous suspect one (same two rules) extends the chain. When a chain reaches
  ``rebase_after`` readings, the newest one is reported good and becomes the base. So after a
  counter reset the first ``rebase_after - 1`` readings are suspect and the rest are good.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from protocols.models import Quality


@dataclass
class _Point:
    value: float
    t: float


@dataclass
class _KeyState:
    base: _Point
    candidate: _Point | None = None
    chain: int = 0


class CounterGuard:
    """Flags energy counter values that go backwards or rise implausibly fast."""

    def __init__(
        self,
        max_power_w: float,
        *,
        rebase_after: int = 3,
        tolerance_wh: float = 0.5,
        step_allowance_wh: float = 10.0,
    ) -> None:
        if max_power_w <= 0 or rebase_after < 2:
            # rebase_after=1 would accept every jump at once: no guard at all.
            raise ValueError("counter guard needs max_power_w > 0 and rebase_after >= 2")
        self.max_power_w = max_power_w
        self.rebase_after = rebase_after
        self.tolerance_wh = tolerance_wh
        self.step_allowance_wh = step_allowance_wh
        self._state: dict[Hashable, _KeyState] = {}

    def check(self, key: Hashable, value_wh: float, t: float) -> Quality:
        """Judge one counter value (Wh) read at monotonic time ``t`` (seconds)."""
        point = _Point(value_wh, t)
        state = self._state.get(key)
        if state is None:
            self._state[key] = _KeyState(base=point)
            return Quality.GOOD
        if self._plausible(state.base, point):
            state.base, state.candidate, state.chain = point, None, 0
            return Quality.GOOD
        if state.candidate is not None and self._plausible(state.candidate, point):
            state.chain += 1
        else:
            state.chain = 1
        state.candidate = point
        if state.chain >= self.rebase_after:
            state.base, state.candidate, state.chain = point, None, 0
            return Quality.GOOD
        return Quality.SUSPECT

    def forget(self, key: Hashable) -> None:
        """Drop the state of ``key`` (e.g. the meter was replaced on purpose)."""
        self._state.pop(key, None)

    def _plausible(self, before: _Point, after: _Point) -> bool:
        rise = after.value - before.value
        elapsed = max(after.t - before.t, 0.0)
        allowed = self.max_power_w * elapsed / 3600.0 + self.step_allowance_wh
        return -self.tolerance_wh <= rise <= allowed
