"""Scale-out proof: two cloud replicas on one PostgreSQL, one SIGKILLed mid-run, ledger at zero.

Ten gateways (real agents in two worker processes, each home its own simulator) feed two
``homewatt-cloud serve`` replicas that share telemetry and command acks through
``$share/fleet/...`` and claim outbox rows with ``FOR UPDATE SKIP LOCKED``. Commands go in
through both replicas' APIs; replica 1 is SIGKILLed while commands and telemetry are in flight
(and restarted later, as an orchestrator would). At the end every reading each agent committed
is stored exactly once, every command has a final status, and each simulated device saw exactly
one register write per executed command.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud_sync.registry_rules import device_id_for
from simulator.fleet import Fleet
from simulator.fleet_ledger import drain, telemetry_ledger
from simulator.fleet_plan import setpoint_device, switch_device
from tests.e2e.harness import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.timeout(180)]
FINAL = {"executed", "rejected", "failed", "expired", "unknown"}


def issue(api: httpx.Client, base: str, device: str, key: str, body: dict[str, Any]) -> str:
    """``device`` is the registry id (the API path)."""
    reply = api.post(f"{base}/api/v1/devices/{device}/commands", json=body,
                     headers={"Idempotency-Key": key})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["command_id"])


def issue_round(fleet: Fleet, api: httpx.Client, name: str, replica_of: Any,
                issued: list[tuple[str, str]]) -> None:
    for k, gateway in enumerate(fleet.gateway_ids()):
        base = fleet.api_urls[replica_of(k)]
        if name == "setpoint":
            device, body = setpoint_device(gateway), {"action": "set_setpoint",
                                                     "params": {"value": 30 + k}, "ttl_s": 120}
        else:
            device, body = switch_device(gateway), {"action": name, "params": {}, "ttl_s": 120}
        device = device_id_for(gateway, device)
        issued.append((device, issue(api, base, device, f"{name}-{gateway}", body)))


def final_statuses(fleet: Fleet, api: httpx.Client,
                   issued: list[tuple[str, str]]) -> dict[str, str]:
    statuses: dict[str, str] = {}

    def all_final() -> bool:
        for device, command_id in issued:
            if statuses.get(command_id) in FINAL:
                continue
            reply = api.get(f"{fleet.api_urls[0]}/api/v1/devices/{device}/commands/{command_id}")
            statuses[command_id] = str(reply.json().get("status"))
        return all(statuses.get(c) in FINAL for _d, c in issued)

    wait_until(all_final, 60, "every command to reach a final status", every_s=0.5)
    return statuses


def writes_per_unit(fleet: Fleet, api: httpx.Client, gateway: str) -> Counter[int]:
    rows = api.get(f"{fleet.simulator_control_url(gateway)}/writes").json()["writes"]
    return Counter(int(w["unit"]) for w in rows if w["register"] == 0)


def test_two_replicas_one_killed_store_every_reading_once_and_run_every_command_once(
    tmp_path: Path, postgres_url: str
) -> None:
    fleet = Fleet(tmp_path / "fleet", gateways=10, meters_per_gateway=2, interval_s=1.0,
                  seed=11, db_url=postgres_url, cloud_replicas=2, agent_processes=2,
                  ack_timeout_s=3.0)
    issued: list[tuple[str, str]] = []
    try:
        fleet.start()
        wait_until(lambda: all(fleet.stored_seqs().values()), 60, "readings from every gateway")
        with httpx.Client(timeout=10, headers=fleet.api_headers) as api:
            issue_round(fleet, api, "switch_off", lambda k: k % 2, issued)
            issue_round(fleet, api, "setpoint", lambda k: (k + 1) % 2, issued)
            fleet.kill_cloud(1)  # mid-run: commands and telemetry in flight on both
            issue_round(fleet, api, "switch_on", lambda k: 0, issued)
            before = sum(len(s) for s in fleet.stored_seqs().values())
            wait_until(lambda: sum(len(s) for s in fleet.stored_seqs().values()) > before + 200,
                       30, "the surviving replica to keep storing")
            fleet.start_cloud(1)
            statuses = final_statuses(fleet, api, issued)
            drain(fleet, timeout_s=60)
            writes = {gw: writes_per_unit(fleet, api, gw) for gw in fleet.gateway_ids()}
    finally:
        fleet.stop()

    assert Counter(statuses.values()) == Counter({"executed": len(issued)}), statuses
    for gateway, per_unit in writes.items():
        # Two switch commands (unit 20) and one setpoint (unit 21) each executed once.
        assert per_unit == Counter({20: 2, 21: 1}), (gateway, per_unit)
    ledger = telemetry_ledger(fleet)
    for row in ledger:
        assert row.last_seq > 0 and row.stored == row.last_seq, row
        assert row.missing == [] and row.duplicated == 0 and row.dropped == 0, row
    print(f"ledger: {sum(r.stored for r in ledger)} readings from {len(ledger)} gateways "
          f"stored once each, 0 lost, 0 duplicated; {len(issued)} commands executed once")
