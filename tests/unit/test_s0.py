"""S0 pulse maths: energy from counts, power from intervals, the decay bound, debounce."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import InvalidMessage
from protocols.s0 import (
    S0Counter,
    energy_wh,
    power_from_interval_w,
    power_upper_bound_w,
    wh_per_pulse,
)


@pytest.mark.parametrize(
    ("count", "impulses_per_kwh", "expected_wh"),
    [
        (0, 1000, 0.0),
        (1, 1000, 1.0),
        (1500, 1000, 1500.0),
        (4, 800, 5.0),
        (3, 10_000, 0.3),
        (1, 2000, 0.5),
        (1_000_000_007, 1000, 1_000_000_007.0),
    ],
)
def test_energy_is_count_times_one_pulse(
    count: int, impulses_per_kwh: float, expected_wh: float
) -> None:
    assert energy_wh(count, impulses_per_kwh) == expected_wh


def test_power_from_interval_is_one_pulse_over_the_interval() -> None:
    # 1000 imp/kWh: 1 Wh per pulse; one per 3.6 s is 1 kW.
    assert power_from_interval_w(3.6, 1000) == pytest.approx(1000.0)
    assert power_from_interval_w(1.0, 800) == pytest.approx(4500.0)


def test_upper_bound_decays_towards_zero_without_pulses() -> None:
    assert power_upper_bound_w(0, 1000) == math.inf
    bounds = [power_upper_bound_w(t, 1000) for t in (1, 10, 100, 3600)]
    assert bounds == sorted(bounds, reverse=True)
    assert bounds[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf])
def test_impulses_per_kwh_must_be_positive_and_named(bad: float) -> None:
    with pytest.raises(InvalidMessage) as err:
        energy_wh(1, bad)
    assert err.value.field == "impulses_per_kwh"
    with pytest.raises(InvalidMessage, match="impulses_per_kwh"):
        S0Counter(bad)
    with pytest.raises(InvalidMessage, match="impulses_per_kwh"):
        wh_per_pulse(bad)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: energy_wh(-1, 1000), "count"),
        (lambda: power_from_interval_w(0, 1000), "interval_s"),
        (lambda: power_upper_bound_w(-1, 1000), "since_last_pulse_s"),
        (lambda: S0Counter(1000, debounce_s=-0.1), "debounce_s"),
        (lambda: S0Counter(1000, pulses=-5), "pulses"),
        (lambda: S0Counter(1000, base_wh=math.nan), "base_wh"),
    ],
)
def test_bad_inputs_name_their_field(call: object, field: str) -> None:
    with pytest.raises(InvalidMessage) as err:
        call()  # type: ignore[operator]
    assert err.value.field == field


def test_counter_counts_pulses_at_least_debounce_apart() -> None:
    counter = S0Counter(1000, debounce_s=0.030)
    assert counter.pulse(1000.0)
    assert counter.pulse(1000.03)  # exactly one debounce later counts despite float error
    assert counter.pulse(1001.0)
    assert (counter.pulses, counter.bounces, counter.energy_wh()) == (3, 0, 3.0)


def test_contact_bounce_within_debounce_is_rejected_and_counted_as_bounce() -> None:
    counter = S0Counter(1000, debounce_s=0.030)
    assert counter.pulse(10.000)
    counter.release(10.001)
    assert not counter.pulse(10.002)  # bounce on closing
    counter.release(10.040)  # the real end of the pulse
    assert not counter.pulse(10.041)  # bounce on opening: 41 ms after the pulse, 1 ms after release
    counter.release(10.042)
    assert counter.pulse(10.500)
    assert (counter.pulses, counter.bounces) == (2, 2)


def test_timestamp_going_backwards_is_a_bounce_not_a_negative_interval() -> None:
    counter = S0Counter(1000, debounce_s=0)
    counter.pulse(5.0)
    counter.pulse(6.0)
    assert not counter.pulse(4.0)
    assert counter.pulses == 2
    assert counter.power_w(6.0) == pytest.approx(3600.0)


def test_power_unknown_until_two_pulses() -> None:
    counter = S0Counter(1000, pulses=500)  # restored count carries no timing
    assert counter.power_w(0.0) is None
    counter.pulse(1.0)
    assert counter.power_w(1.5) is None
    counter.pulse(4.6)
    assert counter.power_w(4.6) == pytest.approx(1000.0)


def test_power_holds_within_the_interval_then_decays_when_load_switches_off() -> None:
    counter = S0Counter(1000)
    counter.pulse(0.0)
    counter.pulse(3.6)  # 1 kW
    assert counter.power_w(5.0) == pytest.approx(1000.0)  # 1.4 s after: no evidence of change
    assert counter.power_w(3.6 + 36) == pytest.approx(100.0)  # 36 s without a pulse: <= 100 W
    assert counter.power_w(3.6 + 3600) == pytest.approx(1.0)


def test_restored_count_and_base_add_up() -> None:
    counter = S0Counter(800, pulses=8, base_wh=100.0)
    counter.pulse(1.0)
    assert counter.energy_wh() == pytest.approx(100.0 + 9 * 1.25)


@given(
    st.integers(0, 10**12),
    st.integers(0, 10**6),
    st.floats(0.1, 100_000, allow_nan=False, allow_infinity=False),
)
def test_energy_is_monotonic_in_pulse_count(count: int, more: int, impulses_per_kwh: float) -> None:
    assert energy_wh(count + more, impulses_per_kwh) >= energy_wh(count, impulses_per_kwh)


@given(
    st.lists(st.floats(0, 5, allow_nan=False), max_size=200),
    st.floats(0, 0.1, allow_nan=False),
    st.sampled_from([100.0, 800.0, 1000.0, 10_000.0]),
)
def test_counter_energy_never_decreases_and_power_never_negative(
    gaps: list[float], debounce_s: float, impulses_per_kwh: float
) -> None:
    counter = S0Counter(impulses_per_kwh, debounce_s, pulses=7)
    now, energy = 100.0, counter.energy_wh()
    for gap in gaps:
        now += gap
        counted = counter.pulse(now)
        assert counter.energy_wh() >= energy
        assert (counter.energy_wh() > energy) == counted
        energy = counter.energy_wh()
        power = counter.power_w(now + gap)
        assert power is None or power >= 0
    assert counter.pulses + counter.bounces == 7 + len(gaps)
