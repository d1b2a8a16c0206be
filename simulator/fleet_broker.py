"""The fleet's Mosquitto: sized for hundreds of gateways, killable and restartable on its port.

Settings that differ from Mosquitto's defaults, and why:

- ``max_queued_messages 100000`` (default 1000): a cloud replica that is down or slow has
  every gateway's telemetry queued in its persistent session; past the limit Mosquitto drops
  silently. Nothing is lost end to end (agents re-send what was not confirmed), but re-sends
  of a 500-gateway fleet would cost far more than the queue's memory.
- ``max_inflight_messages 50``: paho is fastest near 50 in flight (FIELD-NOTES).
- ``max_connections -1``: one connection per gateway plus the cloud replicas.
- ``persistence true`` with ``autosave_interval 5``: a restart keeps persistent sessions.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from simulator.broker import free_port, wait_listening

CONF_LINES = (
    "allow_anonymous true",
    "set_tcp_nodelay true",
    "max_queued_messages 100000",
    "max_inflight_messages 50",
    "max_connections -1",
    "persistence true",
    "autosave_interval 5",
    "log_type error",
    "log_type warning",
)


class BrokerMissing(RuntimeError):
    """No ``mosquitto`` binary: the fleet needs its shared subscriptions and persistence."""


class FleetBroker:
    """A Mosquitto child on a fixed loopback port; ``kill()`` + ``start()`` keep the port."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise BrokerMissing("mosquitto not found (apt-get install mosquitto)")
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.kind = "mosquitto"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", *CONF_LINES,
                 f"persistence_location {self.workdir}/",
                 f"log_dest file {self.workdir}/mosquitto.log",
                 # As root Mosquitto drops to user 'mosquitto', which cannot write workdir.
                 "user root" if os.geteuid() == 0 else ""]
        conf.write_text("\n".join(lines) + "\n")
        log = (self.workdir / "broker.out").open("ab")
        self._proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log,
                                      stderr=subprocess.STDOUT)
        log.close()
        wait_listening(self.port)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its persistence file first."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: a broker crash (what persistence has not saved is lost)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
