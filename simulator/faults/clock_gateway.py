"""A gateway whose wall clock a scenario can jump: one home (simulator + agent) in-process.

The fleet's agents use the system clock, which a test cannot move per gateway. This gateway
runs the same agent (:class:`edge_agent.runtime.Agent`, configured by
:func:`simulator.fleet_plan.agent_config`, so its device ids and actuators match the fleet's)
with a :class:`JumpableClock`, next to its own :class:`~simulator.MeterSimulator`, on an
asyncio loop in a background thread. Its wall time moves by :meth:`ClockJumpGateway.jump`, as
NTP moves a Pi that booted without an RTC; monotonic time never jumps. seqs, not timestamps,
carry a reading's identity, so nothing may be lost or duplicated across a jump.
The caller registers the gateway and its devices in the cloud (see ``scenarios``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from pathlib import Path

from edge_agent.runtime import Agent
from simulator.fleet_plan import Home, WorkerSpec, agent_config
from simulator.server import MeterSimulator

log = logging.getLogger(__name__)


class JumpableClock:
    """The system clock plus an offset that :meth:`jump` changes (thread-safe)."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def monotonic(self) -> float:
        return time.monotonic()

    def jump(self, seconds: float) -> None:
        self.offset_ms += round(seconds * 1000)


class ClockJumpGateway:
    """Gateway ``gateway_id``'s simulator and agent, on a thread; ``start``/``stop`` block."""

    def __init__(self, workdir: Path, gateway_id: str, *, broker_url: str, interval_s: float,
                 ack_timeout_s: float, seed: int = 7, meters: int = 2) -> None:
        self.workdir, self.gateway_id = workdir, gateway_id
        self.home = Home(gateway_id, seed)
        self.spec = WorkerSpec(homes=[self.home], workdir=str(workdir), ports_file="",
                               broker_url=broker_url, interval_s=interval_s,
                               meters_per_gateway=meters, actuators=True,
                               ack_timeout_s=ack_timeout_s,
                               status_interval_s=max(5.0, interval_s))
        self.clock = JumpableClock()
        self.control_url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    @property
    def buffer_path(self) -> Path:
        return self.workdir / "agents" / self.gateway_id / "buffer.sqlite"

    def jump(self, seconds: float) -> None:
        log.info("%s: wall clock jumps %+.0f s", self.gateway_id, seconds)
        self.clock.jump(seconds)

    def start(self) -> None:
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True,
                                        name=f"gateway-{self.gateway_id}")
        self._thread.start()
        ready.result(timeout=60)

    def stop(self) -> None:
        """Stop the agent cleanly (buffer closed), then its simulator."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(60)
        self._thread = None

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            asyncio.run(self._main(ready))
        finally:
            if not ready.done():
                ready.set_exception(RuntimeError(f"{self.gateway_id} did not start"))

    async def _main(self, ready: concurrent.futures.Future[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        sim = MeterSimulator(seed=self.home.seed, tick_s=1.0)
        agent: Agent | None = None
        try:
            port = await sim.start("127.0.0.1", 0, control_port=0)
            self.control_url = f"http://127.0.0.1:{sim.control_port}"
            config = agent_config(self.home, self.spec, port)
            config.data_dir.mkdir(parents=True, exist_ok=True)
            agent = Agent(config, clock=self.clock)
            await agent.start()
            ready.set_result(None)
            await self._stop.wait()
        finally:
            if agent is not None:
                await agent.stop()
            await sim.stop()
