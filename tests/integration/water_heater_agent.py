"""A real ``homewatt-agent run`` process switching the simulator's water heater over Modbus TCP,
for the SIGKILL-between-actuation-and-outcome tests (commands and shadows).

The simulator's water heater (unit 20) has holding register 0: 1 on, 0 off; it starts on. Its
"silent" fault makes a write land without an answer, which is where the agent is killed.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from simulator import MeterSimulator

__all__ = ["AGENT_TOML", "WATER_HEATER_UNIT", "agent_process", "simulator", "switch_writes"]

WATER_HEATER_UNIT = 20
AGENT_TOML = """\
gateway_id = "{gw}"
data_dir = "{data}"
log_format = "text"

[mqtt]
url = "{url}"
keepalive_s = 5
reconnect_min_s = 0.2
reconnect_max_s = 1.0

[[buses]]
name = "sim"
kind = "tcp"
host = "127.0.0.1"
port = {port}
timeout_s = 5

[[actuators]]
id = "waterheater"
kind = "modbus_switch"
bus = "sim"
unit = {unit}
address = 0
"""


@pytest.fixture
async def simulator() -> AsyncIterator[MeterSimulator]:
    sim = MeterSimulator(seed=3, tick_s=1.0)
    await sim.start(port=0)
    yield sim
    await sim.stop()


@contextlib.contextmanager
def agent_process(config: Path) -> Iterator[subprocess.Popen[bytes]]:
    agent = Path(sys.executable).parent / "homewatt-agent"
    with subprocess.Popen([str(agent), "run", "--config", str(config)],
                          stderr=subprocess.DEVNULL) as child:
        try:
            yield child
        finally:
            child.kill()


def switch_writes(sim: MeterSimulator) -> list[tuple[int, int]]:
    """The (value, ...) writes the water heater's register 0 received, in order."""
    return sim.writes().get((WATER_HEATER_UNIT, 0), [])
