"""Building the agent's firmware updater from its config (the agent's bootstrap calls this).

The health check the updater gates a commit on is the agent's own readiness: the agent is up
(buffer usable, every task running), meters answer, and the cloud broker is connected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import httpx

from edge_agent.config import AgentConfig
from edge_agent.errors import ConfigError
from edge_agent.firmware_runner import FirmwareRunner
from edge_agent.health_server import Probe
from edge_agent.ports import JobsChannel
from firmware_update.clock import SystemClock
from firmware_update.download import PayloadDownloader
from firmware_update.envelope import Envelope
from firmware_update.errors import FirmwareError
from firmware_update.ports import HealthReport, SlotBackend
from firmware_update.state import StateStore
from firmware_update.trust import load_initial_root
from firmware_update.updater import DeviceIdentity, DeviceUpdater, UpdaterSettings

__all__ = ["EXIT_RESTART", "AgentHealth", "build_firmware"]

log = logging.getLogger(__name__)
EXIT_RESTART = 75  # EX_TEMPFAIL: systemd's Restart=on-failure starts the new slot


class AgentHealth:
    """``HealthProbe`` over the agent's readiness probe: every check must be ok."""

    def __init__(self, probe: Callable[[], Awaitable[Probe]]) -> None:
        self._probe = probe

    async def check(self) -> HealthReport:
        probe = await self._probe()
        checks = {**probe.critical, **probe.optional}
        # buffer and tasks say whether the agent is up; uplink whether the cloud is reachable
        names = {"buffer": "agent buffer", "tasks": "agent tasks", "uplink": "cloud"}
        return HealthReport({names.get(k, k): v for k, v in checks.items() if v != "ok"})


def _slots(config: AgentConfig) -> SlotBackend:
    fw = config.firmware
    if fw.slots == "rauc":
        from firmware_update.slots_rauc import RaucSlots

        return RaucSlots(slot_class=fw.rauc_slot_class)
    from firmware_update.slots_dir import DirectorySlots

    return DirectorySlots(fw.app_root)


async def _reboot(reason: str) -> None:
    log.warning("rebooting into the other slot: %s", reason)
    proc = await asyncio.create_subprocess_exec("systemctl", "reboot")
    await proc.wait()


def build_firmware(config: AgentConfig, channel: JobsChannel,
                   probe: Callable[[], Awaitable[Probe]],
                   request_exit: Callable[[int], None]) -> FirmwareRunner:
    """Raises ``ConfigError`` naming ``firmware.*`` when the trust root or slots are unusable."""
    fw = config.firmware
    try:
        root = load_initial_root(Envelope.from_bytes(fw.trust_root.read_bytes()))
        slots = _slots(config)
    except OSError as exc:
        raise ConfigError("firmware.trust_root", f"cannot read {fw.trust_root}: "
                          f"{exc.strerror}") from exc
    except FirmwareError as exc:
        raise ConfigError("firmware", str(exc)) from exc
    runner = FirmwareRunner(channel, step_timeout_min=fw.step_timeout_min)

    async def restart(reason: str) -> None:
        if fw.slots == "rauc":
            await _reboot(reason)
        log.warning("restarting for the update: %s", reason)
        request_exit(EXIT_RESTART)
    runner.updater = DeviceUpdater(
        store=StateStore(config.firmware_state_dir), slots=slots, root=root,
        identity=DeviceIdentity(fw.product, fw.hardware), health=AgentHealth(probe),
        reporter=runner, restarter=runner.restarter(restart),
        downloader=PayloadDownloader(httpx.Client(timeout=30, follow_redirects=True)),
        clock=SystemClock(),
        settings=UpdaterSettings(trial_boots=fw.trial_boots,
                                 health_deadline_s=fw.health_deadline_s,
                                 health_interval_s=fw.health_interval_s))
    return runner
