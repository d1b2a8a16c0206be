"""Rollups against the simulator's exact ground truth, on SQLite and PostgreSQL.

One simulated Berlin home over the night clocks go back (2025-10-26, a 25-hour day), read
every minute like a gateway would. The grid meter's counters reset to zero mid-hour, the water
heater's meter is swapped for one that starts 200 kWh lower, and a 6-hour outage (covering the
DST change) is backfilled late, interleaved with live readings, after the job already rolled
the gap up. Hourly energy must equal the true energy (the float64 counters' increase) to 1 Wh.
"""
# ruff: noqa: F811  - pytest fixtures are imported from conftest_cloud and used as arguments

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cloud_sync.analytics import calendar
from cloud_sync.analytics.rollup import HOUR_MS, Flag
from cloud_sync.analytics_jobs import RollupJob
from cloud_sync.db import migrate
from cloud_sync.db.analytics_store import SqlRollupStore
from cloud_sync.db.engine import make_engine
from cloud_sync.db.schema_analytics import energy_daily, energy_hourly
from cloud_sync.db.store import SqlTelemetryStore, make_db_breaker
from protocols import Reading
from simulator.meters import GRID_UNIT, WATER_HEATER_UNIT
from tests.integration.conftest_analytics import GW, METERS, PLUG, RecordedHome, batches
from tests.integration.conftest_cloud import db_url  # noqa: F401 - fixture

pytestmark = pytest.mark.integration
BERLIN = ZoneInfo("Europe/Berlin")
START = 1_761_429_600_000  # 2025-10-25 22:00 UTC = 2025-10-26 00:00 CEST
END = START + 27 * HOUR_MS  # 2025-10-27 00:00 CET (the day has 25 hours) + 1 h
GAP = (START + 1 * HOUR_MS, START + 7 * HOUR_MS)  # 01:00 CEST .. 07:00 CET, DST inside
RESET_AT = START + 9 * HOUR_MS + 20 * 60_000  # grid counters to zero, mid-hour
SWAP_AT = START + 14 * HOUR_MS + 35 * 60_000  # water heater meter replaced


def hourly(engine: sa.Engine, meter: str, channel: str) -> dict[int, tuple[float, int]]:
    c = energy_hourly.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(c.bucket_ms, c.wh, c.flags).where(
            c.gateway_id == GW, c.meter_id == meter, c.channel == channel))
        return {int(b): (float(w), int(f)) for b, w, f in rows}


def record_home() -> tuple[RecordedHome, int, int]:
    home = RecordedHome(seed=11, start_ms=START)
    home.run_until(RESET_AT)
    home.read()
    home.bank.step_back_counters(GRID_UNIT)  # right after a reading: exact from zero
    home.advance()
    home.run_until(SWAP_AT)
    home.read()
    swap_from = home.bank.ts_ms
    home.bank.step_back_counters(WATER_HEATER_UNIT, 200_000.0)
    home.advance()
    home.run_until(END)
    home.read()
    return home, swap_from, swap_from + 3 * home.step_s * 1000  # the guard's 2 suspect reads


def ingest_with_outage(store: SqlTelemetryStore, job: RollupJob, home: RecordedHome) -> None:
    """Live hour by hour with the job after each; the outage's readings come back late."""
    held = [r for r in home.readings if GAP[0] <= r.ts < GAP[1]]
    live = [r for r in home.readings if not GAP[0] <= r.ts < GAP[1]]
    backfill_from = GAP[1] + 2 * HOUR_MS
    sent_backfill = 0
    for hour_start in range(START, END + HOUR_MS, HOUR_MS):
        chunk = [r for r in live if hour_start <= r.ts < hour_start + HOUR_MS]
        if hour_start >= backfill_from and sent_backfill < len(held):
            # the edge alternates backfill and live batches
            late, sent_backfill = held[sent_backfill:sent_backfill + 800], sent_backfill + 800
            mixed: list[Reading] = []
            for i in range(0, max(len(chunk), len(late)), 400):
                mixed += late[i:i + 400] + chunk[i:i + 400]
            chunk = mixed
        for batch in batches(chunk):
            store.ingest([batch], [])
        job.run_until_clean()
        if hour_start == GAP[1] + HOUR_MS:
            check_gap_before_backfill(store.engine, home)


def check_gap_before_backfill(engine: sa.Engine, home: RecordedHome) -> None:
    """Before the backfill the gap's hours are estimates, flagged, with the right total."""
    got = hourly(engine, "heatpump", "energy_import")
    truth = home.true_hours("heatpump", "energy_import", BERLIN)
    gap_hours = [h for h in got if GAP[0] <= h < GAP[1]]
    assert len(gap_hours) == 6
    assert all(got[h][1] & Flag.GAP for h in gap_hours)
    # the interval spans the last minute before the outage too: its hour takes a share
    around = [GAP[0] - HOUR_MS, *gap_hours]
    assert sum(got[h][0] for h in around) == pytest.approx(sum(truth[h] for h in around),
                                                           abs=1.0)


def test_hourly_energy_equals_true_energy_across_reset_swap_gap_and_dst(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        breaker = make_db_breaker(3, 1.0)
        store = SqlTelemetryStore(engine, breaker)
        job = RollupJob(SqlRollupStore(engine, breaker, lambda _gw: BERLIN), batch=5)
        home, swap_from, swap_to = record_home()
        ingest_with_outage(store, job, home)

        first_full, last_full = START, END - HOUR_MS  # hours wholly inside the recording
        lost = sum(wh for ts, wh in home.truth[("waterheater", "energy_import")].items()
                   if swap_from <= ts < swap_to)  # unknowable: between two meters' readings
        checked = 0
        for meter, channel in [*((m, c) for m, (_u, cs) in METERS.items() for c in cs),
                               (PLUG, "energy_import")]:
            got = hourly(engine, meter, channel)
            for hour, true_wh in home.true_hours(meter, channel, BERLIN).items():
                if not first_full <= hour < last_full:
                    continue
                expected = true_wh
                if meter == "waterheater" and hour <= swap_from < hour + HOUR_MS:
                    expected -= lost
                    assert got[hour][1] & Flag.REPLACED
                assert got[hour][0] == pytest.approx(expected, abs=1.0), (
                    meter, channel, calendar.iso_local(hour, BERLIN))
                assert not got[hour][1] & Flag.GAP, "the backfill replaced every estimate"
                checked += 1
        assert checked == 6 * 26
        reset_hour = calendar.hour_start(RESET_AT, BERLIN)
        assert hourly(engine, "grid", "energy_import")[reset_hour][1] & Flag.RESET
        check_dst_day(engine, home)
        assert job.store.pending() == 0  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def check_dst_day(engine: sa.Engine, home: RecordedHome) -> None:
    lo, hi = calendar.day_bounds(date(2025, 10, 26), BERLIN)
    got = hourly(engine, "pv", "energy_production")
    day_hours = sorted(h for h in got if lo <= h < hi)
    assert len(day_hours) == 25
    c = energy_daily.c
    with engine.connect() as conn:
        day_wh = conn.scalar(sa.select(c.wh).where(
            c.gateway_id == GW, c.meter_id == "heatpump", c.channel == "energy_import",
            c.day == "2025-10-26"))
    truth = home.true_hours("heatpump", "energy_import", BERLIN)
    assert day_wh == pytest.approx(sum(wh for h, wh in truth.items() if lo <= h < hi), abs=1.0)
