"""Real services for tests: a private Mosquitto per test and a throwaway PostgreSQL database.

Tests own their broker so fault tests can kill and restart it. Where a service is missing the
test skips with the reason, unless ``HOMEWATT_REQUIRE_SERVICES=1`` (CI), where it fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REQUIRE = os.environ.get("HOMEWATT_REQUIRE_SERVICES") == "1"
PG_ADMIN_URL = os.environ.get("HOMEWATT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def missing(reason: str) -> None:
    """Skip, or fail in CI where every service must be present."""
    if REQUIRE:
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


class Mosquitto:
    """A private mosquitto on a free port, with kill/restart on the same port.

    ``extra`` lines go into its config verbatim (e.g. ``max_queued_messages 50``).
    Persistence is on, so a restart keeps persistent sessions and queued QoS 1 messages,
    as a production broker would.
    """

    def __init__(self, workdir: Path, extra: str = "", persistence: bool = True) -> None:
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {workdir}/",
            "autosave_interval 1",
            f"log_dest file {workdir}/mosquitto.log",
            "log_type error",
            "log_type warning",
            "log_type notice",
            # As root, mosquitto drops to the 'mosquitto' user, which cannot write the test's
            # private tmp dir: persistence and the log would silently fail.
            "user root" if os.geteuid() == 0 else "",
            extra,
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        """Graceful stop: mosquitto writes its persistence file."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def running_mosquitto(workdir: Path, extra: str = "") -> Iterator[Mosquitto]:
    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        missing("mosquitto binary not found (apt-get install mosquitto)")
    broker = Mosquitto(workdir, extra)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Create a fresh database, yield its SQLAlchemy URL, drop it afterwards."""
    try:
        import psycopg
    except ImportError:
        missing("psycopg not installed")
    name = f"homewatt_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        missing(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
