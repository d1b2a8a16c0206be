"""The real agent with ``[firmware] enabled``: a rollout reaches it over Mosquitto, it
downloads from the cloud's HTTP endpoint, installs into slot b, exits 75 for the restart; the
next agent process health-checks the new version (uplink, meters, tasks) and commits, and the
cloud's execution ends SUCCEEDED."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest

from cloud_sync.firmware.models import RateIn, RolloutIn, TargetIn
from edge_agent.config import AgentConfig
from edge_agent.firmware_wiring import EXIT_RESTART
from edge_agent.runtime import Agent
from edge_agent.scheduler import FakePoller
from firmware_update.slots_dir import DirectorySlots
from protocols.models import MeterHealth
from tests.fw_helpers import app_tree, make_signer, signed_bundle
from tests.fw_http import run_asgi
from tests.integration.conftest_cloud import BROKER_EXTRA, cloud_settings, register, started
from tests.integration.jobs_fixtures import firmware_of, jobs_store
from tests.services import free_port, running_mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
GW = "gw-fw"


async def wait_for(predicate: object, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_agent_updates_itself_through_a_rollout(tmp_path: Path) -> None:
    ks, root = make_signer()
    root_env = root.envelope()
    root_env.sign(ks[0])
    (tmp_path / "root.json").write_bytes(root_env.to_bytes())
    built = signed_bundle(tmp_path / "release", ks, "1.1.0")
    DirectorySlots.initialize(tmp_path / "app", app_tree(tmp_path / "factory", "1.0.0"),
                              "1.0.0")
    http_port = free_port()
    (tmp_path / "broker").mkdir()
    with running_mosquitto(tmp_path / "broker", BROKER_EXTRA) as broker:
        settings = cloud_settings(f"sqlite:///{tmp_path / 'cloud.sqlite'}", broker, tmp_path,
                                  public_url=f"http://127.0.0.1:{http_port}",
                                  firmware_trust_root=tmp_path / "root.json",
                                  rollout_tick_s=0.2)
        register(settings, GW)
        cloud = started(settings)
        config = AgentConfig(
            gateway_id=GW, data_dir=tmp_path / "data",
            mqtt={"url": broker.url, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
            firmware={"enabled": True, "app_root": tmp_path / "app",
                      "trust_root": tmp_path / "root.json", "health_deadline_s": 20,
                      "health_interval_s": 0.2})
        poller = functools.partial(FakePoller, health={"grid": MeterHealth(state="ok")})
        try:
            with run_asgi(cloud.app, http_port):
                firmware = firmware_of(cloud)
                bundle, _ = firmware.add_manifest(built.manifest_path.read_bytes())
                firmware.store_payload(bundle.bundle_id, [built.payload_path.read_bytes()])
                firmware.bundles.set_group("pilot", [GW], firmware.now_ms())
                first = Agent(config, poller=poller)
                await first.start()
                try:
                    rollout = firmware.create_rollout(RolloutIn(
                        bundle_id=bundle.bundle_id, target=TargetIn(group="pilot"),
                        rate=RateIn(base_per_minute=10), rollout_id="fw-pilot"))
                    await asyncio.wait_for(first.exit_requested.wait(), 30)
                    assert first.exit_code == EXIT_RESTART
                finally:
                    await first.stop()
                assert (tmp_path / "app" / "current" / "VERSION").read_text() == "1.1.0\n"
                second = Agent(config, poller=poller)  # systemd started the new slot
                await second.start()
                store = jobs_store(cloud)
                try:
                    await wait_for(lambda: store.execution(rollout, GW)["status"]
                                   == "SUCCEEDED", 30, "SUCCEEDED")
                finally:
                    await second.stop()
                details = store.execution(rollout, GW)["statusDetails"]
                assert details["installed"] == "1.1.0" and details["reason"] == "committed"
                await wait_for(lambda: firmware.rollouts.get(rollout)["status"] == "completed",
                               10, "rollout completed")
                # the completing tick records what the gateway reported it runs
                await wait_for(firmware.bundles.gateway_versions, 10, "versions")
                versions = firmware.bundles.gateway_versions()
                assert [(v["gateway_id"], v["version"]) for v in versions] == [(GW, "1.1.0")]
        finally:
            cloud.stop()
