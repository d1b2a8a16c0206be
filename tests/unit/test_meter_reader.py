from __future__ import annotations

import pytest

from edge_agent.clock import FakeClock
from edge_agent.config import MeterSettings
from edge_agent.errors import BusError
from edge_agent.meter_reader import DEVICE_CHANNEL, MeterReader
from edge_agent.modbus_bus import FakeModbusBus, ModbusRequest, image_handler
from protocols.modbus import SDM120, SDM630, encode_map
from protocols.modbus.registers import RegisterKind
from protocols.modbus.sunspec import (
    DeviceInfo,
    build_image,
    encode_common,
    encode_model_body,
)
from protocols.models import Quality, Unit

SDM120_VALUES = {
    "voltage": 231.5, "current": 4.25, "power": 950.0, "apparent_power": 980.0,
    "reactive_power": -120.0, "power_factor": 0.97, "frequency": 50.01,
    "energy_import": 1_234_500.0, "energy_export": 0.0, "reactive_energy_import": 10_000.0,
    "reactive_energy_export": 2_000.0, "energy_total": 1_234_500.0,
}
INVERTER_VALUES = {
    "current": 12.5, "current_l1": 4.2, "current_l2": 4.1, "current_l3": 4.2,
    "voltage_l1": 230.1, "voltage_l2": 229.8, "voltage_l3": 231.0, "power": 2870.0,
    "frequency": 50.0, "apparent_power": 2900.0, "reactive_power": 10.0, "power_factor": 0.99,
    "energy_production": 5_432_100.0, "dc_current": 7.5, "dc_voltage": 400.0,
    "dc_power": 3000.0, "temperature": 41.5,
}


def full_image(rmap_image: dict[int, int], upto: int = 0x200) -> dict[int, int]:
    """A device answers every address in its range, not only the mapped ones."""
    return {address: rmap_image.get(address, 0) for address in range(upto)}


def meter(model: str = "sdm120", unit: int = 2, **extra: object) -> MeterSettings:
    return MeterSettings(id="heatpump", model=model, bus="main", unit=unit, **extra)


def sdm120_bus(values: dict[str, float] | None = None) -> tuple[FakeModbusBus, dict[int, int]]:
    image = full_image(encode_map(SDM120, values or SDM120_VALUES))
    return FakeModbusBus(image_handler({2: image})), image


async def test_reads_with_the_planned_blocks_and_decodes_every_channel() -> None:
    bus, _ = sdm120_bus()
    reader = MeterReader(meter(), bus, FakeClock())
    readings = await reader.read()

    planned = SDM120.blocks()
    assert len(planned) < len(SDM120.fields)  # the map really groups registers
    assert [(r.address, r.count) for r in bus.requests] == [(b.address, b.count) for b in planned]
    assert all(r.kind is RegisterKind.INPUT and r.unit == 2 for r in bus.requests)
    by_channel = {r.channel: r for r in readings}
    assert set(by_channel) == set(SDM120_VALUES)
    for channel, expected in SDM120_VALUES.items():
        assert by_channel[channel].value == pytest.approx(expected, rel=1e-6)
        assert by_channel[channel].quality is Quality.GOOD
    assert by_channel["energy_import"].unit is Unit.WATT_HOUR
    assert reader.last_error is None


async def test_failed_read_gives_error_readings_never_zero() -> None:
    def dead(request: ModbusRequest) -> list[int]:
        raise BusError("bus main unit 2: no answer within 1.0s")

    reader = MeterReader(meter(), FakeModbusBus(dead), FakeClock())
    readings = await reader.read()
    assert {r.channel for r in readings} == set(SDM120.channels)
    assert all(r.quality is Quality.ERROR and r.value is None for r in readings)
    assert reader.last_error == "bus main unit 2: no answer within 1.0s"


async def test_a_failure_in_any_block_fails_the_whole_read() -> None:
    _, image = sdm120_bus()
    del image[0x0156]  # energy_total's block answers "illegal address"
    reader = MeterReader(meter(), FakeModbusBus(image_handler({2: image})), FakeClock())
    readings = await reader.read()
    assert all(r.quality is Quality.ERROR and r.value is None for r in readings)
    assert reader.last_error == "unit 2: illegal address"


async def test_reader_recovers_after_the_device_answers_again() -> None:
    bus, _ = sdm120_bus()
    answering = {"on": False}
    inner = bus.handler

    def flaky(request: ModbusRequest) -> list[int]:
        if not answering["on"]:
            raise BusError("no answer")
        result = inner(request)
        assert isinstance(result, list)
        return result

    reader = MeterReader(meter(), FakeModbusBus(flaky), FakeClock())
    assert all(r.quality is Quality.ERROR for r in await reader.read())
    answering["on"] = True
    assert all(r.quality is Quality.GOOD for r in await reader.read())
    assert reader.last_error is None


async def test_counter_going_backwards_is_suspect_and_keeps_its_value() -> None:
    clock = FakeClock()
    bus, _ = sdm120_bus()
    reader = MeterReader(meter(), bus, clock)
    await reader.read()
    clock.advance(5.0)
    reset = dict(SDM120_VALUES, energy_import=0.0, energy_total=0.0)
    bus.handler = image_handler({2: full_image(encode_map(SDM120, reset))})
    by_channel = {r.channel: r for r in await reader.read()}
    assert by_channel["energy_import"].quality is Quality.SUSPECT
    assert by_channel["energy_import"].value == 0.0
    assert by_channel["voltage"].quality is Quality.GOOD  # instant values are not judged


async def test_not_implemented_channel_is_left_out() -> None:
    values = {k: v for k, v in SDM120_VALUES.items() if k != "reactive_energy_export"}
    bus, _ = sdm120_bus(values)  # absent -> NaN marker
    readings = await MeterReader(meter(), bus, FakeClock()).read()
    assert "reactive_energy_export" not in {r.channel for r in readings}
    assert all(r.quality is Quality.GOOD for r in readings)


async def test_sdm630_needs_few_requests() -> None:
    image = full_image(encode_map(SDM630, {f.channel: 1.0 for f in SDM630.fields}))
    bus = FakeModbusBus(image_handler({1: image}))
    await MeterReader(meter("sdm630", unit=1), bus, FakeClock()).read()
    assert len(bus.requests) == len(SDM630.blocks()) <= 5


def inverter_image(base: int = 40000, values: dict[str, float] | None = None) -> dict[int, int]:
    info = DeviceInfo(manufacturer="Homewatt", model="SIM-INV", version="1.0", serial="42")
    return build_image(base, [(1, encode_common(info)),
                              (103, encode_model_body(103, values or INVERTER_VALUES))])


async def test_sunspec_is_discovered_once_and_read_with_scale_factors() -> None:
    bus = FakeModbusBus(image_handler({126: inverter_image()}))
    reader = MeterReader(meter("sunspec", unit=126), bus, FakeClock())
    by_channel = {r.channel: r for r in await reader.read()}
    assert set(by_channel) == set(INVERTER_VALUES)
    for channel, expected in INVERTER_VALUES.items():
        assert by_channel[channel].value == pytest.approx(expected, rel=5e-3, abs=0.01)
    discovery_requests = len(bus.requests)

    bus.requests.clear()
    await reader.read()
    assert 0 < len(bus.requests) < discovery_requests  # no rescan: only the data blocks
    assert all(r.kind is RegisterKind.HOLDING for r in bus.requests)


async def test_sunspec_scans_the_next_base_when_the_first_has_no_registers() -> None:
    bus = FakeModbusBus(image_handler({126: inverter_image(base=0)}))
    readings = await MeterReader(meter("sunspec", unit=126), bus, FakeClock()).read()
    assert {r.quality for r in readings} == {Quality.GOOD}
    assert bus.requests[0].address == 40000 and bus.requests[1].address == 0


async def test_sunspec_offline_at_start_gives_one_device_error_reading() -> None:
    reader = MeterReader(meter("sunspec", unit=126), FakeModbusBus(image_handler({})),
                         FakeClock())
    readings = await reader.read()
    assert [(r.channel, r.value, r.quality) for r in readings] == [
        (DEVICE_CHANNEL, None, Quality.ERROR)]


async def test_sunspec_is_rediscovered_when_the_layout_changes() -> None:
    images = {126: inverter_image(base=40000)}
    bus = FakeModbusBus(image_handler(images))
    reader = MeterReader(meter("sunspec", unit=126), bus, FakeClock())
    assert {r.quality for r in await reader.read()} == {Quality.GOOD}
    images[126] = inverter_image(base=50000)  # e.g. a firmware update moved the map
    failed = await reader.read()  # the cached addresses answer "illegal address"
    assert {r.quality for r in failed} == {Quality.ERROR}
    assert {r.channel for r in failed} == set(INVERTER_VALUES)  # channels known from before
    assert {r.quality for r in await reader.read()} == {Quality.GOOD}
