"""Interlock rules: anti short-cycle, switches per hour, value range, safety bypass, restart."""

from __future__ import annotations

from edge_agent.clock import FakeClock
from edge_agent.config import InterlockSettings
from edge_agent.interlocks import Interlock, SwitchEvent
from protocols.commands import Action, Priority

ON, OFF = Action.SWITCH_ON, Action.SWITCH_OFF


def switched(lock: Interlock, action: Action, clock: FakeClock) -> None:
    """Check, then record the switch as the executor does after a successful actuation."""
    assert lock.check(action, {}, clock.now_ms()) is None
    event = lock.switch_for(action, clock.now_ms())
    if event is not None:
        lock.record(event)


def test_min_off_blocks_a_switch_on_until_the_device_was_off_long_enough() -> None:
    clock = FakeClock()
    lock = Interlock("heatpump", InterlockSettings(min_off_s=300))
    switched(lock, OFF, clock)
    clock.advance(120)
    reason = lock.check(ON, {}, clock.now_ms())
    assert reason is not None
    assert "heatpump must stay off for 300 s" in reason and "min_off_s" in reason
    clock.advance(180)
    assert lock.check(ON, {}, clock.now_ms()) is None


def test_min_on_blocks_a_switch_off_until_the_device_was_on_long_enough() -> None:
    clock = FakeClock()
    lock = Interlock("heatpump", InterlockSettings(min_on_s=600))
    switched(lock, ON, clock)
    clock.advance(599)
    assert "min_on_s" in (lock.check(OFF, {}, clock.now_ms()) or "")
    clock.advance(1)
    assert lock.check(OFF, {}, clock.now_ms()) is None


def test_a_command_that_changes_nothing_is_not_a_switch_and_passes() -> None:
    clock = FakeClock()
    lock = Interlock("boiler", InterlockSettings(min_on_s=600, max_switches_per_hour=1))
    switched(lock, ON, clock)
    assert lock.switch_for(ON, clock.now_ms()) is None
    assert lock.check(ON, {}, clock.now_ms()) is None


def test_switches_per_hour_are_counted_over_a_rolling_hour() -> None:
    clock = FakeClock()
    lock = Interlock("boiler", InterlockSettings(max_switches_per_hour=3))
    for action in (ON, OFF, ON):
        switched(lock, action, clock)
        clock.advance(60)
    reason = lock.check(OFF, {}, clock.now_ms())
    assert reason is not None and "switched 3 times in the last hour" in reason
    clock.advance(3600 - 180)  # the first switch is now an hour old
    assert lock.check(OFF, {}, clock.now_ms()) is None


def test_a_safety_switch_off_bypasses_min_on_and_the_hourly_limit() -> None:
    clock = FakeClock()
    lock = Interlock("ev", InterlockSettings(min_on_s=900, min_off_s=300,
                                            max_switches_per_hour=1))
    switched(lock, ON, clock)
    clock.advance(5)
    assert lock.check(OFF, {}, clock.now_ms()) is not None
    assert lock.check(OFF, {}, clock.now_ms(), Priority.SAFETY) is None
    event = lock.switch_for(OFF, clock.now_ms())
    assert event is not None
    lock.record(event)
    # A safety switch-on gets no bypass: min_off still protects the device.
    assert "min_off_s" in (lock.check(ON, {}, clock.now_ms(), Priority.SAFETY) or "")


def test_values_outside_the_allowed_range_are_refused_even_with_safety_priority() -> None:
    lock = Interlock("heatpump-setpoint", InterlockSettings(setpoint_min=25, setpoint_max=60))
    now = FakeClock().now_ms()
    assert lock.check(Action.SET_SETPOINT, {"value": 45.5}, now) is None
    assert lock.check(Action.SET_SETPOINT, {"value": 25}, now) is None
    high = lock.check(Action.SET_SETPOINT, {"value": 70.0}, now, Priority.SAFETY)
    assert high == ("interlock: heatpump-setpoint value 70 is outside the allowed range 25..60")
    assert lock.check(Action.SET_SETPOINT, {"value": 24.9}, now) is not None


def test_the_range_applies_to_a_current_limit_too() -> None:
    lock = Interlock("wallbox", InterlockSettings(setpoint_min=6, setpoint_max=16))
    now = FakeClock().now_ms()
    assert lock.check(Action.SET_CURRENT_LIMIT, {"amps": 16}, now) is None
    reason = lock.check(Action.SET_CURRENT_LIMIT, {"amps": 32}, now)
    assert reason is not None and "amps 32" in reason


def test_history_handed_over_at_restart_keeps_min_off_in_force() -> None:
    clock = FakeClock()
    before = Interlock("heatpump", InterlockSettings(min_off_s=300))
    switched(before, ON, clock)
    clock.advance(400)
    switched(before, OFF, clock)
    history = [SwitchEvent(clock.now_ms() - 400_000, True), SwitchEvent(clock.now_ms(), False)]
    clock.advance(10)  # the agent restarts 10 s later
    after = Interlock("heatpump", InterlockSettings(min_off_s=300), history)
    assert after.is_on is False
    assert after.check(ON, {}, clock.now_ms()) is not None


def test_a_device_never_switched_has_no_dwell_to_respect() -> None:
    lock = Interlock("new", InterlockSettings(min_on_s=600, min_off_s=600))
    now = FakeClock().now_ms()
    assert lock.is_on is None
    assert lock.check(ON, {}, now) is None
    assert lock.check(OFF, {}, now) is None


def test_record_forgets_switches_older_than_an_hour_but_keeps_the_latest() -> None:
    clock = FakeClock()
    lock = Interlock("x", InterlockSettings())
    switched(lock, ON, clock)
    clock.advance(7200)
    switched(lock, OFF, clock)
    assert lock.switches_in_last_hour(clock.now_ms()) == 1
    clock.advance(7200)
    assert lock.last_switch == SwitchEvent(clock.now_ms() - 7_200_000, False)
