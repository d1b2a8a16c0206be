from __future__ import annotations

import pytest

from edge_agent.counter_guard import CounterGuard
from protocols.models import Quality

GOOD, SUSPECT = Quality.GOOD, Quality.SUSPECT
KEY = ("grid", "energy_import")


def test_first_value_and_plausible_rises_are_good() -> None:
    guard = CounterGuard(max_power_w=3600.0)  # 1 Wh per second at most
    assert guard.check(KEY, 1000.0, t=0.0) is GOOD
    assert guard.check(KEY, 1005.0, t=5.0) is GOOD
    assert guard.check(KEY, 1005.0, t=10.0) is GOOD  # standing still is fine


def test_backwards_step_is_suspect() -> None:
    guard = CounterGuard(max_power_w=3600.0)
    guard.check(KEY, 1000.0, t=0.0)
    assert guard.check(KEY, 990.0, t=1.0) is SUSPECT


def test_float_noise_backwards_is_tolerated() -> None:
    guard = CounterGuard(max_power_w=3600.0, tolerance_wh=0.5)
    guard.check(KEY, 1000.0, t=0.0)
    assert guard.check(KEY, 999.8, t=1.0) is GOOD


def test_rise_faster_than_max_power_is_suspect() -> None:
    guard = CounterGuard(max_power_w=3600.0, step_allowance_wh=10.0)
    guard.check(KEY, 1000.0, t=0.0)
    # 60 s at 3.6 kW allows 60 Wh (+10 Wh step allowance); 500 Wh is impossible.
    assert guard.check(KEY, 1500.0, t=60.0) is SUSPECT
    assert guard.check(KEY, 1065.0, t=60.0) is GOOD


def test_single_spike_does_not_move_the_base() -> None:
    guard = CounterGuard(max_power_w=3600.0)
    guard.check(KEY, 1000.0, t=0.0)
    assert guard.check(KEY, 9_000_000.0, t=1.0) is SUSPECT
    assert guard.check(KEY, 1002.0, t=2.0) is GOOD


def test_counter_reset_is_suspect_then_rebased_after_consistent_readings() -> None:
    guard = CounterGuard(max_power_w=3600.0, rebase_after=3)
    guard.check(KEY, 50_000.0, t=0.0)
    assert guard.check(KEY, 0.0, t=1.0) is SUSPECT  # reset
    assert guard.check(KEY, 1.0, t=2.0) is SUSPECT  # consistent with the new level, 2 of 3
    assert guard.check(KEY, 2.0, t=3.0) is GOOD  # 3 consistent: the new level is accepted
    assert guard.check(KEY, 3.0, t=4.0) is GOOD
    assert guard.check(KEY, 49_000.0, t=5.0) is SUSPECT  # the old level is now a jump


def test_inconsistent_suspects_restart_the_chain() -> None:
    guard = CounterGuard(max_power_w=3600.0, rebase_after=2)
    guard.check(KEY, 50_000.0, t=0.0)
    assert guard.check(KEY, 0.0, t=1.0) is SUSPECT
    assert guard.check(KEY, 10_000.0, t=2.0) is SUSPECT  # jumps again: chain restarts
    assert guard.check(KEY, 10_001.0, t=3.0) is GOOD


def test_state_is_per_key() -> None:
    guard = CounterGuard(max_power_w=3600.0)
    guard.check(("a", "energy_import"), 1000.0, t=0.0)
    assert guard.check(("b", "energy_import"), 5.0, t=1.0) is GOOD
    assert guard.check(("a", "energy_export"), 5.0, t=1.0) is GOOD
    assert guard.check(("a", "energy_import"), 5.0, t=1.0) is SUSPECT


def test_long_gap_allows_proportionally_more_energy() -> None:
    guard = CounterGuard(max_power_w=3600.0)
    guard.check(KEY, 0.0, t=0.0)
    assert guard.check(KEY, 3000.0, t=3600.0) is GOOD  # offline an hour at 3 kW


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        CounterGuard(max_power_w=0)
    with pytest.raises(ValueError):
        CounterGuard(max_power_w=1000.0, rebase_after=1)
