"""Safety interlocks of one actuator: pure rules over its switch history (no I/O, no clock).

Rules come from :class:`~edge_agent.config.InterlockSettings`:

- ``min_on_s`` / ``min_off_s`` (anti short-cycle): after switching on, the device stays on at
  least ``min_on_s``; after switching off, it stays off at least ``min_off_s``. Compressors and
  contactors wear out or trip when cycled fast.
- ``max_switches_per_hour``: state changes in the last 3600 s are counted; one more is refused.
- ``setpoint_min`` / ``setpoint_max``: the allowed range of a ``set_setpoint`` value or a
  ``set_current_limit`` current (the actuator's one numeric value, in its unit).

A ``switch_off`` with ``priority = safety`` bypasses ``min_on_s`` and ``max_switches_per_hour``:
turning something off for safety (overload, overheating, a tripped grid limit) must never be
blocked by wear protection. It still counts as a switch, so it delays the next switch-on by
``min_off_s``. The value range is never bypassed.

Only a change of state is a switch: ``switch_on`` of a device already on passes every rule and
is not counted. Times are wall-clock epoch ms because the history survives restarts (it is
persisted with the dedup window, so a restart cannot be used to skip ``min_off_s``); a wall
clock stepped backwards makes the last switch look recent, which errs on the blocking side for
at most the size of the step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edge_agent.config import InterlockSettings
from protocols.commands import Action, ParamValue, Priority

__all__ = ["HOUR_MS", "Interlock", "SwitchEvent", "value_param"]

HOUR_MS = 3_600_000
_SWITCHES = {Action.SWITCH_ON: True, Action.SWITCH_OFF: False}


@dataclass(frozen=True)
class SwitchEvent:
    """A change of an actuator's on/off state at ``ts_ms`` (wall epoch ms)."""

    ts_ms: int
    on: bool


def value_param(action: Action) -> str | None:
    """The numeric parameter an action sets (``value``, ``amps``), ``None`` for switches."""
    return {Action.SET_SETPOINT: "value", Action.SET_CURRENT_LIMIT: "amps"}.get(action)


class Interlock:
    """One actuator's rules and its switch history (the last hour plus the latest switch).

    Feed it the persisted history at start-up, :meth:`check` a command before actuation, and
    :meth:`record` every switch that took effect (or that a read-back revealed).
    """

    def __init__(self, device_id: str, rules: InterlockSettings,
                 history: Iterable[SwitchEvent] = ()) -> None:
        self.device_id = device_id
        self.rules = rules
        self._events: list[SwitchEvent] = sorted(history, key=lambda e: e.ts_ms)

    @property
    def is_on(self) -> bool | None:
        """The last known state; ``None`` before the first switch this gateway has seen."""
        return self._events[-1].on if self._events else None

    @property
    def last_switch(self) -> SwitchEvent | None:
        return self._events[-1] if self._events else None

    def switch_for(self, action: Action, now_ms: int) -> SwitchEvent | None:
        """The switch ``action`` would make now, or ``None`` if it changes no on/off state."""
        target = _SWITCHES.get(action)
        if target is None or self.is_on is target:
            return None
        return SwitchEvent(now_ms, target)

    def check(self, action: Action, params: dict[str, ParamValue], now_ms: int,
              priority: Priority = Priority.NORMAL) -> str | None:
        """``None`` if the command may run now, else the reason it is refused."""
        param = value_param(action)
        if param is not None:
            return self._check_range(param, params.get(param))
        switch = self.switch_for(action, now_ms)
        if switch is None:
            return None
        safety_off = priority is Priority.SAFETY and not switch.on
        reason = self._check_dwell(switch, now_ms, bypass_min_on=safety_off)
        if reason is None and not safety_off:
            reason = self._check_rate(now_ms)
        return reason

    def record(self, event: SwitchEvent) -> None:
        """Remember a switch that happened; forgets history older than an hour (except the
        latest switch, which the dwell rules need however old it is)."""
        self._events.append(event)
        self._events.sort(key=lambda e: e.ts_ms)
        horizon = event.ts_ms - HOUR_MS
        self._events = [e for e in self._events[:-1] if e.ts_ms > horizon] + self._events[-1:]

    def switches_in_last_hour(self, now_ms: int) -> int:
        return sum(1 for e in self._events if now_ms - e.ts_ms < HOUR_MS)

    def _check_range(self, param: str, value: ParamValue | None) -> str | None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"params.{param}: must be a number"
        lo, hi = self.rules.setpoint_min, self.rules.setpoint_max
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            shown_lo = "-inf" if lo is None else f"{lo:g}"
            shown_hi = "+inf" if hi is None else f"{hi:g}"
            return (f"interlock: {self.device_id} {param} {value:g} is outside the allowed "
                    f"range {shown_lo}..{shown_hi}")
        return None

    def _check_dwell(self, switch: SwitchEvent, now_ms: int, *, bypass_min_on: bool) -> str | None:
        last = self.last_switch
        if last is None:
            return None
        elapsed_s = max(0, now_ms - last.ts_ms) / 1000.0
        if switch.on:
            needed, state = self.rules.min_off_s, "off"
        elif bypass_min_on:
            return None
        else:
            needed, state = self.rules.min_on_s, "on"
        if elapsed_s < needed:
            return (f"interlock: {self.device_id} must stay {state} for {needed:g} s after "
                    f"switching {state} ({elapsed_s:.0f} s so far, min_{state}_s)")
        return None

    def _check_rate(self, now_ms: int) -> str | None:
        limit = self.rules.max_switches_per_hour
        if limit is None:
            return None
        count = self.switches_in_last_hour(now_ms)
        if count >= limit:
            return (f"interlock: {self.device_id} switched {count} times in the last hour "
                    f"(max_switches_per_hour = {limit})")
        return None
