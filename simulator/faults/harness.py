"""The run every chaos scenario shares: fleet up, traffic, fault, heal, recovery, ledger.

:class:`ChaosRun` owns the timeline. ``duration_s`` of traffic (telemetry from every agent,
commands spread over the first 80 %); the fault starts at 30 % and is healed at 60 %; from the
heal the run measures the time until it has recovered:

- readings: every gateway's stored seqs have no hole up to the highest stored one (seqs its
  buffer skipped after a kill excepted) and that highest one is newer than at the heal;
- commands: every command issued so far has a final status.

After the traffic it waits for every command to be final, reads each home's actuator writes,
stops the fleet (agents first, cleanly, so their buffers can be read) and builds the ledger.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from simulator.faults.clock_gateway import ClockJumpGateway
from simulator.faults.injectors import (
    device_writes,
    read_buffer_facts,
    stored_progress,
    stored_readings,
)
from simulator.faults.ledger import Actuation, GatewayReadings, Ledger, build_ledger
from simulator.faults.traffic import CommandDriver, plan_commands
from simulator.fleet import Fleet
from simulator.fleet_plan import (
    SETPOINT_CAPABILITIES,
    SWITCH_CAPABILITIES,
    setpoint_device,
    switch_device,
)

log = logging.getLogger(__name__)

POLL_S = 0.25
FAULT_AT, HEAL_AT, COMMANDS_UNTIL = 0.3, 0.6, 0.8


class ScenarioSkipped(RuntimeError):
    """The scenario cannot run here (e.g. it needs PostgreSQL); the message says why."""


@dataclass(frozen=True)
class ScenarioParams:
    """Sizes and timings; the defaults are a CI-sized run."""

    gateways: int = 2
    duration_s: float = 12.0
    interval_s: float = 1.0
    meters_per_gateway: int = 2
    commands_per_gateway: int = 4
    db_url: str | None = None
    seed: int = 1
    ack_timeout_s: float = 2.0
    recover_timeout_s: float = 90.0


@dataclass
class ScenarioResult:
    name: str
    ledger: Ledger
    notes: dict[str, str] = field(default_factory=dict)


def _cloud_bin() -> str:
    return str(Path(sys.executable).parent / "homewatt-cloud")


class ChaosRun:
    """One scenario's fleet and bookkeeping; use :meth:`run` with the fault and heal steps."""

    def __init__(self, name: str, workdir: Path, params: ScenarioParams) -> None:
        self.name, self.params, self.workdir = name, params, workdir
        self.fleet = Fleet(workdir / "fleet", gateways=params.gateways,
                           meters_per_gateway=params.meters_per_gateway,
                           interval_s=params.interval_s, seed=params.seed,
                           db_url=params.db_url, agent_processes=min(2, params.gateways),
                           ack_timeout_s=params.ack_timeout_s)
        self.skipped: dict[str, list[tuple[int, int]]] = {}
        self.failed_checks: list[str] = []
        self.notes: dict[str, str] = {"gateways": str(params.gateways),
                                      "duration (s)": f"{params.duration_s:g}"}
        self.extra: ClockJumpGateway | None = None
        self.driver: CommandDriver | None = None

    # -- setup ---------------------------------------------------------------------------------

    def gateways(self) -> list[str]:
        extra = [self.extra.gateway_id] if self.extra is not None else []
        return self.fleet.gateway_ids() + extra

    def add_clock_gateway(self, gateway_id: str = "home-clock") -> ClockJumpGateway:
        """Register and start an in-process gateway whose wall clock can jump."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEWATT_")}
        env.update(HOMEWATT_DB_URL=self.fleet.db_url,
                   HOMEWATT_DATA_DIR=str(self.fleet.workdir / "cloud"))
        for args in (["add-gateway", gateway_id],
                     ["add-device", gateway_id, switch_device(gateway_id), "--capabilities",
                      SWITCH_CAPABILITIES],
                     ["add-device", gateway_id, setpoint_device(gateway_id), "--capabilities",
                      SETPOINT_CAPABILITIES]):
            subprocess.run([_cloud_bin(), "admin", *args], env=env, check=True,
                           capture_output=True)
        self.extra = ClockJumpGateway(self.fleet.workdir, gateway_id,
                                      broker_url=self.fleet.agent_broker_url,
                                      interval_s=self.params.interval_s,
                                      ack_timeout_s=self.params.ack_timeout_s)
        self.extra.start()
        return self.extra

    def record_skipped(self, skipped: dict[str, tuple[int, int]]) -> None:
        for gateway, gap in skipped.items():
            self.skipped.setdefault(gateway, []).append(gap)

    def control_url(self, gateway: str) -> str:
        if self.extra is not None and gateway == self.extra.gateway_id:
            return self.extra.control_url
        return self.fleet.simulator_control_url(gateway)

    # -- the timeline --------------------------------------------------------------------------

    def run(self, fault: Callable[[], None], heal: Callable[[], None],
            setup: Callable[[], None] = lambda: None) -> ScenarioResult:
        """Start the fleet, ``setup`` (after start), traffic, ``fault``, ``heal``, ledger."""
        p = self.params
        try:
            self.fleet.start()
            setup()
            self.driver = CommandDriver(self.fleet.api_urls,
                                        plan_commands(self.gateways(), p.commands_per_gateway),
                                        spread_s=p.duration_s * COMMANDS_UNTIL,
                                        headers=self.fleet.api_headers)
            t0 = time.monotonic()
            self.driver.start()
            self._sleep_until(t0 + p.duration_s * FAULT_AT)
            log.info("%s: fault", self.name)
            fault()
            self._sleep_until(t0 + p.duration_s * HEAL_AT)
            log.info("%s: heal", self.name)
            heal()
            ttr = self._wait_recovered(time.monotonic())
            self._sleep_until(t0 + p.duration_s)
            self._settle_commands()
            writes = self._actuations()
        finally:
            self._stop_all()
        return ScenarioResult(self.name, self._ledger(writes, ttr), self.notes)

    @staticmethod
    def _sleep_until(when: float) -> None:
        time.sleep(max(0.0, when - time.monotonic()))

    def _expected_count(self, gateway: str, top: int) -> int:
        gaps = sum(min(last, top) - first + 1
                   for first, last in self.skipped.get(gateway, []) if first <= top)
        return top - gaps

    def _readings_caught_up(self, baseline: dict[str, tuple[int, int]]) -> bool:
        progress = stored_progress(self.fleet.db_url)
        for gateway in self.gateways():
            count, top = progress.get(gateway, (0, 0))
            if top <= baseline.get(gateway, (0, 0))[1]:
                return False
            if count != self._expected_count(gateway, top):
                return False
        return True

    def _wait_recovered(self, healed_at: float) -> float | None:
        assert self.driver is not None
        baseline = stored_progress(self.fleet.db_url)
        deadline = healed_at + self.params.recover_timeout_s
        readings_ok = False
        while time.monotonic() < deadline:
            readings_ok = readings_ok or self._readings_caught_up(baseline)
            if readings_ok and self.driver.refresh():
                ttr = time.monotonic() - healed_at
                log.info("%s: recovered %.1f s after the heal", self.name, ttr)
                return ttr
            time.sleep(POLL_S)
        self.failed_checks.append(f"not recovered within {self.params.recover_timeout_s:g} s "
                                  f"of the heal (readings caught up: {readings_ok})")
        return None

    def _settle_commands(self) -> None:
        assert self.driver is not None
        self.driver.join()
        deadline = time.monotonic() + self.params.recover_timeout_s
        while not self.driver.refresh() and time.monotonic() < deadline:
            time.sleep(POLL_S)
        self.failed_checks.extend(f"command never accepted: {failure}"
                                  for failure in self.driver.post_failures)

    def _actuations(self) -> list[Actuation]:
        writes: list[Actuation] = []
        for gateway in self.gateways():
            writes.extend(device_writes(self.control_url(gateway), gateway))
        return writes

    def _stop_all(self) -> None:
        if self.driver is not None:
            self.driver.close()
        if self.extra is not None:
            self.extra.stop()
        self.fleet.stop()

    def _ledger(self, writes: list[Actuation], ttr: float | None) -> Ledger:
        assert self.driver is not None
        rows = stored_readings(self.fleet.db_url, self.gateways())
        facts = []
        for gateway in self.gateways():
            path = (self.extra.buffer_path if self.extra is not None
                    and gateway == self.extra.gateway_id else self.fleet.buffer_path(gateway))
            buf = read_buffer_facts(path)
            facts.append(GatewayReadings(gateway, buf.last_seq, buf.pending_seqs, buf.dropped,
                                         rows[gateway], tuple(self.skipped.get(gateway, []))))
        return build_ledger(facts, self.driver.issued(), writes, ttr, self.failed_checks)
