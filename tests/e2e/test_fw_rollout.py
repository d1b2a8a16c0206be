"""A staged rollout to 50 simulated gateways where 30 % fail their health check aborts at its
threshold and leaves the rest on the old version.

Real Mosquitto, the real cloud (an operator's REST calls: manifest, payload, group, rollout;
the Jobs service; the bundle download over HTTP), and
per gateway the real agent-side Jobs client and updater with directory slots. The rollout's
time base is driven by the test (a tick per simulated minute); nothing sleeps for it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from cloud_sync.bootstrap import CloudService
from cloud_sync.firmware.service import FirmwareService
from firmware_update.rollout import AbortCriterion, abort_verdict
from tests.auth_helpers import headers, operator_key
from tests.e2e.fw_fleet import SimGateway
from tests.fw_helpers import make_signer, signed_bundle
from tests.fw_http import run_asgi
from tests.integration.conftest_cloud import BROKER_EXTRA, cloud_settings, register, started
from tests.integration.jobs_fixtures import firmware_of, jobs_store
from tests.services import free_port, running_mosquitto

pytestmark = pytest.mark.e2e
GATEWAYS = 50
MINUTE = 60_000
PENDING = ("QUEUED", "IN_PROGRESS")


async def settle(service: CloudService, rollout_id: str, timeout: float = 60.0) -> dict[str, int]:
    """Wait until no execution of the rollout is pending (or only queued after an abort)."""
    store = jobs_store(service)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        counts = await asyncio.to_thread(store.execution_counts, rollout_id)
        if not any(counts.get(s, 0) for s in PENDING):
            return counts
        if loop.time() > deadline:
            raise AssertionError(f"executions still pending: {counts}")
        await asyncio.sleep(0.05)


async def test_rollout_to_50_gateways_aborts_at_threshold_and_spares_the_rest(
        tmp_path: Path) -> None:
    ks, root = make_signer()
    root_env = root.envelope()
    root_env.sign(ks[0])
    (tmp_path / "root.json").write_bytes(root_env.to_bytes())
    built = signed_bundle(tmp_path / "release", ks, "1.1.0")
    ids = [f"gw-{i:02d}" for i in range(GATEWAYS)]
    unhealthy = {g for i, g in enumerate(ids) if i % 10 in (1, 4, 7)}  # 30 %
    (tmp_path / "broker").mkdir()
    http_port = free_port()
    with running_mosquitto(tmp_path / "broker", BROKER_EXTRA) as broker:
        settings = cloud_settings(f"sqlite:///{tmp_path / 'cloud.sqlite'}", broker, tmp_path,
                                  public_url=f"http://127.0.0.1:{http_port}",
                                  firmware_trust_root=tmp_path / "root.json",
                                  rollout_tick_s=3600.0)  # the test drives the time base
        register(settings, *ids)
        cloud = started(settings)
        firmware = firmware_of(cloud)
        gateways: list[SimGateway] = []
        try:
            with run_asgi(cloud.app, http_port), httpx.Client(
                    base_url=f"http://127.0.0.1:{http_port}/api/v1/firmware",
                    headers=headers(operator_key(cloud.engine)), timeout=10) as api:
                # the operator's REST flow: manifest, payload, group, rollout
                created = api.post("/bundles", content=built.manifest_path.read_bytes())
                assert created.status_code == 201, created.text
                bundle_id = created.json()["bundle_id"]
                ready = api.put(f"/bundles/{bundle_id}/payload",
                                content=built.payload_path.read_bytes())
                assert ready.json()["status"] == "ready", ready.text
                assert api.put("/groups/fleet-a", json={"gateways": ids}).status_code == 200
                now = firmware.now_ms()
                gateways = [SimGateway(g, tmp_path / "gw" / g, broker.url, root,
                                       healthy=g not in unhealthy, now_ms=now) for g in ids]
                await asyncio.gather(*(gw.start() for gw in gateways))
                response = api.post("/rollouts", json={
                    "bundle_id": bundle_id, "target": {"group": "fleet-a"},
                    "rate": {"base_per_minute": 5, "increment_factor": 1.5,
                             "increase_after_succeeded": 5, "maximum_per_minute": 10},
                    "abort": [{"failure_type": "FAILED", "threshold_percentage": 20,
                               "min_executed": 10}],
                    "rollout_id": "fw-1-1-0"})
                assert response.status_code == 201, response.text
                rollout_id = response.json()["rollout_id"]
                history = await _drive(cloud, firmware, rollout_id, now)
                counts = await settle(cloud, rollout_id)
                rollout = api.get(f"/rollouts/{rollout_id}").json()
        finally:
            await asyncio.gather(*(gw.stop() for gw in gateways))
            cloud.stop()

    # it aborted, at the first tick whose counts crossed the threshold
    assert rollout["status"] == "aborted", rollout
    criterion = [AbortCriterion("FAILED", 20, 10)]
    tripped = [i for i, c in enumerate(history) if abort_verdict(criterion, c)]
    assert tripped and tripped[0] == len(history) - 1, history
    assert "of" in rollout["reason"] and "FAILED" in rollout["reason"]
    # the rest stays on the old version: only gateways whose execution SUCCEEDED run 1.1.0
    store = jobs_store(cloud)
    by_status: dict[str, list[str]] = {}
    for gw in gateways:
        execution = store.execution(rollout_id, gw.id)
        status = execution["status"] if execution else "NEVER_NOTIFIED"
        by_status.setdefault(status, []).append(gw.id)
        expected = "1.1.0" if status == "SUCCEEDED" else "1.0.0"
        assert gw.running_version() == expected, (gw.id, status)
        assert gw.phase() == "idle", gw.id
        assert not gw.failures, (gw.id, gw.failures)
    assert not set(by_status.get("SUCCEEDED", [])) & unhealthy
    assert set(by_status.get("FAILED", [])) <= unhealthy
    never = by_status.get("NEVER_NOTIFIED", [])
    assert len(never) == GATEWAYS - rollout["notified"] > 0, by_status
    assert len(never) + len(by_status.get("CANCELED", [])) >= 10, by_status
    assert counts.get("FAILED", 0) >= 2
    print({k: len(v) for k, v in by_status.items()}, rollout["reason"])


async def _drive(cloud: CloudService, firmware: FirmwareService, rollout_id: str,
                 now: int) -> list[dict[str, int]]:
    """One tick per simulated minute until the rollout stops; counts seen before each."""
    history: list[dict[str, int]] = []
    for minute in range(30):
        counts = await settle(cloud, rollout_id)
        history.append(counts)
        await asyncio.to_thread(firmware.tick, now + minute * MINUTE)
        if firmware.rollouts.get(rollout_id)["status"] != "active":
            return history
    raise AssertionError("rollout never stopped")
