"""The meter simulator over real sockets: a pymodbus client reads what ``truth()`` says,
faults behave as a broken meter does, and the control API and CLI drive it."""

from __future__ import annotations

import asyncio
import re
import signal
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from pymodbus.client import AsyncModbusTcpClient, ModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from protocols.modbus import (
    METER_MAPS,
    DataType,
    RegisterKind,
    RegisterMap,
    decode_map,
    decode_words,
    is_sunspec_marker,
    model_register_map,
    next_model_address,
    parse_model_header,
)
from simulator import MeterSimulator, route

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NOON_MS = 1_763_985_600_000  # 2025-11-24 12:00 local (UTC+1): PV producing, grid exporting
EASTRON = {1: "sdm630", 2: "sdm120", 3: "sdm120"}


@pytest.fixture
async def sim() -> AsyncIterator[MeterSimulator]:
    simulator = MeterSimulator(seed=11, tick_s=0.05, start_ts_ms=NOON_MS)
    await simulator.start(port=0, control_port=0)
    yield simulator
    await simulator.stop()


@pytest.fixture
async def client(sim: MeterSimulator) -> AsyncIterator[AsyncModbusTcpClient]:
    assert sim.port
    modbus = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=2, retries=0)
    assert await modbus.connect()
    yield modbus
    modbus.close()


async def read_words(client: AsyncModbusTcpClient, unit: int, kind: RegisterKind,
                     address: int, count: int) -> list[int]:
    read = (client.read_input_registers if kind is RegisterKind.INPUT
            else client.read_holding_registers)
    response = await read(address, count=count, device_id=unit)
    assert not response.isError(), response
    return list(response.registers)


async def read_map(client: AsyncModbusTcpClient, unit: int,
                   rmap: RegisterMap) -> dict[str, float | None]:
    image: dict[int, int] = {}
    for block in rmap.blocks():
        words = await read_words(client, unit, rmap.register_kind, block.address, block.count)
        image.update({block.address + i: word for i, word in enumerate(words)})
    return decode_map(rmap, image)


async def discover_sunspec(client: AsyncModbusTcpClient, unit: int) -> dict[int, RegisterMap]:
    """Walk the model chain at 40000 as an agent would: model id -> map."""
    holding = RegisterKind.HOLDING
    assert is_sunspec_marker(await read_words(client, unit, holding, 40000, 2))
    maps: dict[int, RegisterMap] = {}
    address = 40002
    while (header := parse_model_header(
            address, await read_words(client, unit, holding, address, 2))) is not None:
        maps[header.model_id] = model_register_map(header.model_id, header.body_address)
        address = next_model_address(header)
    return maps


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_every_unit_reads_exactly_its_truth_while_paused(
        sim: MeterSimulator, client: AsyncModbusTcpClient) -> None:
    sim.pause()
    truth = sim.truth()
    for unit, model in EASTRON.items():
        assert await read_map(client, unit, METER_MAPS[model]) == truth[unit]
    inverter = await discover_sunspec(client, 126)
    assert sorted(inverter) == [1, 103]
    assert await read_map(client, 126, inverter[103]) == truth[126]
    meter = await discover_sunspec(client, 240)
    assert sorted(meter) == [1, 203]
    assert await read_map(client, 240, meter[203]) == truth[240]
    assert (truth[1]["power"] or 0.0) < 0 < (truth[126]["power"] or 0.0)  # noon: exporting


async def test_registers_move_on_after_resume_and_freeze_on_pause(
        sim: MeterSimulator, client: AsyncModbusTcpClient) -> None:
    sim.pause()
    frozen_ts, frozen = sim.ts_ms, await read_map(client, 1, METER_MAPS["sdm630"])
    await asyncio.sleep(0.2)  # several ticks' worth: nothing may move while paused
    assert (sim.ts_ms, await read_map(client, 1, METER_MAPS["sdm630"])) == (frozen_ts, frozen)
    sim.resume()
    await eventually(lambda: sim.ts_ms > frozen_ts)
    sim.pause()
    assert await read_map(client, 1, METER_MAPS["sdm630"]) == sim.truth()[1]


async def test_silent_unit_times_the_client_out_then_recovers(
        sim: MeterSimulator, client: AsyncModbusTcpClient) -> None:
    quick = AsyncModbusTcpClient("127.0.0.1", port=sim.port or 0, timeout=0.3, retries=0)
    assert await quick.connect()
    try:
        sim.set_fault(2, "silent")
        with pytest.raises(ModbusIOException):
            await quick.read_input_registers(0, count=2, device_id=2)
        ok = await quick.read_input_registers(0, count=2, device_id=3)  # others still answer
        assert not ok.isError()
        sim.clear_fault(2)
        sim.pause()
        assert await read_map(client, 2, METER_MAPS["sdm120"]) == sim.truth()[2]
    finally:
        quick.close()


async def test_unknown_unit_gets_no_answer(sim: MeterSimulator) -> None:
    quick = AsyncModbusTcpClient("127.0.0.1", port=sim.port or 0, timeout=0.3, retries=0)
    assert await quick.connect()
    try:
        with pytest.raises(ModbusIOException):
            await quick.read_input_registers(0, count=2, device_id=9)
    finally:
        quick.close()


async def test_exception_fault_answers_with_the_modbus_exception_code(
        sim: MeterSimulator, client: AsyncModbusTcpClient) -> None:
    sim.set_fault(126, "exception", code=4)
    response = await client.read_holding_registers(40000, count=2, device_id=126)
    assert response.isError()
    assert response.exception_code == 4
    sim.set_fault(3, "exception", code=6)
    busy = await client.read_input_registers(0, count=2, device_id=3)
    assert busy.exception_code == 6
    sim.clear_fault(126)
    assert is_sunspec_marker(await read_words(client, 126, RegisterKind.HOLDING, 40000, 2))


async def test_slow_unit_answers_only_a_patient_client(
        sim: MeterSimulator, client: AsyncModbusTcpClient) -> None:
    sim.pause()
    sim.set_fault(1, "slow", delay_s=0.6)
    impatient = AsyncModbusTcpClient("127.0.0.1", port=sim.port or 0, timeout=0.2, retries=0)
    assert await impatient.connect()
    try:
        with pytest.raises(ModbusIOException):
            await impatient.read_input_registers(0x34, count=2, device_id=1)
    finally:
        impatient.close()
    power = await read_words(client, 1, RegisterKind.INPUT, 0x34, 2)
    assert decode_words(DataType.FLOAT32, power) == sim.truth()[1]["power"]


def mbap_read_input(tid: int, unit: int, address: int, count: int) -> bytes:
    return struct.pack(">HHHBBHH", tid, 0, 6, unit, 4, address, count)


async def test_late_answer_of_a_slow_unit_keeps_its_own_transaction_id(
        sim: MeterSimulator) -> None:
    """A client that gave up on a slow unit must not get its late answer for the next request
    (pymodbus 3.16's stock handler stamps the *latest* request's id on it)."""
    sim.pause()
    sim.set_fault(1, "slow", delay_s=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        writer.write(mbap_read_input(1, 1, 0x48, 2))
        await writer.drain()
        await asyncio.sleep(0.05)  # the second request arrives while the first one waits
        writer.write(mbap_read_input(2, 3, 0x48, 2))
        await writer.drain()
        answers = {}
        for _ in range(2):
            tid, _pid, _length, unit, func, size = struct.unpack(
                ">HHHBBB", await asyncio.wait_for(reader.readexactly(9), 5))
            words = struct.unpack(f">{size // 2}H", await reader.readexactly(size))
            answers[tid] = (unit, func, decode_words(DataType.FLOAT32, words))
    finally:
        writer.close()
        await writer.wait_closed()
    truth = sim.truth()
    assert answers == {
        1: (1, 4, (truth[1]["energy_import"] or 0.0) / 1000.0),
        2: (3, 4, (truth[3]["energy_import"] or 0.0) / 1000.0),
    }


async def test_counter_reset_shows_as_a_counter_going_back(
        sim: MeterSimulator, client: AsyncModbusTcpClient) -> None:
    sim.pause()
    sdm120 = METER_MAPS["sdm120"]
    before = (await read_map(client, 2, sdm120))["energy_import"] or 0.0
    sim.set_fault(2, "counter_reset", step_back_wh=10_000)
    stepped = (await read_map(client, 2, sdm120))["energy_import"] or 0.0
    assert stepped == pytest.approx(before - 10_000, abs=1.0)
    sim.set_fault(2, "counter_reset")
    assert (await read_map(client, 2, sdm120))["energy_import"] == 0.0
    assert sim.faults() == {}  # a reset is an event, not a standing fault


async def test_control_api_reports_truth_and_drives_faults(
        sim: MeterSimulator, client: AsyncModbusTcpClient) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sim.control_port}") as http:
        paused = await http.post("/pause")
        assert paused.status_code == 200 and paused.json()["paused"] is True
        truth = (await http.get("/truth")).json()
        assert truth["ts_ms"] == sim.ts_ms
        assert truth["units"] == {str(u): v for u, v in sim.truth().items()}
        assert truth["units"]["1"] == await read_map(client, 1, METER_MAPS["sdm630"])

        made = await http.post("/units/3/fault", json={"kind": "exception", "code": 4})
        assert made.json() == {"unit": 3, "fault": {"kind": "exception", "code": 4}}
        assert (await client.read_input_registers(0, count=2, device_id=3)).exception_code == 4
        assert (await http.get("/units")).json()["3"]["fault"]["kind"] == "exception"
        cleared = await http.delete("/units/3/fault")
        assert cleared.json() == {"unit": 3, "fault": None}
        assert not (await client.read_input_registers(0, count=2, device_id=3)).isError()

        bad = await http.post("/units/3/fault", json={"kind": "slow"})
        assert bad.status_code == 400 and "delay_s" in bad.json()["error"]
        missing = await http.post("/units/42/fault", json={"kind": "silent"})
        assert missing.status_code == 404
        not_json = await http.post("/units/3/fault", content=b"{nope")
        assert not_json.status_code == 400
        assert (await http.get("/pause")).status_code == 405
        assert (await http.get("/nowhere")).status_code == 404
        resumed = await http.post("/resume")
        assert resumed.json()["paused"] is False


def test_route_is_usable_without_sockets() -> None:
    sim = MeterSimulator(seed=2, start_ts_ms=NOON_MS)
    status, doc = route(sim, "POST", "/units/240/fault", b'{"kind": "silent"}')
    assert (status, doc) == (200, {"unit": 240, "fault": {"kind": "silent"}})
    assert route(sim, "POST", "/units/240/fault", b'{"kind": "silent", "x": "y"}')[0] == 400


def _start_cli(*extra: str) -> tuple[subprocess.Popen[str], int, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "meters", "--port", "0", "--control-port", "0",
         "--seed", "3", *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"modbus 127\.0\.0\.1:(\d+) units (.+) control http://127\.0\.0\.1:(\d+)",
                      line)
    assert match, line
    assert "1:grid:sdm630" in match.group(2) and "240:grid_sunspec:sunspec_203" in match.group(2)
    assert "20:water_heater_switch:switch" in match.group(2)
    assert "21:heat_pump_controller:heat_pump_controller" in match.group(2)
    return proc, int(match.group(1)), int(match.group(3))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_signalled_and_exits_zero(stop_signal: signal.Signals) -> None:
    proc, port, control = _start_cli()
    try:
        with ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0) as modbus:
            assert not modbus.read_input_registers(0, count=2, device_id=1).isError()
        assert httpx.get(f"http://127.0.0.1:{control}/truth").status_code == 200
        proc.send_signal(stop_signal)
        assert proc.wait(15) == 0
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.parametrize(("args", "message"), [
    (["meters", "--port", "70000"], "outside 0..65535"),
    (["meters", "--port", "0", "--tick-s", "0"], "must be > 0"),
    (["meters"], "--port"),
    (["nonsense"], "invalid choice"),
])
def test_cli_rejects_bad_arguments_with_exit_2(args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "simulator.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert message in done.stderr


def test_cli_help_explains_the_units() -> None:
    done = subprocess.run([sys.executable, "-m", "simulator.cli", "meters", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=30, check=True)
    assert "SunSpec inverter" in done.stdout and "--control-port" in done.stdout
    text = " ".join(done.stdout.split())  # argparse wraps lines
    assert "20 water heater switch" in text and "21 heat pump controller" in text
