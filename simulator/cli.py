"""``homewatt-sim``: simulated devices for demos and tests.

``homewatt-sim meters --port P`` serves a simulated home's meters over Modbus TCP until Ctrl-C
or SIGTERM (exit 0). The first line on stdout says where it listens, e.g.::

    homewatt-sim meters: modbus 127.0.0.1:5020 units 1:grid:sdm630 ... control http://127.0.0.1:8081

so a parent process can start it with ``--port 0`` and parse the bound port.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from simulator.server import MeterSimulator
from simulator.unit_faults import SimulatorError

_UNITS_HELP = ("units: 1 SDM630 at the grid connection (+ import / - export), 2 SDM120 heat "
               "pump, 3 SDM120 water heater, 126 SunSpec inverter (models 1+103 at 40000), "
               "240 SunSpec three-phase grid meter (models 1+203 at 40000); writable "
               "(FC3 read, FC6/FC16 write): 20 water heater switch (holding 0: 1 on/0 off), "
               "21 heat pump controller (holding 0: flow setpoint in 0.1 degC, 250..600; "
               "holding 1: 1 on/0 off)")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..65535 (0 picks a free port)")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="homewatt-sim", description="Simulated devices for homewatt demos and tests.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    meters = commands.add_parser(
        "meters", help="serve a simulated home's meters over Modbus TCP",
        description="Serve a simulated home's meters over Modbus TCP, with ground truth, "
                    "faults and pause/resume on an optional HTTP control API. " + _UNITS_HELP,
    )
    meters.add_argument("--port", type=_port, required=True,
                        help="Modbus TCP port (0: pick a free one; the chosen port is printed)")
    meters.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    meters.add_argument("--seed", type=int, default=1,
                        help="random seed: same seed, same profiles (default %(default)s)")
    meters.add_argument("--control-port", type=_port, default=None,
                        help="HTTP control API port: GET /truth, GET /writes, POST|DELETE "
                             "/units/{unit}/fault, POST /pause, POST /resume (0: a free port; "
                             "default: no API)")
    meters.add_argument("--tick-s", type=_positive, default=0.2,
                        help="seconds between register updates (default %(default)s)")
    meters.add_argument("--speed", type=_positive, default=1.0,
                        help="simulated seconds per real second (default %(default)s)")
    meters.add_argument("--start-ts-ms", type=int, default=None,
                        help="simulated wall time at start, ms since epoch (default: now)")
    meters.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    from simulator.fleet_cli import add_parser as add_fleet_parser

    add_fleet_parser(commands)
    from simulator.faults.cli import add_parser as add_chaos_parser

    add_chaos_parser(commands)
    return parser


async def _serve_meters(args: argparse.Namespace) -> int:
    sim = MeterSimulator(seed=args.seed, tick_s=args.tick_s, start_ts_ms=args.start_ts_ms,
                         speed=args.speed)
    try:
        port = await sim.start(args.host, args.port, control_port=args.control_port)
    except SimulatorError as exc:
        print(f"homewatt-sim meters: {exc}", file=sys.stderr)
        await sim.stop()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    units = " ".join(f"{unit}:{meter.name}:{meter.layout.model}"
                     for unit, meter in sim.bank.meters.items())
    units += "".join(f" {unit}:{spec.name}:{spec.model}"
                     for unit, spec in sim.bank.controllers.specs.items())
    control = (f" control http://{args.host}:{sim.control_port}"
               if sim.control_port is not None else "")
    print(f"homewatt-sim meters: modbus {args.host}:{port} units {units}{control}", flush=True)
    try:
        await stop.wait()
    finally:
        await sim.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``homewatt-sim`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "fleet":
        from simulator.fleet_cli import run as run_fleet

        return run_fleet(args)
    if args.command == "chaos":
        from simulator.faults.cli import run as run_chaos

        return run_chaos(args)
    if args.command == "meters":
        return asyncio.run(_serve_meters(args))
    return 2  # pragma: no cover - argparse rejects unknown commands first


if __name__ == "__main__":
    sys.exit(main())
