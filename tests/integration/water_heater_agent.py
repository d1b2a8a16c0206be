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
    """The agent's log goes to a file beside ``config``; when the block fails, its tail is
    printed, so a failure in CI shows what the agent was doing."""
    agent = Path(sys.executable).parent / "homewatt-agent"
    logs = sorted(config.parent.glob("agent-*.log"))
    log_path = config.parent / f"agent-{len(logs)}.log"
    with log_path.open("wb") as log_file, \
            subprocess.Popen([str(agent), "run", "--config", str(config)],
                             stderr=log_file) as child:
        try:
            yield child
        except BaseException:
            child.kill()
            child.wait()
            print(f"--- {log_path.name} (last 80 lines) ---")
            print("\n".join(log_path.read_text(errors="replace").splitlines()[-80:]))
            raise
        finally:
            child.kill()


def switch_writes(sim: MeterSimulator) -> list[tuple[int, int]]:
    """The (value, ...) writes the water heater's register 0 received, in order."""
    return sim.writes().get((WATER_HEATER_UNIT, 0), [])
