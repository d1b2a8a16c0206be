"""The RTU paths of ``PymodbusBus`` against real pymodbus servers.

Serial RTU runs over a real pseudo-terminal pair made by socat (the server on one end, the
agent's bus on the other); RTU over TCP against a pymodbus TCP server using the RTU framer.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge_agent.clock import SystemClock
from edge_agent.config import BusSettings, MeterSettings
from edge_agent.errors import BusError
from edge_agent.meter_reader import MeterReader
from edge_agent.modbus_bus import ILLEGAL_DATA_ADDRESS, PymodbusBus
from protocols.modbus import SDM120, encode_map
from protocols.modbus.registers import RegisterKind
from protocols.models import Quality, Reading
from tests.services import free_port, missing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

UNIT = 2
VALUES = {
    "voltage": 229.7, "current": 5.5, "power": 1234.5, "apparent_power": 1260.0,
    "reactive_power": 250.0, "power_factor": 0.98, "frequency": 49.98,
    "energy_import": 4_321_000.0, "energy_export": 12_000.0, "reactive_energy_import": 9_000.0,
    "reactive_energy_export": 1_000.0, "energy_total": 4_333_000.0,
}


def sdm120_device() -> SimDevice:
    """An SDM120 register image over its whole address range (gaps read as 0, as on a meter)."""
    image = encode_map(SDM120, VALUES)
    words = [image.get(address, 0) for address in range(0x200)]
    return SimDevice(id=UNIT, simdata=[SimData(0, values=words, datatype=DataType.REGISTERS)])


def meter() -> MeterSettings:
    return MeterSettings(id="heatpump", model="sdm120", bus="rs485", unit=UNIT)


def assert_decoded(readings: list[Reading]) -> None:
    by_channel = {r.channel: r for r in readings}
    assert set(by_channel) == set(VALUES)
    for channel, expected in VALUES.items():
        assert by_channel[channel].quality is Quality.GOOD
        assert by_channel[channel].value == pytest.approx(expected, rel=1e-6)


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    socat = shutil.which("socat") or "/usr/bin/socat"
    if not Path(socat).exists():
        missing("socat not found (apt-get install socat): needed for a pseudo-terminal pair")
    server_end, agent_end = tmp_path / "server", tmp_path / "agent"
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={server_end}",
         f"pty,raw,echo=0,link={agent_end}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):  # socat creates both links within milliseconds
            if server_end.exists() and agent_end.exists():
                break
            if proc.poll() is not None:
                pytest.fail(f"socat exited with {proc.returncode}")
            time.sleep(0.02)
        else:
            pytest.fail("socat did not create the pty links within 4 s")
        yield str(server_end), str(agent_end)
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.fixture
async def serial_server(pty_pair: tuple[str, str]) -> AsyncIterator[str]:
    server_end, agent_end = pty_pair
    server = ModbusSerialServer([sdm120_device()], framer=FramerType.RTU, port=server_end,
                                baudrate=9600)
    await server.serve_forever(background=True)
    try:
        yield agent_end
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


async def test_rtu_over_a_serial_line_reads_and_decodes_an_sdm120(serial_server: str) -> None:
    bus = PymodbusBus(BusSettings(name="rs485", kind="rtu", serial_port=serial_server,
                                  baudrate=9600, timeout_s=1.0, frame_gap_ms=5))
    try:
        reader = MeterReader(meter(), bus, SystemClock())
        assert_decoded(await reader.read())
        assert reader.last_error is None
    finally:
        await bus.close()


async def test_rtu_exception_response_becomes_bus_error_with_code(serial_server: str) -> None:
    bus = PymodbusBus(BusSettings(name="rs485", kind="rtu", serial_port=serial_server,
                                  timeout_s=1.0))
    try:
        with pytest.raises(BusError) as exc:
            await bus.read_registers(UNIT, RegisterKind.INPUT, 0x300, 2)
        assert exc.value.exception_code == ILLEGAL_DATA_ADDRESS
        # The line is still usable after an exception response.
        assert len(await bus.read_registers(UNIT, RegisterKind.INPUT, 0, 2)) == 2
    finally:
        await bus.close()


async def test_rtu_missing_serial_port_is_a_bus_error(tmp_path: Path) -> None:
    bus = PymodbusBus(BusSettings(name="rs485", kind="rtu",
                                  serial_port=str(tmp_path / "ttyUSB9"), timeout_s=0.5))
    try:
        with pytest.raises(BusError, match="cannot connect"):
            await bus.read_registers(UNIT, RegisterKind.INPUT, 0, 2)
    finally:
        await bus.close()


async def test_rtu_over_tcp_reads_and_decodes_an_sdm120() -> None:
    port = free_port()
    server = ModbusTcpServer([sdm120_device()], framer=FramerType.RTU,
                             address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    bus = PymodbusBus(BusSettings(name="rs485", kind="rtu_over_tcp", host="127.0.0.1",
                                  port=port, timeout_s=1.0))
    try:
        reader = MeterReader(meter(), bus, SystemClock())
        assert_decoded(await reader.read())
        # The link survives a server restart: the bus reconnects on the next request.
        await server.shutdown()  # type: ignore[no-untyped-call]
        await asyncio.sleep(0)
        assert all(r.quality is Quality.ERROR for r in await reader.read())
        server = ModbusTcpServer([sdm120_device()], framer=FramerType.RTU,
                                 address=("127.0.0.1", port))
        await server.serve_forever(background=True)
        assert_decoded(await reader.read())
    finally:
        await bus.close()
        await server.shutdown()  # type: ignore[no-untyped-call]
