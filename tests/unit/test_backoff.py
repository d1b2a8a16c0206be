from __future__ import annotations

import pytest

from edge_agent.backoff import Backoff, DeviceState
from edge_agent.clock import FakeClock
from edge_agent.errors import EdgeAgentError
from edge_agent.scheduler import MeterPoller, SyncMeterSource
from protocols.models import Quality, Reading, Unit


def test_delays_double_from_initial_and_cap_at_max() -> None:
    backoff = Backoff(initial_s=1.0, max_s=10.0, random=lambda: 0.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.delay(10_000) == 10.0  # no overflow on a device dead for weeks


def test_jitter_only_shortens_the_delay() -> None:
    backoff = Backoff(initial_s=1.0, max_s=10.0, jitter=0.2, random=lambda: 1.0)
    assert backoff.delay(1) == pytest.approx(0.8)
    assert backoff.delay(9) == pytest.approx(8.0)


def test_invalid_backoff_is_rejected() -> None:
    with pytest.raises(ValueError):
        Backoff(initial_s=5.0, max_s=1.0)
    with pytest.raises(ValueError):
        Backoff(initial_s=1.0, max_s=2.0, jitter=1.0)


def test_device_state_goes_degraded_then_offline_then_ok() -> None:
    state = DeviceState(Backoff(initial_s=1.0, max_s=8.0, random=lambda: 0.0))
    assert state.health().state == "ok"
    assert state.failed(now=100.0, error="timeout") == 101.0
    assert state.health().state == "degraded"
    assert not state.due(100.5) and state.due(101.0)
    state.failed(now=101.0, error="timeout")
    state.failed(now=103.0, error="timeout")
    health = state.health()
    assert (health.state, health.consecutive_failures, health.last_error) == (
        "offline",
        3,
        "timeout",
    )
    state.succeeded(wall_ms=1_764_000_000_000)
    assert state.health().state == "ok"
    assert state.health().last_success_ts == 1_764_000_000_000
    assert state.due(0.0)


class ScriptedSource:
    """Answers or fails as the test says."""

    def __init__(self, meter_id: str, clock: FakeClock) -> None:
        self.meter_id = meter_id
        self.last_error: str | None = None
        self.clock = clock
        self.answering = True
        self.reads = 0

    async def read(self) -> list[Reading]:
        self.reads += 1
        if not self.answering:
            self.last_error = "no answer"
            return [
                Reading(
                    meter_id=self.meter_id,
                    channel="power",
                    value=None,
                    unit=Unit.WATT,
                    ts=self.clock.now_ms(),
                    quality=Quality.ERROR,
                )
            ]
        self.last_error = None
        return [
            Reading(
                meter_id=self.meter_id,
                channel="power",
                value=1.0,
                unit=Unit.WATT,
                ts=self.clock.now_ms(),
            )
        ]


async def test_silent_meter_is_retried_on_the_backoff_schedule_and_recovers() -> None:
    clock = FakeClock()
    source = ScriptedSource("heatpump", clock)
    source.answering = False
    delivered: list[Reading] = []

    async def on_readings(readings: list[Reading]) -> None:
        delivered.extend(readings)

    poller = MeterPoller([(source, 1.0)], on_readings, clock, backoff_max_s=4.0, random=lambda: 0.0)
    polled_at = []
    for tick in range(12):  # the scheduler fires every interval (1 s)
        if await poller.poll("heatpump"):
            polled_at.append(tick)
        clock.advance(1.0)
    # Failures at 0 (retry +1), 1 (+2), 3 (+4), 7 (+4 cap), 11.
    assert polled_at == [0, 1, 3, 7, 11]
    assert poller.health()["heatpump"].state == "offline"
    assert all(r.quality is Quality.ERROR and r.value is None for r in delivered)

    source.answering = True
    recovered_after = 0
    while not await poller.poll("heatpump"):
        clock.advance(1.0)
        recovered_after += 1
    assert recovered_after <= 4 + 1  # within max backoff + one interval
    assert poller.health()["heatpump"].state == "ok"
    assert delivered[-1].quality is Quality.GOOD


async def test_one_failing_meter_does_not_stop_the_others() -> None:
    clock = FakeClock()
    good, bad = ScriptedSource("grid", clock), ScriptedSource("pv", clock)
    bad.answering = False

    async def on_readings(readings: list[Reading]) -> None:
        return None

    poller = MeterPoller([(good, 1.0), (bad, 1.0)], on_readings, clock, random=lambda: 0.0)
    for _ in range(10):
        for meter_id in poller.meter_ids:
            await poller.poll(meter_id)
        clock.advance(1.0)
    assert good.reads == 10
    assert bad.reads < 10
    assert poller.health()["grid"].state == "ok"


async def test_sync_source_errors_count_as_failed_polls() -> None:
    class Broken:
        def read(self) -> list[Reading]:
            raise EdgeAgentError("gpio gone")

    clock = FakeClock()
    poller = MeterPoller([(SyncMeterSource("boiler", Broken()), 1.0)], _ignore, clock)
    assert await poller.poll("boiler")
    health = poller.health()["boiler"]
    assert (health.state, health.last_error) == ("degraded", "gpio gone")


async def _ignore(readings: list[Reading]) -> None:
    return None
