"""The agent's meter readers and poll scheduler against the simulator over real Modbus TCP."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest

from edge_agent.clock import SystemClock
from edge_agent.config import AgentConfig
from edge_agent.meter_reader import build_readers
from edge_agent.modbus_bus import build_buses
from edge_agent.scheduler import build_poller
from protocols.models import Quality, Reading
from simulator import MeterSimulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

INTERVAL_S = 0.3
TIMEOUT_S = 0.2
BACKOFF_MAX_S = 1.0
METERS = [  # id, model, unit: the simulator's home (examples/agent.toml)
    ("grid", "sdm630", 1), ("heatpump", "sdm120", 2), ("waterheater", "sdm120", 3),
    ("pv", "sunspec", 126), ("grid_sunspec", "sunspec", 240),
]
UNIT_OF = {meter_id: unit for meter_id, _, unit in METERS}


def agent_config(port: int) -> AgentConfig:
    return AgentConfig(
        gateway_id="gw-test",
        buses=[{"name": "main", "kind": "tcp", "host": "127.0.0.1", "port": port,
                "timeout_s": TIMEOUT_S}],
        meters=[{"id": meter_id, "model": model, "bus": "main", "unit": unit,
                 "interval_s": INTERVAL_S} for meter_id, model, unit in METERS],
    )


@pytest.fixture
async def sim() -> AsyncIterator[MeterSimulator]:
    simulator = MeterSimulator(seed=7, tick_s=0.05)
    await simulator.start("127.0.0.1", port=0)
    try:
        yield simulator
    finally:
        await simulator.stop()


async def test_every_channel_of_every_meter_matches_ground_truth(sim: MeterSimulator) -> None:
    assert sim.port is not None
    config = agent_config(sim.port)
    buses = build_buses(config.buses)
    try:
        readers = build_readers(config, buses, SystemClock())
        sim.pause()
        results = await asyncio.gather(*(reader.read() for reader in readers))
        truth = sim.truth()
    finally:
        sim.resume()
        for bus in buses.values():
            await bus.close()

    for reader, readings in zip(readers, results, strict=True):
        expected = {ch: v for ch, v in truth[UNIT_OF[reader.meter_id]].items() if v is not None}
        got = {r.channel: r for r in readings}
        assert reader.last_error is None, reader.meter_id
        assert set(got) == set(expected), reader.meter_id
        for channel, value in expected.items():
            reading = got[channel]
            assert reading.quality is Quality.GOOD, (reader.meter_id, channel)
            assert reading.value == pytest.approx(value, rel=0.005, abs=1e-3), (
                reader.meter_id, channel)


class PollLog:
    """Collects readings with the monotonic time the poller delivered them."""

    def __init__(self) -> None:
        self.polls: dict[str, list[float]] = defaultdict(list)
        self.readings: list[Reading] = []
        self.changed = asyncio.Event()

    async def __call__(self, readings: list[Reading]) -> None:
        self.polls[readings[0].meter_id].append(time.monotonic())
        self.readings.extend(readings)
        self.changed.set()

    def count(self, meter_id: str, start: float, end: float) -> int:
        return sum(1 for t in self.polls[meter_id] if start <= t < end)


async def wait_until(log: PollLog, condition: object, timeout: float) -> None:
    async def waiter() -> None:
        while not condition():  # type: ignore[operator]
            log.changed.clear()
            await log.changed.wait()

    await asyncio.wait_for(waiter(), timeout)


async def test_silent_unit_is_degraded_while_others_keep_their_rate_and_it_recovers(
    sim: MeterSimulator,
) -> None:
    assert sim.port is not None
    config = agent_config(sim.port)
    buses = build_buses(config.buses)
    log = PollLog()
    poller = build_poller(config, buses, log, SystemClock(), backoff_max_s=BACKOFF_MAX_S)
    sim.set_fault(3, "silent")
    poller.start()
    try:
        await wait_until(log, lambda: poller.health()["waterheater"].state == "offline", 10.0)

        window_s = 3.0
        start = time.monotonic()
        await asyncio.sleep(window_s)  # the measurement window itself
        end = time.monotonic()
        expected = window_s / INTERVAL_S
        for meter_id in ("grid", "heatpump", "pv", "grid_sunspec"):
            count = log.count(meter_id, start, end)
            print(f"{meter_id}: {count} polls in {end - start:.2f}s (expected {expected:.1f})")
            assert expected - 1 <= count <= expected + 1, (meter_id, count, expected)
            assert poller.health()[meter_id].state == "ok"
        health = poller.health()["waterheater"]
        assert health.state == "offline" and "no answer" in (health.last_error or "")
        # Backing off: far fewer attempts than its interval would allow.
        assert log.count("waterheater", start, end) <= window_s / BACKOFF_MAX_S + 2

        sim.clear_fault(3)
        cleared = time.monotonic()
        await wait_until(log, lambda: poller.health()["waterheater"].state == "ok",
                         BACKOFF_MAX_S + INTERVAL_S + TIMEOUT_S + 1.0)
        recovered = [r for r in log.readings if r.meter_id == "waterheater"
                     and r.quality is Quality.GOOD]
        assert recovered and all(r.value is not None for r in recovered)
        print(f"waterheater recovered {time.monotonic() - cleared:.2f}s after the fault cleared")
        assert time.monotonic() - cleared <= BACKOFF_MAX_S + INTERVAL_S + TIMEOUT_S + 1.0
    finally:
        await poller.stop()
        for bus in buses.values():
            await bus.close()

    errors = [r for r in log.readings if r.meter_id == "waterheater" and r.quality is Quality.ERROR]
    assert errors and all(r.value is None for r in errors)  # never a 0 for a silent meter


async def test_counter_reset_is_flagged_suspect_never_good(sim: MeterSimulator) -> None:
    assert sim.port is not None
    config = agent_config(sim.port)
    buses = build_buses(config.buses)
    try:
        reader = next(r for r in build_readers(config, buses, SystemClock())
                      if r.meter_id == "heatpump")
        before = {r.channel: r for r in await reader.read()}
        assert before["energy_import"].quality is Quality.GOOD
        sim.set_fault(2, "counter_reset")
        after = {r.channel: r for r in await reader.read()}
    finally:
        for bus in buses.values():
            await bus.close()

    for channel in ("energy_import", "energy_total", "reactive_energy_import"):
        assert after[channel].value is not None
        assert after[channel].value < before[channel].value  # type: ignore[operator]
        assert after[channel].quality is Quality.SUSPECT, channel
    assert after["voltage"].quality is Quality.GOOD
