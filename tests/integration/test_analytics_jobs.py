"""Rollup jobs on several replicas: concurrent ingests and jobs agree with the truth, never
deadlock, and a dead job's lease is taken over."""
# ruff: noqa: F811  - pytest fixtures are imported from conftest_cloud and used as arguments

from __future__ import annotations

import random
import threading
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cloud_sync.analytics.rollup import HOUR_MS
from cloud_sync.analytics_jobs import RollupJob
from cloud_sync.db import migrate
from cloud_sync.db.analytics_store import SqlRollupStore
from cloud_sync.db.engine import make_engine
from cloud_sync.db.schema_analytics import energy_hourly
from cloud_sync.db.store import SqlTelemetryStore, make_db_breaker
from cloud_sync.errors import StorageUnavailable
from tests.integration.conftest_analytics import GW, METERS, RecordedHome, batches
from tests.integration.conftest_cloud import db_url  # noqa: F401 - fixture

pytestmark = pytest.mark.integration
UTC = ZoneInfo("UTC")
START = 1_761_000_000_000 - 1_761_000_000_000 % HOUR_MS


def _hourly(engine: sa.Engine) -> dict[tuple[str, str, int], float]:
    c = energy_hourly.c
    with engine.connect() as conn:
        return {(m, ch, int(b)): float(w) for m, ch, b, w in conn.execute(
            sa.select(c.meter_id, c.channel, c.bucket_ms, c.wh).where(c.gateway_id == GW))}


def test_two_ingesters_and_two_jobs_at_once_give_the_true_hours(db_url: str) -> None:  # noqa: C901
    engine = make_engine(db_url, statement_timeout_s=20)
    try:
        migrate.upgrade(engine)
        breaker = make_db_breaker(1000, 1.0)
        home = RecordedHome(seed=5, start_ms=START)
        home.run_until(START + 6 * HOUR_MS)
        home.read()
        chunks = batches(home.readings, size=200)
        random.Random(1).shuffle(chunks)  # backfill and live mixed in any order
        store = SqlTelemetryStore(engine, breaker)
        jobs = [RollupJob(SqlRollupStore(engine, breaker, lambda _gw: UTC), batch=3)
                for _ in range(2)]
        errors: list[BaseException] = []
        ingesting = threading.Event()
        ingesting.set()

        def ingest(part: int) -> None:
            try:
                for batch in chunks[part::2]:
                    store.ingest([batch], [])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def work(job: RollupJob) -> None:
            try:
                while ingesting.is_set():
                    job.run_until_clean(max_rounds=20)
            except (StorageUnavailable, AssertionError) as exc:  # a deadlock would show here
                errors.append(exc)

        threads = [threading.Thread(target=ingest, args=(p,)) for p in (0, 1)]
        workers = [threading.Thread(target=work, args=(j,)) for j in jobs]
        for t in threads + workers:
            t.start()
        for t in threads:
            t.join(120)
        ingesting.clear()
        for t in workers:
            t.join(120)
        assert not errors, errors
        jobs[0].run_until_clean()
        assert sum(j.stats.series for j in jobs) > 0

        got = _hourly(engine)
        for meter, (_unit, channels) in METERS.items():
            for channel in channels:
                for hour, wh in home.true_hours(meter, channel, UTC).items():
                    assert got[(meter, channel, hour)] == pytest.approx(wh, abs=1.0)
    finally:
        engine.dispose()


def test_a_dead_jobs_lease_is_taken_over_after_it_expires(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        breaker = make_db_breaker(3, 1.0)
        home = RecordedHome(seed=3, start_ms=START)
        home.run_until(START + HOUR_MS)
        home.read()
        SqlTelemetryStore(engine, breaker).ingest(batches(home.readings), [])
        dead = SqlRollupStore(engine, breaker, lambda _gw: UTC)
        alive = SqlRollupStore(engine, breaker, lambda _gw: UTC)
        now = 1_800_000_000_000
        taken = dead.claim(now, 3, lease_ms=60_000)
        rest = alive.claim(now, 100, lease_ms=60_000)  # a second replica gets the others
        assert len(taken) == 3 and len(rest) >= 3 and not set(taken) & set(rest)
        for key in rest:
            assert alive.recompute(key).cleared
        assert alive.claim(now + 59_000, 100, lease_ms=60_000) == []  # still held
        again = alive.claim(now + 60_000, 100, lease_ms=60_000)
        assert sorted(again) == sorted(taken)
        for key in again:
            assert alive.recompute(key).cleared
        assert alive.pending() == 0
        got = _hourly(engine)
        assert got[("grid", "energy_import", START)] == pytest.approx(
            home.true_hours("grid", "energy_import", UTC)[START], abs=1.0)
    finally:
        engine.dispose()


def test_a_home_zone_change_rebuilds_its_hours_and_days(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        breaker = make_db_breaker(3, 1.0)
        home = RecordedHome(seed=4, start_ms=START)
        home.run_until(START + 3 * HOUR_MS)
        home.read()
        SqlTelemetryStore(engine, breaker).ingest(batches(home.readings), [])
        zones = {GW: "UTC"}
        store = SqlRollupStore(engine, breaker, lambda gw: ZoneInfo(zones[gw]))
        job = RollupJob(store, zones=lambda: dict(zones))
        job.run_until_clean()
        c = energy_hourly.c
        before = _hourly(engine)
        zones[GW] = "Asia/Kolkata"  # +05:30: local hours start at half past UTC hours
        assert store.sync_zones(zones) == [GW]
        assert store.sync_zones(zones) == []  # recorded: no second rebuild
        job.run_until_clean()
        after = _hourly(engine)
        assert {b % HOUR_MS for (_m, _c, b) in after} == {HOUR_MS // 2}
        for meter, channel in (("grid", "energy_import"), ("pv", "energy_production")):
            assert sum(w for (m, ch, _b), w in after.items() if (m, ch) == (meter, channel)) == \
                pytest.approx(sum(w for (m, ch, _b), w in before.items()
                                  if (m, ch) == (meter, channel)), abs=0.01)
        with engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(energy_hourly).where(
                c.gateway_id == GW)) == len(after)
    finally:
        engine.dispose()
