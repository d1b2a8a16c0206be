"""Simulated gateways for the rollout tests: each is the real agent-side Jobs client
(``UplinkJobsChannel`` over a real ``PahoUplink``) and the real updater (directory slots in a
temp dir), in-process; a restart rebuilds the updater and runner from disk, as a new process
would."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx

from edge_agent.config import MqttSettings
from edge_agent.firmware_runner import FirmwareRunner
from edge_agent.inbound import InboundRouter
from edge_agent.jobs_channel import UplinkJobsChannel
from edge_agent.ports import Message
from edge_agent.uplink import PahoUplink
from firmware_update.download import PayloadDownloader
from firmware_update.fakes import FakeClock, FakeHealthProbe
from firmware_update.ports import HealthReport
from firmware_update.slots_dir import DirectorySlots
from firmware_update.state import StateStore
from firmware_update.trust import TrustRoot
from firmware_update.updater import DeviceIdentity, DeviceUpdater, UpdaterSettings
from tests.fw_helpers import app_tree


class SimGateway:
    def __init__(self, gateway_id: str, base: Path, broker_url: str, root: TrustRoot, *,
                 healthy: bool, now_ms: int) -> None:
        self.id = gateway_id
        self.base = base
        self.root = root
        self.healthy = healthy
        self.clock = FakeClock(now_ms)
        DirectorySlots.initialize(base / "app", app_tree(base / "factory", "1.0.0"), "1.0.0")
        self.router = InboundRouter()
        self.uplink = PahoUplink(MqttSettings(url=broker_url), client_id=gateway_id,
                                 subscriptions=lambda: self.router.filters,
                                 will=lambda: Message(f"hw/{gateway_id}/status", b"offline"))
        self.channel = UplinkJobsChannel(gateway_id, self.uplink, timeout_s=10)
        self.channel.register(self.router)
        self.http = httpx.Client(timeout=10)
        self.starts = 0
        self.failures: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []

    def health(self) -> HealthReport:
        version = (self.base / "app" / "current" / "VERSION").read_text().strip()
        if version != "1.0.0" and not self.healthy:
            return HealthReport({"meters": "no meter read since the update"})
        return HealthReport()

    def _process(self) -> FirmwareRunner:
        """One 'process start': a fresh updater and runner over the files on disk."""
        self.starts += 1
        runner = FirmwareRunner(self.channel, step_timeout_min=30, recheck_s=2.0,
                                park_after_restart=False)

        async def exit_for_systemd(_reason: str) -> None:
            return None
        runner.updater = DeviceUpdater(
            store=StateStore(self.base / "state"), slots=DirectorySlots(self.base / "app"),
            root=self.root, identity=DeviceIdentity("homewatt-agent", "rpi4"),
            health=FakeHealthProbe(self.health), reporter=runner,
            restarter=runner.restarter(exit_for_systemd),
            downloader=PayloadDownloader(self.http, attempts=3, backoff_s=0.1, free_margin=0),
            clock=self.clock, settings=UpdaterSettings(trial_boots=2, health_deadline_s=60,
                                                       health_interval_s=10))
        return runner

    async def _life(self) -> None:
        while True:
            try:
                await self._process().run()  # returns when the updater asked for a restart
            except Exception as exc:  # the agent's supervisor restarts a failed worker
                self.failures.append(repr(exc))
                await asyncio.sleep(0.2)

    async def _inbound(self) -> None:
        while True:
            await self.router.dispatch(await self.uplink.receive())

    async def start(self) -> None:
        await self.uplink.start()
        await self.uplink.wait_connected()
        self._tasks = [asyncio.create_task(self._inbound()), asyncio.create_task(self._life())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.uplink.stop()
        self.http.close()

    def running_version(self) -> str:
        return (self.base / "app" / "current" / "VERSION").read_text().strip()

    def phase(self) -> str:
        return StateStore(self.base / "state").load().phase.value
