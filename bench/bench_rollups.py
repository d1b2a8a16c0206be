"""Rollups at fleet scale: a year of 15-minute counter readings for 1,000 homes on PostgreSQL.

Each home has a grid meter (``energy_import``, ``energy_export``) and a PV inverter
(``energy_production``), read every 15 minutes: 3 series x 35,040 readings a home. 10 % of the
homes have a 6-hour hole in March that the load leaves out. Steps, each timed:

1. **load**: COPY every reading into ``readings`` (the migrated, indexed table), one
   transaction per home; its rate is the run's raw COPY rate.
2. **full rollup**: mark every series dirty (one ``mark_rebuild``), then ``workers`` job
   processes (replicas, claiming with SKIP LOCKED and leases) rebuild 15-minute, hourly and
   daily rows in Europe/Berlin until nothing is dirty.
3. **late backfill**: the missing holes arrive through the ingest path (``SqlTelemetryStore``,
   which marks what they touch) and one incremental job run recomputes only those buckets.
4. **live quarter**: one new reading per series for every home, then an incremental run.

``python -m bench.bench_rollups [--homes N] [--days D] [--workers W]``
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import time
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from cloud_sync.analytics.rollup import QUARTER_MS
from cloud_sync.analytics_jobs import RollupJob
from cloud_sync.db import migrate
from cloud_sync.db.analytics_store import SqlRollupStore
from cloud_sync.db.engine import make_engine
from cloud_sync.db.store import SqlTelemetryStore, make_db_breaker
from protocols import Reading, TelemetryBatch, Unit
from tests.services import throwaway_postgres

YEAR_START = 1_735_686_000_000  # 2025-01-01 00:00 Europe/Berlin
HOLE_START = YEAR_START + 70 * 86_400_000  # 2025-03-12, 6 hours
HOLE_QUARTERS = 24
BERLIN = ZoneInfo("Europe/Berlin")


def gateway(home: int) -> str:
    return f"gw-{home:05d}"


def has_hole(home: int) -> bool:
    return home % 10 == 3


def home_rows(home: int, quarters: int) -> Iterator[tuple[Any, ...]]:
    """(gateway, seq, meter, channel, value, unit, ts, quality) of one home's year, in seq
    order; the hole's readings are yielded with ``quality == 'hole'`` for the caller to hold."""
    rng = random.Random(home)
    gw, imp, exp, prod, seq = gateway(home), rng.uniform(1e6, 5e6), rng.uniform(1e5, 1e6), \
        rng.uniform(1e6, 8e6), 0
    base_w, pv_w = rng.uniform(200, 600), rng.uniform(3000, 8000)
    for q in range(quarters):
        ts = YEAR_START + q * QUARTER_MS
        hour = (q % 96) / 4
        sun = max(0.0, math.sin(math.pi * (hour - 6) / 14)) if 6 < hour < 20 else 0.0
        load = base_w * (1 + 0.8 * math.sin(q / 7.0) ** 2) + (2000 if 72 <= q % 96 < 76 else 0)
        net = load - pv_w * sun * rng.uniform(0.3, 1.0)
        imp += max(net, 0.0) / 4
        exp += max(-net, 0.0) / 4
        prod += pv_w * sun / 4
        quality = "hole" if has_hole(home) and HOLE_START <= ts < HOLE_START + \
            HOLE_QUARTERS * QUARTER_MS else "good"
        for meter, channel, value in (("grid", "energy_import", imp),
                                      ("grid", "energy_export", exp),
                                      ("pv", "energy_production", prod)):
            seq += 1
            yield (gw, seq, meter, channel, round(value, 1), "Wh", ts, quality)


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def load(url: str, homes: int, quarters: int) -> tuple[dict[str, Any], list[list[Any]]]:
    """COPY the readings (holes held back); returns timings and the held rows."""
    held: list[list[Any]] = []
    rows = 0
    start = time.perf_counter()
    with psycopg.connect(_plain(url)) as conn:
        for home in range(homes):
            with conn.cursor() as cur, cur.copy(
                    "COPY readings (gateway_id, seq, meter_id, channel, value, unit, ts, "
                    "quality) FROM STDIN") as copy:
                for row in home_rows(home, quarters):
                    if row[7] == "hole":
                        held.append([*row[:7], "good"])
                        continue
                    copy.write_row(row)
                    rows += 1
            conn.commit()
            if home % 100 == 99:
                print(f"  loaded {home + 1:,} homes, {rows:,} readings, "
                      f"{rows / (time.perf_counter() - start):,.0f}/s", flush=True)
    seconds = time.perf_counter() - start
    return {"readings": rows, "seconds": round(seconds, 1),
            "copy_rows_per_s": round(rows / seconds)}, held


def _worker(url: str, out: Any) -> None:
    engine = make_engine(url, statement_timeout_s=600)
    job = RollupJob(SqlRollupStore(engine, make_db_breaker(5, 5.0), lambda _gw: BERLIN),
                    batch=20, lease_ms=600_000)
    job.run_until_clean()
    engine.dispose()
    out.put(job.stats.as_dict())


def run_jobs(url: str, workers: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out: Any = ctx.Queue()
    start = time.perf_counter()
    procs = [ctx.Process(target=_worker, args=(url, out)) for _ in range(workers)]
    for p in procs:
        p.start()
    stats = [out.get(timeout=7200) for _ in procs]
    for p in procs:
        p.join(60)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "workers": workers,
            "series": sum(s["series"] for s in stats),
            "buckets_15m": sum(s["buckets"] for s in stats),
            "per_worker_series": [s["series"] for s in stats]}


def run_inline(url: str) -> dict[str, Any]:
    """One incremental job run in this process (no process start-up in the time)."""
    engine = make_engine(url, statement_timeout_s=600)
    job = RollupJob(SqlRollupStore(engine, make_db_breaker(5, 5.0), lambda _gw: BERLIN),
                    batch=50)
    start = time.perf_counter()
    job.run_until_clean()
    seconds = time.perf_counter() - start
    engine.dispose()
    return {"seconds": round(seconds, 3), "workers": 1, "series": job.stats.series,
            "buckets_15m": job.stats.buckets, "per_worker_series": [job.stats.series]}


def ingest(url: str, rows: list[list[Any]]) -> dict[str, Any]:
    """Through the service's own store: the dirty marks are written as in production."""
    engine = make_engine(url, statement_timeout_s=600)
    store = SqlTelemetryStore(engine, make_db_breaker(5, 5.0))
    by_gw: dict[str, list[Reading]] = {}
    for gw, seq, meter, channel, value, _unit, ts, _q in rows:
        by_gw.setdefault(gw, []).append(Reading(meter_id=meter, channel=channel, value=value,
                                                unit=Unit.WATT_HOUR, ts=ts, seq=seq))
    start = time.perf_counter()
    for gw, readings in by_gw.items():
        store.ingest([TelemetryBatch(gateway_id=gw, readings=readings)], [])
    seconds = time.perf_counter() - start
    engine.dispose()
    return {"readings": len(rows), "gateways": len(by_gw), "seconds": round(seconds, 2)}


def table_sizes(url: str) -> dict[str, Any]:
    # count(*) over a year of readings takes far longer than the service's 5 s statement limit
    engine = make_engine(url, statement_timeout_s=3600)
    with engine.connect() as conn:
        out = {name: {"rows": int(conn.scalar(sa.text(f"SELECT count(*) FROM {name}")) or 0),
                      "mb": round(int(conn.scalar(sa.text(
                          f"SELECT pg_total_relation_size('{name}')")) or 0) / 2**20)}
               for name in ("readings", "energy_15m", "energy_hourly", "energy_daily")}
    engine.dispose()
    return out


def run(homes: int = 1000, days: int = 365, workers: int = 2) -> dict[str, Any]:
    quarters = days * 96
    result: dict[str, Any] = {"homes": homes, "days": days, "series": homes * 3,
                              "zone": "Europe/Berlin",
                              "load_average_at_start": [round(v, 1) for v in os.getloadavg()]}
    with throwaway_postgres() as url:
        engine = make_engine(url, statement_timeout_s=3600)
        migrate.upgrade(engine)
        print(f"load: {homes} homes x {days} days x 3 series ...", flush=True)
        result["load"], held = load(url, homes, quarters)
        with engine.connect() as conn:
            conn.execute(sa.text("ANALYZE readings"))
            conn.commit()
        print("full rollup ...", flush=True)
        start = time.perf_counter()
        marked = SqlRollupStore(engine, make_db_breaker(5, 5.0), lambda _g: BERLIN
                                ).mark_rebuild()
        mark_s = time.perf_counter() - start
        result["full"] = run_jobs(url, workers) | {"mark_seconds": round(mark_s, 2),
                                                    "marked_series": marked}
        result["full"]["readings_per_s"] = round(
            result["load"]["readings"] / (result["full"]["seconds"] + mark_s))
        print(f"late backfill of {len(held):,} readings ...", flush=True)
        result["backfill"] = {"ingest": ingest(url, held), "job": run_inline(url)}
        live = [[gateway(h), 10**9 + k, m, c, 1e7, "Wh", YEAR_START + quarters * QUARTER_MS,
                 "good"] for h in range(homes)
                for k, (m, c) in enumerate((("grid", "energy_import"), ("grid", "energy_export"),
                                            ("pv", "energy_production")))]
        print("live quarter ...", flush=True)
        result["live"] = {"ingest": ingest(url, live), "job": run_inline(url)}
        result["sizes"] = table_sizes(url)
        result["load_average_at_end"] = [round(v, 1) for v in os.getloadavg()]
        engine.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(run(args.homes, args.days, args.workers), indent=2))


if __name__ == "__main__":
    main()


def render(result: dict[str, Any]) -> list[str]:
    """RESULTS.md lines for ``python -m bench --only rollups``."""
    load_, full, back, live = result["load"], result["full"], result["backfill"], result["live"]
    sizes = result["sizes"]
    return [
        f"{result['homes']:,} homes x {result['days']} days of 15-minute counter readings "
        f"(grid import, grid export, PV production: {result['series']:,} series, "
        f"{load_['readings']:,} readings) on PostgreSQL, rolled up in {result['zone']}.",
        "",
        "| step | readings or series | time | rate |",
        "|---|---|---|---|",
        f"| load: COPY into the indexed `readings` table (raw COPY rate of this run) | "
        f"{load_['readings']:,} readings | {load_['seconds']:,.0f} s | "
        f"{load_['copy_rows_per_s']:,}/s |",
        f"| full rollup: mark {full['marked_series']:,} series, {full['workers']} job "
        f"processes | {full['buckets_15m']:,} 15-min buckets | "
        f"{full['mark_seconds'] + full['seconds']:,.0f} s | {full['readings_per_s']:,} "
        "readings/s |",
        f"| late backfill: {back['ingest']['readings']:,} readings of 6-hour holes of "
        f"{back['ingest']['gateways']} homes, ingested (marks) | "
        f"{back['job']['series']:,} series recomputed | ingest "
        f"{back['ingest']['seconds']} s + job {back['job']['seconds']} s | - |",
        f"| live quarter hour: one reading per series, ingested | {live['job']['series']:,} "
        f"series recomputed | ingest {live['ingest']['seconds']} s + job "
        f"{live['job']['seconds']} s | - |",
        "",
        "Rows and size on disk (table + indexes): " + ", ".join(
            f"`{name}` {v['rows']:,} rows, {v['mb']:,} MB" for name, v in sizes.items()) + ".",
        f"Work split between the job processes (series each): {full['per_worker_series']}. "
        "Load average (1/5/15 min) at start and end: "
        f"{result.get('load_average_at_start')} / {result.get('load_average_at_end')} "
        "(other work shares the 2 cores).",
    ]
