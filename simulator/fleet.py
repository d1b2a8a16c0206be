"""``Fleet``: a whole homewatt deployment on one machine, as real, killable processes.

Started in this order (and stopped in reverse, with SIGTERM): a Mosquitto sized for the fleet
(:mod:`simulator.broker`), every gateway and its two actuator devices registered through
``homewatt-cloud admin ... --from-file``, ``cloud_replicas`` ``homewatt-cloud serve``
processes sharing one database (``HOMEWATT_SHARE_GROUP=fleet``, one ``HOMEWATT_CLIENT_ID``
each: they split telemetry and command acks through ``$share``, and on PostgreSQL claim outbox
rows with ``FOR UPDATE SKIP LOCKED``), simulator workers (one :class:`~simulator.MeterSimulator`
per home, each home its own seed) and agent workers (one in-process agent per home), see
:mod:`simulator.fleet_worker`. Homes are dealt round-robin to ``agent_processes`` workers of
each kind. Logs are in ``<workdir>/logs``.

``agent_broker_url`` and ``cloud_db_url`` may be changed between construction and
:meth:`start`, so a fault proxy can sit between agents and broker or cloud and database.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from edge_agent.buffer import BufferStats, SqliteBuffer
from simulator.broker import LocalBroker, free_port, wait_listening
from simulator.fleet_plan import (
    SETPOINT_CAPABILITIES,
    SWITCH_CAPABILITIES,
    Home,
    WorkerSpec,
    partition,
    plan_homes,
    setpoint_device,
    switch_device,
)
from simulator.fleet_worker import read_ports, ready_path

log = logging.getLogger(__name__)

SHARE_GROUP = "fleet"
STOP_TIMEOUT_S = 30.0
START_TIMEOUT_S = 120.0


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class FleetError(RuntimeError):
    """A fleet part did not start; the message names it and its log file."""


class Child:
    """One child process with its output appended to a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name, self.cmd, self.env = name, cmd, env
        self.log = logdir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(self.cmd, env=self.env, stdout=out,
                                          stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(signum)

    def wait(self, timeout_s: float) -> int | None:
        """The exit code; SIGKILL after ``timeout_s`` (then ``None``)."""
        if self.popen is None:
            return 0
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for %.0fs; killing it", self.name, timeout_s)
            self.popen.kill()
            self.popen.wait()
            return None

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)


class Fleet:
    """N gateways, their simulated homes, a broker and ``cloud_replicas`` clouds on one DB.

    ``db_url`` is a SQLAlchemy URL (PostgreSQL for replicas > 1: SQLite has no SKIP LOCKED);
    ``None`` means a SQLite file under ``workdir/cloud``.
    """

    def __init__(self, workdir: Path, *, gateways: int, meters_per_gateway: int = 2,
                 interval_s: float = 5.0, seed: int = 1, db_url: str | None = None,
                 cloud_replicas: int = 1, agent_processes: int = 2,
                 actuators: bool = True, ack_timeout_s: float = 5.0) -> None:
        self.workdir = workdir.resolve()
        self.homes: list[Home] = plan_homes(gateways, seed)
        self.meters_per_gateway, self.interval_s = meters_per_gateway, interval_s
        self.actuators, self.ack_timeout_s = actuators, ack_timeout_s
        self.logdir = self.workdir / "logs"
        self.broker = LocalBroker(self.workdir / "broker", require_mosquitto=True)
        self.broker_url = self.broker.url
        self.agent_broker_url = self.broker_url
        self.db_url = db_url or f"sqlite:///{self.workdir / 'cloud' / 'cloud.sqlite'}"
        self.cloud_db_url = self.db_url
        self.api_ports = [free_port() for _ in range(cloud_replicas)]
        self.api_urls = [f"http://127.0.0.1:{port}" for port in self.api_ports]
        self._groups = partition(self.homes, agent_processes)
        self._base_env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEWATT_")}
        self.clouds: list[Child] = []
        self.sims: list[Child] = []
        self.agents: list[Child] = []
        # name -> exit code of each process :meth:`stop` stopped (None: it had to be killed).
        self.exit_codes: dict[str, int | None] = {}
        # An operator API key made by :meth:`register`: monitors and drivers send it.
        self.api_headers: dict[str, str] = {}

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def _stop_timeout_s(self) -> float:
        # A worker stops its agents together; hundreds of farewells on 2 cores take a while.
        return STOP_TIMEOUT_S + 0.3 * max(len(group) for group in self._groups)

    def gateway_ids(self) -> list[str]:
        return [home.gateway_id for home in self.homes]

    def start(self) -> None:
        """Start everything; raises :class:`FleetError` naming the part that did not start."""
        for sub in ("logs", "workers", "cloud", "agents"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        log.info("starting %s broker on %s", self.broker.kind, self.broker_url)
        self.broker.start()
        self.register()
        self.clouds = [self._cloud_child(i) for i in range(len(self.api_ports))]
        for i in range(len(self.clouds)):
            self.start_cloud(i)
        self.sims = [self._worker_child("sims", i) for i in range(len(self._groups))]
        for i in range(len(self.sims)):
            self._start_worker(self.sims[i], i)
        self.agents = [self._worker_child("agents", i) for i in range(len(self._groups))]
        for i in range(len(self.agents)):
            self.start_agent_process(i)

    def stop(self) -> None:
        """SIGTERM agents, then simulators, then clouds, then the broker; each group waits."""
        for group in (self.agents, self.sims, self.clouds):
            running = [child for child in group if child.alive()]
            for child in running:
                child.signal(signal.SIGTERM)
            for child in running:
                self.exit_codes[child.name] = child.wait(self._stop_timeout_s)
        self.broker.stop()

    def register(self) -> None:
        """Every gateway and its devices in two or three ``homewatt-cloud admin`` calls."""
        ids = self.workdir / "workers" / "gateways.txt"
        ids.write_text("".join(f"{gw}\n" for gw in self.gateway_ids()))
        self._admin("add-gateway", "--from-file", str(ids))
        key = json.loads(self._admin("create-api-key", "--name", "fleet", "--operator", "--json"))
        self.api_headers = {"X-API-Key": key["api_key"]}
        if not self.actuators:
            return
        for device, caps in ((switch_device, SWITCH_CAPABILITIES),
                             (setpoint_device, SETPOINT_CAPABILITIES)):
            pairs = self.workdir / "workers" / f"devices-{caps.split(',')[0]}.txt"
            pairs.write_text("".join(f"{gw} {device(gw)}\n" for gw in self.gateway_ids()))
            self._admin("add-device", "--from-file", str(pairs), "--capabilities", caps)

    def _admin(self, *args: str) -> str:
        done = subprocess.run([_script("homewatt-cloud"), "--log-level", "WARNING", "admin",
                               *args], env=self._cloud_env(0), capture_output=True, check=False)
        if done.returncode != 0:
            raise FleetError(f"homewatt-cloud admin {args[0]} failed: "
                             f"{done.stderr.decode(errors='replace')[-2000:]}")
        return done.stdout.decode()

    # --- cloud replicas -----------------------------------------------------------------

    def _cloud_env(self, i: int) -> dict[str, str]:
        return dict(self._base_env, HOMEWATT_DB_URL=self.cloud_db_url,
                    HOMEWATT_MQTT_URL=self.broker_url,
                    HOMEWATT_DATA_DIR=str(self.workdir / "cloud"),
                    HOMEWATT_SHARE_GROUP=SHARE_GROUP, HOMEWATT_CLIENT_ID=f"fleet-cloud-{i}")

    def _cloud_child(self, i: int) -> Child:
        cmd = [_script("homewatt-cloud"), "--log-level", "WARNING", "serve", "--port",
               str(self.api_ports[i])]
        return Child(f"cloud-{i}", cmd, self._cloud_env(i), self.logdir)

    def start_cloud(self, i: int = 0) -> None:
        """(Re)start replica ``i`` with the same port, client id and DB; waits for its API."""
        child = self.clouds[i]
        child.env = self._cloud_env(i)  # cloud_db_url may have been pointed at a proxy
        child.start()
        try:
            wait_listening(self.api_ports[i], timeout_s=60)
        except TimeoutError as exc:
            raise FleetError(f"{child.name} did not listen; see {child.log}") from exc

    def kill_cloud(self, i: int = 0) -> None:
        """SIGKILL replica ``i`` (a crash: no graceful shutdown)."""
        self.clouds[i].kill()

    # --- simulator and agent workers ----------------------------------------------------

    def _spec_path(self, role: str, i: int) -> Path:
        return self.workdir / "workers" / f"{role}-{i}.json"

    def _worker_child(self, role: str, i: int, *, drain_only: bool = False) -> Child:
        meters = 0 if drain_only else self.meters_per_gateway
        spec = WorkerSpec(homes=self._groups[i], workdir=str(self.workdir),
                          ports_file=str(self.workdir / "workers" / f"ports-{i}.json"),
                          broker_url=self.agent_broker_url, interval_s=self.interval_s,
                          meters_per_gateway=meters, actuators=self.actuators,
                          ack_timeout_s=self.ack_timeout_s,
                          status_interval_s=max(5.0, self.interval_s))
        path = self._spec_path(role, i)
        path.write_text(spec.to_json())
        cmd = [sys.executable, "-m", "simulator.fleet_worker", role, str(path)]
        return Child(f"{role}-{i}", cmd, self._base_env, self.logdir)

    def _start_worker(self, child: Child, i: int) -> None:
        role = child.name.split("-")[0]
        ready = ready_path(self._spec_path(role, i))
        ready.unlink(missing_ok=True)
        child.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready.exists():
            if not child.alive() or time.monotonic() > deadline:
                raise FleetError(f"{child.name} did not start; see {child.log}")
            time.sleep(0.1)

    def start_agent_process(self, i: int, *, drain_only: bool = False) -> None:
        """(Re)start agent worker ``i``: its agents reopen their buffers and carry on.

        ``drain_only`` agents poll no meters: they only send what their buffers still hold
        (see :func:`simulator.fleet_ledger.drain`)."""
        # agent_broker_url may have changed since the last start
        self.agents[i] = self._worker_child("agents", i, drain_only=drain_only)
        self._start_worker(self.agents[i], i)

    def stop_agent_process(self, i: int) -> int | None:
        """SIGTERM agent worker ``i`` and wait: a clean stop (offline status, buffers closed)."""
        child = self.agents[i]
        child.signal(signal.SIGTERM)
        return child.wait(self._stop_timeout_s)

    def kill_agent_process(self, i: int) -> None:
        """SIGKILL agent worker ``i``: every gateway it runs crashes at once."""
        self.agents[i].kill()

    def agent_process_of(self, gateway_id: str) -> int:
        return next(i for i, group in enumerate(self._groups)
                    if any(h.gateway_id == gateway_id for h in group))

    def simulator_control_url(self, gateway_id: str) -> str:
        """Base URL of that home's simulator control API (``GET /writes``, ``/truth``...)."""
        i = self.agent_process_of(gateway_id)
        ports = read_ports(self.workdir / "workers" / f"ports-{i}.json")
        return f"http://127.0.0.1:{ports[gateway_id][1]}"

    def buffer_path(self, gateway_id: str) -> Path:
        return self.workdir / "agents" / gateway_id / "buffer.sqlite"

    # --- ledgers ------------------------------------------------------------------------

    def stored_seqs(self) -> dict[str, list[int]]:
        """gateway -> every stored seq, ascending, read straight from the cloud DB."""
        import sqlalchemy as sa

        engine = sa.create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text(
                    "SELECT gateway_id, seq FROM readings ORDER BY gateway_id, seq")).all()
        finally:
            engine.dispose()
        result: dict[str, list[int]] = {gw: [] for gw in self.gateway_ids()}
        for gateway, seq in rows:
            result.setdefault(str(gateway), []).append(int(seq))
        return result

    def buffer_stats(self) -> dict[str, BufferStats]:
        """Each gateway's buffer stats; only while its agent process is stopped (the buffer
        is single-writer and opening it runs its crash recovery)."""
        stats: dict[str, BufferStats] = {}
        for gateway in self.gateway_ids():
            path = self.buffer_path(gateway)
            if not path.exists():
                continue
            buffer = SqliteBuffer(path)
            buffer.open()
            try:
                stats[gateway] = buffer.stats()
            finally:
                buffer.close()
        return stats
