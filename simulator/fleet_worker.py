"""A fleet worker process: many homes' simulators, or many homes' agents, in one event loop.

``python -m simulator.fleet_worker sims SPEC`` serves one :class:`~simulator.MeterSimulator`
per home (Modbus TCP plus its control API) and publishes their ports in ``spec.ports_file``;
a restarted sims worker takes the same ports again. ``python -m simulator.fleet_worker agents
SPEC`` runs one in-process :class:`~edge_agent.runtime.Agent` per home against those ports.

Simulators and agents live in different processes on purpose: killing an agent process is a
gateway crash, and the meters (and their log of actuator writes, the ground truth for "was a
command executed twice") survive it. Both write ``<spec>.ready`` once everything started, and
stop cleanly on SIGTERM/SIGINT (agents publish their offline status and close their buffers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edge_agent.errors import EdgeAgentError
from edge_agent.runtime import Agent
from simulator import MeterSimulator, SimulatorError
from simulator.fleet_plan import WorkerSpec, agent_config

log = logging.getLogger(__name__)

SIM_TICK_S = 1.0  # registers change once a second: plenty for 1 s+ polling, cheap for 500 homes
PORTS_WAIT_S = 60.0


def ready_path(spec_path: Path) -> Path:
    return spec_path.with_suffix(".ready")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_ports(ports_file: Path) -> dict[str, tuple[int, int]]:
    """gateway -> (modbus port, control port), as the sims worker published them."""
    data = json.loads(ports_file.read_text())
    return {gw: (int(p[0]), int(p[1])) for gw, p in data.items()}


def _previous_ports(ports_file: Path) -> dict[str, tuple[int, int]]:
    return read_ports(ports_file) if ports_file.exists() else {}


async def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def _start_sim(seed: int, previous: tuple[int, int] | None) -> MeterSimulator:
    """Start a simulator, on its previous ports when it had some (a restarted worker)."""
    sim = MeterSimulator(seed=seed, tick_s=SIM_TICK_S)
    if previous is not None:
        try:
            await sim.start("127.0.0.1", previous[0], control_port=previous[1])
            return sim
        except (SimulatorError, OSError) as exc:
            log.warning("ports %s taken (%s); picking new ones", previous, exc)
            await sim.stop()
            sim = MeterSimulator(seed=seed, tick_s=SIM_TICK_S)
    await sim.start("127.0.0.1", 0, control_port=0)
    return sim


async def run_sims(spec: WorkerSpec, spec_path: Path) -> int:
    stop = await _stop_event()
    ports_file = Path(spec.ports_file)
    previous = await asyncio.to_thread(_previous_ports, ports_file)
    sims: dict[str, MeterSimulator] = {}
    try:
        for home in spec.homes:
            sims[home.gateway_id] = await _start_sim(home.seed, previous.get(home.gateway_id))
        ports = {gw: [sim.port, sim.control_port] for gw, sim in sims.items()}
        _write_atomically(ports_file, json.dumps(ports))
        _write_atomically(ready_path(spec_path), str(os.getpid()))
        log.info("%d simulated homes serving", len(sims))
        await stop.wait()
    finally:
        await asyncio.gather(*(sim.stop() for sim in sims.values()), return_exceptions=True)
    return 0


def _wait_ports(ports_file: Path, homes: int) -> dict[str, tuple[int, int]]:
    """The simulators start first; a file written atomically is either whole or absent."""
    deadline = time.monotonic() + PORTS_WAIT_S
    while time.monotonic() < deadline:
        if ports_file.exists():
            ports = read_ports(ports_file)
            if len(ports) >= homes:
                return ports
        time.sleep(0.1)
    raise TimeoutError(f"no simulator ports in {ports_file} after {PORTS_WAIT_S}s")


async def run_agents(spec: WorkerSpec, spec_path: Path) -> int:
    stop = await _stop_event()
    # Every agent sends its SQLite work through to_thread: the default pool (cores + 4
    # threads) would serialise hundreds of agents behind a handful of threads.
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="agent-io"))
    ports = await asyncio.to_thread(_wait_ports, Path(spec.ports_file), len(spec.homes))
    agents: list[Agent] = []
    try:
        for home in spec.homes:
            config = agent_config(home, spec, ports[home.gateway_id][0])
            config.data_dir.mkdir(parents=True, exist_ok=True)
            agent = Agent(config)
            try:
                await agent.start()
            except EdgeAgentError as exc:
                log.error("agent %s cannot start: %s", home.gateway_id, exc)
                await agent.stop()
                continue
            agents.append(agent)
        _write_atomically(ready_path(spec_path), str(os.getpid()))
        log.info("%d agents running", len(agents))
        await stop.wait()
    finally:
        await asyncio.gather(*(agent.stop() for agent in agents), return_exceptions=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.fleet_worker",
                                     description="Run a share of a homewatt fleet (see "
                                                 "homewatt-sim fleet).")
    parser.add_argument("role", choices=["sims", "agents"])
    parser.add_argument("spec", type=Path, help="the WorkerSpec JSON file")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = WorkerSpec.from_json(args.spec.read_text())
    run = run_sims if args.role == "sims" else run_agents
    return asyncio.run(run(spec, args.spec))


if __name__ == "__main__":
    sys.exit(main())
