"""S0 pulse maths (DIN 43864 / EN 62053-31 pulse outputs): energy from a pulse count, power
from the interval between pulses, and a debouncing counter. Pure: no clock, no GPIO, no I/O.

An S0 meter closes its output once per fixed quantum of energy (``1000 / impulses_per_kwh``
Wh; the label says e.g. "1000 imp/kWh"). So:

- energy is exact: ``count * 1000 / impulses_per_kwh`` Wh;
- power is only known on average over the last pulse interval
  (``wh_per_pulse * 3600 / interval_s`` W), and when no pulse has arrived for ``t`` seconds a
  constant load cannot exceed ``wh_per_pulse * 3600 / t`` W. The reported power is the smaller
  of the two, so a load that switched off reads towards 0 instead of holding its last value.

Timestamps are monotonic seconds (any origin); callers take them from a monotonic clock so a
wall-clock step (NTP on a Pi without an RTC) never turns into a power spike.
"""

from __future__ import annotations

import math

from protocols.errors import InvalidMessage

WH_PER_KWH = 1000.0
SECONDS_PER_HOUR = 3600.0
# DIN 43864: a pulse lasts >= 30 ms and so does the pause after it.
DEFAULT_DEBOUNCE_S = 0.030
# Float timestamps: 1000.03 - 1000.0 < 0.03. A pulse exactly one debounce apart must count.
_TIME_EPSILON_S = 1e-9


def _positive(field: str, value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise InvalidMessage(field, f"must be a finite number > 0, got {value!r}")
    return float(value)


def _non_negative(field: str, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise InvalidMessage(field, f"must be a finite number >= 0, got {value!r}")
    return float(value)


def _impulses(impulses_per_kwh: float) -> float:
    if not math.isfinite(impulses_per_kwh) or impulses_per_kwh <= 0:
        raise InvalidMessage(
            "impulses_per_kwh",
            f"must be a finite number > 0 (the meter's label, e.g. 1000 imp/kWh), "
            f"got {impulses_per_kwh!r}",
        )
    return float(impulses_per_kwh)


def wh_per_pulse(impulses_per_kwh: float) -> float:
    """Energy one pulse stands for, in Wh. Raises :class:`InvalidMessage` if not > 0."""
    return WH_PER_KWH / _impulses(impulses_per_kwh)


def energy_wh(count: int, impulses_per_kwh: float) -> float:
    """Energy of ``count`` pulses in Wh (exact for labels like 1000, 800, 2000 imp/kWh).

    Raises :class:`InvalidMessage` naming ``count`` (negative) or ``impulses_per_kwh`` (<= 0).
    """
    if count < 0:
        raise InvalidMessage("count", f"must be >= 0, got {count!r}")
    # Multiply first: 3 * 1000 / 10_000 is 0.3, but 3 * (1000 / 10_000) is 0.30000000000000004.
    return count * WH_PER_KWH / _impulses(impulses_per_kwh)


def power_from_interval_w(interval_s: float, impulses_per_kwh: float) -> float:
    """Average power in W over one pulse interval of ``interval_s`` seconds (> 0)."""
    interval = _positive("interval_s", interval_s)
    return wh_per_pulse(impulses_per_kwh) * SECONDS_PER_HOUR / interval


def power_upper_bound_w(since_last_pulse_s: float, impulses_per_kwh: float) -> float:
    """The most a constant load can draw if no pulse arrived for ``since_last_pulse_s`` s.

    ``math.inf`` at 0 s (no bound yet); decays as 1/t towards 0.
    """
    since = _non_negative("since_last_pulse_s", since_last_pulse_s)
    if since == 0:
        return math.inf
    return wh_per_pulse(impulses_per_kwh) * SECONDS_PER_HOUR / since


class S0Counter:
    """Counts debounced pulses and answers energy and power. Not thread-safe: lock around it.

    Feed it the instants (monotonic seconds) at which the input became active with
    :meth:`pulse`, and optionally the instants it became inactive with :meth:`release`.
    A pulse is counted only if at least ``debounce_s`` has passed since the last counted pulse
    and since the last release; otherwise it is a contact bounce, counted in :attr:`bounces`.
    Checking the release as well rejects the bounce that follows the end of a pulse.

    ``pulses`` and ``base_wh`` restore a persisted state: energy is
    ``base_wh + energy_wh(pulses, impulses_per_kwh)``. ``base_wh`` lets a caller keep the
    energy counter continuous when the meter's ``impulses_per_kwh`` setting is corrected.
    Power needs two pulses seen by this instance (a restart loses their timing).
    """

    def __init__(
        self,
        impulses_per_kwh: float,
        debounce_s: float = DEFAULT_DEBOUNCE_S,
        *,
        pulses: int = 0,
        base_wh: float = 0.0,
    ) -> None:
        self.impulses_per_kwh = _impulses(impulses_per_kwh)
        self.debounce_s = _non_negative("debounce_s", debounce_s)
        if pulses < 0:
            raise InvalidMessage("pulses", f"must be >= 0, got {pulses!r}")
        self.base_wh = _non_negative("base_wh", base_wh)
        self._pulses = pulses
        self._bounces = 0
        self._last_pulse: float | None = None
        self._previous_pulse: float | None = None
        self._last_release: float | None = None

    @property
    def pulses(self) -> int:
        """Counted pulses, including the restored ones."""
        return self._pulses

    @property
    def bounces(self) -> int:
        """Activations rejected as contact bounce since this instance was made."""
        return self._bounces

    @property
    def last_pulse_at(self) -> float | None:
        """Monotonic instant of the last counted pulse, ``None`` before the first."""
        return self._last_pulse

    def pulse(self, at: float) -> bool:
        """Record an activation at ``at`` (monotonic s); return True if it counted.

        An instant earlier than the last counted pulse (impossible with a monotonic clock)
        is treated as a bounce rather than corrupting the interval.
        """
        last, window = self._last_pulse, self.debounce_s - _TIME_EPSILON_S
        too_soon = last is not None and at - last < window
        after_release = self._last_release is not None and at - self._last_release < window
        if too_soon or after_release or (last is not None and at < last):
            self._bounces += 1
            return False
        self._previous_pulse, self._last_pulse = last, at
        self._pulses += 1
        return True

    def release(self, at: float) -> None:
        """Record that the input became inactive at ``at`` (monotonic s)."""
        self._last_release = at

    def energy_wh(self) -> float:
        """Total energy in Wh: monotonic non-decreasing over the life of the counter."""
        return self.base_wh + energy_wh(self._pulses, self.impulses_per_kwh)

    def power_w(self, now: float) -> float | None:
        """Best power estimate in W at ``now``; ``None`` until two pulses gave an interval.

        The interval power of the last two pulses, capped by the decaying bound once the time
        since the last pulse exceeds that interval.
        """
        last, previous = self._last_pulse, self._previous_pulse
        if last is None or previous is None or last <= previous:
            return None
        power = power_from_interval_w(last - previous, self.impulses_per_kwh)
        since = now - last
        if since > 0:
            power = min(power, power_upper_bound_w(since, self.impulses_per_kwh))
        return power
