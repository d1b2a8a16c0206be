"""Start an MQTT broker for the demo and the fleet runner: Mosquitto if installed, else amqtt."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


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


class LocalBroker:
    """A broker child process on a free loopback port; ``kind`` says which one it is."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.mosquitto = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        self.kind = "mosquitto" if self.mosquitto else "amqtt"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.mosquitto:
            conf = self.workdir / "mosquitto.conf"
            conf.write_text(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                # Without it each hop after a small write waits ~40 ms for a delayed ACK.
                "set_tcp_nodelay true\n"
                f"persistence true\npersistence_location {self.workdir}/\n"
                f"log_dest file {self.workdir}/mosquitto.log\n"
            )
            cmd = [self.mosquitto, "-c", str(conf)]
        else:
            cmd = [sys.executable, "-m", "simulator.embedded_broker", "--port", str(self.port)]
        log = (self.workdir / "broker.out").open("ab")
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_listening(self.port)

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
