"""A local MQTT broker for the demo, the fleet and chaos runs: Mosquitto when installed (tuned
for fleets, killable and restartable on its port), else an embedded amqtt broker (demo only).

Mosquitto settings that differ from its defaults, and why:

- ``max_queued_messages 100000`` (default 1000): a cloud replica that is down or slow has every
  gateway's telemetry queued in its persistent session; past the limit Mosquitto drops
  silently. Nothing is lost end to end (agents re-send what was not confirmed), but re-sends
  of a 500-gateway fleet would cost far more than the queue's memory.
- ``max_inflight_messages 50``: paho is fastest near 50 in flight (FIELD-NOTES).
- ``max_connections -1``: one connection per gateway plus the cloud replicas.
- ``set_tcp_nodelay true``: with Nagle on, a hop after a small write waits ~40 ms.
- ``persistence true`` with ``autosave_interval 5``: a restart keeps persistent sessions.
- ``user root`` when run as root: Mosquitto would drop to user ``mosquitto``, which cannot
  write our work directory, and persistence and its log would silently fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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
    """No ``mosquitto`` binary where Mosquitto-only features (``$share``) are required."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"broker did not listen on 127.0.0.1:{port} within {timeout_s}s")


def _mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None


class LocalBroker:
    """A broker child process on a fixed loopback port; ``kind`` says which one it is.

    ``require_mosquitto`` raises :class:`BrokerMissing` instead of falling back to amqtt.
    """

    def __init__(self, workdir: Path, port: int | None = None, *,
                 require_mosquitto: bool = False) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.mosquitto = _mosquitto()
        if self.mosquitto is None and require_mosquitto:
            raise BrokerMissing("mosquitto not found (apt-get install mosquitto)")
        self.kind = "mosquitto" if self.mosquitto else "amqtt"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.mosquitto:
            conf = self.workdir / "mosquitto.conf"
            lines = [f"listener {self.port} 127.0.0.1", *CONF_LINES,
                     f"persistence_location {self.workdir}/",
                     f"log_dest file {self.workdir}/mosquitto.log",
                     "user root" if os.geteuid() == 0 else ""]
            conf.write_text("\n".join(lines) + "\n")
            cmd = [self.mosquitto, "-c", str(conf)]
        else:
            cmd = [sys.executable, "-m", "simulator.embedded_broker", "--port", str(self.port)]
        with (self.workdir / "broker.out").open("ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_listening(self.port)

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
