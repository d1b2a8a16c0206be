"""Fleet scaling: cloud CPU and RAM per gateway, ingestion latency, at 10 -> 100 -> 200 -> 500.

For each size a whole :class:`~simulator.fleet.Fleet` runs on a throwaway PostgreSQL database
(one cloud replica, M meters per gateway, every meter polled every ``interval_s``). After a
warm-up, one window of ``window_s`` seconds is measured:

- CPU (% of one core) and RSS of every process group, from psutil: cloud, agent workers,
  simulator workers, broker, PostgreSQL (all ``postgres`` processes), and the whole machine;
- readings stored per second, against the rate the fleet generates (stored / expected);
- ingestion latency: ``stored_at - ts`` per reading, where ``stored_at`` is a column this
  benchmark adds to ``readings`` with ``DEFAULT clock_timestamp()`` (the insert time, within
  milliseconds of the commit); ``ts`` is when the agent read the meter. So the latency covers
  poll -> buffer -> batch -> broker -> cloud -> database.

Usage: ``python -m bench.bench_fleet [--sizes 10,100,200,500] [--interval 10] [--window 30]``.
Measured, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

from simulator.fleet import Fleet
from tests.services import throwaway_postgres

STORED_AT = ("ALTER TABLE readings ADD COLUMN IF NOT EXISTS stored_at_ms BIGINT "
             "DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
LATENCY = ("SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY stored_at_ms - ts), "
           "percentile_cont(0.95) WITHIN GROUP (ORDER BY stored_at_ms - ts), "
           "max(stored_at_ms - ts) FROM readings WHERE stored_at_ms BETWEEN :a AND :b")


def _migrate_with_stored_at(db_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEWATT_")}
    env["HOMEWATT_DB_URL"] = db_url
    subprocess.run([str(Path(sys.executable).parent / "homewatt-cloud"), "--log-level",
                    "WARNING", "migrate"], env=env, check=True, capture_output=True)
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text(STORED_AT))
    engine.dispose()


def _procs(pids: list[int | None]) -> list[psutil.Process]:
    return [psutil.Process(pid) for pid in pids if pid is not None and psutil.pid_exists(pid)]


def _postgres() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] in ("postgres",
                                                                          "postgresql")]


def _cpu_s(procs: list[psutil.Process]) -> dict[int, float]:
    """pid -> CPU seconds so far; a window counts only processes alive at both ends."""
    times: dict[int, float] = {}
    for proc in procs:
        try:
            cpu = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        times[proc.pid] = cpu.user + cpu.system
    return times


def _cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after[pid] - before[pid] for pid in before.keys() & after.keys())


def _rss_mb(procs: list[psutil.Process]) -> float:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 1e6


def _groups(fleet: Fleet) -> dict[str, list[psutil.Process]]:
    return {"cloud": _procs([c.pid for c in fleet.clouds]),
            "agents": _procs([c.pid for c in fleet.agents]),
            "simulators": _procs([c.pid for c in fleet.sims]),
            "broker": _procs([fleet.broker.pid]), "postgres": _postgres()}


def _stored(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.text("SELECT count(*) FROM readings")) or 0)


def measure(fleet: Fleet, engine: sa.Engine, window_s: float) -> dict[str, Any]:
    groups = _groups(fleet)
    cpu0 = {name: _cpu_s(procs) for name, procs in groups.items()}
    machine0 = psutil.cpu_times()
    stored0, t0, a = _stored(engine), time.monotonic(), int(time.time() * 1000)
    time.sleep(window_s)
    stored1, elapsed, b = _stored(engine), time.monotonic() - t0, int(time.time() * 1000)
    machine1 = psutil.cpu_times()
    busy = ((machine1.user + machine1.system) - (machine0.user + machine0.system)) / elapsed
    with engine.connect() as conn:
        count, p50, p95, worst = conn.execute(sa.text(LATENCY), {"a": a, "b": b}).one()
    result: dict[str, Any] = {
        "stored_per_s": (stored1 - stored0) / elapsed,
        "latency_ms": {"p50": float(p50 or 0), "p95": float(p95 or 0), "max": float(worst or 0),
                       "samples": int(count)},
        "machine_cpu_pct": 100 * busy, "cores": psutil.cpu_count(),
    }
    for name, procs in groups.items():
        result[f"{name}_cpu_pct"] = 100 * _cpu_delta(cpu0[name], _cpu_s(procs)) / elapsed
        result[f"{name}_rss_mb"] = _rss_mb(procs)
    return result


def run_size(gateways: int, *, meters: int, interval_s: float, window_s: float,
             warmup_s: float, agent_processes: int) -> dict[str, Any]:
    with throwaway_postgres() as db_url, tempfile.TemporaryDirectory() as tmp:
        _migrate_with_stored_at(db_url)
        fleet = Fleet(Path(tmp) / "fleet", gateways=gateways, meters_per_gateway=meters,
                      interval_s=interval_s, db_url=db_url, agent_processes=agent_processes,
                      actuators=False)
        engine = sa.create_engine(db_url)
        started = time.monotonic()
        try:
            fleet.start()
            start_s = time.monotonic() - started
            time.sleep(warmup_s)
            result = measure(fleet, engine, window_s)
        finally:
            fleet.stop()
            engine.dispose()
    per_poll = result["stored_per_s"] * interval_s / gateways  # readings per gateway poll round
    result.update(gateways=gateways, meters_per_gateway=meters, interval_s=interval_s,
                  window_s=window_s, start_s=start_s, readings_per_gateway_round=per_poll,
                  cloud_cpu_pct_per_gateway=result["cloud_cpu_pct"] / gateways,
                  cloud_rss_mb_per_gateway=result["cloud_rss_mb"] / gateways)
    return result


def run(sizes: tuple[int, ...] = (10, 100, 200, 500), meters: int = 2, interval_s: float = 10.0,
        window_s: float = 30.0, warmup_s: float = 20.0,
        agent_processes: int = 2) -> dict[str, Any]:
    """One fleet per size, measured in turn; returns ``{"sizes": [per-size dict, ...]}``."""
    results = []
    for size in sizes:
        result = run_size(size, meters=meters, interval_s=interval_s, window_s=window_s,
                          warmup_s=warmup_s, agent_processes=agent_processes)
        print(json.dumps(result), flush=True)
        results.append(result)
    return {"sizes": results, "meters_per_gateway": meters, "interval_s": interval_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,100,200,500")
    parser.add_argument("--meters", type=int, default=2)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--agent-processes", type=int, default=2)
    args = parser.parse_args()
    run(tuple(int(s) for s in args.sizes.split(",")), args.meters, args.interval, args.window,
        args.warmup, args.agent_processes)


if __name__ == "__main__":
    main()
