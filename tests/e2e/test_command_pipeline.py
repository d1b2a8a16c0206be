"""App -> REST -> outbox -> Mosquitto -> agent -> Modbus register -> ack -> status, for real.

Actuations are counted at the simulated device itself (every accepted register write is
logged there), so "executed once" means one write on the wire, not a status flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Stack, wait_until
from tests.services import Mosquitto

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
FINAL = {"executed", "rejected", "failed", "expired", "unknown"}
ACTUATORS = """
[[actuators]]
id = "waterheater-switch"
kind = "modbus_switch"
bus = "sim"
unit = 20
address = 0
[[actuators]]
id = "heatpump-setpoint"
kind = "modbus_setpoint"
bus = "sim"
unit = 21
address = 0
scale = 10
[actuators.interlocks]
setpoint_min = 25
setpoint_max = 55
"""


def post(stack: Stack, device: str, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    reply = stack.api.post(f"/api/v1/devices/{stack.device_id(device)}/commands", json=body,
                           headers={"Idempotency-Key": key})
    return reply.status_code, reply.json()


def final_status(stack: Stack, device: str, command_id: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def done() -> bool:
        path = f"/api/v1/devices/{stack.device_id(device)}/commands/{command_id}"
        seen.update(stack.api.get(path).json())
        return seen.get("status") in FINAL

    wait_until(done, 30, f"command {command_id} to reach a final status", every_s=0.05)
    return seen


def writes(stack: Stack, unit: int, register: int) -> list[int]:
    rows = stack.control.get("/writes").json()["writes"]
    return [w["value"] for w in rows if w["unit"] == unit and w["register"] == register]


def test_commands_take_effect_once_and_report_a_final_status(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    stack = Stack(tmp_path, mosquitto.url, gateway="gw-cmd", interval_s=2, extra_config=ACTUATORS)
    try:
        stack.start(devices={"waterheater-switch": "switch_on,switch_off",
                             "heatpump-setpoint": "set_setpoint"})
        off = {"action": "switch_off", "params": {}, "ttl_s": 60}
        code, created = post(stack, "waterheater-switch", "k-off-1", off)
        assert code == 201, created
        status = final_status(stack, "waterheater-switch", created["command_id"])
        assert status["status"] == "executed", status
        assert writes(stack, 20, 0) == [0]

        # The app times out and retries: same key, same body -> the same command, no new write.
        code, again = post(stack, "waterheater-switch", "k-off-1", off)
        assert (code, again["command_id"]) == (200, created["command_id"])
        code, clash = post(stack, "waterheater-switch", "k-off-1", {**off, "action": "switch_on"})
        assert code == 422 and "Idempotency-Key" in str(clash), clash

        code, too_hot = post(stack, "heatpump-setpoint", "k-sp-70",
                             {"action": "set_setpoint", "params": {"value": 70}})
        status = final_status(stack, "heatpump-setpoint", too_hot["command_id"])
        assert status["status"] == "rejected" and "setpoint" in status["reason"], status

        code, warm = post(stack, "heatpump-setpoint", "k-sp-50",
                          {"action": "set_setpoint", "params": {"value": 50}})
        assert final_status(stack, "heatpump-setpoint", warm["command_id"])["status"] == "executed"
        assert writes(stack, 21, 0) == [500]

        # A command whose gateway is offline past its ttl expires and never runs.
        assert stack.agent.terminate() == 0
        code, late = post(stack, "waterheater-switch", "k-on-late",
                          {"action": "switch_on", "params": {}, "ttl_s": 2})
        assert code == 201
        assert final_status(stack, "waterheater-switch", late["command_id"])["status"] == "expired"
        stack.agent.start()
        # The broker queued the expired command for the agent's persistent session, so the agent
        # meets it before this later one: by the time this executes, that one was refused.
        code, probe = post(stack, "waterheater-switch", "k-off-2", off)
        status = final_status(stack, "waterheater-switch", probe["command_id"])
        assert status["status"] == "executed", status
        assert writes(stack, 20, 0) == [0, 0], "the expired switch_on must never be written"
    finally:
        stack.stop()
