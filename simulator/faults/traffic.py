"""Command traffic for chaos scenarios: issued through the REST API the way an app would.

Every command has its own ``Idempotency-Key``; a POST that fails (cloud down, DB down, 5xx,
429, timeout) is retried with the same key and body, so a POST the cloud did commit but could
not answer yields the same command, never a second one. Each command writes a register value
the ledger can attribute: switch on/off write 1/0, and each setpoint is distinct per gateway.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from cloud_sync.registry_rules import device_id_for
from simulator.faults.ledger import FINAL_STATUSES, IssuedCommand
from simulator.fleet_plan import setpoint_device, switch_device

log = logging.getLogger(__name__)

POST_DEADLINE_S = 60.0
RETRY_S = 0.5


@dataclass
class PlannedCommand:
    key: str
    gateway_id: str
    device_id: str  # the gateway's own id for the device (as the ledger attributes writes)
    body: dict[str, Any]
    expected_write: int
    command_id: str | None = None
    status: str | None = None


def plan_commands(gateways: Sequence[str], per_gateway: int, ttl_s: int = 120,
                  run_id: str = "chaos") -> list[PlannedCommand]:
    """Per gateway: switch off, setpoint, switch on, setpoint, ... (setpoints 30.0, 30.5, ...
    degC, so each setpoint command has its own register value)."""
    planned: list[PlannedCommand] = []
    for k in range(per_gateway):
        for gw in gateways:
            body: dict[str, Any]
            if k % 2 == 0:
                on = (k // 2) % 2
                body = {"action": "switch_on" if on else "switch_off", "params": {},
                        "ttl_s": ttl_s}
                planned.append(PlannedCommand(f"{run_id}-{gw}-{k}", gw, switch_device(gw), body,
                                              on))
            else:
                value = 30.0 + 0.5 * (k // 2)
                body = {"action": "set_setpoint", "params": {"value": value}, "ttl_s": ttl_s}
                planned.append(PlannedCommand(f"{run_id}-{gw}-{k}", gw, setpoint_device(gw), body,
                                              round(value * 10)))
    return planned


def _api_id(command: PlannedCommand) -> str:
    """The registry's id of the command's device: the API path."""
    return device_id_for(command.gateway_id, command.device_id)


class CommandDriver:
    """Issues planned commands spread over ``spread_s`` on a thread; polls their statuses."""

    def __init__(self, api_urls: Sequence[str], planned: list[PlannedCommand],
                 spread_s: float, headers: dict[str, str]) -> None:
        """``headers`` authenticate the driver (an operator API key)."""
        self.api_urls, self.planned, self.spread_s = list(api_urls), planned, spread_s
        self.post_failures: list[str] = []
        self._thread: threading.Thread | None = None
        self._client = httpx.Client(timeout=10, headers=headers)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._issue_all, daemon=True, name="commands")
        self._thread.start()

    def join(self, timeout_s: float = POST_DEADLINE_S + 30) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def close(self) -> None:
        self._client.close()

    def _issue_all(self) -> None:
        start = time.monotonic()
        gap = self.spread_s / max(1, len(self.planned))
        for i, command in enumerate(self.planned):
            time.sleep(max(0.0, start + i * gap - time.monotonic()))
            self._post(command, i)

    def _post(self, command: PlannedCommand, i: int) -> None:
        deadline = time.monotonic() + POST_DEADLINE_S
        last = ""
        while time.monotonic() < deadline:
            url = self.api_urls[i % len(self.api_urls)]
            try:
                reply = self._client.post(f"{url}/api/v1/devices/{_api_id(command)}/commands",
                                          json=command.body,
                                          headers={"Idempotency-Key": command.key})
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if reply.status_code in (200, 201):
                    command.command_id = str(reply.json()["command_id"])
                    return
                last = f"HTTP {reply.status_code}: {reply.text[:200]}"
                if reply.status_code < 500 and reply.status_code != 429:
                    break  # a refusal, not an outage: retrying cannot help
            i += 1  # another replica, if there is one
            time.sleep(RETRY_S)
        self.post_failures.append(f"{command.key}: {last}")
        log.warning("command %s was never accepted: %s", command.key, last)

    def refresh(self) -> bool:
        """Fetch the status of every issued, not yet final command; True when all are final."""
        all_final = True
        for command in self.planned:
            if command.command_id is None:
                continue
            if command.status not in FINAL_STATUSES:
                command.status = self._status(command)
            all_final = all_final and command.status in FINAL_STATUSES
        return all_final

    def _status(self, command: PlannedCommand) -> str | None:
        for url in self.api_urls:
            try:
                reply = self._client.get(
                    f"{url}/api/v1/devices/{_api_id(command)}/commands/{command.command_id}")
            except httpx.HTTPError:
                continue
            if reply.status_code == 200:
                return str(reply.json()["status"])
        return command.status

    def done_issuing(self) -> bool:
        return self._thread is None or not self._thread.is_alive()

    def issued(self) -> list[IssuedCommand]:
        return [IssuedCommand(c.command_id, c.device_id, c.status, c.expected_write)
                for c in self.planned if c.command_id is not None]
