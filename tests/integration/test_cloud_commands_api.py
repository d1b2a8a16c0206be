"""Command API: idempotency, validation and backpressure against a real DB (SQLite and PG)."""
# ruff: noqa: F811  - pytest fixtures are imported from conftest modules and used as arguments

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cloud_sync.bootstrap import CloudService
from cloud_sync.cli import main
from tests.integration.conftest_cloud import broker, db_url  # noqa: F401 - fixtures
from tests.integration.conftest_cloud_commands import (  # noqa: F401 - fixtures
    DEVICE_ID,
    EVSE_ID,
    TestGateway,
    api,
    api_client,
    body,
    command_cloud,
    command_settings,
    key,
    register_devices,
    start_service,
)
from tests.services import Mosquitto

pytestmark = pytest.mark.integration
URL = f"/api/v1/devices/{DEVICE_ID}/commands"


async def test_same_key_and_body_returns_the_original_command(
        command_cloud: CloudService, api: httpx.AsyncClient) -> None:
    headers = key()
    first = await api.post(URL, json=body(ttl_s=30), headers=headers)
    again = await api.post(URL, json={"ttl_s": 30, "action": "switch_on", "params": {}},
                           headers=headers)
    assert first.status_code == 201
    assert again.status_code == 200
    # the replay is the same command, reported with its current status
    stable = ("command_id", "action", "params", "priority", "created_at", "expires_at")
    assert {k: again.json()[k] for k in stable} == {k: first.json()[k] for k in stable}
    assert first.headers["Location"] == f"{URL}/{first.json()['command_id']}"
    assert command_cloud.commands is not None
    assert command_cloud.commands.count_commands(DEVICE_ID) == 1


async def test_twenty_concurrent_retries_with_one_key_make_one_command(
        command_cloud: CloudService, api: httpx.AsyncClient) -> None:
    headers = key()
    responses = await asyncio.gather(*[api.post(URL, json=body("switch_off"), headers=headers)
                                       for _ in range(20)])
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert len({r.json()["command_id"] for r in responses}) == 1
    assert command_cloud.commands is not None
    assert command_cloud.commands.count_commands(DEVICE_ID) == 1


async def test_same_key_with_another_body_is_422_naming_the_key(api: httpx.AsyncClient) -> None:
    headers = key()
    assert (await api.post(URL, json=body("switch_on"), headers=headers)).status_code == 201
    response = await api.post(URL, json=body("switch_off"), headers=headers)
    assert response.status_code == 422
    assert "Idempotency-Key was already used for a different request body" in \
        response.json()["detail"]


async def test_get_reports_status_and_timestamps(api: httpx.AsyncClient) -> None:
    created = (await api.post(URL, json=body(), headers=key())).json()
    response = await api.get(f"{URL}/{created['command_id']}")
    assert response.status_code == 200
    status = response.json()
    assert status["status"] in ("pending", "sent")
    assert status["expires_at"] - status["created_at"] == 60_000
    assert (await api.get(f"{URL}/nosuchcommand")).status_code == 404


BAD_REQUESTS: list[tuple[str, dict[str, object], int, str]] = [
    ("/api/v1/devices/ghost/commands", body(), 404, "ghost"),
    (URL, body("set_current_limit", params={"amps": 6}), 422,
     "does not support set_current_limit (it supports: switch_on, switch_off, set_setpoint)"),
    (URL, body("set_setpoint"), 422, "params.value: required by set_setpoint"),
    (URL, body("set_setpoint", params={"value": "hot"}), 422, "params.value: must be a number"),
    (URL, body("switch_on", params={"speed": 2}), 422, "params.speed"),
    (URL, body("explode"), 422, "action: 'explode' is not one of"),
    (URL, body(ttl_s=0), 422, "ttl_s"),
    (URL, body(priority="urgent"), 422, "priority"),
    (f"/api/v1/devices/{EVSE_ID}/commands", body("set_current_limit", params={"amps": True}), 422,
     "params.amps: must be a number"),
]


async def test_bad_requests_get_one_clear_message(api: httpx.AsyncClient) -> None:
    # one service for every case: starting one per case would cost a second each
    for path, payload, status, words in BAD_REQUESTS:
        response = await api.post(path, json=payload, headers=key())
        assert (response.status_code, words in response.json()["detail"]) == (status, True), \
            (payload, response.json())


async def test_missing_idempotency_key_is_400_saying_what_to_send(
        api: httpx.AsyncClient) -> None:
    response = await api.post(URL, json=body())
    assert response.status_code == 400
    assert "Idempotency-Key header is required" in response.json()["detail"]


@pytest.fixture
async def paused_api(db_url: str, broker: Mosquitto, tmp_path: Path,
                     ) -> AsyncIterator[tuple[CloudService, httpx.AsyncClient]]:
    """Dispatcher off (it is started by the test), so commands stay open and queue up."""
    settings = command_settings(db_url, broker, tmp_path, command_queue_max=12,
                                dispatcher_enabled=False, command_redelivery_s=60)
    register_devices(settings)
    service = start_service(settings)
    try:
        async with api_client(service) as client:
            yield service, client
    finally:
        service.stop()


async def test_eleventh_command_in_a_minute_is_429_with_retry_after(
        paused_api: tuple[CloudService, httpx.AsyncClient]) -> None:
    _service, client = paused_api
    for _ in range(10):
        assert (await client.post(URL, json=body(), headers=key())).status_code == 201
    response = await client.post(URL, json=body(), headers=key())
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "10 commands per minute" in response.json()["detail"]
    safety = await client.post(URL, json=body("switch_off", priority="safety"), headers=key())
    assert safety.status_code == 201


async def test_full_queue_is_503_but_a_safety_switch_off_gets_through_and_goes_first(
        paused_api: tuple[CloudService, httpx.AsyncClient], broker: Mosquitto) -> None:
    service, client = paused_api
    for device, action, params in [(DEVICE_ID, "switch_on", {})] * 10 + \
            [(EVSE_ID, "set_current_limit", {"amps": 6})] * 2:
        response = await client.post(f"/api/v1/devices/{device}/commands", headers=key(),
                                     json=body(action, params=params))
        assert response.status_code == 201
    full = await client.post(f"/api/v1/devices/{EVSE_ID}/commands", headers=key(),
                             json=body("set_current_limit", params={"amps": 8}))
    assert full.status_code == 503
    assert 1 <= int(full.headers["Retry-After"]) <= 60
    assert "queue for this gateway is full" in full.json()["detail"]
    safety = await client.post(URL, json=body("switch_off", priority="safety"), headers=key())
    assert safety.status_code == 201
    gateway = TestGateway(broker)
    try:
        assert service.dispatcher is not None
        service.dispatcher.start()
        gateway.wait_for(safety.json()["command_id"])
        assert gateway.received[0].command_id == safety.json()["command_id"]
    finally:
        gateway.close()


def test_cli_add_device_validates_and_reports_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("HOMEWATT_DB_URL", raising=False)
    monkeypatch.setenv("HOMEWATT_DATA_DIR", str(tmp_path))
    assert main(["admin", "add-device", "gw-9", "d1", "--capabilities", "switch_on"]) == 2
    assert "gateway 'gw-9' is not registered" in capsys.readouterr().err
    assert main(["admin", "add-gateway", "gw-9"]) == 0
    assert main(["admin", "add-device", "gw-9", "d1", "--capabilities", "switch_on,fly"]) == 2
    assert "fly not an action" in capsys.readouterr().err
    assert main(["admin", "add-device", "gw-9", "d1", "--capabilities",
                 "switch_on,switch_off", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert {k: out[k] for k in ("device_id", "local_id", "gateway_id", "kind", "capabilities",
                                "created")} == {
        "device_id": "gw-9.d1", "local_id": "d1", "gateway_id": "gw-9", "kind": "actuator",
        "capabilities": ["switch_on", "switch_off"], "created": True}
