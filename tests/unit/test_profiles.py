"""The simulated home: seeded profiles, exact energy integration, the grid balance, faults."""

from __future__ import annotations

import math

import pytest

from simulator.meters import (
    GRID_UNIT,
    HEAT_PUMP_UNIT,
    INVERTER_UNIT,
    SUNSPEC_METER_UNIT,
    WATER_HEATER_UNIT,
    MeterBank,
)
from simulator.profiles import (
    Controls,
    HomeConfig,
    HomeProfile,
    clear_sky_fraction,
    heat_pump_power_factor,
    local_hour,
)
from simulator.unit_faults import FaultKind, InvalidFault, parse_fault

HOUR_MS = 3_600_000
# 2025-11-24 00:00 local (UTC+1 in HomeConfig's default)
MIDNIGHT_MS = 1_763_938_800_000


def at_local(hour: float) -> int:
    return MIDNIGHT_MS + round(hour * HOUR_MS)


def run(profile: HomeProfile, steps: int, dt_s: float) -> list[tuple[float, ...]]:
    out: list[tuple[float, ...]] = []
    for _ in range(steps):
        s = profile.advance(dt_s)
        out.append((s.base_w, s.heat_pump_w, s.water_heater_w, s.pv_w, *s.voltages, s.frequency))
    return out


def test_midnight_constant_is_local_midnight() -> None:
    assert local_hour(at_local(0.0), HomeConfig().utc_offset_h) == 0.0


def test_same_seed_gives_identical_profiles() -> None:
    a = HomeProfile(seed=7, start_ts_ms=at_local(8))
    b = HomeProfile(seed=7, start_ts_ms=at_local(8))
    assert run(a, 500, 2.0) == run(b, 500, 2.0)


def test_different_seeds_give_different_profiles() -> None:
    a = HomeProfile(seed=7, start_ts_ms=at_local(8))
    b = HomeProfile(seed=8, start_ts_ms=at_local(8))
    assert run(a, 50, 2.0) != run(b, 50, 2.0)


def test_pv_is_exactly_zero_at_night_and_producing_at_noon() -> None:
    night = HomeProfile(seed=1, start_ts_ms=at_local(22))
    assert all(s[3] == 0.0 for s in run(night, 2_000, 5.0))  # 22:00 -> ~00:47
    noon = HomeProfile(seed=1, start_ts_ms=at_local(12.5))
    pv = [s[3] for s in run(noon, 600, 1.0)]
    assert min(pv) > 0.0
    assert max(pv) <= noon.config.pv_peak_w


def test_clear_sky_bell_peaks_midday() -> None:
    assert clear_sky_fraction(5.9, 6, 20) == 0.0
    assert clear_sky_fraction(20.1, 6, 20) == 0.0
    assert clear_sky_fraction(13.0, 6, 20) == pytest.approx(1.0)
    assert 0 < clear_sky_fraction(8.0, 6, 20) < clear_sky_fraction(11.0, 6, 20)


def test_loads_cycle_on_and_off_over_a_day() -> None:
    profile = HomeProfile(seed=3, start_ts_ms=at_local(0))
    samples = run(profile, 24 * 60, 60.0)
    heat_pump = {s[1] > 0 for s in samples}
    water_heater = {s[2] > 0 for s in samples}
    assert heat_pump == {True, False}
    assert water_heater == {True, False}


def test_advance_rejects_negative_time() -> None:
    with pytest.raises(ValueError, match="dt_s"):
        HomeProfile(seed=1, start_ts_ms=at_local(0)).advance(-1.0)


def test_grid_meter_shows_home_load_minus_pv_and_exports_at_noon() -> None:
    bank = MeterBank(seed=2, start_ts_ms=at_local(12.5))
    exported = False
    for _ in range(300):
        bank.advance(1.0)
        sample, truth = bank.sample, bank.truth()
        assert math.isclose(sample.grid_w, sample.home_load_w - sample.pv_w)
        assert truth[GRID_UNIT]["power"] == pytest.approx(sample.grid_w, abs=0.01)
        assert truth[SUNSPEC_METER_UNIT]["power"] == pytest.approx(sample.grid_w, abs=1.0)
        assert truth[INVERTER_UNIT]["power"] == pytest.approx(sample.pv_w, abs=1.0)
        assert truth[HEAT_PUMP_UNIT]["power"] == pytest.approx(sample.heat_pump_w, abs=0.01)
        assert truth[WATER_HEATER_UNIT]["power"] == pytest.approx(sample.water_heater_w, abs=0.01)
        phases = sum(truth[GRID_UNIT][f"power_l{n}"] or 0.0 for n in (1, 2, 3))
        assert phases == pytest.approx(sample.grid_w, abs=0.01)
        exported |= (truth[GRID_UNIT]["power"] or 0.0) < 0
    assert exported, "5 kWp at 12:30 should push the grid meter into export"


def test_energy_counters_are_the_exact_integral_of_the_power_shown() -> None:
    bank = MeterBank(seed=4, start_ts_ms=at_local(11))
    steps = [0.2, 0.2, 0.35, 1.0, 0.05, 3.0] * 80
    start = {u: dict(m.counters.wh) for u, m in bank.meters.items()}
    expected: dict[tuple[int, str], list[float]] = {}
    for dt in steps:
        shown = bank.truth()
        grid_w = shown[GRID_UNIT]["power"] or 0.0
        expected.setdefault((GRID_UNIT, "energy_import"), []).append(max(grid_w, 0.0) * dt)
        expected.setdefault((GRID_UNIT, "energy_export"), []).append(max(-grid_w, 0.0) * dt)
        pv_w = shown[INVERTER_UNIT]["power"] or 0.0
        expected.setdefault((INVERTER_UNIT, "energy_production"), []).append(pv_w * dt)
        hp_w = shown[HEAT_PUMP_UNIT]["power"] or 0.0
        expected.setdefault((HEAT_PUMP_UNIT, "energy_import"), []).append(hp_w * dt)
        bank.advance(dt)
    for (unit, name), joules in expected.items():
        gained = bank.meters[unit].counters.wh[name] - start[unit][name]
        assert gained == pytest.approx(math.fsum(joules) / 3600.0, rel=1e-9, abs=1e-6)
    assert math.fsum(expected[(GRID_UNIT, "energy_export")]) > 0


def test_counters_never_decrease_without_a_fault() -> None:
    bank = MeterBank(seed=5, start_ts_ms=at_local(6))
    last = bank.truth()
    for _ in range(200):
        bank.advance(30.0)
        now = bank.truth()
        for unit, values in now.items():
            for name, value in values.items():
                if name.startswith(("energy", "reactive_energy")) and value is not None:
                    assert value >= (last[unit][name] or 0.0), (unit, name)
        last = now


def test_counter_step_back_and_reset_show_in_the_registers() -> None:
    bank = MeterBank(seed=6, start_ts_ms=at_local(9))
    before = bank.truth()[GRID_UNIT]["energy_import"] or 0.0
    bank.step_back_counters(GRID_UNIT, 50_000.0)
    assert bank.truth()[GRID_UNIT]["energy_import"] == pytest.approx(before - 50_000.0, abs=5.0)
    bank.step_back_counters(GRID_UNIT)
    assert bank.truth()[GRID_UNIT]["energy_import"] == 0.0
    # SunSpec acc32: 0 is the "not implemented" marker, so a reset counter reads as missing
    bank.step_back_counters(INVERTER_UNIT)
    assert bank.truth()[INVERTER_UNIT]["energy_production"] is None


def test_sunspec_images_start_with_the_marker_and_common_model() -> None:
    bank = MeterBank(seed=1, start_ts_ms=at_local(12))
    image = bank.meters[INVERTER_UNIT].image
    assert [image[40000], image[40001], image[40002], image[40003]] == [0x5375, 0x6E53, 1, 66]
    assert [image[40070], image[40071]] == [103, 50]
    meter = bank.meters[SUNSPEC_METER_UNIT].image
    assert [meter[40070], meter[40071]] == [203, 105]
    assert [meter[40070 + 107], meter[40070 + 108]] == [0xFFFF, 0]


def test_fault_requests_are_validated_with_the_field_named() -> None:
    assert parse_fault("slow", {"delay_s": 1.5}).delay_s == 1.5
    assert parse_fault("exception", {}).code == 4
    assert parse_fault("silent", {}).kind is FaultKind.SILENT
    with pytest.raises(InvalidFault, match="kind"):
        parse_fault("explode", {})
    with pytest.raises(InvalidFault, match="delay_s"):
        parse_fault("slow", {})
    with pytest.raises(InvalidFault, match="code"):
        parse_fault("exception", {"code": 99})
    with pytest.raises(InvalidFault, match="delay_s"):
        parse_fault("silent", {"delay_s": 1})
    with pytest.raises(InvalidFault, match="step_back_wh"):
        parse_fault("counter_reset", {"step_back_wh": -1})


def test_heat_pump_power_factor_rises_with_setpoint_and_is_one_at_45() -> None:
    factors = [heat_pump_power_factor(c / 10) for c in range(250, 601, 5)]
    assert factors == sorted(factors) and len(set(factors)) == len(factors)
    assert heat_pump_power_factor(45.0) == 1.0
    assert factors[0] > 0


def test_switched_off_loads_draw_nothing_and_default_controls_change_nothing() -> None:
    plain = HomeProfile(seed=3, start_ts_ms=at_local(0))
    controlled = HomeProfile(seed=3, start_ts_ms=at_local(0))
    controlled.set_controls(Controls())
    assert run(plain, 200, 60.0) == run(controlled, 200, 60.0)
    controlled.set_controls(Controls(water_heater_on=False, heat_pump_on=False))
    samples = run(controlled, 500, 60.0)
    assert {s[1] for s in samples} == {0.0} and {s[2] for s in samples} == {0.0}
