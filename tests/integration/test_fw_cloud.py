"""The cloud's firmware side on SQLite and PostgreSQL: uploads checked against the fleet's trust
root, payload served with Range/If-Range to job-token holders only, blocklist (refused and
canceling), pause/resume/cancel, percentage targets, two replicas ticking one rollout."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from cloud_sync.db import migrate
from cloud_sync.db.engine import make_engine
from cloud_sync.db.firmware_store import FirmwareConflict, SqlFirmwareStore
from cloud_sync.db.jobs_store import SqlJobsStore
from cloud_sync.db.rollout_store import SqlRolloutStore
from cloud_sync.db.store import SqlTelemetryStore, make_db_breaker
from cloud_sync.firmware.api import (
    FirmwareApiContext,
    register_firmware,
)
from cloud_sync.firmware.models import AbortIn, RateIn, RolloutIn, TargetIn
from cloud_sync.firmware.service import FirmwareService, PayloadRejected
from firmware_update import keys
from tests.auth_helpers import auth_context, headers, operator_key
from tests.fw_helpers import NOW, make_signer, signed_bundle
from tests.fw_http import run_asgi
from tests.integration.conftest_cloud import db_url

__all__ = ["db_url"]
pytestmark = pytest.mark.integration
T0 = int(NOW.timestamp() * 1000)
MIN = 60_000


class World:
    def __init__(self, url: str, tmp: Path) -> None:
        self.engine = make_engine(url)
        migrate.upgrade(self.engine)
        breaker = make_db_breaker(3, 1.0)
        telemetry = SqlTelemetryStore(self.engine, breaker)
        for i in range(20):
            telemetry.add_gateway(f"gw-{i:02d}")
        self.keys, self.root = make_signer()
        self.jobs = SqlJobsStore(self.engine, breaker)
        self.now = T0
        self.service = FirmwareService(
            SqlFirmwareStore(self.engine, breaker), SqlRolloutStore(self.engine, breaker,
                                                                    self.jobs),
            tmp / "payloads", "http://cloud.test", self.root, lambda: self.now)
        self.tmp = tmp

    def bundle(self, version: str = "1.1.0", **extra: object) -> str:
        built = signed_bundle(self.tmp / version, self.keys, version, **extra)
        bundle, created = self.service.add_manifest(built.manifest_path.read_bytes())
        assert created
        self.service.store_payload(bundle.bundle_id, [built.payload_path.read_bytes()])
        return bundle.bundle_id

    def rollout(self, bundle_id: str, **extra: object) -> str:
        target = extra.pop("target", TargetIn(percentage=100))
        return self.service.create_rollout(RolloutIn(bundle_id=bundle_id, target=target,
                                                     **extra))  # type: ignore[arg-type]


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    made = World(db_url, tmp_path)
    yield made
    made.engine.dispose()


def test_uploads_devices_would_refuse_are_refused(world: World) -> None:
    untrusted = signed_bundle(world.tmp / "evil", [keys.generate()], "9.0.0")
    with pytest.raises(PayloadRejected) as info:
        world.service.add_manifest(untrusted.manifest_path.read_bytes())
    assert info.value.reason == "untrusted_key"
    old = signed_bundle(world.tmp / "old", world.keys, "1.0.5",
                        created=NOW - timedelta(days=60), expires_in=timedelta(days=30))
    with pytest.raises(PayloadRejected, match="expired"):
        world.service.add_manifest(old.manifest_path.read_bytes())
    good = signed_bundle(world.tmp / "good", world.keys, "1.1.0")
    bundle, _ = world.service.add_manifest(good.manifest_path.read_bytes())
    payload = bytearray(good.payload_path.read_bytes())
    with pytest.raises(PayloadRejected) as info:
        world.service.store_payload(bundle.bundle_id, [bytes(payload[:-1])])
    assert info.value.reason == "payload_length"
    payload[10] ^= 1
    with pytest.raises(PayloadRejected) as info:
        world.service.store_payload(bundle.bundle_id, [bytes(payload)])
    assert info.value.reason == "payload_hash"
    with pytest.raises(FirmwareConflict, match="no payload yet"):
        world.rollout(bundle.bundle_id)
    other = signed_bundle(world.tmp / "other", world.keys, "1.1.0", health="x")
    with pytest.raises(FirmwareConflict, match="another payload"):
        world.service.add_manifest(other.manifest_path.read_bytes())


def test_payload_download_with_range_needs_the_rollouts_token(world: World) -> None:
    bundle_id = world.bundle()
    rollout = world.rollout(bundle_id)
    url = None
    for thing in ("gw-00", "gw-01"):
        found = world.jobs.start_next(thing, _start(), world.now)
        if found is not None:
            url = found["jobDocument"]["url"]
            break
    assert url is not None and rollout
    app = FastAPI()
    app.state.auth = auth_context(world.engine)
    register_firmware(app, FirmwareApiContext(world.service))
    operator = headers(operator_key(world.engine))
    with run_asgi(app) as port, httpx.Client(timeout=10) as client:
        local = url.replace("http://cloud.test", f"http://127.0.0.1:{port}")
        full = client.get(local)
        assert full.status_code == 200
        etag = full.headers["etag"]
        assert etag.strip('"') == world.service.require_bundle(bundle_id).sha256
        part = client.get(local, headers={"Range": "bytes=100-", "If-Range": etag})
        assert part.status_code == 206 and part.content == full.content[100:]
        stale = client.get(local, headers={"Range": "bytes=100-", "If-Range": '"old"'})
        assert stale.status_code == 200 and stale.content == full.content
        wrong = client.get(local.split("?")[0] + "?token=guess")
        missing = client.get(local.replace(bundle_id, "nope-1.0.0"))
        assert wrong.status_code == missing.status_code == 404
        assert wrong.json() == {"detail": f"bundle {bundle_id!r} payload not found"}
        assert client.post(f"http://127.0.0.1:{port}/api/v1/firmware/rollouts",
                           json={}).status_code == 401
        # an operator may fetch without a token; bad credentials are a 401 even here
        bare = local.split("?")[0]
        assert client.get(bare, headers=operator).content == full.content
        assert client.get(bare, headers=headers("hw_bad_key")).status_code == 401


def _start() -> object:
    from protocols.jobs import StartNextRequest

    return StartNextRequest()


def test_blocklist_refuses_new_rollouts_and_cancels_live_ones(world: World) -> None:
    bundle_id = world.bundle()
    rollout = world.rollout(bundle_id, rate=RateIn(base_per_minute=5))
    assert world.service.rollouts.get(rollout)["notified"] == 5
    canceled = world.service.block("1.1.0", "bricks rpi3 relays")
    assert canceled == [rollout]
    state = world.service.rollouts.get(rollout)
    assert state["status"] == "canceled" and "blocklisted" in state["reason"]
    assert state["executions"] == {"CANCELED": 5}
    with pytest.raises(FirmwareConflict, match="blocklisted"):
        world.rollout(bundle_id)
    with pytest.raises(FirmwareConflict, match="blocklisted"):
        world.bundle("1.1.0+rebuild")  # the same version, rebuilt, is still refused
    newer = world.bundle("1.2.0")
    later = world.rollout(newer, rate=RateIn(base_per_minute=1))
    found = world.jobs.start_next((world.service.rollouts._next_targets(later, 0) and "x")
                                  or _first_target(world, later), _start(), world.now)
    assert found is not None and found["jobDocument"]["blocklist"] == ["1.1.0"]


def _first_target(world: World, rollout: str) -> str:
    import sqlalchemy as sa

    from cloud_sync.db.schema_firmware import rollout_targets
    with world.engine.connect() as conn:
        return str(conn.scalar(sa.select(rollout_targets.c.gateway_id).where(
            rollout_targets.c.rollout_id == rollout, rollout_targets.c.position == 0)))


def test_pause_resume_cancel_and_the_rate_over_time(world: World) -> None:
    rollout = world.rollout(world.bundle(), rate=RateIn(base_per_minute=4,
                                                        increment_factor=2,
                                                        increase_after_notified=4,
                                                        maximum_per_minute=8))
    rollouts = world.service.rollouts
    assert rollouts.get(rollout)["notified"] == 4
    world.now += 30_000
    world.service.tick()
    assert rollouts.get(rollout)["notified"] == 8  # rate 8/min after 4 notified: 4 in 30 s
    rollouts.set_status(rollout, "paused", world.now, allowed_from=("active",))
    world.now += 10 * MIN
    world.service.tick()
    assert rollouts.get(rollout)["notified"] == 8
    rollouts.set_status(rollout, "active", world.now, allowed_from=("paused",))
    world.service.tick()
    assert rollouts.get(rollout)["notified"] == 16  # a full minute's worth at 8/min
    rollouts.set_status(rollout, "canceled", world.now, allowed_from=("active", "paused"))
    world.now += 10 * MIN
    world.service.tick()
    state = rollouts.get(rollout)
    assert state["notified"] == 16 and state["executions"] == {"CANCELED": 16}


def test_percentage_target_and_two_replicas_ticking(world: World, db_url: str) -> None:
    rollout = world.rollout(world.bundle(), target=TargetIn(percentage=50),
                            rate=RateIn(base_per_minute=3),
                            abort=[AbortIn(threshold_percentage=50, min_executed=5)])
    assert world.service.rollouts.get(rollout)["targets"] == 10
    other_engine = make_engine(db_url)
    try:
        twin = SqlRolloutStore(other_engine, make_db_breaker(3, 1.0),
                               SqlJobsStore(other_engine, make_db_breaker(3, 1.0)))
        for minute in range(1, 6):
            world.now = T0 + minute * MIN
            twin.tick(world.now)
            world.service.tick()  # the same minute on the other replica: no extra budget
        assert world.service.rollouts.get(rollout)["notified"] == 10
        assert sum(world.jobs.execution_counts(rollout).values()) == 10
    finally:
        other_engine.dispose()
