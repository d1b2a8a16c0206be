"""Every chaos scenario, CI-sized (2 gateways, 12 s of traffic at 1 s polling, 4 commands per
gateway): each ends with a ledger of zero lost, zero duplicated, zero double-executed, every
command final, and a measured recovery. The ledger is printed when a scenario fails.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from simulator.faults import SCENARIOS, ScenarioParams, format_ledger, run_scenario
from tests.services import missing

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(150)]


@pytest.fixture
def params(request: pytest.FixtureRequest) -> ScenarioParams:
    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        missing("mosquitto binary not found (apt-get install mosquitto)")
    name = request.node.callspec.params["scenario"]
    db_url = request.getfixturevalue("postgres_url") if name == "db-outage" else None
    return ScenarioParams(gateways=2, duration_s=12.0, interval_s=1.0, commands_per_gateway=4,
                          db_url=db_url)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenario_loses_duplicates_and_double_executes_nothing(
    scenario: str, params: ScenarioParams, tmp_path: Path
) -> None:
    result = run_scenario(scenario, tmp_path, params)
    ledger = result.ledger
    report = format_ledger(result.name, ledger, result.notes)
    assert ledger.readings_committed > 0 and ledger.commands_issued > 0, report
    assert (ledger.lost, ledger.duplicated, ledger.double_executions) == (0, 0, 0), report
    assert ledger.commands_final == ledger.commands_issued, report
    assert ledger.time_to_recover_s is not None, report
    assert ledger.clean, report
