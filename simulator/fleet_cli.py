"""``homewatt-sim fleet``: run a simulated fleet and watch it (see :class:`simulator.fleet.Fleet`).

Prints progress while starting, then one summary line every ``--every`` seconds. Ctrl-C (or
SIGTERM, or ``--duration``) stops every process in reverse start order; exit 0 after a clean
stop, 1 when a part did not start (its log file is named).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from simulator.broker import BrokerMissing
from simulator.fleet import Fleet, FleetError
from simulator.fleet_monitor import Snapshot, StatusFollower, render, snapshot

DESCRIPTION = (
    "Run N real edge agents (in-process, spread over a few worker processes) against N "
    "simulated homes (one seeded simulator each: different, reproducible load profiles), a "
    "Mosquitto broker sized for the fleet and R cloud replicas sharing one database. Every "
    "gateway (home-0001, home-0002, ...) and its two actuators (<gw>-waterheater-switch, "
    "<gw>-heatpump-setpoint) is registered first. While it runs, a line every few seconds shows "
    "gateways online (from their retained status), readings stored and the rate, the backlog "
    "still buffered on gateways, dead letters and errors. Ctrl-C stops everything cleanly.")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``fleet`` on the ``homewatt-sim`` subcommands."""
    fleet = commands.add_parser("fleet", help="run a simulated fleet of gateways end to end",
                                description=DESCRIPTION)
    fleet.add_argument("--gateways", type=int, required=True, help="number of gateways N")
    fleet.add_argument("--meters-per-gateway", type=int, default=2,
                       help="meters per gateway M, taken from units 1, 2, 3, 126, 240 in turn "
                            "(default %(default)s)")
    fleet.add_argument("--interval", type=float, default=5.0,
                       help="poll interval of every meter, seconds (default %(default)s)")
    fleet.add_argument("--seed", type=int, default=1,
                       help="fleet seed: same seed, same homes (default %(default)s)")
    fleet.add_argument("--db-url", default=None,
                       help="cloud database (postgresql+psycopg://...); default: SQLite in "
                            "the workdir (use PostgreSQL for --replicas > 1)")
    fleet.add_argument("--replicas", type=int, default=1,
                       help="cloud replicas sharing the load (default %(default)s)")
    fleet.add_argument("--agent-processes", type=int, default=2,
                       help="worker processes the agents are spread over (default %(default)s)")
    fleet.add_argument("--no-actuators", action="store_true",
                       help="no water-heater switch / heat-pump setpoint per home")
    fleet.add_argument("--duration", type=float, default=0,
                       help="stop after this many seconds (default: until Ctrl-C)")
    fleet.add_argument("--every", type=float, default=5.0,
                       help="seconds between summary lines (default %(default)s)")
    fleet.add_argument("--workdir", type=Path, default=None,
                       help="state and logs (default: a new temporary directory)")
    fleet.add_argument("--log-level", default="WARNING",
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _problem(args: argparse.Namespace) -> str | None:
    checks = [(args.gateways >= 1, "--gateways must be >= 1"),
              (1 <= args.meters_per_gateway <= 50, "--meters-per-gateway must be 1..50"),
              (args.interval >= 0.1, "--interval must be >= 0.1"),
              (args.replicas >= 1, "--replicas must be >= 1"),
              (args.agent_processes >= 1, "--agent-processes must be >= 1")]
    return next((message for ok, message in checks if not ok), None)


def run(args: argparse.Namespace) -> int:
    if (problem := _problem(args)) is not None:
        _say(f"homewatt-sim fleet: {problem}")
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="homewatt-fleet-"))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        fleet = Fleet(workdir, gateways=args.gateways, meters_per_gateway=args.meters_per_gateway,
                      interval_s=args.interval, seed=args.seed, db_url=args.db_url,
                      cloud_replicas=args.replicas, agent_processes=args.agent_processes,
                      actuators=not args.no_actuators)
    except BrokerMissing as exc:
        _say(f"homewatt-sim fleet: {exc}")
        return 1
    _say(f"homewatt-sim fleet: {args.gateways} gateways x {args.meters_per_gateway} meters "
         f"every {args.interval:g} s, {args.replicas} cloud replica(s); workdir {workdir}")
    started = time.monotonic()
    try:
        fleet.start()
    except (FleetError, TimeoutError) as exc:
        _say(f"homewatt-sim fleet: {exc}")
        fleet.stop()
        return 1
    _say(f"started in {time.monotonic() - started:.1f} s; cloud API {fleet.api_urls[0]}; "
         f"logs {fleet.logdir}; Ctrl-C stops")
    try:
        _watch(fleet, args, stop)
    finally:
        _say("stopping...")
        fleet.stop()
    _say("stopped cleanly")
    return 0


def _watch(fleet: Fleet, args: argparse.Namespace, stop: threading.Event) -> None:
    follower = StatusFollower(fleet.broker_url)
    follower.start()
    began = time.monotonic()
    before: Snapshot | None = None
    try:
        with httpx.Client(timeout=2, headers=fleet.api_headers) as client:
            while not stop.wait(args.every):
                now = snapshot(follower, client, fleet.api_urls, len(fleet.homes))
                _say(render(now, before, time.monotonic() - began))
                before = now
                if args.duration and time.monotonic() - began >= args.duration:
                    break
    finally:
        follower.stop()
