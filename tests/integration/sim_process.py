"""``homewatt-sim meters`` in its own process, for tests whose code under test runs its own
event loop (CLI commands calling ``asyncio.run``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def simulator_process(seed: int = 1) -> Iterator[int]:
    """Start the simulator on a free port; yield the Modbus TCP port."""
    proc = subprocess.Popen([sys.executable, "-m", "simulator.cli", "meters", "--port", "0",
                             "--seed", str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "homewatt-sim meters: modbus 127.0.0.1:PORT units ..."
        if not line:
            raise RuntimeError("homewatt-sim meters exited before listening")
        yield int(line.split()[3].rsplit(":", 1)[1])
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
