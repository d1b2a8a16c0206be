"""Mosquitto silently drops queued QoS 1 messages past ``max_queued_messages`` (default 1000)
while the cloud is offline; the publisher still got a PUBACK for each. Every reading must
still arrive exactly once, because only the cloud's stored-ack lets a reading leave the buffer.
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from edge_agent.buffer import SqliteBuffer
from protocols import Quality, Reading, Unit
from tests.e2e.harness import BIN, Proc, wait_until
from tests.services import Mosquitto, free_port, wait_port

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]
GATEWAY = "gw-drop"
BACKLOG = 20_000
DROP_NOTICE = "Outgoing messages are being dropped"


def prefill(buffer_path: Path, count: int) -> None:
    buffer = SqliteBuffer(buffer_path)
    buffer.open()
    readings = [Reading(meter_id="grid", channel="power", value=float(i), unit=Unit.WATT,
                        ts=1_764_000_000_000 + i * 1000, quality=Quality.GOOD)
                for i in range(count)]
    for start in range(0, count, 1000):
        buffer.append_seqs(readings[start:start + 1000])
    buffer.close()


def stored_seqs(db: Path) -> list[int]:
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        try:
            rows = conn.execute("SELECT seq FROM readings WHERE gateway_id = ? ORDER BY seq",
                                (GATEWAY,)).fetchall()
        except sqlite3.OperationalError:
            return []
    return [row[0] for row in rows]


def test_readings_dropped_by_a_full_broker_queue_still_arrive_once(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    logdir = tmp_path / "logs"
    logdir.mkdir()
    api_port = free_port()
    env = {"PATH": str(BIN), "HOMEWATT_MQTT_URL": mosquitto.url,
           "HOMEWATT_DATA_DIR": str(tmp_path / "cloud")}
    subprocess.run([str(BIN / "homewatt-cloud"), "admin", "add-gateway", GATEWAY], env=env,
                   check=True, capture_output=True)
    cloud = Proc("cloud", [str(BIN / "homewatt-cloud"), "serve", "--port", str(api_port)], env,
                 logdir)
    buffer_path = tmp_path / "agent" / "buffer.sqlite"
    prefill(buffer_path, BACKLOG)
    config = tmp_path / "agent.toml"
    # A wide window and a short ack timeout: every second the agent re-sends up to 100
    # unconfirmed batches, so the offline cloud's queue overflows within seconds.
    config.write_text(f'gateway_id = "{GATEWAY}"\ndata_dir = "{tmp_path / "agent"}"\n'
                      f'[mqtt]\nurl = "{mosquitto.url}"\nmax_inflight_batches = 100\n'
                      "ack_timeout_s = 1\nbatch_max_bytes = 4096\npublish_rate_per_s = 2000\n"
                      "publish_bytes_per_s = 50000000\n")
    # The agent gets no HOMEWATT_* variables: they would override its config file.
    agent = Proc("agent", [str(BIN / "homewatt-agent"), "run", "--config", str(config)],
                 {"PATH": str(BIN)}, logdir)
    mosquitto_log = mosquitto.workdir / "mosquitto.log"
    try:
        cloud.start()  # once, so the broker holds its persistent session and subscription
        wait_port(api_port, timeout=30)
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{api_port}/readyz").status_code == 200,
                   30, "the cloud to be ready")
        cloud.sigkill()

        agent.start()
        wait_until(lambda: DROP_NOTICE in mosquitto_log.read_text(), 60,
                   "Mosquitto to start dropping the offline cloud's queued messages")
        assert stored_seqs(tmp_path / "cloud" / "cloud.sqlite") == []

        cloud.start()
        wait_until(lambda: len(stored_seqs(tmp_path / "cloud" / "cloud.sqlite")) >= BACKLOG, 120,
                   f"all {BACKLOG} readings to be stored")
        assert agent.terminate() == 0
    finally:
        for proc in (agent, cloud):
            if proc.alive():
                proc.terminate()

    assert stored_seqs(tmp_path / "cloud" / "cloud.sqlite") == list(range(1, BACKLOG + 1))
    buffer = SqliteBuffer(buffer_path)
    buffer.open()
    assert buffer.stats().depth == 0
    buffer.close()
