"""``Fleet`` and ``homewatt-sim fleet``: a small fleet of real processes starts, delivers, stops."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from simulator.fleet import Fleet
from tests.e2e.harness import wait_until
from tests.services import missing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_every_gateway_of_a_three_gateway_fleet_delivers_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    if not Path("/usr/sbin/mosquitto").exists():
        missing("mosquitto binary not found (apt-get install mosquitto)")
    fleet = Fleet(tmp_path / "fleet", gateways=3, meters_per_gateway=2, interval_s=0.5, seed=3)
    try:
        fleet.start()
        assert fleet.gateway_ids() == ["home-0001", "home-0002", "home-0003"]

        def all_delivering() -> bool:
            return all(len(seqs) >= 20 for seqs in fleet.stored_seqs().values())

        wait_until(all_delivering, 60, "readings from every gateway")
        with httpx.Client(timeout=5, headers=fleet.api_headers) as api:
            latest = api.get(f"{fleet.api_urls[0]}/api/v1/gateways/home-0002/latest").json()
            truth = api.get(f"{fleet.simulator_control_url('home-0002')}/truth").json()
        assert {item["meter_id"] for item in latest["items"]} == {"grid", "heatpump"}
        assert set(truth["units"]) >= {"1", "2"}
    finally:
        fleet.stop()
    # uvicorn re-raises the SIGTERM it handled, so a cleanly stopped cloud ends by -SIGTERM.
    assert fleet.exit_codes and set(fleet.exit_codes.values()) <= {0, -signal.SIGTERM}, \
        fleet.exit_codes
    stats = fleet.buffer_stats()
    stored = fleet.stored_seqs()
    for gateway, buffered in stats.items():
        assert buffered.dropped_total == 0
        # Everything stored is unique and nothing past the agent's last seq exists.
        assert len(stored[gateway]) == len(set(stored[gateway]))
        assert max(stored[gateway]) <= buffered.last_seq


def test_homes_get_different_reproducible_profiles(tmp_path: Path) -> None:
    from simulator.fleet_plan import plan_homes

    assert plan_homes(3, seed=1) == plan_homes(3, seed=1)
    assert len({home.seed for home in plan_homes(500, seed=1)}) == 500
    assert plan_homes(2, seed=1) != plan_homes(2, seed=2)


def test_fleet_help_explains_every_option() -> None:
    done = subprocess.run([sys.executable, "-m", "simulator.cli", "fleet", "--help"],
                          capture_output=True, text=True, check=True)
    for option in ("--gateways", "--meters-per-gateway", "--interval", "--seed", "--db-url",
                   "--replicas", "--duration", "--workdir"):
        assert option in done.stdout
    assert "Ctrl-C" in done.stdout
