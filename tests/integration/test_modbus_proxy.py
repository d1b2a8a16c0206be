"""The Modbus TCP proxy in the running agent: an outside pymodbus client reads and writes the
simulator through the agent's bus while the agent keeps polling its meter on schedule."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
from pymodbus.client import AsyncModbusTcpClient

from edge_agent.config import AgentConfig
from edge_agent.runtime import Agent
from edge_agent.scheduler import MeterPoller
from edge_agent.uplink import FakeUplink
from simulator import MeterSimulator
from tests.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

INTERVAL_S = 0.25
HAMMER_S = 3.0


@pytest.fixture
async def sim() -> AsyncIterator[MeterSimulator]:
    simulator = MeterSimulator(seed=9, tick_s=0.1)
    await simulator.start("127.0.0.1", port=0)
    try:
        yield simulator
    finally:
        await simulator.stop()


def agent_config(sim_port: int, proxy_port: int, tmp_path: Path) -> AgentConfig:
    return AgentConfig(
        gateway_id="gw-proxy", data_dir=tmp_path,
        buses=[{"name": "main", "kind": "tcp", "host": "127.0.0.1", "port": sim_port,
                "timeout_s": 0.3}],
        meters=[{"id": "grid", "model": "sdm630", "bus": "main", "unit": 1,
                 "interval_s": INTERVAL_S}],
        actuators=[{"id": "heater", "kind": "modbus_switch", "bus": "main", "unit": 20,
                    "address": 0}],
        modbus_proxy=[{"bus": "main", "port": proxy_port, "allow_writes": True}])


async def test_outside_client_is_served_while_the_agent_polls_on_schedule(
        sim: MeterSimulator, tmp_path: Path) -> None:
    assert sim.port is not None
    proxy_port = free_port()
    agent = Agent(agent_config(sim.port, proxy_port, tmp_path), uplink=FakeUplink())
    await agent.start()
    outside = AsyncModbusTcpClient("127.0.0.1", port=proxy_port, timeout=2, retries=0)
    direct = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=2, retries=0)
    try:
        assert await outside.connect() and await direct.connect()
        # Same registers through the proxy as straight from the device (frozen meanwhile).
        sim.pause()
        via = await outside.read_input_registers(0, count=60, device_id=1)
        raw = await direct.read_input_registers(0, count=60, device_id=1)
        sunspec = await outside.read_holding_registers(40000, count=2, device_id=126)
        sim.resume()
        missing = await outside.read_holding_registers(0, count=2, device_id=1)
        silent = await outside.read_holding_registers(0, count=2, device_id=9)
        protected = await outside.write_register(0, 1, device_id=20)
        setpoint = await outside.write_register(0, 450, device_id=21)

        poller = cast(MeterPoller, agent._poller)
        polls_before = poller.poll_count("grid")
        served = 0
        started = time.monotonic()
        while time.monotonic() - started < HAMMER_S:
            answer = await outside.read_input_registers(0x0034, count=2, device_id=1)
            assert not answer.isError(), answer
            served += 1
        elapsed = time.monotonic() - started
        polls = poller.poll_count("grid") - polls_before
    finally:
        outside.close()
        direct.close()
        await agent.stop()

    assert via.registers == raw.registers
    assert sunspec.registers == [0x5375, 0x6E53]
    assert missing.isError() and missing.exception_code == 2  # the meter's own answer
    assert silent.isError() and silent.exception_code == 0x0B  # no device at unit 9
    assert protected.isError() and protected.exception_code == 2  # the heater actuator's
    assert not setpoint.isError()
    assert sim.holding(21, 0) == 450
    assert (20, 0) not in sim.writes()
    assert served > 50  # the outside client was really served, continuously ...
    assert polls >= int(elapsed / INTERVAL_S) - 1  # ... and the agent kept its schedule


async def test_more_clients_than_allowed_are_turned_away(sim: MeterSimulator,
                                                         tmp_path: Path) -> None:
    assert sim.port is not None
    proxy_port = free_port()
    config = agent_config(sim.port, proxy_port, tmp_path)
    config.modbus_proxy[0].max_clients = 1
    agent = Agent(config, uplink=FakeUplink())
    await agent.start()
    first = AsyncModbusTcpClient("127.0.0.1", port=proxy_port, timeout=1, retries=0)
    try:
        assert await first.connect()
        assert not (await first.read_input_registers(0, count=2, device_id=1)).isError()
        # A second connection while the first is open: closed without an answer.
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        writer.write(struct.pack(">HHHBBHH", 1, 0, 6, 1, 4, 0, 2))
        await writer.drain()
        try:  # closed unread: a FIN, or a reset when our request was still unread
            refused = await asyncio.wait_for(reader.read(), 5)
        except ConnectionResetError:
            refused = b""
        writer.close()
        # The first client is still served.
        still = await first.read_input_registers(0, count=2, device_id=1)
    finally:
        first.close()
        await agent.stop()
    assert refused == b""
    assert not still.isError()
