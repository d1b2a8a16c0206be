"""Real processes for end-to-end tests: simulator, cloud and agent, each killable.

Every part runs as its own OS process started through its console script, exactly as an
installer or operator would run it, so SIGKILL faults are real.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.services import free_port, wait_port

BIN = Path(sys.executable).parent


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str,
               every_s: float = 0.2) -> None:
    """Poll a cross-process condition (no event exists across processes) until it holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class Proc:
    """One console-script child with its output in a log file, killable and restartable."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name, self.cmd, self.env = name, cmd, env
        self.log = logdir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(self.cmd, env=self.env, stdout=out,
                                          stderr=subprocess.STDOUT)

    def sigkill(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def terminate(self) -> int:
        if self.popen is None or self.popen.poll() is not None:
            return self.popen.returncode if self.popen else 0
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(20)
        except subprocess.TimeoutExpired as exc:
            self.popen.kill()
            self.popen.wait()
            tail = self.log.read_text()[-3000:]
            raise AssertionError(f"{self.name} ignored SIGTERM; log: {tail}") from exc

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


class Stack:
    """Simulator + cloud (SQLite) + agent against a given broker, in ``workdir``."""

    def __init__(self, workdir: Path, broker_url: str, gateway: str = "gw-e2e",
                 interval_s: float = 0.5, ack_timeout_s: float = 3.0,
                 extra_config: str = "") -> None:
        self.workdir, self.gateway = workdir, gateway
        logdir = workdir / "logs"
        logdir.mkdir(parents=True)
        self.sim_port, self.control_port, self.api_port = free_port(), free_port(), free_port()
        self.cloud_db = workdir / "cloud" / "cloud.sqlite"
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEWATT_")}
        self.cloud_env = dict(base_env, HOMEWATT_MQTT_URL=broker_url,
                              HOMEWATT_DATA_DIR=str(workdir / "cloud"))
        self.agent_dir = workdir / "agent"
        config = workdir / "agent.toml"
        config.write_text(self._agent_config(broker_url, interval_s, ack_timeout_s) + extra_config)
        self.sim = Proc("simulator", [str(BIN / "homewatt-sim"), "meters", "--port",
                                      str(self.sim_port), "--control-port",
                                      str(self.control_port), "--seed", "7"], base_env, logdir)
        self.cloud = Proc("cloud", [str(BIN / "homewatt-cloud"), "serve", "--port",
                                    str(self.api_port)], self.cloud_env, logdir)
        self.agent = Proc("agent", [str(BIN / "homewatt-agent"), "run", "--config", str(config)],
                          base_env, logdir)
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", timeout=5)
        self.control = httpx.Client(base_url=f"http://127.0.0.1:{self.control_port}", timeout=5)

    def _agent_config(self, broker_url: str, interval_s: float, ack_timeout_s: float) -> str:
        meters = [("grid", "sdm630", 1), ("heatpump", "sdm120", 2), ("waterheater", "sdm120", 3),
                  ("pv", "sunspec", 126), ("grid_sunspec", "sunspec", 240)]
        text = (f'gateway_id = "{self.gateway}"\ndata_dir = "{self.agent_dir}"\n'
                "status_interval_s = 1\n"
                f'[mqtt]\nurl = "{broker_url}"\nack_timeout_s = {ack_timeout_s}\n'
                "reconnect_min_s = 0.5\nreconnect_max_s = 2\n"
                f'[[buses]]\nname = "sim"\nkind = "tcp"\nhost = "127.0.0.1"\n'
                f"port = {self.sim_port}\ntimeout_s = 0.5\n")
        for meter_id, model, unit in meters:
            text += (f'[[meters]]\nid = "{meter_id}"\nmodel = "{model}"\nbus = "sim"\n'
                     f"unit = {unit}\ninterval_s = {interval_s}\n")
        return text

    def admin(self, *args: str) -> dict[str, Any]:
        """Run ``homewatt-cloud admin ... --json``; its (last) JSON result."""
        done = subprocess.run([str(BIN / "homewatt-cloud"), "admin", *args, "--json"],
                              env=self.cloud_env, check=True, capture_output=True, text=True)
        result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        return result

    def device_id(self, local_id: str) -> str:
        """The registry id (the API path) of the gateway's device ``local_id``."""
        return f"{self.gateway}.{local_id}"

    def start(self, devices: dict[str, str] | None = None) -> None:
        """Register the gateway (and ``devices``: local id -> capabilities) and an operator API
        key for ``api``, then start everything."""
        self.admin("add-gateway", self.gateway)
        for local_id, capabilities in (devices or {}).items():
            self.admin("add-device", self.gateway, local_id, "--capabilities", capabilities)
        key = self.admin("create-api-key", "--name", "e2e", "--operator")["api_key"]
        self.api.headers["X-API-Key"] = key
        self.sim.start()
        wait_port(self.sim_port)
        self.cloud.start()
        wait_port(self.api_port, timeout=30)
        self.agent.start()

    def stop(self) -> None:
        for proc in (self.agent, self.cloud, self.sim):
            if proc.alive():
                proc.terminate()
        self.api.close()
        self.control.close()

    def stored_count(self) -> int:
        """Rows in the cloud's store, read straight from its SQLite file (WAL readers are safe)."""
        if not self.cloud_db.exists():
            return 0
        with sqlite3.connect(f"file:{self.cloud_db}?mode=ro", uri=True, timeout=5) as db:
            try:
                return int(db.execute("SELECT count(*) FROM readings").fetchone()[0])
            except sqlite3.OperationalError:
                return 0

    def wait_stored_grows(self, timeout_s: float = 30) -> int:
        before = self.stored_count()
        wait_until(lambda: self.stored_count() > before, timeout_s,
                   f"the cloud to store more than {before} readings")
        return self.stored_count()

    def rows(self) -> list[tuple[int, str, str, float | None, int, str]]:
        with sqlite3.connect(f"file:{self.cloud_db}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT seq, meter_id, channel, value, ts, quality FROM readings "
                              "WHERE gateway_id = ? ORDER BY seq", (self.gateway,)).fetchall()
