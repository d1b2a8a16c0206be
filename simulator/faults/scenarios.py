"""The chaos scenarios, as code. Each takes a work directory and :class:`ScenarioParams` and
returns a :class:`ScenarioResult` whose ledger must be clean; see :mod:`.harness` for the
timeline they share (fault at 30 % of the run, heal at 60 %, then recovery and the ledger).

=================  =========================================================================
broker-restart     SIGKILL Mosquitto, start it again on the same port
agent-sigkill      SIGKILL one agent worker process (half the gateways crash), restart it
cloud-sigkill      SIGKILL the cloud, start it again
network-flaky      a proxy between agents and broker: latency, dropped connections, a cut
db-outage          a proxy between cloud and PostgreSQL cuts every connection (PostgreSQL only)
malformed-flood    garbage of many kinds on every gateway's telemetry and command-ack topics
clock-jump         one gateway's wall clock jumps +1 h, then to -1 h, then back
=================  =========================================================================
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from sqlalchemy.engine import make_url

from simulator.faults.harness import ChaosRun, ScenarioParams, ScenarioResult, ScenarioSkipped
from simulator.faults.injectors import dead_letter_count, inject_malformed, kill_agent_process
from simulator.faults.ledger import Ledger
from simulator.faults.proxy import ScheduleStep, TcpProxy

log = logging.getLogger(__name__)

Scenario = Callable[[Path, ScenarioParams], ScenarioResult]


def broker_restart(workdir: Path, params: ScenarioParams) -> ScenarioResult:
    """SIGKILL the broker, start it again on the same port."""
    run = ChaosRun("broker-restart", workdir, params)
    return run.run(fault=run.fleet.broker.kill, heal=run.fleet.broker.start)


def agent_sigkill(workdir: Path, params: ScenarioParams) -> ScenarioResult:
    """SIGKILL one agent worker process (half the gateways crash at once), restart it."""
    run = ChaosRun("agent-sigkill", workdir, params)

    def fault() -> None:
        run.record_skipped(kill_agent_process(run.fleet, 0))
        run.notes["seqs skipped on reopen"] = str(run.skipped) or "none"

    return run.run(fault=fault, heal=lambda: run.fleet.start_agent_process(0))


def cloud_sigkill(workdir: Path, params: ScenarioParams) -> ScenarioResult:
    """SIGKILL the cloud, start it again."""
    run = ChaosRun("cloud-sigkill", workdir, params)
    return run.run(fault=lambda: run.fleet.kill_cloud(0), heal=lambda: run.fleet.start_cloud(0))


def network_flaky(workdir: Path, params: ScenarioParams) -> ScenarioResult:
    """Agents reach the broker through the proxy: from the fault, 150 ms latency and a 5 %
    chance per chunk that a connection is reset; a 2 s cut in the middle; heal restores."""
    run = ChaosRun("network-flaky", workdir, params)
    proxy = TcpProxy(run.fleet.broker.port, name="agents-broker", seed=params.seed)
    proxy.start()
    run.fleet.agent_broker_url = f"mqtt://127.0.0.1:{proxy.port}"
    window = params.duration_s * 0.3

    def fault() -> None:
        proxy.run_schedule([ScheduleStep(0.0, "latency", 150), ScheduleStep(0.0, "drop", 0.05),
                            ScheduleStep(window / 3, "cut"),
                            ScheduleStep(window / 3 + 2.0, "restore"),
                            ScheduleStep(window / 3 + 2.0, "latency", 150),
                            ScheduleStep(window / 3 + 2.0, "drop", 0.05)])

    try:
        result = run.run(fault=fault, heal=proxy.restore)
    finally:
        stats = proxy.stats()
        proxy.stop()
    result.notes["proxy"] = (f"{stats.accepted} connections, {stats.dropped} reset, "
                             f"{stats.refused} refused")
    return result


def db_outage(workdir: Path, params: ScenarioParams) -> ScenarioResult:
    """The cloud reaches PostgreSQL through the proxy, which cuts every connection."""
    if params.db_url is None or not params.db_url.startswith("postgresql"):
        raise ScenarioSkipped("db-outage needs PostgreSQL (a TCP database): pass "
                              "--db-url postgresql+psycopg://user@127.0.0.1:5432/db")
    url = make_url(params.db_url)
    run = ChaosRun("db-outage", workdir, params)
    proxy = TcpProxy(url.port or 5432, name="cloud-db")
    proxy.start()
    run.fleet.cloud_db_url = url.set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False)
    try:
        result = run.run(fault=proxy.cut, heal=proxy.restore)
    finally:
        stats = proxy.stats()
        proxy.stop()
    result.notes["proxy"] = f"{stats.dropped} connections reset, {stats.refused} refused"
    return result


def malformed_flood(workdir: Path, params: ScenarioParams) -> ScenarioResult:
    """Garbage on every gateway's telemetry and command-ack topics, sent while real traffic
    flows; every garbage message must end as a dead letter and nothing may stall."""
    run = ChaosRun("malformed-flood", workdir, params)
    sent: list[int] = []
    flood = threading.Thread(target=lambda: sent.append(
        inject_malformed(run.fleet.broker.port, run.fleet.gateway_ids(), rounds=3)),
        name="garbage")
    result = run.run(fault=flood.start, heal=lambda: flood.join(60))
    dead = dead_letter_count(run.fleet.db_url)
    result.notes["garbage sent / dead letters"] = f"{sum(sent)} / {dead}"
    if not sent or dead < sum(sent):
        check = f"{sum(sent) - dead} garbage messages were neither stored nor dead-lettered"
        result.ledger = _with_check(result, check)
    return result


def clock_jump(workdir: Path, params: ScenarioParams) -> ScenarioResult:
    """An extra gateway (in-process, see :mod:`.clock_gateway`) whose wall clock jumps +1 h,
    then to 1 h behind, then back to true time at the heal."""
    run = ChaosRun("clock-jump", workdir, params)
    jumps = threading.Event()

    def behind() -> None:
        if run.extra is not None:
            run.extra.jump(-7200)
        jumps.set()

    def fault() -> None:
        assert run.extra is not None
        run.extra.jump(3600)
        threading.Timer(params.duration_s * 0.15, behind).start()

    def heal() -> None:
        assert run.extra is not None
        jumps.wait(30)
        run.extra.jump(3600)

    def setup() -> None:
        run.add_clock_gateway()

    result = run.run(fault=fault, heal=heal, setup=setup)
    result.notes["clock gateway"] = "home-clock: +3600 s, then -7200 s, then +3600 s"
    return result


def _with_check(result: ScenarioResult, check: str) -> Ledger:
    return replace(result.ledger, failed_checks=(*result.ledger.failed_checks, check),
                   problems=(check, *result.ledger.problems))


SCENARIOS: dict[str, Scenario] = {
    "broker-restart": broker_restart,
    "agent-sigkill": agent_sigkill,
    "cloud-sigkill": cloud_sigkill,
    "network-flaky": network_flaky,
    "db-outage": db_outage,
    "malformed-flood": malformed_flood,
    "clock-jump": clock_jump,
}


SUMMARIES: dict[str, str] = {
    "broker-restart": "SIGKILL Mosquitto, start it again on the same port",
    "agent-sigkill": "SIGKILL one agent worker process (half the gateways), restart it",
    "cloud-sigkill": "SIGKILL the cloud, start it again",
    "network-flaky": "agents<->broker proxy: 150 ms latency, 5 % connection resets, a 2 s cut",
    "db-outage": "cloud<->PostgreSQL proxy cuts every connection (needs --db-url postgresql)",
    "malformed-flood": "garbage on every telemetry and command-ack topic: all dead-lettered",
    "clock-jump": "one gateway's wall clock jumps +1 h, then to -1 h, then back",
}


def describe() -> dict[str, str]:
    """Scenario name -> one line saying what it does."""
    return {name: SUMMARIES[name] for name in SCENARIOS}


def run_scenario(name: str, workdir: Path, params: ScenarioParams) -> ScenarioResult:
    """Run scenario ``name``; raises KeyError for an unknown name, :class:`ScenarioSkipped`
    when it cannot run here."""
    return SCENARIOS[name](workdir, params)
