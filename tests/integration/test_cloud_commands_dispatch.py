"""Outbox -> dispatcher -> real Mosquitto -> test gateway -> CommandAck -> status (SQLite, PG)."""
# ruff: noqa: F811  - pytest fixtures are imported from conftest modules and used as arguments

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud_sync.bootstrap import CloudService
from cloud_sync.command_rules import EXPIRED_UNACKED_REASON
from protocols import encode, topics
from protocols.commands import CommandAck, Outcome
from tests.integration.conftest_cloud import GW, broker, db_url, wait_until  # noqa: F401
from tests.integration.conftest_cloud_commands import (  # noqa: F401 - fixtures
    DEVICE,
    DEVICE_ID,
    TestGateway,
    api,
    api_client,
    body,
    command_cloud,
    command_settings,
    gateway,
    key,
    register_devices,
    start_service,
)
from tests.services import Mosquitto

pytestmark = pytest.mark.integration
URL = f"/api/v1/devices/{DEVICE_ID}/commands"


async def status_of(api: httpx.AsyncClient, command_id: str) -> dict[str, Any]:
    result: dict[str, Any] = (await api.get(f"{URL}/{command_id}")).json()
    return result


async def wait_status(api: httpx.AsyncClient, command_id: str, wanted: str,
                      timeout: float = 20.0) -> dict[str, Any]:
    async def poll() -> dict[str, Any]:
        while (current := await status_of(api, command_id))["status"] != wanted:
            await asyncio.sleep(0.05)
        return current
    return await asyncio.wait_for(poll(), timeout)


async def test_command_is_published_then_executed_ack_sets_result_and_timestamps(
        api: httpx.AsyncClient, gateway: TestGateway) -> None:
    created = (await api.post(URL, json=body("set_setpoint", params={"value": 21.5}),
                              headers=key())).json()
    command = gateway.wait_for(created["command_id"])
    assert command.params == {"value": 21.5}
    assert command.expires_at == created["expires_at"]
    sent = await wait_status(api, created["command_id"], "sent")
    assert sent["sent_at"] >= sent["created_at"]
    gateway.ack(command, Outcome.EXECUTED, setpoint=21.5)
    done = await wait_status(api, created["command_id"], "executed")
    assert done["result"] == {"setpoint": 21.5}
    assert done["delivered_at"] == done["completed_at"] >= done["sent_at"]


async def test_duplicate_ack_never_changes_the_recorded_outcome(
        command_cloud: CloudService, api: httpx.AsyncClient, gateway: TestGateway) -> None:
    created = (await api.post(URL, json=body(), headers=key())).json()
    command = gateway.wait_for(created["command_id"])
    gateway.ack(command, Outcome.REJECTED)
    first = await wait_status(api, created["command_id"], "rejected")
    gateway.ack(command, Outcome.EXECUTED, duplicate=True, state="on")
    acks = command_cloud.acks
    assert acks is not None
    wait_until(lambda: acks.stats.duplicates >= 1, 10, "duplicate ack handled")
    assert await status_of(api, created["command_id"]) == first


async def test_unacked_command_is_republished_until_it_expires(
        command_cloud: CloudService, api: httpx.AsyncClient, gateway: TestGateway) -> None:
    created = (await api.post(URL, json=body(ttl_s=2), headers=key())).json()
    gateway.wait_for(created["command_id"], times=3, timeout=10)  # redelivery every 0.5 s
    expired = await wait_status(api, created["command_id"], "expired", timeout=10)
    assert expired["reason"] == EXPIRED_UNACKED_REASON
    assert expired["attempts"] >= 3
    count = gateway.counts()[created["command_id"]]
    dispatcher = command_cloud.dispatcher
    assert dispatcher is not None
    rounds = dispatcher.stats.rounds
    wait_until(lambda: dispatcher.stats.rounds >= rounds + 2, 5, "two rounds")
    assert gateway.counts()[created["command_id"]] == count  # nothing published after expiry


async def test_late_executed_ack_after_our_expiry_is_recorded(
        api: httpx.AsyncClient, gateway: TestGateway) -> None:
    created = (await api.post(URL, json=body(ttl_s=1), headers=key())).json()
    command = gateway.wait_for(created["command_id"])
    await wait_status(api, created["command_id"], "expired", timeout=10)
    gateway.ack(command, Outcome.EXECUTED, state="on")
    late = await wait_status(api, created["command_id"], "executed")
    assert late["result"] == {"state": "on"}


async def test_bad_and_foreign_acks_are_dead_lettered(
        command_cloud: CloudService, api: httpx.AsyncClient, gateway: TestGateway) -> None:
    gateway.publish(topics.commands_ack(GW), b"{not json")
    stranger = CommandAck(command_id="nosuchcommand", gateway_id=GW, device_id=DEVICE,
                          outcome=Outcome.EXECUTED, ts=1_800_000_000_000)
    gateway.publish(topics.commands_ack(GW), encode(stranger))
    gateway.publish(topics.commands_ack("gw-2"), encode(stranger))
    acks = command_cloud.acks
    assert acks is not None
    wait_until(lambda: acks.stats.dead_lettered >= 3, 10, "dead letters")
    reasons = [d["reason"] for d in (await api.get("/api/v1/dead-letters")).json()["items"]]
    assert any(r.startswith("invalid command ack") for r in reasons)
    assert any("'nosuchcommand' is not a command" in r for r in reasons)
    assert any("arrived on the topic of 'gw-2'" in r for r in reasons)


async def test_commands_for_an_offline_gateway_arrive_when_it_connects(
        db_url: str, broker: Mosquitto, tmp_path: Path) -> None:
    settings = command_settings(db_url, broker, tmp_path)
    register_devices(settings)
    service = start_service(settings)
    try:
        async with api_client(service) as client:
            created = (await client.post(URL, json=body(), headers=key())).json()
            await wait_status(client, created["command_id"], "sent")  # PUBACK, nobody there
            gateway = TestGateway(broker)  # comes online later: a re-publish reaches it
            try:
                command = gateway.wait_for(created["command_id"], timeout=10)
                gateway.ack(command)
                await wait_status(client, created["command_id"], "executed")
            finally:
                gateway.close()
    finally:
        service.stop()
