"""``homewatt-sim chaos SCENARIO``: run one chaos scenario and print its ledger.

Exit status: 0 when the ledger is clean (nothing lost, duplicated or double-executed, every
command final, recovered), 1 when it is not, 2 when the scenario cannot run here (e.g.
``db-outage`` without ``--db-url postgresql+psycopg://...``) or the arguments are wrong.
``homewatt-sim chaos --list`` names the scenarios.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from simulator.faults.harness import ScenarioParams, ScenarioSkipped
from simulator.faults.ledger import format_ledger
from simulator.faults.scenarios import SCENARIOS, describe, run_scenario


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def add_parser(commands: Any) -> None:
    """Add the ``chaos`` subcommand to ``homewatt-sim``'s subparsers."""
    chaos: argparse.ArgumentParser = commands.add_parser(
        "chaos", help="run a fault-injection scenario against a local fleet; print its ledger",
        description="Start a local fleet, run traffic, inject one fault, heal it, and print the "
                    "ledger: readings committed vs stored (lost, duplicated), commands issued "
                    "vs actuations (double executions), time to recover. Exit 0 when clean, "
                    "1 when not, 2 when the scenario cannot run here.")
    chaos.add_argument("scenario", nargs="?", choices=sorted(SCENARIOS), metavar="SCENARIO",
                       help="one of: " + ", ".join(SCENARIOS))
    chaos.add_argument("--list", action="store_true", help="list the scenarios and exit")
    defaults = ScenarioParams()
    chaos.add_argument("--gateways", type=_positive_int, default=defaults.gateways,
                       help="fleet size (default %(default)s)")
    chaos.add_argument("--duration", type=_seconds, default=defaults.duration_s,
                       help="seconds of traffic; fault at 30%%, heal at 60%% "
                            "(default %(default)s)")
    chaos.add_argument("--interval", type=_seconds, default=defaults.interval_s,
                       help="meter poll interval in seconds (default %(default)s)")
    chaos.add_argument("--commands-per-gateway", type=_positive_int,
                       default=defaults.commands_per_gateway,
                       help="commands issued to each gateway (default %(default)s)")
    chaos.add_argument("--db-url", default=None,
                       help="cloud database (SQLAlchemy URL); default a SQLite file in the work "
                            "dir; db-outage needs postgresql+psycopg://...")
    chaos.add_argument("--seed", type=int, default=1, help="fleet seed (default %(default)s)")
    chaos.add_argument("--workdir", type=Path, default=None,
                       help="keep logs and data here (default: a temporary directory, removed "
                            "when the ledger is clean)")
    chaos.add_argument("--log-level", default="WARNING",
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def run(args: argparse.Namespace) -> int:
    """Run the parsed ``chaos`` command; returns the exit status."""
    if args.list:
        for name, summary in describe().items():
            print(f"{name:<16} {summary}")
        return 0
    if args.scenario is None:
        print("homewatt-sim chaos: name a SCENARIO (see --list)", file=sys.stderr)
        return 2
    params = ScenarioParams(gateways=args.gateways, duration_s=args.duration,
                            interval_s=args.interval,
                            commands_per_gateway=args.commands_per_gateway,
                            db_url=args.db_url, seed=args.seed)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"homewatt-chaos-{args.scenario}-"))
    started = time.monotonic()
    try:
        result = run_scenario(args.scenario, workdir, params)
    except ScenarioSkipped as exc:
        print(f"homewatt-sim chaos {args.scenario}: cannot run here: {exc}", file=sys.stderr)
        return 2
    print(format_ledger(result.name, result.ledger, result.notes))
    print(f"run took {time.monotonic() - started:.0f} s")
    if result.ledger.clean and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs and data: {workdir}")
    return 0 if result.ledger.clean else 1
