"""Agent cost per meter: RSS and CPU of one agent process polling 0, 1, 5, 10 meters every 1 s.

Each point is a one-gateway :class:`~simulator.fleet.Fleet` (its agent worker process runs
exactly one in-process agent, as ``homewatt-agent run`` does, reading the home's simulator
over Modbus TCP and sending to a SQLite cloud through Mosquitto). After a warm-up, psutil
reads the agent process's CPU time and RSS over one window. Meters cycle through the
simulator's units (SDM630, SDM120, SDM120, SunSpec inverter, SunSpec meter), so 5 meters is
one of each and 10 is each twice. 0 meters is the fixed cost (drain, status, MQTT, buffer).

Usage: ``python -m bench.bench_agent_cost [--meters 0,1,5,10] [--window 30]``. Measured only.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from simulator.fleet import Fleet


def measure_agent(meters: int, window_s: float, warmup_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        fleet = Fleet(Path(tmp) / "fleet", gateways=1, meters_per_gateway=meters,
                      interval_s=1.0, agent_processes=1, actuators=False)
        try:
            fleet.start()
            pid = fleet.agents[0].pid
            assert pid is not None
            proc = psutil.Process(pid)
            time.sleep(warmup_s)
            before, t0 = proc.cpu_times(), time.monotonic()
            time.sleep(window_s)
            after, elapsed = proc.cpu_times(), time.monotonic() - t0
            rss, threads = proc.memory_info().rss, proc.num_threads()
            readings = sum(len(s) for s in fleet.stored_seqs().values())
        finally:
            fleet.stop()
    cpu = (after.user + after.system) - (before.user + before.system)
    return {"meters": meters, "cpu_pct": 100 * cpu / elapsed, "rss_mb": rss / 1e6,
            "threads": threads,
            "readings_stored": readings, "window_s": window_s}


def run(meter_counts: tuple[int, ...] = (0, 1, 5, 10), window_s: float = 30.0,
        warmup_s: float = 10.0) -> dict[str, Any]:
    """Returns ``{"points": [...], "per_meter": {"cpu_pct", "rss_mb"}}``: the slope between
    the smallest and largest meter count."""
    points = []
    for meters in meter_counts:
        point = measure_agent(meters, window_s, warmup_s)
        print(json.dumps(point), flush=True)
        points.append(point)
    lo, hi = points[0], points[-1]
    span = max(1, hi["meters"] - lo["meters"])
    per_meter = {"cpu_pct": (hi["cpu_pct"] - lo["cpu_pct"]) / span,
                 "rss_mb": (hi["rss_mb"] - lo["rss_mb"]) / span}
    return {"points": points, "per_meter": per_meter, "interval_s": 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--meters", default="0,1,5,10")
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    args = parser.parse_args()
    result = run(tuple(int(m) for m in args.meters.split(",")), args.window, args.warmup)
    print(json.dumps(result["per_meter"]))


if __name__ == "__main__":
    main()
