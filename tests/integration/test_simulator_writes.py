"""The simulator's writable devices over real sockets: a pymodbus client switches the water
heater (unit 20) and sets the heat pump (unit 21), the loads follow in the meters' truth, bad
values are refused, and every accepted write is counted."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusIOException

from simulator.meters import GRID_UNIT, HEAT_PUMP_UNIT, WATER_HEATER_UNIT
from simulator.profiles import PowerSample
from simulator.server import MeterSimulator

pytestmark = pytest.mark.integration

NOON_MS = 1_763_985_600_000
SWITCH_UNIT, HP_UNIT = 20, 21


@pytest.fixture
async def sim() -> AsyncIterator[MeterSimulator]:
    simulator = MeterSimulator(seed=11, tick_s=0.05, start_ts_ms=NOON_MS)
    await simulator.start(port=0, control_port=0)
    simulator.pause()  # registers change only through the writes under test
    yield simulator
    await simulator.stop()


@pytest.fixture
async def client(sim: MeterSimulator) -> AsyncIterator[AsyncModbusTcpClient]:
    modbus = AsyncModbusTcpClient("127.0.0.1", port=sim.port or 0, timeout=2, retries=0)
    assert await modbus.connect()
    yield modbus
    modbus.close()


def advance_until(sim: MeterSimulator, wanted: Callable[[PowerSample], bool]) -> None:
    """Move the (paused) home on in simulated minutes until a load is drawing."""
    for _ in range(2_000):
        if wanted(sim.bank.sample):
            return
        sim.bank.advance(60.0)
    pytest.fail("the load never came on in ~33 simulated hours")


def power(sim: MeterSimulator, unit: int) -> float:
    value = sim.truth()[unit]["power"]
    assert value is not None
    return value


async def read_holding(client: AsyncModbusTcpClient, unit: int, count: int) -> list[int]:
    response = await client.read_holding_registers(0, count=count, device_id=unit)
    assert not response.isError(), response
    return list(response.registers)


async def test_controllers_start_on_at_45_degrees(
        sim: MeterSimulator, client: AsyncModbusTcpClient) -> None:
    assert await read_holding(client, SWITCH_UNIT, 1) == [1]
    assert await read_holding(client, HP_UNIT, 2) == [450, 1]
    assert sim.truth()[SWITCH_UNIT] == {"switch": 1.0}
    assert sim.truth()[HP_UNIT] == {"setpoint": 45.0, "switch": 1.0}
    assert sim.writes() == {}


async def test_switching_the_water_heater_off_zeroes_its_load_and_the_grid_follows(
        sim: MeterSimulator, client: AsyncModbusTcpClient) -> None:
    advance_until(sim, lambda s: s.water_heater_w > 0)
    heater_on, grid_on = power(sim, WATER_HEATER_UNIT), power(sim, GRID_UNIT)
    assert heater_on > 1_000
    assert not (await client.write_register(0, 0, device_id=SWITCH_UNIT)).isError()
    assert await read_holding(client, SWITCH_UNIT, 1) == [0]
    assert power(sim, WATER_HEATER_UNIT) == 0.0
    assert power(sim, GRID_UNIT) == pytest.approx(grid_on - heater_on, abs=2.0)
    assert sim.truth()[SWITCH_UNIT] == {"switch": 0.0}
    assert not (await client.write_registers(0, [1], device_id=SWITCH_UNIT)).isError()  # FC16
    assert power(sim, WATER_HEATER_UNIT) == pytest.approx(heater_on, abs=0.5)


async def test_heat_pump_power_rises_with_its_setpoint_and_stops_when_off(
        sim: MeterSimulator, client: AsyncModbusTcpClient) -> None:
    advance_until(sim, lambda s: s.heat_pump_w > 0)
    drawn = []
    for setpoint in (250, 450, 600):
        assert not (await client.write_register(0, setpoint, device_id=HP_UNIT)).isError()
        drawn.append(power(sim, HEAT_PUMP_UNIT))
    assert 0 < drawn[0] < drawn[1] < drawn[2]
    assert sim.holding(HP_UNIT, 0) == 600
    assert not (await client.write_registers(0, [500, 0], device_id=HP_UNIT)).isError()  # FC16
    assert await read_holding(client, HP_UNIT, 2) == [500, 0]
    assert power(sim, HEAT_PUMP_UNIT) == 0.0
    assert sim.truth()[HP_UNIT] == {"setpoint": 50.0, "switch": 0.0}


@pytest.mark.parametrize("values", [[249], [601], [450, 2], [0xFFFF]])
async def test_out_of_range_write_is_illegal_data_value_and_changes_nothing(
        sim: MeterSimulator, client: AsyncModbusTcpClient, values: list[int]) -> None:
    truth = sim.truth()
    response = await client.write_registers(0, values, device_id=HP_UNIT)
    assert response.isError()
    assert response.exception_code == ExcCodes.ILLEGAL_VALUE
    assert await read_holding(client, HP_UNIT, 2) == [450, 1]
    assert sim.truth() == truth
    assert sim.writes() == {}


async def test_write_past_the_last_register_is_illegal_address(
        sim: MeterSimulator, client: AsyncModbusTcpClient) -> None:
    response = await client.write_register(1, 1, device_id=SWITCH_UNIT)
    assert response.isError() and response.exception_code == ExcCodes.ILLEGAL_ADDRESS
    assert sim.writes() == {}


async def test_every_accepted_write_is_counted_even_the_same_value_twice(
        sim: MeterSimulator, client: AsyncModbusTcpClient) -> None:
    for _ in range(2):
        assert not (await client.write_register(0, 0, device_id=SWITCH_UNIT)).isError()
    assert not (await client.write_registers(0, [300, 1], device_id=HP_UNIT)).isError()
    ts = sim.ts_ms
    assert sim.writes() == {(SWITCH_UNIT, 0): [(ts, 0), (ts, 0)], (HP_UNIT, 0): [(ts, 300)],
                            (HP_UNIT, 1): [(ts, 1)]}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sim.control_port}") as http:
        doc = (await http.get("/writes")).json()
        units = (await http.get("/units")).json()
    assert doc == {"writes": [
        {"unit": 20, "register": 0, "ts_ms": ts, "value": 0},
        {"unit": 20, "register": 0, "ts_ms": ts, "value": 0},
        {"unit": 21, "register": 0, "ts_ms": ts, "value": 300},
        {"unit": 21, "register": 1, "ts_ms": ts, "value": 1},
    ]}
    assert units["20"]["name"] == "water_heater_switch"
    assert units["21"]["name"] == "heat_pump_controller"


async def test_faults_apply_to_the_controllers(
        sim: MeterSimulator, client: AsyncModbusTcpClient) -> None:
    sim.set_fault(HP_UNIT, "exception", code=6)
    response = await client.write_register(0, 500, device_id=HP_UNIT)
    assert response.isError() and response.exception_code == ExcCodes.DEVICE_BUSY
    assert sim.holding(HP_UNIT, 0) == 450 and sim.writes() == {}
    sim.clear_fault(HP_UNIT)
    sim.set_fault(SWITCH_UNIT, "silent")
    quick = AsyncModbusTcpClient("127.0.0.1", port=sim.port or 0, timeout=0.3, retries=0)
    assert await quick.connect()
    try:
        with pytest.raises(ModbusIOException):
            await quick.read_holding_registers(0, count=1, device_id=SWITCH_UNIT)
    finally:
        quick.close()
    sim.clear_fault(SWITCH_UNIT)
    sim.set_fault(SWITCH_UNIT, "slow", delay_s=0.2)
    assert not (await client.write_register(0, 0, device_id=SWITCH_UNIT)).isError()
    assert sim.holding(SWITCH_UNIT, 0) == 0
