"""sd_notify against a real datagram socket set as ``NOTIFY_SOCKET``: ``homewatt-agent run``
sends READY=1, WATCHDOG=1 at half of WATCHDOG_USEC and STOPPING=1 on SIGTERM; an agent whose
critical checks keep failing stops pinging once the liveness window has passed."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.config import AgentConfig
from edge_agent.runtime import Agent
from edge_agent.scheduler import FakePoller
from edge_agent.sd_notify import SocketNotifier
from edge_agent.uplink import FakeUplink
from tests.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


class NotifyListener:
    """The service manager's end: a bound AF_UNIX datagram socket."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[list[str]] = []

    def next(self, timeout: float = 15.0) -> list[str]:
        self.sock.settimeout(timeout)
        lines = self.sock.recv(4096).decode().split("\n")
        self.messages.append(lines)
        return lines

    def until(self, line: str, timeout: float = 15.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            lines = self.next(max(0.1, deadline - time.monotonic()))
            if line in lines or any(part.startswith(line) for part in lines):
                return lines

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest) -> Iterator[NotifyListener]:
    if request.param == "abstract":
        address = f"@homewatt-test-{uuid.uuid4().hex}"
        made = NotifyListener(address)
        yield made
        made.close()
        return
    # AF_UNIX paths are limited to 107 bytes: pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="hw-notify-") as short:
        made = NotifyListener(os.path.join(short, "notify"))
        yield made
        made.close()


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(f'gateway_id = "gw-notify"\ndata_dir = "{tmp_path / "data"}"\n'
                      f'log_format = "text"\n[mqtt]\nurl = "mqtt://127.0.0.1:{free_port()}"\n')
    return config


def test_agent_run_sends_ready_watchdog_and_stopping(listener: NotifyListener,
                                                     tmp_path: Path) -> None:
    env = dict(os.environ, NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="300000")
    env.pop("WATCHDOG_PID", None)
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "run", "--config",
                                 str(write_config(tmp_path))], env=env,
                                stdout=subprocess.DEVNULL, stderr=out)
    try:
        first = listener.next(timeout=30)
        pings = [listener.until("WATCHDOG=1") for _ in range(3)]
        proc.send_signal(signal.SIGTERM)
        last = listener.until("STOPPING=1")
        code = proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "READY=1" in first, first
    assert any(line.startswith("STATUS=running") for line in first)
    # The broker is down: the agent still buffers, so it is degraded, not unhealthy.
    assert all("STATUS=degraded: uplink: not connected (buffering)" in p for p in pings)
    assert "STOPPING=1" in last
    assert code == 0, log.read_text()


async def test_agent_with_a_broken_buffer_stops_pinging_after_the_window(
        listener: NotifyListener, tmp_path: Path) -> None:
    config = AgentConfig(gateway_id="gw-notify", data_dir=tmp_path / "data",
                         liveness_window_s=0.3)
    notifier = SocketNotifier(listener.address)
    agent = Agent(config, uplink=FakeUplink(), poller=FakePoller, notifier=notifier,
                  watchdog_interval_s=0.05)
    await agent.start()
    try:
        ready = await asyncio.to_thread(listener.next)
        await asyncio.to_thread(listener.until, "WATCHDOG=1")
        await asyncio.to_thread(agent.buffer.close)  # every later buffer read fails
        unhealthy = await asyncio.to_thread(listener.until, "STATUS=unhealthy")
        verdict = await asyncio.to_thread(listener.until, "STATUS=unhealthy for", 15.0)
        while "awaiting restart" not in verdict[-1]:
            verdict = await asyncio.to_thread(listener.next)
        after = [await asyncio.to_thread(listener.next) for _ in range(4)]
    finally:
        await agent.stop()
        notifier.close()
    assert "READY=1" in ready
    assert "WATCHDOG=1" in unhealthy  # inside the window it still pings ...
    assert "not open" in unhealthy[-1]
    assert verdict == [verdict[-1]]  # ... after it, STATUS alone
    assert all("WATCHDOG=1" not in message for message in after), after
    assert agent.watchdog.withheld >= 5
