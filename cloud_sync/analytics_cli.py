"""``homewatt-cloud analytics rebuild | run | status``: operate the rollups without the API.

``rebuild`` marks series dirty over all their readings (after a bulk import, or to recompute
everything); ``run`` runs the rollup job here until nothing is dirty, printing progress (the
serving replicas keep working in parallel: claims keep them apart); ``status`` prints what
waits. Exit codes: 0 ok, 1 the database is unavailable, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from cloud_sync.analytics_jobs import RollupJob
from cloud_sync.bootstrap import build_store
from cloud_sync.db import migrate
from cloud_sync.db.analytics_store import SqlRollupStore
from cloud_sync.db.analytics_zones import GatewayZones
from cloud_sync.settings import CloudSettings

COMMANDS = ("analytics",)


def add_analytics_parsers(sub: Any) -> None:
    analytics = sub.add_parser("analytics", help="energy rollups: rebuild, run the job, status")
    cmds = analytics.add_subparsers(dest="analytics_command", required=True)
    rebuild = cmds.add_parser("rebuild", help="mark every series (of one gateway) dirty so the "
                              "next job run recomputes all its rollups")
    rebuild.add_argument("--gateway", help="only this gateway (default: all)")
    run = cmds.add_parser("run", help="run the rollup job until nothing is dirty")
    run.add_argument("--batch", type=int, default=50, help="series claimed per round")
    cmds.add_parser("status", help="print how many dirty marks wait")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_analytics_command(settings: CloudSettings, args: argparse.Namespace) -> int:
    if args.analytics_command == "run" and args.batch < 1:
        print("homewatt-cloud: --batch must be at least 1", file=sys.stderr)
        return 2
    store = build_store(settings)
    try:
        migrate.upgrade(store.engine)
        zones = GatewayZones(store.engine)
        rollups = SqlRollupStore(store.engine, store.breaker, zones)
        if args.analytics_command == "rebuild":
            marked = rollups.mark_rebuild(args.gateway)
            _say(f"marked {marked} series for a rebuild; run: homewatt-cloud analytics run")
            return 0
        if args.analytics_command == "status":
            _say(f"{rollups.pending()} dirty marks waiting")
            return 0
        return _run(RollupJob(rollups, batch=args.batch, zones=zones.zones), rollups)
    finally:
        store.engine.dispose()


def _run(job: RollupJob, rollups: SqlRollupStore) -> int:
    start = time.monotonic()
    job.store.sync_zones(job.zones() if job.zones else {})
    while True:
        claimed = job.run_once()
        if not claimed:
            break
        _say(f"{job.stats.series} series, {job.stats.buckets} buckets rewritten, "
             f"{rollups.pending()} marks left, {time.monotonic() - start:.1f}s")
    _say(f"done: {job.stats.series} series in {time.monotonic() - start:.1f}s")
    return 0
