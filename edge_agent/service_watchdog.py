"""The agent's side of systemd's service watchdog: ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``.

``WATCHDOG=1`` means *healthy*, not merely *running*: every interval (half of
``WatchdogSec``) the agent runs the same probe as ``/readyz`` and records it in the same
:class:`~observability.health.LivenessWindow` as ``/livez``. While that window says alive
(the critical checks have not failed without a break for longer than ``liveness_window_s``)
the ping is sent; after that it is withheld, so systemd kills and restarts the agent within
``WatchdogSec``. A wedged event loop sends nothing at all and is restarted the same way. A
probe that does not answer within the interval counts as a failed check.

:func:`watchdog_verdict` is the pure decision; :class:`ServiceWatchdog` does the timing and
the sending. Every ping carries a ``STATUS=`` line for ``systemctl status``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from edge_agent.health_server import Probe
from edge_agent.ports import Notifier
from observability.health import LivenessWindow

__all__ = ["ServiceWatchdog", "WatchdogVerdict", "watchdog_verdict"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchdogVerdict:
    ping: bool
    status: str  # one line for systemctl status


def _problems(checks: dict[str, str]) -> str:
    return "; ".join(f"{name}: {result}" for name, result in checks.items() if result != "ok")


def watchdog_verdict(probe: Probe, liveness: LivenessWindow) -> WatchdogVerdict:
    """Ping while the liveness window says alive; the status names what is wrong, if anything.

    Call after ``liveness.record(probe.ready)``.
    """
    if not probe.ready:
        failing = liveness.failing_for_s()
        problems = _problems(dict(probe.critical))
        if not liveness.alive():
            return WatchdogVerdict(False, f"unhealthy for {failing:.0f}s (over "
                                          f"{liveness.window_s:.0f}s), awaiting restart: "
                                          f"{problems}")
        return WatchdogVerdict(True, f"unhealthy for {failing:.0f}s: {problems}")
    degraded = _problems(dict(probe.optional))
    return WatchdogVerdict(True, f"degraded: {degraded}" if degraded else "running")


class ServiceWatchdog:
    """Tells systemd about the agent; a no-op without a notifier (not started by systemd).

    ``interval_s`` is how often :meth:`run` probes and pings (None: the watchdog is off, and
    :meth:`run` returns at once after nothing).
    """

    def __init__(self, notifier: Notifier | None, probe: Callable[[], Awaitable[Probe]],
                 liveness: LivenessWindow, interval_s: float | None) -> None:
        self._notifier = notifier
        self._probe = probe
        self.liveness = liveness
        self.interval_s = interval_s
        self.pings = 0
        self.withheld = 0
        self.last_status = ""

    def ready(self, status: str = "running") -> None:
        """Start-up is complete: systemd moves the unit to *active*."""
        self._send("READY=1", f"STATUS={status}")

    def stopping(self) -> None:
        self._send("STOPPING=1", "STATUS=stopping")

    async def run(self) -> None:
        """Probe and ping every ``interval_s``, forever (cancel to stop)."""
        if self._notifier is None or self.interval_s is None:
            return
        while True:
            await self.check_once()
            await asyncio.sleep(self.interval_s)

    async def check_once(self) -> WatchdogVerdict:
        """One probe and, if healthy enough, one ``WATCHDOG=1``."""
        probe = await self._timed_probe()
        self.liveness.record(probe.ready)
        verdict = watchdog_verdict(probe, self.liveness)
        if verdict.ping:
            self.pings += 1
            self._send("WATCHDOG=1", f"STATUS={verdict.status}")
        else:
            self.withheld += 1
            level = logging.ERROR if self.withheld == 1 else logging.DEBUG
            log.log(level, "watchdog ping withheld (%d so far): %s", self.withheld,
                    verdict.status)
            self._send(f"STATUS={verdict.status}")
        self.last_status = verdict.status
        return verdict

    async def _timed_probe(self) -> Probe:
        timeout = self.interval_s or 5.0
        try:
            async with asyncio.timeout(timeout):
                return await self._probe()
        except TimeoutError:
            return Probe({"probe": f"no answer within {timeout:.1f}s"}, {})

    def _send(self, *states: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(*states)
