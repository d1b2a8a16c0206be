"""``homewatt-agent scan`` against the meter simulator over real Modbus TCP: every simulated
meter is found with the right type, and the snippet it prints reads every meter."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edge_agent.config import BusSettings, load_config
from edge_agent.modbus_bus import PymodbusBus
from edge_agent.scan import scan_bus
from simulator import MeterSimulator
from tests.integration.sim_process import simulator_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

# The simulator's home (simulator/meters.py): unit -> (model, role the scan suggests).
EXPECTED = {1: ("sdm630", "load"), 2: ("sdm120", "load"), 3: ("sdm120", "load"),
            126: ("sunspec", "pv"), 240: ("sunspec", "grid")}


@pytest.fixture
async def sim() -> AsyncIterator[MeterSimulator]:
    simulator = MeterSimulator(seed=3, tick_s=0.1)
    await simulator.start("127.0.0.1", port=0)
    try:
        yield simulator
    finally:
        await simulator.stop()


async def test_scan_finds_every_simulated_meter_with_its_type(sim: MeterSimulator) -> None:
    assert sim.port is not None
    bus = PymodbusBus(BusSettings(name="main", kind="tcp", host="127.0.0.1", port=sim.port,
                                  timeout_s=0.2))
    progress: list[tuple[int, int]] = []
    try:
        found = await scan_bus(bus, [*range(1, 6), 20, 21, 126, 200, 240],
                               lambda done, total, _f: progress.append((done, total)))
    finally:
        await bus.close()
    usable = {f.unit: (f.model, f.role) for f in found if f.usable}
    assert usable == EXPECTED
    # The writable controllers answer but are not meters; empty ids are not reported.
    assert {f.unit for f in found if not f.usable} == {20, 21}
    assert "SIM-INV-103" in next(f.description for f in found if f.unit == 126)
    assert progress[-1] == (10, 10) and len(progress) == 10


@pytest.fixture
def sim_process() -> Iterator[int]:
    with simulator_process() as port:
        yield port


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_scan_cli_prints_a_snippet_that_reads_every_meter(sim_process: int,
                                                          tmp_path: Path) -> None:
    snippet_file = tmp_path / "found.toml"
    scan = agent("scan", "--host", "127.0.0.1", "--port", str(sim_process),
                 "--units", "1-3,7,126,240", "--timeout", "0.2", "--out", str(snippet_file))
    assert scan.returncode == 0, scan.stderr
    assert scan.stdout == snippet_file.read_text()
    assert "scanned 6/6 unit ids, 5 found" in scan.stderr  # progress without a terminal

    config = tmp_path / "agent.toml"
    config.write_text(f'gateway_id = "gw-scan"\ndata_dir = "{tmp_path}"\n' + scan.stdout)
    meters = {m.unit: m.model for m in load_config(config).meters}
    assert meters == {unit: model for unit, (model, _role) in EXPECTED.items()}
    read = agent("read", "--config", str(config))
    assert read.returncode == 0, read.stdout + read.stderr
    assert "5 of 5 Modbus meters answered" in read.stdout


def test_scan_cli_says_why_when_the_bus_is_unreachable(tmp_path: Path) -> None:
    from tests.services import free_port

    scan = agent("scan", "--host", "127.0.0.1", "--port", str(free_port()), "--units", "1")
    assert scan.returncode == 1
    assert "cannot connect to 127.0.0.1" in scan.stderr
    assert "check the address and port" in scan.stderr
