"""Seeded household power profiles: pure code, time passed in, no sleeps, no I/O.

A :class:`HomeProfile` is a small state machine. :attr:`HomeProfile.sample` is the state *now*;
:meth:`HomeProfile.advance` moves it ``dt_s`` seconds on. Power is piecewise constant: the power
in a sample holds for the whole step that follows it, so a counter that adds ``P * dt`` per step
is the exact integral of the power the meters showed (see ``simulator.meters``).

Same seed and same sequence of ``advance`` steps give the same samples, bit for bit.
Local time of day (for the sun and household habits) is ``ts_ms`` shifted by ``utc_offset_h``.

:class:`Controls` are what the writable devices set (``simulator.controllers``): switching the
water heater or heat pump off makes its power 0 (its thermostat keeps tracking demand, so it
draws again at once when switched back on while demand lasts); the heat pump's flow setpoint
scales its electrical power (:func:`heat_pump_power_factor`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

_DAY_S = 86_400.0


@dataclass(frozen=True)
class HomeConfig:
    """Sizes of the simulated home. Watts, hours, volts, hertz."""

    pv_peak_w: float = 5_000.0
    sunrise_h: float = 6.0
    sunset_h: float = 20.0
    utc_offset_h: float = 1.0
    base_w: float = 180.0
    fridge_w: float = 110.0
    heat_pump_w: float = 2_200.0
    water_heater_w: float = 2_000.0
    nominal_v: float = 230.0
    nominal_hz: float = 50.0


@dataclass(frozen=True)
class Controls:
    """What the home's controllers are set to. Defaults: everything on, 45.0 °C flow."""

    water_heater_on: bool = True
    heat_pump_on: bool = True
    heat_pump_setpoint_c: float = 45.0


REFERENCE_FLOW_C = 45.0
_POWER_PER_KELVIN = 0.025


def heat_pump_power_factor(setpoint_c: float) -> float:
    """Electrical power of a running heat pump relative to its 45 °C draw.

    A hotter flow lowers the COP, so delivering the heat costs more electricity: the model is
    linear, +2.5 % per kelvin above 45 °C (-2.5 % below), i.e. x0.5 at 25 °C, x1.375 at 60 °C.
    Strictly increasing; exactly 1.0 at 45 °C, so the default home is unchanged.
    """
    return 1.0 + _POWER_PER_KELVIN * (setpoint_c - REFERENCE_FLOW_C)


@dataclass(frozen=True)
class PowerSample:
    """Everything the meters show at ``ts_ms``, in canonical units (W, V, Hz).

    ``base_w`` is the small-load circuit (lights, electronics) *including* the fridge.
    """

    ts_ms: int
    base_w: float
    fridge_w: float
    heat_pump_w: float
    water_heater_w: float
    pv_w: float
    voltages: tuple[float, float, float]
    frequency: float

    @property
    def home_load_w(self) -> float:
        return self.base_w + self.heat_pump_w + self.water_heater_w

    @property
    def grid_w(self) -> float:
        """Net power at the grid connection: + import, - export."""
        return self.home_load_w - self.pv_w


def local_hour(ts_ms: int, utc_offset_h: float) -> float:
    """Hour of the local day in [0, 24)."""
    return ((ts_ms / 1000.0 + utc_offset_h * 3600.0) % _DAY_S) / 3600.0


def clear_sky_fraction(hour: float, sunrise_h: float, sunset_h: float) -> float:
    """Share of peak PV under a clear sky: a bell between sunrise and sunset, exactly 0 outside."""
    if not sunrise_h < hour < sunset_h:
        return 0.0
    elevation = math.sin(math.pi * (hour - sunrise_h) / (sunset_h - sunrise_h))
    return float(max(0.0, elevation) ** 1.3)


def _bump(hour: float, centre: float, width: float) -> float:
    return math.exp(-(((hour - centre) / width) ** 2))


class OnOffCycle:
    """A thermostat-like load: on for a random while, then off for a random while."""

    def __init__(self, rng: random.Random, on_s: tuple[float, float], off_s: tuple[float, float],
                 power_w: float) -> None:
        self._rng = rng
        self._on_s = on_s
        self._off_s = off_s
        self._power_w = power_w
        self.on = rng.random() < 0.5
        self._left_s = rng.uniform(0.0, (on_s if self.on else off_s)[1])

    def advance(self, dt_s: float, off_scale: float = 1.0) -> None:
        """Move ``dt_s`` on; ``off_scale`` < 1 shortens the pauses (more demand)."""
        self._left_s -= dt_s
        while self._left_s <= 0.0:
            self.on = not self.on
            low, high = self._on_s if self.on else self._off_s
            scale = 1.0 if self.on else off_scale
            self._left_s += self._rng.uniform(low, high) * scale

    def power(self, jitter: float) -> float:
        """Power now; ``jitter`` is a relative noise term (compressor draw varies)."""
        return self._power_w * (1.0 + jitter) if self.on else 0.0


class WaterTank:
    """Resistive water heater with a thermostat: hot-water draws cool the tank, then it heats."""

    def __init__(self, rng: random.Random, power_w: float, litres: float = 150.0) -> None:
        self._rng = rng
        self._power_w = power_w
        self._k_per_ws = 1.0 / (litres * 4186.0)  # kelvin per joule
        self.temp_c = rng.uniform(52.0, 60.0)
        self.heating = False  # the thermostat calls for heat
        self.enabled = True  # the switch in front of the element (unit 20)

    def advance(self, dt_s: float, hour: float) -> None:
        if self.heating and self.enabled:
            self.temp_c += self._power_w * dt_s * self._k_per_ws
        self.temp_c -= 0.0004 * dt_s  # standby loss, ~1.5 K/h
        draw_rate_per_s = (_bump(hour, 7.0, 1.0) + _bump(hour, 20.0, 1.5)) / 1800.0
        if self._rng.random() < min(1.0, draw_rate_per_s * dt_s):
            self.temp_c -= self._rng.uniform(4.0, 12.0)
        if self.temp_c < 52.0:
            self.heating = True
        elif self.temp_c >= 60.0:
            self.heating = False

    def power(self) -> float:
        """Power now; 0 while switched off, even when the thermostat calls for heat."""
        return self._power_w if self.heating and self.enabled else 0.0


class Wander:
    """Mean-reverting noise (Ornstein-Uhlenbeck), so values drift instead of jumping."""

    def __init__(self, rng: random.Random, mean: float, sigma: float, tau_s: float) -> None:
        self._rng = rng
        self._mean = mean
        self._sigma = sigma
        self._tau_s = tau_s
        self.value = mean + rng.gauss(0.0, sigma)

    def advance(self, dt_s: float) -> None:
        keep = math.exp(-dt_s / self._tau_s)
        spread = self._sigma * math.sqrt(max(0.0, 1.0 - keep * keep))
        self.value = self._mean + (self.value - self._mean) * keep + self._rng.gauss(0.0, spread)


class HomeProfile:
    """The whole home: base load with fridge cycles, heat pump, water heater, PV, grid quality."""

    def __init__(self, seed: int, start_ts_ms: int, config: HomeConfig | None = None) -> None:
        self.config = cfg = config or HomeConfig()
        self._rng = random.Random(seed)
        rng = self._rng
        self._ts_ms_exact = float(start_ts_ms)
        self._fridge = OnOffCycle(rng, (600.0, 1_200.0), (1_200.0, 2_400.0), cfg.fridge_w)
        self._heat_pump = OnOffCycle(rng, (900.0, 2_400.0), (600.0, 3_000.0), cfg.heat_pump_w)
        self._tank = WaterTank(rng, cfg.water_heater_w)
        self._clouds = Wander(rng, 0.25, 0.2, 600.0)
        self._base = Wander(rng, 0.0, 0.05, 120.0)
        self._volts = tuple(Wander(rng, cfg.nominal_v, 2.5, 60.0) for _ in range(3))
        self._hz = Wander(rng, cfg.nominal_hz, 0.02, 30.0)
        self.controls = Controls()
        self.sample = self._make_sample()

    def set_controls(self, controls: Controls) -> PowerSample:
        """Apply the controllers' settings now: :attr:`sample` is re-rendered at once."""
        self.controls = controls
        self._tank.enabled = controls.water_heater_on
        self.sample = self._make_sample()
        return self.sample

    @property
    def ts_ms(self) -> int:
        return round(self._ts_ms_exact)

    def advance(self, dt_s: float) -> PowerSample:
        """Move the home ``dt_s`` seconds on and return the new :attr:`sample`."""
        if dt_s < 0:
            raise ValueError(f"dt_s must be >= 0, got {dt_s}")
        hour = local_hour(self.ts_ms, self.config.utc_offset_h)
        night_demand = 0.5 if hour < 6.0 or hour >= 21.0 else 1.0
        self._fridge.advance(dt_s)
        self._heat_pump.advance(dt_s, off_scale=night_demand)
        self._tank.advance(dt_s, hour)
        self._clouds.advance(dt_s)
        self._base.advance(dt_s)
        for volt in self._volts:
            volt.advance(dt_s)
        self._hz.advance(dt_s)
        self._ts_ms_exact += dt_s * 1000.0
        self.sample = self._make_sample()
        return self.sample

    def _make_sample(self) -> PowerSample:
        cfg = self.config
        hour = local_hour(self.ts_ms, cfg.utc_offset_h)
        habits = 350.0 * _bump(hour, 7.5, 1.0) + 600.0 * _bump(hour, 19.0, 2.0)
        fridge = self._fridge.power(0.05 * self._base.value)
        base = max(40.0, (cfg.base_w + habits) * (1.0 + self._base.value)) + fridge
        cloud = min(0.95, max(0.0, self._clouds.value))
        pv = cfg.pv_peak_w * clear_sky_fraction(hour, cfg.sunrise_h, cfg.sunset_h) * (1 - cloud)
        ctl = self.controls
        heat_pump = (self._heat_pump.power(0.5 * self._base.value)
                     * heat_pump_power_factor(ctl.heat_pump_setpoint_c)
                     if ctl.heat_pump_on else 0.0)
        return PowerSample(
            ts_ms=self.ts_ms,
            base_w=base,
            fridge_w=fridge,
            heat_pump_w=heat_pump,
            water_heater_w=self._tank.power(),
            pv_w=pv,
            voltages=(self._volts[0].value, self._volts[1].value, self._volts[2].value),
            frequency=self._hz.value,
        )
